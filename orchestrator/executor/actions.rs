//! The steps that change the world: Switch (platform write + read-back), Flush, Deploy
//! and Rollback. Each goes through [`Executor::once`] with a stable idempotency key.

use super::once::{error_value, Done, Failed, Seen};
use super::{ExecError, Executor, Progress};
use crate::journal::prelude::*;
use crate::machine::{Check, DeployStatus, Event, Machine};
use crate::model::{FlushMode, HookPoint};
use crate::ports::{DeployInfo, DeployPhase, FlushPlan};
use crate::secret::RedisUrl;
use serde::{Deserialize, Serialize};
use serde_json::json;
use std::time::Duration;

/// The journaled result of a platform write (masked URLs only).
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct UrlWritten {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub written: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub read_back: Option<String>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciled: bool,
}

/// The journaled result of starting a deploy.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct DeployStarted {
    pub deploy_id: String,
    #[serde(default)]
    pub status: String,
    #[serde(default)]
    pub phase: Option<DeployPhase>,
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub reconciled: bool,
}

impl Executor {
    /// Writes `url` to the platform once per key: if a crash left the intent without an
    /// outcome and the platform already holds `url`, the write is not repeated.
    async fn write_url_once(&self, id: &str, key: &str, url: &RedisUrl) -> Result<Done<UrlWritten>, ExecError> {
        let platform = &self.ports.platform;
        let intent = json!({ "env": url.masked(), "platform": platform.kind() });
        self.once(
            id,
            key,
            "set_env",
            intent,
            // Writing the same value twice is harmless, so "could not read" means write.
            async {
                match platform.read_url().await {
                    Ok(Some(v)) if v == url.expose() => {
                        Seen::Done(UrlWritten { written: None, read_back: Some(url.masked().to_string()), reconciled: true })
                    }
                    _ => Seen::NotDone,
                }
            },
            async {
                match platform.write_url(url.expose()).await {
                    Ok(()) => Ok(UrlWritten { written: Some(url.masked().to_string()), read_back: None, reconciled: false }),
                    Err(e) => Err(Failed::new(e)),
                }
            },
        )
        .await
    }

    pub(super) async fn switch_step(&self, id: &str, machine: &Machine) -> Result<Event, ExecError> {
        let backup = &self.playbook.redis.backup;
        // Before the write's intent: a veto here means the platform was never written.
        if let Some(detail) = self.pre_hook(id, machine, HookPoint::PreSwitch).await? {
            return Ok(Event::HookVetoed { hook: HookPoint::PreSwitch, detail });
        }
        if let Done::Failed(f) = self.write_url_once(id, &format!("{id}:set_env:backup"), backup).await? {
            return Ok(Event::Switched { ok: false, detail: format!("platform write failed: {}", f.error) });
        }
        // Read back and compare: the guard of Switch → Flush.
        Ok(match self.ports.platform.read_url().await {
            Ok(Some(v)) if v == backup.expose() => Event::Switched { ok: true, detail: format!("platform holds {backup} (read back)") },
            Ok(Some(v)) => {
                Event::Switched { ok: false, detail: format!("read-back shows {}, not the backup", crate::secret::mask_url(&v)) }
            }
            Ok(None) => Event::Switched { ok: false, detail: "read-back shows no value".into() },
            Err(e) => Event::Switched { ok: false, detail: format!("read-back failed: {e}") },
        })
    }

