//! Pages of the journal for the web console: incidents filtered and paginated, and an
//! incident's alerts a page at a time (a storm attaches thousands to one incident, and
//! a page must stay fast however many there are).

use super::{IncidentRow, Journal, Result};
use crate::journal::prelude::*;
use crate::journal::AlertRow;
use async_trait::async_trait;
use sqlx::Row;

/// Which incidents a list shows. Times are RFC 3339 (what the journal stores), so they
/// compare as text.
#[derive(Debug, Clone, Default)]
pub struct IncidentFilter {
    /// The target's endpoint (`host:port/db`) or the playbook's name.
    pub target: Option<String>,
    /// An outcome (`recovered`, `held` ...), or `open` for incidents still running.
    pub outcome: Option<String>,
    /// Opened at or after.
    pub since: Option<String>,
    /// Opened before.
    pub until: Option<String>,
    pub offset: i64,
    pub limit: i64,
}

/// Browsing for people (the web console): incidents filtered and paginated, an
/// incident's alerts a page at a time, the pause as set. A backend must answer pages
/// from indexes (an incident with ten thousand alerts opens as fast as one with ten).
#[async_trait]
pub trait BrowseStore: Send + Sync {
    /// One page of incidents, newest first, and how many match in all.
    async fn incident_page(&self, f: &IncidentFilter) -> Result<(Vec<IncidentRow>, i64)>;

    /// How many alerts are attached to an incident.
    async fn alert_count(&self, incident: &str) -> Result<i64>;

    /// A page of an incident's alerts, in the order they arrived.
    async fn alerts_page(&self, incident: &str, offset: i64, limit: i64) -> Result<Vec<AlertRow>>;

    /// Who last set a setting and when, with its value: `(value, set_by, at)`.
    async fn pause_state(&self) -> Result<Option<(bool, String, String)>>;
}

#[async_trait]
impl BrowseStore for Journal {
    /// One page of incidents, newest first, and how many match in all.
    async fn incident_page(&self, f: &IncidentFilter) -> Result<(Vec<IncidentRow>, i64)> {
        // Static statements: an absent filter is NULL and matches everything.
        let count_sql = concat!(
            "SELECT COUNT(*) FROM incidents WHERE ($1 IS NULL OR target = $1 OR playbook_name = $1)",
            " AND ($2 IS NULL OR ($2 = 'open' AND closed_at IS NULL) OR outcome = $2)",
            " AND ($3 IS NULL OR opened_at >= $3) AND ($4 IS NULL OR opened_at < $4)"
        );
        let total: i64 =
            sqlx::query(count_sql).bind(&f.target).bind(&f.outcome).bind(&f.since).bind(&f.until).fetch_one(&self.pool).await?.get(0);
        let list_sql = concat!(
            "SELECT id, playbook_name, playbook_path, playbook_hash, target, state, machine, outcome, opened_at, closed_at, trigger_source, trigger_detail",
            " FROM incidents WHERE ($1 IS NULL OR target = $1 OR playbook_name = $1)",
            " AND ($2 IS NULL OR ($2 = 'open' AND closed_at IS NULL) OR outcome = $2)",
            " AND ($3 IS NULL OR opened_at >= $3) AND ($4 IS NULL OR opened_at < $4)",
            " ORDER BY opened_at DESC, id DESC LIMIT $5 OFFSET $6"
        );
        let rows = sqlx::query(list_sql)
            .bind(&f.target)
            .bind(&f.outcome)
            .bind(&f.since)
            .bind(&f.until)
            .bind(f.limit.clamp(1, 500))
            .bind(f.offset.max(0))
            .fetch_all(&self.pool)
            .await?;
        Ok((rows.iter().map(IncidentRow::from_row).collect::<Result<Vec<_>>>()?, total))
    }

    /// How many alerts are attached to an incident.
    async fn alert_count(&self, incident: &str) -> Result<i64> {
        Ok(sqlx::query("SELECT COUNT(*) FROM alerts WHERE incident_id = $1").bind(incident).fetch_one(&self.pool).await?.get(0))
    }

    /// A page of an incident's alerts, in the order they arrived.
    async fn alerts_page(&self, incident: &str, offset: i64, limit: i64) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query(
            "SELECT received_at, target, source, fingerprint, status, summary, disposition FROM alerts WHERE incident_id = $1 ORDER BY id LIMIT $2 OFFSET $3",
        )
        .bind(incident)
        .bind(limit.clamp(0, 1000))
        .bind(offset.max(0))
        .fetch_all(&self.pool)
        .await?;
        Ok(super::alerts::alert_rows(&rows))
    }

    /// Who last set a setting and when, with its value: `(value, set_by, at)`.
    async fn pause_state(&self) -> Result<Option<(bool, String, String)>> {
        Ok(self.setting("paused").await?.map(|(v, by, at)| (v == "1", by, at)))
    }
}
