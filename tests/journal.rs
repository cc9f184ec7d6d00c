//! The journal against a real SQLite file: append-only transitions, resume from the
//! journal alone, commands, effects, and a locked database.

use chrono::Utc;
use orchestrator::journal::prelude::*;
use orchestrator::journal::{CommandKind, Journal, JournalError, NewIncident};
use orchestrator::machine::{Check, Event, Machine};
use orchestrator::model::FailureClass;
use std::time::Duration;
use support::policy;

mod support;

fn new_incident() -> NewIncident {
    NewIncident {
        playbook_name: "t".into(),
        playbook_path: "t.yaml".into(),
        playbook_hash: "abc".into(),
        target: "127.0.0.1:7001/0".into(),
        trigger_source: "test".into(),
        trigger_detail: "".into(),
        os_user: None,
        approver_os_users: Default::default(),
    }
}

async fn feed(j: &Journal, id: &str, m: &mut Machine, e: Event) {
    let d = m.handle(&e);
    j.record_decision(id, &e, &d, m, Utc::now()).await.unwrap();
}

#[tokio::test]
async fn transitions_are_append_only_in_the_database() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).await.unwrap();
    let mut m = Machine::new(policy());
    let id = j.create_incident(&new_incident(), &m, Utc::now()).await.unwrap();
    feed(&j, &id, &mut m, Event::Trigger { source: "test".into(), detail: "".into(), from: Default::default(), planned: false }).await;

    let upd = sqlx::query("UPDATE transitions SET to_state = 'recovered'").execute(j.pool()).await;
    let err = upd.expect_err("UPDATE must fail").to_string();
    assert!(err.contains("append-only"), "{err}");
    let del = sqlx::query("DELETE FROM transitions").execute(j.pool()).await;
    assert!(del.expect_err("DELETE must fail").to_string().contains("append-only"));
    assert_eq!(j.transitions(&id).await.unwrap().len(), 1, "the row is still there");
}

#[tokio::test]
async fn an_incident_resumes_from_the_journal_alone() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let id;
    {
        let j = Journal::open(&path).await.unwrap();
        let mut m = Machine::new(policy());
        id = j.create_incident(&new_incident(), &m, Utc::now()).await.unwrap();
        feed(&j, &id, &mut m, Event::Trigger { source: "test".into(), detail: "".into(), from: Default::default(), planned: false }).await;
        feed(&j, &id, &mut m, Event::ConfirmChecked { checks: vec![Check::new("ping_failed", true, "refused")] }).await;
        feed(
            &j,
            &id,
            &mut m,
            Event::Assessed {
                class: FailureClass::ConnectionRefused,
                detail: "".into(),
                preflight: vec![Check::new("backup_ping", true, "PONG")],
                primary_answers: false,
            },
        )
        .await;
        feed(&j, &id, &mut m, Event::Switched { ok: true, detail: "".into() }).await;
        assert_eq!(m.state().name(), "awaiting_approval");
        j.close().await;
    }
    // A new process: only the file.
    let j = Journal::open_existing(&path).await.unwrap();
    let inc = j.incident(&id).await.unwrap();
    assert_eq!(inc.state, "awaiting_approval");
    assert!(inc.is_open());
    let mut m = j.machine(&id).await.unwrap();
    assert!(m.incident().switched, "what the incident learned survives");
    assert_eq!(m.incident().class, Some(FailureClass::ConnectionRefused));
    feed(&j, &id, &mut m, Event::Approve { approver: "alice".into(), comment: "go".into() }).await;
    assert_eq!(j.incident(&id).await.unwrap().state, "flush");
    let rows = j.transitions(&id).await.unwrap();
    assert_eq!(rows.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![1, 2, 3, 4, 5]);
    assert_eq!(rows[4].actor, "alice");
    let checks = j.checks(&id).await.unwrap();
    assert_eq!(checks.iter().map(|c| c.phase.as_str()).collect::<Vec<_>>(), vec!["confirm", "preflight"]);
}

#[tokio::test]
async fn rejected_events_are_journaled_without_changing_state() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).await.unwrap();
    let mut m = Machine::new(policy());
    let id = j.create_incident(&new_incident(), &m, Utc::now()).await.unwrap();
    feed(&j, &id, &mut m, Event::Approve { approver: "mallory".into(), comment: "".into() }).await;
    let rows = j.transitions(&id).await.unwrap();
    assert_eq!(rows.len(), 1);
    assert!(rows[0].rejected.as_deref().unwrap().contains("not accepted"));
    assert_eq!(j.incident(&id).await.unwrap().state, "detect");
}

