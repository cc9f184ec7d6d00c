//! The SQLite journal (sqlx, WAL): incidents, transitions, checks, effects, commands,
//! alerts. Everything the orchestrator decides is written here before it acts, so an
//! incident can be resumed from the journal alone and audited afterwards.

pub mod chain;
mod page;
mod records;
mod report;
pub mod topology;
pub mod verify;

pub use page::IncidentFilter;
pub use records::*;
pub use report::PeriodIncident;

use crate::machine::{Decision, Event, Machine};
use chrono::{DateTime, SecondsFormat, Utc};
use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqlitePool, SqlitePoolOptions, SqliteSynchronous};
use sqlx::Row;
use std::path::{Path, PathBuf};
use std::time::Duration;

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("no journal at {0} (start an incident first, or pass --db)")]
    Missing(PathBuf),
    #[error("cannot open journal {path}: {source}")]
    Open { path: PathBuf, source: sqlx::Error },
    #[error("journal migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another writer holds the lock past the busy timeout: retrying can help.
    #[error("journal is locked by another writer (busy for longer than the busy timeout)")]
    Busy,
    #[error("no incident with id {0:?}")]
    UnknownIncident(String),
    /// The database refused a second open incident for the same target.
    #[error("an incident is already open for {0}; `orchestrator incidents` shows it, `orchestrator resume ID` continues it")]
    AlreadyOpen(String),
    /// Another process drives the incident (its lease is valid): do not drive it too.
    #[error("incident {id} is being driven by {owner} (lease until {until}); wait for it, or stop that process")]
    HeldBy { id: String, owner: String, until: String },
    /// This process's claim on the incident was taken over (e.g. it was frozen longer
    /// than its lease): it must stop driving at once.
    #[error("lost the claim on incident {0} to another process; stopping")]
    LeaseLost(String),
    #[error("journal record is corrupt: {0}")]
    Corrupt(String),
    #[error("journal error: {0}")]
    Db(sqlx::Error),
}

impl JournalError {
    /// Whether trying again later can succeed.
    pub fn is_retryable(&self) -> bool {
        matches!(self, JournalError::Busy)
    }
}

impl From<sqlx::Error> for JournalError {
    fn from(e: sqlx::Error) -> Self {
        let busy = match &e {
            sqlx::Error::Database(db) => {
                let msg = db.message();
                // 522 is SQLITE_IOERR_SHORT_READ: another process (a `sqlite3` shell that
                // just exited) changed the WAL under a read; read again and it is whole.
                msg.contains("database is locked") || msg.contains("database is busy") || matches!(db.code().as_deref(), Some("5" | "522"))
            }
            _ => false,
        };
        if busy {
            JournalError::Busy
        } else {
            JournalError::Db(e)
        }
    }
}

pub type Result<T> = std::result::Result<T, JournalError>;

/// Time as the journal stores it.
pub fn ts(t: DateTime<Utc>) -> String {
    t.to_rfc3339_opts(SecondsFormat::Millis, true)
}

pub fn parse_ts(s: &str) -> Option<DateTime<Utc>> {
    DateTime::parse_from_rfc3339(s).ok().map(|t| t.with_timezone(&Utc))
}

#[derive(Clone)]
pub struct Journal {
    pool: SqlitePool,
    path: PathBuf,
    /// Every write of this process goes through this FIFO lock. SQLite admits one
    /// writer at a time and makes the others poll with growing sleeps; without a queue
    /// of our own, an incident's writes lose every race against a storm of webhook
    /// writes and the failover stalls behind the alerts it triggered.
    writes: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Set for a journal that drives incidents (see [`Journal::owned_by`]): transitions
    /// and effect intents are then written only while this process owns the incident.
    owner: Option<std::sync::Arc<str>>,
    /// Every text column written goes through it: the journal is output too, and the
    /// last place a secret echoed by the outside world can be stopped.
    redactor: std::sync::Arc<crate::redact::Redactor>,
}

/// How long a claim on an incident lasts without renewal.
pub const LEASE: Duration = Duration::from_secs(30);

/// This process, as it appears in `incidents.owner`: `host:pidns:pid:nonce`. The PID
/// namespace makes "that pid is gone" meaningful only where it is (two containers
/// may share a hostname); the nonce tells a recycled pid from the original.
pub fn process_owner() -> String {
    static OWNER: std::sync::OnceLock<String> = std::sync::OnceLock::new();
    OWNER
        .get_or_init(|| {
            let mut buf = [0u8; 256];
            // SAFETY: gethostname writes at most buf.len() bytes into buf.
            let host = if unsafe { libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) } == 0 {
                let end = buf.iter().position(|b| *b == 0).unwrap_or(buf.len());
                String::from_utf8_lossy(&buf[..end]).to_string()
            } else {
                "localhost".to_string()
            };
            format!("{host}:{}:{}:{:08x}", pid_namespace(), std::process::id(), rand::random::<u32>())
        })
        .clone()
}

