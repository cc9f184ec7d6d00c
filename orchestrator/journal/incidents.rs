//! The journal's incident log: an incident's open, every decision of its machine (with
//! the checks it judged), its current state and its close. What the executor decides
//! is written here before it acts: not journaled means not decided.

use super::{
    chain, parse_ts, topology, ts, verify, CheckRow, IncidentRow, Journal, JournalError, NewIncident, Result, Stats, TransitionRow, LEASE,
};
use super::{SettingsStore, TopologyStore};
use crate::machine::{Decision, Event, Machine};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// The incident log.
///
/// A backend must guarantee:
/// - **A decision is one transaction.** [`record_decision`](IncidentStore::record_decision)
///   and its two variants write, together or not at all: the transition (accepted or
///   rejected, with the next sequence number of the incident), the checks the event
///   carried, the incident's new state and machine (accepted decisions only), its close
///   (when the new state has an outcome; once: a close is never rewritten), the move of
///   the target's topology that goes with that close, the command's application, and
///   the ledger entry of each of these in the incident's chain.
/// - **Fenced on the owner.** For a store with an owner, a decision is written only
///   while that owner holds the incident's claim, checked inside the write transaction
///   after the write lock is taken (`LeaseLost` otherwise), so that a process that lost
///   its claim cannot write one more transition. A store without an owner is not fenced.
/// - **Append-only history.** Transitions, checks, an incident's open and close are
///   never updated or deleted; sequence numbers are dense from 1 per incident.
/// - **One open incident per target**: opening a second is `AlreadyOpen`.
/// - Every text column that can carry what the outside world said (trigger detail,
///   observations, notes, rejections, checks' observations, command results) passes
///   through the journal's redactor.
/// - Time is the caller's `at`, stored as [`ts`] renders it.
#[async_trait]
pub trait IncidentStore: Send + Sync {
    /// Opens an incident in Detect and journals its trigger as the first transition;
    /// claimed by the store's owner (if any) from its first instant. Returns its id.
    async fn create_incident(&self, new: &NewIncident, machine: &Machine, at: DateTime<Utc>) -> Result<String>;

    /// Journals one decision of the machine (accepted or rejected) with the machine
    /// state after it, the checks it judged, and the incident's current state, in one
    /// transaction: either all of it is recorded or none. Returns the transition's seq.
    async fn record_decision(
        &self,
        incident: &str,
        event: &Event,
        decision: &Decision,
        machine: &Machine,
        at: DateTime<Utc>,
    ) -> Result<i64>;

    /// [`IncidentStore::record_decision`] that also moves the incident's target's
    /// topology in the same transaction (an incident that ends recovered, held, or
    /// escalated after its switch). The move is written only with the close.
    async fn record_decision_moving(
        &self,
        incident: &str,
        event: &Event,
        decision: &Decision,
        machine: &Machine,
        at: DateTime<Utc>,
        topology: Option<&crate::topology::Change>,
    ) -> Result<i64>;

    /// [`IncidentStore::record_decision`] for a person's command `(id, accepted,
    /// result)`, marking the command applied in the same transaction: a crash can never
    /// leave an approval that opened the gate looking unapplied (and then be re-fed and
    /// recorded as refused).
    async fn record_command_decision(
        &self,
        incident: &str,
        event: &Event,
        decision: &Decision,
        machine: &Machine,
        at: DateTime<Utc>,
        command: (i64, bool, &str),
    ) -> Result<i64>;

    /// The incident; `UnknownIncident` when there is none.
    async fn incident(&self, id: &str) -> Result<IncidentRow>;

    /// The machine as last journaled for an incident: what resume starts from.
    async fn machine(&self, id: &str) -> Result<Machine> {
        let inc = self.incident(id).await?;
        Machine::from_json(&inc.machine).map_err(|e| JournalError::Corrupt(format!("machine state of {id}: {e}")))
    }

    /// The newest `limit` incidents, newest first.
    async fn incidents(&self, limit: i64) -> Result<Vec<IncidentRow>>;

    /// Every open incident, oldest first.
    async fn open_incidents(&self) -> Result<Vec<IncidentRow>>;