    pub(super) async fn flush_step(&self, id: &str, machine: &Machine, mode: FlushMode) -> Result<Option<Event>, ExecError> {
        let pb = &self.playbook;
        let f = &pb.flush;
        if mode == FlushMode::None {
            return Ok(Some(Event::Flushed { mode, deleted: 0, detail: "flush mode none: nothing removed".into() }));
        }
        let key = format!("{id}:flush");
        // A flush already recorded (we crashed before journaling its transition) is
        // not re-run after the guards: its result stands.
        let recorded = self.journal.effect(&key).await?.filter(|e| e.outcome.is_some());
        if recorded.is_none() {
            let (entered, _) = self.entered_at(id, machine.state()).await?;
            match self.ports.redis.active_jobs(&pb.redis.backup, &f.critical_queues, pb.thresholds.ping_timeout).await {
                Ok(active) if active.iter().all(|(_, n)| *n == 0) => {}
                result => {
                    let checks: Vec<Check> = match result {
                        Ok(active) => active
                            .iter()
                            .map(|(q, n)| Check::new(format!("no_active_jobs:{q}"), *n == 0, format!("LLEN bull:{q}:active = {n}")))
                            .collect(),
                        Err(e) => vec![Check::new("critical_queues_readable", false, format!("{}: {}", e.class, e.message))],
                    };
                    let waited = (self.now() - entered).to_std().unwrap_or_default();
                    let gave_up = waited >= f.guard_wait;
                    if !gave_up && self.wait(id, Duration::from_secs(1).min(f.guard_wait)).await? {
                        return Ok(None);
                    }
                    return Ok(Some(Event::FlushBlocked { checks, gave_up }));
                }
            }
        }
        // The guards hold (or the flush already started): the last word before any key
        // is deleted is the hook's.
        if recorded.is_none() {
            if let Some(detail) = self.pre_hook(id, machine, HookPoint::PreFlush).await? {
                return Ok(Some(Event::HookVetoed { hook: HookPoint::PreFlush, detail }));
            }
        }
        let plan = FlushPlan {
            patterns: if mode == FlushMode::Flushdb { vec![] } else { f.patterns.clone() },
            flushdb: mode == FlushMode::Flushdb,
            batch: f.batch,
            max_latency: f.max_latency,
            dry_run: false,
        };
        let intent = json!({ "target": pb.redis.backup.masked(), "mode": mode.as_str(), "patterns": plan.patterns });
        let reporter = self.opts.reporter.clone();
        let progress = move |p: crate::ports::FlushProgress| {
            if let Some(r) = &reporter {
                r(&Progress::Flush(p));
            }
        };
        let done = self
            .once(
                id,
                &key,
                "flush",
                intent,
                // Deleting matching keys again is harmless before the deploy: re-run.
                async { Seen::NotDone },
                async { self.ports.redis.flush(&pb.redis.backup, &plan, &progress).await.map_err(Failed::new) },
            )
            .await?;
        let report: crate::ports::FlushReport = match done {
            Done::Ok(r) => r,
            Done::Failed(f) => return Ok(Some(Event::FlushFailed { detail: f.error })),
        };
        let deleted = report.deleted;
        let per: Vec<String> = report.per_pattern.iter().map(|(p, n)| format!("{p} {n}")).collect();
        Ok(Some(Event::Flushed {
            mode,
            deleted,
            detail: format!(
                "{deleted} keys removed from {} ({}) in {} ms, {} latency pauses",
                pb.redis.backup,
                per.join(", "),
                report.elapsed_ms,
                report.pauses
            ),
        }))
    }

