//! The fault matrix, each with real processes: a platform answering 429, 500 or
//! timing out; Slack down; the journal locked; Redis flapping during Confirm; the old
//! primary returning mid-incident; the backup dying after the switch; SIGTERM in the
//! middle of a flush; SIGTERM to `serve` with an incident at a gate.

mod support;

use orchestrator::executor::RunEnd;
use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use orchestrator::model::Outcome;
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;
use support::world::*;

const FAST: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];

fn edits(extra: &[(&'static str, &'static str)]) -> Vec<(&'static str, &'static str)> {
    let mut e = FAST.to_vec();
    e.extend_from_slice(extra);
    e
}

fn faults(w: &World, patch: sandbox::FaultsPatch) {
    w.sandbox.platform().set_faults(patch).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn platform_429s_are_retried_with_retry_after_and_the_write_happens_once() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    faults(&w, sandbox::FaultsPatch { respond_429: Some(3), retry_after_secs: Some(1), ..Default::default() });
    let exec = w.executor(FAST).await;
    let id = exec.open("test", "429s").await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::Finished(Outcome::Recovered));
    assert_eq!(w.env_writes().len(), 1);
    assert_eq!(w.sandbox.platform().stats().deploy_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_answering_500_before_the_switch_escalates_without_writing() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    faults(&w, sandbox::FaultsPatch { respond_500: Some(100_000), ..Default::default() });
    let exec = w.executor(&edits(&[("retry_deadline: 10s", "retry_deadline: 1s")])).await;
    let id = exec.open("test", "platform down").await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::Finished(Outcome::Escalated));
    assert!(w.env_writes().is_empty());
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let failing: Vec<_> = j.checks(&id).await.unwrap().into_iter().filter(|c| c.phase == "preflight" && !c.holds).collect();
    assert_eq!(failing.len(), 1, "{failing:?}");
    assert_eq!(failing[0].item, "platform_url_known");
    assert!(failing[0].observed.contains("platform did not answer"), "{}", failing[0].observed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_platform_timing_out_escalates_at_the_deadline() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    faults(&w, sandbox::FaultsPatch { delay_ms: Some(3_000), ..Default::default() });
    let exec = w.executor(&edits(&[("request_timeout: 2s\n  retry_deadline: 10s", "request_timeout: 300ms\n  retry_deadline: 1s")])).await;
    let id = exec.open("test", "platform slow").await.unwrap();
    let started = std::time::Instant::now();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::Finished(Outcome::Escalated));
    assert!(started.elapsed() < Duration::from_secs(20), "bounded by the deadline, not by the platform");
    assert!(w.env_writes().is_empty());
}

