//! The journal's lease concern: which process drives an incident. A claim is a lease
//! on the incident's row (`owner`, `lease_until`), taken before driving it and renewed
//! while driving; the fencing inside [`IncidentStore::record_decision`] and
//! [`EffectStore::effect_intent`] is what makes a lost claim harmless.
//!
//! [`IncidentStore::record_decision`]: super::IncidentStore::record_decision
//! [`EffectStore::effect_intent`]: super::EffectStore::effect_intent

use super::{owner_is_dead_here, ts, Journal, JournalError, Result, LEASE};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// Claims on incidents, for the store's owner (see [`Journal::owned_by`]).
///
/// A backend must guarantee:
/// - Each call is atomic against every other process sharing the store: two owners
///   claiming the same incident at once cannot both succeed (a compare-and-swap on the
///   incident's owner, never read-then-write outside one statement or transaction).
/// - A store without an owner claims nothing: every method succeeds without writing.
/// - Leases last [`LEASE`] from `now`; time is the caller's `now`, not the database's.
#[async_trait]
pub trait ClaimStore: Send + Sync {
    /// Claims (or renews the claim on) an incident for this journal's owner. Succeeds
    /// when nobody holds it, we hold it, the lease lapsed, or the holder is a dead
    /// process on this host (taken over by compare-and-swap on that dead owner).
    /// `HeldBy` otherwise; `UnknownIncident` when there is no such incident.
    async fn claim(&self, id: &str, now: DateTime<Utc>) -> Result<()>;

    /// Extends this owner's lease; never takes a claim that is not already ours (a
    /// renewal that lands after a release must not re-claim). `LeaseLost` when the
    /// incident is no longer ours.
    async fn renew(&self, id: &str, now: DateTime<Utc>) -> Result<()>;

    /// Gives the claim up (at a gate, at the end, at shutdown); only if it is ours.
    async fn release(&self, id: &str) -> Result<()>;
}

#[async_trait]
impl ClaimStore for Journal {
    async fn claim(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let Some(me) = self.owner.clone() else { return Ok(()) };
        let _write = self.writes.lock().await;
        let until = ts(now + chrono::Duration::from_std(LEASE).unwrap_or_default());
        let claimed = sqlx::query(
            "UPDATE incidents SET owner = $1, lease_until = $2 WHERE id = $3 AND (owner IS NULL OR owner = $1 OR lease_until < $4)",
        )
        .bind(&*me)
        .bind(&until)
        .bind(id)
        .bind(ts(now))
        .execute(&self.pool)
        .await?;
        if claimed.rows_affected() == 1 {
            return Ok(());
        }
        let row = sqlx::query("SELECT owner, lease_until FROM incidents WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| JournalError::UnknownIncident(id.to_string()))?;
        let (owner, lease): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        let owner = owner.unwrap_or_default();
        if owner_is_dead_here(&owner) {
            // Compare-and-swap: only if the dead owner still holds it.
            let taken = sqlx::query("UPDATE incidents SET owner = $1, lease_until = $2 WHERE id = $3 AND owner = $4")
                .bind(&*me)
                .bind(&until)
                .bind(id)
                .bind(&owner)
                .execute(&self.pool)
                .await?;
            if taken.rows_affected() == 1 {
                tracing::info!(incident = id, dead_owner = %owner, "took over an incident whose process is gone");
                return Ok(());
            }
        }
        Err(JournalError::HeldBy { id: id.to_string(), owner, until: lease.unwrap_or_default() })
    }

    async fn renew(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let Some(me) = self.owner.clone() else { return Ok(()) };
        let _write = self.writes.lock().await;
        let until = ts(now + chrono::Duration::from_std(LEASE).unwrap_or_default());
        let renewed = sqlx::query("UPDATE incidents SET lease_until = $1 WHERE id = $2 AND owner = $3")
            .bind(until)
            .bind(id)
            .bind(&*me)
            .execute(&self.pool)
            .await?;
        if renewed.rows_affected() == 1 {
            Ok(())
        } else {
            Err(JournalError::LeaseLost(id.to_string()))
        }
    }

    async fn release(&self, id: &str) -> Result<()> {
        let Some(me) = self.owner.clone() else { return Ok(()) };
        let _write = self.writes.lock().await;
        sqlx::query("UPDATE incidents SET owner = NULL, lease_until = NULL WHERE id = $1 AND owner = $2")
            .bind(id)
            .bind(&*me)
            .execute(&self.pool)
            .await?;
        Ok(())
    }
}