    /// Starts a deploy once per key (reconciling by the platform's deploy list after a
    /// crash), then polls it until it is live, failed, or the deploy timeout passes.
    async fn deploy_once(&self, id: &str, key: &str, point: &str) -> Result<(DeployStatus, Option<String>, String), ExecError> {
        let platform = &self.ports.platform;
        let done = self
            .once_as(
                point,
                id,
                key,
                "deploy",
                json!({ "platform": platform.kind() }),
                async {
                    // A deploy created after our intent (allowing 2 s of clock skew with
                    // the platform) that this incident has not already claimed is ours.
                    // A second deploy is not harmless: if the platform cannot be read,
                    // the answer is "unknown", never "not done".
                    let Ok(Some(row)) = self.journal.effect(key).await else { return Seen::Unknown("journal unreadable".into()) };
                    let Some(since) = crate::journal::parse_ts(&row.intent_at).map(|t| t - chrono::Duration::seconds(2)) else {
                        return Seen::Unknown("intent time unreadable".into());
                    };
                    let claimed: Vec<String> = match self.journal.effects(id).await {
                        Ok(effects) => effects
                            .iter()
                            .filter(|e| e.kind == "deploy" && e.key != key)
                            .filter_map(|e| serde_json::from_value::<DeployStarted>(e.result_json()).ok().map(|d| d.deploy_id))
                            .collect(),
                        Err(e) => return Seen::Unknown(e.to_string()),
                    };
                    match platform.deploys_since(since).await {
                        Ok(found) => found
                            .into_iter()
                            .find(|d| !claimed.contains(&d.id))
                            .map(|d| DeployStarted { deploy_id: d.id, status: d.status, phase: Some(d.phase), reconciled: true })
                            .into(),
                        Err(e) => Seen::Unknown(e.to_string()),
                    }
                },
                async {
                    match platform.deploy().await {
                        Ok(d) => Ok(DeployStarted { deploy_id: d.id, status: d.status, phase: Some(d.phase), reconciled: false }),
                        // Whether the platform refused it (4xx: certainly not created) is
                        // recorded with the error, so the outcome is judged on the type.
                        Err(e) => Err(Failed { error: e.to_string(), refused: matches!(e, crate::ports::PlatformError::Refused(_)) }),
                    }
                },
            )
            .await?;
        let started = match done {
            Done::Ok(d) => d,
            // Refused (4xx): certainly not created, a clean failure. Anything else (5xx,
            // timeouts until the deadline, an interrupted attempt we cannot see): the
            // platform may have created it after all, and it may still go live on the
            // backup, so it counts as timed out (the rollback deploys).
            Done::Failed(f) => {
                let status = if f.refused { DeployStatus::Failed } else { DeployStatus::TimedOut };
                return Ok((status, None, format!("deploy could not be started: {}", f.error)));
            }
        };
        let mut deploy_id = started.deploy_id.clone();
        // Platforms whose deploy finishes synchronously (env-file's restart command)
        // answered with a final phase already; after a restart they may not know the
        // id any more, so do not poll for it.
        let recorded_status = started.status.clone();
        match started.phase {
            Some(DeployPhase::Live) => return Ok((DeployStatus::Live, Some(deploy_id), format!("deploy {recorded_status}"))),
            Some(DeployPhase::Failed) => return Ok((DeployStatus::Failed, Some(deploy_id), format!("deploy ended {recorded_status}"))),
            Some(DeployPhase::Canceled) => return Ok((DeployStatus::Canceled, Some(deploy_id), format!("deploy ended {recorded_status}"))),
            _ => {}
        }
        // The timeout runs from the intent, so it survives a restart.
        let started = self.journal.effect(key).await?.and_then(|e| crate::journal::parse_ts(&e.intent_at)).unwrap_or_else(|| self.now());
        let timeout = self.playbook.thresholds.deploy_timeout;
        let mut last_status;
        // Deploys followed after ours was replaced: each at most once, so following can
        // never loop.
        let mut followed: Vec<String> = vec![deploy_id.clone()];
        loop {
            let elapsed = (self.now() - started).to_std().unwrap_or_default();
            match platform.deploy_status(&deploy_id).await {
                // Render deactivates a deploy when a later one replaced it. The one that
                // replaced it (the next one created after it) carries the env var as it
                // is now: follow it instead of calling ours a failure. None found: ours
                // was replaced by one we cannot see, which Render only does after that
                // one went live.
                Ok(DeployInfo { phase: DeployPhase::Superseded, created_at, .. }) => {
                    let since = started - chrono::Duration::seconds(2);
                    match platform.deploys_since(since).await {
                        Ok(found) => {
                            // Newest first: the last match is the next one after ours.
                            let next = found.into_iter().rfind(|d| {
                                !followed.contains(&d.id)
                                    && match (created_at, d.created_at) {
                                        (Some(ours), Some(theirs)) => theirs >= ours,
                                        _ => true,
                                    }
                            });
                            match next {
                                Some(next) => {
                                    self.report(Progress::Info(format!("deploy {deploy_id} was replaced by {}; following it", next.id)));
                                    tracing::info!(incident = id, replaced = %deploy_id, by = %next.id, "deploy superseded; following the one that replaced it");
                                    last_status = format!("replaced by {}", next.id);
                                    deploy_id = next.id;
                                    followed.push(deploy_id.clone());
                                }
                                None => {
                                    return Ok((
                                        DeployStatus::Live,
                                        Some(deploy_id),
                                        "deploy went live and was replaced by a later one (deactivated)".into(),
                                    ))
                                }
                            }
                        }
                        Err(e) => last_status = format!("deactivated; the deploy that replaced it is unknown ({e})"),
                    }
                }
                Ok(DeployInfo { phase: DeployPhase::Live, status, .. }) => {
                    return Ok((DeployStatus::Live, Some(deploy_id), format!("deploy {status}")))
                }
                Ok(DeployInfo { phase: DeployPhase::Failed, status, .. }) => {
                    return Ok((DeployStatus::Failed, Some(deploy_id), format!("deploy ended {status}")))
                }
                Ok(DeployInfo { phase: DeployPhase::Canceled, status, .. }) => {
                    return Ok((DeployStatus::Canceled, Some(deploy_id), format!("deploy ended {status}")))
                }
                Ok(d) => last_status = d.status,
                Err(e) => last_status = format!("status unknown ({e})"),
            }
            if elapsed >= timeout {
                return Ok((
                    DeployStatus::TimedOut,
                    Some(deploy_id),
                    format!("deploy still {last_status} after {}", crate::duration::format_duration(timeout)),
                ));
            }
            self.report(Progress::Waiting { what: format!("deploy {deploy_id}: {last_status}"), elapsed, limit: timeout });
            if self.wait(id, self.playbook.thresholds.deploy_poll).await? {
                // Leave the deploy running; coming back polls the same deploy id.
                return Err(if self.shutting_down() { ExecError::Interrupted } else { ExecError::CommandPending });
            }
        }
    }

