//! Where the journal lives and what each backend needs: the `--db` value parsed (a
//! SQLite file, or a PostgreSQL URL), each backend opened and migrated, the write
//! transaction each one needs, and their errors mapped onto [`JournalError`].
//!
//! Both backends run the same query text (sqlx's `Any` driver; `$1`-style parameters,
//! which sqlx's SQLite driver also accepts). What differs is kept here and in the few
//! [`Backend`] methods the queries call for a fragment of SQL.

use super::JournalError;
use sqlx::any::AnyPoolOptions;
use sqlx::AnyConnection;
use sqlx::{AnyPool, Connection};
use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::time::Duration;

/// The journal's database, as `--db` names it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Db {
    /// A SQLite file (a path, or `sqlite://PATH` / `sqlite:PATH`).
    Sqlite(PathBuf),
    /// A PostgreSQL database (`postgres://…` or `postgresql://…`).
    Postgres(String),
}

/// A `--db` value the program cannot use.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum DbError {
    #[error("--db {0:?}: unknown scheme {1:?}; use a file path, sqlite://PATH, or postgres://USER@HOST:PORT/DATABASE")]
    UnknownScheme(String, String),
    #[error("--db {0:?}: not a valid PostgreSQL URL ({1})")]
    BadUrl(String, String),
    #[error("--db is empty")]
    Empty,
}

impl Db {
    /// Parses a `--db` value. Anything that looks like `scheme://` must be a scheme the
    /// program knows: `--db postgres:/x` or `mysql://…` is refused rather than taken
    /// for a file name (which once created a folder named `postgres:`).
    pub fn parse(value: &OsStr) -> Result<Db, DbError> {
        let Some(s) = value.to_str() else {
            // Not UTF-8: only a path can be that.
            return Ok(Db::Sqlite(PathBuf::from(value)));
        };
        if s.is_empty() {
            return Err(DbError::Empty);
        }
        if let Some(rest) = s.strip_prefix("sqlite://").or_else(|| s.strip_prefix("sqlite:")) {
            return Ok(Db::Sqlite(PathBuf::from(rest)));
        }
        let scheme_end = s.find(':');
        let looks_like_url = scheme_end
            .is_some_and(|i| i > 0 && s[..i].chars().all(|c| c.is_ascii_alphanumeric() || "+-.".contains(c)) && s[i..].starts_with(":/"));
        if !looks_like_url {
            return Ok(Db::Sqlite(PathBuf::from(s)));
        }
        let scheme = &s[..scheme_end.unwrap_or(0)];
        match scheme.to_ascii_lowercase().as_str() {
            "postgres" | "postgresql" => {
                let url = url::Url::parse(s).map_err(|e| DbError::BadUrl(mask_db_url(s), e.to_string()))?;
                if url.host_str().is_none_or(str::is_empty) && !url.query_pairs().any(|(k, _)| k == "host") {
                    return Err(DbError::BadUrl(mask_db_url(s), "no host".into()));
                }
                Ok(Db::Postgres(s.to_string()))
            }
            _ => Err(DbError::UnknownScheme(mask_db_url(s), scheme.to_string())),
        }
    }

    /// How the journal is named in messages: a PostgreSQL URL with its password masked.
    pub fn display(&self) -> String {
        match self {
            Db::Sqlite(p) => p.display().to_string(),
            Db::Postgres(u) => mask_db_url(u),
        }
    }

    /// The password a PostgreSQL URL carries (in its user info or a `password`
    /// parameter), for the redactor: it must not reach a log line by any other path.
    pub fn password(&self) -> Option<String> {
        let Db::Postgres(u) = self else { return None };
        let url = url::Url::parse(u).ok()?;
        let decoded = |s: &str| percent_encoding::percent_decode_str(s).decode_utf8_lossy().into_owned();
        url.password().map(decoded).or_else(|| url.query_pairs().find(|(k, _)| k == "password").map(|(_, v)| v.to_string()))
    }

    pub fn backend(&self) -> Backend {
        match self {
            Db::Sqlite(_) => Backend::Sqlite,
            Db::Postgres(_) => Backend::Postgres,
        }
    }
}

