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

use crate::model::{Action, ConfirmItem, FailureClass, FlushMode, Outcome as IncidentOutcome, Step, VerifyItem};
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
    fn detect(context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::Trigger { .. } => {
                context.note = Some("trigger received; confirming".into());
                Transition(State::confirm(1))
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
            Event::Assessed { class, preflight, .. } => {
                self.class = Some(*class);
                let action = self.policy.actions.get(class).copied().unwrap_or(Action::Escalate);
                if action == Action::Escalate {
                    context.note = Some(format!("class {class}: the playbook says escalate"));
                    return Transition(State::escalated());
                }
                let failing: Vec<&str> = preflight.iter().filter(|c| !c.holds).map(|c| c.item.as_str()).collect();
                if preflight.is_empty() || !failing.is_empty() {
                    context.note =
                        Some(format!("class {class}: backup fails preflight ({}); never switch to a dead backup", failing.join(", ")));
                    return Transition(State::escalated());
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
            _ => Super,
        }
    }

    #[state(superstate = "open")]
    fn deploy(context: &mut Ctx, event: &Event) -> Outcome<State> {
        match event {
            Event::DeployFinished { status: DeployStatus::Live, .. } => Transition(State::verify(1)),
            Event::DeployFinished { status, .. } => {
                context.note = Some(format!("deploy ended {status:?}"));
                Transition(State::rollback())
            }
            _ => Super,
        }
    }

    #[state(superstate = "open")]
    fn verify(&mut self, context: &mut Ctx, attempt: &mut u32, event: &Event) -> Outcome<State> {
        match event {
            Event::VerifyChecked { checks, window_over } => {
                let failing: Vec<&str> = self
                    .policy
                    .verify_required
                    .iter()
                    .map(|i| i.as_str())
                    .filter(|name| !checks.iter().any(|c| c.item == *name && c.holds))
                    .collect();
                if failing.is_empty() {
                    context.note = Some(format!("recovery checklist holds on attempt {attempt}"));
                    Transition(State::recovered())
                } else if *window_over {
                    context.note = Some(format!("verify window over; failing: {}", failing.join(", ")));
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

    /// Every event that reaches here was not accepted by the current state.
    #[superstate]
    fn any(context: &mut Ctx, event: &Event) -> Outcome<State> {
        if context.rejected.is_none() {
            context.rejected = Some(format!("event `{}` is not accepted in this state", event.name()));
        }
        Handled
    }
}

impl Incident {
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
            State::Rollback {} => "rollback",
            State::Recovered {} => "recovered",
            State::RolledBack {} => "rolled_back",
            State::FalseAlarm {} => "false_alarm",
            State::Escalated {} => "escalated",
            State::Aborted {} => "aborted",
        }
    }

    pub fn outcome(&self) -> Option<IncidentOutcome> {
        match self {
            State::Recovered {} => Some(IncidentOutcome::Recovered),
            State::RolledBack {} => Some(IncidentOutcome::RolledBack),
            State::FalseAlarm {} => Some(IncidentOutcome::FalseAlarm),
            State::Escalated {} => Some(IncidentOutcome::Escalated),
            State::Aborted {} => Some(IncidentOutcome::Aborted),
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
        State::Deploy {} => vec![Effect::Deploy],
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
        Machine { sm: Incident { policy, class: None, switched: false }.state_machine() }
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
