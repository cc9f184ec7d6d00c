//! The hash chains of the tamper-evident journal (`ledger`, migration 0004): writing an
//! entry for each history row, and re-computing every chain to find what changed.
//!
//! An entry's `content` is the SHA-256 of the row as the database renders the columns
//! listed in [`Kind::columns`] as a JSON array (SQLite's `json_array`, PostgreSQL's
//! `json_build_array`). Writer and verifier compute it with the same query on the
//! stored row, so the types read back are never a source of difference; a chain is
//! verified by the backend that wrote it.
//! An entry's `hash` covers its predecessor's hash, so changing, removing or inserting
//! any entry breaks every hash after it; changing a row breaks its entry's content.
//!
//! What the chain cannot do on its own: someone who can write the file can rebuild
//! every chain from scratch. The head hash printed by `audit`, `report` and the closing
//! Slack message is the answer: a copy kept elsewhere shows the rewrite.

use super::{Backend, JournalError, Result};
use sha2::{Digest, Sha256};
use sqlx::{AnyConnection as SqliteConnection, Row};

/// The chain of everything not tied to one incident.
pub const ALERTS: &str = "alerts";
pub const SETTINGS: &str = "settings";
pub const TOPOLOGY: &str = "topology";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Open,
    Close,
    Transition,
    Check,
    Intent,
    Outcome,
    Command,
    Applied,
    Alert,
    Setting,
    Topology,
}

impl Kind {
    pub const ALL: [Kind; 11] = [
        Kind::Open,
        Kind::Close,
        Kind::Transition,
        Kind::Check,
        Kind::Intent,
        Kind::Outcome,
        Kind::Command,
        Kind::Applied,
        Kind::Alert,
        Kind::Setting,
        Kind::Topology,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Kind::Open => "open",
            Kind::Close => "close",
            Kind::Transition => "transition",
            Kind::Check => "check",
            Kind::Intent => "intent",
            Kind::Outcome => "outcome",
            Kind::Command => "command",
            Kind::Applied => "applied",
            Kind::Alert => "alert",
            Kind::Setting => "setting",
            Kind::Topology => "topology",
        }
    }

    pub fn parse(s: &str) -> Option<Kind> {
        Kind::ALL.into_iter().find(|k| k.as_str() == s)
    }

    pub fn table(self) -> &'static str {
        match self {
            Kind::Open | Kind::Close => "incidents",
            Kind::Transition => "transitions",
            Kind::Check => "checks",
            Kind::Intent | Kind::Outcome => "effects",
            Kind::Command | Kind::Applied => "commands",
            Kind::Alert => "alerts",
            Kind::Setting => "settings",
            Kind::Topology => "topology_changes",
        }
    }

    /// The columns the entry vouches for. An incident's state, machine, owner and lease
    /// change while it runs and are not history; its open and close are.
    fn columns(self) -> &'static str {
        match self {
            Kind::Open => {
                "id, playbook_name, playbook_path, playbook_hash, target, opened_at, trigger_source, trigger_detail, os_user, approver_os_users"
            }
            Kind::Close => "id, outcome, closed_at",
            Kind::Transition => "id, incident_id, seq, at, from_state, to_state, event, observations, note, rejected, actor, machine",
            Kind::Check => "id, incident_id, transition_seq, at, phase, item, holds, observed",
            Kind::Intent => "id, incident_id, key, kind, intent, intent_at",
            Kind::Outcome => "id, key, outcome, result, done_at",
            Kind::Command => "id, incident_id, kind, actor, comment, via, at, os_user",
            Kind::Applied => "id, applied_at, accepted, result",
            Kind::Alert => "id, received_at, source, fingerprint, status, target, summary, incident_id, disposition",
            Kind::Setting => "key, value, set_by, at, os_user",
            Kind::Topology => "id, target, at, change, active, armed, reason, incident_id, actor, since, needs_person, standby_ok_since",
        }
    }

    fn content_sql(self, backend: Backend) -> String {
        format!("SELECT {} FROM {} WHERE rowid = $1", backend.json_array(self.columns()), self.table())
    }
}

fn sha(text: &str) -> String {
    hex::encode(Sha256::digest(text.as_bytes()))
}

/// The content hash of a stored row, or `None` when the row does not exist.
pub async fn content(conn: &mut SqliteConnection, kind: Kind, rowid: i64) -> Result<Option<String>> {
    let row = sqlx::query(sqlx::AssertSqlSafe(kind.content_sql(Backend::of(conn)))).bind(rowid).fetch_optional(&mut *conn).await?;
    Ok(row.map(|r| sha(&r.get::<String, _>(0))))
}