/// A database URL for messages: its password (user info, or a `password` parameter)
/// replaced by `***`, whatever characters it holds. What does not parse as a URL
/// loses everything between `://` and its last `@`.
pub fn mask_db_url(s: &str) -> String {
    if let Ok(mut url) = url::Url::parse(s) {
        if url.password().is_some() {
            let _ = url.set_password(Some("***"));
        }
        if url.query_pairs().any(|(k, _)| k == "password" || k == "passfile") {
            let pairs: Vec<(String, String)> = url
                .query_pairs()
                .map(|(k, v)| {
                    let v = if k == "password" { "***".to_string() } else { v.to_string() };
                    (k.to_string(), v)
                })
                .collect();
            url.query_pairs_mut().clear().extend_pairs(pairs);
        }
        return url.to_string();
    }
    match (s.find("://"), s.rfind('@')) {
        (Some(i), Some(j)) if j > i => format!("{}://***{}", &s[..i], &s[j..]),
        (Some(i), _) => format!("{}://***", &s[..i]),
        _ => crate::redact::mask_urls(s),
    }
}

/// [`mask_db_url`] for a `--db` value as given (a path is shown as it is).
pub fn mask_db(value: &OsStr) -> String {
    match value.to_str() {
        Some(s) if s.contains("://") => mask_db_url(s),
        _ => std::path::Path::new(value).display().to_string(),
    }
}

/// Which database the journal is on.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Backend {
    Sqlite,
    Postgres,
}

impl Backend {
    /// The backend of a connection (the `Any` driver names it).
    pub fn of(conn: &AnyConnection) -> Backend {
        if conn.backend_name().eq_ignore_ascii_case("postgresql") {
            Backend::Postgres
        } else {
            Backend::Sqlite
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Backend::Sqlite => "sqlite",
            Backend::Postgres => "postgres",
        }
    }

    /// The JSON array of some columns, as text: what a ledger entry's content hashes.
    /// Each backend renders it its own way; writer and verifier use the same one.
    pub fn json_array(self, columns: &str) -> String {
        match self {
            Backend::Sqlite => format!("json_array({columns})"),
            Backend::Postgres => format!("json_build_array({columns})::text"),
        }
    }

    /// Seconds since the epoch of a stored timestamp column (text, RFC 3339), as a double.
    pub fn epoch_seconds(self, column: &str) -> String {
        match self {
            Backend::Sqlite => format!("(julianday({column}) * 86400.0)"),
            Backend::Postgres => format!("CAST(EXTRACT(EPOCH FROM CAST({column} AS TIMESTAMPTZ)) AS DOUBLE PRECISION)"),
        }
    }
}

/// The key of the transaction-scoped advisory lock every PostgreSQL write takes first:
/// writers queue on it the way SQLite's `BEGIN IMMEDIATE` queues them, so a chain's
/// head and an incident's next sequence number cannot move under a writer. (A
/// transaction-scoped lock is released by COMMIT or ROLLBACK, and by the server when
/// the connection drops: it cannot be stranded on a pooled connection.)
pub const PG_WRITE_LOCK: i64 = 0x6f72_6368_6a72_6e6c; // "orchjrnl"

/// How long a journal session may sit idle inside a transaction before the server
/// ends it (releasing its locks): a partitioned instance's half-written transaction
/// must not hold the write lock for longer than this.
pub const PG_IDLE_IN_TRANSACTION: Duration = Duration::from_secs(3);

/// How long a PostgreSQL connection attempt or a wait for a pooled connection may take
/// before the operation fails as `Unavailable` (a webhook then answers 503).
pub const PG_ACQUIRE_TIMEOUT: Duration = Duration::from_secs(2);

