//! The incident state machine: Detect → Confirm → Assess → Switch → Flush → Deploy →
//! Verify → Rollback, approval gates, and the terminal outcomes.
//!
//! Pure by design: no tokio, sqlx, reqwest or redis here. It takes [`Event`]s carrying
//! recorded observations, judges them against the [`Policy`] pinned when the incident
//! opened, and answers with the next state; [`effects_for`] says what the executor must
//! do in a state. An event a state does not accept is rejected and reported, never
//! silently dropped.

mod events;

pub use events::*;

use crate::model::{Action, ConfirmItem, FailureClass, FlushMode, HookPoint, Outcome as IncidentOutcome, Step, VerifyItem};
use serde::{Deserialize, Serialize};
use statig::prelude::*;
use std::collections::BTreeMap;

/// The parts of a playbook the machine's guards need, copied into the incident when it
/// opens, so a resumed incident judges with the rules it started with.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Policy {
    pub confirm_required: Vec<ConfirmItem>,
    pub confirm_min_signals: u32,
    pub confirm_attempts: u32,
    pub verify_required: Vec<VerifyItem>,
    pub actions: BTreeMap<FailureClass, Action>,
    pub flush_mode: FlushMode,
    pub gated_steps: Vec<Step>,
    pub approvers: Vec<String>,
    pub approvals_required: u32,
    /// Re-samples of a `busy`/`loading` primary before escalating (`busy_wait` /
    /// `busy_interval`). Defaults keep incidents journaled before these existed readable.
    #[serde(default)]
    pub busy_attempts: u32,
    /// Retries of a failed deploy of the backup.
    #[serde(default)]
    pub deploy_retries: u32,
    /// Restart the service once when its workers are connected but process nothing.
    #[serde(default)]
    pub restart_on_stall: bool,
    /// Shadow mode: Assess ends the incident in what would have been done
    /// (`would_fail_over`, `would_escalate`) instead of switching or escalating.
    /// Absent (false) in incidents journaled before shadow mode.
    #[serde(default)]
    pub observe: bool,
}

impl Policy {
    pub fn from_playbook(pb: &crate::playbook::Playbook) -> Self {
        Policy {
            confirm_required: pb.confirm.required.clone(),
            confirm_min_signals: pb.confirm.min_signals,
            confirm_attempts: pb.thresholds.confirm_attempts,
            verify_required: pb.verify.required.clone(),
            actions: pb.actions.clone(),
            flush_mode: pb.flush.mode,
            gated_steps: pb.approvals.steps.clone(),
            approvers: pb.approvals.approvers.clone(),
            approvals_required: pb.approvals.required,
            busy_attempts: (pb.thresholds.busy_wait.as_millis() / pb.thresholds.busy_interval.as_millis().max(1)).max(1) as u32,
            deploy_retries: pb.thresholds.deploy_retries,
            restart_on_stall: pb.verify.restart_on_stall,
            observe: pb.mode == crate::model::Mode::Observe,
        }
    }
}

/// The machine's shared storage: the pinned policy and what the incident has learned.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Incident {
    pub policy: Policy,
    pub class: Option<FailureClass>,
    /// Set on entering Switch (the platform may hold the backup URL from then on);
    /// afterwards abort, rejection and giving up mean Rollback, not a plain stop.
    pub switched: bool,
    /// Re-samples of a busy or loading primary so far.
    #[serde(default)]
    pub waits: u32,
    /// Deploys of the backup that ended failed (build_failed, update_failed,
    /// pre_deploy_failed, canceled) so far; each retry is its own effect.
    #[serde(default)]
    pub failed_deploys: u32,
    /// Every deploy of the backup failed: the platform kept the old deploy live, so the
    /// service never left the primary and a rollback needs no deploy.
    #[serde(default)]
    pub deploy_failed: bool,
    /// A deploy of the backup went live (or may have: it timed out): the service may run
    /// on the backup, so a rollback must deploy.
    #[serde(default)]
    pub backup_deployed: bool,
    /// The service was restarted once for stalled workers.
    #[serde(default)]
    pub restarted: bool,
    /// Recovery items that held in at least one sample of the current verification,
    /// so a failed verification can say which item never held.
    #[serde(default)]
    pub verify_held: Vec<String>,
    /// When the first sample of the current verification in which health was up
    /// started: Redis errors count from then (start-up noise before it is not a failure).
    #[serde(default)]
    pub healthy_since: Option<String>,
    /// Which of the playbook's endpoints was active when the incident opened: the
    /// executor drives it with that one as "primary" and the other as "backup".
    #[serde(default)]
    pub from: crate::model::Side,
    /// A planned switchover: no failure to confirm or classify; the standby's
    /// preflight, gates, flush, deploy, verify and rollback as in a failover.
    #[serde(default)]
    pub planned: bool,
}

