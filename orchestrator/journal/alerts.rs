//! The journal's alert concern: every alert received, with what it was taken to mean
//! (its disposition) and the incident it opened or joined.

use super::{chain, ts, AlertRow, Journal, NewAlert, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// Alerts, as received and decided.
///
/// A backend must guarantee:
/// - A batch ([`record_alerts`](AlertStore::record_alerts)) is one transaction: all of
///   its alerts are stored, each with its ledger entry in the `alerts` chain, or none.
/// - Alerts are append-only history, read back in the order they were journaled.
/// - `fingerprint` and `summary` pass through the journal's redactor.
/// - Alerts are not fenced: any process may journal them.
#[async_trait]
pub trait AlertStore: Send + Sync {
    /// Journals one alert; returns its id.
    async fn record_alert(&self, alert: &NewAlert, incident: Option<&str>, disposition: &str, at: DateTime<Utc>) -> Result<i64>;

    /// Journals many alerts in one transaction and one fsync (the intake's group
    /// commit): all of them, each with its ledger entry, or none.
    async fn record_alerts(&self, rows: &[(NewAlert, Option<String>, &str)], at: DateTime<Utc>) -> Result<()>;

    /// The alerts that opened or joined an incident, oldest first.
    async fn alerts(&self, incident: &str) -> Result<Vec<AlertRow>>;

    /// The newest alerts that matched no target (`incidents --unrouted`), newest last.
    async fn unrouted_alerts(&self, limit: i64) -> Result<Vec<AlertRow>>;
}

#[async_trait]
impl AlertStore for Journal {
    async fn record_alert(&self, alert: &NewAlert, incident: Option<&str>, disposition: &str, at: DateTime<Utc>) -> Result<i64> {
        let _write = self.writes.lock().await;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO alerts (received_at, source, fingerprint, status, target, summary, incident_id, disposition) VALUES ($1, $2, $3, $4, $5, $6, $7, $8) RETURNING id",
        )
        .bind(ts(at))
        .bind(&alert.source)
        .bind(self.redactor.redact(&alert.fingerprint))
        .bind(&alert.status)
        .bind(&alert.target)
        .bind(self.redactor.redact(&alert.summary))
        .bind(incident)
        .bind(disposition)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.get(0);
        chain::append(&mut tx, chain::ALERTS, &[(chain::Kind::Alert, id)]).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn record_alerts(&self, rows: &[(NewAlert, Option<String>, &str)], at: DateTime<Utc>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let _write = self.writes.lock().await;
        let mut tx = self.begin_write().await?;
        let when = ts(at);
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        // 100 rows of 8 values a statement: well inside SQLite's variable limit.
        for chunk in rows.chunks(100) {
            let sql = format!(
                "INSERT INTO alerts (received_at, source, fingerprint, status, target, summary, incident_id, disposition) VALUES {} RETURNING id",
                chain::values(chunk.len(), 8)
            );
            let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
            for (alert, incident, disposition) in chunk {
                q = q
                    .bind(when.clone())
                    .bind(alert.source.clone())
                    .bind(self.redactor.redact(&alert.fingerprint))
                    .bind(alert.status.clone())
                    .bind(alert.target.clone())
                    .bind(self.redactor.redact(&alert.summary))
                    .bind(incident.clone())
                    .bind(disposition.to_string());
            }
            for r in q.fetch_all(&mut *tx).await? {
                let id: i64 = r.get(0);
                first = first.min(id);
                last = last.max(id);
            }
        }
        // One writer (the write lock): the ids of this transaction are first..=last.
        chain::append_range(&mut tx, chain::ALERTS, chain::Kind::Alert, first, last).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn alerts(&self, incident: &str) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query(
            "SELECT received_at, target, source, fingerprint, status, summary, disposition FROM alerts WHERE incident_id = $1 ORDER BY id",
        )
        .bind(incident)
        .fetch_all(&self.pool)
        .await?;
        Ok(alert_rows(&rows))
    }

    async fn unrouted_alerts(&self, limit: i64) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT id, received_at, target, source, fingerprint, status, summary, disposition FROM alerts
             WHERE disposition = 'unrouted' ORDER BY id DESC LIMIT $1) AS recent ORDER BY id",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(alert_rows(&rows))
    }
}

pub(super) fn alert_rows(rows: &[sqlx::any::AnyRow]) -> Vec<AlertRow> {
    {
        rows.iter()
            .map(|r| AlertRow {
                received_at: r.get("received_at"),
                target: r.get("target"),
                source: r.get("source"),
                fingerprint: r.get("fingerprint"),
                status: r.get("status"),
                summary: r.get("summary"),
                disposition: r.get("disposition"),
            })
            .collect()
    }
}