#[tokio::test]
async fn effects_keep_one_intent_per_key_and_commands_queue() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).await.unwrap();
    let m = Machine::new(policy());
    let id = j.create_incident(&new_incident(), &m, Utc::now()).await.unwrap();
    let intent = serde_json::json!({"env": "redis://***@h"});
    assert!(j.effect_intent(&id, "k1", "set_env", &intent, Utc::now()).await.unwrap().is_none(), "first intent is new");
    let again = j.effect_intent(&id, "k1", "set_env", &intent, Utc::now()).await.unwrap().expect("second sees the first");
    assert!(again.outcome.is_none(), "in flight");
    j.effect_outcome("k1", "ok", &serde_json::json!({}), Utc::now()).await.unwrap();
    assert_eq!(j.effect("k1").await.unwrap().unwrap().outcome.as_deref(), Some("ok"));

    let c = j.add_command(&id, CommandKind::Approve, "alice", "lgtm", "cli", Utc::now()).await.unwrap();
    assert_eq!(j.pending_commands(&id).await.unwrap().len(), 1);
    j.command_applied(c, true, "ok", Utc::now()).await.unwrap();
    assert!(j.pending_commands(&id).await.unwrap().is_empty());
    let err = j.add_command("inc-nope", CommandKind::Abort, "a", "", "cli", Utc::now()).await.unwrap_err();
    assert!(matches!(err, JournalError::UnknownIncident(_)));
}

#[tokio::test]
async fn a_missing_journal_is_an_error_not_an_empty_one() {
    let dir = tempfile::tempdir().unwrap();
    let err = Journal::open_existing(&dir.path().join("typo.db")).await.err().unwrap();
    assert!(matches!(err, JournalError::Missing(_)));
    assert!(!dir.path().join("typo.db").exists(), "nothing created");
}

#[tokio::test]
async fn a_journal_locked_by_another_writer_reports_busy() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("j.db");
    let j = Journal::open_with(&path, true, Duration::from_millis(200)).await.unwrap();
    // Another process holds the write lock.
    let mut locker = std::process::Command::new("sqlite3").arg(&path).stdin(std::process::Stdio::piped()).spawn().expect("sqlite3 on PATH");
    use std::io::Write;
    let stdin = locker.stdin.as_mut().unwrap();
    // `.timeout` so sqlite3 waits for a lock instead of failing its BEGIN.
    writeln!(stdin, ".timeout 5000\nBEGIN IMMEDIATE; INSERT INTO settings (key, value, set_by, at) VALUES ('x','1','t','t');").unwrap();
    stdin.flush().unwrap();
    // Wait until the lock is really held (a write from here fails with Busy).
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    let mut saw_busy = false;
    while std::time::Instant::now() < deadline {
        match j.set_setting("paused", "1", "t", Utc::now()).await {
            Err(e) if e.is_retryable() => {
                saw_busy = true;
                break;
            }
            Ok(()) => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("unexpected {e}"),
        }
    }
    assert!(saw_busy, "a locked journal reports Busy (retryable)");
    writeln!(stdin, "ROLLBACK;").unwrap();
    drop(locker.stdin.take());
    locker.wait().unwrap();
    // Right after sqlite3 exits a read may meet its WAL mid-change (retryable, as the
    // executor and intake treat it): write again until the deadline.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        match j.set_setting("paused", "1", "t", Utc::now()).await {
            Ok(()) => break,
            Err(e) if e.is_retryable() && std::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(20)).await,
            Err(e) => panic!("writes again once the lock is gone: {e}"),
        }
    }
    assert!(j.paused().await.unwrap());
}

#[tokio::test]
async fn the_database_allows_one_open_incident_per_target_and_one_driver() {
    let dir = tempfile::tempdir().unwrap();
    let j = Journal::open(&dir.path().join("j.db")).await.unwrap();
    let m = Machine::new(policy());
    let id = j.create_incident(&new_incident(), &m, Utc::now()).await.unwrap();
    let err = j.create_incident(&new_incident(), &m, Utc::now()).await.unwrap_err();
    assert!(matches!(err, JournalError::AlreadyOpen(_)), "{err}");

    // Claims: a live other owner holds it; a writer that lost the claim is fenced.
    let me = j.owned_by("this-host:1");
    let other = j.owned_by(&orchestrator::journal::process_owner());
    other.claim(&id, Utc::now()).await.unwrap();
    let held = me.claim(&id, Utc::now()).await.unwrap_err();
    assert!(matches!(held, JournalError::HeldBy { .. }), "{held}");
    let mut m2 = m.clone();
    let e = Event::Trigger { source: "t".into(), detail: "".into(), from: Default::default(), planned: false };
    let d = m2.handle(&e);
    let fenced = me.record_decision(&id, &e, &d, &m2, Utc::now()).await.unwrap_err();
    assert!(matches!(fenced, JournalError::LeaseLost(_)), "{fenced}");
    assert!(j.transitions(&id).await.unwrap().is_empty(), "nothing written by the fenced writer");
    other.record_decision(&id, &e, &d, &m2, Utc::now()).await.expect("the owner writes");
    // A lapsed lease can be taken over.
    let later = Utc::now() + chrono::Duration::seconds(120);
    me.claim(&id, later).await.expect("lapsed lease taken over");
    other.release(&id).await.unwrap();
    assert!(other.record_decision(&id, &e, &d, &m2, Utc::now()).await.is_err(), "the old owner is fenced out");
}
