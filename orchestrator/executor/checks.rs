//! Measuring the runbook's checklists for real: confirmation (Step 1), assessment and
//! the backup's preflight (Step 2), and recovery verification (Step 7).

use super::{ExecError, Executor, Progress};
use crate::duration::format_duration as fd;
use crate::journal::prelude::*;
use crate::machine::{Check, Event, Machine};
use crate::model::{ConfirmItem, FailureClass, VerifyItem};
use crate::ports::JobState;
use crate::service::is_redis_error;
use std::time::Duration;

/// How a check the orchestrator's own trouble kept from measuring begins.
const LOCAL_NOT_EVIDENCE: &str = "not evidence: the orchestrator's own trouble";

fn ms(d: Duration) -> String {
    format!("{:.1}ms", d.as_secs_f64() * 1000.0)
}

impl Executor {
    /// One sampling of the confirmation checklist. Attempts are scheduled on the
    /// window's clock (attempt k at `(k-1) × window / (attempts-1)` after Confirm was
    /// entered), so a slow round does not push the later ones back: Confirm takes at
    /// most `confirm_window` plus one round.
    pub(super) async fn confirm_step(&self, id: &str, machine: &Machine, attempt: u32) -> Result<Option<Event>, ExecError> {
        let t = &self.playbook.thresholds;
        if attempt > 1 {
            // The clock starts at the first sample, not at the trigger: an incident opened
            // by `trigger` and driven later must not run its overdue attempts back to back.
            let first = self.journal.transitions(id).await?.into_iter().find(|t| t.event == "confirm_checked" && t.rejected.is_none());
            let entered = match first.and_then(|t| crate::journal::parse_ts(&t.at)) {
                Some(at) => at,
                None => self.entered_at(id, machine.state()).await?.0,
            };
            let gap = t.confirm_window / t.confirm_attempts.saturating_sub(1).max(1);
            let due = entered + chrono::Duration::from_std(gap * (attempt - 1)).unwrap_or_default();
            let left = (due - self.now()).to_std().unwrap_or_default();
            if !left.is_zero() {
                self.report(Progress::Waiting {
                    what: format!("confirm attempt {attempt} of {}", t.confirm_attempts),
                    elapsed: gap.saturating_sub(left),
                    limit: gap,
                });
                if self.wait(id, left).await? {
                    return Ok(None); // a command or shutdown arrived: handle it first
                }
            }
        }
        let checks = self.probes().confirm_checklist(true).await;
        // The orchestrator's own trouble kept it from probing: that is no answer at all,
        // not "Redis answers". Deciding now would end a real outage as a false alarm (and
        // start the cooldown); sample again once the ping timeout has passed.
        if checks.iter().any(|c| c.observed.starts_with(LOCAL_NOT_EVIDENCE)) {
            self.report(Progress::Info("the orchestrator's own host is in trouble; confirming again".into()));
            self.wait(id, t.ping_timeout).await?;
            return Ok(None);
        }
        Ok(Some(Event::ConfirmChecked { checks }))
    }
}

/// Whether the confirmation rule is decided by the items answered so far, whatever the
/// others say: every required item answered, and either one of them fails, or enough
/// signals hold; or too few items remain for `min_signals` to be reachable.
fn decided(rule: &crate::playbook::ConfirmPolicy, answered: &[&Check], total: usize) -> bool {
    let holds = |name: &str| answered.iter().find(|c| c.item == name).map(|c| c.holds);
    if rule.required.iter().any(|r| holds(r.as_str()) == Some(false)) {
        return true; // a required item fails: the checklist cannot hold
    }
    let holding = answered.iter().filter(|c| c.holds).count() as u32;
    let pending = (total - answered.len()) as u32;
    let required_in = rule.required.iter().all(|r| holds(r.as_str()) == Some(true));
    (required_in && holding >= rule.min_signals) || holding + pending < rule.min_signals
}

/// The measurements of the checklists, usable without an incident (`orchestrator
/// check` runs them as a dry run).
pub struct Probes<'a> {
    pub pb: &'a crate::playbook::Playbook,
    pub ports: &'a crate::ports::Ports,
}

