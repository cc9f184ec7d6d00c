//! The executor: drives an incident's machine against the real world.
//!
//! For each state it derives the work ([`crate::machine::effects_for`]), measures or
//! acts through [`Ports`], feeds the result to the machine as an event, and journals
//! the decision before doing the next thing. Side effects go through [`Executor::once`]
//! so that a crash at any point, followed by [`Executor::run`] on the same incident,
//! performs each platform write and deploy once.

mod actions;
mod checks;
mod hooks;

pub use checks::Probes;
mod once;

use crate::journal::prelude::*;
use crate::journal::{Journal, JournalError, NewIncident};
use crate::machine::{Decision, Effect, Event, Machine, Policy, State};
use crate::model::{Outcome, Step};
use crate::playbook::Playbook;
use crate::ports::{FlushProgress, Notification, Page, PageAction, Ports};
use chrono::{DateTime, Utc};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum ExecError {
    #[error(transparent)]
    Journal(#[from] JournalError),
    /// The playbook file changed since the incident pinned it.
    #[error("incident {incident} pinned playbook sha256 {pinned}, but {path} now has {current}; pass --allow-changed-playbook to resume under the new one")]
    PlaybookChanged { incident: String, path: String, pinned: String, current: String },
    /// Shutdown was requested mid-step; the incident is resumable.
    #[error("interrupted by shutdown")]
    Interrupted,
    /// A person's command arrived during a long wait inside a step: the step yields
    /// so the command is applied now, and is re-entered (idempotently) afterwards.
    #[error("a command is waiting to be applied")]
    CommandPending,
    /// Internal: the incident stopped at a gate and the caller does not wait.
    #[error("waiting for approval of {0}")]
    AtGate(Step),
}

impl ExecError {
    pub fn is_retryable(&self) -> bool {
        matches!(self, ExecError::Journal(e) if e.is_retryable())
    }
}

/// How a call to [`Executor::run`] ended.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum RunEnd {
    Finished(Outcome),
    /// Stopped at a gate (only when not waiting for approvals).
    AwaitingApproval(Step),
    /// Shutdown was requested; the incident is resumable.
    Interrupted,
}

/// Progress for a person watching a terminal.
#[derive(Debug, Clone)]
pub enum Progress {
    Transition { from: String, to: String, event: String, note: Option<String>, rejected: Option<String> },
    Waiting { what: String, elapsed: Duration, limit: Duration },
    Flush(FlushProgress),
    Info(String),
}

/// The trigger source of a planned switchover (`orchestrator switchover`).
pub const SWITCHOVER_SOURCE: &str = "switchover";

pub type Reporter = Arc<dyn Fn(&Progress) + Send + Sync>;

#[derive(Clone)]
pub struct ExecOptions {
    /// Keep waiting at approval gates (serve) instead of returning (run).
    pub wait_for_approval: bool,
    /// How often to look for new commands (approve/reject/abort) while waiting.
    pub command_poll: Duration,
    pub reporter: Option<Reporter>,
    /// Resume even if the playbook's hash differs from the pinned one.
    pub allow_changed_playbook: bool,
    /// Fault injection for drills and crash tests (`ORCH_FAULT_CRASH_AT`): the process
    /// SIGKILLs itself at this point. See [`crash_point`].
    pub crash_at: Option<String>,
    /// The OS user behind a CLI `run`/`trigger`, journaled with the incident.
    pub os_user: Option<String>,
}

impl Default for ExecOptions {
    fn default() -> Self {
        ExecOptions {
            wait_for_approval: false,
            command_poll: Duration::from_millis(200),
            reporter: None,
            allow_changed_playbook: false,
            crash_at: std::env::var("ORCH_FAULT_CRASH_AT").ok().filter(|v| !v.is_empty()),
            os_user: None,
        }
    }
}

