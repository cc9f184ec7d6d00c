//! The journal's command concern: a person's approve, reject or abort, recorded when
//! given and marked applied once the executor has fed it to the machine.

use super::{chain, ts, CommandKind, CommandRow, IncidentStore, Journal, Result};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use sqlx::Row;

/// Commands from people, for the executor to apply.
///
/// A backend must guarantee:
/// - A command is recorded only for an existing incident (`UnknownIncident` otherwise),
///   with its ledger entry in the incident's chain, in the same transaction.
/// - Commands read back in the order they were given (ascending id).
/// - A command's application is written once: [`command_applied`](CommandStore::command_applied)
///   on an applied command changes nothing (the application is history, with its own
///   ledger entry). The application that goes with a decision is written by
///   [`IncidentStore::record_command_decision`], in the decision's transaction.
/// - `actor`, `comment` and `result` pass through the journal's redactor.
#[async_trait]
pub trait CommandStore: Send + Sync {
    /// Records a person's command (approve, reject, abort) for the executor to apply.
    async fn add_command(
        &self,
        incident: &str,
        kind: CommandKind,
        actor: &str,
        comment: &str,
        via: &str,
        at: DateTime<Utc>,
    ) -> Result<i64> {
        self.add_command_as(incident, kind, actor, comment, via, None, at).await
    }

    /// [`CommandStore::add_command`] with the OS user who gave it (the CLI's).
    #[allow(clippy::too_many_arguments)]
    async fn add_command_as(
        &self,
        incident: &str,
        kind: CommandKind,
        actor: &str,
        comment: &str,
        via: &str,
        os_user: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<i64>;

    /// An incident's commands not applied yet, oldest first.
    async fn pending_commands(&self, incident: &str) -> Result<Vec<CommandRow>>;

    /// All of an incident's commands, oldest first.
    async fn commands(&self, incident: &str) -> Result<Vec<CommandRow>>;

    /// Marks a command applied, once (a command's application is history).
    async fn command_applied(&self, id: i64, accepted: bool, result: &str, at: DateTime<Utc>) -> Result<()>;

    /// The command with this id, if any.
    async fn command(&self, id: i64) -> Result<Option<CommandRow>>;
}

#[async_trait]
impl CommandStore for Journal {
    async fn add_command_as(
        &self,
        incident: &str,
        kind: CommandKind,
        actor: &str,
        comment: &str,
        via: &str,
        os_user: Option<&str>,
        at: DateTime<Utc>,
    ) -> Result<i64> {
        let _write = self.writes.lock().await;
        self.incident(incident).await?;
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO commands (incident_id, kind, actor, comment, via, at, os_user) VALUES ($1, $2, $3, $4, $5, $6, $7) RETURNING id",
        )
        .bind(incident)
        .bind(kind.as_str())
        .bind(self.redactor.redact(actor))
        .bind(self.redactor.redact(comment))
        .bind(via)
        .bind(ts(at))
        .bind(os_user)
        .fetch_one(&mut *tx)
        .await?;
        let id: i64 = row.get(0);
        chain::append(&mut tx, incident, &[(chain::Kind::Command, id)]).await?;
        tx.commit().await?;
        Ok(id)
    }

    async fn pending_commands(&self, incident: &str) -> Result<Vec<CommandRow>> {
        let rows = sqlx::query("SELECT id, kind, actor, comment, via, at, accepted, result, os_user FROM commands WHERE incident_id = $1 AND applied_at IS NULL ORDER BY id")
            .bind(incident)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(CommandRow::from_row).collect()
    }

    async fn commands(&self, incident: &str) -> Result<Vec<CommandRow>> {
        let rows = sqlx::query(
            "SELECT id, kind, actor, comment, via, at, accepted, result, os_user FROM commands WHERE incident_id = $1 ORDER BY id",
        )
        .bind(incident)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(CommandRow::from_row).collect()
    }

    async fn command_applied(&self, id: i64, accepted: bool, result: &str, at: DateTime<Utc>) -> Result<()> {
        let _write = self.writes.lock().await;
        let mut tx = self.begin_write().await?;
        let updated = sqlx::query(
            "UPDATE commands SET applied_at = $1, accepted = $2, result = $3 WHERE id = $4 AND applied_at IS NULL RETURNING incident_id",
        )
        .bind(ts(at))
        .bind(accepted as i64)
        .bind(self.redactor.redact(result))
        .bind(id)
        .fetch_optional(&mut *tx)
        .await?;
        if let Some(r) = updated {
            let incident: String = r.get(0);
            chain::append(&mut tx, &incident, &[(chain::Kind::Applied, id)]).await?;
        }
        tx.commit().await?;
        Ok(())
    }

    async fn command(&self, id: i64) -> Result<Option<CommandRow>> {
        let row = sqlx::query("SELECT id, kind, actor, comment, via, at, accepted, result, os_user FROM commands WHERE id = $1")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(CommandRow::from_row).transpose()
    }
}
