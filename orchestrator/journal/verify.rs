//! `orchestrator journal verify`: re-computes every hash chain of the ledger and names
//! what differs: a row whose content changed, a row that is missing, a row that is in
//! no chain (inserted behind the journal's back), a ledger entry that does not follow
//! from its predecessor, and a trigger that was dropped or rewritten.

use super::chain::{self, Kind};
use super::Backend;
use super::Result;
use serde::Serialize;
use sqlx::Row;
use sqlx::{AnyConnection, AnyPool};
use std::collections::{BTreeMap, HashMap};

#[derive(Debug, Clone, Serialize)]
pub struct ChainReport {
    pub chain: String,
    pub entries: i64,
    /// The hash of the last entry: what `audit` and `report` print.
    pub head: String,
    pub problems: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct VerifyReport {
    pub chains: Vec<ChainReport>,
    /// Problems with the database's own guards (dropped or changed triggers).
    pub schema: Vec<String>,
    /// History rows written before the journal was chained (migration 0004).
    pub predating: i64,
}

impl VerifyReport {
    pub fn ok(&self) -> bool {
        self.schema.is_empty() && self.chains.iter().all(|c| c.problems.is_empty())
    }

    pub fn problems(&self) -> Vec<String> {
        let mut out = self.schema.clone();
        for c in &self.chains {
            out.extend(c.problems.iter().map(|p| format!("{}: {p}", c.chain)));
        }
        out
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        for p in &self.schema {
            out.push_str(&format!("✗ {p}\n"));
        }
        for c in &self.chains {
            if c.problems.is_empty() {
                out.push_str(&format!("✓ {:<28} {:>6} entries  head {}\n", c.chain, c.entries, c.head));
            } else {
                out.push_str(&format!("✗ {:<28} {:>6} entries  head {}\n", c.chain, c.entries, c.head));
                for p in &c.problems {
                    out.push_str(&format!("    {p}\n"));
                }
            }
        }
        if self.predating > 0 {
            out.push_str(&format!("  ({} rows predate the chain and cannot be verified)\n", self.predating));
        }
        out.push_str(if self.ok() { "journal verified: every chain holds\n" } else { "JOURNAL DOES NOT VERIFY\n" });
        out
    }
}

/// The triggers the migrations create, with their definitions: a dropped trigger, a
/// disabled one, or one re-created with another body is named. SQLite: from a fresh
/// in-memory journal. PostgreSQL: from the migration run into a scratch schema inside
/// a transaction that is rolled back (DDL is transactional there), so nothing stays.
async fn expected_triggers(pool: &AnyPool, backend: Backend) -> Result<BTreeMap<String, String>> {
    match backend {
        Backend::Sqlite => {
            let pool = sqlx::sqlite::SqlitePoolOptions::new().max_connections(1).connect("sqlite::memory:").await?;
            sqlx::migrate!("./migrations").run(&pool).await?;
            let rows = sqlx::query("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetch_all(&pool).await?;
            pool.close().await;
            Ok(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<Option<String>, _>(1).unwrap_or_default())).collect())
        }
        Backend::Postgres => {
            let scratch = format!("orch_verify_{:08x}", rand::random::<u32>());
            let mut tx = pool.begin().await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("CREATE SCHEMA {scratch}"))).execute(&mut *tx).await?;
            sqlx::query(sqlx::AssertSqlSafe(format!("SET LOCAL search_path TO {scratch}"))).execute(&mut *tx).await?;
            for m in sqlx::migrate!("./migrations-pg").iter() {
                sqlx::raw_sql(sqlx::AssertSqlSafe(m.sql.as_str().to_string())).execute(&mut *tx).await?;
            }
            let map = pg_triggers(&mut tx, &scratch).await?;
            tx.rollback().await?;
            Ok(map)
        }
    }
}

async fn actual_triggers(conn: &mut AnyConnection, backend: Backend) -> Result<BTreeMap<String, String>> {
    match backend {
        Backend::Sqlite => {
            let rows = sqlx::query("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'").fetch_all(&mut *conn).await?;
            Ok(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<Option<String>, _>(1).unwrap_or_default())).collect())
        }
        Backend::Postgres => {
            let schema: String = sqlx::query("SELECT CAST(current_schema() AS TEXT)").fetch_one(&mut *conn).await?.get(0);
            pg_triggers(conn, &schema).await
        }
    }
}