/// Per-event scratch the handlers fill in: why an event was refused, or a note on
/// what the guard decided.
#[derive(Debug, Default)]
pub struct Ctx {
    pub rejected: Option<String>,
    pub note: Option<String>,
}

#[state_machine(initial = "State::detect()", state(derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)), superstate(derive(Debug)))]
impl Incident {
    #[state(superstate = "open")]
    fn detect(&mut self, context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::Trigger { from, planned: false, .. } => {
                self.from = *from;
                context.note = Some("trigger received; confirming".into());
                Transition(State::confirm(1))
            }
            // Nothing is failing: there is nothing to confirm, only the standby to check.
            Event::Trigger { from, planned: true, source, .. } => {
                self.from = *from;
                self.planned = true;
                context.note = Some(format!("planned switchover away from the {from} requested ({source}); checking the standby"));
                Transition(State::assess())
            }
            _ => Super,
        }
    }

    #[state(superstate = "open")]
    fn confirm(&mut self, context: &mut Ctx, attempt: &mut u32, event: &Event) -> Outcome<State> {
        match event {
            Event::ConfirmChecked { checks } => {
                let p = &self.policy;
                let holding: Vec<&Check> = checks.iter().filter(|c| c.holds).collect();
                let missing: Vec<&str> = p
                    .confirm_required
                    .iter()
                    .map(|i| i.as_str())
                    .filter(|name| !checks.iter().any(|c| c.item == *name && c.holds))
                    .collect();
                if !missing.is_empty() || (holding.len() as u32) < p.confirm_min_signals {
                    context.note = Some(format!(
                        "checklist does not hold on attempt {attempt}: {} of {} signals (need {}){}",
                        holding.len(),
                        checks.len(),
                        p.confirm_min_signals,
                        if missing.is_empty() { String::new() } else { format!(", required not holding: {}", missing.join(", ")) }
                    ));
                    return Transition(State::false_alarm());
                }
                if *attempt >= p.confirm_attempts {
                    context.note = Some(format!("failure confirmed on {attempt} of {} attempts", p.confirm_attempts));
                    Transition(State::assess())
                } else {
                    context.note = Some(format!("attempt {attempt} of {} holds", p.confirm_attempts));
                    Transition(State::confirm(*attempt + 1))
                }
            }
            _ => Super,
        }
    }

    #[state(superstate = "open")]
    fn assess(&mut self, context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::Assessed { preflight, .. } if self.planned => {
                let failing = preflight_failing(preflight);
                if preflight.is_empty() || !failing.is_empty() {
                    let why = format!(
                        "planned switchover refused: the standby fails preflight ({}); never switch to a dead standby",
                        failing.join(", ")
                    );
                    return Transition(self.escalate(context, why));
                }
                if let Some(shadow) = self.shadow_failover(context, "planned switchover: the standby passes preflight", preflight) {
                    return Transition(shadow);
                }
                context.note = Some("planned switchover: the standby passes preflight".into());
                Transition(self.enter(Step::Switch))
            }
            Event::Assessed { class, preflight, primary_answers, .. } => {
                self.class = Some(*class);
                if *class == FailureClass::Local {
                    let why = "the orchestrator's own trouble (not Redis's) kept it from assessing the primary: no failover on that evidence; a person must look".to_string();
                    return Transition(self.escalate(context, why));
                }
                // The primary answers again after we waited for it: it was busy, not dead.
                if *primary_answers && self.waits > 0 {
                    context.note = Some(format!("the primary answers again after {} re-sample(s): it was working, not down", self.waits));
                    return Transition(State::false_alarm());
                }
                let mut action = self.policy.actions.get(class).copied().unwrap_or(Action::Escalate);
                // Once waiting for a busy or loading primary, a slow answer is that same
                // primary still draining: keep waiting, never fail over from it.
                if self.waits > 0 && *class == FailureClass::Timeout {
                    action = Action::Wait;
                }
                if action == Action::Wait {
                    if self.waits < self.policy.busy_attempts.max(1) {
                        self.waits += 1;
                        context.note = Some(format!(
                            "class {class}: the primary is working, not dead; waiting and re-sampling ({} of {}), never a failover",
                            self.waits,
                            self.policy.busy_attempts.max(1)
                        ));
                        return Handled;
                    }
                    let why = format!(
                        "class {class}: the primary is still {class} after {} re-samples; a person must decide (a failover would abandon a working primary)",
                        self.waits
                    );
                    return Transition(self.escalate(context, why));
                }
                if action == Action::Escalate {
                    return Transition(self.escalate(context, format!("class {class}: the playbook says escalate")));
                }
                let failing = preflight_failing(preflight);
                if preflight.is_empty() || !failing.is_empty() {
                    let why = format!("class {class}: backup fails preflight ({}); never switch to a dead backup", failing.join(", "));
                    return Transition(self.escalate(context, why));
                }
                if let Some(shadow) = self.shadow_failover(context, &format!("class {class}: failover; backup passes preflight"), preflight)
                {
                    return Transition(shadow);
                }
                context.note = Some(format!("class {class}: failover; backup passes preflight"));
                Transition(self.enter(Step::Switch))
            }
            _ => Super,
        }
    }

    #[state(superstate = "open")]
    fn awaiting_approval(&mut self, context: &mut Ctx, step: &mut Step, approvals: &mut Vec<String>, event: &Event) -> Outcome<State> {
        match event {
            Event::Approve { approver, .. } => {
                if !self.policy.approvers.iter().any(|a| a == approver) {
                    context.rejected = Some(format!("{approver} is not on the approver list"));
                    return Handled;
                }
                if approvals.contains(approver) {
                    context.rejected = Some(format!("{approver} has already approved; one person counts once"));
                    return Handled;
                }
                approvals.push(approver.clone());
                let need = self.policy.approvals_required;
                if approvals.len() as u32 >= need {
                    context.note = Some(format!("{step} approved by {}", approvals.join(", ")));
                    Transition(self.step_state(*step))
                } else {
                    context.note = Some(format!("{} of {need} approvals for {step}", approvals.len()));
                    Handled
                }
            }
            Event::Reject { approver, .. } => {
                if !self.policy.approvers.iter().any(|a| a == approver) {
                    context.rejected = Some(format!("{approver} is not on the approver list"));
                    return Handled;
                }
                context.note = Some(format!("{step} rejected by {approver}"));
                Transition(if self.switched { State::rollback() } else { State::aborted() })
            }
            Event::ApprovalExpired => {
                // After the switch, the platform may hold the backup URL: never leave it
                // there for the next unrelated deploy to pick up. Roll back first.
                if self.switched {
                    context.note = Some(format!("approval for {step} expired after the switch: rolling back"));
                    Transition(State::rollback())
                } else {
                    context.note = Some(format!("approval for {step} expired"));
                    Transition(State::escalated())
                }
            }
            _ => Super,
        }
    }

    #[state(superstate = "open")]
    fn switch(&mut self, context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::Switched { ok: true, .. } => {
                self.switched = true;
                Transition(self.enter(Step::Flush))
            }
            Event::Switched { ok: false, detail } => {
                // The write may have landed even if the read-back disagrees.
                self.switched = true;
                context.note = Some(format!("switch failed: {detail}"));
                Transition(State::rollback())
            }
            // The executor runs `pre_switch` before the write's intent is journaled, so
            // a veto means the platform was never written: nothing to roll back.
            Event::HookVetoed { hook: HookPoint::PreSwitch, detail } => {
                self.switched = false;
                let why = format!("the pre_switch hook vetoed the switch ({detail}); no platform write was made");
                Transition(self.escalate(context, why))
            }
            _ => Super,
        }
    }

    #[state(superstate = "open")]
    fn flush(&mut self, context: &mut Ctx, attempt: &mut u32, event: &Event) -> Outcome<State> {
        match event {
            Event::Flushed { .. } => Transition(self.enter(Step::Deploy)),
            Event::FlushBlocked { gave_up: false, .. } => {
                *attempt += 1;
                context.note = Some("flush guards do not hold yet; waiting".into());
                Handled
            }
            // The platform already holds the backup URL here: undo that before handing
            // over to a person, so no later deploy silently moves to an unflushed backup.
            Event::FlushBlocked { gave_up: true, .. } => {
                context.note = Some("flush guards never held within the guard wait: rolling back the switch".into());
                Transition(State::rollback())
            }
            Event::FlushFailed { detail } => {
                context.note = Some(format!("flush failed: {detail}; rolling back the switch"));
                Transition(State::rollback())
            }
            // After the switch, a veto is a give-up like any other: roll back (only to a
            // live primary; the Rollback step holds otherwise).
            Event::HookVetoed { hook: HookPoint::PreFlush, detail } => {
                context.note = Some(format!("the pre_flush hook vetoed the flush ({detail}); no key was deleted; rolling back the switch"));
                Transition(State::rollback())
            }
            _ => Super,
        }
    }

    #[state(superstate = "open")]
    fn deploy(&mut self, context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::DeployFinished { status: DeployStatus::Live, .. } => {
                self.backup_deployed = true;
                self.verify_held.clear();
                self.healthy_since = None;
                Transition(State::verify(1))
            }
            // A failed deploy changed nothing for the service (the platform keeps the
            // previous deploy live); transient build failures are common: try again.
            Event::DeployFinished { status: status @ (DeployStatus::Failed | DeployStatus::Canceled), detail, .. } => {
                self.failed_deploys += 1;
                if self.failed_deploys <= self.policy.deploy_retries {
                    context.note = Some(format!(
                        "deploy ended {} ({detail}); retrying ({} of {})",
                        status.as_str(),
                        self.failed_deploys,
                        self.policy.deploy_retries
                    ));
                    return Transition(State::deploy());
                }
                self.deploy_failed = true;
                context.note = Some(format!(
                    "deploy ended {} after {} attempt(s): the old deploy is still live, so no rollback deploy",
                    status.as_str(),
                    self.failed_deploys
                ));
                Transition(State::rollback())
            }
            // Timed out: it may still go live, so the rollback must deploy.
            Event::DeployFinished { status, detail, .. } => {
                self.backup_deployed = true;
                context.note = Some(format!("deploy ended {} ({detail})", status.as_str()));
                Transition(State::rollback())
            }
            _ => Super,
        }
    }

    /// The runbook's remedy for "Queue Processing Stalled": one restart (a redeploy),
    /// then the recovery checklist again.
    #[state(superstate = "open")]
    fn restart(&mut self, context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::DeployFinished { status: DeployStatus::Live, .. } => {
                self.verify_held.clear();
                self.healthy_since = None;
                context.note = Some("service restarted; verifying again".into());
                Transition(State::verify(1))
            }
            Event::DeployFinished { status, detail, .. } => {
                context.note = Some(format!("restart ended {} ({detail})", status.as_str()));
                Transition(State::rollback())
            }
            _ => Super,
        }
    }

    #[state(superstate = "open")]
    fn verify(&mut self, context: &mut Ctx, attempt: &mut u32, event: &Event) -> Outcome<State> {
        match event {
            Event::VerifyChecked { checks, window_over, started_at } => {
                if self.healthy_since.is_none() && checks.iter().any(|c| c.item == VerifyItem::HealthUp.as_str() && c.holds) {
                    self.healthy_since = started_at.clone();
                }
                let failing: Vec<&str> = self
                    .policy
                    .verify_required
                    .iter()
                    .map(|i| i.as_str())
                    .filter(|name| !checks.iter().any(|c| c.item == *name && c.holds))
                    .collect();
                for c in checks.iter().filter(|c| c.holds) {
                    if !self.verify_held.contains(&c.item) {
                        self.verify_held.push(c.item.clone());
                    }
                }
                if failing.is_empty() {
                    context.note = Some(format!("recovery checklist holds on attempt {attempt}"));
                    Transition(State::recovered())
                } else if *window_over {
                    let holds = |item: &str| checks.iter().any(|c| c.item == item && c.holds);
                    // Connected workers that process nothing: restart once before deciding.
                    let stalled = holds(VerifyItem::HealthUp.as_str())
                        && holds(VerifyItem::QueueConnected.as_str())
                        && !holds(VerifyItem::SyntheticJob.as_str());
                    let why = failing
                        .iter()
                        .map(|item| {
                            let seen = checks.iter().find(|c| c.item == *item).map(|c| c.observed.as_str()).unwrap_or("not measured");
                            let when =
                                if self.verify_held.iter().any(|h| h == item) { "did not hold in the last sample" } else { "never held" };
                            format!("{item} {when} (last seen: {seen})")
                        })
                        .collect::<Vec<_>>()
                        .join("; ");
                    // A restart is a deploy: where deploys need approval, it is not done
                    // unasked (the rollback below decides instead).
                    let deploy_gated = self.policy.gated_steps.contains(&Step::Deploy);
                    if stalled && self.policy.restart_on_stall && !self.restarted && !deploy_gated {
                        self.restarted = true;
                        context.note = Some(format!(
                            "verify window over: workers connected but processing nothing; restarting the service once ({why})"
                        ));
                        return Transition(State::restart());
                    }
                    context.note = Some(format!("verify window over: {why}"));
                    Transition(State::rollback())
                } else {
                    context.note = Some(format!("attempt {attempt}: failing {}", failing.join(", ")));
                    *attempt += 1;
                    Handled
                }
            }
            _ => Super,
        }
    }

    #[state(superstate = "open")]
    fn rollback(context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::RollbackFinished { ok: true, .. } => Transition(State::rolled_back()),
            Event::RollbackFinished { ok: false, detail } => {
                context.note = Some(format!("rollback failed: {detail}"));
                Transition(State::escalated())
            }
            // The primary failed its preflight: restoring it cannot help. Nothing more
            // is written or deployed; a person is paged.
            Event::RollbackHeld { detail, .. } => {
                context.note = Some(detail.clone());
                Transition(State::held())
            }
            // A veto of the rollback leaves the service where it is (on the backup the
            // switch wrote): nothing more is written or deployed, and a person decides,
            // as when the primary is dead.
            Event::HookVetoed { hook: HookPoint::PreRollback, detail } => {
                context.note = Some(format!(
                    "Holding: the pre_rollback hook vetoed the rollback ({detail}); no platform write or deploy was made for it; the service stays where the switch left it. A person must decide."
                ));
                Transition(State::held())
            }
            // Already rolling back: a second abort changes nothing, and says so.
            Event::Abort { .. } => {
                context.rejected = Some("already rolling back; rollback continues".into());
                Handled
            }
            _ => Super,
        }
    }

    #[superstate(superstate = "any")]
    fn open(&mut self, context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::Abort { actor, .. } => {
                if self.switched {
                    context.note = Some(format!("aborted by {actor} after switch: rolling back first"));
                    Transition(State::rollback())
                } else {
                    context.note = Some(format!("aborted by {actor}"));
                    Transition(State::aborted())
                }
            }
            _ => Super,
        }
    }

    #[state(superstate = "any")]
    fn recovered(event: &Event) -> Outcome<State> {
        let _ = event;
        Super
    }

    #[state(superstate = "any")]
    fn rolled_back(event: &Event) -> Outcome<State> {
        let _ = event;
        Super
    }

    #[state(superstate = "any")]
    fn false_alarm(event: &Event) -> Outcome<State> {
        let _ = event;
        Super
    }

    #[state(superstate = "any")]
    fn escalated(event: &Event) -> Outcome<State> {
        let _ = event;
        Super
    }

    #[state(superstate = "any")]
    fn aborted(event: &Event) -> Outcome<State> {
        let _ = event;
        Super
    }

    #[state(superstate = "any")]
    fn held(event: &Event) -> Outcome<State> {
        let _ = event;
        Super
    }

    /// Shadow mode: a failover would have followed Assess. Nothing was changed.
    #[state(superstate = "any")]
    fn would_fail_over(event: &Event) -> Outcome<State> {
        let _ = event;
        Super
    }

    /// Shadow mode: the incident would have escalated. Nothing was changed.
    #[state(superstate = "any")]
    fn would_escalate(event: &Event) -> Outcome<State> {
        let _ = event;
        Super
    }

    /// Every event that reaches here was not accepted by the current state.
    #[superstate]
    fn any(context: &mut Ctx, event: &Event) -> Outcome<State> {
        if context.rejected.is_none() {
            context.rejected = Some(format!("event `{}` is not accepted in this state", event.name()));
        }
        Handled
    }
}

