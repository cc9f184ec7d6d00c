//! One contract, two backends: every test here runs against a real SQLite file and a
//! real PostgreSQL database (its own, on the suite's server), through the same store
//! traits. What each trait's doc comment says a backend must guarantee is checked on
//! both: decisions in one transaction, dense sequence numbers, one open incident per
//! target, one effect intent per key and its outcome once, commands applied once,
//! alerts chained, settings, topology compare-and-swap, claims, append-only history
//! refused by the database itself, the ledger verifying and naming what was edited.
//! PostgreSQL alone: the leader lease (terms only grow, an expired lease is never
//! renewed, a stale term's writes are refused).

mod support;

use chrono::Utc;
use orchestrator::journal::leader::{LeaderStore, Term};
use orchestrator::journal::prelude::*;
use orchestrator::journal::{CommandKind, Journal, JournalError, NewAlert, NewIncident};
use orchestrator::machine::{Check, Event, Machine};
use orchestrator::model::FailureClass;
use std::sync::Arc;
use std::time::Duration;
use support::pgdb::PgDatabase;
use support::policy;

/// A journal on one backend, with what keeps it alive.
struct Db {
    j: Journal,
    _dir: tempfile::TempDir,
    _pg: Option<PgDatabase>,
    pg: bool,
}

async fn open(pg: bool) -> Db {
    let dir = tempfile::tempdir().unwrap();
    let (db, name) = if pg {
        let db = PgDatabase::create();
        let url = db.url();
        (Some(db), url)
    } else {
        (None, dir.path().join("j.db").display().to_string())
    };
    let j = Journal::open(&name).await.unwrap();
    Db { j, _dir: dir, _pg: db, pg }
}

fn new_incident(target: &str) -> NewIncident {
    NewIncident {
        playbook_name: target.into(),
        playbook_path: "t.yaml".into(),
        playbook_hash: "abc".into(),
        target: target.into(),
        trigger_source: "test".into(),
        trigger_detail: "redis down".into(),
        os_user: None,
        approver_os_users: Default::default(),
    }
}

async fn feed(j: &Journal, id: &str, m: &mut Machine, e: Event) -> Result<i64, JournalError> {
    let d = m.handle(&e);
    j.record_decision(id, &e, &d, m, Utc::now()).await
}

fn trigger() -> Event {
    Event::Trigger { source: "test".into(), detail: "".into(), from: Default::default(), planned: false }
}

/// Drives an incident to the approval gate: trigger, confirm, assess, switch.
async fn to_gate(j: &Journal, target: &str) -> (String, Machine) {
    let mut m = Machine::new(policy());
    let id = j.create_incident(&new_incident(target), &m, Utc::now()).await.unwrap();
    feed(j, &id, &mut m, trigger()).await.unwrap();
    feed(j, &id, &mut m, Event::ConfirmChecked { checks: vec![Check::new("ping_failed", true, "refused")] }).await.unwrap();
    let assessed = Event::Assessed {
        class: FailureClass::ConnectionRefused,
        detail: "".into(),
        preflight: vec![Check::new("backup_ping", true, "PONG"), Check::new("backup_write", true, "OK")],
        primary_answers: false,
    };
    feed(j, &id, &mut m, assessed).await.unwrap();
    feed(j, &id, &mut m, Event::Switched { ok: true, detail: "".into() }).await.unwrap();
    (id, m)
}

macro_rules! both {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::open(false).await).await })*
        }
        mod postgres {
            $(#[tokio::test(flavor = "multi_thread", worker_threads = 2)] async fn $name() { super::$name(super::open(true).await).await })*
        }
    };
}

both!(
    decisions_are_journaled_with_dense_sequence_numbers_and_resume_from_the_journal,
    one_open_incident_per_target,
    one_effect_intent_per_key_and_its_outcome_once,
    commands_queue_and_are_applied_once,
    alerts_are_recorded_in_batches_and_chained,
    settings_and_pauses,
    topology_changes_are_compare_and_swap,
    claims_exclude_a_second_driver,
    history_is_append_only_in_the_database,
    the_ledger_verifies_and_names_an_edit,
    the_ledger_names_a_dropped_trigger,
    reads_for_reports_and_pages,
    a_forged_row_with_a_non_positive_id_is_refused_or_named,
    an_added_trigger_is_named,
);

