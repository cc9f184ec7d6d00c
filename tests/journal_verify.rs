//! The tamper-evident journal (issue 10, row 5): every kind of tampering with a real
//! SQLite journal is detected by `orchestrator journal verify` and named; REPLACE is
//! refused by the database itself; an untouched journal of a crashed-and-resumed
//! incident verifies.

mod support;

use orchestrator::journal::prelude::*;
use support::policy;

use chrono::Utc;
use orchestrator::journal::{CommandKind, Journal, NewAlert, NewIncident};
use orchestrator::machine::{Check, Event, Machine};
use orchestrator::model::FailureClass;
use std::path::Path;
use std::process::Stdio;
use std::time::Duration;

async fn feed(j: &Journal, id: &str, m: &mut Machine, e: Event) {
    let d = m.handle(&e);
    j.record_decision(id, &e, &d, m, Utc::now()).await.unwrap();
}

/// A journal with one incident that has every kind of history: open, transitions with
/// checks, an effect with its outcome, an approval applied, an abort (close), an
/// alert and a setting.
async fn journal_with_history(path: &Path) -> String {
    let j = Journal::open(path).await.unwrap();
    let mut m = Machine::new(policy());
    let new = NewIncident {
        playbook_name: "t".into(),
        playbook_path: "t.yaml".into(),
        playbook_hash: "abc".into(),
        target: "127.0.0.1:7001/0".into(),
        trigger_source: "test".into(),
        trigger_detail: "drill".into(),
        os_user: None,
        approver_os_users: Default::default(),
    };
    let id = j.create_incident(&new, &m, Utc::now()).await.unwrap();
    feed(&j, &id, &mut m, Event::Trigger { source: "test".into(), detail: "".into(), from: Default::default(), planned: false }).await;
    feed(&j, &id, &mut m, Event::ConfirmChecked { checks: vec![Check::new("ping_failed", true, "refused")] }).await;
    let preflight = vec![Check::new("backup_ping", true, "PONG"), Check::new("backup_latency", true, "1 ms")];
    feed(&j, &id, &mut m, Event::Assessed { class: FailureClass::ConnectionRefused, detail: "".into(), preflight, primary_answers: false })
        .await;
    j.effect_intent(&id, &format!("{id}:set_env:1"), "set_env", &serde_json::json!({"to": "backup"}), Utc::now()).await.unwrap();
    j.effect_outcome(&format!("{id}:set_env:1"), "ok", &serde_json::json!({"read_back": true}), Utc::now()).await.unwrap();
    feed(&j, &id, &mut m, Event::Switched { ok: true, detail: "".into() }).await;
    assert_eq!(m.state().name(), "awaiting_approval");
    let cmd = j.add_command(&id, CommandKind::Approve, "alice", "lgtm", "cli", Utc::now()).await.unwrap();
    let e = Event::Approve { approver: "alice".into(), comment: "lgtm".into() };
    let d = m.handle(&e);
    j.record_command_decision(&id, &e, &d, &m, Utc::now(), (cmd, true, "approved")).await.unwrap();
    feed(&j, &id, &mut m, Event::Abort { actor: "bob".into(), reason: "drill over".into() }).await;
    let alert = NewAlert {
        source: "generic".into(),
        fingerprint: "f".into(),
        status: "firing".into(),
        target: new.target.clone(),
        summary: "s".into(),
    };
    j.record_alert(&alert, Some(&id), "attached", Utc::now()).await.unwrap();
    j.set_setting("paused", "1", "ops", Utc::now()).await.unwrap();
    // A topology that needs a person (held on the backup): the row that gates failover.
    let held = orchestrator::topology::after_close(
        orchestrator::model::Outcome::Held,
        orchestrator::model::Side::Primary,
        true,
        &id,
        Duration::from_secs(60),
    )
    .unwrap();
    assert!(j.change_topology("t", &orchestrator::topology::Topology::as_written("t"), &held, false, Utc::now()).await.unwrap());
    // A second incident that closes (a false alarm): its close is history too.
    let mut m2 = Machine::new(policy());
    let other = NewIncident { target: "127.0.0.1:7002/0".into(), ..new };
    let id2 = j.create_incident(&other, &m2, Utc::now()).await.unwrap();
    feed(&j, &id2, &mut m2, Event::Trigger { source: "test".into(), detail: "".into(), from: Default::default(), planned: false }).await;
    feed(&j, &id2, &mut m2, Event::ConfirmChecked { checks: vec![Check::new("ping_failed", false, "PONG")] }).await;
    assert_eq!(m2.state().name(), "false_alarm");
    j.close().await;
    id
}

