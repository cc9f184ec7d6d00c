//! The validated, typed playbook: what the rest of the program reads. Every field has
//! been checked and every `${NAME}` resolved; secrets are wrapped so they cannot print.

use crate::model::{Action, ConfirmItem, FailureClass, FlushMode, Step, VerifyItem};
use crate::secret::{RedisUrl, Secret};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::time::Duration;

#[derive(Debug, Clone)]
pub struct Playbook {
    pub name: String,
    /// Where it was loaded from (for messages).
    pub source: PathBuf,
    /// SHA-256 of the file's bytes; each incident pins it.
    pub hash: String,
    pub redis: RedisSection,
    pub service: ServiceSection,
    pub thresholds: Thresholds,
    pub confirm: ConfirmPolicy,
    pub verify: VerifyPolicy,
    pub actions: BTreeMap<FailureClass, Action>,
    pub flush: FlushPolicy,
    pub approvals: ApprovalPolicy,
    pub platform: PlatformConfig,
    pub notifications: Notifications,
    pub cooldown: Duration,
    pub watch: WatchPolicy,
    /// Which alerts are this target's when a webhook body carries alerts for many.
    pub routing: Routing,
    /// How the target's topology (which endpoint is active) re-arms after a failover.
    pub topology: TopologyPolicy,
    /// The web console's public address (`https://orchestrator.example.com`): Slack
    /// messages link each incident's page under it.
    pub console_url: Option<url::Url>,
    /// `act` (default) or `observe`: shadow mode, Detect/Confirm/Assess for real, then
    /// the outcome a failover would have had, touching nothing. `serve --observe` and
    /// `run --observe` set it for every target.
    pub mode: crate::model::Mode,
    /// Commands run at named points of an incident (`hooks:`); a `pre_*` one that fails
    /// vetoes its step.
    pub hooks: BTreeMap<crate::model::HookPoint, HookConfig>,
    /// Every secret this playbook holds or references, for the one redaction path.
    pub redactor: std::sync::Arc<crate::redact::Redactor>,
}

/// One hook: an argv run without a shell, in a cleared environment (`PATH` and the
/// incident's context only) plus the variables the playbook maps in, bounded by `timeout`.
#[derive(Debug, Clone)]
pub struct HookConfig {
    /// The program and its arguments, as written (after `${NAME}` resolution).
    pub command: Vec<String>,
    pub timeout: Duration,
    /// Variables the playbook maps into the hook's environment. A value taken from the
    /// orchestrator's environment (`${NAME}`) is a secret: redacted everywhere.
    pub env: BTreeMap<String, Secret>,
}

#[derive(Debug, Clone)]
pub struct RedisSection {
    pub primary: RedisUrl,
    pub backup: RedisUrl,
}

#[derive(Debug, Clone)]
pub struct ServiceSection {
    pub base_url: url::Url,
    pub api_key: Secret,
    pub health_path: String,
    pub queue_metrics_path: String,
    pub logs_path: String,
    pub trigger_path: String,
    /// Queue the synthetic job is checked in (its completion is read from BullMQ's keys).
    pub synthetic_queue: String,
    pub request_timeout: Duration,
    /// Phrases in error logs that mean "Redis connection problem".
    pub error_patterns: Vec<String>,
}

#[derive(Debug, Clone)]
pub struct Thresholds {
    pub ping_timeout: Duration,
    pub latency: Duration,
    pub verify_latency: Duration,
    pub job_timeout: Duration,
    pub confirm_window: Duration,
    pub confirm_attempts: u32,
    pub verify_window: Duration,
    pub verify_interval: Duration,
    pub deploy_timeout: Duration,
    pub deploy_poll: Duration,
    pub latency_samples: u32,
    /// A deploy of the backup that fails (`build_failed` ...) changed nothing for the
    /// service: it is tried again this many times before giving up.
    pub deploy_retries: u32,
    /// How long a `busy` or `loading` primary is waited for (re-sampled every
    /// `busy_interval`) before escalating.
    pub busy_wait: Duration,
    pub busy_interval: Duration,
}

#[derive(Debug, Clone)]
pub struct ConfirmPolicy {
    pub required: Vec<ConfirmItem>,
    pub min_signals: u32,
}

#[derive(Debug, Clone)]
pub struct VerifyPolicy {
    pub required: Vec<VerifyItem>,
    /// Workers connected but processing nothing (health up, queue connected, the
    /// synthetic job never completes): restart the service once, as the runbook's
    /// "Queue Processing Stalled" says, and verify again before rolling back.
    pub restart_on_stall: bool,
}