    /// The open incident for a target, if any: new alerts attach to it.
    async fn open_incident_for(&self, target: &str) -> Result<Option<IncidentRow>> {
        // Incidents journaled before targets had names carry the primary's endpoint
        // (host:port/db, never a valid name): theirs is the playbook's name.
        Ok(self.open_incidents().await?.into_iter().find(|i| i.target == target || (i.playbook_name == target && i.target.contains(':'))))
    }

    /// The last incident for a target that ended other than as a false alarm: when it
    /// closed, how, and under which playbook hash. For the cooldown (an operator's
    /// abort counts: it must not be undone by the next alert) and for "already failed
    /// over".
    async fn last_closed_for(&self, target: &str) -> Result<Option<(DateTime<Utc>, String, String)>>;

    /// An incident's transitions, in sequence order.
    async fn transitions(&self, id: &str) -> Result<Vec<TransitionRow>>;

    /// An incident's checks, in the order they were journaled.
    async fn checks(&self, id: &str) -> Result<Vec<CheckRow>>;

    /// The hash of a chain's last entry (an incident id, `alerts`, `settings` or
    /// `topology`): what a copy kept elsewhere compares against.
    async fn head(&self, chain_name: &str) -> Result<Option<String>>;

    /// Re-computes every chain (or one incident's): see [`verify::verify`].
    async fn verify(&self, only: Option<&str>) -> Result<verify::VerifyReport>;

    /// The approver → OS user map the incident pinned (empty: none).
    async fn approver_os_users(&self, id: &str) -> Result<std::collections::BTreeMap<String, String>>;

    /// The figures `/metrics` reads from the journal.
    async fn stats(&self) -> Result<Stats>;
}

