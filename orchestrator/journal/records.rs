//! Rows read back from the journal, as plain structs for the CLI, HTTP and tests.

use super::{JournalError, Result};
use serde::{Deserialize, Serialize};
use sqlx::any::AnyRow;
use sqlx::Row;

/// What is known when an incident opens.
#[derive(Debug, Clone)]
pub struct NewIncident {
    pub playbook_name: String,
    pub playbook_path: String,
    pub playbook_hash: String,
    /// The primary's endpoint (`host:port/db`): incidents and alerts are grouped by it.
    pub target: String,
    pub trigger_source: String,
    pub trigger_detail: String,
    /// The OS user who opened it from the CLI.
    pub os_user: Option<String>,
    /// The playbook's approver → OS user map, pinned with the incident.
    pub approver_os_users: std::collections::BTreeMap<String, String>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct IncidentRow {
    pub id: String,
    pub playbook_name: String,
    pub playbook_path: String,
    pub playbook_hash: String,
    pub target: String,
    pub state: String,
    #[serde(skip)]
    pub machine: String,
    pub outcome: Option<String>,
    pub opened_at: String,
    pub closed_at: Option<String>,
    pub trigger_source: String,
    pub trigger_detail: String,
}

impl IncidentRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        Ok(IncidentRow {
            id: r.try_get("id")?,
            playbook_name: r.try_get("playbook_name")?,
            playbook_path: r.try_get("playbook_path")?,
            playbook_hash: r.try_get("playbook_hash")?,
            target: r.try_get("target")?,
            state: r.try_get("state")?,
            machine: r.try_get("machine")?,
            outcome: r.try_get("outcome")?,
            opened_at: r.try_get("opened_at")?,
            closed_at: r.try_get("closed_at")?,
            trigger_source: r.try_get("trigger_source")?,
            trigger_detail: r.try_get("trigger_detail")?,
        })
    }

    pub fn is_open(&self) -> bool {
        self.closed_at.is_none()
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct TransitionRow {
    pub seq: i64,
    pub at: String,
    pub from_state: String,
    pub to_state: String,
    pub event: String,
    /// The event as JSON, with the observations its guard judged.
    pub observations: String,
    pub note: Option<String>,
    pub rejected: Option<String>,
    pub actor: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CheckRow {
    pub transition_seq: i64,
    pub at: String,
    pub phase: String,
    pub item: String,
    pub holds: bool,
    pub observed: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct EffectRow {
    pub key: String,
    pub kind: String,
    pub intent: String,
    pub intent_at: String,
    pub outcome: Option<String>,
    pub result: Option<String>,
    pub done_at: Option<String>,
}

impl EffectRow {
    pub(super) fn from_row(r: &AnyRow) -> Self {
        EffectRow {
            key: r.get("key"),
            kind: r.get("kind"),
            intent: r.get("intent"),
            intent_at: r.get("intent_at"),
            outcome: r.get("outcome"),
            result: r.get("result"),
            done_at: r.get("done_at"),
        }
    }

    pub fn result_json(&self) -> serde_json::Value {
        self.result.as_deref().and_then(|r| serde_json::from_str(r).ok()).unwrap_or(serde_json::Value::Null)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum CommandKind {
    Approve,
    Reject,
    Abort,
}

impl CommandKind {
    pub fn as_str(self) -> &'static str {
        match self {
            CommandKind::Approve => "approve",
            CommandKind::Reject => "reject",
            CommandKind::Abort => "abort",
        }
    }

    pub fn parse(s: &str) -> Option<Self> {
        match s {
            "approve" => Some(CommandKind::Approve),
            "reject" => Some(CommandKind::Reject),
            "abort" => Some(CommandKind::Abort),
            _ => None,
        }
    }
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct CommandRow {
    pub id: i64,
    pub kind: CommandKind,
    pub actor: String,
    pub comment: String,
    pub via: String,
    pub at: String,
    pub accepted: Option<bool>,
    pub result: Option<String>,
    /// The OS user who gave it (CLI only).
    pub os_user: Option<String>,
}

impl CommandRow {
    pub(super) fn from_row(r: &AnyRow) -> Result<Self> {
        let kind: String = r.try_get("kind")?;
        Ok(CommandRow {
            id: r.try_get("id")?,
            kind: CommandKind::parse(&kind).ok_or_else(|| JournalError::Corrupt(format!("command kind {kind:?}")))?,
            actor: r.try_get("actor")?,
            comment: r.try_get("comment")?,
            via: r.try_get("via")?,
            at: r.try_get("at")?,
            accepted: r.try_get::<Option<i64>, _>("accepted")?.map(|v| v != 0),
            result: r.try_get("result")?,
            os_user: r.try_get("os_user")?,
        })
    }

    /// The machine event this command becomes.
    pub fn to_event(&self) -> crate::machine::Event {
        use crate::machine::Event;
        match self.kind {
            CommandKind::Approve => Event::Approve { approver: self.actor.clone(), comment: self.comment.clone() },
            CommandKind::Reject => Event::Reject { approver: self.actor.clone(), comment: self.comment.clone() },
            CommandKind::Abort => Event::Abort { actor: self.actor.clone(), reason: self.comment.clone() },
        }
    }
}

#[derive(Debug, Clone)]
pub struct NewAlert {
    pub source: String,
    pub fingerprint: String,
    pub status: String,
    pub target: String,
    pub summary: String,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct AlertRow {
    pub received_at: String,
    /// The target it was routed to (for unrouted alerts: the one it named, or "").
    #[serde(default)]
    pub target: String,
    pub source: String,
    pub fingerprint: String,
    pub status: String,
    pub summary: String,
    pub disposition: String,
}

/// What `/metrics` reads from the journal at a scrape.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// (target, outcome, incidents)
    pub outcomes: Vec<(String, String, i64)>,
    /// (target, state, open incidents)
    pub open: Vec<(String, String, i64)>,
    /// (step, times left, seconds spent)
    pub steps: Vec<(String, i64, f64)>,
    pub paused: bool,
    pub paused_targets: Vec<String>,
    pub topologies: Vec<crate::topology::Topology>,
}