async fn decisions_are_journaled_with_dense_sequence_numbers_and_resume_from_the_journal(db: Db) {
    let j = &db.j;
    let (id, _) = to_gate(j, "alpha").await;
    // A new handle: only what is on disk.
    let again = if db.pg { Journal::open_existing(db._pg.as_ref().unwrap().url()).await.unwrap() } else { j.clone() };
    let inc = again.incident(&id).await.unwrap();
    assert_eq!(inc.state, "awaiting_approval");
    let mut m = again.machine(&id).await.unwrap();
    assert!(m.incident().switched);
    feed(&again, &id, &mut m, Event::Approve { approver: "alice".into(), comment: "go".into() }).await.unwrap();
    let rows = again.transitions(&id).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(rows[4].actor, "alice");
    let checks = again.checks(&id).await.unwrap();
    assert_eq!(checks.len(), 3);
    assert!(checks.iter().all(|c| c.holds));
    // A rejected event is journaled, the state unchanged.
    feed(&again, &id, &mut m, Event::Approve { approver: "mallory".into(), comment: "".into() }).await.unwrap();
    let last = again.transitions(&id).await.unwrap().pop().unwrap();
    assert!(last.rejected.is_some());
    assert_eq!(again.incident(&id).await.unwrap().state, "flush");
    // Statistics read on both backends (time per step needs the database's date maths).
    let stats = again.stats().await.unwrap();
    assert!(stats.steps.iter().any(|(from, n, _): &(String, i64, f64)| from == "confirm" && *n == 1), "{:?}", stats.steps);
}

async fn one_open_incident_per_target(db: Db) {
    let j = &db.j;
    let m = Machine::new(policy());
    j.create_incident(&new_incident("alpha"), &m, Utc::now()).await.unwrap();
    let err = j.create_incident(&new_incident("alpha"), &m, Utc::now()).await.unwrap_err();
    assert!(matches!(err, JournalError::AlreadyOpen(ref t) if t == "alpha"), "{err:?}");
    j.create_incident(&new_incident("beta"), &m, Utc::now()).await.expect("another target opens");
    assert_eq!(j.open_incidents().await.unwrap().len(), 2);
}

async fn one_effect_intent_per_key_and_its_outcome_once(db: Db) {
    let j = &db.j;
    let (id, _) = to_gate(j, "alpha").await;
    let intent = serde_json::json!({"url": "redis://:hunter2@10.0.0.2:6380/0"});
    assert!(j.effect_intent(&id, "k1", "set_env", &intent, Utc::now()).await.unwrap().is_none());
    let again = j.effect_intent(&id, "k1", "set_env", &intent, Utc::now()).await.unwrap().expect("the first intent");
    assert!(again.outcome.is_none());
    assert!(!again.intent.contains("hunter2"), "a URL's password never reaches the journal: {}", again.intent);
    j.effect_outcome("k1", "ok", &serde_json::json!({"n": 1}), Utc::now()).await.unwrap();
    j.effect_outcome("k1", "failed", &serde_json::json!({"n": 2}), Utc::now()).await.unwrap();
    let e = j.effect("k1").await.unwrap().unwrap();
    assert_eq!(e.outcome.as_deref(), Some("ok"), "an outcome is written once");
    assert_eq!(j.effects(&id).await.unwrap().len(), 1);
}

async fn commands_queue_and_are_applied_once(db: Db) {
    let j = &db.j;
    let (id, _) = to_gate(j, "alpha").await;
    let c = j.add_command(&id, CommandKind::Approve, "alice", "lgtm", "http", Utc::now()).await.unwrap();
    assert_eq!(j.pending_commands(&id).await.unwrap().len(), 1);
    j.command_applied(c, true, "ok", Utc::now()).await.unwrap();
    j.command_applied(c, false, "again", Utc::now()).await.unwrap();
    let row = j.command(c).await.unwrap().unwrap();
    assert_eq!(row.accepted, Some(true), "applied once");
    assert!(j.pending_commands(&id).await.unwrap().is_empty());
    let err = j.add_command("inc-nope", CommandKind::Abort, "a", "", "cli", Utc::now()).await.unwrap_err();
    assert!(matches!(err, JournalError::UnknownIncident(_)));
}