#[async_trait]
impl IncidentStore for Journal {
    async fn create_incident(&self, new: &NewIncident, machine: &Machine, at: DateTime<Utc>) -> Result<String> {
        let _write = self.writes.lock().await;
        let id = format!("inc-{}-{:04x}", at.format("%Y%m%dT%H%M%S"), rand::random::<u16>());
        // Claimed from its first instant (when this journal has an owner): no other
        // process can adopt it between its creation and its trigger.
        let lease = self.owner.as_ref().map(|_| ts(at + chrono::Duration::from_std(LEASE).unwrap_or_default()));
        let mut tx = self.begin_write().await?;
        if let Some(term) = &self.term {
            super::leader::check_in(&mut tx, term).await?;
        }
        let inserted = sqlx::query(
            "INSERT INTO incidents (id, playbook_name, playbook_path, playbook_hash, target, state, machine, opened_at, trigger_source, trigger_detail, owner, lease_until, os_user, approver_os_users)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12, $13, $14) RETURNING rowid",
        )
        .bind(&id)
        .bind(&new.playbook_name)
        .bind(&new.playbook_path)
        .bind(&new.playbook_hash)
        .bind(&new.target)
        .bind(machine.state().name())
        .bind(machine.to_json())
        .bind(ts(at))
        .bind(&new.trigger_source)
        .bind(self.redactor.redact(&new.trigger_detail))
        .bind(self.owner.as_deref())
        .bind(lease)
        .bind(&new.os_user)
        .bind(serde_json::to_string(&new.approver_os_users).unwrap_or_else(|_| "{}".into()))
        .fetch_one(&mut *tx)
        .await
        .map_err(|e| match &e {
            // SQLite names the column; PostgreSQL names the partial unique index.
            sqlx::Error::Database(db)
                if db.message().contains("incidents.target") || db.constraint() == Some("incidents_one_open_per_target") =>
            {
                JournalError::AlreadyOpen(new.target.clone())
            }
            _ => JournalError::from(e),
        })?;
        chain::append(&mut tx, &id, &[(chain::Kind::Open, inserted.get(0))]).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn record_decision(
        &self,
        incident: &str,
        event: &Event,
        decision: &Decision,
        machine: &Machine,
        at: DateTime<Utc>,
    ) -> Result<i64> {
        self.record(incident, event, decision, machine, at, None, None).await
    }

    async fn record_decision_moving(
        &self,
        incident: &str,
        event: &Event,
        decision: &Decision,
        machine: &Machine,
        at: DateTime<Utc>,
        topology: Option<&crate::topology::Change>,
    ) -> Result<i64> {
        self.record(incident, event, decision, machine, at, None, topology).await
    }

    async fn record_command_decision(
        &self,
        incident: &str,
        event: &Event,
        decision: &Decision,
        machine: &Machine,
        at: DateTime<Utc>,
        command: (i64, bool, &str),
    ) -> Result<i64> {
        self.record(incident, event, decision, machine, at, Some(command), None).await
    }

    async fn incident(&self, id: &str) -> Result<IncidentRow> {
        let row = sqlx::query(INCIDENT_COLUMNS_WHERE_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| JournalError::UnknownIncident(id.to_string()))?;
        IncidentRow::from_row(&row)
    }

    async fn incidents(&self, limit: i64) -> Result<Vec<IncidentRow>> {
        let rows = sqlx::query(INCIDENT_COLUMNS_ALL).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(IncidentRow::from_row).collect()
    }

    async fn open_incidents(&self) -> Result<Vec<IncidentRow>> {
        let rows = sqlx::query(INCIDENT_COLUMNS_OPEN).fetch_all(&self.pool).await?;
        rows.iter().map(IncidentRow::from_row).collect()
    }

    async fn last_closed_for(&self, target: &str) -> Result<Option<(DateTime<Utc>, String, String)>> {
        let row = sqlx::query(
            "SELECT closed_at, outcome, playbook_hash FROM incidents
             WHERE (target = $1 OR (playbook_name = $1 AND target LIKE '%:%')) AND closed_at IS NOT NULL AND outcome != 'false_alarm'
             ORDER BY closed_at DESC LIMIT 1",
        )
        .bind(target)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| Some((parse_ts(&r.get::<String, _>(0))?, r.get(1), r.get(2)))))
    }

    async fn transitions(&self, id: &str) -> Result<Vec<TransitionRow>> {
        let rows = sqlx::query(
            "SELECT seq, at, from_state, to_state, event, observations, note, rejected, actor FROM transitions WHERE incident_id = $1 ORDER BY seq",
        )
        .bind(id)
        .fetch_all(&self.pool)
        .await?;
        Ok(rows
            .iter()
            .map(|r| TransitionRow {
                seq: r.get("seq"),
                at: r.get("at"),
                from_state: r.get("from_state"),
                to_state: r.get("to_state"),
                event: r.get("event"),
                observations: r.get("observations"),
                note: r.get("note"),
                rejected: r.get("rejected"),
                actor: r.get("actor"),
            })
            .collect())
    }

    async fn checks(&self, id: &str) -> Result<Vec<CheckRow>> {
        let rows = sqlx::query("SELECT transition_seq, at, phase, item, holds, observed FROM checks WHERE incident_id = $1 ORDER BY id")
            .bind(id)
            .fetch_all(&self.pool)
            .await?;
        Ok(rows
            .iter()
            .map(|r| CheckRow {
                transition_seq: r.get("transition_seq"),
                at: r.get("at"),
                phase: r.get("phase"),
                item: r.get("item"),
                holds: r.get::<i64, _>("holds") != 0,
                observed: r.get("observed"),
            })
            .collect())
    }

    async fn head(&self, chain_name: &str) -> Result<Option<String>> {
        let mut conn = self.pool.acquire().await?;
        let (pos, hash) = chain::head(&mut conn, chain_name).await?;
        Ok((pos > 0).then_some(hash))
    }

    async fn verify(&self, only: Option<&str>) -> Result<verify::VerifyReport> {
        verify::verify(&self.pool, only).await
    }

    async fn approver_os_users(&self, id: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let row = sqlx::query("SELECT approver_os_users FROM incidents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| JournalError::UnknownIncident(id.to_string()))?;
        let text: String = row.get(0);
        serde_json::from_str(&text).map_err(|e| JournalError::Corrupt(format!("approver_os_users of {id}: {e}")))
    }

    async fn stats(&self) -> Result<Stats> {
        let pool = &self.pool;
        let outcomes = sqlx::query("SELECT target, outcome, COUNT(*) FROM incidents WHERE outcome IS NOT NULL GROUP BY target, outcome")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        let open = sqlx::query("SELECT target, state, COUNT(*) FROM incidents WHERE closed_at IS NULL GROUP BY target, state")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| (r.get(0), r.get(1), r.get(2)))
            .collect();
        // Time in each step: from entering a state to leaving it, over all incidents.
        let t = self.backend.epoch_seconds("at");
        let steps = sqlx::query(sqlx::AssertSqlSafe(format!(
            "WITH moves AS (
                SELECT incident_id, from_state, to_state, {t} AS t,
                       LAG({t}) OVER (PARTITION BY incident_id ORDER BY seq) AS prev
                FROM transitions WHERE rejected IS NULL AND from_state != to_state)
             SELECT from_state, COUNT(*), CAST(SUM(t - prev) AS DOUBLE PRECISION) FROM moves WHERE prev IS NOT NULL GROUP BY from_state"
        )))
        .fetch_all(pool)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1), r.get(2)))
        .collect();
        let paused_targets = sqlx::query("SELECT substr(key, 8) FROM settings WHERE key LIKE 'paused:%' AND value = '1'")
            .fetch_all(pool)
            .await?
            .iter()
            .map(|r| r.get(0))
            .collect();
        Ok(Stats { outcomes, open, steps, paused: self.paused().await?, paused_targets, topologies: self.topologies().await? })
    }
}