fn pid_namespace() -> String {
    std::fs::read_link("/proc/self/ns/pid")
        .map(|p| p.to_string_lossy().trim_start_matches("pid:[").trim_end_matches(']').to_string())
        .unwrap_or_else(|_| "?".into())
}

/// Whether `owner` is a process in this host's PID namespace that no longer exists.
fn owner_is_dead_here(owner: &str) -> bool {
    let me = process_owner();
    let theirs: Vec<&str> = owner.rsplitn(4, ':').collect(); // nonce, pid, pidns, host
    let mine: Vec<&str> = me.rsplitn(4, ':').collect();
    if theirs.len() != 4 || mine.len() != 4 || theirs[3] != mine[3] || theirs[2] != mine[2] || theirs[2] == "?" {
        return false;
    }
    let Ok(pid) = theirs[1].parse::<i32>() else { return false };
    // SAFETY: kill with signal 0 only checks whether the process exists.
    let gone = unsafe { libc::kill(pid, 0) } != 0;
    gone && std::io::Error::last_os_error().raw_os_error() == Some(libc::ESRCH)
}

/// An exclusive flock(2) on the journal file while it is opened and migrated; released
/// on drop (closing the descriptor).
struct MigrationLock {
    _file: std::fs::File,
}

impl MigrationLock {
    async fn acquire(path: &Path, create: bool, limit: Duration) -> Result<MigrationLock> {
        use std::os::fd::AsRawFd;
        let open_err = |e| JournalError::Open { path: path.to_path_buf(), source: sqlx::Error::Io(e) };
        // An empty file is a valid empty SQLite database.
        let file = std::fs::OpenOptions::new().read(true).write(create).create(create).truncate(false).open(path).map_err(open_err)?;
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            // SAFETY: flock on a descriptor we own.
            if unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) } == 0 {
                return Ok(MigrationLock { _file: file });
            }
            let err = std::io::Error::last_os_error();
            if err.raw_os_error() != Some(libc::EWOULDBLOCK) {
                return Err(open_err(err));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(JournalError::Busy);
            }
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
    }
}

/// How often the background task folds the WAL back into the database file.
pub const CHECKPOINT_EVERY: Duration = Duration::from_millis(500);

/// Checkpoints the WAL (PASSIVE: never blocks a writer or waits for a reader) every
/// [`CHECKPOINT_EVERY`] until the pool closes. SQLite's own automatic checkpoint stays
/// on (only a checkpoint run between a writer's transactions can restart the WAL, so
/// without it the WAL grows without bound under continuous writes), but finds little
/// left to copy: a commit that crosses the threshold during an alert storm no longer
/// pays for megabytes of pages.
fn spawn_checkpointer(pool: SqlitePool) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else { return };
    rt.spawn(async move {
        loop {
            tokio::time::sleep(CHECKPOINT_EVERY).await;
            if pool.is_closed() {
                return;
            }
            if let Err(e) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)").execute(&pool).await {
                tracing::debug!(error = %e, "WAL checkpoint skipped");
            }
        }
    });
}

/// How long a writer waits for another writer's lock before giving up with `Busy`.
pub const BUSY_TIMEOUT: Duration = Duration::from_secs(5);

impl Journal {
    /// Opens (creating if needed) and migrates the journal.
    pub async fn open(path: &Path) -> Result<Journal> {
        Self::open_with(path, true, BUSY_TIMEOUT).await
    }

    /// Opens an existing journal; a missing file is an error, not a new empty journal
    /// (so a typo in `--db` does not look like "no incidents").
    pub async fn open_existing(path: &Path) -> Result<Journal> {
        if !path.exists() {
            return Err(JournalError::Missing(path.to_path_buf()));
        }
        Self::open_with(path, false, BUSY_TIMEOUT).await
    }

