//! Hardening II (issue 10), rows 6 and 10–14: alias bombs, concurrent first opens,
//! replayed signatures, weak or shared credentials, the OS user behind `--as`, plain
//! logs. The real binary against real SQLite files; the daemon's router on 127.0.0.1:0.

use orchestrator::journal::prelude::*;
use std::os::unix::process::CommandExt;
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

fn bin() -> Command {
    Command::new(env!("CARGO_BIN_EXE_orchestrator"))
}

fn text(o: &Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

/// Runs with an address-space cap, so a process that would balloon fails instead of
/// taking the machine with it.
fn capped(mut cmd: Command, bytes: u64) -> Output {
    // SAFETY: setrlimit is async-signal-safe; nothing else runs between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let lim = libc::rlimit { rlim_cur: bytes, rlim_max: bytes };
            if libc::setrlimit(libc::RLIMIT_AS, &lim) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    cmd.stdin(Stdio::null()).output().unwrap()
}

/// The "billion laughs": nine levels of nine aliases each.
fn alias_bomb() -> String {
    let mut s = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i", "j"];
    for w in names.windows(2) {
        let prev = w[0];
        s.push_str(&format!("{}: &{} [{}]\n", w[1], w[1], vec![format!("*{prev}"); 9].join(",")));
    }
    s
}

/// Row 6: an alias bomb, and a 1 MiB playbook of aliases, are checked in bounded time
/// and memory with a clear error.
#[test]
fn alias_bombs_are_refused_in_bounded_time_and_memory() {
    let dir = tempfile::tempdir().unwrap();
    let small = dir.path().join("bomb.yaml");
    std::fs::write(&small, alias_bomb()).unwrap();
    assert!(std::fs::metadata(&small).unwrap().len() < 600);
    // A 1 MiB file: one anchor of 30 nodes aliased tens of thousands of times.
    let mut big = String::from("base: &x [1,2,3,4,5,6,7,8,9,10,11,12,13,14,15,16,17,18,19,20,21,22,23,24,25,26,27,28,29]\nmany:\n");
    while big.len() < (1 << 20) - 16 {
        big.push_str("  - *x\n");
    }
    let big_path = dir.path().join("big.yaml");
    std::fs::write(&big_path, &big).unwrap();
    for path in [&small, &big_path] {
        let started = Instant::now();
        let mut cmd = bin();
        cmd.args(["playbook", "check"]).arg(path);
        let out = capped(cmd, 512 << 20);
        let took = started.elapsed();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{}: {t}", path.display());
        assert!(t.contains("aliases expand to more than"), "{t}");
        assert!(took < Duration::from_secs(10), "checked in {took:?}");
    }
}

/// Row 10: processes opening a journal that does not exist yet all succeed.
#[test]
fn concurrent_first_opens_of_a_new_journal_succeed() {
    let dir = tempfile::tempdir().unwrap();
    for round in 0..8 {
        let db = dir.path().join(format!("j{round}.db"));
        let children: Vec<_> = (0..6)
            .map(|_| bin().arg("--db").arg(&db).args(["pause", "--as", "t"]).stdout(Stdio::null()).stderr(Stdio::piped()).spawn().unwrap())
            .collect();
        for c in children {
            let out = c.wait_with_output().unwrap();
            assert_eq!(out.status.code(), Some(0), "round {round}: {}", text(&out));
        }
    }
}

fn sandbox_with(edits: &[(&str, &str)], dir: &Path) -> std::path::PathBuf {
    let mut t = std::fs::read_to_string("playbooks/sandbox.yaml").unwrap();
    for (a, b) in edits {
        assert!(t.contains(a), "{a}");
        t = t.replace(a, b);
    }
    let p = dir.join("playbook.yaml");
    std::fs::write(&p, t).unwrap();
    p
}

/// Row 12: off loopback every credential is distinct and at least 16 characters; the
/// Slack URL falls under the plain-http rule.
#[test]
fn weak_or_shared_credentials_and_plain_http_slack_are_refused() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let good = "approver-token-aaaaaaaaaaaa";
    let cases: &[(&[(&str, &str)], &str)] = &[
        (&[("ORCH_WEBHOOK_TOKEN", "x"), ("ORCH_APPROVER_TOKENS", "oncall=approver-token-aaaaaaaaaaaa")], "at least 16"),
        (&[("ORCH_WEBHOOK_HMAC_SECRET", "short"), ("ORCH_APPROVER_TOKENS", "oncall=approver-token-aaaaaaaaaaaa")], "at least 16"),
        (&[("ORCH_WEBHOOK_HMAC_SECRET", good), ("ORCH_APPROVER_TOKENS", "oncall=approver-token-aaaaaaaaaaaa")], "different secrets"),
        (
            &[
                ("ORCH_WEBHOOK_TOKEN", "webhook-token-bbbbbbbbbbbb"),
                ("ORCH_APPROVER_TOKENS", "oncall=approver-token-aaaaaaaaaaaa,lead=approver-token-aaaaaaaaaaaa"),
            ],
            "different secrets",
        ),
    ];
    for (env, expect) in cases {
        // Refused before anything is bound. A TEST-NET address (RFC 5737) that no
        // interface has: should the check ever pass, the bind fails instead of a test
        // listening off loopback.
        let out = bin()
            .arg("--db")
            .arg(&db)
            .args(["serve", "-p", "playbooks/sandbox.yaml", "--listen", "192.0.2.1:9", "--no-watch"])
            .envs(env.iter().copied())
            .stdin(Stdio::null())
            .output()
            .unwrap();
        let t = text(&out);
        assert_eq!(out.status.code(), Some(2), "{env:?}: {t}");
        assert!(t.contains(expect), "{env:?}: {t}");
        assert!(!t.contains(good), "{t}");
    }
    let pb = sandbox_with(&[("cooldown: 1m", "notifications:\n  slack:\n    webhook_url: \"${SLACK_URL}\"\ncooldown: 1m")], dir.path());
    let out =
        bin().args(["playbook", "check"]).arg(&pb).env("SLACK_URL", "http://hooks.example.com/services/T0/B0/secretpath").output().unwrap();
    let t = text(&out);
    assert_eq!(out.status.code(), Some(2), "{t}");
    assert!(t.contains("notifications.slack.webhook_url") && t.contains("plain http://"), "{t}");
    assert!(!t.contains("secretpath"), "{t}");
}

