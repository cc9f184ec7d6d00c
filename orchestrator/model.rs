//! The vocabulary shared by playbooks, the state machine and the journal: failure
//! classes, actions, checklist items, gated steps.
//!
//! Every enum here has a stable snake_case name: it is what playbooks write, what the
//! journal stores and what SQL audit queries match on, so renaming one is a breaking
//! change.

use serde::{Deserialize, Serialize};
use std::fmt;

macro_rules! named_enum {
    ($(#[$meta:meta])* $name:ident { $($(#[$vmeta:meta])* $variant:ident => $text:literal),+ $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
        #[serde(rename_all = "snake_case")]
        pub enum $name { $($(#[$vmeta])* $variant),+ }

        impl $name {
            pub const ALL: &'static [$name] = &[$($name::$variant),+];
            pub fn as_str(self) -> &'static str {
                match self { $($name::$variant => $text),+ }
            }
            pub fn parse(s: &str) -> Option<Self> {
                match s { $($text => Some($name::$variant),)+ _ => None }
            }
            pub fn names() -> String {
                [$($text),+].join(", ")
            }
        }

        impl fmt::Display for $name {
            fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result { f.write_str(self.as_str()) }
        }
    };
}

named_enum!(
    /// Why Redis is failing, as the Assess step classifies it from real errors.
    FailureClass {
        Network => "network",
        ConnectionRefused => "connection_refused",
        Timeout => "timeout",
        Auth => "auth",
        Tls => "tls",
        OutOfMemory => "out_of_memory",
        MaxClients => "max_clients",
        Loading => "loading",
        ReadOnly => "read_only",
        /// The server answers `-BUSY`: a long script or module command holds it. It is
        /// working, not dead: a failover would abandon a primary that will answer again.
        Busy => "busy",
        Unknown => "unknown",
        /// The orchestrator's own trouble (out of file descriptors or memory, no route
        /// because its own network is down): never evidence that Redis failed, and not
        /// a class a playbook can act on.
        Local => "local",
    }
);

named_enum!(
    /// What the playbook says to do about a failure class.
    Action {
        Failover => "failover",
        Escalate => "escalate",
        /// Wait and re-sample (for `busy` and `loading`: the server is working), then
        /// escalate if it still does not answer. Never a failover.
        Wait => "wait",
    }
);

named_enum!(
    /// The runbook's confirmation checklist ("Step 1: Confirm Redis Failure").
    ConfirmItem {
        /// The service's health endpoint shows Redis down.
        HealthDown => "health_down",
        /// A direct PING to the primary fails or exceeds the ping timeout.
        PingFailed => "ping_failed",
        /// The service's error logs show Redis connection errors.
        ErrorLogs => "error_logs",
        /// Queue processing has stopped (`active_jobs` = 0).
        QueueStopped => "queue_stopped",
    }
);

named_enum!(
    /// The runbook's "Recovery Verification Checklist", automated.
    VerifyItem {
        HealthUp => "health_up",
        QueueConnected => "queue_connected",
        /// A synthetic job submitted through the trigger endpoint completes in time.
        SyntheticJob => "synthetic_job",
        /// Waiting jobs decrease (or stay at zero) across two samples.
        WaitingDecreasing => "waiting_decreasing",
        /// No new Redis errors in the service's logs since the switch.
        NoNewErrors => "no_new_errors",
        /// PING latency to the new Redis below the verification bound.
        Latency => "latency",
    }
);

named_enum!(
    /// Steps a playbook may put behind a human approval gate.
    Step {
        Switch => "switch",
        Flush => "flush",
        Deploy => "deploy",
    }
);

named_enum!(
    /// How stale data is removed from the new Redis.
    FlushMode {
        None => "none",
        Selective => "selective",
        Flushdb => "flushdb",
    }
);

named_enum!(
    /// A named point where a playbook's hook runs (`hooks:`). A `pre_*` hook that fails
    /// vetoes its step; a `post_*` hook runs after the incident closed and changes nothing.
    HookPoint {
        /// In Switch, before the platform write: a veto escalates with no write.
        PreSwitch => "pre_switch",
        /// In Flush, once the guards hold and before any key is deleted: a veto rolls back
        /// (the switch has happened) under the usual rules.
        PreFlush => "pre_flush",
        /// In Rollback, once the primary passed its preflight and before the restore: a
        /// veto holds (nothing more is written; a person decides).
        PreRollback => "pre_rollback",
        PostRecovered => "post_recovered",
        PostEscalated => "post_escalated",
        PostHeld => "post_held",
        PostRolledBack => "post_rolled_back",
    }
);

impl HookPoint {
    /// A `pre_*` hook: its failure vetoes the step it guards.
    pub fn is_pre(self) -> bool {
        matches!(self, HookPoint::PreSwitch | HookPoint::PreFlush | HookPoint::PreRollback)
    }

    /// The `post_*` hook run after an incident closes with `outcome`, if any.
    pub fn after(outcome: Outcome) -> Option<HookPoint> {
        match outcome {
            Outcome::Recovered => Some(HookPoint::PostRecovered),
            Outcome::Escalated => Some(HookPoint::PostEscalated),
            Outcome::Held => Some(HookPoint::PostHeld),
            Outcome::RolledBack => Some(HookPoint::PostRolledBack),
            _ => None,
        }
    }
}

named_enum!(
    /// How an incident ended.
    Outcome {
        Recovered => "recovered",
        RolledBack => "rolled_back",
        FalseAlarm => "false_alarm",
        Escalated => "escalated",
        Aborted => "aborted",
        /// Rolling back could not help (the primary is dead): nothing more was written or
        /// deployed, the service stays where it is best off, and a person is paged.
        Held => "held",
        /// Shadow mode (`mode: observe`): Detect, Confirm and Assess ran for real and a
        /// failover would have followed; nothing was written, flushed or deployed.
        WouldFailOver => "would_fail_over",
        /// Shadow mode: the incident would have escalated (the reason is in the note).
        WouldEscalate => "would_escalate",
    }
);

impl Outcome {
    /// A shadow incident's outcome: what automation would have done, nothing done.
    pub fn is_shadow(self) -> bool {
        matches!(self, Outcome::WouldFailOver | Outcome::WouldEscalate)
    }
}

named_enum!(
    /// How a target's incidents end: `act` drives the whole machine, `observe` (shadow
    /// mode) stops after Assess with what would have been done.
    Mode {
        Act => "act",
        Observe => "observe",
    }
);

named_enum!(
    /// One of the playbook's two Redis endpoints, by the name the playbook gives it.
    /// Which one the service uses now (the active) is the target's topology, kept in
    /// the journal: after a failover the playbook's `backup` is active.
    Side {
        Primary => "primary",
        Backup => "backup",
    }
);

// The macro derives no Default; incidents journaled before topology were on the primary.
#[allow(clippy::derivable_impls)]
impl Default for Side {
    fn default() -> Self {
        Side::Primary
    }
}

impl Side {
    pub fn other(self) -> Side {
        match self {
            Side::Primary => Side::Backup,
            Side::Backup => Side::Primary,
        }
    }
}

/// An alert as it arrives (a webhook body's alert, or a watch-loop breach), before it is
/// routed to a target and journaled.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct IncomingAlert {
    pub firing: bool,
    pub fingerprint: String,
    pub summary: String,
    /// The alert's string labels (routing reads `target` and the playbooks' labels).
    pub labels: std::collections::BTreeMap<String, String>,
}