    /// Deploys the backup; attempt 1 keeps the key it always had, retries get their own.
    pub(super) async fn deploy_step(&self, id: &str, attempt: u32) -> Result<Event, ExecError> {
        let (key, point) = match attempt {
            0 | 1 => (format!("{id}:deploy:switch"), "deploy"),
            n => (format!("{id}:deploy:switch:{n}"), "deploy_retry"),
        };
        let (status, deploy_id, detail) = self.deploy_once(id, &key, point).await?;
        Ok(Event::DeployFinished { status, deploy_id, detail })
    }

    /// The runbook's remedy for a stalled queue: restart the service once, through the
    /// platform (a redeploy of what it runs now: the backup).
    pub(super) async fn restart_step(&self, id: &str) -> Result<Event, ExecError> {
        let (status, deploy_id, detail) = self.deploy_once(id, &format!("{id}:deploy:restart"), "restart").await?;
        Ok(Event::DeployFinished { status, deploy_id, detail })
    }

    /// One sentence for a hold: why rolling back cannot help, and where the service is.
    async fn hold_sentence(&self, id: &str, machine: &Machine, why: &str) -> String {
        let pb = &self.playbook;
        let inc = machine.incident();
        let backup = &pb.redis.backup;
        let backup_state = match self.ports.redis.check(backup, pb.thresholds.ping_timeout).await {
            Ok(_) => "which answers".to_string(),
            Err(f) => format!("which is failing too ({})", f.class),
        };
        let went_live = self
            .journal
            .transitions(id)
            .await
            .map(|t| t.iter().any(|t| t.event == "deploy_finished" && t.to_state == "verify"))
            .unwrap_or(false);
        let place = if inc.backup_deployed && went_live {
            format!("the service stays on the backup {backup}, {backup_state}")
        } else if inc.backup_deployed {
            format!(
                "a deploy of the backup {backup} ({backup_state}) may have started (the platform did not confirm it) and is left as it is"
            )
        } else if inc.deploy_failed {
            format!(
                "every deploy of the backup failed, so the service still runs its old deploy on the dead primary; the platform keeps the flushed backup {backup} ({backup_state}), so the next successful deploy lands on a Redis that works"
            )
        } else {
            let flushed = matches!(self.journal.effect(&format!("{id}:flush")).await, Ok(Some(e)) if e.outcome.as_deref() == Some("ok"));
            let flushed = if flushed { "flushed" } else { "not flushed: a deploy now would land on stale data" };
            format!(
                "the platform keeps the backup URL {backup} ({backup_state}; {flushed}), not deployed; the service still runs on the dead primary"
            )
        };
        format!(
            "Holding: the primary {} fails its preflight ({why}), so rolling back to it cannot help; no platform write or deploy was made; {place}. A person must decide.",
            pb.redis.primary
        )
    }

