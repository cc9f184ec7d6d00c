//! One narrow trait per outside system the executor touches: Redis, the service's HTTP
//! API, the platform, the notifier, the clock. Real implementations live in `probe`,
//! `service`, `platform` and `notify`; the executor only sees these traits, bundled in
//! [`Ports`].

use crate::model::FailureClass;
use crate::secret::RedisUrl;
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};
use std::sync::Arc;
use std::time::Duration;

// ---------------------------------------------------------------- Hooks

/// One run of a playbook hook: the argv (no shell), the whole environment it gets (the
/// runner clears the orchestrator's own), and its bound.
#[derive(Debug, Clone)]
pub struct HookRequest {
    pub command: Vec<String>,
    pub env: Vec<(String, String)>,
    pub timeout: Duration,
}

/// How a hook run ended.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "status", rename_all = "snake_case")]
pub enum HookStatus {
    Exited {
        code: i32,
    },
    /// Killed by a signal it did not get from us.
    Signaled {
        signal: i32,
    },
    /// Still running at the timeout: its whole process group was SIGKILLed.
    TimedOut,
    /// It could not be started (no such program, not executable).
    NotStarted {
        error: String,
    },
}

/// What a hook run produced: its end, and its stdout and stderr interleaved as read
/// (raw: the executor redacts before anything is journaled), cut at the runner's limit.
#[derive(Debug, Clone)]
pub struct HookExit {
    pub status: HookStatus,
    pub output: String,
    pub truncated: bool,
    pub elapsed: Duration,
}

#[async_trait]
pub trait HookRunner: Send + Sync {
    /// Runs one hook to its end or its timeout; never longer than the timeout plus a
    /// short grace to collect what it wrote.
    async fn run(&self, req: &HookRequest) -> HookExit;
}

// ---------------------------------------------------------------- Redis

/// A Redis call that failed, classified into the spec's failure classes. `message`
/// never contains a password.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize, thiserror::Error)]
#[error("{class}: {message}")]
pub struct RedisFailure {
    pub class: FailureClass,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct LatencyStats {
    pub samples: u32,
    pub min_ms: f64,
    pub median_ms: f64,
    pub max_ms: f64,
}

/// The parts of INFO the orchestrator judges.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RedisInfo {
    pub role: String,
    pub used_memory: u64,
    pub maxmemory: u64,
    pub connected_clients: u64,
    pub maxclients: Option<u64>,
    pub loading: bool,
    pub redis_version: String,
}

/// What to delete from the new Redis.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushPlan {
    /// Empty with `flushdb: true` means every key of the database.
    pub patterns: Vec<String>,
    pub flushdb: bool,
    /// Keys per SCAN/UNLINK round trip.
    pub batch: u32,
    /// Pause while PING latency on the target is above this.
    pub max_latency: Duration,
    /// Count only; delete nothing.
    pub dry_run: bool,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct FlushProgress {
    pub pattern_index: usize,
    pub scanned: u64,
    pub deleted: u64,
    /// Pauses taken because the target's latency rose above the bound.
    pub pauses: u32,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FlushReport {
    /// Keys deleted (or, for a dry run, that would be) per pattern, in plan order.
    pub per_pattern: Vec<(String, u64)>,
    pub deleted: u64,
    pub scanned: u64,
    pub pauses: u32,
    pub elapsed_ms: u64,
    pub dry_run: bool,
}

/// Where a job stands, read from BullMQ's keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum JobState {
    Waiting,
    Active,
    Completed,
    Failed,
    Unknown,
}

pub type ProgressFn<'a> = &'a (dyn Fn(FlushProgress) + Send + Sync);

#[async_trait]
pub trait RedisProbe: Send + Sync {
    /// PING, then a tiny write (SET with a short TTL) so that out-of-memory and
    /// read-only replicas are noticed too (PING alone succeeds on both). Returns the
    /// PING round-trip time.
    async fn check(&self, url: &RedisUrl, timeout: Duration) -> Result<Duration, RedisFailure>;
    /// `samples` PINGs, one connection, each bounded by `timeout`.
    async fn latency(&self, url: &RedisUrl, samples: u32, timeout: Duration) -> Result<LatencyStats, RedisFailure>;
    async fn info(&self, url: &RedisUrl, timeout: Duration) -> Result<RedisInfo, RedisFailure>;
    /// LLEN of `bull:<queue>:active` for each queue.
    async fn active_jobs(&self, url: &RedisUrl, queues: &[String], timeout: Duration) -> Result<Vec<(String, u64)>, RedisFailure>;
    async fn job_state(&self, url: &RedisUrl, queue: &str, job_id: &str, timeout: Duration) -> Result<JobState, RedisFailure>;
    /// SCAN + UNLINK in batches (never KEYS), pausing while latency is high.
    async fn flush(&self, url: &RedisUrl, plan: &FlushPlan, progress: ProgressFn<'_>) -> Result<FlushReport, RedisFailure>;
}

// ---------------------------------------------------------------- Service

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum ServiceError {
    #[error("service unreachable: {0}")]
    Unreachable(String),
    #[error("service timed out after {0:?}")]
    Timeout(Duration),
    #[error("service answered HTTP {status}: {body}")]
    Status { status: u16, body: String },
    #[error("service answered with an unexpected body: {0}")]
    Body(String),
}

/// The runbook's health JSON, reduced to what the checklists judge.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Health {
    pub http_status: u16,
    pub status: String,
    /// `up`, `down`, or `missing` when the body names no Redis.
    pub redis_status: String,
    pub redis_message: String,
}