fn alert(n: usize) -> NewAlert {
    NewAlert {
        source: "generic".into(),
        fingerprint: format!("fp-{n}"),
        status: "firing".into(),
        target: "alpha".into(),
        summary: format!("redis down {n}"),
    }
}

async fn alerts_are_recorded_in_batches_and_chained(db: Db) {
    let j = &db.j;
    let (id, _) = to_gate(j, "alpha").await;
    j.record_alert(&alert(0), Some(&id), "opened", Utc::now()).await.unwrap();
    // More than one statement's worth (100 rows a statement).
    let rows: Vec<(NewAlert, Option<String>, &str)> = (1..=250).map(|n| (alert(n), Some(id.clone()), "attached")).collect();
    j.record_alerts(&rows, Utc::now()).await.unwrap();
    j.record_alert(&alert(999), None, "unrouted", Utc::now()).await.unwrap();
    assert_eq!(j.alerts(&id).await.unwrap().len(), 251);
    assert_eq!(j.alert_count(&id).await.unwrap(), 251);
    let page = j.alerts_page(&id, 100, 10).await.unwrap();
    assert_eq!(page[0].fingerprint, "fp-100");
    assert_eq!(j.unrouted_alerts(10).await.unwrap().len(), 1);
    let report = j.verify(None).await.unwrap();
    assert!(report.ok(), "{}", report.render());
    let alerts_chain = report.chains.iter().find(|c| c.chain == "alerts").unwrap();
    assert_eq!(alerts_chain.entries, 252);
}

async fn settings_and_pauses(db: Db) {
    let j = &db.j;
    assert!(!j.paused().await.unwrap());
    j.set_paused(Some("alpha"), true, "ops", Some("root"), Utc::now()).await.unwrap();
    assert!(j.paused_for("alpha").await.unwrap());
    assert!(!j.paused_for("beta").await.unwrap());
    j.set_paused(None, true, "ops", None, Utc::now()).await.unwrap();
    assert!(j.paused_for("beta").await.unwrap());
    j.set_paused(None, false, "ops", None, Utc::now()).await.unwrap();
    assert_eq!(j.setting("paused").await.unwrap().unwrap().0, "0");
    let stats = j.stats().await.unwrap();
    assert_eq!(stats.paused_targets, vec!["alpha".to_string()]);
    assert!(j.verify(None).await.unwrap().ok());
}

async fn topology_changes_are_compare_and_swap(db: Db) {
    use orchestrator::model::Side;
    use orchestrator::topology::{Change, ChangeKind, Topology};
    let j = &db.j;
    let before = j.topology("alpha").await.unwrap();
    assert_eq!(before, Topology::as_written("alpha"));
    let change = Change {
        kind: ChangeKind::Set,
        active: Side::Backup,
        moved: true,
        incident: None,
        armed: false,
        needs_person: true,
        standby_ok_since: None,
        reason: "set by a person".into(),
        actor: "alice".into(),
    };
    assert!(j.change_topology("alpha", &before, &change, true, Utc::now()).await.unwrap());
    // The same expectation again is stale: refused, nothing written.
    assert!(!j.change_topology("alpha", &before, &change, true, Utc::now()).await.unwrap());
    let now = j.topology("alpha").await.unwrap();
    assert_eq!(now.active, Side::Backup);
    assert!(!now.armed && now.needs_person);
    assert_eq!(j.topology_history("alpha", 10).await.unwrap().len(), 1);
    // Not while an incident is open, when asked.
    to_gate(j, "alpha").await;
    assert!(!j.change_topology("alpha", &now, &change, true, Utc::now()).await.unwrap());
    assert!(j.verify(None).await.unwrap().ok());
}

