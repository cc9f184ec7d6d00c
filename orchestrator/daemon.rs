//! `orchestrator serve` without the HTTP: alert intake (dedupe, cooldown, pause), one
//! runner task per open incident, resume of open incidents at start, and the watch
//! loop that measures the runbook's alert conditions itself (judged in `watch`).

mod intake;

use crate::executor::{Executor, RunEnd};
use crate::journal::JournalError;
use crate::server::alerts::IncomingAlert;
use crate::server::metrics::Metrics;
use serde::Serialize;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

/// The last answer of the service's queue metrics: when, and (waiting, failed) jobs.
type QueueSample = (tokio::time::Instant, (u64, u64));

pub struct Daemon {
    pub exec: Arc<Executor>,
    pub metrics: Arc<Metrics>,
    pub auth: crate::server::auth::AuthConfig,
    /// The playbook's secrets and the daemon's own tokens: everything that arrives from
    /// outside is redacted with it before it is stored or echoed.
    pub redactor: Arc<crate::redact::Redactor>,
    /// HMAC signatures already accepted (a signature is accepted once).
    pub replays: crate::server::auth::ReplayGuard,
    /// Off loopback, an HMAC signature without a timestamp is refused: nothing would
    /// stop its replay once forgotten.
    pub require_signed_timestamp: std::sync::atomic::AtomicBool,
    /// Requests waiting for the next group commit of alerts.
    intake_queue: intake::Queue,
    /// Serialises "is there an open incident? if not, open one": a storm of duplicate
    /// alerts opens exactly one incident.
    intake: tokio::sync::Mutex<()>,
    running: Mutex<HashSet<String>>,
    /// Incidents refused for resume (changed playbook): reported once, not every round.
    refused: Mutex<HashSet<String>>,
    platform_cache: Mutex<Option<(std::time::Instant, bool)>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    shutdown: watch::Receiver<bool>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disposition {
    pub fingerprint: String,
    pub disposition: String,
    pub incident: Option<String>,
}

impl Daemon {
    pub fn new(exec: Arc<Executor>, auth: crate::server::auth::AuthConfig, shutdown: watch::Receiver<bool>) -> Arc<Daemon> {
        let mut redactor = (*exec.redactor).clone();
        for s in auth.secrets() {
            redactor.add_secret(&s);
        }
        crate::redact::install(&redactor);
        let redactor = Arc::new(redactor);
        Arc::new(Daemon {
            redactor,
            replays: Default::default(),
            require_signed_timestamp: Default::default(),
            intake_queue: Default::default(),
            exec,
            metrics: Arc::new(Metrics::default()),
            auth,
            intake: tokio::sync::Mutex::new(()),
            running: Mutex::new(HashSet::new()),
            refused: Mutex::new(HashSet::new()),
            platform_cache: Mutex::new(None),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            shutdown,
        })
    }

    /// Journals each alert and decides what it means. Returns only after every alert
    /// is journaled, so a 2xx answer means "recorded". Group commit: see [`intake`].
    pub async fn intake(self: &Arc<Self>, source: &str, alerts: Vec<IncomingAlert>) -> Result<Vec<Disposition>, JournalError> {
        self.enqueue(source, alerts).await
    }

    /// Whether the platform holds the backup URL (the service was failed over and
    /// nobody moved it back). Cached briefly: a storm must not become a storm of
    /// platform API calls. "Could not tell" is `false`: the incident's preflight asks
    /// again and escalates to a person.
    async fn platform_holds_backup(&self) -> bool {
        const FRESH: Duration = Duration::from_secs(30);
        if let Some((at, holds)) = *self.platform_cache.lock().expect("platform cache") {
            if at.elapsed() < FRESH {
                return holds;
            }
        }
        let pb = &self.exec.playbook;
        let holds = matches!(
            tokio::time::timeout(Duration::from_secs(5), self.exec.ports.platform.read_url()).await,
            Ok(Ok(Some(v))) if v == pb.redis.backup.expose()
        );
        *self.platform_cache.lock().expect("platform cache") = Some((std::time::Instant::now(), holds));
        holds
    }

    async fn open_and_spawn(self: &Arc<Self>, source: &str, summary: &str) -> Result<(&'static str, Option<String>), JournalError> {
        let id = match self.exec.open(source, summary).await {
            Ok(id) => id,
            // Another process (`orchestrator run`) opened one a moment ago: join it.
            Err(crate::executor::ExecError::Journal(JournalError::AlreadyOpen(target))) => {
                return Ok(("attached", self.exec.journal.open_incident_for(&target).await?.map(|i| i.id)));
            }
            Err(crate::executor::ExecError::Journal(e)) => return Err(e),
            Err(e) => return Err(JournalError::Corrupt(e.to_string())),
        };
        self.spawn(&id);
        Ok(("opened", Some(id)))
    }

