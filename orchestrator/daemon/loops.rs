//! Per-target loops of `serve`: the watch loop (the runbook's alert conditions,
//! measured against the active Redis) and the re-arm loop (the standby measured after
//! a failover, until automatic failover is armed again), and the maintenance loop (timed
//! pauses lifted when their window is over).

use super::{Daemon, Lane};
use crate::journal::prelude::*;
use crate::model::{FailureClass, IncomingAlert};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The last answer of the service's queue metrics: when, and (waiting, failed) jobs.
type QueueSample = (tokio::time::Instant, (u64, u64));

struct AbortOnDrop(tokio::task::JoinHandle<()>);

impl Drop for AbortOnDrop {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// How often timed pauses are looked at: a window ends at most this late in the journal
/// (it stops counting as a pause at its expiry, whoever looks).
const MAINTENANCE_EVERY: Duration = Duration::from_millis(500);

impl Daemon {
    /// Waits for a loop's next tick: `false` once shutdown is requested. Ticks while
    /// this instance does not act (a follower of a shared journal) are skipped: the
    /// leader measures, re-arms and lifts.
    async fn next_acting_round(&self, tick: &mut tokio::time::Interval, shutdown: &mut tokio::sync::watch::Receiver<bool>) -> bool {
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return false,
            }
            if *self.shutdown.borrow() {
                return false;
            }
            if self.acting() {
                return true;
            }
        }
    }

    /// Lifts every timed pause (everyone's and each target's) whose window is over,
    /// journaled once as a settings change by "orchestrator (maintenance window
    /// expired)". A window that ended while `serve` was down is lifted at the first round.
    pub(super) async fn maintenance_loop(self: Arc<Self>) {
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval(MAINTENANCE_EVERY);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let targets: Vec<Option<String>> = std::iter::once(None).chain(self.lanes.keys().cloned().map(Some)).collect();
        // One instance lifts (the leader, on a shared journal): an expired window is no
        // pause for anyone already; the lift is its record.
        while self.next_acting_round(&mut tick, &mut shutdown).await {
            for t in &targets {
                match self.journal.lift_expired_pause(t.as_deref(), chrono::Utc::now()).await {
                    Ok(Some(p)) => tracing::warn!(
                        target = t.as_deref().unwrap_or("every target"),
                        paused_by = %p.by,
                        reason = p.reason.as_deref().unwrap_or(""),
                        "maintenance window over: automatic failover resumes"
                    ),
                    Ok(None) => {}
                    Err(e) => tracing::warn!(error = %e, "could not lift an expired pause; retrying"),
                }
            }
        }
    }

    /// The runbook's alert conditions for one target, measured by the orchestrator
    /// itself: PING of the active failing for a window, latency above a threshold for
    /// a window, queue depth above a bound, failed jobs above a bound within a window.
    pub(super) async fn watch_loop(self: Arc<Self>, lane: Arc<Lane>) {
        let target = lane.target.clone();
        let pb = target.playbook.clone();
        let mut conditions = crate::watch::Conditions::new(pb.watch.clone());
        let mut blocked: std::collections::HashMap<&'static str, tokio::time::Instant> = Default::default();
        let started = tokio::time::Instant::now();
        let mut shutdown = self.shutdown.clone();
        // The service's queue metrics are read by a task of their own: a real service
        // can take ioredis's whole timeout to answer while Redis is down, and that must
        // never delay the Redis probe, which is what detects the failure.
        let latest_queue: Arc<Mutex<Option<QueueSample>>> = Arc::default();
        let reader = {
            let (service, latest, every) = (target.ports.service.clone(), latest_queue.clone(), pb.watch.interval);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Ok(m) = service.queue_metrics().await {
                        *latest.lock().expect("queue sample") = Some((tokio::time::Instant::now(), (m.waiting_jobs, m.failed_jobs)));
                    }
                }
            })
        };
        let _reader = AbortOnDrop(reader);
        // Rounds on a fixed clock: a slow probe (a frozen Redis takes the whole ping
        // timeout) does not push the next one back by its own length. Targets start
        // spread over one interval, so a thousand of them do not probe in one burst.
        let offset = pb.watch.interval.mul_f64(spread(&target.name));
        let mut tick = tokio::time::interval_at(started + offset, pb.watch.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut active = lane.topology.lock().expect("topology").active;
        loop {
            let scheduled = tokio::select! {
                at = tick.tick() => at,
                _ = shutdown.changed() => return,
            };
            if *self.shutdown.borrow() {
                return;
            }
            if !self.acting() {
                // A follower measures nothing: the leader does. What was seen under a
                // previous leadership is stale by the time this one leads again.
                conditions = crate::watch::Conditions::new(pb.watch.clone());
                continue;
            }
            self.metrics.lateness(scheduled.elapsed());
            let now_active = lane.topology.lock().expect("topology").active;
            if now_active != active {
                // The service moved (a failover ended): judge the new active afresh.
                active = now_active;
                conditions = crate::watch::Conditions::new(pb.watch.clone());
            }
            let probed = pb.endpoint(active);
            let ping = target.ports.redis.check(probed, pb.thresholds.ping_timeout).await;
            // Our own trouble (out of descriptors, memory, no route of our own) says
            // nothing about Redis: report it as ours and judge nothing this round.
            if let Err(f) = &ping {
                if f.class == FailureClass::Local {
                    crate::selfcheck::report(&f.message);
                    continue;
                }
            }
            self.metrics.probe(&target.name, ping.as_ref().ok().copied());
            let sample = crate::watch::Sample {
                // The round's own time, not when its probe finished: a probe that takes
                // the whole timeout must not push "failing for" a round later.
                at: scheduled - started,
                ping: ping.map_err(|f| f.to_string()),
                // The last answer while it is recent (a slow metrics call must not read as
                // "no backlog" and re-arm the queue conditions every other round).
                queue: latest_queue
                    .lock()
                    .expect("queue sample")
                    .filter(|(at, _)| at.elapsed() < pb.watch.interval * 3 + pb.service.request_timeout)
                    .map(|(_, q)| q),
            };
            // While an incident is open, new breaches are noted but not journaled: that
            // incident is already the answer.
            let breaches = conditions.observe_new(&sample);
            if !breaches.is_empty() {
                // Another process (`arm`, a `run`) may have moved the service: a breach of
                // the endpoint it left is no alert.
                if let Ok(t) = self.journal.topology(&target.name).await {
                    let moved = t.active != active;
                    *lane.topology.lock().expect("topology") = t;
                    if moved {
                        continue;
                    }
                }
            }
            let open = if breaches.is_empty() { None } else { self.journal.open_incident_for(&target.name).await.ok().flatten() };
            for b in breaches.into_iter().filter(|_| open.is_none()) {
                let fingerprint = b.fingerprint;
                let alert = IncomingAlert { firing: true, fingerprint: fingerprint.into(), summary: b.summary, labels: Default::default() };
                match self.intake("watch", Some(&target.name), vec![alert]).await {
                    Err(e) => {
                        tracing::error!(target = %target.name, error = %e, "watch loop could not journal its alert; retrying next round");
                        conditions.rearm(fingerprint);
                    }
                    // Held back only for now (paused, cooling down, disarmed): raise it
                    // again a little later (12 rounds, at most a minute) if it still
                    // holds, so it is not lost when the block ends.
                    Ok(d) if d.iter().any(|d| matches!(d.disposition.as_str(), "paused" | "cooldown" | "failed_over")) => {
                        let retry = (pb.watch.interval * 12).min(Duration::from_secs(60));
                        blocked.insert(fingerprint, tokio::time::Instant::now() + retry);
                    }
                    Ok(_) => {}
                }
            }
            let now = tokio::time::Instant::now();
            blocked.retain(|fingerprint, until| {
                if now >= *until {
                    conditions.rearm(fingerprint);
                    false
                } else {
                    true
                }
            });
        }
    }

    /// After a failover: measures the standby (PING and a write within the timeout,
    /// as the preflight does) and whether the platform holds the active's URL, and
    /// journals each change the re-arm rule decides ([`crate::topology::rearm_step`]).
    /// Armed targets are only re-read now and then (a person may re-arm or move one).
    pub(super) async fn rearm_loop(self: Arc<Self>, lane: Arc<Lane>) {
        let target = lane.target.clone();
        let pb = target.playbook.clone();
        let every = pb.watch.interval.max(Duration::from_millis(200));
        let mut shutdown = self.shutdown.clone();
        let mut tick = tokio::time::interval_at(tokio::time::Instant::now() + every.mul_f64(spread(&target.name)), every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        let mut rounds: u64 = 0;
        // When this process last sampled the standby: a gap restarts the re-arm clock.
        let mut last_sample: Option<chrono::DateTime<chrono::Utc>> = None;
        let gap = every * 3 + pb.thresholds.ping_timeout;
        while self.next_acting_round(&mut tick, &mut shutdown).await {
            rounds += 1;
            let known = lane.topology.lock().expect("topology").clone();
            // Armed (or waiting for a person): nothing to measure; refresh now and then.
            if (known.armed || known.needs_person) && !rounds.is_multiple_of(10) {
                continue;
            }
            let topology = match self.journal.topology(&target.name).await {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(target = %target.name, error = %e, "could not read the topology; retrying");
                    continue;
                }
            };
            *lane.topology.lock().expect("topology") = topology.clone();
            if topology.armed || topology.needs_person {
                continue;
            }
            // Never while an incident runs: it is the one moving things.
            if matches!(self.journal.open_incident_for(&target.name).await, Ok(Some(_)) | Err(_)) {
                continue;
            }
            let standby = pb.endpoint(topology.standby());
            let active = pb.endpoint(topology.active);
            let (check, platform) = tokio::join!(
                target.ports.redis.check(standby, pb.thresholds.ping_timeout),
                tokio::time::timeout(Duration::from_secs(5), target.ports.platform.read_url()),
            );
            let preflight = match check {
                Ok(lat) if lat <= pb.thresholds.ping_timeout => Ok(()),
                Ok(lat) => Err(format!("PONG after {} ms", lat.as_millis())),
                // Our own trouble is not the standby's: judge nothing this round.
                Err(f) if f.class == FailureClass::Local => {
                    crate::selfcheck::report(&f.message);
                    continue;
                }
                Err(f) => Err(format!("{}: {}", f.class, f.message)),
            };
            let platform_on_active = match platform {
                Ok(Ok(Some(v))) => Some(v == active.expose()),
                Ok(Ok(None)) => Some(false),
                _ => None,
            };
            let sample = crate::topology::StandbySample { preflight, platform_on_active };
            let now = chrono::Utc::now();
            let step = crate::topology::rearm_step(&topology, &sample, now, pb.topology.rearm_after, last_sample, gap);
            last_sample = Some(now);
            if let Some(change) = step {
                // Compare-and-set: a person's `arm` or an incident that opened meanwhile
                // wins; the next round decides again from what is there then.
                match self.acting_journal().change_topology(&target.name, &topology, &change, true, now).await {
                    Ok(true) => tracing::info!(target = %target.name, change = change.kind.as_str(), reason = %change.reason, "topology"),
                    Ok(false) => tracing::debug!(target = %target.name, "topology changed meanwhile; deciding again next round"),
                    Err(e) => tracing::warn!(target = %target.name, error = %e, "could not journal a topology change; retrying"),
                }
                if let Ok(t) = self.journal.topology(&target.name).await {
                    *lane.topology.lock().expect("topology") = t;
                }
            }
        }
    }
}

/// A stable fraction in [0, 1) per target name: where in the interval its rounds fall.
fn spread(name: &str) -> f64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    name.hash(&mut h);
    (h.finish() % 10_000) as f64 / 10_000.0
}
