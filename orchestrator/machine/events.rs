//! What the state machine consumes and produces: events carrying recorded
//! observations, and the effects the executor must perform. Pure data.

use crate::model::{FailureClass, FlushMode, HookPoint, Step};
use serde::{Deserialize, Serialize};

/// One checklist item as measured: whether it holds, and what was seen.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Check {
    pub item: String,
    pub holds: bool,
    pub observed: String,
}

impl Check {
    pub fn new(item: impl Into<String>, holds: bool, observed: impl Into<String>) -> Self {
        Check { item: item.into(), holds, observed: observed.into() }
    }
}

/// How a deploy ended, as the platform reported it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum DeployStatus {
    Live,
    Failed,
    Canceled,
    TimedOut,
}

impl DeployStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            DeployStatus::Live => "live",
            DeployStatus::Failed => "failed",
            DeployStatus::Canceled => "canceled",
            DeployStatus::TimedOut => "timed_out",
        }
    }
}

/// Everything that can happen to an incident. Observations are measured by the
/// executor; the machine only judges them against the pinned policy.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "type", rename_all = "snake_case")]
pub enum Event {
    /// A firing alert, a watch-loop breach or a manual `trigger`; with `planned`, a
    /// switchover a person asked for (no failure to confirm).
    Trigger {
        source: String,
        detail: String,
        /// Which of the playbook's endpoints was active when the incident opened (the
        /// one it moves away from). Absent in incidents journaled before topology.
        #[serde(default)]
        from: crate::model::Side,
        #[serde(default)]
        planned: bool,
    },
    /// One sampling of the confirmation checklist.
    ConfirmChecked {
        checks: Vec<Check>,
    },
    /// The failure's class and the backup's preflight.
    Assessed {
        class: FailureClass,
        detail: String,
        preflight: Vec<Check>,
        /// The primary answered PING and the write within the timeout this time.
        #[serde(default)]
        primary_answers: bool,
    },
    /// The platform write of the target URL and its read-back.
    Switched {
        ok: bool,
        detail: String,
    },
    /// Stale keys removed (or nothing to do for `none`).
    Flushed {
        mode: FlushMode,
        deleted: u64,
        detail: String,
    },
    /// The flush guards did not hold; `gave_up` once the guard wait is over.
    FlushBlocked {
        checks: Vec<Check>,
        gave_up: bool,
    },
    /// The flush itself failed (the target Redis errored).
    FlushFailed {
        detail: String,
    },
    DeployFinished {
        status: DeployStatus,
        deploy_id: Option<String>,
        detail: String,
    },
    /// One sampling of the recovery checklist; `window_over` when the verify window ended.
    VerifyChecked {
        checks: Vec<Check>,
        window_over: bool,
        /// When this sample started (RFC 3339), so "no new errors" can count from the
        /// first sample in which health was up.
        #[serde(default)]
        started_at: Option<String>,
    },
    RollbackFinished {
        ok: bool,
        detail: String,
    },
    /// The primary failed the preflight a rollback needs: nothing is restored.
    /// `detail` says in one sentence what holds and what does not.
    RollbackHeld {
        checks: Vec<Check>,
        detail: String,
    },
    /// A `pre_*` hook failed (non-zero exit, timeout, could not start): it vetoes the
    /// step it guards. `detail` says how it ended and what it wrote (redacted, cut).
    HookVetoed {
        hook: HookPoint,
        detail: String,
    },
    Approve {
        approver: String,
        comment: String,
    },
    Reject {
        approver: String,
        comment: String,
    },
    /// The approval TTL passed without enough approvals.
    ApprovalExpired,
    Abort {
        actor: String,
        reason: String,
    },
}

impl Event {
    /// The short name journaled in `transitions.event`.
    pub fn name(&self) -> &'static str {
        match self {
            Event::Trigger { .. } => "trigger",
            Event::ConfirmChecked { .. } => "confirm_checked",
            Event::Assessed { .. } => "assessed",
            Event::Switched { .. } => "switched",
            Event::Flushed { .. } => "flushed",
            Event::FlushBlocked { .. } => "flush_blocked",
            Event::FlushFailed { .. } => "flush_failed",
            Event::DeployFinished { .. } => "deploy_finished",
            Event::VerifyChecked { .. } => "verify_checked",
            Event::RollbackFinished { .. } => "rollback_finished",
            Event::RollbackHeld { .. } => "rollback_held",
            Event::HookVetoed { .. } => "hook_vetoed",
            Event::Approve { .. } => "approve",
            Event::Reject { .. } => "reject",
            Event::ApprovalExpired => "approval_expired",
            Event::Abort { .. } => "abort",
        }
    }

    /// Who caused the event: a person for approvals and aborts, else the orchestrator.
    pub fn actor(&self) -> String {
        match self {
            Event::Approve { approver, .. } | Event::Reject { approver, .. } => approver.clone(),
            Event::Abort { actor, .. } => actor.clone(),
            Event::Trigger { source, .. } => source.clone(),
            _ => "orchestrator".into(),
        }
    }
}

/// Which Redis the platform should point at.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Target {
    Primary,
    Backup,
}

/// Work the executor performs for the state the machine is in. Derived from the state
/// alone (see [`super::effects_for`]), so a resumed incident computes the same work and
/// the journal's intents make each side effect happen once.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "effect", rename_all = "snake_case")]
pub enum Effect {
    /// Wait for a trigger (nothing to do).
    AwaitTrigger,
    RunConfirmChecklist {
        attempt: u32,
    },
    Assess,
    RequestApproval {
        step: Step,
    },
    SetPlatformUrl {
        target: Target,
    },
    Flush {
        mode: FlushMode,
    },
    /// Deploy the backup; `attempt` > 1 after failed deploys (each its own effect).
    Deploy {
        attempt: u32,
    },
    /// Restart the service once (a redeploy) for workers that process nothing.
    Restart,
    RunVerifyChecklist {
        attempt: u32,
    },
    /// Preflight the primary; if it is alive restore its URL, deploy it when the backup
    /// was deployed, and verify it; if not, hold.
    Rollback,
    /// The incident has ended.
    Close,
}