impl Probes<'_> {
    fn now(&self) -> chrono::DateTime<chrono::Utc> {
        self.ports.clock.now()
    }

    /// Measures the runbook's confirmation checklist once. Each item is bounded by its
    /// own timeout (ping timeout for Redis, request timeout for the service). With
    /// `decide_early`, the round ends as soon as the playbook's rule (required items
    /// and `min_signals`) is decided either way: a real service's metrics call can take
    /// ioredis's full timeout while Redis is down, and a person who already sees the
    /// required evidence does not wait for it either. Items not awaited are journaled as
    /// such, not as holding.
    pub async fn confirm_checklist(&self, decide_early: bool) -> Vec<Check> {
        let t = &self.pb.thresholds;
        let log_window = chrono::Duration::from_std(t.confirm_window.max(Duration::from_secs(60))).unwrap_or_default();
        let since = self.now() - log_window;
        let pb = self.pb;
        let started = tokio::time::Instant::now();
        let ping = async {
            match self.ports.redis.check(&pb.redis.primary, t.ping_timeout).await {
                Ok(lat) if lat > t.ping_timeout => {
                    Check::new(ConfirmItem::PingFailed.as_str(), true, format!("PONG after {} (timeout {})", ms(lat), fd(t.ping_timeout)))
                }
                Ok(lat) => Check::new(ConfirmItem::PingFailed.as_str(), false, format!("PONG in {} from {}", ms(lat), pb.redis.primary)),
                Err(f) if f.class == FailureClass::Local => {
                    crate::selfcheck::report(&f.message);
                    Check::new(
                        ConfirmItem::PingFailed.as_str(),
                        false,
                        format!("{LOCAL_NOT_EVIDENCE} kept it from probing {} ({})", pb.redis.primary, f.message),
                    )
                }
                Err(f) => {
                    Check::new(ConfirmItem::PingFailed.as_str(), true, format!("{} from {}: {}", f.class, pb.redis.primary, f.message))
                }
            }
        };
        let health = async {
            match self.ports.service.health().await {
                Ok(h) => Check::new(
                    ConfirmItem::HealthDown.as_str(),
                    h.redis_status == "down" || (h.status != "ok" && h.redis_status != "up"),
                    format!(
                        "HTTP {}, status {}, redis {}{}",
                        h.http_status,
                        h.status,
                        h.redis_status,
                        if h.redis_message.is_empty() { String::new() } else { format!(": {}", h.redis_message) }
                    ),
                ),
                Err(e) => Check::new(ConfirmItem::HealthDown.as_str(), false, format!("health endpoint did not answer: {e}")),
            }
        };
        let logs = async {
            match self.ports.service.error_logs(since).await {
                Ok(entries) => {
                    let hits: Vec<_> = entries.iter().filter(|e| is_redis_error(&e.message, &pb.service.error_patterns)).collect();
                    let latest = hits.first().map(|e| format!("; latest: {}", e.message)).unwrap_or_default();
                    Check::new(
                        ConfirmItem::ErrorLogs.as_str(),
                        !hits.is_empty(),
                        format!("{} Redis error(s) in the last {}{latest}", hits.len(), fd(log_window.to_std().unwrap_or_default())),
                    )
                }
                Err(e) => Check::new(ConfirmItem::ErrorLogs.as_str(), false, format!("logs endpoint did not answer: {e}")),
            }
        };
        let metrics = async {
            match self.ports.service.queue_metrics().await {
                Ok(m) => Check::new(
                    ConfirmItem::QueueStopped.as_str(),
                    m.active_jobs == 0 || m.connection_status != "connected",
                    format!("active_jobs {}, waiting_jobs {}, connection_status {}", m.active_jobs, m.waiting_jobs, m.connection_status),
                ),
                Err(e) => Check::new(ConfirmItem::QueueStopped.as_str(), false, format!("queue metrics did not answer: {e}")),
            }
        };
        let (mut ping, mut health, mut logs, mut metrics) =
            (std::pin::pin!(ping), std::pin::pin!(health), std::pin::pin!(logs), std::pin::pin!(metrics));
        // Slots in the journal's order: health, ping, logs, metrics.
        let mut slots: [Option<Check>; 4] = [None, None, None, None];
        let rule = &pb.confirm;
        loop {
            let answered: Vec<&Check> = slots.iter().flatten().collect();
            if answered.len() == slots.len() || (decide_early && decided(rule, &answered, slots.len())) {
                break;
            }
            tokio::select! {
                c = &mut health, if slots[0].is_none() => slots[0] = Some(c),
                c = &mut ping, if slots[1].is_none() => slots[1] = Some(c),
                c = &mut logs, if slots[2].is_none() => slots[2] = Some(c),
                c = &mut metrics, if slots[3].is_none() => slots[3] = Some(c),
            }
        }
        let decided_after = started.elapsed();
        let items = [ConfirmItem::HealthDown, ConfirmItem::PingFailed, ConfirmItem::ErrorLogs, ConfirmItem::QueueStopped];
        slots
            .into_iter()
            .zip(items)
            .map(|(slot, item)| {
                slot.unwrap_or_else(|| {
                    Check::new(
                        item.as_str(),
                        false,
                        format!("not awaited: the checklist was decided after {} without it (still answering)", ms(decided_after)),
                    )
                })
            })
            .collect()
    }

    /// Classifies the primary's failure from a fresh probe and runs the backup's
    /// preflight. Never switches to a backup that is dead, slow, the same endpoint, or
    /// when the platform holds a URL we do not know how to restore.
    pub async fn assess(&self) -> Event {
        let pb = self.pb;
        let t = &pb.thresholds;
        let (primary, backup_check, backup_latency, platform_url) = tokio::join!(
            self.ports.redis.check(&pb.redis.primary, t.ping_timeout),
            self.ports.redis.check(&pb.redis.backup, t.ping_timeout),
            self.ports.redis.latency(&pb.redis.backup, t.latency_samples, t.ping_timeout),
            self.ports.platform.read_url(),
        );
        let primary_answers = matches!(primary, Ok(lat) if lat <= t.ping_timeout);
        let (class, detail) = match primary {
            Err(f) => {
                if f.class == FailureClass::Local {
                    crate::selfcheck::report(&f.message);
                }
                (f.class, format!("primary {}: {}", pb.redis.primary, f.message))
            }
            Ok(lat) if lat > t.ping_timeout => (FailureClass::Timeout, format!("primary answered after {}", ms(lat))),
            Ok(lat) => (FailureClass::Unknown, format!("primary answered again during assessment (PONG in {}): unclear failure", ms(lat))),
        };
        let mut preflight = vec![Check::new(
            "backup_distinct",
            pb.redis.primary.endpoint() != pb.redis.backup.endpoint(),
            format!("primary {} / backup {}", pb.redis.primary.endpoint(), pb.redis.backup.endpoint()),
        )];
        preflight.push(match backup_check {
            Ok(lat) if lat <= t.ping_timeout => {
                Check::new("backup_ping", true, format!("PONG and write in {} from {}", ms(lat), pb.redis.backup))
            }
            Ok(lat) => Check::new("backup_ping", false, format!("PONG after {} (timeout {})", ms(lat), fd(t.ping_timeout))),
            Err(f) => Check::new("backup_ping", false, format!("{} from {}: {}", f.class, pb.redis.backup, f.message)),
        });
        preflight.push(match backup_latency {
            Ok(s) => Check::new(
                "backup_latency",
                s.median_ms < t.latency.as_secs_f64() * 1000.0,
                format!("median {:.1}ms, max {:.1}ms over {} PINGs (threshold {})", s.median_ms, s.max_ms, s.samples, fd(t.latency)),
            ),
            Err(f) => Check::new("backup_latency", false, format!("{}: {}", f.class, f.message)),
        });
        preflight.push(match platform_url {
            Ok(Some(v)) if v == pb.redis.primary.expose() => {
                Check::new("platform_url_known", true, format!("platform holds the primary URL {}", pb.redis.primary))
            }
            // Already failed over behind the topology's back: the service runs on the
            // standby, and a second switch would flush the Redis production uses.
            Ok(Some(v)) if v == pb.redis.backup.expose() => Check::new(
                "platform_url_known",
                false,
                format!(
                    "platform already holds the standby's URL {}: the service was failed over before and the journal's topology does not say so; a second switch would flush the Redis production uses (see `orchestrator status`, `orchestrator arm`)",
                    pb.redis.backup
                ),
            ),
            Ok(Some(v)) => Check::new(
                "platform_url_known",
                false,
                format!("platform holds {}, neither primary nor backup: a rollback could not restore it", crate::secret::mask_url(&v)),
            ),
            Ok(None) => Check::new("platform_url_known", false, "platform has no value for the Redis URL"),
            Err(e) => Check::new("platform_url_known", false, format!("platform did not answer: {e}")),
        });
        Event::Assessed { class, detail, preflight, primary_answers }
    }

    /// The flush's key estimate on the backup: a dry run (SCAN only, nothing deleted),
    /// bounded in time. Journaled as the preflight item `flush_estimate`, which the
    /// machine reads as a measurement, not as a condition.
    pub async fn flush_estimate(&self) -> Check {
        use crate::model::FlushMode;
        const DEADLINE: std::time::Duration = std::time::Duration::from_secs(10);
        let pb = self.pb;
        let f = &pb.flush;
        let item = crate::machine::FLUSH_ESTIMATE;
        if f.mode == FlushMode::None {
            return Check::new(item, true, "flush mode none: nothing would be deleted");
        }
        let plan = crate::ports::FlushPlan {
            patterns: if f.mode == FlushMode::Flushdb { vec![] } else { f.patterns.clone() },
            flushdb: f.mode == FlushMode::Flushdb,
            batch: f.batch,
            max_latency: f.max_latency,
            dry_run: true,
        };
        match tokio::time::timeout(DEADLINE, self.ports.redis.flush(&pb.redis.backup, &plan, &|_| {})).await {
            Ok(Ok(r)) => Check::new(
                item,
                true,
                format!(
                    "{} keys on {} would be removed ({} mode{}; dry run, nothing deleted)",
                    r.deleted,
                    pb.redis.backup,
                    f.mode.as_str(),
                    if r.per_pattern.is_empty() {
                        String::new()
                    } else {
                        format!(": {}", r.per_pattern.iter().map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", "))
                    }
                ),
            ),
            Ok(Err(e)) => Check::new(item, false, format!("could not count on {}: {}: {}", pb.redis.backup, e.class, e.message)),
            Err(_) => Check::new(item, false, format!("counting took longer than {} s; the keyspace is large", DEADLINE.as_secs())),
        }
    }

    /// The preflight a rollback needs: the primary answers PING and a write within the
    /// ping timeout, with latency below the threshold (what the backup passed).
    pub async fn primary_preflight(&self) -> Vec<Check> {
        let pb = self.pb;
        let t = &pb.thresholds;
        let (check, latency) = tokio::join!(
            self.ports.redis.check(&pb.redis.primary, t.ping_timeout),
            self.ports.redis.latency(&pb.redis.primary, t.latency_samples, t.ping_timeout),
        );
        vec![
            match check {
                Ok(lat) if lat <= t.ping_timeout => {
                    Check::new("primary_ping", true, format!("PONG and write in {} from {}", ms(lat), pb.redis.primary))
                }
                Ok(lat) => Check::new("primary_ping", false, format!("PONG after {} (timeout {})", ms(lat), fd(t.ping_timeout))),
                Err(f) => Check::new("primary_ping", false, format!("{} from {}: {}", f.class, pb.redis.primary, f.message)),
            },
            match latency {
                Ok(s) => Check::new(
                    "primary_latency",
                    s.median_ms < t.latency.as_secs_f64() * 1000.0,
                    format!("median {:.1}ms, max {:.1}ms over {} PINGs (threshold {})", s.median_ms, s.max_ms, s.samples, fd(t.latency)),
                ),
                Err(f) => Check::new("primary_latency", false, format!("{}: {}", f.class, f.message)),
            },
        ]
    }

    /// Measures the recovery checklist against the backup. `submit_job: false` skips the
    /// synthetic job (a dry run must not change anything). Redis errors count from
    /// `errors_since`, described as `since_what` ("the first healthy sample" ...).
    pub async fn recovery_checklist(
        &self,
        id: &str,
        errors_since: chrono::DateTime<chrono::Utc>,
        since_what: &str,
        attempt: u32,
        submit_job: bool,
    ) -> Vec<Check> {
        let pb = self.pb;
        let t = &pb.thresholds;
        let svc = &self.ports.service;
        let (health, before, latency) =
            tokio::join!(svc.health(), svc.queue_metrics(), self.ports.redis.latency(&pb.redis.backup, t.latency_samples, t.ping_timeout));
        let mut checks = Vec::new();
        checks.push(match &health {
            Ok(h) => Check::new(
                VerifyItem::HealthUp.as_str(),
                h.redis_status == "up",
                format!("HTTP {}, status {}, redis {}", h.http_status, h.status, h.redis_status),
            ),
            Err(e) => Check::new(VerifyItem::HealthUp.as_str(), false, format!("health endpoint did not answer: {e}")),
        });
        checks.push(match &before {
            Ok(m) => Check::new(
                VerifyItem::QueueConnected.as_str(),
                m.connection_status == "connected",
                format!("connection_status {}", m.connection_status),
            ),
            Err(e) => Check::new(VerifyItem::QueueConnected.as_str(), false, format!("queue metrics did not answer: {e}")),
        });
        // A reconnect is not proof that workers process again: submit a real job.
        if submit_job {
            checks.push(self.synthetic_job(id, attempt, &pb.redis.backup, before.as_ref().ok().map(|m| m.completed_jobs)).await);
        }
        let after = svc.queue_metrics().await;
        checks.push(match (&before, &after) {
            (Ok(b), Ok(a)) => Check::new(
                VerifyItem::WaitingDecreasing.as_str(),
                a.waiting_jobs < b.waiting_jobs || (a.waiting_jobs == 0 && b.waiting_jobs == 0),
                format!("waiting_jobs {} → {}", b.waiting_jobs, a.waiting_jobs),
            ),
            (Err(e), _) | (_, Err(e)) => {
                Check::new(VerifyItem::WaitingDecreasing.as_str(), false, format!("queue metrics did not answer: {e}"))
            }
        });
        checks.push(match svc.error_logs(errors_since).await {
            Ok(entries) => {
                let hits: Vec<_> = entries.iter().filter(|e| is_redis_error(&e.message, &pb.service.error_patterns)).collect();
                let latest = hits.first().map(|e| format!("; latest: {}", e.message)).unwrap_or_default();
                Check::new(
                    VerifyItem::NoNewErrors.as_str(),
                    hits.is_empty(),
                    format!("{} Redis error(s) since {since_what}{latest}", hits.len()),
                )
            }
            Err(e) => Check::new(VerifyItem::NoNewErrors.as_str(), false, format!("logs endpoint did not answer: {e}")),
        });
        checks.push(match latency {
            Ok(s) => Check::new(
                VerifyItem::Latency.as_str(),
                s.median_ms < t.verify_latency.as_secs_f64() * 1000.0,
                format!(
                    "median {:.1}ms, max {:.1}ms over {} PINGs to {} (bound {})",
                    s.median_ms,
                    s.max_ms,
                    s.samples,
                    pb.redis.backup,
                    fd(t.verify_latency)
                ),
            ),
            Err(f) => Check::new(VerifyItem::Latency.as_str(), false, format!("{}: {}", f.class, f.message)),
        });
        checks
    }

    /// Submits a job through the trigger endpoint and waits for BullMQ to record it as
    /// completed in the new Redis, within the job timeout.
    /// Submits a job through the trigger endpoint and waits for BullMQ to record it as
    /// completed in `target` (the Redis the service should be using), within the job
    /// timeout.
    pub async fn synthetic_job(&self, id: &str, attempt: u32, target: &crate::secret::RedisUrl, completed_before: Option<u64>) -> Check {
        let pb = self.pb;
        let t = &pb.thresholds;
        let item = VerifyItem::SyntheticJob.as_str();
        let payload = serde_json::json!({
            "test": "redis-recovery-test",
            "incident": id,
            "attempt": attempt,
            "timestamp": chrono::Utc::now().to_rfc3339(),
        });
        let started = tokio::time::Instant::now();
        let job = match self.ports.service.submit_job(&payload).await {
            Ok(j) => j,
            Err(e) => return Check::new(item, false, format!("trigger endpoint refused the job: {e}")),
        };
        let queue = job.queue.clone().unwrap_or_else(|| pb.service.synthetic_queue.clone());
        let deadline = started + t.job_timeout;
        let mut last = JobState::Unknown;
        loop {
            let done = match &job.job_id {
                Some(job_id) => match self.ports.redis.job_state(target, &queue, job_id, t.ping_timeout).await {
                    Ok(state) => {
                        last = state;
                        matches!(state, JobState::Completed | JobState::Failed)
                    }
                    Err(_) => false,
                },
                // No job id in the answer: fall back to the completed counter.
                None => match (completed_before, self.ports.service.queue_metrics().await) {
                    (Some(b), Ok(m)) if m.completed_jobs > b => {
                        last = JobState::Completed;
                        true
                    }
                    _ => false,
                },
            };
            if done || tokio::time::Instant::now() >= deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        let took = started.elapsed();
        let job_name = job.job_id.as_deref().map(|j| format!("job {queue}:{j}")).unwrap_or_else(|| "job (no id returned)".into());
        match last {
            JobState::Completed => Check::new(item, true, format!("{job_name} completed in {}", ms(took))),
            JobState::Failed => Check::new(item, false, format!("{job_name} failed after {}", ms(took))),
            other => Check::new(item, false, format!("{job_name} still {other:?} after {} (job timeout {})", ms(took), fd(t.job_timeout))),
        }
    }
}