    /// Runs an incident in the background unless it already runs.
    pub fn spawn(self: &Arc<Self>, id: &str) {
        if self.refused.lock().expect("refused set").contains(id) || !self.running.lock().expect("running set").insert(id.to_string()) {
            return;
        }
        let me = self.clone();
        let id = id.to_string();
        let mut tasks = self.tasks.lock().expect("task set");
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let result = me.exec.run(&id).await;
            match &result {
                Ok(RunEnd::Finished(o)) => tracing::info!(incident = %id, outcome = %o, "incident ended"),
                Ok(RunEnd::Interrupted) => tracing::info!(incident = %id, "incident interrupted by shutdown; resumable"),
                Ok(RunEnd::AwaitingApproval(step)) => tracing::info!(incident = %id, %step, "incident waits for approval"),
                Err(crate::executor::ExecError::Journal(JournalError::HeldBy { owner, .. })) => {
                    tracing::debug!(incident = %id, %owner, "another process drives this incident")
                }
                Err(e) => tracing::error!(incident = %id, error = %e, "incident runner stopped; resume it when the cause is fixed"),
            }
            me.running.lock().expect("running set").remove(&id);
        });
    }

    /// Resumes every open incident (what `serve` does at start).
    pub async fn resume_open(self: &Arc<Self>) -> Result<Vec<String>, JournalError> {
        let open = self.exec.journal.open_incidents().await?;
        let mut resumed = Vec::new();
        for inc in open {
            if inc.target != self.exec.target() {
                continue;
            }
            if self.running.lock().expect("running set").contains(&inc.id) || self.refused.lock().expect("refused set").contains(&inc.id) {
                continue;
            }
            if let Err(e) = self.exec.check_pinned(&inc.id).await {
                tracing::error!(incident = %inc.id, error = %e, "not resuming");
                self.refused.lock().expect("refused set").insert(inc.id);
                continue;
            }
            self.spawn(&inc.id);
            resumed.push(inc.id);
        }
        Ok(resumed)
    }

    /// Picks up open incidents nobody drives: opened by `orchestrator trigger`, or
    /// whose runner stopped on an error. Every few seconds, until shutdown.
    pub async fn adopt_loop(self: Arc<Self>, every: Duration) {
        let mut shutdown = self.shutdown.clone();
        loop {
            tokio::select! {
                _ = tokio::time::sleep(every) => {}
                _ = shutdown.changed() => return,
            }
            if *self.shutdown.borrow() {
                return;
            }
            // Under the intake lock: an incident intake is opening right now is not
            // "nobody's" yet.
            let adopted = {
                let _intake = self.intake.lock().await;
                self.resume_open().await
            };
            match adopted {
                Ok(ids) if !ids.is_empty() => tracing::info!(?ids, "adopted open incidents"),
                Ok(_) => {}
                Err(e) => tracing::warn!(error = %e, "could not list open incidents; retrying"),
            }
        }
    }

    /// Waits for runners to reach a resumable point after shutdown was requested.
    pub async fn drain(&self, limit: Duration) {
        let mut set = std::mem::take(&mut *self.tasks.lock().expect("task set"));
        let _ = tokio::time::timeout(limit, async { while set.join_next().await.is_some() {} }).await;
        self.exec.flush_notifications(Duration::from_secs(5)).await;
    }

    /// The runbook's alert conditions, measured by the orchestrator itself: PING
    /// failing for a window, latency above a threshold for a window, queue depth above
    /// a bound, failed jobs above a bound within a window.
    pub async fn watch_loop(self: Arc<Self>) {
        let pb = self.exec.playbook.clone();
        if !pb.watch.enabled {
            return;
        }
        let mut conditions = crate::watch::Conditions::new(pb.watch.clone());
        let mut blocked: std::collections::HashMap<&'static str, tokio::time::Instant> = Default::default();
        let started = tokio::time::Instant::now();
        let mut shutdown = self.shutdown.clone();
        // The service's queue metrics are read by a task of their own: a real service
        // can take ioredis's whole timeout to answer while Redis is down, and that must
        // never delay the Redis probe, which is what detects the failure.
        let latest_queue: Arc<Mutex<Option<QueueSample>>> = Arc::default();
        let reader = {
            let (me, latest, every) = (self.clone(), latest_queue.clone(), pb.watch.interval);
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(every);
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                loop {
                    tick.tick().await;
                    if let Ok(m) = me.exec.ports.service.queue_metrics().await {
                        *latest.lock().expect("queue sample") = Some((tokio::time::Instant::now(), (m.waiting_jobs, m.failed_jobs)));
                    }
                }
            })
        };
        struct AbortOnDrop(tokio::task::JoinHandle<()>);
        impl Drop for AbortOnDrop {
            fn drop(&mut self) {
                self.0.abort();
            }
        }
        let _reader = AbortOnDrop(reader);
        // Rounds on a fixed clock: a slow probe (a frozen Redis takes the whole ping
        // timeout) does not push the next one back by its own length.
        let mut tick = tokio::time::interval(pb.watch.interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                _ = tick.tick() => {}
                _ = shutdown.changed() => return,
            }
            if *self.shutdown.borrow() {
                return;
            }
            let ping = self.exec.ports.redis.check(&pb.redis.primary, pb.thresholds.ping_timeout).await;
            // Our own trouble (out of descriptors, memory, no route of our own) says
            // nothing about Redis: report it as ours and judge nothing this round.
            if let Err(f) = &ping {
                if f.class == crate::model::FailureClass::Local {
                    crate::selfcheck::report(&f.message);
                    continue;
                }
            }
            self.metrics.probe(ping.as_ref().ok().copied());
            let sample = crate::watch::Sample {
                at: started.elapsed(),
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
            let open =
                if breaches.is_empty() { None } else { self.exec.journal.open_incident_for(&self.exec.target()).await.ok().flatten() };
            for b in breaches.into_iter().filter(|_| open.is_none()) {
                let fingerprint = b.fingerprint;
                let alert = IncomingAlert { firing: true, fingerprint: fingerprint.into(), summary: b.summary };
                match self.intake("watch", vec![alert]).await {
                    Err(e) => {
                        tracing::error!(error = %e, "watch loop could not journal its alert; retrying next round");
                        conditions.rearm(fingerprint);
                    }
                    // Held back only for now (paused, cooling down): raise it again a
                    // little later (12 rounds, at most a minute) if it still holds, so it
                    // is not lost when the block ends.
                    Ok(d) if d.iter().any(|d| d.disposition == "paused" || d.disposition == "cooldown") => {
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
}