/// A PostgreSQL schema's triggers: table, timing and events, enabled or not, the
/// function, its arguments and its body, as one comparable text per trigger.
async fn pg_triggers(conn: &mut AnyConnection, schema: &str) -> Result<BTreeMap<String, String>> {
    let rows = sqlx::query(
        "SELECT CAST(t.tgname AS TEXT),
                CAST(c.relname AS TEXT) || ' ' || CAST(t.tgtype AS TEXT) || ' ' || CAST(t.tgenabled AS TEXT) || ' '
                || CAST(p.proname AS TEXT) || ' ' || encode(t.tgargs, 'escape') || ' ' || p.prosrc
         FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid JOIN pg_namespace n ON n.oid = c.relnamespace
              JOIN pg_proc p ON p.oid = t.tgfoid
         WHERE NOT t.tgisinternal AND CAST(n.nspname AS TEXT) = $1",
    )
    .bind(schema)
    .fetch_all(&mut *conn)
    .await?;
    Ok(rows.iter().map(|r| (r.get::<String, _>(0), r.get::<String, _>(1))).collect())
}

/// A row named for a person: its table, rowid, and what identifies it.
async fn describe(conn: &mut sqlx::AnyConnection, kind: Kind, rowid: i64) -> String {
    let label_sql = match kind.table() {
        "transitions" => "SELECT 'seq ' || seq || ', ' || event FROM transitions WHERE rowid = $1",
        "checks" => "SELECT phase || '/' || item FROM checks WHERE rowid = $1",
        "effects" => "SELECT kind || ' ' || key FROM effects WHERE rowid = $1",
        "commands" => "SELECT kind || ' by ' || actor FROM commands WHERE rowid = $1",
        "alerts" => "SELECT source || ' ' || status FROM alerts WHERE rowid = $1",
        "settings" => "SELECT key FROM settings WHERE rowid = $1",
        "topology_changes" => "SELECT target || ' ' || change FROM topology_changes WHERE rowid = $1",
        _ => "SELECT id FROM incidents WHERE rowid = $1",
    };
    let label: Option<String> =
        sqlx::query(label_sql).bind(rowid).fetch_optional(&mut *conn).await.ok().flatten().and_then(|r| r.try_get(0).ok());
    let what = match kind {
        Kind::Outcome => " (its outcome)",
        Kind::Applied => " (its application)",
        Kind::Close => " (its close)",
        Kind::Open => " (its open)",
        _ => "",
    };
    match label {
        Some(l) => format!("{} row {rowid} ({l}){what}", kind.table()),
        None => format!("{} row {rowid}{what}", kind.table()),
    }
}

/// Verifies every chain, or one incident's (and the schema's guards) with `only`.
pub async fn verify(pool: &AnyPool, only: Option<&str>) -> Result<VerifyReport> {
    let mut conn = pool.acquire().await?;
    let backend = Backend::of(&conn);
    let expected = expected_triggers(pool, backend).await?;
    // One read transaction: a consistent snapshot even while others write.
    let begin = match backend {
        Backend::Sqlite => "BEGIN",
        Backend::Postgres => "BEGIN ISOLATION LEVEL REPEATABLE READ READ ONLY",
    };
    sqlx::query(begin).execute(&mut *conn).await?;
    let result = verify_in(&mut conn, backend, &expected, only).await;
    let _ = sqlx::query("COMMIT").execute(&mut *conn).await;
    result
}

