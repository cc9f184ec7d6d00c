//! `orchestrator serve` without the HTTP: a fleet of targets in one process. Alert
//! intake per target (routing, dedupe, cooldown, pause, topology), one runner task per
//! open incident, resume and adoption of open incidents, and per target the watch loop
//! that measures the runbook's alert conditions itself (judged in `watch`) and the
//! re-arm loop that measures the standby after a failover (judged in `topology`).

mod intake;
mod loops;

use crate::executor::RunEnd;
use crate::fleet::{Registry, Route, Target};
use crate::journal::prelude::*;
use crate::journal::{Journal, JournalError};
use crate::metrics::Metrics;
use crate::model::IncomingAlert;
use crate::topology::Topology;
use serde::Serialize;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum DaemonError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    #[error("incident {id} belongs to target {target:?}, which this process does not run")]
    ForeignTarget { id: String, target: String },
}

/// One target's intake and what the daemon keeps about it between rounds.
pub(crate) struct Lane {
    pub target: Arc<Target>,
    queue: intake::Queue,
    /// Serialises "is there an open incident? if not, open one" per target: a storm of
    /// duplicate alerts opens exactly one incident, and never waits for another
    /// target's storm.
    intake: tokio::sync::Mutex<()>,
    /// Whether the platform holds the standby's URL, cached briefly.
    platform_cache: Mutex<Option<(std::time::Instant, bool)>>,
    /// The topology as last read (the watch loop probes the active).
    topology: Mutex<Topology>,
}

pub struct Daemon {
    pub registry: Registry,
    /// The journal, unowned (alerts, reads); incidents are driven by executors that own
    /// them. Redacts with every target's secrets.
    pub journal: Journal,
    pub metrics: Arc<Metrics>,
    /// Every target's secrets and the caller's own (tokens): everything that arrives
    /// from outside is redacted with it before it is stored or echoed.
    pub redactor: Arc<crate::redact::Redactor>,
    lanes: BTreeMap<String, Arc<Lane>>,
    /// Alerts that matched no target: journaled by a batcher of their own.
    unrouted: intake::Queue,
    /// Incidents with a runner here, each with the generation of its runner: a runner
    /// that ends removes only its own entry, never a successor's.
    running: Mutex<std::collections::HashMap<String, u64>>,
    generation: std::sync::atomic::AtomicU64,
    /// No adoption before then: a new leader gives an old leadership's last request
    /// (sent just before its deadline) time to land before reading the world.
    adopt_after: Mutex<Option<tokio::time::Instant>>,
    /// Incidents refused for resume (changed playbook): reported once, not every round.
    refused: Mutex<HashSet<String>>,
    tasks: Mutex<tokio::task::JoinSet<()>>,
    shutdown: watch::Receiver<bool>,
    /// Set when several instances share the journal: only the leader acts.
    leadership: std::sync::OnceLock<Arc<crate::leadership::Leadership>>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Disposition {
    pub fingerprint: String,
    pub disposition: String,
    pub target: Option<String>,
    pub incident: Option<String>,
}

impl Daemon {
    /// A daemon for `registry`'s targets on `journal`. `extra_secrets` (the HTTP side's
    /// tokens) are redacted like the playbooks' own.
    pub fn new(journal: Journal, registry: Registry, extra_secrets: &[String], shutdown: watch::Receiver<bool>) -> Arc<Daemon> {
        let mut redactor = crate::redact::Redactor::default();
        for t in registry.iter() {
            redactor.merge(&t.playbook.redactor);
        }
        for s in extra_secrets {
            redactor.add_secret(s);
        }
        crate::redact::install(&redactor);
        let redactor = Arc::new(redactor);
        let lanes = registry
            .iter()
            .map(|t| {
                let lane = Lane {
                    target: t.clone(),
                    queue: Default::default(),
                    intake: tokio::sync::Mutex::new(()),
                    platform_cache: Mutex::new(None),
                    topology: Mutex::new(Topology::as_written(&t.name)),
                };
                (t.name.clone(), Arc::new(lane))
            })
            .collect();
        Arc::new(Daemon {
            journal: journal.with_redactor(redactor.clone()),
            redactor,
            registry,
            lanes,
            unrouted: Default::default(),
            metrics: Arc::new(Metrics::default()),
            running: Mutex::new(Default::default()),
            generation: Default::default(),
            adopt_after: Mutex::new(None),
            refused: Mutex::new(HashSet::new()),
            tasks: Mutex::new(tokio::task::JoinSet::new()),
            shutdown,
            leadership: Default::default(),
        })
    }