pub struct Executor {
    pub journal: Journal,
    pub ports: Ports,
    /// The playbook oriented to the topology: `redis.primary` is the endpoint the
    /// service was on when the incident opened (the active), `redis.backup` the standby.
    pub playbook: Arc<Playbook>,
    /// The playbook as written, and which of its endpoints is the active here.
    pub written: Arc<Playbook>,
    pub active: crate::model::Side,
    pub opts: ExecOptions,
    /// Every secret the playbook holds or references, scrubbed from observations
    /// before they are journaled: the service's logs or health messages may echo a
    /// Redis URL with its password, or a key. The journal redacts with it too.
    pub redactor: Arc<crate::redact::Redactor>,
    shutdown: watch::Receiver<bool>,
    notifications: Mutex<tokio::task::JoinSet<()>>,
    /// Pages go out one at a time (a resolve never overtakes its trigger).
    pages: Arc<tokio::sync::Mutex<()>>,
    /// Incidents whose claim another process took over while we drove them.
    lost_claims: Arc<Mutex<std::collections::HashSet<String>>>,
}

/// Aborts the lease renewal however a run ends (panic included), so a lease is never
/// renewed for a driver that is gone.
struct RenewGuard(Option<tokio::task::JoinHandle<()>>);

impl RenewGuard {
    async fn stop(mut self) {
        if let Some(h) = self.0.take() {
            h.abort();
            let _ = h.await;
        }
    }
}

impl Drop for RenewGuard {
    fn drop(&mut self) {
        if let Some(h) = &self.0 {
            h.abort();
        }
    }
}

impl Executor {
    /// The executor's journal is fenced on this process: it writes an incident's
    /// transitions and effect intents only while it holds the incident's claim.
    pub fn new(journal: Journal, ports: Ports, playbook: Arc<Playbook>, opts: ExecOptions, shutdown: watch::Receiver<bool>) -> Self {
        let redactor = playbook.redactor.clone();
        let journal = journal.owned_by(&crate::journal::process_owner()).with_redactor(redactor.clone());
        Executor {
            journal,
            ports,
            written: playbook.clone(),
            active: crate::model::Side::Primary,
            playbook,
            opts,
            redactor,
            shutdown,
            notifications: Mutex::new(tokio::task::JoinSet::new()),
            pages: Default::default(),
            lost_claims: Default::default(),
        }
    }

    /// The same executor driving with `active` as the endpoint the service is on (the
    /// target's topology, or the incident's own record of it).
    pub fn with_active(mut self, active: crate::model::Side) -> Self {
        self.playbook = Arc::new(self.written.oriented(active));
        self.active = active;
        self
    }

    /// Kills the process with SIGKILL when `point` is the configured crash point: the
    /// most abrupt end there is (no destructors, no flush), to prove that every step
    /// resumes from the journal. Points: `state:<name>` (just after entering a state is
    /// journaled), `intent:<kind>` (intent journaled, effect not performed) and
    /// `outcome:<kind>` (effect performed, outcome not journaled).
    pub(crate) fn crash_point(&self, point: &str) {
        if self.opts.crash_at.as_deref() == Some(point) {
            tracing::warn!(point, "ORCH_FAULT_CRASH_AT reached: killing the process");
            // SAFETY: kill(2) on our own pid has no memory-safety preconditions.
            unsafe {
                libc::kill(libc::getpid(), libc::SIGKILL);
            }
        }
    }

    pub(crate) fn now(&self) -> DateTime<Utc> {
        self.ports.clock.now()
    }

    fn report(&self, p: Progress) {
        if let Some(r) = &self.opts.reporter {
            r(&p);
        }
    }

    fn shutting_down(&self) -> bool {
        *self.shutdown.borrow()
    }

    /// The target incidents are grouped by: the playbook's name.
    pub fn target(&self) -> String {
        self.playbook.name.clone()
    }

    /// Opens an incident and journals its trigger: Detect → Confirm.
    pub async fn open(&self, source: &str, detail: &str) -> Result<String, ExecError> {
        self.open_as(source, detail, false).await
    }

    /// Opens a planned switchover away from the active: Detect → Assess (nothing to
    /// confirm), then the standby's preflight, gates, flush, deploy, verify.
    pub async fn open_switchover(&self, source: &str, detail: &str) -> Result<String, ExecError> {
        self.open_as(source, detail, true).await
    }

