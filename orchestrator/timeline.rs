//! An incident's timeline as one model: the incident, its transitions with their
//! checks and time in step, effects, commands and alerts. The CLI renders it as text,
//! the HTTP API and the web console serve it; none of them reads the journal itself.

use crate::journal::prelude::*;
use crate::journal::{parse_ts, CheckRow, CommandRow, EffectRow, IncidentRow, Journal, JournalError, TransitionRow};
use chrono::{DateTime, Utc};
use serde::Serialize;

#[derive(Serialize)]
pub struct Timeline {
    pub incident: IncidentRow,
    pub transitions: Vec<TimelineTransition>,
    pub effects: Vec<EffectRow>,
    pub commands: Vec<CommandRow>,
    /// The incident's alerts, or one page of them ([`load_page`]).
    pub alerts: Vec<crate::journal::AlertRow>,
    /// How many alerts the incident has in all (more than `alerts` holds when paged).
    pub alerts_total: i64,
    /// Index of `alerts[0]` among all of the incident's alerts.
    pub alerts_offset: i64,
    /// The hash of the incident's last ledger entry: a copy kept elsewhere proves what
    /// the journal said (`orchestrator journal verify` checks the chain up to it).
    pub journal_head: Option<String>,
}

#[derive(Serialize)]
pub struct TimelineTransition {
    #[serde(flatten)]
    pub row: TransitionRow,
    /// Milliseconds since the incident opened.
    pub elapsed_ms: i64,
    /// Milliseconds spent in the from-state before this event.
    pub in_step_ms: i64,
    pub checks: Vec<CheckRow>,
    /// The one-line gist of an event that carries more than checks (class, deploy id…).
    pub gist: Option<String>,
}

/// Which of an incident's alerts a timeline carries.
#[derive(Debug, Clone, Copy)]
pub enum Alerts {
    All,
    /// `limit` alerts from `offset` (a storm attaches thousands: a page stays fast).
    Page {
        offset: i64,
        limit: i64,
    },
}

pub async fn load(journal: &Journal, id: &str) -> Result<Timeline, JournalError> {
    load_page(journal, id, Alerts::All).await
}

/// [`load`] with only a page of the alerts (the web console).
pub async fn load_page(journal: &Journal, id: &str, which: Alerts) -> Result<Timeline, JournalError> {
    let incident = journal.incident(id).await?;
    let rows = journal.transitions(id).await?;
    let checks = journal.checks(id).await?;
    let opened = parse_ts(&incident.opened_at).unwrap_or_else(Utc::now);
    let mut entered: DateTime<Utc> = opened;
    let mut transitions = Vec::new();
    for row in rows {
        let at = parse_ts(&row.at).unwrap_or(opened);
        let in_step = (at - entered).num_milliseconds();
        let own: Vec<CheckRow> = checks.iter().filter(|c| c.transition_seq == row.seq).cloned().collect();
        if row.rejected.is_none() && row.from_state != row.to_state {
            entered = at;
        }
        let gist = gist(&row.observations);
        transitions.push(TimelineTransition { elapsed_ms: (at - opened).num_milliseconds(), in_step_ms: in_step, checks: own, gist, row });
    }
    let (alerts, alerts_total, alerts_offset) = match which {
        Alerts::All => {
            let all = journal.alerts(id).await?;
            let n = all.len() as i64;
            (all, n, 0)
        }
        Alerts::Page { offset, limit } => (journal.alerts_page(id, offset, limit).await?, journal.alert_count(id).await?, offset.max(0)),
    };
    Ok(Timeline {
        journal_head: journal.head(id).await?,
        effects: journal.effects(id).await?,
        commands: journal.commands(id).await?,
        alerts,
        alerts_total,
        alerts_offset,
        incident,
        transitions,
    })
}

impl Timeline {
    /// Time spent in each step, in the order the steps were left.
    pub fn time_per_step(&self) -> Vec<(String, i64)> {
        self.transitions
            .iter()
            .filter(|t| t.row.rejected.is_none() && t.row.from_state != t.row.to_state)
            .map(|t| (t.row.from_state.clone(), t.in_step_ms))
            .collect()
    }
}

/// The one-line gist of an event that carries more than checks.
pub fn gist(json: &str) -> Option<String> {
    let v: serde_json::Value = serde_json::from_str(json).ok()?;
    let kind = v.get("type")?.as_str()?;
    let s = |k: &str| v.get(k).and_then(|x| x.as_str()).unwrap_or("").to_string();
    match kind {
        "assessed" => Some(format!("class {}: {}", s("class"), s("detail"))),
        "switched" | "flushed" | "flush_failed" | "rollback_finished" => Some(s("detail")).filter(|d| !d.is_empty()),
        "deploy_finished" => Some(format!("{} {} {}", s("status"), v.get("deploy_id").and_then(|d| d.as_str()).unwrap_or(""), s("detail"))),
        "approve" | "reject" => Some(s("comment")).filter(|d| !d.is_empty()).map(|c| format!("“{c}”")),
        "abort" => Some(s("reason")).filter(|d| !d.is_empty()).map(|c| format!("“{c}”")),
        "verify_checked" if v.get("window_over").and_then(|w| w.as_bool()) == Some(true) => Some("verify window over".into()),
        _ => None,
    }
}