#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueMetrics {
    pub connection_status: String,
    pub total_jobs: u64,
    pub active_jobs: u64,
    pub waiting_jobs: u64,
    pub completed_jobs: u64,
    pub failed_jobs: u64,
    pub queues: Vec<(String, u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct LogEntry {
    pub timestamp: String,
    pub level: String,
    pub message: String,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SubmittedJob {
    pub job_id: Option<String>,
    pub queue: Option<String>,
}

#[async_trait]
pub trait ServiceApi: Send + Sync {
    async fn health(&self) -> Result<Health, ServiceError>;
    async fn queue_metrics(&self) -> Result<QueueMetrics, ServiceError>;
    /// Error-level log entries at or after `since` mentioning Redis.
    async fn error_logs(&self, since: DateTime<Utc>) -> Result<Vec<LogEntry>, ServiceError>;
    /// Submits a synthetic job through the trigger endpoint.
    async fn submit_job(&self, payload: &serde_json::Value) -> Result<SubmittedJob, ServiceError>;
}

// ---------------------------------------------------------------- Platform

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PlatformError {
    /// Retries ran out before the deadline: 429s, 5xx or timeouts all along.
    #[error("platform unavailable until the deadline: {0}")]
    Unavailable(String),
    /// The platform refused the request (4xx other than 429): retrying cannot help.
    #[error("platform refused the request: {0}")]
    Refused(String),
    #[error("platform command failed: {0}")]
    Command(String),
    #[error("platform answered with an unexpected body: {0}")]
    Body(String),
}

impl PlatformError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, PlatformError::Unavailable(_))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployPhase {
    InProgress,
    Live,
    Failed,
    Canceled,
    /// Replaced by a newer deploy before (or after) it went live (Render's
    /// `deactivated`): not a failure; the deploy that replaced it is followed instead.
    Superseded,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct DeployInfo {
    pub id: String,
    /// The platform's own word for it (`build_in_progress`, `live`, `update_failed` ...).
    pub status: String,
    pub phase: DeployPhase,
    pub created_at: Option<DateTime<Utc>>,
}

#[async_trait]
pub trait Platform: Send + Sync {
    fn kind(&self) -> &'static str;
    /// The service's Redis URL as the platform holds it now (`None`: not set).
    async fn read_url(&self) -> Result<Option<String>, PlatformError>;
    /// Writes the service's Redis URL (one variable, never the whole set).
    async fn write_url(&self, value: &str) -> Result<(), PlatformError>;
    async fn deploy(&self) -> Result<DeployInfo, PlatformError>;
    async fn deploy_status(&self, id: &str) -> Result<DeployInfo, PlatformError>;
    /// Deploys created at or after `since`, newest first: how a crash between
    /// "deploy requested" and "deploy id journaled" is reconciled.
    async fn deploys_since(&self, since: DateTime<Utc>) -> Result<Vec<DeployInfo>, PlatformError>;
}

// ---------------------------------------------------------------- Notifier

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Notification {
    pub incident: String,
    pub title: String,
    pub text: String,
}

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
#[error("notification failed: {0}")]
pub struct NotifyError(pub String);

#[async_trait]
pub trait Notifier: Send + Sync {
    /// Delivers one notification, with its own bounded retries.
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError>;

    /// False for the notifier of a playbook that configures none: then nothing is
    /// sent and nothing is journaled.
    fn enabled(&self) -> bool {
        true
    }
}

/// The notifier used when a playbook configures none.
pub struct NoNotifier;

#[async_trait]
impl Notifier for NoNotifier {
    async fn notify(&self, _n: &Notification) -> Result<(), NotifyError> {
        Ok(())
    }

    fn enabled(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------- Pager

/// What a page does: open (or update) the person's alert, or close it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PageAction {
    Trigger,
    Resolve,
}

/// One page to a person (PagerDuty's Events API v2 underneath). Every text field has
/// been through the redactor before it is built.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Page {
    pub action: PageAction,
    /// The incident id: a resolve closes what the trigger opened.
    pub dedup_key: String,
    pub summary: String,
    pub source: String,
    /// `critical`, `error`, `warning` or `info`.
    pub severity: String,
    pub details: std::collections::BTreeMap<String, String>,
}

#[async_trait]
pub trait Pager: Send + Sync {
    /// Sends one page, with its own bounded retries.
    async fn page(&self, p: &Page) -> Result<(), NotifyError>;

    /// False when the playbook configures no pager: nothing is sent or journaled.
    fn enabled(&self) -> bool {
        true
    }
}

/// The pager used when a playbook configures none.
pub struct NoPager;

#[async_trait]
impl Pager for NoPager {
    async fn page(&self, _p: &Page) -> Result<(), NotifyError> {
        Ok(())
    }

    fn enabled(&self) -> bool {
        false
    }
}

// ---------------------------------------------------------------- Clock

/// Wall-clock time for journal timestamps. Waiting goes through tokio time, so tests
/// can pause it; this is only for "what time is it".
pub trait Clock: Send + Sync {
    fn now(&self) -> DateTime<Utc>;
}

pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> DateTime<Utc> {
        Utc::now()
    }
}

/// Everything the executor talks to, handed in as one bundle.
#[derive(Clone)]
pub struct Ports {
    pub redis: Arc<dyn RedisProbe>,
    pub hooks: Arc<dyn HookRunner>,
    pub service: Arc<dyn ServiceApi>,
    pub platform: Arc<dyn Platform>,
    pub notifier: Arc<dyn Notifier>,
    pub pager: Arc<dyn Pager>,
    pub clock: Arc<dyn Clock>,
}