/// Row 13: the OS user is journaled with every CLI command, and where the playbook
/// maps approvers to OS users, `--as` must match: one shell is not two approvers.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvers_mapped_to_os_users_must_match_and_the_os_user_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let me = orchestrator::cli::osuser::OsUser::current();
    let pb = sandbox_with(
        &[(
            "  approvers: [oncall, lead]\n",
            &format!("  approvers: [oncall, lead]\n  os_users:\n    oncall: {}\n    lead: somebody-else\n", me.name),
        )],
        dir.path(),
    );
    let out = bin().arg("--db").arg(&db).args(["trigger", "-p"]).arg(&pb).env_remove("SUDO_USER").output().unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", text(&out));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    let run = |args: &[&str]| bin().arg("--db").arg(&db).args(args).env_remove("SUDO_USER").env_remove("ORCH_USER").output().unwrap();
    let lead = run(&["approve", &id, "--as", "lead"]);
    assert_eq!(lead.status.code(), Some(2), "{}", text(&lead));
    assert!(text(&lead).contains("refused: approver \"lead\" is OS user \"somebody-else\""), "{}", text(&lead));
    let stranger = run(&["approve", &id, "--as", "mallory"]);
    assert_eq!(stranger.status.code(), Some(2));
    assert!(text(&stranger).contains("not mapped to an OS user"), "{}", text(&stranger));
    // As oncall it is journaled (and refused by the machine later: no gate is open).
    let oncall = run(&["approve", &id, "--as", "oncall"]);
    assert!(text(&oncall).contains("journaled"), "{}", text(&oncall));
    let abort = run(&["abort", &id, "--as", "anyone", "--comment", "drill over"]);
    assert_eq!(abort.status.code(), Some(0), "{}", text(&abort));
    let pause = run(&["pause", "--as", "ops"]);
    assert_eq!(pause.status.code(), Some(0));

    let j = orchestrator::journal::Journal::open_existing(&db).await.unwrap();
    let cmds = j.commands(&id).await.unwrap();
    assert_eq!(cmds.len(), 2, "only the matching approval and the abort are journaled: {cmds:?}");
    let expected = format!("{} (uid {})", me.name, me.uid);
    for c in &cmds {
        assert_eq!(c.os_user.as_deref(), Some(expected.as_str()), "{c:?}");
    }
    let row: (Option<String>, Option<String>) =
        sqlx::query_as("SELECT (SELECT os_user FROM settings WHERE key = 'paused'), (SELECT os_user FROM incidents WHERE id = ?)")
            .bind(&id)
            .fetch_one(j.pool())
            .await
            .unwrap();
    assert_eq!(row, (Some(expected.clone()), Some(expected)));
}

/// Row 14: logs redirected to a file are plain text; `--log-format json` writes one
/// JSON object a line.
#[test]
fn logs_to_a_file_have_no_colour_and_json_logs_are_one_object_a_line() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("j.db");
    let plain = bin().arg("--db").arg(&db).args(["--log", "debug", "pause", "--as", "t"]).output().unwrap();
    let err = String::from_utf8_lossy(&plain.stderr).to_string();
    assert!(err.lines().count() > 2, "debug logs were written: {err}");
    assert!(!err.contains('\u{1b}'), "ANSI escapes in a redirected log: {err:?}");
    let json = bin().arg("--db").arg(&db).args(["--log", "debug", "--log-format", "json", "unpause", "--as", "t"]).output().unwrap();
    let err = String::from_utf8_lossy(&json.stderr).to_string();
    assert!(err.lines().count() > 2, "{err}");
    for line in err.lines() {
        let v: serde_json::Value = serde_json::from_str(line).unwrap_or_else(|e| panic!("not JSON ({e}): {line}"));
        assert!(v.get("level").is_some() && v.get("timestamp").is_some(), "{line}");
    }
}
