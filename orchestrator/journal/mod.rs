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
pub mod backend;
pub mod chain;
pub mod claims;
pub mod commands;
pub mod effects;
pub mod incidents;
pub mod leader;
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
pub use settings::SettingsStore;
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
use sqlx::{Any, AnyPool, Row, Transaction};
use std::ffi::OsStr;
use std::path::Path;
use std::time::Duration;

pub use backend::{Backend, Db, DbError};

#[derive(Debug, thiserror::Error)]
pub enum JournalError {
    #[error("no journal at {0} (start an incident first, or pass --db)")]
    Missing(String),
    #[error("{0}")]
    BadDb(#[from] DbError),
    #[error("cannot open journal {location}: {source}")]
    Open { location: String, source: sqlx::Error },
    #[error("journal migration failed: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    /// Another writer holds the lock past the busy timeout: retrying can help.
    #[error("journal is locked by another writer (busy for longer than the busy timeout)")]
    Busy,
    /// The database cannot be reached (PostgreSQL down, restarting, or cut off):
    /// retrying can help.
    #[error("journal database unavailable: {0}")]
    Unavailable(String),
    /// This instance is not (or no longer) the leader of the instances sharing the
    /// journal: the write was refused, and nothing of it was written.
    #[error("not the leader (term {0} is no longer current): the write was refused")]
    NotLeader(i64),
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
        matches!(self, JournalError::Busy | JournalError::Unavailable(_))
    }
}