    async fn open_as(&self, source: &str, detail: &str, planned: bool) -> Result<String, ExecError> {
        let mut machine = Machine::new(Policy::from_playbook(&self.playbook));
        let new = NewIncident {
            playbook_name: self.playbook.name.clone(),
            playbook_path: self.playbook.source.display().to_string(),
            playbook_hash: self.playbook.hash.clone(),
            target: self.target(),
            trigger_source: source.to_string(),
            trigger_detail: self.redact_text(detail),
            os_user: self.opts.os_user.clone(),
            approver_os_users: self.playbook.approvals.os_users.clone(),
        };
        // Created already claimed by this process (the executor's journal has an owner).
        let id = self.journal_retry(|| self.journal.create_incident(&new, &machine, self.now())).await?;
        // Detect is the state the incident is created in, not entered by a transition.
        self.crash_point("state:detect");
        let trigger = Event::Trigger { source: source.to_string(), detail: detail.to_string(), from: self.active, planned };
        self.feed(&id, &mut machine, trigger).await?;
        Ok(id)
    }

    /// Opens an incident for someone else to drive (`orchestrator trigger`): the claim
    /// is given up at once so `serve` adopts it.
    pub async fn open_for_others(&self, source: &str, detail: &str) -> Result<String, ExecError> {
        let id = self.open(source, detail).await?;
        self.journal_retry(|| self.journal.release(&id)).await?;
        Ok(id)
    }

    /// Feeds one event: the machine decides, the journal records, then the world hears.
    pub(crate) async fn feed(&self, id: &str, machine: &mut Machine, event: Event) -> Result<Decision, ExecError> {
        let before = machine.clone();
        // The machine judges what was observed; the journal keeps it with secrets masked.
        let decision = machine.handle(&event);
        let (event, decision) = (self.redacted(&event), self.redacted_decision(&decision));
        let at = self.now();
        let moves = self.topology_change(id, &decision, machine);
        let seq = match self.journal_retry(|| self.journal.record_decision_moving(id, &event, &decision, machine, at, moves.as_ref())).await
        {
            Ok(seq) => seq,
            Err(e) => {
                // Not journaled means not decided: keep the machine as it was.
                *machine = before;
                return Err(e);
            }
        };
        self.after_decision(id, seq, &event, &decision);
        Ok(decision)
    }

    /// What the decision does to the target's topology: an incident that ends
    /// recovered moves the service to the standby (see [`crate::topology`]).
    fn topology_change(&self, id: &str, decision: &Decision, machine: &Machine) -> Option<crate::topology::Change> {
        if decision.rejected.is_some() {
            return None;
        }
        let outcome = decision.to.outcome()?;
        let inc = machine.incident();
        // A shadow incident changed nothing: it neither moves nor disarms the target.
        if inc.policy.observe {
            return None;
        }
        crate::topology::after_close(outcome, inc.from, inc.switched, id, self.playbook.topology.rearm_after)
    }

    /// What follows a journaled decision: the crash point (drills), progress, and the
    /// notification.
    fn after_decision(&self, id: &str, seq: i64, event: &Event, decision: &Decision) {
        if decision.rejected.is_none() && decision.from.name() != decision.to.name() {
            self.crash_point(&format!("state:{}", decision.to.name()));
        }
        self.report(Progress::Transition {
            from: decision.from.name().into(),
            to: decision.to.name().into(),
            event: event.name().into(),
            note: decision.note.clone(),
            rejected: decision.rejected.clone(),
        });
        if decision.rejected.is_none() && decision.from.name() != decision.to.name() {
            // Held and escalated incidents need a person now: the title says so.
            let page = if matches!(decision.to.name(), "held" | "escalated") { " — a person must act" } else { "" };
            let title = format!("{}: {} → {}{page}", id, decision.from.name(), decision.to.name());
            let text = decision.note.clone().unwrap_or_default();
            self.notify(id, seq, title, text.clone(), decision.to.outcome().is_some());
            match decision.to.outcome() {
                // Escalated and held need a person: page, and leave the page open for them.
                Some(o @ (Outcome::Escalated | Outcome::Held)) => self.page(
                    id,
                    format!("{id}:page:trigger:{seq}"),
                    PageAction::Trigger,
                    "critical",
                    format!("{}: incident {id} {o} — a person must act: {text}", self.target()),
                    decision.to.name(),
                ),
                // Any other end closes a page sent earlier (an approval gate's).
                Some(_) => self.page(id, format!("{id}:page:resolve"), PageAction::Resolve, "info", String::new(), decision.to.name()),
                None => {}
            }
        }
    }

