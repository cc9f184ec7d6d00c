//! The binary's command line: exit codes, one clear line for unknown incidents and
//! unreadable journals, playbook check output, refused approvals, changed playbooks.

mod support;

use orchestrator::journal::prelude::*;
use std::process::Output;
use support::world::World;

fn orchestrator(args: &[&str]) -> Output {
    std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator")).args(args).output().unwrap()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).to_string()
}

#[test]
fn playbook_check_exit_codes_and_positions() {
    let ok = orchestrator(&["playbook", "check", "playbooks/sandbox.yaml"]);
    assert_eq!(ok.status.code(), Some(0), "{}", stderr(&ok));
    assert!(String::from_utf8_lossy(&ok.stdout).contains("playbook \"sandbox\" is valid"));

    let dir = tempfile::tempdir().unwrap();
    let bad = dir.path().join("bad.yaml");
    let text = std::fs::read_to_string("playbooks/sandbox.yaml")
        .unwrap()
        .replace("confirm_window: 1s", "confirm_window: 1 sec")
        .replace("cooldown: 1m", "cooldown: 1m\ncooldwn: 2m")
        .replace("${SANDBOX_PRIMARY_URL:-redis://127.0.0.1:6391}", "${SANDBOX_PRIMARY_URL_UNSET_FOR_TEST}");
    std::fs::write(&bad, &text).unwrap();
    let out = orchestrator(&["playbook", "check", bad.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(2));
    let err = stderr(&out);
    let line_of = |needle: &str| text.lines().position(|l| l.contains(needle)).unwrap() + 1;
    let path = bad.display().to_string();
    assert!(err.contains(&format!("{path}:{}:", line_of("cooldwn"))) && err.contains("unknown field `cooldwn`"), "{err}");
    assert!(err.contains(&format!("{path}:{}:", line_of("1 sec"))) && err.contains("invalid duration"), "{err}");
    assert!(
        err.contains(&format!("{path}:{}:", line_of("SANDBOX_PRIMARY_URL_UNSET_FOR_TEST")))
            && err.contains("SANDBOX_PRIMARY_URL_UNSET_FOR_TEST` is not set"),
        "{err}"
    );
    assert!(err.contains("3 problems"), "{err}");

    let missing = orchestrator(&["playbook", "check", "/nonexistent/playbook.yaml"]);
    assert_eq!(missing.status.code(), Some(2));
    assert!(stderr(&missing).starts_with("error: cannot read playbook"));
}

#[test]
fn unknown_incidents_and_missing_or_unreadable_journals_give_one_clear_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let db = db.to_str().unwrap();

    let out = orchestrator(&["--db", db, "incidents"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("no journal at"));

    // An empty journal exists once something wrote it.
    assert_eq!(orchestrator(&["--db", db, "pause", "--as", "carol"]).status.code(), Some(0));
    let out = orchestrator(&["--db", db, "audit", "inc-nope"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).trim(), "error: no incident with id \"inc-nope\"");
    let out = orchestrator(&["--db", db, "approve", "inc-nope", "--as", "oncall"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("no incident with id"));

    let garbage = dir.path().join("garbage.db");
    std::fs::write(&garbage, b"this is not a sqlite database at all, just text").unwrap();
    let out = orchestrator(&["--db", garbage.to_str().unwrap(), "incidents"]);
    assert_eq!(out.status.code(), Some(1));
    assert_eq!(stderr(&out).lines().count(), 1, "{}", stderr(&out));
    assert!(stderr(&out).contains("cannot open journal") || stderr(&out).contains("journal"), "{}", stderr(&out));

    let usage = orchestrator(&["frobnicate"]);
    assert_eq!(usage.status.code(), Some(2));
    let help = orchestrator(&["--help"]);
    assert_eq!(help.status.code(), Some(0));
    let text = String::from_utf8_lossy(&help.stdout);
    for cmd in [
        "serve",
        "run",
        "trigger",
        "approve",
        "reject",
        "abort",
        "resume",
        "incidents",
        "audit",
        "report",
        "playbook",
        "check",
        "pause",
        "unpause",
    ] {
        assert!(text.contains(cmd), "--help lists {cmd}");
    }
    assert!(text.contains("Exit codes"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn gate_exit_code_refused_approver_changed_playbook_and_resume() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let playbook = w.playbook_file(&[("  steps: []", "  steps: [flush]"), ("verify_window: 15s", "verify_window: 4s")]);
    let pb = playbook.to_str().unwrap();
    let db = w.journal_path();
    let db = db.to_str().unwrap();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator")).arg("--db").arg(db).args(args).envs(&w.env).output().unwrap()
    };

    let out = run(&["run", "--playbook", pb]);
    assert_eq!(out.status.code(), Some(3), "awaiting approval: {}", stderr(&out));
    let j = orchestrator::journal::Journal::open_existing(&w.journal_path()).await.unwrap();
    let id = j.incidents(1).await.unwrap()[0].id.clone();
    assert_eq!(j.incident(&id).await.unwrap().state, "awaiting_approval");

    // Someone not on the list: journaled, refused, exit 2.
    let out = run(&["approve", &id, "--as", "mallory", "--comment", "trust me"]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("not on the approver list"), "{}", stderr(&out));

    // The playbook changes: resume refuses without the flag.
    std::fs::write(&playbook, std::fs::read_to_string(&playbook).unwrap().replace("cooldown: 1m", "cooldown: 2m")).unwrap();
    let out = run(&["resume", &id, "--playbook", pb]);
    assert_eq!(out.status.code(), Some(2));
    assert!(stderr(&out).contains("--allow-changed-playbook"), "{}", stderr(&out));

    let out = run(&["approve", &id, "--as", "oncall", "--comment", "flush is fine"]);
    assert_eq!(out.status.code(), Some(0), "{}", stderr(&out));
    let out = run(&["resume", &id, "--playbook", pb, "--allow-changed-playbook"]);
    assert_eq!(out.status.code(), Some(0), "recovered: {}", stderr(&out));

    let cmds = j.commands(&id).await.unwrap();
    assert_eq!(
        cmds.iter().map(|c| (c.actor.as_str(), c.accepted)).collect::<Vec<_>>(),
        vec![("mallory", Some(false)), ("oncall", Some(true))]
    );
    let audit = run(&["audit", &id]);
    let text = String::from_utf8_lossy(&audit.stdout);
    assert!(text.contains("REFUSED") && text.contains("mallory") && text.contains("“trust me”"), "{text}");
    assert!(text.contains("Outcome  RECOVERED"), "{text}");
    let out = run(&["abort", &id, "--as", "oncall"]);
    assert_eq!(out.status.code(), Some(2), "nothing to abort after the end");
}