    /// Shares the journal with other instances under `l`: from now on this instance
    /// runs watch and re-arm loops and drives incidents only while it leads, and its
    /// executors are fenced on its term. On taking the lease it adopts every open
    /// incident at once (reconciling in-flight effects by reading the world, as resume
    /// does). Set once, before [`Daemon::start_loops`].
    pub fn set_leadership(self: &Arc<Self>, l: Arc<crate::leadership::Leadership>) {
        for t in self.registry.iter() {
            t.set_leadership(l.clone());
        }
        let mut changes = l.subscribe();
        if self.leadership.set(l).is_err() {
            return;
        }
        let me = self.clone();
        tokio::spawn(async move {
            while changes.changed().await.is_ok() {
                let term = *changes.borrow_and_update();
                me.metrics.leadership(term);
                // Whatever ran under the previous leadership stops now (as a crash
                // would: every runner is resumable at every await), so nothing of it
                // overlaps a runner of the next one.
                me.tasks.lock().expect("task set").abort_all();
                me.running.lock().expect("running set").clear();
                me.refused.lock().expect("refused set").clear();
                if let Some(term) = term {
                    let grace = me.leadership.get().map(|l| l.settings.takeover_grace).unwrap_or_default();
                    if me.effects_in_flight().await {
                        tracing::warn!(
                            term,
                            ?grace,
                            "leader: effects were in flight under an earlier leadership; adopting after the takeover grace"
                        );
                        *me.adopt_after.lock().expect("adopt gate") = Some(tokio::time::Instant::now() + grace);
                        tokio::time::sleep(grace).await;
                    }
                    match me.resume_open().await {
                        Ok(ids) if !ids.is_empty() => tracing::info!(term, ?ids, "leader: adopted open incidents"),
                        Ok(_) => {}
                        Err(e) => tracing::warn!(term, error = %e, "leader: could not list open incidents yet; the adopt loop retries"),
                    }
                }
            }
        });
    }

    /// Whether an open incident has an effect intent without an outcome.
    async fn effects_in_flight(&self) -> bool {
        let Ok(open) = self.journal.open_incidents().await else { return true };
        for inc in open {
            match self.journal.effects(&inc.id).await {
                Ok(effects) if effects.iter().all(|e| e.outcome.is_some()) => {}
                _ => return true,
            }
        }
        false
    }

    pub fn leadership(&self) -> Option<&Arc<crate::leadership::Leadership>> {
        self.leadership.get()
    }

    /// The journal for what only the leader may write (re-arming): fenced on this
    /// instance's term when instances share the journal.
    pub(crate) fn acting_journal(&self) -> Journal {
        self.leadership.get().map_or_else(|| self.journal.clone(), |l| l.fenced(&self.journal))
    }

    /// Whether this instance acts (drives incidents, runs loops): always on a journal
    /// of its own, only while leading on a shared one.
    pub fn acting(&self) -> bool {
        self.leadership.get().is_none_or(|l| l.is_leader())
    }

    /// Reads every target's topology (at start, before the loops).
    pub async fn load_topology(&self) -> Result<(), JournalError> {
        for lane in self.lanes.values() {
            let t = self.journal.topology(&lane.target.name).await?;
            *lane.topology.lock().expect("topology") = t;
        }
        Ok(())
    }

    pub fn target_names(&self) -> Vec<String> {
        self.registry.names()
    }

