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

fn from_row(r: &sqlx::any::AnyRow) -> Result<Topology> {
    let active: String = r.get("active");
    // Never guess the side a failover would start from.
    let active = Side::parse(&active).ok_or_else(|| {
        super::JournalError::Corrupt(format!(
            "topology of {}: active side {active:?} is neither primary nor backup",
            r.get::<String, _>("target")
        ))
    })?;
    Ok(Topology {
        target: r.get("target"),
        active,
        since: r.get("since"),
        incident: r.get("incident_id"),
        armed: r.get::<i64, _>("armed") != 0,
        reason: r.get("reason"),
        needs_person: r.get::<i64, _>("needs_person") != 0,
        standby_ok_since: r.get("standby_ok_since"),
    })
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

    /// Journals a change of a target's topology (the re-arm loop, `orchestrator arm`, an
    /// intake that finds the platform elsewhere) only if the topology is still
    /// `expected` and, with `no_open_incident`, no incident is open for the target —
    /// both checked in the write transaction (compare-and-set: a person's `arm`, an
    /// incident's close and the re-arm loop never overwrite each other). `false`:
    /// nothing written. The history row and its ledger entry commit with the change.
    async fn change_topology(
        &self,
        target: &str,
        expected: &Topology,
        change: &Change,
        no_open_incident: bool,
        at: DateTime<Utc>,
    ) -> Result<bool>;

    /// A target's topology history, newest last.
    async fn topology_history(&self, target: &str, limit: i64) -> Result<Vec<TopologyChangeRow>>;
}

#[async_trait]
impl TopologyStore for Journal {
    async fn topology(&self, target: &str) -> Result<Topology> {
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE target = $1"))).bind(target).fetch_optional(&self.pool).await?;
        match row {
            Some(r) => from_row(&r),
            None => Ok(Topology::as_written(target)),
        }
    }

    async fn topologies(&self) -> Result<Vec<Topology>> {
        let rows = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} ORDER BY target"))).fetch_all(&self.pool).await?;
        rows.iter().map(from_row).collect()
    }

    /// Journals a change of a target's topology (the re-arm loop, `orchestrator arm`)
    /// only if the topology is still `expected` (what the change was decided from) and,
    /// with `no_open_incident`, no incident is open for the target: checked in the write
    /// transaction, so a person's `arm`, an incident's close and the re-arm loop never
    /// overwrite each other. `false`: nothing written, decide again.
    async fn change_topology(
        &self,
        target: &str,
        expected: &Topology,
        change: &Change,
        no_open_incident: bool,
        at: DateTime<Utc>,
    ) -> Result<bool> {
        let _write = self.writes.lock().await;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(sqlx::AssertSqlSafe(format!("{COLUMNS} WHERE target = $1"))).bind(target).fetch_optional(&mut *tx).await?;
        let now = match row {
            Some(r) => from_row(&r)?,
            None => Topology::as_written(target),
        };
        if &now != expected {
            return Ok(false);
        }
        if no_open_incident {
            let open: i64 = sqlx::query(
                "SELECT COUNT(*) FROM incidents WHERE closed_at IS NULL AND (target = $1 OR (playbook_name = $1 AND target LIKE '%:%'))",
            )
            .bind(target)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
            if open > 0 {
                return Ok(false);
            }
        }
        apply(&mut tx, &self.redactor, target, change, at).await?;
        tx.commit().await?;
        Ok(true)
    }

    async fn topology_history(&self, target: &str, limit: i64) -> Result<Vec<TopologyChangeRow>> {
        let rows = sqlx::query(
            "SELECT at, target, change, active, armed, reason, incident_id, actor FROM
               (SELECT * FROM topology_changes WHERE target = $1 ORDER BY id DESC LIMIT $2) AS recent ORDER BY id",
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
                armed: r.get::<i64, _>("armed") != 0,
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
    tx: &mut sqlx::AnyConnection,
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
         VALUES ($1, $2, COALESCE($3, ''), $4, $5, $6, $7, $8, $9)
         ON CONFLICT(target) DO UPDATE SET active = $2, since = COALESCE($3, topology.since), incident_id = $4, armed = $5,
           reason = $6, needs_person = $7, standby_ok_since = $8, updated_at = $9",
    )
    .bind(target)
    .bind(c.active.as_str())
    .bind(since)
    .bind(&c.incident)
    .bind(c.armed as i64)
    .bind(&reason)
    .bind(c.needs_person as i64)
    .bind(&c.standby_ok_since)
    .bind(&when)
    .execute(&mut *tx)
    .await?;
    // The history row copies the current row as it now is (the same values verify
    // compares), plus what changed and who changed it.
    let row = sqlx::query(
        "INSERT INTO topology_changes (target, at, change, active, armed, reason, incident_id, actor, since, needs_person, standby_ok_since)
         SELECT target, $2, $3, active, armed, reason, incident_id, $4, since, needs_person, standby_ok_since FROM topology WHERE target = $1 RETURNING id",
    )
    .bind(target)
    .bind(&when)
    .bind(c.kind.as_str())
    .bind(redactor.redact(&c.actor))
    .fetch_one(&mut *tx)
    .await?;
    chain::append(tx, chain::TOPOLOGY, &[(chain::Kind::Topology, row.get(0))]).await?;
    Ok(())
}