fn verify(db: &Path) -> (Option<i32>, String) {
    let out =
        std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator")).arg("--db").arg(db).args(["journal", "verify"]).output().unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

/// Tampers with a copy of the journal through a plain SQLite connection (what anyone
/// with write access to the file can do), then verifies it.
async fn tampered(sql: &[&str]) -> (Option<i32>, String, String) {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let id = journal_with_history(&db).await;
    let (code, text) = verify(&db);
    assert_eq!(code, Some(0), "untouched journal verifies: {text}");
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    for s in sql {
        let s = s.replace("$ID", &id);
        sqlx::query(sqlx::AssertSqlSafe(s.clone())).execute(&pool).await.unwrap_or_else(|e| panic!("{s}: {e}"));
    }
    pool.close().await;
    let (code, text) = verify(&db);
    (code, text, id)
}

fn drop_all_triggers() -> Vec<String> {
    let names = [
        "transitions_append_only_update",
        "transitions_append_only_delete",
        "transitions_no_replace",
        "checks_no_update",
        "checks_no_delete",
        "effects_outcome_once",
        "effects_no_delete",
        "commands_applied_once",
        "commands_no_delete",
        "incidents_fixed",
        "incidents_no_delete",
        "incidents_no_replace",
    ];
    names.iter().map(|n| format!("DROP TRIGGER {n}")).collect()
}

fn with_dropped(extra: &[&str]) -> Vec<String> {
    let mut v = drop_all_triggers();
    v.extend(extra.iter().map(|s| s.to_string()));
    v
}

async fn expect(sql: Vec<String>, needles: &[&str]) {
    let refs: Vec<&str> = sql.iter().map(String::as_str).collect();
    let (code, text, _) = tampered(&refs).await;
    assert_eq!(code, Some(10), "tampering {sql:?} must fail verification:\n{text}");
    for n in needles {
        assert!(text.contains(n), "expected {n:?} in:\n{text}");
    }
}

#[tokio::test]
async fn an_update_with_triggers_dropped_is_named() {
    expect(
        with_dropped(&["UPDATE transitions SET note = 'nothing happened' WHERE seq = 3 AND incident_id = '$ID'"]),
        &["transitions row", "seq 3, assessed", "differs from what was recorded", "trigger transitions_append_only_update was dropped"],
    )
    .await;
}

#[tokio::test]
async fn a_delete_is_named() {
    expect(with_dropped(&["DELETE FROM checks WHERE item = 'backup_latency'"]), &["checks row", "is missing (deleted)"]).await;
}

#[tokio::test]
async fn a_replace_is_refused_by_the_database_and_named_when_forced() {
    // With the triggers in place the database refuses REPLACE itself.
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let id = journal_with_history(&db).await;
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", db.display())).await.unwrap();
    for sql in [
        format!("REPLACE INTO transitions (id, incident_id, seq, at, from_state, to_state, event, observations, actor, machine) SELECT id, incident_id, seq, at, from_state, 'recovered', event, observations, actor, machine FROM transitions WHERE incident_id = '{id}' AND seq = 2"),
        format!("INSERT OR REPLACE INTO effects (id, incident_id, key, kind, intent, intent_at, outcome) SELECT id, incident_id, key, kind, intent, intent_at, 'failed' FROM effects WHERE incident_id = '{id}'"),
        format!("REPLACE INTO commands (id, incident_id, kind, actor, comment, via, at) SELECT id, incident_id, kind, 'mallory', comment, via, at FROM commands WHERE incident_id = '{id}'"),
        "REPLACE INTO alerts (id, received_at, source, fingerprint, status, target, summary, disposition) SELECT id, received_at, source, 'x', status, target, summary, disposition FROM alerts".to_string(),
        format!("REPLACE INTO incidents (id, playbook_name, playbook_path, playbook_hash, target, state, machine, opened_at, trigger_source) SELECT id, 'evil', playbook_path, playbook_hash, target, state, machine, opened_at, trigger_source FROM incidents WHERE id = '{id}'"),
        "REPLACE INTO ledger (id, chain, pos, kind, row_table, row_id, content, prev, hash) SELECT id, chain, pos, kind, row_table, row_id, content, prev, 'x' FROM ledger WHERE pos = 1".to_string(),
    ] {
        let err = sqlx::query(sqlx::AssertSqlSafe(sql.clone())).execute(&pool).await.expect_err(&sql).to_string();
        assert!(err.contains("REPLACE refused") || err.contains("incidents.target"), "{sql}: {err}");
    }
    pool.close().await;
    assert_eq!(verify(&db).0, Some(0), "nothing changed");
    // Forced with the guard dropped: named.
    expect(
        with_dropped(&["REPLACE INTO transitions (id, incident_id, seq, at, from_state, to_state, event, observations, actor, machine) SELECT id, incident_id, seq, at, from_state, 'recovered', event, observations, actor, machine FROM transitions WHERE incident_id = '$ID' AND seq = 2"]),
        &["seq 2, confirm_checked", "differs from what was recorded", "trigger transitions_no_replace was dropped"],
    )
    .await;
}

#[tokio::test]
async fn a_row_inserted_in_the_middle_is_named() {
    expect(
        with_dropped(&["INSERT INTO transitions (incident_id, seq, at, from_state, to_state, event, observations, actor, machine) SELECT incident_id, 99, at, 'confirm', 'false_alarm', 'confirm_checked', observations, 'orchestrator', machine FROM transitions WHERE incident_id = '$ID' AND seq = 2"]),
        &["seq 99, confirm_checked", "is not in the chain (inserted"],
    )
    .await;
}

#[tokio::test]
async fn a_dropped_trigger_alone_is_named() {
    expect(vec!["DROP TRIGGER effects_outcome_once".into()], &["trigger effects_outcome_once was dropped"]).await;
    // Re-created with another body: named too.
    expect(
        vec!["DROP TRIGGER checks_no_update".into(), "CREATE TRIGGER checks_no_update BEFORE UPDATE ON checks BEGIN SELECT 1; END".into()],
        &["trigger checks_no_update was changed"],
    )
    .await;
}

#[tokio::test]
async fn an_edited_effect_outcome_is_named() {
    expect(
        with_dropped(&["UPDATE effects SET outcome = 'failed' WHERE kind = 'set_env'"]),
        &["effects row", "set_env", "(its outcome) differs"],
    )
    .await;
}

#[tokio::test]
async fn an_edited_approval_is_named() {
    expect(
        with_dropped(&["UPDATE commands SET actor = 'mallory' WHERE kind = 'approve'"]),
        &["commands row", "approve by mallory", "differs"],
    )
    .await;
    expect(with_dropped(&["UPDATE commands SET accepted = 0 WHERE kind = 'approve'"]), &["(its application) differs"]).await;
}

#[tokio::test]
async fn an_edited_close_alert_setting_or_ledger_is_named() {
    expect(with_dropped(&["UPDATE incidents SET outcome = 'recovered' WHERE outcome = 'false_alarm'"]), &["(its close) differs"]).await;
    expect(with_dropped(&["UPDATE incidents SET trigger_detail = 'routine' WHERE id = '$ID'"]), &["(its open) differs"]).await;
    expect(
        vec!["DROP TRIGGER alerts_no_update".into(), "UPDATE alerts SET summary = 'nothing'".into()],
        &["alerts row 1 (generic firing) differs"],
    )
    .await;
    expect(vec!["UPDATE settings SET value = '0'".into()], &["settings row 1 (paused) differs"]).await;
    expect(
        vec![
            "DROP TRIGGER ledger_no_update".into(),
            "UPDATE ledger SET content = 'x' WHERE pos = 2 AND chain != 'alerts' AND chain != 'settings'".into(),
        ],
        &["ledger entry 2", "does not follow from its predecessor"],
    )
    .await;
}

/// The head printed by `audit` and `report` is the chain's head; `verify ID` checks
/// one incident.
#[tokio::test]
async fn audit_and_report_print_the_head_that_verify_checks() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let id = journal_with_history(&db).await;
    let j = Journal::open_existing(&db).await.unwrap();
    let head = j.head(&id).await.unwrap().expect("a chain");
    let run = |args: &[&str]| {
        let o = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator")).arg("--db").arg(&db).args(args).output().unwrap();
        (o.status.code(), String::from_utf8_lossy(&o.stdout).to_string())
    };
    assert!(run(&["audit", &id]).1.contains(&format!("Journal  head {head}")));
    assert!(run(&["report", &id]).1.contains(&head));
    let (code, text) = run(&["journal", "verify", &id]);
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&head), "{text}");
}