/// Opens a SQLite journal file: creates it if asked, takes the migration lock, sets WAL
/// and migrates with a typed connection, then opens the shared pool.
pub(super) async fn open_sqlite(path: &Path, create: bool, busy_timeout: Duration) -> Result<AnyPool, JournalError> {
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode, SqliteSynchronous};
    let open_err = |source| JournalError::Open { location: path.display().to_string(), source };
    if create {
        if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
            std::fs::create_dir_all(dir).map_err(|e| open_err(sqlx::Error::Io(e)))?;
        }
    }
    // Two processes opening a journal that does not exist yet would both apply the
    // first migration ("table incidents already exists"): sqlx's migration lock is a
    // no-op on SQLite. An flock(2) on the database file serialises them; SQLite's own
    // locks are fcntl(2) locks, which flock does not interfere with on Linux.
    let _migration_lock = super::MigrationLock::acquire(path, create, busy_timeout).await?;
    let opts = SqliteConnectOptions::new()
        .filename(path)
        .create_if_missing(create)
        .journal_mode(SqliteJournalMode::Wal)
        .synchronous(SqliteSynchronous::Full)
        .busy_timeout(busy_timeout)
        .foreign_keys(true);
    {
        let mut conn = sqlx::SqliteConnection::connect_with(&opts).await.map_err(open_err)?;
        sqlx::migrate!("./migrations").run(&mut conn).await?;
        let _ = conn.close().await;
    }
    sqlx::any::install_default_drivers();
    let url = sqlite_url(path);
    let busy_ms = busy_timeout.as_millis().min(i64::MAX as u128) as i64;
    AnyPoolOptions::new()
        .max_connections(4)
        .acquire_timeout(busy_timeout + Duration::from_secs(5))
        .after_connect(move |conn, _| {
            Box::pin(async move {
                // The typed options above do not travel through the Any driver's URL:
                // every pooled connection sets them itself. FULL: a transition that was
                // acknowledged survives a power cut, not only a crash.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "PRAGMA busy_timeout = {busy_ms}; PRAGMA synchronous = FULL; PRAGMA foreign_keys = ON"
                )))
                .execute(conn)
                .await?;
                Ok(())
            })
        })
        .connect(&url)
        .await
        .map_err(open_err)
}

/// `sqlite://` URL of a path, every byte that could be read as URL syntax escaped
/// (sqlx percent-decodes the path; `%` itself included, unlike sqlx's own rendering).
fn sqlite_url(path: &Path) -> String {
    use std::os::unix::ffi::OsStrExt;
    let mut out = String::from("sqlite://");
    for &b in path.as_os_str().as_bytes() {
        if b.is_ascii_alphanumeric() || b"/._-~".contains(&b) {
            out.push(b as char);
        } else {
            out.push_str(&format!("%{b:02X}"));
        }
    }
    out.push_str("?mode=rw");
    out
}

/// Opens a PostgreSQL journal: migrates (sqlx's migrator takes PostgreSQL's advisory
/// lock, so instances starting together apply each migration once), then opens the
/// shared pool. `create: false` refuses a database that has no journal yet.
pub(super) async fn open_postgres(url: &str, create: bool) -> Result<AnyPool, JournalError> {
    use sqlx::postgres::PgConnectOptions;
    use std::str::FromStr;
    let location = mask_db_url(url);
    let open_err = |source| JournalError::Open { location: location.clone(), source };
    let opts = PgConnectOptions::from_str(url).map_err(open_err)?.application_name("orchestrator");
    {
        let mut conn = tokio::time::timeout(PG_ACQUIRE_TIMEOUT * 2, sqlx::PgConnection::connect_with(&opts))
            .await
            .map_err(|_| open_err(sqlx::Error::PoolTimedOut))?
            .map_err(open_err)?;
        if !create {
            let exists: bool = sqlx::query_scalar(
                "SELECT EXISTS (SELECT 1 FROM information_schema.tables WHERE table_schema = current_schema() AND table_name = 'incidents')",
            )
            .fetch_one(&mut conn)
            .await
            .map_err(open_err)?;
            if !exists {
                return Err(JournalError::Missing(location));
            }
        }
        sqlx::migrate!("./migrations-pg").run(&mut conn).await?;
        let _ = conn.close().await;
    }
    sqlx::any::install_default_drivers();
    AnyPoolOptions::new()
        .max_connections(8)
        .min_connections(0)
        .acquire_timeout(PG_ACQUIRE_TIMEOUT)
        // A connection that went through a database restart is found dead before use,
        // not by the first statement of a write.
        .test_before_acquire(true)
        .after_connect(|conn, _| {
            Box::pin(async move {
                // An acknowledged intent must survive the database's crash (a new leader
                // reads it to decide whether an effect happened), whatever the server's
                // or role's default says.
                sqlx::query("SET synchronous_commit = on").execute(&mut *conn).await?;
                // A client cut off mid-transaction (a partition: no RST, no FIN) would
                // keep the journal's write lock until TCP keepalive gives up, hours
                // later, and no other instance could take over. The server ends such a
                // session instead; our write transactions are never idle for long.
                sqlx::query(sqlx::AssertSqlSafe(format!(
                    "SET idle_in_transaction_session_timeout = {}",
                    PG_IDLE_IN_TRANSACTION.as_millis()
                )))
                .execute(&mut *conn)
                .await?;
                Ok(())
            })
        })
        .connect(url)
        .await
        .map_err(open_err)
}