async fn claims_exclude_a_second_driver(db: Db) {
    let a = db.j.owned_by("host:1:100:aaaa");
    let b = db.j.owned_by("host:1:200:bbbb");
    let m = Machine::new(policy());
    let id = a.create_incident(&new_incident("alpha"), &m, Utc::now()).await.unwrap();
    let err = b.claim(&id, Utc::now()).await.unwrap_err();
    assert!(matches!(err, JournalError::HeldBy { .. }), "{err:?}");
    let mut m2 = m.clone();
    let err = feed(&b, &id, &mut m2, trigger()).await.unwrap_err();
    assert!(matches!(err, JournalError::LeaseLost(_)), "a non-owner's decision is refused: {err:?}");
    a.renew(&id, Utc::now()).await.unwrap();
    a.release(&id).await.unwrap();
    b.claim(&id, Utc::now()).await.expect("released: another may drive it");
    let mut m3 = m.clone();
    feed(&b, &id, &mut m3, trigger()).await.unwrap();
    assert!(matches!(a.renew(&id, Utc::now()).await.unwrap_err(), JournalError::LeaseLost(_)));
}

async fn history_is_append_only_in_the_database(db: Db) {
    let j = &db.j;
    let (id, _) = to_gate(j, "alpha").await;
    j.effect_intent(&id, "k1", "set_env", &serde_json::json!({}), Utc::now()).await.unwrap();
    for sql in [
        "UPDATE transitions SET to_state = 'recovered'",
        "DELETE FROM transitions",
        "UPDATE checks SET holds = 0",
        "DELETE FROM ledger",
        "UPDATE ledger SET hash = 'x'",
        "DELETE FROM effects",
        "UPDATE incidents SET trigger_detail = 'nothing happened'",
        "INSERT INTO ledger_epoch (row_table, max_rowid) VALUES ('x', 1)",
    ] {
        let err = sqlx::query(sql).execute(j.pool()).await.expect_err(sql).to_string();
        assert!(err.contains("append-only") || err.contains("fixed"), "{sql}: {err}");
    }
    if db.pg {
        // PostgreSQL has TRUNCATE, which fires no row trigger.
        for t in ["transitions", "ledger", "alerts", "incidents"] {
            let sql = format!("TRUNCATE {t} CASCADE");
            let err = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(j.pool()).await.expect_err(&sql).to_string();
            assert!(err.contains("append-only"), "{sql}: {err}");
        }
    }
    assert_eq!(j.transitions(&id).await.unwrap().len(), 4, "nothing was removed");
    assert!(j.verify(None).await.unwrap().ok());
}

/// Edits made by someone who disables the guards first: the ledger names them.
async fn the_ledger_verifies_and_names_an_edit(db: Db) {
    let j = &db.j;
    let (id, _) = to_gate(j, "alpha").await;
    assert!(j.verify(Some(&id)).await.unwrap().ok());
    let head = j.head(&id).await.unwrap().expect("a chain head");
    assert_eq!(head.len(), 64);
    if db.pg {
        sqlx::raw_sql("SET session_replication_role = replica; UPDATE transitions SET note = 'edited' WHERE seq = 2; SET session_replication_role = origin;")
            .execute(j.pool())
            .await
            .unwrap();
    } else {
        sqlx::raw_sql("DROP TRIGGER transitions_append_only_update; UPDATE transitions SET note = 'edited' WHERE seq = 2;")
            .execute(j.pool())
            .await
            .unwrap();
    }
    let report = j.verify(Some(&id)).await.unwrap();
    assert!(!report.ok());
    let problems = report.problems().join("\n");
    assert!(problems.contains("transitions row") && problems.contains("differs"), "{problems}");
}