    /// Journals each alert and decides what it means. `in_url` is the target the
    /// webhook URL names. Returns only after every alert is journaled, so a 2xx answer
    /// means "recorded". Alerts go to their target's intake (group commit per target,
    /// see [`intake`]); a body's alerts for one target are never split.
    pub async fn intake(
        self: &Arc<Self>,
        source: &str,
        in_url: Option<&str>,
        alerts: Vec<IncomingAlert>,
    ) -> Result<Vec<Disposition>, JournalError> {
        // Per target (None: unrouted): each alert with its place in the body and, for an
        // unrouted one, the target it named.
        type Group = Vec<(usize, IncomingAlert, Option<String>)>;
        let mut groups: BTreeMap<Option<String>, Group> = BTreeMap::new();
        let mut first_unrouted: Option<String> = None;
        for (i, a) in alerts.into_iter().enumerate() {
            match self.registry.route(in_url, &a) {
                Route::Target(name) => groups.entry(Some(name)).or_default().push((i, a, None)),
                Route::Unrouted { asked, why } => {
                    first_unrouted.get_or_insert(why);
                    groups.entry(None).or_default().push((i, a, asked));
                }
            }
        }
        // One line per body, not per alert: a body may carry a thousand.
        if let (Some(why), Some(n)) = (first_unrouted, groups.get(&None).map(Vec::len)) {
            let why = crate::redact::truncate(&self.redactor.redact(&why), 300);
            tracing::warn!(source, alerts = n, why = %why, "alerts matched no target; journaled as unrouted");
        }
        // Every group's job is queued before any answer is awaited: no target's alerts
        // wait for another target's (or the unrouted lane's) batch to be written.
        let mut pending = Vec::new();
        for (target, items) in groups {
            let order: Vec<usize> = items.iter().map(|(i, _, _)| *i).collect();
            let asked: Vec<Option<String>> = items.iter().map(|(_, _, a)| a.clone()).collect();
            let alerts: Vec<IncomingAlert> = items.into_iter().map(|(_, a, _)| a).collect();
            let lane = target.as_deref().and_then(|name| self.lanes.get(name)).cloned();
            if lane.is_none() {
                self.metrics.unrouted(source, alerts.len() as u64);
            }
            pending.push((order, self.submit(lane, source, alerts, asked)?));
        }
        // A body with alerts for several targets is one transaction per target: on a
        // 5xx some of them may be on disk, and the sender's retry journals those again
        // (they attach to the same incident; nothing is lost, nothing opens twice).
        let mut answers: Vec<(usize, Disposition)> = Vec::new();
        let mut failed = None;
        for (order, reply) in pending {
            match reply.await {
                Ok(Ok(got)) => answers.extend(order.into_iter().zip(got)),
                Ok(Err(e)) => failed = Some(e),
                Err(_) => failed = Some(JournalError::Corrupt("alert intake dropped the request".into())),
            }
        }
        if let Some(e) = failed {
            return Err(e);
        }
        answers.sort_by_key(|(i, _)| *i);
        Ok(answers.into_iter().map(|(_, d)| d).collect())
    }

    fn lane(&self, target: &str) -> Option<&Arc<Lane>> {
        self.lanes.get(target)
    }

    /// Whether the platform holds the standby's URL (the service is not where the
    /// topology says). Cached briefly: a storm must not become a storm of platform API
    /// calls. "Could not tell" is `false`: the incident's preflight asks again and
    /// escalates to a person.
    async fn platform_holds_standby(&self, lane: &Lane, topology: &Topology) -> bool {
        const FRESH: Duration = Duration::from_secs(30);
        if let Some((at, holds)) = *lane.platform_cache.lock().expect("platform cache") {
            if at.elapsed() < FRESH {
                return holds;
            }
        }
        let standby = lane.target.playbook.endpoint(topology.standby()).clone();
        let holds = matches!(
            tokio::time::timeout(Duration::from_secs(5), lane.target.ports.platform.read_url()).await,
            Ok(Ok(Some(v))) if v == standby.expose()
        );
        *lane.platform_cache.lock().expect("platform cache") = Some((std::time::Instant::now(), holds));
        holds
    }

    async fn open_and_spawn(
        self: &Arc<Self>,
        lane: &Arc<Lane>,
        source: &str,
        summary: &str,
    ) -> Result<(&'static str, Option<String>), JournalError> {
        let target = &lane.target;
        let acting = self.acting();
        // A follower journals the incident for the leader, which adopts it.
        let exec = if acting { target.executor_now().await? } else { target.opener_now().await? };
        let opened = if acting { exec.open(source, summary).await } else { exec.open_for_others(source, summary).await };
        let id = match opened {
            Ok(id) => id,
            // Another process (`orchestrator run`) opened one a moment ago: join it.
            Err(crate::executor::ExecError::Journal(JournalError::AlreadyOpen(name))) => {
                return Ok(("attached", self.journal.open_incident_for(&name).await?.map(|i| i.id)));
            }
            Err(crate::executor::ExecError::Journal(e)) => return Err(e),
            Err(e) => return Err(JournalError::Corrupt(e.to_string())),
        };
        self.spawn_on(target.clone(), &id);
        Ok(("opened", Some(id)))
    }