/// The preflight items that fail and count: the flush estimate of shadow mode is a
/// measurement for the record (a count that could not be taken is not a dead backup).
fn preflight_failing(preflight: &[Check]) -> Vec<&str> {
    preflight.iter().filter(|c| !c.holds && c.item != FLUSH_ESTIMATE).map(|c| c.item.as_str()).collect()
}

/// The preflight item a shadow incident journals with the flush's dry-run count.
pub const FLUSH_ESTIMATE: &str = "flush_estimate";

impl Incident {
    /// Escalation, or in shadow mode the record that it would have happened, with why.
    fn escalate(&self, context: &mut Ctx, why: String) -> State {
        if self.policy.observe {
            context.note = Some(format!("shadow mode: would have escalated: {why}"));
            State::would_escalate()
        } else {
            context.note = Some(why);
            State::escalated()
        }
    }

    /// In shadow mode, the end of an incident that would fail over now: what would have
    /// happened next (the gate, the flush's count), and that nothing was done.
    fn shadow_failover(&self, context: &mut Ctx, why: &str, preflight: &[Check]) -> Option<State> {
        if !self.policy.observe {
            return None;
        }
        let gate = if self.policy.gated_steps.contains(&Step::Switch) { ", after approval of the switch" } else { "" };
        let flush = match preflight.iter().find(|c| c.item == FLUSH_ESTIMATE) {
            Some(c) => format!("; flush estimate: {}", c.observed),
            None => String::new(),
        };
        context.note =
            Some(format!("shadow mode: would have failed over{gate} ({why}{flush}); no platform write, flush or deploy was made"));
        Some(State::would_fail_over())
    }