    /// Pages a person in the background (PagerDuty's Events API v2): journaled as an
    /// effect under `key`, bounded by the pager's own retries, never awaited by the
    /// incident. A resolve is sent only when this incident triggered a page before.
    /// Pages go out one at a time, in order, so a resolve never overtakes its trigger.
    fn page(&self, id: &str, key: String, action: PageAction, severity: &str, summary: String, state: &str) {
        if !self.ports.pager.enabled() {
            return;
        }
        let journal = crate::journal::Journal::clone(&self.journal).without_owner();
        let pager = self.ports.pager.clone();
        let clock = self.ports.clock.clone();
        let lock = self.pages.clone();
        let mut details = std::collections::BTreeMap::new();
        details.insert("incident".to_string(), id.to_string());
        details.insert("target".to_string(), self.target());
        details.insert("state".to_string(), state.to_string());
        details.insert("audit".to_string(), format!("orchestrator audit {id}"));
        if let Some(base) = &self.playbook.console_url {
            details.insert("console".to_string(), format!("{}/console/incidents/{id}", base.as_str().trim_end_matches('/')));
        }
        let page = Page {
            action,
            dedup_key: id.to_string(),
            summary: self.redact_text(&summary),
            source: format!("orchestrator target {} (Redis {})", self.target(), self.playbook.redis.primary.endpoint()),
            severity: severity.to_string(),
            details,
        };
        let id = id.to_string();
        let task = async move {
            let _one_at_a_time = lock.lock().await;
            if action == PageAction::Resolve {
                let triggered = journal.effects(&id).await.map(|effects| {
                    effects.iter().any(|e| {
                        e.kind == "page" && serde_json::from_str::<serde_json::Value>(&e.intent).is_ok_and(|v| v["action"] == "trigger")
                    })
                });
                if !matches!(triggered, Ok(true)) {
                    return; // nobody was paged: nothing to resolve
                }
            }
            let intent =
                serde_json::json!({ "action": action, "dedup_key": page.dedup_key, "summary": page.summary, "severity": page.severity });
            // Decide, journal, act: a page whose intent is not journaled (already sent
            // before a restart, refused for a stale leader, journal away) is not sent.
            match journal.effect_intent(&id, &key, "page", &intent, clock.now()).await {
                Ok(None) => {}
                Ok(Some(_)) => return,
                Err(e) => {
                    tracing::warn!(incident = %id, error = %e, "page not journaled; not sent");
                    return;
                }
            }
            let (outcome, result) = match pager.page(&page).await {
                Ok(()) => ("ok", serde_json::json!({})),
                Err(e) => {
                    tracing::warn!(incident = %id, error = %e, "page failed; the incident goes on");
                    ("failed", once::error_value(e))
                }
            };
            let _ = journal.effect_outcome(&key, outcome, &result, clock.now()).await;
        };
        let mut set = self.notifications.lock().expect("notification set");
        while set.try_join_next().is_some() {}
        set.spawn(task);
    }

    /// `text` with every known secret and URL password masked: for text from outside
    /// (alert summaries) before it is journaled.
    pub fn redact_text(&self, text: &str) -> String {
        self.redactor.redact(text)
    }

    /// The event as it is journaled: every known secret and URL password masked in
    /// its free-text fields (what was observed, details, comments). Only those: names,
    /// tags and classes are the program's own words and must stay intact.
    fn redacted(&self, event: &Event) -> Event {
        fn walk(v: &mut serde_json::Value, clean: &dyn Fn(&str) -> String) {
            match v {
                serde_json::Value::Object(map) => {
                    for (k, child) in map.iter_mut() {
                        match child {
                            serde_json::Value::String(text) if matches!(k.as_str(), "detail" | "observed" | "comment" | "reason") => {
                                *text = clean(text)
                            }
                            _ => walk(child, clean),
                        }
                    }
                }
                serde_json::Value::Array(items) => items.iter_mut().for_each(|i| walk(i, clean)),
                _ => {}
            }
        }
        let Ok(mut value) = serde_json::to_value(event) else { return event.clone() };
        walk(&mut value, &|t| self.redact_text(t));
        // Only string leaves changed, so the shape still deserialises.
        serde_json::from_value(value).unwrap_or_else(|_| event.clone())
    }