pub fn entry_hash(prev: &str, chain: &str, pos: i64, kind: Kind, rowid: i64, content: &str) -> String {
    sha(&format!("{prev}\n{chain}\n{pos}\n{}\n{}\n{rowid}\n{content}", kind.as_str(), kind.table()))
}

/// The last entry of a chain: (pos, hash); (0, "") for an empty chain.
pub async fn head(conn: &mut SqliteConnection, chain: &str) -> Result<(i64, String)> {
    let row = sqlx::query("SELECT pos, hash FROM ledger WHERE chain = $1 ORDER BY pos DESC LIMIT 1")
        .bind(chain)
        .fetch_optional(&mut *conn)
        .await?;
    Ok(row.map(|r| (r.get(0), r.get(1))).unwrap_or((0, String::new())))
}

/// Appends entries for rows already written in this transaction. Must run inside the
/// write transaction that wrote them (the journal's write lock): the chain's head cannot move
/// under us, and a row is never committed without its entry.
pub async fn append(conn: &mut SqliteConnection, chain: &str, rows: &[(Kind, i64)]) -> Result<String> {
    let ranges: Vec<(Kind, i64, i64)> = rows.iter().map(|(k, r)| (*k, *r, *r)).collect();
    append_ranges(conn, chain, &ranges).await
}

/// [`append`] for rowid ranges of one kind each, in order: the head is read once,
/// each range's contents with one query, and every entry written with multi-row
/// inserts. (A transition's checks, the alert intake's thousands of alerts.)
pub async fn append_ranges(conn: &mut SqliteConnection, chain: &str, ranges: &[(Kind, i64, i64)]) -> Result<String> {
    let (mut pos, mut prev) = head(conn, chain).await?;
    let mut entries = Vec::new();
    for (kind, first, last) in ranges {
        let sql = format!(
            "SELECT rowid, {} FROM {} WHERE rowid BETWEEN $1 AND $2 ORDER BY rowid",
            Backend::of(conn).json_array(kind.columns()),
            kind.table()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(sql)).bind(first).bind(last).fetch_all(&mut *conn).await?;
        if rows.is_empty() {
            return Err(JournalError::Corrupt(format!("{} rows {first}..={last} vanished before their ledger entries", kind.table())));
        }
        for r in rows {
            let rowid: i64 = r.get(0);
            let c = sha(&r.get::<String, _>(1));
            pos += 1;
            let hash = entry_hash(&prev, chain, pos, *kind, rowid, &c);
            entries.push((pos, *kind, rowid, c, prev.clone(), hash.clone()));
            prev = hash;
        }
    }
    // 100 entries of 8 values a statement: well inside SQLite's variable limit.
    for batch in entries.chunks(100) {
        let sql = format!("INSERT INTO ledger (chain, pos, kind, row_table, row_id, content, prev, hash) VALUES {}", values(batch.len(), 8));
        let mut q = sqlx::query(sqlx::AssertSqlSafe(sql));
        for (pos, kind, rowid, c, p, h) in batch {
            q = q.bind(chain).bind(*pos).bind(kind.as_str()).bind(kind.table()).bind(*rowid).bind(c.clone()).bind(p.clone()).bind(h.clone());
        }
        q.execute(&mut *conn).await?;
    }
    Ok(prev)
}

/// `($1, …, $width), ($width+1, …), …` for a multi-row insert of `rows` rows: numbered
/// parameters, which both backends read (sqlx's query builder writes `?` for its Any
/// driver, which PostgreSQL does not).
pub(super) fn values(rows: usize, width: usize) -> String {
    let mut out = String::with_capacity(rows * width * 5);
    for r in 0..rows {
        out.push_str(if r == 0 { "(" } else { ", (" });
        for c in 0..width {
            if c > 0 {
                out.push_str(", ");
            }
            out.push_str(&format!("${}", r * width + c + 1));
        }
        out.push(')');
    }
    out
}

/// Appends one entry for each of many rows of one kind (rowids `first..=last`).
pub async fn append_range(conn: &mut SqliteConnection, chain: &str, kind: Kind, first: i64, last: i64) -> Result<String> {
    append_ranges(conn, chain, &[(kind, first, last)]).await
}
