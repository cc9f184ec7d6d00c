//! The journal's effect concern: each side effect's intent, written before it is
//! performed, and its outcome, written after. An intent without an outcome is an
//! effect that may or may not have happened: resume reconciles it, never re-issues it
//! blindly.

use super::{chain, ts, EffectRow, Journal, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// Effect intents and outcomes, keyed by the effect's idempotency key.
///
/// A backend must guarantee:
/// - [`effect_intent`](EffectStore::effect_intent) is fenced: it writes only while the
///   store's owner holds the incident's claim, checked inside the write transaction
///   (`LeaseLost` otherwise); a store without an owner is not fenced.
/// - The first intent for a key wins, atomically across processes: when the key exists
///   the existing row is returned and nothing is written (the caller reconciles). The
///   row is never replaced.
/// - An outcome is written once: a second outcome for the same key (or one without an
///   intent) is silently not written; the first is history.
/// - The intent and the outcome each get their ledger entry in the incident's chain,
///   in the transaction that writes them.
/// - `intent` and `result` pass through the journal's redactor before they are stored.
#[async_trait]
pub trait EffectStore: Send + Sync {
    /// Journals an effect's intent before it runs. Returns the existing record when
    /// the key is already known: the caller then reconciles instead of re-issuing.
    async fn effect_intent(
        &self,
        incident: &str,
        key: &str,
        kind: &str,
        intent: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<Option<EffectRow>>;

    /// Journals an effect's outcome, once: a second outcome for the same key is not
    /// written (the first one is history).
    async fn effect_outcome(&self, key: &str, outcome: &str, result: &serde_json::Value, at: DateTime<Utc>) -> Result<()>;

    /// The effect with this key, if any.
    async fn effect(&self, key: &str) -> Result<Option<EffectRow>>;

    /// An incident's effects, in the order their intents were written.
    async fn effects(&self, incident: &str) -> Result<Vec<EffectRow>>;
}

#[async_trait]
impl EffectStore for Journal {
    async fn effect_intent(
        &self,
        incident: &str,
        key: &str,
        kind: &str,
        intent: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<Option<EffectRow>> {
        let _write = self.writes.lock().await;
        let mut tx = self.begin_write().await?;
        self.fence(&mut tx, incident).await?;
        // Under the write lock, atomic across processes: the first intent for a key
        // wins. (Not `ON CONFLICT DO NOTHING`: the table refuses any insert that meets
        // an existing row, so that no REPLACE can rewrite one.)
        let exists = sqlx::query("SELECT 1 FROM effects WHERE key = $1").bind(key).fetch_optional(&mut *tx).await?.is_some();
        if exists {
            tx.commit().await?;
            return self.effect(key).await;
        }
        let inserted =
            sqlx::query("INSERT INTO effects (incident_id, key, kind, intent, intent_at) VALUES ($1, $2, $3, $4, $5) RETURNING id")
                .bind(incident)
                .bind(key)
                .bind(kind)
                .bind(self.redacted_json(intent))
                .bind(ts(at))
                .fetch_one(&mut *tx)
                .await?;
        chain::append(&mut tx, incident, &[(chain::Kind::Intent, inserted.get(0))]).await?;
        tx.commit().await?;
        Ok(None)
    }

    async fn effect_outcome(&self, key: &str, outcome: &str, result: &serde_json::Value, at: DateTime<Utc>) -> Result<()> {
        let _write = self.writes.lock().await;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query("SELECT rowid, incident_id FROM effects WHERE key = $1 AND outcome IS NULL")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            tracing::debug!(key, "effect outcome already journaled (or no intent); not rewritten");
            return Ok(());
        };
        let (rowid, incident): (i64, String) = (row.get(0), row.get(1));
        sqlx::query("UPDATE effects SET outcome = $1, result = $2, done_at = $3 WHERE rowid = $4")
            .bind(outcome)
            .bind(self.redacted_json(result))
            .bind(ts(at))
            .bind(rowid)
            .execute(&mut *tx)
            .await?;
        chain::append(&mut tx, &incident, &[(chain::Kind::Outcome, rowid)]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn effect(&self, key: &str) -> Result<Option<EffectRow>> {
        let row = sqlx::query("SELECT key, kind, intent, intent_at, outcome, result, done_at FROM effects WHERE key = $1")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(EffectRow::from_row))
    }

    async fn effects(&self, incident: &str) -> Result<Vec<EffectRow>> {
        let rows =
            sqlx::query("SELECT key, kind, intent, intent_at, outcome, result, done_at FROM effects WHERE incident_id = $1 ORDER BY id")
                .bind(incident)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(EffectRow::from_row).collect())
    }
}