impl Executor {
    pub(super) fn probes(&self) -> Probes<'_> {
        Probes { pb: &self.playbook, ports: &self.ports }
    }

    /// Assesses; when the machine is waiting for a busy or loading primary, re-samples
    /// only after `busy_interval`.
    pub(super) async fn assess_step(&self, id: &str, machine: &Machine) -> Result<Option<Event>, ExecError> {
        let waits = machine.incident().waits;
        if waits > 0 {
            let t = &self.playbook.thresholds;
            self.report(Progress::Waiting {
                what: format!("the primary is {}: re-sample {waits}", machine.incident().class.map(|c| c.as_str()).unwrap_or("busy")),
                elapsed: t.busy_interval * (waits - 1),
                limit: t.busy_wait,
            });
            if self.wait(id, t.busy_interval).await? {
                return Ok(None);
            }
        }
        let mut assessed = self.probes().assess().await;
        // Shadow mode: what the flush would delete, counted now (never deleting), so
        // the record says what a failover would have done to the backup's keys.
        if machine.incident().policy.observe {
            if let Event::Assessed { preflight, .. } = &mut assessed {
                preflight.push(self.probes().flush_estimate().await);
            }
        }
        Ok(Some(assessed))
    }

    /// One sampling of the recovery checklist against the backup. Every item is
    /// measured (for the record); the machine judges the required ones.
    pub(super) async fn verify_step(&self, id: &str, machine: &Machine, attempt: u32) -> Result<Option<Event>, ExecError> {
        let pb = &self.playbook;
        let t = &pb.thresholds;
        let (entered, _) = self.entered_at(id, machine.state()).await?;
        if attempt > 1 && self.wait(id, t.verify_interval).await? {
            return Ok(None);
        }
        let elapsed = (self.now() - entered).to_std().unwrap_or_default();
        self.report(Progress::Waiting { what: format!("verify attempt {attempt}"), elapsed, limit: t.verify_window });
        // Start-up noise that stops is not a failure: a freshly deployed service logs
        // connection errors until its Redis client is ready. Errors count from the
        // first sample of this verification in which health was up.
        let healthy_since = machine.incident().healthy_since.as_deref().and_then(crate::journal::parse_ts);
        let (since, since_what) = match healthy_since {
            Some(at) => (at, format!("health was first up ({})", at.format("%H:%M:%S%.3fZ"))),
            None => (entered, "verification started".to_string()),
        };
        let started_at = self.now();
        let checks = self.probes().recovery_checklist(id, since, &since_what, attempt, true).await;
        let window_over = (self.now() - entered).to_std().unwrap_or_default() >= t.verify_window;
        Ok(Some(Event::VerifyChecked { checks, window_over, started_at: Some(crate::journal::ts(started_at)) }))
    }
}