impl From<sqlx::Error> for JournalError {
    fn from(e: sqlx::Error) -> Self {
        let busy = match &e {
            sqlx::Error::Database(db) => {
                let msg = db.message();
                // 522 is SQLITE_IOERR_SHORT_READ: another process (a `sqlite3` shell that
                // just exited) changed the WAL under a read; read again and it is whole.
                // 40001/40P01: PostgreSQL's serialization failure and deadlock.
                msg.contains("database is locked")
                    || msg.contains("database is busy")
                    || matches!(db.code().as_deref(), Some("5" | "522" | "40001" | "40P01"))
            }
            _ => false,
        };
        if busy {
            JournalError::Busy
        } else if backend::unavailable(&e) {
            // The text of an I/O or protocol error names no secret; masked anyway.
            JournalError::Unavailable(crate::redact::mask_urls(&e.to_string()))
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

/// The journal: a SQLite file in WAL mode, or a PostgreSQL database, shared by every
/// process that drives or reads incidents. Its methods are the store traits' (see the
/// module doc); the two backends run the same queries ([`backend`]).
#[derive(Clone)]
pub struct Journal {
    pool: AnyPool,
    backend: Backend,
    /// What `--db` named, for messages (a PostgreSQL URL's password masked).
    location: std::sync::Arc<str>,
    /// Every write of this process goes through this FIFO lock. SQLite admits one
    /// writer at a time and makes the others poll with growing sleeps; without a queue
    /// of our own, an incident's writes lose every race against a storm of webhook
    /// writes and the failover stalls behind the alerts it triggered.
    writes: std::sync::Arc<tokio::sync::Mutex<()>>,
    /// Set for a journal that drives incidents (see [`Journal::owned_by`]): transitions
    /// and effect intents are then written only while this process owns the incident.
    owner: Option<std::sync::Arc<str>>,
    /// Set for a journal shared by several instances ([`Journal::fenced_by`]):
    /// transitions and effect intents are then written only while this instance's
    /// leadership term is the current one, checked in the same transaction.
    term: Option<std::sync::Arc<leader::Term>>,
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
        let open_err = |e| JournalError::Open { location: path.display().to_string(), source: sqlx::Error::Io(e) };
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
fn spawn_checkpointer(pool: AnyPool) {
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
    /// Opens (creating if needed) and migrates the journal `db` names: a SQLite path, or
    /// a `sqlite://` or `postgres://` URL (see [`Db::parse`]).
    pub async fn open(db: impl AsRef<OsStr>) -> Result<Journal> {
        Self::open_with(db, true, BUSY_TIMEOUT).await
    }

    /// Opens an existing journal; a missing file (or a PostgreSQL database without a
    /// journal) is an error, not a new empty journal (so a typo in `--db` does not look
    /// like "no incidents").
    pub async fn open_existing(db: impl AsRef<OsStr>) -> Result<Journal> {
        Self::open_with(db, false, BUSY_TIMEOUT).await
    }

    pub async fn open_with(db: impl AsRef<OsStr>, create: bool, busy_timeout: Duration) -> Result<Journal> {
        Self::connect(&Db::parse(db.as_ref())?, create, busy_timeout).await
    }

    /// Opens the journal on `db`. `busy_timeout` is how long a SQLite writer waits for
    /// another's lock (PostgreSQL writers queue on a lock of their own, see [`backend`]).
    pub async fn connect(db: &Db, create: bool, busy_timeout: Duration) -> Result<Journal> {
        let pool = match db {
            Db::Sqlite(path) => {
                if !create && !path.exists() {
                    return Err(JournalError::Missing(path.display().to_string()));
                }
                let pool = backend::open_sqlite(path, create, busy_timeout).await?;
                spawn_checkpointer(pool.clone());
                pool
            }
            Db::Postgres(url) => backend::open_postgres(url, create).await?,
        };
        Ok(Journal {
            pool,
            backend: db.backend(),
            location: db.display().into(),
            writes: Default::default(),
            owner: None,
            term: None,
            redactor: Default::default(),
        })
    }

    /// What `--db` named (a URL's password masked).
    pub fn location(&self) -> &str {
        &self.location
    }

    pub fn backend(&self) -> Backend {
        self.backend
    }

    /// The same journal, fencing transitions and effect intents on `owner` holding the
    /// incident's claim. The executor uses this; reads and alerts are not fenced.
    pub fn owned_by(&self, owner: &str) -> Journal {
        Journal { owner: Some(owner.into()), ..self.clone() }
    }

    /// The same journal, fencing transitions, effect intents and claims on `term` being
    /// the current leadership of the instances sharing the journal.
    pub fn fenced_by(&self, term: std::sync::Arc<leader::Term>) -> Journal {
        Journal { term: Some(term), ..self.clone() }
    }

    pub fn term(&self) -> Option<&std::sync::Arc<leader::Term>> {
        self.term.as_ref()
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

    /// Begins a write transaction: on SQLite `BEGIN IMMEDIATE` (the write lock first,
    /// so what is read cannot change before the write), on PostgreSQL a transaction
    /// that first takes the journal's write lock ([`backend::PG_WRITE_LOCK`]).
    async fn begin_write(&self) -> Result<Transaction<'static, Any>> {
        match self.backend {
            Backend::Sqlite => Ok(self.pool.begin_with("BEGIN IMMEDIATE").await?),
            Backend::Postgres => {
                let mut tx = self.pool.begin().await?;
                sqlx::query("SELECT 1 FROM (SELECT pg_advisory_xact_lock($1)) AS l").bind(backend::PG_WRITE_LOCK).execute(&mut *tx).await?;
                Ok(tx)
            }
        }
    }

    /// Inside a write transaction: fails unless this journal's owner holds `id`, and
    /// (for a journal fenced by a term) unless that term is still the current one.
    async fn fence(&self, tx: &mut sqlx::AnyConnection, id: &str) -> Result<()> {
        if let Some(term) = &self.term {
            leader::check_in(tx, term).await?;
        }
        let Some(me) = &self.owner else { return Ok(()) };
        let owner: Option<Option<String>> =
            sqlx::query("SELECT owner FROM incidents WHERE id = $1").bind(id).fetch_optional(&mut *tx).await?.map(|r| r.get(0));
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

    pub fn pool(&self) -> &AnyPool {
        &self.pool
    }

    pub async fn close(&self) {
        self.pool.close().await;
    }
}