    /// Rolls back only to a primary that is alive: it first passes the preflight the
    /// backup passed; if it does not, holds (nothing written, nothing deployed). Then
    /// restores the primary URL, deploys it when the backup may be what the service
    /// runs, and verifies the service is healthy on it.
    pub(super) async fn rollback_step(&self, id: &str, machine: &Machine) -> Result<Event, ExecError> {
        let pb = &self.playbook;
        let t = &pb.thresholds;
        let primary = &pb.redis.primary;
        let inc = machine.incident();
        // Once the restore is known to have happened (its outcome journaled, or the
        // platform already holds the primary's URL), the decision is taken: a resume
        // finishes it. Otherwise (never started, or interrupted before the write) the
        // primary is judged again: it may have died meanwhile.
        let restore_key = format!("{id}:set_env:rollback");
        let restore = self.journal.effect(&restore_key).await?;
        let committed = match &restore {
            Some(e) if e.outcome.is_some() => true,
            Some(_) => !matches!(self.ports.platform.read_url().await, Ok(Some(v)) if v != primary.expose()),
            None => false,
        };
        if !committed {
            let checks = self.probes().primary_preflight().await;
            let failing: Vec<String> = checks.iter().filter(|c| !c.holds).map(|c| format!("{}: {}", c.item, c.observed)).collect();
            if !failing.is_empty() {
                if restore.is_some() {
                    // The interrupted restore never reached the platform: close it as not done.
                    let result = error_value("not issued: the primary failed its preflight when the rollback resumed");
                    self.journal_retry(|| self.journal.effect_outcome(&restore_key, "failed", &result, self.now())).await?;
                }
                let detail = self.hold_sentence(id, machine, &failing.join("; ")).await;
                return Ok(Event::RollbackHeld { checks, detail });
            }
            // The primary would take the service back: the hook has the last word.
            if let Some(detail) = self.pre_hook(id, machine, HookPoint::PreRollback).await? {
                if restore.is_some() {
                    let result = error_value("not issued: the pre_rollback hook vetoed the rollback when it resumed");
                    self.journal_retry(|| self.journal.effect_outcome(&restore_key, "failed", &result, self.now())).await?;
                }
                return Ok(Event::HookVetoed { hook: HookPoint::PreRollback, detail });
            }
        }
        if let Done::Failed(f) = self.write_url_once(id, &format!("{id}:set_env:rollback"), primary).await? {
            return Ok(Event::RollbackFinished { ok: false, detail: format!("could not restore {primary}: {}", f.error) });
        }
        match self.ports.platform.read_url().await {
            Ok(Some(v)) if v == primary.expose() => {}
            other => {
                let seen = match other {
                    Ok(Some(v)) => crate::secret::mask_url(&v),
                    Ok(None) => "nothing".into(),
                    Err(e) => e.to_string(),
                };
                return Ok(Event::RollbackFinished { ok: false, detail: format!("read-back after restore shows {seen}") });
            }
        }
        // Deploy only if the backup URL may have been deployed: a switch that never
        // reached Deploy, or whose every deploy failed (the platform kept the old one
        // live), changed nothing the running service uses.
        let deployed_backup =
            inc.backup_deployed || (!inc.deploy_failed && self.journal.effect(&format!("{id}:deploy:switch")).await?.is_some());
        if deployed_backup {
            let (status, deploy_id, detail) = self.deploy_once(id, &format!("{id}:deploy:rollback"), "deploy").await?;
            if status != DeployStatus::Live {
                return Ok(Event::RollbackFinished {
                    ok: false,
                    detail: format!("rollback deploy {}: {detail}", deploy_id.unwrap_or_default()),
                });
            }
        }
        // Nothing was deployed: the service never left the primary, but it may still be
        // reconnecting to it (a real client backs off while its Redis was down), so it
        // gets the same window as after a rollback deploy.
        let how = if deployed_backup {
            "deploy live".to_string()
        } else if inc.deploy_failed {
            "no rollback deploy (every deploy of the backup failed, the old one stayed live)".to_string()
        } else {
            "no rollback deploy (the backup was never deployed)".to_string()
        };
        // Verify the original connection: health up, the primary answering, and a job
        // processed on it (a reconnect is not proof that the queue works: a BullMQ queue
        // whose start-up was cut off by the outage stays broken while health is up).
        let started = tokio::time::Instant::now();
        let mut attempt = 0;
        loop {
            let (health, ping) = tokio::join!(self.ports.service.health(), self.ports.redis.check(primary, t.ping_timeout));
            let health_up = matches!(&health, Ok(h) if h.redis_status == "up");
            let mut job = None;
            if health_up && ping.is_ok() {
                attempt += 1;
                let before = self.ports.service.queue_metrics().await.ok().map(|m| m.completed_jobs);
                let check = self.probes().synthetic_job(id, 1000 + attempt, primary, before).await;
                if check.holds {
                    return Ok(Event::RollbackFinished {
                        ok: true,
                        detail: format!("{primary} restored, {how}, health up, primary answers, {}", check.observed),
                    });
                }
                job = Some(check.observed);
            }
            if started.elapsed() >= t.verify_window {
                let why = match (&health, &ping, job) {
                    (_, _, Some(job)) => format!("health up and the primary answers, but the queue does not process: {job}"),
                    (_, Err(f), _) => format!("primary still failing ({}: {})", f.class, f.message),
                    (Ok(h), _, _) => format!("health shows redis {}", h.redis_status),
                    (Err(e), _, _) => format!("health endpoint: {e}"),
                };
                return Ok(Event::RollbackFinished {
                    ok: false,
                    detail: format!(
                        "{primary} restored, {how}, but not healthy within {}: {why}",
                        crate::duration::format_duration(t.verify_window)
                    ),
                });
            }
            self.report(Progress::Waiting { what: "rollback verification".into(), elapsed: started.elapsed(), limit: t.verify_window });
            if self.wait(id, t.verify_interval).await? {
                return Err(if self.shutting_down() { ExecError::Interrupted } else { ExecError::CommandPending });
            }
        }
    }
}
