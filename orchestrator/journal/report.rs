//! Read-only queries for period reports (`orchestrator report --since`) and for the
//! cooldown's view of real (not shadow) outcomes.

use super::{Journal, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

/// One incident of a period, with what a report needs to judge it.
#[derive(Debug, Clone, Serialize)]
pub struct PeriodIncident {
    pub id: String,
    pub target: String,
    /// None while the incident is open.
    pub outcome: Option<String>,
    pub opened_at: String,
    pub closed_at: Option<String>,
    /// When the incident was decided: the transition out of Assess for a shadow
    /// incident, the closing transition otherwise (None while open).
    pub decided_at: Option<String>,
    /// The closing transition's note: for a shadow incident, what would have happened
    /// and why (already redacted when journaled).
    pub close_note: Option<String>,
}

/// Reports over periods and the cooldown's view of real outcomes. A backend answers
/// these from the incidents and transitions it keeps; nothing here writes.
#[async_trait]
pub trait ReportStore: Send + Sync {
    /// When the target's last incident with a real outcome closed (false alarms and
    /// shadow outcomes excluded), how, and under which playbook hash. A shadow incident
    /// changed nothing, so it must not hold back a real failover once the target acts.
    async fn last_real_closed_for(&self, target: &str) -> Result<Option<(DateTime<Utc>, String, String)>>;

    /// Every incident opened in `[from, to)`, oldest first, with its decision time and
    /// closing note. The timestamps are RFC 3339 UTC with milliseconds, so they compare
    /// as text.
    async fn incidents_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<PeriodIncident>>;
}

#[async_trait]
impl ReportStore for Journal {
    /// When the target's last incident with a real outcome closed (false alarms and
    /// shadow outcomes excluded), how, and under which playbook hash. A shadow incident
    /// changed nothing, so it must not hold back a real failover once the target acts.
    async fn last_real_closed_for(&self, target: &str) -> Result<Option<(DateTime<Utc>, String, String)>> {
        let row = sqlx::query(
            "SELECT closed_at, outcome, playbook_hash FROM incidents
             WHERE (target = $1 OR (playbook_name = $1 AND target LIKE '%:%')) AND closed_at IS NOT NULL
               AND outcome NOT IN ('false_alarm', 'would_fail_over', 'would_escalate')
             ORDER BY closed_at DESC LIMIT 1",
        )
        .bind(target)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| Some((super::parse_ts(&r.get::<String, _>(0))?, r.get(1), r.get(2)))))
    }

    /// Every incident opened in `[from, to)`, oldest first, with its decision time and
    /// closing note. The timestamps are RFC 3339 UTC with milliseconds, so they compare
    /// as text.
    async fn incidents_between(&self, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Vec<PeriodIncident>> {
        let rows = sqlx::query(
            "SELECT i.id, i.target, i.outcome, i.opened_at, i.closed_at,
               (SELECT t.at FROM transitions t WHERE t.incident_id = i.id AND t.rejected IS NULL
                  AND t.to_state = i.outcome ORDER BY t.seq DESC LIMIT 1) AS closed_by,
               (SELECT t.note FROM transitions t WHERE t.incident_id = i.id AND t.rejected IS NULL
                  AND t.to_state = i.outcome ORDER BY t.seq DESC LIMIT 1) AS close_note,
               (SELECT t.at FROM transitions t WHERE t.incident_id = i.id AND t.rejected IS NULL
                  AND t.from_state = 'assess' AND t.to_state != 'assess' ORDER BY t.seq LIMIT 1) AS assessed
             FROM incidents i WHERE i.opened_at >= $1 AND i.opened_at < $2 ORDER BY i.opened_at, i.id",
        )
        .bind(super::ts(from))
        .bind(super::ts(to))
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| {
                let outcome: Option<String> = r.get("outcome");
                let shadow = outcome.as_deref().and_then(crate::model::Outcome::parse).is_some_and(|o| o.is_shadow());
                let closed_by: Option<String> = r.get("closed_by");
                let assessed: Option<String> = r.get("assessed");
                PeriodIncident {
                    id: r.get("id"),
                    target: r.get("target"),
                    decided_at: if shadow { assessed.or(closed_by) } else { closed_by.or(r.get("closed_at")) },
                    outcome,
                    opened_at: r.get("opened_at"),
                    closed_at: r.get("closed_at"),
                    close_note: r.get("close_note"),
                }
            })
            .collect())
    }
}