    pub async fn open_with(path: &Path, create: bool, busy_timeout: Duration) -> Result<Journal> {
        if create {
            if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
                std::fs::create_dir_all(dir).map_err(|e| JournalError::Open { path: path.to_path_buf(), source: sqlx::Error::Io(e) })?;
            }
        }
        // Two processes opening a journal that does not exist yet would both apply the
        // first migration ("table incidents already exists"): sqlx's migration lock is
        // a no-op on SQLite. An flock(2) on the database file serialises them; SQLite's
        // own locks are fcntl(2) locks, which flock does not interfere with on Linux.
        let _migration_lock = MigrationLock::acquire(path, create, busy_timeout).await?;
        let opts = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(create)
            .journal_mode(SqliteJournalMode::Wal)
            // FULL: a transition that was acknowledged survives a power cut, not only a crash.
            .synchronous(SqliteSynchronous::Full)
            .busy_timeout(busy_timeout)
            .foreign_keys(true);
        let pool = SqlitePoolOptions::new()
            .max_connections(4)
            .acquire_timeout(busy_timeout + Duration::from_secs(5))
            .connect_with(opts)
            .await
            .map_err(|source| JournalError::Open { path: path.to_path_buf(), source })?;
        sqlx::migrate!("./migrations").run(&pool).await?;
        spawn_checkpointer(pool.clone());
        Ok(Journal { pool, path: path.to_path_buf(), writes: Default::default(), owner: None, redactor: Default::default() })
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The same journal, fencing transitions and effect intents on `owner` holding the
    /// incident's claim. The executor uses this; reads and alerts are not fenced.
    pub fn owned_by(&self, owner: &str) -> Journal {
        Journal { owner: Some(owner.into()), ..self.clone() }
    }

    /// The same journal, redacting with `r` (a playbook's secrets) as well as masking
    /// every URL's password.
    pub fn with_redactor(&self, r: std::sync::Arc<crate::redact::Redactor>) -> Journal {
        Journal { redactor: r, ..self.clone() }
    }

    pub fn redactor(&self) -> &crate::redact::Redactor {
        &self.redactor
    }

    pub fn without_owner(self) -> Journal {
        Journal { owner: None, ..self }
    }

    pub fn owner(&self) -> Option<&str> {
        self.owner.as_deref()
    }