/// Deploy gated, so the fault is injected exactly between Switch and Deploy.
async fn platform_fails_at_deploy(n500: u32) -> (World, String, RunEnd) {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = Arc::new(w.executor(&edits(&[("  steps: []", "  steps: [deploy]"), ("retry_deadline: 10s", "retry_deadline: 2s")])).await);
    let id = exec.open("test", "platform fails at deploy").await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::AwaitingApproval(orchestrator::model::Step::Deploy));
    faults(&w, sandbox::FaultsPatch { respond_500: Some(n500), ..Default::default() });
    exec.journal
        .add_command(&id, orchestrator::journal::CommandKind::Approve, "oncall", "deploy", "cli", chrono::Utc::now())
        .await
        .unwrap();
    let end = exec.run(&id).await.unwrap();
    (w, id, end)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn transient_500s_at_deploy_are_retried_and_recover() {
    let (w, _id, end) = platform_fails_at_deploy(3).await;
    assert_eq!(end, RunEnd::Finished(Outcome::Recovered));
    assert_eq!(w.sandbox.platform().stats().deploy_count, 1, "one deploy despite the retries");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn persistent_500s_at_deploy_roll_back_then_escalate() {
    let (w, id, end) = platform_fails_at_deploy(100_000).await;
    // The deploy cannot be started (nor retried); the primary is dead, so rolling
    // back cannot help: hold, with the flushed backup in the platform's env var.
    assert_eq!(end, RunEnd::Finished(Outcome::Held), "the deploy fails and the primary is dead");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let t: Vec<_> = j.transitions(&id).await.unwrap().into_iter().map(|t| (t.from_state, t.to_state)).collect();
    assert!(!t.contains(&("deploy".into(), "deploy".into())), "a deploy that may exist is not retried: {t:?}");
    assert!(t.contains(&("deploy".into(), "rollback".into())), "{t:?}");
    assert!(t.contains(&("rollback".into(), "held".into())), "{t:?}");
    assert_eq!(w.sandbox.platform().stats().deploy_count, 0);
    assert_eq!(w.env_writes().len(), 1, "no write back to the dead primary");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slack_down_for_the_whole_incident_does_not_block_it() {
    let mut w = World::start().await;
    // Nothing listens there: every notification fails.
    let dead = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/services/T/B/X", dead.local_addr().unwrap());
    drop(dead);
    w.env.insert("SLACK_WEBHOOK_URL".into(), url);
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = w
        .executor(&edits(&[(
            "cooldown: 1m",
            "notifications:\n  slack:\n    webhook_url: \"${SLACK_WEBHOOK_URL}\"\n    attempts: 3\n    timeout: 1s\ncooldown: 1m",
        )]))
        .await;
    let id = exec.open("test", "slack down").await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::Finished(Outcome::Recovered));
    exec.flush_notifications(Duration::from_secs(15)).await;
    let effects = exec.journal.effects(&id).await.unwrap();
    let notes: Vec<_> = effects.iter().filter(|e| e.kind == "notify").collect();
    assert!(notes.len() >= 6, "every transition tried to notify");
    assert!(notes.iter().all(|e| e.outcome.as_deref() == Some("failed")), "{notes:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_locked_journal_answers_503_and_loses_nothing() {
    let w = World::start().await;
    let s = w.serve(FAST, false).await;
    let j = Journal::open_with(&w.journal_path(), false, Duration::from_millis(50)).await.unwrap();
    use std::io::Write;
    let mut locker = if w.pg.is_some() {
        // A person's psql session holding the journal's write lock.
        let mut p = std::process::Command::new("psql")
            .arg(w.journal_path())
            .args(["-qAt"])
            .stdin(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .unwrap();
        let lock = orchestrator::journal::backend::PG_WRITE_LOCK;
        writeln!(p.stdin.as_mut().unwrap(), "SELECT pg_advisory_lock({lock});").unwrap();
        p
    } else {
        let mut p =
            std::process::Command::new("sqlite3").arg(w.journal_path()).stdin(Stdio::piped()).stdout(Stdio::null()).spawn().unwrap();
        // `.timeout` so sqlite3 waits for a lock instead of failing its BEGIN.
        writeln!(p.stdin.as_mut().unwrap(), ".timeout 5000\nBEGIN IMMEDIATE; INSERT INTO settings VALUES ('lock','1','t','t');").unwrap();
        p
    };
    let stdin = locker.stdin.as_mut().unwrap();
    stdin.flush().unwrap();
    wait_until(Duration::from_secs(10), "another session to hold the write lock", || {
        let j = j.clone();
        async move { j.set_setting("probe", "1", "t", chrono::Utc::now()).await.is_err() }
    })
    .await;
    let client = reqwest::Client::new();
    let body = serde_json::json!({"summary": "redis down", "fingerprint": "locked-1"});
    let r = client.post(format!("{}/webhooks/generic", s.url)).bearer_auth(WEBHOOK_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 503, "not journaled, so the sender must retry");
    writeln!(stdin, "{}", if w.pg.is_some() { "SELECT pg_advisory_unlock_all();" } else { "ROLLBACK;" }).unwrap();
    drop(locker.stdin.take());
    locker.wait().unwrap();
    // The sender's retry is journaled. (Right after sqlite3 exits, a read may still
    // meet its WAL mid-change and fail with SQLITE_IOERR_SHORT_READ: a 503, so the
    // sender retries, as senders do; the alert is journaled once.)
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let r = client.post(format!("{}/webhooks/generic", s.url)).bearer_auth(WEBHOOK_TOKEN).json(&body).send().await.unwrap();
        if r.status() == 202 {
            break;
        }
        assert_eq!(r.status(), 503, "a failed write is a 503, never a loss");
        assert!(tokio::time::Instant::now() < deadline, "never journaled: {}", r.text().await.unwrap_or_default());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE fingerprint = 'locked-1'").fetch_one(j.pool()).await.unwrap();
    assert_eq!(n.0, 1);
    let _ = s.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn redis_flapping_during_confirm_is_a_false_alarm_never_both() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = Arc::new(w.executor(FAST).await);
    let id = exec.open("test", "flap").await.unwrap();
    let runner = spawn_run(&exec, &id);
    // After the first sample holds, Redis answers again before the second.
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    wait_until(Duration::from_secs(10), "the first confirm sample", || {
        let j = j.clone();
        let id = id.clone();
        async move { j.transitions(&id).await.unwrap().iter().any(|t| t.event == "confirm_checked") }
    })
    .await;
    w.primary.restart().unwrap();
    assert_eq!(runner.await.unwrap(), RunEnd::Finished(Outcome::FalseAlarm));
    let t = j.transitions(&id).await.unwrap();
    assert!(!t.iter().any(|t| t.to_state == "assess"), "never confirmed as well");
    assert!(w.env_writes().is_empty());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_old_primary_returning_during_deploy_does_not_flip_flop() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = Arc::new(w.executor(FAST).await);
    let id = exec.open("test", "primary returns").await.unwrap();
    let runner = spawn_run(&exec, &id);
    wait_state(&w, &id, &["deploy", "verify"], Duration::from_secs(20)).await;
    w.primary.restart().unwrap();
    assert_eq!(runner.await.unwrap(), RunEnd::Finished(Outcome::Recovered));
    assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.backup.url()), "stays on the backup");
    assert_eq!(w.env_writes().len(), 1, "no switch back and forth");
    assert_eq!(w.sandbox.platform().stats().deploy_count, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_backup_dying_after_the_switch_rolls_back() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = Arc::new(w.executor(FAST).await);
    let id = exec.open("test", "backup dies").await.unwrap();
    let runner = spawn_run(&exec, &id);
    wait_state(&w, &id, &["deploy"], Duration::from_secs(20)).await;
    w.backup.kill();
    w.primary.restart().unwrap();
    assert_eq!(runner.await.unwrap(), RunEnd::Finished(Outcome::RolledBack));
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let t: Vec<_> = j.transitions(&id).await.unwrap().into_iter().map(|t| (t.from_state, t.to_state)).collect();
    assert!(t.contains(&("verify".into(), "rollback".into())), "{t:?}");
    assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.primary.url()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_in_the_middle_of_a_flush_is_resumable_and_keeps_other_keys() {
    let w = World::start().await;
    // A large stale dataset on the backup, and keys the patterns must never touch.
    let client = redis::Client::open(w.backup.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    for chunk in 0..40 {
        let mut pipe = redis::pipe();
        let mut args: Vec<(String, u32)> = (0..5000).map(|i| (format!("bull:stale:{}", chunk * 5000 + i), 1)).collect();
        args.extend((0..250).map(|i| (format!("keep:{}", chunk * 250 + i), 1)));
        pipe.mset(&args).ignore();
        let _: () = pipe.query_async(&mut con).await.unwrap();
    }
    w.primary.kill();
    w.service_sees_redis_down().await;
    let playbook = w.playbook_file(FAST);
    let pb = playbook.to_str().unwrap();
    let child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["run", "--playbook", pb])
        .envs(&w.env)
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let pid = child.id().unwrap() as i32;
    let j_path = w.journal_path();
    wait_until(Duration::from_secs(30), "the flush to start", || {
        let p = j_path.clone();
        async move {
            match Journal::open_existing(&p).await {
                Ok(j) => j.incidents(1).await.map(|i| i.first().map(|i| i.state == "flush").unwrap_or(false)).unwrap_or(false),
                Err(_) => false,
            }
        }
    })
    .await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(pid, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(60), child.wait_with_output()).await.unwrap().unwrap().status;
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let id = j.incidents(1).await.unwrap()[0].id.clone();
    let inc = j.incident(&id).await.unwrap();
    assert!(status.code() == Some(8) || inc.outcome.is_some(), "interrupted (8) and resumable, got {status:?}");
    let keep: usize = redis::cmd("DBSIZE").query_async::<usize>(&mut con).await.unwrap();
    assert!(keep >= 10_000, "keys outside the patterns survive the interruption ({keep} keys left)");

    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["resume", &id, "--playbook", pb])
        .envs(&w.env)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let keys: Vec<String> = redis::cmd("KEYS").arg("keep:*").query_async(&mut con).await.unwrap();
    assert_eq!(keys.len(), 10_000, "every key outside the flush patterns is still there");
    let stale: Vec<String> = redis::cmd("KEYS").arg("bull:stale:*").query_async(&mut con).await.unwrap();
    assert!(stale.is_empty(), "{} stale keys left", stale.len());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_to_serve_leaves_a_gated_incident_resumable() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let playbook = w.playbook_file(&edits(&[("  steps: []", "  steps: [flush]")]));
    let pb = playbook.to_str().unwrap().to_string();
    let start_serve = || {
        tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .arg("--db")
            .arg(w.journal_path())
            .args(["serve", "--playbook", &pb, "--listen", "127.0.0.1:0", "--no-watch"])
            .envs(&w.env)
            .env("ORCH_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .env("ORCH_APPROVER_TOKENS", format!("oncall={ONCALL_TOKEN}"))
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .kill_on_drop(true)
            .spawn()
            .unwrap()
    };
    async fn listening(child: &mut tokio::process::Child) -> String {
        use tokio::io::AsyncBufReadExt;
        let stdout = child.stdout.take().unwrap();
        let mut lines = tokio::io::BufReader::new(stdout).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        format!("http://{}", v["listening"].as_str().unwrap())
    }
    let mut first = start_serve();
    let url = listening(&mut first).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{url}/webhooks/generic"))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&serde_json::json!({"summary": "redis down"}))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let id = v["alerts"][0]["incident"].as_str().unwrap().to_string();
    wait_state(&w, &id, &["awaiting_approval"], Duration::from_secs(30)).await;
    // SAFETY: kill(2) on our own child.
    unsafe { libc::kill(first.id().unwrap() as i32, libc::SIGTERM) };
    let status = tokio::time::timeout(Duration::from_secs(30), first.wait()).await.unwrap().unwrap();
    assert_eq!(status.code(), Some(0), "clean shutdown");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    assert!(j.incident(&id).await.unwrap().is_open());

    let mut second = start_serve();
    let url = listening(&mut second).await;
    let r = client
        .post(format!("{url}/incidents/{id}/approve"))
        .bearer_auth(ONCALL_TOKEN)
        .json(&serde_json::json!({"comment": "after restart"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    wait_until(Duration::from_secs(60), "the resumed incident to end", || {
        let j = j.clone();
        let id = id.clone();
        async move { j.incident(&id).await.unwrap().outcome.is_some() }
    })
    .await;
    assert_eq!(j.incident(&id).await.unwrap().outcome.as_deref(), Some("recovered"));
    assert_eq!(w.env_writes().len(), 1);
}

#[tokio::test]
async fn serve_refuses_to_listen_beyond_loopback_without_tokens() {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["--db", "/nonexistent/never-created.db", "serve", "--playbook", "playbooks/sandbox.yaml", "--listen", "0.0.0.0:0"])
        .env_remove("ORCH_WEBHOOK_TOKEN")
        .env_remove("ORCH_WEBHOOK_HMAC_SECRET")
        .env_remove("ORCH_APPROVER_TOKENS")
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&out.stderr).contains("non-loopback"));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_abort_during_a_slow_deploy_rolls_back_without_waiting_for_the_deploy() {
    let w = World::start_with(WorldOptions { deploy_steps_ms: 1_500, ..Default::default() }).await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = Arc::new(w.executor(&edits(&[("deploy_poll: 100ms", "deploy_poll: 1s")])).await);
    let id = exec.open("test", "abort mid-deploy").await.unwrap();
    let runner = spawn_run(&exec, &id);
    wait_state(&w, &id, &["deploy"], Duration::from_secs(20)).await;
    w.primary.restart().unwrap();
    let asked = std::time::Instant::now();
    exec.journal
        .add_command(&id, orchestrator::journal::CommandKind::Abort, "oncall", "wrong backup", "cli", chrono::Utc::now())
        .await
        .unwrap();
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    wait_until(Duration::from_secs(10), "the abort to be applied", || {
        let j = j.clone();
        let id = id.clone();
        async move { j.incident(&id).await.unwrap().state == "rollback" }
    })
    .await;
    assert!(asked.elapsed() < Duration::from_millis(1_500), "applied within a poll, not after the deploy ({:?})", asked.elapsed());
    assert_eq!(runner.await.unwrap(), RunEnd::Finished(Outcome::RolledBack));
    let cmds = j.commands(&id).await.unwrap();
    assert_eq!(cmds[0].accepted, Some(true));
    assert!(cmds[0].result.as_deref().unwrap().contains("deploy → rollback"), "{:?}", cmds[0].result);
    assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.primary.url()));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_given_in_time_counts_even_when_applied_after_the_ttl() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = w.executor(&edits(&[("  steps: []", "  steps: [flush]"), ("  ttl: 10m", "  ttl: 1s")])).await;
    let id = exec.open("test", "late resume").await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::AwaitingApproval(orchestrator::model::Step::Flush));
    exec.journal
        .add_command(&id, orchestrator::journal::CommandKind::Approve, "oncall", "in time", "cli", chrono::Utc::now())
        .await
        .unwrap();
    // Nobody resumes it until the TTL has passed (the point of the test is time passing).
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::Finished(Outcome::Recovered));

    // An approval recorded after the TTL does not open the gate.
    let w2 = World::start().await;
    w2.primary.kill();
    w2.service_sees_redis_down().await;
    let exec2 = w2.executor(&edits(&[("  steps: []", "  steps: [flush]"), ("  ttl: 10m", "  ttl: 1s")])).await;
    let id2 = exec2.open("test", "too late").await.unwrap();
    assert_eq!(exec2.run(&id2).await.unwrap(), RunEnd::AwaitingApproval(orchestrator::model::Step::Flush));
    tokio::time::sleep(Duration::from_millis(1_200)).await;
    exec2
        .journal
        .add_command(&id2, orchestrator::journal::CommandKind::Approve, "oncall", "too late", "cli", chrono::Utc::now())
        .await
        .unwrap();
    assert_eq!(
        exec2.run(&id2).await.unwrap(),
        RunEnd::Finished(Outcome::Held),
        "expired after the switch; the primary is still down: hold"
    );
    assert_eq!(w2.sandbox.platform().stats().deploy_count, 0);
    assert_eq!(w2.env_writes(), vec![("REDIS_URL".to_string(), w2.backup.url())], "nothing written back to the dead primary");
}
