//! A PostgreSQL database of its own for a test: created on the suite's PostgreSQL
//! (`ORCH_TEST_PG`, default the local server at 127.0.0.1:5432) and dropped with the
//! guard. `ORCH_TEST_DB=postgres` runs the world-based suites on PostgreSQL.

use std::process::Command;

/// The server the tests create their databases on.
pub fn server_url() -> String {
    std::env::var("ORCH_TEST_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

/// Whether the suite runs its journals on PostgreSQL.
pub fn suite_on_postgres() -> bool {
    std::env::var("ORCH_TEST_DB").is_ok_and(|v| v == "postgres")
}

pub struct PgDatabase {
    name: String,
}

impl PgDatabase {
    /// A new empty database (psql: no async runtime is needed to create or drop it).
    pub fn create() -> PgDatabase {
        let name = format!("orch_test_{:016x}", rand::random::<u64>());
        psql(&format!("CREATE DATABASE {name}"));
        PgDatabase { name }
    }

    /// A database when the suite runs on PostgreSQL, none otherwise.
    pub fn for_suite() -> Option<PgDatabase> {
        suite_on_postgres().then(PgDatabase::create)
    }

    pub fn url(&self) -> String {
        format!("{}/{}", server_url().trim_end_matches('/'), self.name)
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        // FORCE: a killed orchestrator's connections may linger for a moment.
        let _ = Command::new("psql")
            .arg(format!("{}/postgres", server_url().trim_end_matches('/')))
            .args(["-qAtc", &format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)])
            .output();
    }
}

fn psql(sql: &str) {
    let out = Command::new("psql")
        .arg(format!("{}/postgres", server_url().trim_end_matches('/')))
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .output()
        .expect("psql runs (PostgreSQL's client is needed for the PostgreSQL suites)");
    assert!(out.status.success(), "psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr));
}