    /// Claims (or renews the claim on) an incident for this journal's owner. Succeeds
    /// when nobody holds it, we hold it, the lease lapsed, or the holder is a dead
    /// process on this host.
    pub async fn claim(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let Some(me) = self.owner.clone() else { return Ok(()) };
        let _write = self.writes.lock().await;
        let until = ts(now + chrono::Duration::from_std(LEASE).unwrap_or_default());
        let claimed = sqlx::query(
            "UPDATE incidents SET owner = ?1, lease_until = ?2 WHERE id = ?3 AND (owner IS NULL OR owner = ?1 OR lease_until < ?4)",
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
        let row = sqlx::query("SELECT owner, lease_until FROM incidents WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| JournalError::UnknownIncident(id.to_string()))?;
        let (owner, lease): (Option<String>, Option<String>) = (row.get(0), row.get(1));
        let owner = owner.unwrap_or_default();
        if owner_is_dead_here(&owner) {
            // Compare-and-swap: only if the dead owner still holds it.
            let taken = sqlx::query("UPDATE incidents SET owner = ?1, lease_until = ?2 WHERE id = ?3 AND owner = ?4")
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

    /// Extends this owner's lease; never takes a claim that is not already ours (a
    /// renewal that lands after a release must not re-claim). `LeaseLost` when the
    /// incident is no longer ours.
    pub async fn renew(&self, id: &str, now: DateTime<Utc>) -> Result<()> {
        let Some(me) = self.owner.clone() else { return Ok(()) };
        let _write = self.writes.lock().await;
        let until = ts(now + chrono::Duration::from_std(LEASE).unwrap_or_default());
        let renewed = sqlx::query("UPDATE incidents SET lease_until = ? WHERE id = ? AND owner = ?")
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

    /// Gives the claim up (at a gate, at the end, at shutdown).
    pub async fn release(&self, id: &str) -> Result<()> {
        let Some(me) = self.owner.clone() else { return Ok(()) };
        let _write = self.writes.lock().await;
        sqlx::query("UPDATE incidents SET owner = NULL, lease_until = NULL WHERE id = ? AND owner = ?")
            .bind(id)
            .bind(&*me)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    /// Inside a write transaction: fails unless this journal's owner holds `id`.
    async fn fence(&self, tx: &mut sqlx::SqliteConnection, id: &str) -> Result<()> {
        let Some(me) = &self.owner else { return Ok(()) };
        let owner: Option<Option<String>> =
            sqlx::query("SELECT owner FROM incidents WHERE id = ?").bind(id).fetch_optional(&mut *tx).await?.map(|r| r.get(0));
        match owner {
            None => Err(JournalError::UnknownIncident(id.to_string())),
            Some(Some(o)) if *o == **me => Ok(()),
            Some(_) => Err(JournalError::LeaseLost(id.to_string())),
        }
    }

    fn redacted_json(&self, v: &serde_json::Value) -> String {
        let mut v = v.clone();
        self.redactor.redact_json(&mut v);
        v.to_string()
    }

    pub fn pool(&self) -> &SqlitePool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }

    /// Opens an incident in Detect and journals its trigger as the first transition.
    pub async fn create_incident(&self, new: &NewIncident, machine: &Machine, at: DateTime<Utc>) -> Result<String> {
        let _write = self.writes.lock().await;
        let id = format!("inc-{}-{:04x}", at.format("%Y%m%dT%H%M%S"), rand::random::<u16>());
        // Claimed from its first instant (when this journal has an owner): no other
        // process can adopt it between its creation and its trigger.
        let lease = self.owner.as_ref().map(|_| ts(at + chrono::Duration::from_std(LEASE).unwrap_or_default()));
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let inserted = sqlx::query(
            "INSERT INTO incidents (id, playbook_name, playbook_path, playbook_hash, target, state, machine, opened_at, trigger_source, trigger_detail, owner, lease_until, os_user, approver_os_users)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&mut *tx)
        .await
        .map_err(|e| match &e {
            sqlx::Error::Database(db) if db.message().contains("incidents.target") => JournalError::AlreadyOpen(new.target.clone()),
            _ => JournalError::from(e),
        })?;
        chain::append(&mut tx, &id, &[(chain::Kind::Open, inserted.last_insert_rowid())]).await?;
        tx.commit().await?;
        Ok(id)
    }

    /// Journals one decision of the machine (accepted or rejected) with the machine
    /// state after it, the checks it judged, and the incident's current state, in one
    /// transaction: either all of it is recorded or none.
    pub async fn record_decision(
        &self,
        incident: &str,
        event: &Event,
        decision: &Decision,
        machine: &Machine,
        at: DateTime<Utc>,
    ) -> Result<i64> {
        self.record(incident, event, decision, machine, at, None, None).await
    }

    /// [`Journal::record_decision`] that also moves the incident's target's topology in
    /// the same transaction (an incident that ends recovered, held, or escalated after
    /// its switch).
    pub async fn record_decision_moving(
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

    /// [`Journal::record_decision`] for a person's command, marking the command applied
    /// in the same transaction: a crash can never leave an approval that opened the
    /// gate looking unapplied (and then be re-fed and recorded as refused).
    pub async fn record_command_decision(
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
        // IMMEDIATE: take the write lock before reading, so the fence and the sequence
        // number cannot change under us.
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        self.fence(&mut tx, incident).await?;
        let seq: i64 = sqlx::query("SELECT COALESCE(MAX(seq), 0) + 1 FROM transitions WHERE incident_id = ?")
            .bind(incident)
            .fetch_one(&mut *tx)
            .await?
            .get(0);
        let when = ts(at);
        let mut observations = serde_json::to_value(event).map_err(|e| JournalError::Corrupt(e.to_string()))?;
        self.redactor.redact_json(&mut observations);
        let observations = observations.to_string();
        let r = &self.redactor;
        let inserted = sqlx::query(
            "INSERT INTO transitions (incident_id, seq, at, from_state, to_state, event, observations, note, rejected, actor, machine)
             VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
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
        .execute(&mut *tx)
        .await?;
        let transition = inserted.last_insert_rowid();
        let mut entries = Vec::new();
        let (mut first_check, mut last_check) = (i64::MAX, i64::MIN);
        if let Some((phase, checks)) = checks_of(event) {
            for c in checks {
                let check = sqlx::query(
                    "INSERT INTO checks (incident_id, transition_seq, at, phase, item, holds, observed) VALUES (?, ?, ?, ?, ?, ?, ?)",
                )
                .bind(incident)
                .bind(seq)
                .bind(&when)
                .bind(phase)
                .bind(&c.item)
                .bind(c.holds)
                .bind(r.redact(&c.observed))
                .execute(&mut *tx)
                .await?;
                first_check = first_check.min(check.last_insert_rowid());
                last_check = last_check.max(check.last_insert_rowid());
            }
        }
        // One writer (IMMEDIATE): this transaction's checks are first..=last, entered
        // with one query rather than one per check.
        let mut ranges = vec![(chain::Kind::Transition, transition, transition)];
        if first_check <= last_check {
            ranges.push((chain::Kind::Check, first_check, last_check));
        }
        if decision.rejected.is_none() {
            let outcome = decision.to.outcome().map(|o| o.as_str());
            let was_open: Option<(i64, bool)> = sqlx::query("SELECT rowid, closed_at IS NULL FROM incidents WHERE id = ?")
                .bind(incident)
                .fetch_optional(&mut *tx)
                .await?
                .map(|r| (r.get(0), r.get(1)));
            // Closed once: the close is history (chained), and is never rewritten.
            let updated = sqlx::query(
                "UPDATE incidents SET state = ?, machine = ?, outcome = COALESCE(outcome, ?), closed_at = COALESCE(closed_at, CASE WHEN ? IS NULL THEN NULL ELSE ? END) WHERE id = ?",
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
                        sqlx::query("SELECT target, playbook_name FROM incidents WHERE id = ?").bind(incident).fetch_one(&mut *tx).await?;
                    let (target, playbook_name): (String, String) = (row.get(0), row.get(1));
                    let target = if target.contains(':') { playbook_name } else { target };
                    topology::apply(&mut tx, &self.redactor, &target, change, at).await?;
                }
            }
        }
        if let Some((id, accepted, result)) = command {
            let applied = sqlx::query("UPDATE commands SET applied_at = ?, accepted = ?, result = ? WHERE id = ? AND applied_at IS NULL")
                .bind(&when)
                .bind(accepted)
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

    pub async fn incident(&self, id: &str) -> Result<IncidentRow> {
        let row = sqlx::query(INCIDENT_COLUMNS_WHERE_ID)
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| JournalError::UnknownIncident(id.to_string()))?;
        IncidentRow::from_row(&row)
    }

    /// The hash of a chain's last entry (an incident id, `alerts` or `settings`): what
    /// a copy kept elsewhere compares against.
    pub async fn head(&self, chain_name: &str) -> Result<Option<String>> {
        let mut conn = self.pool.acquire().await?;
        let (pos, hash) = chain::head(&mut conn, chain_name).await?;
        Ok((pos > 0).then_some(hash))
    }

    /// Re-computes every chain (or one incident's): see [`verify::verify`].
    pub async fn verify(&self, only: Option<&str>) -> Result<verify::VerifyReport> {
        verify::verify(&self.pool, only).await
    }

    /// The approver → OS user map the incident pinned (empty: none).
    pub async fn approver_os_users(&self, id: &str) -> Result<std::collections::BTreeMap<String, String>> {
        let row = sqlx::query("SELECT approver_os_users FROM incidents WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?
            .ok_or_else(|| JournalError::UnknownIncident(id.to_string()))?;
        let text: String = row.get(0);
        serde_json::from_str(&text).map_err(|e| JournalError::Corrupt(format!("approver_os_users of {id}: {e}")))
    }

    /// The machine as last journaled for an incident: what resume starts from.
    pub async fn machine(&self, id: &str) -> Result<Machine> {
        let inc = self.incident(id).await?;
        Machine::from_json(&inc.machine).map_err(|e| JournalError::Corrupt(format!("machine state of {id}: {e}")))
    }

    pub async fn incidents(&self, limit: i64) -> Result<Vec<IncidentRow>> {
        let rows = sqlx::query(INCIDENT_COLUMNS_ALL).bind(limit).fetch_all(&self.pool).await?;
        rows.iter().map(IncidentRow::from_row).collect()
    }

    pub async fn open_incidents(&self) -> Result<Vec<IncidentRow>> {
        let rows = sqlx::query(INCIDENT_COLUMNS_OPEN).fetch_all(&self.pool).await?;
        rows.iter().map(IncidentRow::from_row).collect()
    }

    /// The open incident for a target, if any: new alerts attach to it.
    pub async fn open_incident_for(&self, target: &str) -> Result<Option<IncidentRow>> {
        // Incidents journaled before targets had names carry the primary's endpoint
        // (host:port/db, never a valid name): theirs is the playbook's name.
        Ok(self.open_incidents().await?.into_iter().find(|i| i.target == target || (i.playbook_name == target && i.target.contains(':'))))
    }

    /// The last incident for a target that ended other than as a false alarm: when it
    /// closed, how, and under which playbook hash. For the cooldown (an operator's
    /// abort counts: it must not be undone by the next alert) and for "already failed
    /// over".
    pub async fn last_closed_for(&self, target: &str) -> Result<Option<(DateTime<Utc>, String, String)>> {
        let row = sqlx::query(
            "SELECT closed_at, outcome, playbook_hash FROM incidents
             WHERE (target = ?1 OR (playbook_name = ?1 AND target LIKE '%:%')) AND closed_at IS NOT NULL AND outcome != 'false_alarm'
             ORDER BY closed_at DESC LIMIT 1",
        )
        .bind(target)
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.and_then(|r| Some((parse_ts(&r.get::<String, _>(0))?, r.get(1), r.get(2)))))
    }

    pub async fn transitions(&self, id: &str) -> Result<Vec<TransitionRow>> {
        let rows = sqlx::query(
            "SELECT seq, at, from_state, to_state, event, observations, note, rejected, actor FROM transitions WHERE incident_id = ? ORDER BY seq",
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

    pub async fn checks(&self, id: &str) -> Result<Vec<CheckRow>> {
        let rows = sqlx::query("SELECT transition_seq, at, phase, item, holds, observed FROM checks WHERE incident_id = ? ORDER BY id")
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

    /// Journals an effect's intent before it runs. Returns the existing record when
    /// the key is already known: the caller then reconciles instead of re-issuing.
    pub async fn effect_intent(
        &self,
        incident: &str,
        key: &str,
        kind: &str,
        intent: &serde_json::Value,
        at: DateTime<Utc>,
    ) -> Result<Option<EffectRow>> {
        let _write = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        self.fence(&mut tx, incident).await?;
        // Under BEGIN IMMEDIATE, atomic across processes: the first intent for a key
        // wins. (Not `ON CONFLICT DO NOTHING`: the table refuses any insert that meets
        // an existing row, so that no REPLACE can rewrite one.)
        let exists = sqlx::query("SELECT 1 FROM effects WHERE key = ?").bind(key).fetch_optional(&mut *tx).await?.is_some();
        if exists {
            tx.commit().await?;
            return self.effect(key).await;
        }
        let inserted = sqlx::query("INSERT INTO effects (incident_id, key, kind, intent, intent_at) VALUES (?, ?, ?, ?, ?)")
            .bind(incident)
            .bind(key)
            .bind(kind)
            .bind(self.redacted_json(intent))
            .bind(ts(at))
            .execute(&mut *tx)
            .await?;
        chain::append(&mut tx, incident, &[(chain::Kind::Intent, inserted.last_insert_rowid())]).await?;
        tx.commit().await?;
        Ok(None)
    }

    /// Journals an effect's outcome, once: a second outcome for the same key is not
    /// written (the first one is history).
    pub async fn effect_outcome(&self, key: &str, outcome: &str, result: &serde_json::Value, at: DateTime<Utc>) -> Result<()> {
        let _write = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query("SELECT rowid, incident_id FROM effects WHERE key = ? AND outcome IS NULL")
            .bind(key)
            .fetch_optional(&mut *tx)
            .await?;
        let Some(row) = row else {
            tx.commit().await?;
            tracing::debug!(key, "effect outcome already journaled (or no intent); not rewritten");
            return Ok(());
        };
        let (rowid, incident): (i64, String) = (row.get(0), row.get(1));
        sqlx::query("UPDATE effects SET outcome = ?, result = ?, done_at = ? WHERE rowid = ?")
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

    pub async fn effect(&self, key: &str) -> Result<Option<EffectRow>> {
        let row = sqlx::query("SELECT key, kind, intent, intent_at, outcome, result, done_at FROM effects WHERE key = ?")
            .bind(key)
            .fetch_optional(&self.pool)
            .await?;
        Ok(row.as_ref().map(EffectRow::from_row))
    }

    pub async fn effects(&self, incident: &str) -> Result<Vec<EffectRow>> {
        let rows =
            sqlx::query("SELECT key, kind, intent, intent_at, outcome, result, done_at FROM effects WHERE incident_id = ? ORDER BY id")
                .bind(incident)
                .fetch_all(&self.pool)
                .await?;
        Ok(rows.iter().map(EffectRow::from_row).collect())
    }

    /// Records a person's command (approve, reject, abort) for the executor to apply.
    pub async fn add_command(
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

    /// [`Journal::add_command`] with the OS user who gave it (the CLI's).
    #[allow(clippy::too_many_arguments)]
    pub async fn add_command_as(
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
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "INSERT INTO commands (incident_id, kind, actor, comment, via, at, os_user) VALUES (?, ?, ?, ?, ?, ?, ?) RETURNING id",
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

    pub async fn pending_commands(&self, incident: &str) -> Result<Vec<CommandRow>> {
        let rows = sqlx::query("SELECT id, kind, actor, comment, via, at, accepted, result, os_user FROM commands WHERE incident_id = ? AND applied_at IS NULL ORDER BY id")
            .bind(incident)
            .fetch_all(&self.pool)
            .await?;
        rows.iter().map(CommandRow::from_row).collect()
    }

    pub async fn commands(&self, incident: &str) -> Result<Vec<CommandRow>> {
        let rows = sqlx::query(
            "SELECT id, kind, actor, comment, via, at, accepted, result, os_user FROM commands WHERE incident_id = ? ORDER BY id",
        )
        .bind(incident)
        .fetch_all(&self.pool)
        .await?;
        rows.iter().map(CommandRow::from_row).collect()
    }

    /// Marks a command applied, once (a command's application is history).
    pub async fn command_applied(&self, id: i64, accepted: bool, result: &str, at: DateTime<Utc>) -> Result<()> {
        let _write = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let updated = sqlx::query(
            "UPDATE commands SET applied_at = ?, accepted = ?, result = ? WHERE id = ? AND applied_at IS NULL RETURNING incident_id",
        )
        .bind(ts(at))
        .bind(accepted)
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

    pub async fn command(&self, id: i64) -> Result<Option<CommandRow>> {
        let row = sqlx::query("SELECT id, kind, actor, comment, via, at, accepted, result, os_user FROM commands WHERE id = ?")
            .bind(id)
            .fetch_optional(&self.pool)
            .await?;
        row.as_ref().map(CommandRow::from_row).transpose()
    }

    pub async fn record_alert(&self, alert: &NewAlert, incident: Option<&str>, disposition: &str, at: DateTime<Utc>) -> Result<i64> {
        let _write = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let row = sqlx::query(
            "INSERT INTO alerts (received_at, source, fingerprint, status, target, summary, incident_id, disposition) VALUES (?, ?, ?, ?, ?, ?, ?, ?) RETURNING id",
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

    /// Journals many alerts in one transaction and one fsync (the intake's group
    /// commit): all of them, each with its ledger entry, or none.
    pub async fn record_alerts(&self, rows: &[(NewAlert, Option<String>, &str)], at: DateTime<Utc>) -> Result<()> {
        if rows.is_empty() {
            return Ok(());
        }
        let _write = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        let when = ts(at);
        let (mut first, mut last) = (i64::MAX, i64::MIN);
        // 100 rows of 8 values a statement: well inside SQLite's variable limit.
        for chunk in rows.chunks(100) {
            let mut qb = sqlx::QueryBuilder::new(
                "INSERT INTO alerts (received_at, source, fingerprint, status, target, summary, incident_id, disposition) ",
            );
            qb.push_values(chunk, |mut b, (alert, incident, disposition)| {
                b.push_bind(when.clone())
                    .push_bind(alert.source.clone())
                    .push_bind(self.redactor.redact(&alert.fingerprint))
                    .push_bind(alert.status.clone())
                    .push_bind(alert.target.clone())
                    .push_bind(self.redactor.redact(&alert.summary))
                    .push_bind(incident.clone())
                    .push_bind(disposition.to_string());
            });
            qb.push(" RETURNING id");
            for r in qb.build().fetch_all(&mut *tx).await? {
                let id: i64 = r.get(0);
                first = first.min(id);
                last = last.max(id);
            }
        }
        // One writer (IMMEDIATE): the ids of this transaction are first..=last.
        chain::append_range(&mut tx, chain::ALERTS, chain::Kind::Alert, first, last).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn alerts(&self, incident: &str) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query(
            "SELECT received_at, target, source, fingerprint, status, summary, disposition FROM alerts WHERE incident_id = ? ORDER BY id",
        )
        .bind(incident)
        .fetch_all(&self.pool)
        .await?;
        Ok(alert_rows(&rows))
    }

    /// The newest alerts that matched no target (`incidents --unrouted`), newest last.
    pub async fn unrouted_alerts(&self, limit: i64) -> Result<Vec<AlertRow>> {
        let rows = sqlx::query(
            "SELECT * FROM (SELECT id, received_at, target, source, fingerprint, status, summary, disposition FROM alerts
             WHERE disposition = 'unrouted' ORDER BY id DESC LIMIT ?) ORDER BY id",
        )
        .bind(limit)
        .fetch_all(&self.pool)
        .await?;
        Ok(alert_rows(&rows))
    }
}

fn alert_rows(rows: &[sqlx::sqlite::SqliteRow]) -> Vec<AlertRow> {
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

impl Journal {
    pub async fn set_setting(&self, key: &str, value: &str, by: &str, at: DateTime<Utc>) -> Result<()> {
        self.set_setting_as(key, value, by, None, at).await
    }

    /// [`Journal::set_setting`] with the OS user who set it (the CLI's).
    pub async fn set_setting_as(&self, key: &str, value: &str, by: &str, os_user: Option<&str>, at: DateTime<Utc>) -> Result<()> {
        let _write = self.writes.lock().await;
        let mut tx = self.pool.begin_with("BEGIN IMMEDIATE").await?;
        sqlx::query("INSERT INTO settings (key, value, set_by, at, os_user) VALUES (?, ?, ?, ?, ?) ON CONFLICT(key) DO UPDATE SET value = excluded.value, set_by = excluded.set_by, at = excluded.at, os_user = excluded.os_user")
            .bind(key)
            .bind(value)
            .bind(self.redactor.redact(by))
            .bind(ts(at))
            .bind(os_user)
            .execute(&mut *tx)
            .await?;
        let rowid: i64 = sqlx::query("SELECT rowid FROM settings WHERE key = ?").bind(key).fetch_one(&mut *tx).await?.get(0);
        chain::append(&mut tx, chain::SETTINGS, &[(chain::Kind::Setting, rowid)]).await?;
        tx.commit().await?;
        Ok(())
    }

    pub async fn setting(&self, key: &str) -> Result<Option<(String, String, String)>> {
        let row = sqlx::query("SELECT value, set_by, at FROM settings WHERE key = ?").bind(key).fetch_optional(&self.pool).await?;
        Ok(row.map(|r| (r.get(0), r.get(1), r.get(2))))
    }

    /// Whether automatic failover is switched off for everyone (`orchestrator pause`).
    pub async fn paused(&self) -> Result<bool> {
        Ok(self.setting("paused").await?.map(|(v, _, _)| v == "1").unwrap_or(false))
    }

    /// Whether automatic failover is switched off for `target`: for everyone, or for
    /// it alone (`orchestrator pause --target T`).
    pub async fn paused_for(&self, target: &str) -> Result<bool> {
        Ok(self.paused().await? || self.setting(&pause_key(target)).await?.map(|(v, _, _)| v == "1").unwrap_or(false))
    }

    /// Pauses (or unpauses) one target, or everyone with `None`.
    pub async fn set_paused(&self, target: Option<&str>, paused: bool, by: &str, os_user: Option<&str>, at: DateTime<Utc>) -> Result<()> {
        let key = target.map(pause_key).unwrap_or_else(|| "paused".into());
        self.set_setting_as(&key, if paused { "1" } else { "0" }, by, os_user, at).await
    }

    /// The figures `/metrics` reads from the journal.
    pub async fn stats(&self) -> Result<Stats> {
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
        let steps = sqlx::query(
            "WITH moves AS (
                SELECT incident_id, from_state, to_state, julianday(at) AS t,
                       LAG(julianday(at)) OVER (PARTITION BY incident_id ORDER BY seq) AS prev
                FROM transitions WHERE rejected IS NULL AND from_state != to_state)
             SELECT from_state, COUNT(*), SUM((t - prev) * 86400.0) FROM moves WHERE prev IS NOT NULL GROUP BY from_state",
        )
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

fn pause_key(target: &str) -> String {
    format!("paused:{target}")
}

/// What `/metrics` reads from the journal at a scrape.
#[derive(Debug, Clone, Default)]
pub struct Stats {
    /// (target, outcome, incidents)
    pub outcomes: Vec<(String, String, i64)>,
    /// (target, state, open incidents)
    pub open: Vec<(String, String, i64)>,
    /// (step, times left, seconds spent)
    pub steps: Vec<(String, i64, f64)>,
    pub paused: bool,
    pub paused_targets: Vec<String>,
    pub topologies: Vec<crate::topology::Topology>,
}

const INCIDENT_COLUMNS_WHERE_ID: &str = "SELECT id, playbook_name, playbook_path, playbook_hash, target, state, machine, outcome, opened_at, closed_at, trigger_source, trigger_detail FROM incidents WHERE id = ?";
const INCIDENT_COLUMNS_ALL: &str = "SELECT id, playbook_name, playbook_path, playbook_hash, target, state, machine, outcome, opened_at, closed_at, trigger_source, trigger_detail FROM incidents ORDER BY opened_at DESC LIMIT ?";
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
