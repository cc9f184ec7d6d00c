//! The journal's topology concern: per target, which endpoint is active, whether
//! failover is armed (the current row), and every change of it (append-only, chained).

use super::{chain, ts, Journal, Result};
use crate::model::Side;
use crate::topology::{Change, Topology};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use serde::Serialize;
use sqlx::Row;

/// One journaled change of a target's topology.
#[derive(Debug, Clone, Serialize)]
pub struct TopologyChangeRow {
    pub at: String,
    pub target: String,
    pub change: String,
    pub active: String,
    pub armed: bool,
    pub reason: String,
    pub incident: Option<String>,
    pub actor: String,
}

fn from_row(r: &sqlx::sqlite::SqliteRow) -> Topology {
    Topology {
        target: r.get("target"),
        active: Side::parse(&r.get::<String, _>("active")).unwrap_or_default(),
        since: r.get("since"),
        incident: r.get("incident_id"),
        armed: r.get("armed"),
        reason: r.get("reason"),
        needs_person: r.get("needs_person"),
        standby_ok_since: r.get("standby_ok_since"),
    }
}

const COLUMNS: &str = "SELECT target, active, since, incident_id, armed, reason, needs_person, standby_ok_since FROM topology";

/// Per target: the current topology and every change of it.
///
/// A backend must guarantee:
/// - A change writes the target's current row and appends its history row, with the
///   history row's ledger entry in the `topology` chain, in one transaction. The
///   history (`topology_changes`) is append-only.
/// - A change that comes with an incident's close is written in the close's
///   transaction ([`IncidentStore::record_decision_moving`]), not through
///   [`change_topology`](TopologyStore::change_topology).
/// - `since` is kept unless the change moved the active side.
/// - `reason` and `actor` pass through the journal's redactor.
///
/// [`IncidentStore::record_decision_moving`]: super::IncidentStore::record_decision_moving
#[async_trait]
pub trait TopologyStore: Send + Sync {
    /// The target's topology; a target never changed is as its playbook is written.
    async fn topology(&self, target: &str) -> Result<Topology>;

    /// Every target with a recorded topology.
    async fn topologies(&self) -> Result<Vec<Topology>>;

    /// Journals a change of a target's topology (the re-arm loop, `orchestrator arm`).
    async fn change_topology(&self, target: &str, change: &Change, at: DateTime<Utc>) -> Result<()>;

    /// A target's topology history, newest last.
    async fn topology_history(&self, target: &str, limit: i64) -> Result<Vec<TopologyChangeRow>>;
}

#[async_trait]
impl TopologyStore for Journal {
    async fn topology(&self, target: &str) -> Result<Topology> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE target = ?"))).bind(target).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| from_row(&r)).unwrap_or_else(|| Topology::as_written(target)))
    }

    async fn topologies(&self) -> Result<Vec<Topology>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} ORDER BY target"))).fetch_all(&self.pool).await?;
        Ok(rows.iter().map(from_row).collect())
    }

    async fn change_topology(&self, target: &str, change: &Change, at: DateTime<Utc>) -> Result<()> {
        let _write = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        apply(&mut tx, &self.redactor, target, change, at).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn topology_history(&self, target: &str, limit: i64) -> Result<Vec<TopologyChangeRow>> {
        let rows = sqlx::query(
            "SELECT at, target, change, active, armed, reason, incident_id, actor FROM
               (SELECT * FROM topology_changes WHERE target = ? ORDER BY id DESC LIMIT ?) ORDER BY id",
        )
        .bind(target)
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| TopologyChangeRow {
                at: r.get("at"),
                target: r.get("target"),
                change: r.get("change"),
                active: r.get("active"),
                armed: r.get("armed"),
                reason: r.get("reason"),
                incident: r.get("incident_id"),
                actor: r.get("actor"),
            })
            .collect())
    }
}

/// Writes the change inside the caller's write transaction (so a recovered incident's
/// close and the move of its target's topology commit together, or neither does).
pub(super) async fn apply(
    tx: &mut sqlx::SqliteConnection,
    redactor: &crate::redact::Redactor,
    target: &str,
    c: &Change,
    at: DateTime<Utc>,
) -> Result<()> {
    let when = ts(at);
    let reason = redactor.redact(&c.reason);
    let since = if c.moved { Some(when.clone()) } else { None };
    sqlx::query(
        "INSERT INTO topology (target, active, since, incident_id, armed, reason, needs_person, standby_ok_since, updated_at)
         VALUES (?1, ?2, COALESCE(?3, ''), ?4, ?5, ?6, ?7, ?8, ?9)
         ON CONFLICT(target) DO UPDATE SET active = ?2, since = COALESCE(?3, topology.since), incident_id = ?4, armed = ?5,
           reason = ?6, needs_person = ?7, standby_ok_since = ?8, updated_at = ?9",
    )
    .bind(target)
    .bind(c.active.as_str())
    .bind(since)
    .bind(&c.incident)
    .bind(c.armed)
    .bind(&reason)
    .bind(c.needs_person)
    .bind(&c.standby_ok_since)
    .bind(&when)
    .execute(&mut *tx)
    .await?;
    let row = sqlx::query(
        "INSERT INTO topology_changes (target, at, change, active, armed, reason, incident_id, actor) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
    )
    .bind(target)
    .bind(&when)
    .bind(c.kind.as_str())
    .bind(c.active.as_str())
    .bind(c.armed)
    .bind(&reason)
    .bind(&c.incident)
    .bind(redactor.redact(&c.actor))
    .execute(&mut *tx)
    .await?;
    chain::append(tx, chain::TOPOLOGY, &[(chain::Kind::Topology, row.last_insert_rowid())]).await?;
    Ok(())
}
