//! The journal's settings concern: global switches (`paused`, `paused:<target>`), each
//! change chained as history.

use super::{chain, ts, Journal, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// Settings: one current value per key, every change of it journaled.
///
/// A backend must guarantee:
/// - A change writes the key's current value and its ledger entry in the `settings`
///   chain in one transaction.
/// - `set_by` passes through the journal's redactor.
///
/// The pause switches are provided on top of [`setting`](SettingsStore::setting) and
/// [`set_setting_as`](SettingsStore::set_setting_as): a backend stores keys, the keys'
/// meaning is the same for every backend.
#[async_trait]
pub trait SettingsStore: Send + Sync {
    /// Sets `key` to `value`, by `by`.
    async fn set_setting(&self, key: &str, value: &str, by: &str, at: DateTime<Utc>) -> Result<()> {
        self.set_setting_as(key, value, by, None, at).await
    }

    /// [`SettingsStore::set_setting`] with the OS user who set it (the CLI's).
    async fn set_setting_as(&self, key: &str, value: &str, by: &str, os_user: Option<&str>, at: DateTime<Utc>) -> Result<()>;

    /// A key's (value, set_by, at), if it was ever set.
    async fn setting(&self, key: &str) -> Result<Option<(String, String, String)>>;

    /// Whether automatic failover is switched off for everyone (`orchestrator pause`).
    async fn paused(&self) -> Result<bool> {
        Ok(self.setting("paused").await?.map(|(v, _, _)| v == "1").unwrap_or(false))
    }

    /// Whether automatic failover is switched off for `target`: for everyone, or for
    /// it alone (`orchestrator pause --target T`).
    async fn paused_for(&self, target: &str) -> Result<bool> {
        Ok(self.paused().await? || self.setting(&pause_key(target)).await?.map(|(v, _, _)| v == "1").unwrap_or(false))
    }

    /// Pauses (or unpauses) one target, or everyone with `None`.
    async fn set_paused(&self, target: Option<&str>, paused: bool, by: &str, os_user: Option<&str>, at: DateTime<Utc>) -> Result<()> {
        let key = target.map(pause_key).unwrap_or_else(|| "paused".into());
        self.set_setting_as(&key, if paused { "1" } else { "0" }, by, os_user, at).await
    }
}

#[async_trait]
impl SettingsStore for Journal {
    async fn set_setting_as(&self, key: &str, value: &str, by: &str, os_user: Option<&str>, at: DateTime<Utc>) -> Result<()> {
        let _write = self.writes.lock().await;
        let mut tx = self.begin_write().await?;
        sqlx::query("INSERT INTO settings (key, value, set_by, at, os_user) VALUES ($1, $2, $3, $4, $5) ON CONFLICT(key) DO UPDATE SET value = excluded.value, set_by = excluded.set_by, at = excluded.at, os_user = excluded.os_user")
            .bind(key)
            .bind(value)
            .bind(self.redactor.redact(by))
            .bind(ts(at))
            .bind(os_user)
            .execute(&mut *tx)
            .await?;
        let rowid: i64 = sqlx::query("SELECT rowid FROM settings WHERE key = $1").bind(key).fetch_one(&mut *tx).await?.get(0);
        chain::append(&mut tx, chain::SETTINGS, &[(chain::Kind::Setting, rowid)]).await?;
        tx.commit().await?;
        Ok(())
    }

    async fn setting(&self, key: &str) -> Result<Option<(String, String, String)>> {
        let row = sqlx::query("SELECT value, set_by, at FROM settings WHERE key = $1").bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
    }
}

/// The key of one target's pause switch (`stats` reads them back by this prefix).
fn pause_key(target: &str) -> String {
    format!("paused:{target}")
}