impl Journal {
    #[allow(clippy::too_many_arguments)]
    async fn record(
        &self,
        incident: &str,
        event: &Event,
        decision: &Decision,
        machine: &Machine,
        at: DateTime<Utc>,
        command: Option<(i64, bool, &str)>,
        topology: Option<&crate::topology::Change>,
    ) -> Result<i64> {
        let _write = self.writes.lock().await;
        // The write lock before reading, so the fence and the sequence
        // number cannot change under us.
        let mut tx = self.begin_write().await?;
        self.fence(&mut tx, incident).await?;
        // The last decision journaled: its seq gives the next one, and its content tells
        // a retried write (below).
        let last = sqlx::query(
            "SELECT seq, event, observations, to_state, rejected, machine FROM transitions WHERE incident_id = $1 ORDER BY seq DESC LIMIT 1",
        )
        .bind(incident)
        .fetch_optional(&mut *tx)
        .await?;
        let seq: i64 = last.as_ref().map(|r| r.get::<i64, _>(0)).unwrap_or(0) + 1;
        let when = ts(at);
        let mut observations = serde_json::to_value(event).map_err(|e| JournalError::Corrupt(e.to_string()))?;
        self.redactor.redact_json(&mut observations);
        let observations = observations.to_string();
        let r = &self.redactor;
        // The same decision already journaled as the last one: a retry after a COMMIT
        // whose answer was lost (the connection dropped as PostgreSQL restarted). The
        // first attempt is on disk; writing it again would be a second transition.
        if let (Some(last), None) = (&last, command) {
            let same = last.get::<String, _>(1) == event.name()
                && last.get::<String, _>(2) == observations
                && last.get::<String, _>(3) == decision.to.name()
                && last.get::<Option<String>, _>(4) == decision.rejected.as_deref().map(|n| r.redact(n))
                && last.get::<String, _>(5) == machine.to_json();
            if same {
                tx.commit().await?;
                tracing::info!(incident, seq = seq - 1, "decision already journaled (a retried write); not written twice");
                return Ok(seq - 1);
            }
        }
        let inserted = sqlx::query(
            "INSERT INTO transitions (incident_id, seq, at, from_state, to_state, event, observations, note, rejected, actor, machine)
             VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11) RETURNING id",
        )
        .bind(incident)
        .bind(seq)
        .bind(&when)
        .bind(decision.from.name())
        .bind(decision.to.name())
        .bind(event.name())
        .bind(&observations)
        .bind(decision.note.as_deref().map(|n| r.redact(n)))
        .bind(decision.rejected.as_deref().map(|n| r.redact(n)))
        .bind(event.actor())
        .bind(machine.to_json())
        .fetch_one(&mut *tx)
        .await?;
        let transition: i64 = inserted.get(0);
        let mut entries = Vec::new();
        let (mut first_check, mut last_check) = (i64::MAX, i64::MIN);
        if let Some((phase, checks)) = checks_of(event) {
            for c in checks {
                let check = sqlx::query(
                    "INSERT INTO checks (incident_id, transition_seq, at, phase, item, holds, observed) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
                )
                .bind(incident)
                .bind(seq)
                .bind(&when)
                .bind(phase)
                .bind(&c.item)
                .bind(c.holds as i64)
                .bind(r.redact(&c.observed))
                .fetch_one(&mut *tx)
                .await?;
                let check: i64 = check.get(0);
                first_check = first_check.min(check);
                last_check = last_check.max(check);
            }
        }
        // One writer (the write lock): this transaction's checks are first..=last, entered
        // with one query rather than one per check.
        let mut ranges = vec![(chain::Kind::Transition, transition, transition)];
        if first_check <= last_check {
            ranges.push((chain::Kind::Check, first_check, last_check));
        }
        if decision.rejected.is_none() {
            let outcome = decision.to.outcome().map(|o| o.as_str());
            let was_open: Option<(i64, bool)> =
                sqlx::query("SELECT rowid, CASE WHEN closed_at IS NULL THEN 1 ELSE 0 END FROM incidents WHERE id = $1")
                    .bind(incident)
                    .fetch_optional(&mut *tx)
                    .await?
                    .map(|r| (r.get(0), r.get::<i64, _>(1) != 0));
            // Closed once: the close is history (chained), and is never rewritten.
            let updated = sqlx::query(
                "UPDATE incidents SET state = $1, machine = $2, outcome = COALESCE(outcome, $3), closed_at = COALESCE(closed_at, CASE WHEN $4 IS NULL THEN NULL ELSE $5 END) WHERE id = $6",
            )
            .bind(decision.to.name())
            .bind(machine.to_json())
            .bind(outcome)
            .bind(outcome)
            .bind(&when)
            .bind(incident)
            .execute(&mut *tx)
            .await?;
            if updated.rows_affected() == 0 {
                return Err(JournalError::UnknownIncident(incident.to_string()));
            }
            if let (Some((rowid, true)), Some(_)) = (was_open, outcome) {
                entries.push((chain::Kind::Close, rowid));
                // The close moves the target's topology, once: a close is never rewritten.
                if let Some(change) = topology {
                    // Incidents journaled before targets had names carry the primary's
                    // endpoint (host:port/db): their target is the playbook's name.
                    let row =
                        sqlx::query("SELECT target, playbook_name FROM incidents WHERE id = $1").bind(incident).fetch_one(&mut *tx).await?;
                    let (target, playbook_name): (String, String) = (row.get(0), row.get(1));
                    let target = if target.contains(':') { playbook_name } else { target };
                    topology::apply(&mut tx, &self.redactor, &target, change, at).await?;
                }
            }
        }
        if let Some((id, accepted, result)) = command {
            let applied =
                sqlx::query("UPDATE commands SET applied_at = $1, accepted = $2, result = $3 WHERE id = $4 AND applied_at IS NULL")
                    .bind(&when)
                    .bind(accepted as i64)
                    .bind(r.redact(result))
                    .bind(id)
                    .execute(&mut *tx)
                    .await?;
            if applied.rows_affected() == 1 {
                entries.push((chain::Kind::Applied, id));
            }
        }
        ranges.extend(entries.iter().map(|(k, r)| (*k, *r, *r)));
        chain::append_ranges(&mut tx, incident, &ranges).await?;
        tx.commit().await?;
        Ok(seq)
    }
}