#[derive(Debug, Clone)]
pub struct FlushPolicy {
    pub mode: FlushMode,
    pub patterns: Vec<String>,
    pub batch: u32,
    /// Flushing pauses while PING latency on the target is above this.
    pub max_latency: Duration,
    pub critical_queues: Vec<String>,
    /// How long to wait for the guards to hold before escalating.
    pub guard_wait: Duration,
}

#[derive(Debug, Clone)]
pub struct ApprovalPolicy {
    pub steps: Vec<Step>,
    pub approvers: Vec<String>,
    pub required: u32,
    pub ttl: Duration,
    /// Approver name → the OS user who alone may act as them from the CLI. Empty: any
    /// OS user may give any name (and the OS user is journaled with it).
    pub os_users: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub enum PlatformConfig {
    Render(RenderConfig),
    Command(CommandConfig),
    EnvFile(EnvFileConfig),
}

impl PlatformConfig {
    pub fn kind(&self) -> &'static str {
        match self {
            PlatformConfig::Render(_) => "render",
            PlatformConfig::Command(_) => "command",
            PlatformConfig::EnvFile(_) => "env-file",
        }
    }
}

#[derive(Debug, Clone)]
pub struct RenderConfig {
    pub base_url: url::Url,
    pub api_key: Secret,
    pub service_id: String,
    pub env_key: String,
    pub request_timeout: Duration,
    /// Retries of one call (429, 5xx, timeouts) stop at this deadline.
    pub retry_deadline: Duration,
}

#[derive(Debug, Clone)]
pub struct CommandConfig {
    pub read: String,
    pub switch: String,
    pub deploy: String,
    pub status: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct EnvFileConfig {
    pub path: PathBuf,
    pub key: String,
    pub restart: String,
    pub timeout: Duration,
}

#[derive(Debug, Clone, Default)]
pub struct Notifications {
    pub slack: Option<SlackConfig>,
    pub pagerduty: Option<PagerDutyConfig>,
}

/// Paging through PagerDuty's Events API v2 (escalations, held outcomes, approval
/// gates; resolved when the incident closes).
#[derive(Debug, Clone)]
pub struct PagerDutyConfig {
    /// The integration's routing key: a secret, only from `${NAME}`.
    pub routing_key: Secret,
    /// `https://events.pagerduty.com/v2/enqueue` unless given.
    pub url: url::Url,
    pub attempts: u32,
    pub timeout: Duration,
}

#[derive(Debug, Clone)]
pub struct SlackConfig {
    pub webhook_url: Secret,
    pub channel: Option<String>,
    pub attempts: u32,
    pub timeout: Duration,
}

/// The runbook's "Alert Conditions", evaluated by the watch loop.
#[derive(Debug, Clone)]
pub struct WatchPolicy {
    pub enabled: bool,
    pub interval: Duration,
    /// Redis ping fails for longer than this.
    pub ping_fail_for: Duration,
    /// Redis latency above `latency_threshold` for longer than `latency_for`.
    pub latency_threshold: Duration,
    pub latency_for: Duration,
    /// Queue depth (waiting jobs) above this.
    pub queue_depth: u64,
    /// More than `failed_jobs` failed jobs within `failed_window`.
    pub failed_jobs: u64,
    pub failed_window: Duration,
}

/// An alert is this target's when its `target` label is the playbook's name, or when it
/// carries every label given here with the value given (e.g. `service: visapi`).
#[derive(Debug, Clone, Default)]
pub struct Routing {
    pub labels: BTreeMap<String, String>,
}

#[derive(Debug, Clone)]
pub struct TopologyPolicy {
    /// After a failover, automatic failover stays disarmed until the standby (the old
    /// primary) has passed its preflight continuously for this long.
    pub rearm_after: Duration,
}

impl Playbook {
    /// The playbook as the executor uses it when `active` is the endpoint the service
    /// is on: `redis.primary` is the active and `redis.backup` the standby. The hash,
    /// secrets and everything else are the file's.
    pub fn oriented(&self, active: crate::model::Side) -> Playbook {
        let mut pb = self.clone();
        if active == crate::model::Side::Backup {
            std::mem::swap(&mut pb.redis.primary, &mut pb.redis.backup);
        }
        pb
    }

    /// The playbook's URL for one of its endpoints.
    pub fn endpoint(&self, side: crate::model::Side) -> &RedisUrl {
        match side {
            crate::model::Side::Primary => &self.redis.primary,
            crate::model::Side::Backup => &self.redis.backup,
        }
    }
}