    fn redacted_decision(&self, d: &Decision) -> Decision {
        Decision {
            note: d.note.as_deref().map(|n| self.redact_text(n)),
            rejected: d.rejected.as_deref().map(|r| self.redact_text(r)),
            ..d.clone()
        }
    }

    /// Sends a notification in the background: journaled as an effect, bounded by the
    /// notifier's own retries, and never awaited by the failover.
    /// The closing message carries the journal's head hash at close: a copy in Slack
    /// proves what the journal said then.
    fn notify(&self, id: &str, seq: i64, title: String, text: String, closing: bool) {
        if !self.ports.notifier.enabled() {
            return;
        }
        // Unfenced: a notification may be journaled after the run gave its claim up
        // (the last transition's message); at worst Slack hears something twice.
        let journal = crate::journal::Journal::clone(&self.journal).without_owner();
        let notifier = self.ports.notifier.clone();
        let clock = self.ports.clock.clone();
        let key = format!("{id}:notify:{seq}");
        let mut n = Notification { incident: id.to_string(), title, text };
        let task = async move {
            if closing {
                if let Ok(Some(head)) = journal.head(&n.incident).await {
                    n.text = format!("{}\njournal head {head} (`orchestrator journal verify {}`)", n.text, n.incident);
                }
            }
            let intent = serde_json::json!({ "title": n.title });
            match journal.effect_intent(&n.incident, &key, "notify", &intent, clock.now()).await {
                Ok(None) => {}
                Ok(Some(_)) => return, // already sent (or attempted) before a restart
                Err(e) => {
                    tracing::warn!(incident = %n.incident, error = %e, "notification not journaled; not sent");
                    return;
                }
            }
            let (outcome, result) = match notifier.notify(&n).await {
                Ok(()) => ("ok", serde_json::json!({})),
                Err(e) => {
                    tracing::warn!(incident = %n.incident, error = %e, "notification failed; the incident goes on");
                    ("failed", once::error_value(e))
                }
            };
            let _ = journal.effect_outcome(&key, outcome, &result, clock.now()).await;
        };
        let mut set = self.notifications.lock().expect("notification set");
        while set.try_join_next().is_some() {} // reap finished ones: serve runs for months
        set.spawn(task);
    }

    /// Waits (bounded) for notifications still in flight, so a foreground `run` does
    /// not exit before telling Slack how it ended.
    pub async fn flush_notifications(&self, limit: Duration) {
        let mut set = std::mem::take(&mut *self.notifications.lock().expect("notification set"));
        let _ = tokio::time::timeout(limit, async { while set.join_next().await.is_some() {} }).await;
    }

    /// Retries a journal operation while the database is locked by another writer:
    /// three tries, each already waiting the journal's busy timeout, so a webhook
    /// still gets its 503 while the sender is waiting.
    pub(crate) async fn journal_retry<T, F, Fut>(&self, mut f: F) -> Result<T, ExecError>
    where
        F: FnMut() -> Fut,
        Fut: std::future::Future<Output = Result<T, JournalError>>,
    {
        let mut delay = Duration::from_millis(100);
        for attempt in 1.. {
            match f().await {
                Err(e) if e.is_retryable() && attempt < 3 => {
                    tracing::warn!(attempt, "journal busy; retrying");
                    tokio::time::sleep(delay).await;
                    delay *= 2;
                }
                other => return other.map_err(ExecError::from),
            }
        }
        unreachable!()
    }