/// Whether an sqlx error means the database cannot be reached right now (a retry
/// can help; a webhook answers 503).
pub(super) fn unavailable(e: &sqlx::Error) -> bool {
    match e {
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed | sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::WorkerCrashed => true,
        sqlx::Error::Protocol(_) => true,
        // Class 08: connection exception; 57P01..57P03: the server is shutting down or
        // starting up; 53300: too many connections.
        sqlx::Error::Database(db) => {
            db.code().is_some_and(|c| c.starts_with("08") || matches!(c.as_ref(), "57P01" | "57P02" | "57P03" | "53300"))
        }
        _ => false,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(s: &str) -> Result<Db, DbError> {
        Db::parse(OsStr::new(s))
    }

    #[test]
    fn paths_and_sqlite_urls_are_sqlite() {
        assert_eq!(parse("journal.db"), Ok(Db::Sqlite("journal.db".into())));
        assert_eq!(parse("/var/lib/orch/j.db"), Ok(Db::Sqlite("/var/lib/orch/j.db".into())));
        assert_eq!(parse("sqlite:///var/j.db"), Ok(Db::Sqlite("/var/j.db".into())));
        assert_eq!(parse("sqlite:j.db"), Ok(Db::Sqlite("j.db".into())));
        // A colon in a file name is not a scheme.
        assert_eq!(parse("backup:2026.db"), Ok(Db::Sqlite("backup:2026.db".into())));
    }

    #[test]
    fn postgres_urls_are_postgres_and_unknown_schemes_are_refused() {
        assert!(matches!(parse("postgres://orch@db:5432/orch"), Ok(Db::Postgres(_))));
        assert!(matches!(parse("postgresql://orch:pw@db/orch"), Ok(Db::Postgres(_))));
        assert!(matches!(parse("mysql://root@db/x"), Err(DbError::UnknownScheme(_, s)) if s == "mysql"));
        assert!(matches!(parse("postgres:/x"), Err(DbError::BadUrl(..)) | Err(DbError::UnknownScheme(..))));
        assert_eq!(parse(""), Err(DbError::Empty));
    }

    #[test]
    fn a_refused_url_does_not_show_its_password() {
        let e = parse("mysql://root:s3cr%2Ft@db/x").unwrap_err().to_string();
        assert!(!e.contains("s3cr"), "{e}");
        assert_eq!(Db::parse(OsStr::new("postgres://u:hunter2@h/d")).unwrap().display().contains("hunter2"), false);
    }

    #[test]
    fn a_password_is_masked_whatever_it_holds() {
        for (url, pw) in [
            ("postgres://orch:pa,ss(1)@db:5432/orch", "pa,ss(1)"),
            ("postgres://orch:has%20space%40x@db/orch", "has"),
            ("postgres://orch@db/orch?password=hunter2&sslmode=require", "hunter2"),
            ("postgres://orch:p@ss:w0rd@db/orch", "ss:w0rd"),
            ("postgres://h/x?user=orch&password=hunter2", "hunter2"),
        ] {
            let shown = mask_db_url(url);
            assert!(!shown.contains(pw), "{url} → {shown}");
            assert!(shown.contains("***"), "{shown}");
        }
        let db = Db::parse(OsStr::new("postgres://orch:pa%2Css@db/orch")).unwrap();
        assert_eq!(db.password().as_deref(), Some("pa,ss"));
        assert!(!db.display().contains("pa%2Css"));
    }

    #[test]
    fn sqlite_urls_escape_what_sqlx_would_decode() {
        assert_eq!(sqlite_url(Path::new("/tmp/a b%?#.db")), "sqlite:///tmp/a%20b%25%3F%23.db?mode=rw");
    }
}