async fn verify_in(
    conn: &mut AnyConnection,
    backend: Backend,
    expected: &BTreeMap<String, String>,
    only: Option<&str>,
) -> Result<VerifyReport> {
    let mut schema = Vec::new();
    let actual = actual_triggers(conn, backend).await?;
    for (name, sql) in expected {
        match actual.get(name) {
            None => schema.push(format!("trigger {name} was dropped")),
            Some(s) if s != sql => schema.push(format!("trigger {name} was changed")),
            Some(_) => {}
        }
    }
    let epoch: HashMap<String, i64> = sqlx::query("SELECT row_table, max_rowid FROM ledger_epoch")
        .fetch_all(&mut *conn)
        .await?
        .iter()
        .map(|r| (r.get(0), r.get(1)))
        .collect();
    let after = |t: &str| epoch.get(t).copied().unwrap_or(0);
    let mut predating = 0i64;
    for t in ["incidents", "transitions", "checks", "effects", "commands", "alerts"] {
        if only.is_none() {
            predating += after(t);
        }
    }

    let mut chains: Vec<String> = match only {
        Some(id) => vec![id.to_string()],
        None => {
            let mut c: Vec<String> =
                sqlx::query("SELECT id FROM incidents ORDER BY opened_at").fetch_all(&mut *conn).await?.iter().map(|r| r.get(0)).collect();
            for r in sqlx::query("SELECT DISTINCT chain FROM ledger").fetch_all(&mut *conn).await? {
                let name: String = r.get(0);
                if !c.contains(&name) && name != chain::ALERTS && name != chain::SETTINGS && name != chain::TOPOLOGY {
                    c.push(name);
                }
            }
            c.push(chain::ALERTS.into());
            c.push(chain::SETTINGS.into());
            c.push(chain::TOPOLOGY.into());
            c
        }
    };
    chains.dedup();
    let mut reports = Vec::new();
    for name in chains {
        reports.push(verify_chain(conn, &name, &after).await?);
    }
    Ok(VerifyReport { chains: reports, schema, predating })
}