    /// Runs an incident in the background unless it already runs: finds its target.
    pub async fn spawn(self: &Arc<Self>, id: &str) -> Result<(), DaemonError> {
        let inc = self.journal.incident(id).await?;
        let target = self.target_of(&inc).ok_or_else(|| DaemonError::ForeignTarget { id: id.to_string(), target: inc.target.clone() })?;
        self.spawn_on(target, id);
        Ok(())
    }

    /// The target an incident belongs to, if this process runs it.
    /// An incident journaled before targets had names (its target is the primary's
    /// endpoint) is the target's only when the playbook of that name has that endpoint:
    /// a staging playbook with the same name must not adopt it into production.
    pub fn target_of(&self, inc: &crate::journal::IncidentRow) -> Option<Arc<Target>> {
        if let Some(t) = self.registry.get(&inc.target) {
            return Some(t.clone());
        }
        let t = self.registry.get(&inc.playbook_name).filter(|_| inc.target.contains(':'))?;
        let pb = &t.playbook;
        (pb.redis.primary.endpoint() == inc.target || pb.redis.backup.endpoint() == inc.target).then(|| t.clone())
    }

    fn spawn_on(self: &Arc<Self>, target: Arc<Target>, id: &str) {
        if !self.acting() {
            return;
        }
        let generation = self.generation.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        {
            let mut running = self.running.lock().expect("running set");
            if self.refused.lock().expect("refused set").contains(id) || running.contains_key(id) {
                return;
            }
            running.insert(id.to_string(), generation);
        }
        let me = self.clone();
        let id = id.to_string();
        let mut tasks = self.tasks.lock().expect("task set");
        while tasks.try_join_next().is_some() {}
        tasks.spawn(async move {
            let result = match target.executor_for(&id).await {
                Ok(exec) => {
                    let r = exec.run(&id).await;
                    exec.flush_notifications(Duration::from_secs(5)).await;
                    r
                }
                Err(e) => Err(e.into()),
            };
            match &result {
                Ok(RunEnd::Finished(o)) => tracing::info!(incident = %id, target = %target.name, outcome = %o, "incident ended"),
                Ok(RunEnd::Interrupted) => tracing::info!(incident = %id, "incident interrupted by shutdown; resumable"),
                Ok(RunEnd::AwaitingApproval(step)) => tracing::info!(incident = %id, %step, "incident waits for approval"),
                Err(crate::executor::ExecError::Journal(JournalError::HeldBy { owner, .. })) => {
                    tracing::debug!(incident = %id, %owner, "another process drives this incident")
                }
                Err(e) => tracing::error!(incident = %id, error = %e, "incident runner stopped; resume it when the cause is fixed"),
            }
            // The incident may have moved the topology: the watch loop must probe the
            // endpoint the service is on now.
            if let (Some(lane), Ok(t)) = (me.lane(&target.name), me.journal.topology(&target.name).await) {
                *lane.topology.lock().expect("topology") = t;
            }
            let mut running = me.running.lock().expect("running set");
            if running.get(&id) == Some(&generation) {
                running.remove(&id);
            }
        });
    }

    /// Resumes every open incident of this process's targets (what `serve` does at start).
    pub async fn resume_open(self: &Arc<Self>) -> Result<Vec<String>, JournalError> {
        self.resume(None).await
    }

    /// [`Daemon::resume_open`] for one target only (`None`: every target).
    async fn resume(self: &Arc<Self>, only: Option<&str>) -> Result<Vec<String>, JournalError> {
        if !self.acting() {
            return Ok(Vec::new());
        }
        if self.adopt_after.lock().expect("adopt gate").is_some_and(|t| tokio::time::Instant::now() < t) {
            return Ok(Vec::new());
        }
        let open = self.journal.open_incidents().await?;
        let mut resumed = Vec::new();
        for inc in open {
            let Some(target) = self.target_of(&inc) else { continue };
            if only.is_some_and(|name| name != target.name) {
                continue;
            }
            if self.running.lock().expect("running set").contains_key(&inc.id)
                || self.refused.lock().expect("refused set").contains(&inc.id)
            {
                continue;
            }
            let check = match target.executor_for(&inc.id).await {
                Ok(exec) => exec.check_pinned(&inc.id).await.map_err(|e| e.to_string()),
                Err(e) => Err(e.to_string()),
            };
            if let Err(e) = check {
                tracing::error!(incident = %inc.id, error = %e, "not resuming");
                self.refused.lock().expect("refused set").insert(inc.id);
                continue;
            }
            self.spawn_on(target, &inc.id);
            resumed.push(inc.id);
        }
        Ok(resumed)
    }