    /// The state for a step, behind its approval gate when the playbook gates it.
    /// Flushing with mode `none` deletes nothing, so it needs no approval.
    fn enter(&mut self, step: Step) -> State {
        let gated = self.policy.gated_steps.contains(&step) && !(step == Step::Flush && self.policy.flush_mode == FlushMode::None);
        if gated {
            State::awaiting_approval(step, Vec::new())
        } else {
            self.step_state(step)
        }
    }

    fn step_state(&mut self, step: Step) -> State {
        match step {
            // From the moment Switch is entered the platform write may happen (or have
            // happened before a crash): abort and rejection must roll back from here on.
            Step::Switch => {
                self.switched = true;
                State::switch()
            }
            Step::Flush => State::flush(1),
            Step::Deploy => State::deploy(),
        }
    }
}

impl State {
    /// The stable name journaled in `transitions.from_state` / `to_state`.
    pub fn name(&self) -> &'static str {
        match self {
            State::Detect {} => "detect",
            State::Confirm { .. } => "confirm",
            State::Assess {} => "assess",
            State::AwaitingApproval { .. } => "awaiting_approval",
            State::Switch {} => "switch",
            State::Flush { .. } => "flush",
            State::Deploy {} => "deploy",
            State::Verify { .. } => "verify",
            State::Restart {} => "restart",
            State::Rollback {} => "rollback",
            State::Recovered {} => "recovered",
            State::RolledBack {} => "rolled_back",
            State::FalseAlarm {} => "false_alarm",
            State::Escalated {} => "escalated",
            State::Aborted {} => "aborted",
            State::Held {} => "held",
            State::WouldFailOver {} => "would_fail_over",
            State::WouldEscalate {} => "would_escalate",
        }
    }

    pub fn outcome(&self) -> Option<IncidentOutcome> {
        match self {
            State::Recovered {} => Some(IncidentOutcome::Recovered),
            State::RolledBack {} => Some(IncidentOutcome::RolledBack),
            State::FalseAlarm {} => Some(IncidentOutcome::FalseAlarm),
            State::Escalated {} => Some(IncidentOutcome::Escalated),
            State::Aborted {} => Some(IncidentOutcome::Aborted),
            State::Held {} => Some(IncidentOutcome::Held),
            State::WouldFailOver {} => Some(IncidentOutcome::WouldFailOver),
            State::WouldEscalate {} => Some(IncidentOutcome::WouldEscalate),
            _ => None,
        }
    }
}