    /// Applies commands people recorded (approve, reject, abort) to the machine; each
    /// transition and its command's verdict are journaled together.
    async fn apply_commands(&self, id: &str, machine: &mut Machine) -> Result<(), ExecError> {
        for cmd in self.journal.pending_commands(id).await? {
            let before = machine.clone();
            let decision = machine.handle(&cmd.to_event());
            let (event, decision) = (self.redacted(&cmd.to_event()), self.redacted_decision(&decision));
            let (accepted, result) = match &decision.rejected {
                Some(reason) => (false, format!("refused: {reason}")),
                None if decision.from.name() != decision.to.name() => (
                    true,
                    format!(
                        "{} → {}{}",
                        decision.from.name(),
                        decision.to.name(),
                        decision.note.as_ref().map(|n| format!(" ({n})")).unwrap_or_default()
                    ),
                ),
                None => (true, decision.note.clone().unwrap_or_else(|| "recorded".into())),
            };
            let at = self.now();
            let recorded = self
                .journal_retry(|| self.journal.record_command_decision(id, &event, &decision, machine, at, (cmd.id, accepted, &result)))
                .await;
            let seq = match recorded {
                Ok(seq) => seq,
                Err(e) => {
                    *machine = before;
                    return Err(e);
                }
            };
            self.after_decision(id, seq, &event, &decision);
        }
        Ok(())
    }

    /// Fails with `NotLeader` when this executor's journal is fenced on a term that is
    /// no longer this instance's (locally, or on the database): checked right before
    /// every side effect.
    pub(crate) async fn still_leading(&self, incident: &str) -> Result<(), ExecError> {
        use crate::journal::leader::LeaderStore;
        let Some(term) = self.journal.term() else { return Ok(()) };
        // Bounded by the local deadline: a journal cut off by a partition makes the
        // check hang, never pass.
        let left = term.deadline().saturating_duration_since(tokio::time::Instant::now());
        let answer = tokio::time::timeout(left, self.journal.still_leader(term))
            .await
            .unwrap_or_else(|_| Err(JournalError::Unavailable("the leadership check outlived the local deadline".into())));
        match answer {
            Ok(true) => Ok(()),
            Ok(false) => {
                tracing::error!(incident, term = term.term, "not the leader any more: no side effect is performed");
                Err(ExecError::Journal(JournalError::NotLeader(term.term)))
            }
            Err(e) => {
                tracing::error!(incident, term = term.term, error = %e, "cannot confirm the leadership: no side effect is performed");
                Err(ExecError::Journal(JournalError::NotLeader(term.term)))
            }
        }
    }

    /// Waits up to `d`, waking early when a command arrives or shutdown is requested.
    /// Returns true if woken early.
    async fn wait(&self, id: &str, d: Duration) -> Result<bool, ExecError> {
        let deadline = tokio::time::Instant::now() + d;
        let mut shutdown = self.shutdown.clone();
        loop {
            if self.lost_claims.lock().expect("lost claims").contains(id) {
                return Err(ExecError::Journal(crate::journal::JournalError::LeaseLost(id.to_string())));
            }
            if let Some(term) = self.journal.term().filter(|t| !t.locally_valid()) {
                return Err(ExecError::Journal(crate::journal::JournalError::NotLeader(term.term)));
            }
            if self.shutting_down() || !self.journal.pending_commands(id).await?.is_empty() {
                return Ok(true);
            }
            let now = tokio::time::Instant::now();
            if now >= deadline {
                return Ok(false);
            }
            let step = (deadline - now).min(self.opts.command_poll);
            tokio::select! {
                _ = tokio::time::sleep(step) => {}
                // Err: every sender is gone, so shutdown can never come; just sleep.
                changed = shutdown.changed() => if changed.is_err() { tokio::time::sleep(step).await },
            }
        }
    }

    /// When the incident entered its current state (for windows, TTLs and timeouts
    /// that must survive a restart).
    async fn entered_at(&self, id: &str, state: &State) -> Result<(DateTime<Utc>, i64), ExecError> {
        let name = state.name();
        let rows = self.journal.transitions(id).await?;
        let row = rows.iter().rev().find(|t| t.rejected.is_none() && t.to_state == name && t.from_state != name);
        Ok(match row {
            Some(t) => (crate::journal::parse_ts(&t.at).unwrap_or_else(|| self.now()), t.seq),
            None => (self.now(), 0),
        })
    }