async fn verify_chain(conn: &mut sqlx::AnyConnection, name: &str, after: &(dyn Fn(&str) -> i64 + Sync)) -> Result<ChainReport> {
    let mut problems = Vec::new();
    let entries = sqlx::query("SELECT pos, kind, row_id, content, prev, hash FROM ledger WHERE chain = $1 ORDER BY pos")
        .bind(name)
        .fetch_all(&mut *conn)
        .await?;
    let mut prev = String::new();
    let mut expected_pos = 1i64;
    // For settings, only the latest entry of a row can match it (a setting is updated
    // in place; its history is the chain).
    let mut latest: HashMap<(String, i64), i64> = HashMap::new();
    let mut parsed = Vec::with_capacity(entries.len());
    for e in &entries {
        let pos: i64 = e.get(0);
        let kind_s: String = e.get(1);
        let rowid: i64 = e.get(2);
        let content: String = e.get(3);
        let eprev: String = e.get(4);
        let hash: String = e.get(5);
        let Some(kind) = Kind::parse(&kind_s) else {
            problems.push(format!("ledger entry {pos} has an unknown kind {kind_s:?} (the ledger was edited)"));
            continue;
        };
        if pos != expected_pos {
            problems.push(format!("ledger entries {expected_pos}..{} are missing (the ledger was edited)", pos - 1));
        }
        expected_pos = pos + 1;
        if eprev != prev || chain::entry_hash(&eprev, name, pos, kind, rowid, &content) != hash {
            problems.push(format!(
                "ledger entry {pos} ({} {rowid}) does not follow from its predecessor (the ledger was edited)",
                kind.table()
            ));
        }
        prev = hash.clone();
        latest.insert((kind_s.clone(), rowid), pos);
        parsed.push((pos, kind, rowid, content));
    }
    for (pos, kind, rowid, content) in &parsed {
        if kind == &Kind::Setting && latest.get(&(kind.as_str().to_string(), *rowid)) != Some(pos) {
            continue;
        }
        match chain::content(conn, *kind, *rowid).await? {
            None => problems.push(format!("{} is missing (deleted); ledger entry {pos} recorded it", describe(conn, *kind, *rowid).await)),
            Some(c) if &c != content => {
                problems.push(format!("{} differs from what was recorded (ledger entry {pos})", describe(conn, *kind, *rowid).await))
            }
            Some(_) => {}
        }
    }
    // Rows with no entry: written behind the journal's back (or by a REPLACE that gave
    // them a new rowid).
    let uncovered: Vec<(Kind, &str)> = if name == chain::ALERTS {
        vec![(Kind::Alert, "SELECT rowid FROM alerts WHERE rowid > $2")]
    } else if name == chain::TOPOLOGY {
        vec![(Kind::Topology, "SELECT rowid FROM topology_changes WHERE rowid > $2")]
    } else if name == chain::SETTINGS {
        vec![(Kind::Setting, "SELECT rowid FROM settings WHERE $2 >= 0")]
    } else {
        vec![
            (Kind::Open, "SELECT rowid FROM incidents WHERE id = $1 AND rowid > $2"),
            (Kind::Close, "SELECT rowid FROM incidents WHERE id = $1 AND rowid > $2 AND closed_at IS NOT NULL"),
            (Kind::Transition, "SELECT rowid FROM transitions WHERE incident_id = $1 AND rowid > $2"),
            (Kind::Check, "SELECT rowid FROM checks WHERE incident_id = $1 AND rowid > $2"),
            (Kind::Intent, "SELECT rowid FROM effects WHERE incident_id = $1 AND rowid > $2"),
            (Kind::Outcome, "SELECT rowid FROM effects WHERE incident_id = $1 AND rowid > $2 AND outcome IS NOT NULL"),
            (Kind::Command, "SELECT rowid FROM commands WHERE incident_id = $1 AND rowid > $2"),
            (Kind::Applied, "SELECT rowid FROM commands WHERE incident_id = $1 AND rowid > $2 AND applied_at IS NOT NULL"),
        ]
    };
    for (kind, sql) in uncovered {
        let floor = if kind == Kind::Setting { 0 } else { after(kind.table()) };
        let q = format!(
            "SELECT x.rowid FROM ({sql}) AS x WHERE NOT EXISTS (SELECT 1 FROM ledger l WHERE l.row_table = '{}' AND l.kind = '{}' AND l.row_id = x.rowid)",
            kind.table(),
            kind.as_str()
        );
        let rows = sqlx::query(sqlx::AssertSqlSafe(q)).bind(name).bind(floor).fetch_all(&mut *conn).await?;
        for r in rows {
            let rowid: i64 = r.get(0);
            problems.push(format!("{} is not in the chain (inserted behind the journal's back)", describe(conn, kind, rowid).await));
        }
    }
    // The current topology of each target is exactly its latest change: an edited row
    // (armed by hand, a side flipped) would otherwise steer the next failover unseen.
    if name == chain::TOPOLOGY {
        let edited = sqlx::query(
            "SELECT t.target FROM topology t
             LEFT JOIN topology_changes c ON c.id = (SELECT MAX(id) FROM topology_changes WHERE target = t.target)
             WHERE c.id IS NULL OR c.active IS DISTINCT FROM t.active OR c.armed IS DISTINCT FROM t.armed
                OR c.reason IS DISTINCT FROM t.reason OR c.incident_id IS DISTINCT FROM t.incident_id
                OR c.since IS DISTINCT FROM t.since OR c.needs_person IS DISTINCT FROM t.needs_person
                OR c.standby_ok_since IS DISTINCT FROM t.standby_ok_since",
        )
        .fetch_all(&mut *conn)
        .await?;
        for r in edited {
            let target: String = r.get(0);
            problems.push(format!("topology of {target} differs from its latest journaled change (edited behind the journal's back)"));
        }
    }
    if entries.is_empty() && name != chain::ALERTS && name != chain::SETTINGS && name != chain::TOPOLOGY {
        let predates: bool = sqlx::query("SELECT CASE WHEN rowid <= $1 THEN 1 ELSE 0 END FROM incidents WHERE id = $2")
            .bind(after("incidents"))
            .bind(name)
            .fetch_optional(&mut *conn)
            .await?
            .map(|r| r.get::<i64, _>(0) != 0)
            .unwrap_or(false);
        if !predates && problems.is_empty() {
            problems.push("the incident has no chain at all".into());
        }
    }
    Ok(ChainReport { chain: name.to_string(), entries: entries.len() as i64, head: prev, problems })
}