async fn the_ledger_names_a_dropped_trigger(db: Db) {
    let j = &db.j;
    to_gate(j, "alpha").await;
    assert!(j.verify(None).await.unwrap().ok());
    let sql = if db.pg { "DROP TRIGGER ledger_no_delete ON ledger" } else { "DROP TRIGGER ledger_no_delete" };
    sqlx::query(sql).execute(j.pool()).await.unwrap();
    let report = j.verify(None).await.unwrap();
    assert!(report.schema.iter().any(|p| p.contains("ledger_no_delete") && p.contains("dropped")), "{:?}", report.schema);
    if db.pg {
        // Disabled is as good as dropped.
        sqlx::query("ALTER TABLE checks DISABLE TRIGGER checks_no_update").execute(j.pool()).await.unwrap();
        let report = j.verify(None).await.unwrap();
        assert!(report.schema.iter().any(|p| p.contains("checks_no_update") && p.contains("changed")), "{:?}", report.schema);
        // A guard's function replaced by one that lets everything through.
        sqlx::raw_sql("CREATE OR REPLACE FUNCTION orch_refuse() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN RETURN NEW; END; $$")
            .execute(j.pool())
            .await
            .unwrap();
        let report = j.verify(None).await.unwrap();
        assert!(report.schema.iter().any(|p| p.contains("transitions_append_only_update") && p.contains("changed")), "{:?}", report.schema);
    }
}

async fn reads_for_reports_and_pages(db: Db) {
    let j = &db.j;
    let mut m = Machine::new(policy());
    let id = j.create_incident(&new_incident("alpha"), &m, Utc::now()).await.unwrap();
    feed(j, &id, &mut m, trigger()).await.unwrap();
    // Before the switch, an abort closes it.
    feed(j, &id, &mut m, Event::Abort { actor: "alice".into(), reason: "not now".into() }).await.unwrap();
    assert_eq!(j.incident(&id).await.unwrap().outcome.as_deref(), Some("aborted"));
    let page = j.incident_page(&orchestrator::journal::IncidentFilter { limit: 10, ..Default::default() }).await.unwrap();
    assert_eq!(page.1, 1);
    let f = orchestrator::journal::IncidentFilter {
        target: Some("alpha".into()),
        outcome: Some("open".into()),
        limit: 10,
        ..Default::default()
    };
    assert_eq!(j.incident_page(&f).await.unwrap().1, 0, "not open any more");
    let from = Utc::now() - chrono::Duration::hours(1);
    let period = j.incidents_between(from, Utc::now() + chrono::Duration::hours(1)).await.unwrap();
    assert_eq!(period.len(), 1);
    assert!(j.last_closed_for("alpha").await.unwrap().is_some());
    assert!(j.last_real_closed_for("alpha").await.unwrap().is_some());
}