/// What the executor must do in `state`. A function of the state alone, so that a
/// resumed incident derives the same work it was doing when it stopped.
pub fn effects_for(incident: &Incident, state: &State) -> Vec<Effect> {
    match state {
        State::Detect {} => vec![Effect::AwaitTrigger],
        State::Confirm { attempt } => vec![Effect::RunConfirmChecklist { attempt: *attempt }],
        State::Assess {} => vec![Effect::Assess],
        State::AwaitingApproval { step, .. } => vec![Effect::RequestApproval { step: *step }],
        State::Switch {} => vec![Effect::SetPlatformUrl { target: Target::Backup }],
        State::Flush { .. } => vec![Effect::Flush { mode: incident.policy.flush_mode }],
        State::Deploy {} => vec![Effect::Deploy { attempt: incident.failed_deploys + 1 }],
        State::Restart {} => vec![Effect::Restart],
        State::Verify { attempt } => vec![Effect::RunVerifyChecklist { attempt: *attempt }],
        State::Rollback {} => vec![Effect::Rollback],
        _ => vec![Effect::Close],
    }
}

/// The answer to one event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub from: State,
    pub to: State,
    /// `Some(reason)` when the event was refused; the state did not change.
    pub rejected: Option<String>,
    /// What the guard decided, in words, for the journal and the audit timeline.
    pub note: Option<String>,
    /// The work for the new state (empty when the state did not change).
    pub effects: Vec<Effect>,
}