const INCIDENT_COLUMNS_WHERE_ID: &str = "SELECT id, playbook_name, playbook_path, playbook_hash, target, state, machine, outcome, opened_at, closed_at, trigger_source, trigger_detail FROM incidents WHERE id = $1";
const INCIDENT_COLUMNS_ALL: &str = "SELECT id, playbook_name, playbook_path, playbook_hash, target, state, machine, outcome, opened_at, closed_at, trigger_source, trigger_detail FROM incidents ORDER BY opened_at DESC LIMIT $1";
const INCIDENT_COLUMNS_OPEN: &str = "SELECT id, playbook_name, playbook_path, playbook_hash, target, state, machine, outcome, opened_at, closed_at, trigger_source, trigger_detail FROM incidents WHERE closed_at IS NULL ORDER BY opened_at";

/// The checklist an event carries, and the phase it belongs to.
fn checks_of(event: &Event) -> Option<(&'static str, &[crate::machine::Check])> {
    match event {
        Event::ConfirmChecked { checks } => Some(("confirm", checks)),
        Event::Assessed { preflight, .. } => Some(("preflight", preflight)),
        Event::FlushBlocked { checks, .. } => Some(("flush_guard", checks)),
        Event::VerifyChecked { checks, .. } => Some(("verify", checks)),
        Event::RollbackHeld { checks, .. } => Some(("rollback_preflight", checks)),
        _ => None,
    }
}