    /// Checks the pinned playbook before resuming.
    pub async fn check_pinned(&self, id: &str) -> Result<(), ExecError> {
        let inc = self.journal.incident(id).await?;
        if inc.playbook_hash != self.playbook.hash && !self.opts.allow_changed_playbook {
            return Err(ExecError::PlaybookChanged {
                incident: id.to_string(),
                path: self.playbook.source.display().to_string(),
                pinned: inc.playbook_hash,
                current: self.playbook.hash.clone(),
            });
        }
        Ok(())
    }

    /// Drives an incident from wherever the journal says it is, to its end, to a gate
    /// (unless waiting for approvals), or until shutdown.
    pub async fn run(&self, id: &str) -> Result<RunEnd, ExecError> {
        self.check_pinned(id).await?;
        // One driver per incident: claim it, keep the claim fresh while driving, and
        // give it up however the run ends (a SIGKILL leaves it to lapse, or to be taken
        // over at once by the next process on this host).
        self.journal_retry(|| self.journal.claim(id, self.now())).await?;
        self.lost_claims.lock().expect("lost claims").remove(id);
        let renew = RenewGuard(Some({
            let journal = self.journal.clone();
            let clock = self.ports.clock.clone();
            let lost = self.lost_claims.clone();
            let id = id.to_string();
            tokio::spawn(async move {
                loop {
                    tokio::time::sleep(crate::journal::LEASE / 6).await;
                    match journal.renew(&id, clock.now()).await {
                        Ok(()) => {}
                        Err(crate::journal::JournalError::LeaseLost(_)) => {
                            // Someone else drives it now: stop at the next wait, not at
                            // the next journal write minutes later.
                            tracing::error!(incident = %id, "the claim on the incident was taken over; stopping");
                            lost.lock().expect("lost claims").insert(id.clone());
                            return;
                        }
                        Err(e) => tracing::warn!(incident = %id, error = %e, "could not renew the claim on the incident"),
                    }
                }
            })
        }));
        let result = self.drive(id).await;
        // Stop renewing (and wait for a renewal in flight) before releasing.
        renew.stop().await;
        if let Err(e) = self.journal.release(id).await {
            tracing::warn!(incident = id, error = %e, "could not release the claim; it lapses on its own");
        }
        match result {
            Err(ExecError::Interrupted) => Ok(RunEnd::Interrupted),
            other => other,
        }
    }

    async fn drive(&self, id: &str) -> Result<RunEnd, ExecError> {
        let mut machine = self.journal.machine(id).await?;
        loop {
            // An approval that arrives after the TTL must not open the gate: expire
            // first, then apply what people sent.
            self.expire_gate_if_due(id, &mut machine).await?;
            self.apply_commands(id, &mut machine).await?;
            if let Some(outcome) = machine.state().outcome() {
                self.post_hook(id, &machine, outcome).await;
                return Ok(RunEnd::Finished(outcome));
            }
            if self.shutting_down() {
                return Ok(RunEnd::Interrupted);
            }
            let effect = machine.effects().into_iter().next().unwrap_or(Effect::Close);
            let step: Result<Option<Event>, ExecError> = async {
                Ok(match effect {
                    Effect::Close => None,
                    Effect::AwaitTrigger => {
                        // An incident is opened with its trigger; Detect only persists if the
                        // process died between the two writes. The trigger is in incidents.
                        let inc = self.journal.incident(id).await?;
                        let planned = inc.trigger_source == SWITCHOVER_SOURCE;
                        Some(Event::Trigger { source: inc.trigger_source, detail: inc.trigger_detail, from: self.active, planned })
                    }
                    Effect::RunConfirmChecklist { attempt } => self.confirm_step(id, &machine, attempt).await?,
                    Effect::Assess => self.assess_step(id, &machine).await?,
                    Effect::RequestApproval { step } => match self.approval_step(id, &machine, step).await? {
                        Some(ev) => Some(ev),
                        None if !self.opts.wait_for_approval && self.journal.pending_commands(id).await?.is_empty() => {
                            return Err(ExecError::AtGate(step));
                        }
                        None => None,
                    },
                    Effect::SetPlatformUrl { .. } => Some(self.switch_step(id, &machine).await?),
                    Effect::Flush { mode } => self.flush_step(id, &machine, mode).await?,
                    Effect::Deploy { attempt } => Some(self.deploy_step(id, attempt).await?),
                    Effect::Restart => Some(self.restart_step(id).await?),
                    Effect::RunVerifyChecklist { attempt } => self.verify_step(id, &machine, attempt).await?,
                    Effect::Rollback => Some(self.rollback_step(id, &machine).await?),
                })
            }
            .await;
            let event = match step {
                Ok(event) => event,
                Err(ExecError::CommandPending) => None,
                Err(ExecError::AtGate(step)) => return Ok(RunEnd::AwaitingApproval(step)),
                Err(e) => return Err(e),
            };
            if let Some(event) = event {
                self.feed(id, &mut machine, event).await?;
            }
        }
    }