/// An untouched journal of a crashed-and-resumed incident verifies: the crash between
/// the deploy's intent and its outcome leaves nothing that looks like tampering.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crashed_and_resumed_incident_verifies() {
    let w = support::world::World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let pb = w.playbook_file(&[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")]);
    let run = |args: Vec<String>, crash: Option<&str>| {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        cmd.arg("--db")
            .arg(w.journal_path())
            .args(args)
            .envs(&w.env)
            .env_remove("ORCH_FAULT_CRASH_AT")
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        if let Some(c) = crash {
            cmd.env("ORCH_FAULT_CRASH_AT", c);
        }
        async move { tokio::time::timeout(Duration::from_secs(90), cmd.output()).await.expect("finished in time").unwrap() }
    };
    let first = run(vec!["run".into(), "-p".into(), pb.display().to_string()], Some("intent:deploy")).await;
    assert!(first.status.code().is_none(), "killed at the crash point");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let id = j.incidents(1).await.unwrap()[0].id.clone();
    let resumed = run(vec!["resume".into(), id.clone(), "-p".into(), pb.display().to_string()], None).await;
    assert_eq!(resumed.status.code(), Some(0), "{}", String::from_utf8_lossy(&resumed.stderr));
    let (code, text) = verify(&w.journal_path());
    assert_eq!(code, Some(0), "{text}");
    assert!(text.contains(&id) && text.contains("every chain holds"), "{text}");
}
