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
        self.paused_at(Utc::now()).await
    }

    /// [`SettingsStore::paused`] judged at `now`: a timed pause whose window is over is
    /// no pause, whether or not its lift has been journaled yet.
    async fn paused_at(&self, now: DateTime<Utc>) -> Result<bool> {
        Ok(self.pause(None, now).await?.is_some())
    }

    /// Whether automatic failover is switched off for `target`: for everyone, or for
    /// it alone (`orchestrator pause --target T`).
    async fn paused_for(&self, target: &str) -> Result<bool> {
        self.paused_for_at(target, Utc::now()).await
    }

    /// [`SettingsStore::paused_for`] judged at `now`.
    async fn paused_for_at(&self, target: &str, now: DateTime<Utc>) -> Result<bool> {
        Ok(self.pause(None, now).await?.is_some() || self.pause(Some(target), now).await?.is_some())
    }

    /// Pauses (or unpauses) one target, or everyone with `None`, with no expiry.
    async fn set_paused(&self, target: Option<&str>, paused: bool, by: &str, os_user: Option<&str>, at: DateTime<Utc>) -> Result<()> {
        if paused {
            self.set_pause(target, None, None, by, os_user, at).await
        } else {
            self.set_setting_as(&PauseKeys::of(target).paused, "0", by, os_user, at).await
        }
    }

    /// Pauses one target (or everyone) until `until` (`None`: until unpaused), with a
    /// reason. The expiry and reason are written before the switch itself, so a reader
    /// never sees a new pause with an old pause's expiry; each is a settings change of
    /// its own, chained like every other.
    async fn set_pause(
        &self,
        target: Option<&str>,
        until: Option<DateTime<Utc>>,
        reason: Option<&str>,
        by: &str,
        os_user: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<()> {
        let keys = PauseKeys::of(target);
        let until = until.map(super::ts).unwrap_or_default();
        // A reason is a person's free text: it may quote a URL or a token.
        let reason = crate::redact::redact(reason.unwrap_or(""));
        for (key, value) in [(&keys.until, until.as_str()), (&keys.reason, reason.as_str())] {
            // Only a change is history: a plain pause after a plain pause writes no expiry.
            let current = self.setting(key).await?.map(|(v, _, _)| v).unwrap_or_default();
            if current != value {
                self.set_setting_as(key, value, by, os_user, at).await?;
            }
        }
        self.set_setting_as(&keys.paused, "1", by, os_user, at).await
    }

    /// The pause in force at `now` for one target alone (or for everyone with `None`):
    /// switched on and, when timed, not past its expiry.
    async fn pause(&self, target: Option<&str>, now: DateTime<Utc>) -> Result<Option<Pause>> {
        Ok(self.pause_record(target).await?.filter(|p| p.until.is_none_or(|u| now < u)))
    }

    /// The pause switched on for one target (or everyone), expired or not.
    async fn pause_record(&self, target: Option<&str>) -> Result<Option<Pause>> {
        let keys = PauseKeys::of(target);
        let Some((value, by, at)) = self.setting(&keys.paused).await? else { return Ok(None) };
        if value != "1" {
            return Ok(None);
        }
        let until = self.setting(&keys.until).await?.and_then(|(v, _, _)| super::parse_ts(&v));
        let reason = self.setting(&keys.reason).await?.map(|(v, _, _)| v).filter(|v| !v.is_empty());
        Ok(Some(Pause { by, at, until, reason }))
    }

    /// Lifts a timed pause whose window is over, once: journaled as a settings change
    /// by [`WINDOW_EXPIRED`]. Returns the pause lifted, if any. Judging by the stored
    /// expiry (not by when this runs) means a window that ended while no orchestrator
    /// ran is lifted at the next look, and was already no pause before that.
    async fn lift_expired_pause(&self, target: Option<&str>, now: DateTime<Utc>) -> Result<Option<Pause>> {
        let Some(p) = self.pause_record(target).await? else { return Ok(None) };
        match p.until {
            Some(u) if u <= now => {
                self.set_setting_as(&PauseKeys::of(target).paused, "0", WINDOW_EXPIRED, None, now).await?;
                Ok(Some(p))
            }
            _ => Ok(None),
        }
    }
}

/// Who lifts a maintenance window that ran out, in the settings' history.
pub const WINDOW_EXPIRED: &str = "orchestrator (maintenance window expired)";

/// A pause as journaled: who switched it on and when, until when, and why.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Pause {
    pub by: String,
    pub at: String,
    /// A maintenance window's end (`pause --for`); `None` until unpaused.
    pub until: Option<DateTime<Utc>>,
    pub reason: Option<String>,
}

/// The keys one pause is stored under: the switch (`paused`, `paused:<target>`, as
/// before timed pauses), its expiry (`paused_until[:<target>]`, RFC 3339, empty for
/// none) and its reason (`pause_reason[:<target>]`).
struct PauseKeys {
    paused: String,
    until: String,
    reason: String,
}

impl PauseKeys {
    fn of(target: Option<&str>) -> PauseKeys {
        match target {
            Some(t) => PauseKeys { paused: pause_key(t), until: format!("paused_until:{t}"), reason: format!("pause_reason:{t}") },
            None => PauseKeys { paused: "paused".into(), until: "paused_until".into(), reason: "pause_reason".into() },
        }
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