    async fn expire_gate_if_due(&self, id: &str, machine: &mut Machine) -> Result<(), ExecError> {
        if machine.state().name() != "awaiting_approval" {
            return Ok(());
        }
        let (entered, _) = self.entered_at(id, machine.state()).await?;
        let ttl = chrono::Duration::from_std(self.playbook.approvals.ttl).unwrap_or(chrono::Duration::MAX);
        let expires = entered + ttl;
        if self.now() < expires {
            return Ok(());
        }
        // A decision given in time counts even if it is applied late (the driving
        // process was down, or `resume` ran after the TTL): apply those first.
        let in_time = self
            .journal
            .pending_commands(id)
            .await?
            .iter()
            .any(|c| crate::journal::parse_ts(&c.at).map(|at| at < expires).unwrap_or(false));
        if !in_time {
            self.feed(id, machine, Event::ApprovalExpired).await?;
        }
        Ok(())
    }

    /// At a gate: asks for approval once, expires it after the TTL.
    async fn approval_step(&self, id: &str, machine: &Machine, step: Step) -> Result<Option<Event>, ExecError> {
        let (entered, seq) = self.entered_at(id, machine.state()).await?;
        let key = format!("{id}:approval_request:{seq}");
        let intent = serde_json::json!({ "step": step.as_str() });
        if self.journal.effect(&key).await?.is_none() {
            self.journal_retry(|| self.journal.effect_intent(id, &key, "approval_request", &intent, self.now())).await?;
            let approvers = self.playbook.approvals.approvers.join(", ");
            self.notify(
                id,
                -seq,
                format!("{id}: approval needed for {step}"),
                format!(
                    "{} of [{approvers}] must run `orchestrator approve {id}` (or reject it) within {}",
                    self.playbook.approvals.required,
                    crate::duration::format_duration(self.playbook.approvals.ttl)
                ),
                false,
            );
            self.page(
                id,
                format!("{id}:page:trigger:approval:{seq}"),
                PageAction::Trigger,
                "warning",
                format!(
                    "{}: incident {id} awaits approval for {step}: {} of [{approvers}] must approve or reject it within {}",
                    self.target(),
                    self.playbook.approvals.required,
                    crate::duration::format_duration(self.playbook.approvals.ttl)
                ),
                "awaiting_approval",
            );
            let empty = serde_json::json!({});
            self.journal_retry(|| self.journal.effect_outcome(&key, "ok", &empty, self.now())).await?;
        }
        let ttl = chrono::Duration::from_std(self.playbook.approvals.ttl).unwrap_or(chrono::Duration::MAX);
        let expires = entered + ttl;
        if self.now() >= expires {
            return Ok(Some(Event::ApprovalExpired));
        }
        if !self.opts.wait_for_approval {
            return Ok(None);
        }
        let left = (expires - self.now()).to_std().unwrap_or_default();
        self.report(Progress::Waiting {
            what: format!("approval for {step}"),
            elapsed: (self.now() - entered).to_std().unwrap_or_default(),
            limit: self.playbook.approvals.ttl,
        });
        self.wait(id, left.min(Duration::from_secs(5))).await?;
        Ok(None)
    }
}
