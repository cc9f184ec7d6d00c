//! The journal: incidents, transitions, checks, effects, commands, alerts, topology,
//! settings. Everything the orchestrator decides is written here before it acts, so an
//! incident can be resumed from the journal alone and audited afterwards.
//!
//! The interface is one narrow trait per concern ([`IncidentStore`], [`ClaimStore`],
//! [`EffectStore`], [`CommandStore`], [`AlertStore`], [`TopologyStore`],
//! [`SettingsStore`]; all of them together: [`Store`]), each with what a backend must
//! guarantee in its doc comment. [`Journal`] is the SQLite backend (sqlx, WAL); each
//! trait's implementation for it lives next to the trait. Callers bring the traits into
//! scope with `use crate::journal::prelude::*;`.

pub mod alerts;
pub mod chain;
pub mod claims;
pub mod commands;
pub mod effects;
pub mod incidents;
pub mod page;
mod records;
mod report;
pub mod settings;
pub mod topology;
pub mod verify;

pub use alerts::AlertStore;
pub use claims::ClaimStore;
pub use commands::CommandStore;
pub use effects::EffectStore;
pub use incidents::IncidentStore;
pub use page::{BrowseStore, IncidentFilter};
pub use records::*;
pub use report::{PeriodIncident, ReportStore};
pub use settings::{Pause, SettingsStore, WINDOW_EXPIRED};
pub use topology::TopologyStore;

/// The whole journal interface: every concern's store. Implemented for every type that
/// implements all of them; the executor, the daemon and the CLI need all of them.
pub trait Store:
    IncidentStore + ClaimStore + EffectStore + CommandStore + AlertStore + TopologyStore + SettingsStore + BrowseStore + ReportStore
{
}

impl<T> Store for T where
    T: IncidentStore + ClaimStore + EffectStore + CommandStore + AlertStore + TopologyStore + SettingsStore + BrowseStore + ReportStore
{
}

/// The journal's traits, for calling its methods: `use crate::journal::prelude::*;`.
pub mod prelude {
    pub use super::{
        AlertStore, BrowseStore, ClaimStore, CommandStore, EffectStore, IncidentStore, ReportStore, SettingsStore, Store, TopologyStore,
    };
}

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

/// The SQLite journal: one database file in WAL mode, shared by every process that
/// drives or reads incidents. Its methods are the store traits' (see the module doc).
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
}

impl Journal {}