// PostgreSQL only: the leader lease.

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_lease_terms_only_grow_and_an_expired_lease_is_never_renewed() {
    let db = open(true).await;
    let j = &db.j;
    let ttl = Duration::from_millis(400);
    let t1 = j.acquire_lease("a", "127.0.0.1:1", ttl).await.unwrap().expect("a free lease is taken");
    assert!(j.acquire_lease("b", "127.0.0.1:2", ttl).await.unwrap().is_none(), "a valid lease is not taken");
    assert!(j.renew_lease(t1, "a", ttl).await.unwrap());
    assert!(!j.renew_lease(t1, "b", ttl).await.unwrap(), "only the holder renews");
    // Expire on the database's clock.
    support::world::wait_until(Duration::from_secs(5), "the lease to expire", || async {
        j.leader().await.unwrap().is_some_and(|l| l.expires_in_ms < 0)
    })
    .await;
    assert!(!j.renew_lease(t1, "a", ttl).await.unwrap(), "an expired lease is never revived");
    let t2 = j.acquire_lease("b", "127.0.0.1:2", ttl).await.unwrap().expect("an expired lease is taken");
    assert!(t2 > t1, "a new leadership takes a higher term");
    let row = j.leader().await.unwrap().unwrap();
    assert_eq!((row.term, row.holder.as_str()), (t2, "b"));
    j.resign_lease(t2, "b").await.unwrap();
    let t3 = j.acquire_lease("a", "127.0.0.1:1", ttl).await.unwrap().expect("a resigned lease is free at once");
    assert!(t3 > t2);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_stale_term_writes_nothing() {
    let db = open(true).await;
    let ttl = Duration::from_secs(30);
    let t1 = db.j.acquire_lease("a", "x", ttl).await.unwrap().unwrap();
    let far = tokio::time::Instant::now() + Duration::from_secs(60);
    let old = Arc::new(Term::new(t1, "a", far));
    let a = db.j.fenced_by(old.clone()).owned_by("a-proc");
    let m = Machine::new(policy());
    let id = a.create_incident(&new_incident("alpha"), &m, Utc::now()).await.unwrap();
    let mut m1 = m.clone();
    feed(&a, &id, &mut m1, trigger()).await.expect("the current term writes");
    // Another instance takes over (the old one's lease given up).
    db.j.resign_lease(t1, "a").await.unwrap();
    let t2 = db.j.acquire_lease("b", "y", ttl).await.unwrap().unwrap();
    let err = feed(&a, &id, &mut m1.clone(), Event::ConfirmChecked { checks: vec![] }).await.unwrap_err();
    assert!(matches!(err, JournalError::NotLeader(t) if t == t1), "{err:?}");
    let err = a.effect_intent(&id, "k", "set_env", &serde_json::json!({}), Utc::now()).await.unwrap_err();
    assert!(matches!(err, JournalError::NotLeader(_)), "{err:?}");
    assert!(!a.still_leader(&old).await.unwrap());
    // The new leader claims the incident from the old owner at once and drives it.
    let b = db.j.fenced_by(Arc::new(Term::new(t2, "b", far))).owned_by("b-proc");
    b.claim(&id, Utc::now()).await.expect("the leader takes any incident");
    let mut m2 = b.machine(&id).await.unwrap();
    feed(&b, &id, &mut m2, Event::ConfirmChecked { checks: vec![Check::new("ping_failed", true, "refused")] }).await.unwrap();
    assert_eq!(db.j.transitions(&id).await.unwrap().len(), 2, "one from each term, nothing from the stale one");
    // A term whose local deadline has passed writes nothing, whatever the database says.
    let expired = Arc::new(Term::new(t2, "b", tokio::time::Instant::now() - Duration::from_millis(1)));
    let late = db.j.fenced_by(expired).owned_by("b-proc");
    assert!(matches!(feed(&late, &id, &mut m2.clone(), trigger()).await.unwrap_err(), JournalError::NotLeader(_)));
}

#[tokio::test]
async fn an_unknown_scheme_is_refused_and_creates_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let cwd = std::env::current_dir().unwrap();
    for db in ["mysql://root@127.0.0.1/x", "postgres:/nohost"] {
        let err = Journal::open(db).await.err().expect(db).to_string();
        assert!(err.contains("--db"), "{db}: {err}");
    }
    assert!(!cwd.join("mysql:").exists() && !cwd.join("postgres:").exists(), "no folder was created");
    drop(dir);
}

/// A row inserted with an explicit id at or below zero (below the range the chain
/// checks for rows behind its back): PostgreSQL refuses it; SQLite stores it and
/// `verify` names it.
async fn a_forged_row_with_a_non_positive_id_is_refused_or_named(db: Db) {
    let j = &db.j;
    let (id, _) = to_gate(j, "alpha").await;
    let forged = sqlx::query(
        "INSERT INTO commands (id, incident_id, kind, actor, comment, via, at) VALUES (-3, $1, 'approve', 'alice', 'forged', 'cli', '2026-01-01T00:00:00.000Z')",
    )
    .bind(&id)
    .execute(j.pool())
    .await;
    if db.pg {
        let err = forged.expect_err("PostgreSQL refuses a non-positive id").to_string();
        assert!(err.contains("check"), "{err}");
    } else {
        forged.expect("SQLite stores it");
        let problems = j.verify(Some(&id)).await.unwrap().problems().join("\n");
        assert!(problems.contains("commands row -3") && problems.contains("not in the chain"), "{problems}");
    }
}