/// The machine as the executor uses it: statig underneath, serialisable to JSON so
/// each journaled transition can carry the full state for resume.
#[derive(Clone, Serialize, Deserialize)]
pub struct Machine {
    sm: statig::blocking::StateMachine<Incident>,
}

impl std::fmt::Debug for Machine {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Machine").field("state", self.state()).field("incident", self.incident()).finish()
    }
}

impl Machine {
    pub fn new(policy: Policy) -> Self {
        Machine {
            sm: Incident {
                policy,
                class: None,
                switched: false,
                waits: 0,
                failed_deploys: 0,
                deploy_failed: false,
                backup_deployed: false,
                restarted: false,
                verify_held: Vec::new(),
                healthy_since: None,
                from: Default::default(),
                planned: false,
            }
            .state_machine(),
        }
    }

    pub fn state(&self) -> &State {
        self.sm.state()
    }

    pub fn incident(&self) -> &Incident {
        self.sm.inner()
    }

    pub fn effects(&self) -> Vec<Effect> {
        effects_for(self.incident(), self.state())
    }

    /// Feeds one event. The caller journals the [`Decision`] before acting on it.
    pub fn handle(&mut self, event: &Event) -> Decision {
        let from = self.state().clone();
        let mut ctx = Ctx::default();
        self.sm.handle_with_context(event, &mut ctx);
        let to = self.state().clone();
        let effects = if ctx.rejected.is_none() && to != from { self.effects() } else { Vec::new() };
        Decision { from, to, rejected: ctx.rejected, note: ctx.note, effects }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string(self).expect("machine state serialises")
    }

    pub fn from_json(s: &str) -> Result<Self, serde_json::Error> {
        serde_json::from_str(s)
    }
}

#[cfg(test)]
mod tests;