    /// Picks up open incidents nobody drives: opened by `orchestrator trigger` or
    /// `switchover --detach`, or whose runner stopped on an error. Every few seconds,
    /// until shutdown.
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
            if !self.acting() {
                continue;
            }
            // Under the target's intake lock, one target at a time: an incident intake
            // is opening right now is not "nobody's" yet, and a slow target (its
            // intake waiting on the platform) holds up only its own adoption.
            let mut adopted: Result<Vec<String>, JournalError> = Ok(Vec::new());
            // Only targets with an open incident nobody here drives (one read for all).
            let waiting: HashSet<String> = match self.journal.open_incidents().await {
                Ok(open) => {
                    let running: HashSet<String> = self.running.lock().expect("running set").keys().cloned().collect();
                    let refused = self.refused.lock().expect("refused set").clone();
                    open.iter()
                        .filter(|i| !running.contains(&i.id) && !refused.contains(&i.id))
                        .filter_map(|i| self.target_of(i).map(|t| t.name.clone()))
                        .collect()
                }
                Err(e) => {
                    tracing::warn!(error = %e, "could not list open incidents; retrying");
                    continue;
                }
            };
            for lane in self.lanes.values().filter(|l| waiting.contains(&l.target.name)) {
                let _intake = lane.intake.lock().await;
                match self.resume(Some(&lane.target.name)).await {
                    Ok(ids) => {
                        if let Ok(all) = &mut adopted {
                            all.extend(ids)
                        }
                    }
                    Err(e) => adopted = Err(e),
                }
            }
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
    }

    /// Starts every target's watch loop (when its playbook enables it) and re-arm loop.
    pub fn start_loops(self: &Arc<Self>, watch: bool) {
        for lane in self.lanes.values() {
            if watch && lane.target.playbook.watch.enabled {
                tokio::spawn(self.clone().watch_loop(lane.clone()));
            }
            tokio::spawn(self.clone().rearm_loop(lane.clone()));
        }
        tokio::spawn(self.clone().maintenance_loop());
    }

    /// What `status` and `GET /status` show per target.
    pub async fn status(&self) -> Result<Vec<TargetStatus>, JournalError> {
        let mut out = Vec::new();
        for t in self.registry.iter() {
            out.push(TargetStatus::read(&self.journal, &t.playbook).await?);
        }
        Ok(out)
    }
}

/// One target as `status` shows it: active, standby, armed or why not, open incident,
/// last outcome, paused.
#[derive(Debug, Clone, Serialize)]
pub struct TargetStatus {
    pub target: String,
    pub active: String,
    pub active_endpoint: String,
    pub standby: String,
    pub standby_endpoint: String,
    pub since: String,
    pub through: Option<String>,
    pub armed: bool,
    pub reason: String,
    pub open_incident: Option<String>,
    pub open_state: Option<String>,
    pub last_outcome: Option<String>,
    pub paused: bool,
    /// The pause in force (the target's own, else everyone's): who, why, and until when
    /// (a maintenance window, `pause --for`; `None` until unpaused).
    pub pause: Option<crate::journal::Pause>,
}

impl TargetStatus {
    pub async fn read(journal: &Journal, pb: &crate::playbook::Playbook) -> Result<TargetStatus, JournalError> {
        let topo = journal.topology(&pb.name).await?;
        let open = journal.open_incident_for(&pb.name).await?;
        let last = journal.last_closed_for(&pb.name).await?;
        let now = chrono::Utc::now();
        let pause = match journal.pause(Some(&pb.name), now).await? {
            Some(p) => Some(p),
            None => journal.pause(None, now).await?,
        };
        Ok(TargetStatus {
            target: pb.name.clone(),
            active: topo.active.to_string(),
            active_endpoint: pb.endpoint(topo.active).endpoint(),
            standby: topo.standby().to_string(),
            standby_endpoint: pb.endpoint(topo.standby()).endpoint(),
            since: topo.since.clone(),
            through: topo.incident.clone(),
            armed: topo.armed,
            reason: topo.reason.clone(),
            open_state: open.as_ref().map(|i| i.state.clone()),
            open_incident: open.map(|i| i.id),
            last_outcome: last.map(|(_, o, _)| o),
            paused: pause.is_some(),
            pause,
        })
    }
}