/// A trigger the migrations do not create (it could rewrite rows before they are
/// hashed) is named.
async fn an_added_trigger_is_named(db: Db) {
    let j = &db.j;
    to_gate(j, "alpha").await;
    if db.pg {
        sqlx::raw_sql(
            "CREATE FUNCTION rewrite() RETURNS trigger LANGUAGE plpgsql AS $$ BEGIN NEW.note := 'rewritten'; RETURN NEW; END; $$;
             CREATE TRIGGER rewrite_notes BEFORE INSERT ON transitions FOR EACH ROW EXECUTE FUNCTION rewrite();",
        )
        .execute(j.pool())
        .await
        .unwrap();
    } else {
        sqlx::raw_sql("CREATE TRIGGER rewrite_notes AFTER INSERT ON transitions BEGIN SELECT 1; END;").execute(j.pool()).await.unwrap();
    }
    let report = j.verify(None).await.unwrap();
    assert!(
        report.schema.iter().any(|p| p.contains("rewrite_notes") && p.contains("not one the migrations create")),
        "{:?}",
        report.schema
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_a_guard_made_conditional_is_named() {
    let db = open(true).await;
    let j = &db.j;
    to_gate(j, "alpha").await;
    sqlx::raw_sql(
        "DROP TRIGGER transitions_append_only_update ON transitions;
         CREATE TRIGGER transitions_append_only_update BEFORE UPDATE ON transitions FOR EACH ROW WHEN (false) EXECUTE FUNCTION orch_refuse('transitions are append-only');",
    )
    .execute(j.pool())
    .await
    .unwrap();
    let report = j.verify(None).await.unwrap();
    assert!(report.schema.iter().any(|p| p.contains("transitions_append_only_update") && p.contains("changed")), "{:?}", report.schema);
}

/// Fencing holds whatever the database's default isolation: the journal's writers
/// read committed data after the write lock, so a takeover they waited behind is seen.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_fencing_holds_under_a_repeatable_read_default() {
    let pg = PgDatabase::create();
    std::process::Command::new("psql")
        .arg(format!("{}/postgres", support::pgdb::server_url()))
        .args([
            "-qAtc",
            &format!("ALTER DATABASE {} SET default_transaction_isolation = 'repeatable read'", pg.url().rsplit('/').next().unwrap()),
        ])
        .status()
        .unwrap();
    let j = Journal::open(pg.url()).await.unwrap();
    let ttl = Duration::from_secs(30);
    let t1 = j.acquire_lease("a", "x", ttl).await.unwrap().unwrap();
    let far = tokio::time::Instant::now() + Duration::from_secs(60);
    let a = j.fenced_by(Arc::new(Term::new(t1, "a", far))).owned_by("a-proc");
    let m = Machine::new(policy());
    let id = a.create_incident(&new_incident("alpha"), &m, Utc::now()).await.unwrap();
    // Another session holds the write lock while the lease moves to b; a's write
    // waits behind it, then must see the new term.
    let mut other = sqlx::PgConnection::connect(&pg.url()).await.unwrap();
    use sqlx::Connection;
    sqlx::query("BEGIN").execute(&mut other).await.unwrap();
    sqlx::query("SELECT pg_advisory_xact_lock($1)").bind(orchestrator::journal::backend::PG_WRITE_LOCK).execute(&mut other).await.unwrap();
    sqlx::query("UPDATE leader SET term = term + 1, holder = 'b'").execute(&mut other).await.unwrap();
    let a2 = a.clone();
    let id2 = id.clone();
    let write = tokio::spawn(async move {
        let mut m1 = m.clone();
        let e = trigger();
        let d = m1.handle(&e);
        a2.record_decision(&id2, &e, &d, &m1, Utc::now()).await
    });
    // The write is queued behind the lock (PostgreSQL shows an ungranted advisory lock),
    // not done.
    support::world::wait_until(Duration::from_secs(10), "the write to wait for the journal's lock", || {
        let url = pg.url();
        async move {
            let Ok(mut c) = sqlx::PgConnection::connect(&url).await else { return false };
            let waiting: i64 = sqlx::query("SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' AND NOT granted")
                .fetch_one(&mut c)
                .await
                .map(|r| sqlx::Row::get(&r, 0))
                .unwrap_or(0);
            waiting == 1
        }
    })
    .await;
    assert!(!write.is_finished(), "the write waits for the lock");
    sqlx::query("COMMIT").execute(&mut other).await.unwrap();
    let err = write.await.unwrap().unwrap_err();
    assert!(matches!(err, JournalError::NotLeader(t) if t == t1), "{err:?}");
}
