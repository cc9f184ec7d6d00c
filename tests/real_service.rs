//! Decisions that hold against a service that is not ours: the real BullMQ service
//! (Node, `bullmq` and `ioredis` from npm, `bullmq-service/`) on the Render-compatible
//! platform that restarts it on deploy, both Redis servers password-protected. Each
//! test is a real failover with a real fault.

mod support;

use orchestrator::executor::RunEnd;
use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use orchestrator::model::{Outcome, Step};
use std::time::Duration;
use support::world::{spawn_run, wait_state, World, WorldOptions};

const PRIMARY_PW: &str = "primary-pw-3c9d1e";
const BACKUP_PW: &str = "backup-pw-8a2f6b";

/// Windows that fit the Node service: it takes about half a second to answer after a
/// deploy, and ioredis reconnects on its own backoff.
const EDITS: &[(&str, &str)] = &[
    ("verify_window: 15s", "verify_window: 8s"),
    ("verify_interval: 500ms", "verify_interval: 250ms"),
    ("job_timeout: 5s", "job_timeout: 3s"),
];

async fn world(opts: WorldOptions) -> World {
    World::start_with(WorldOptions {
        bullmq: true,
        primary_password: Some(PRIMARY_PW),
        backup_password: Some(BACKUP_PW),
        deploy_steps_ms: 50,
        ..opts
    })
    .await
}

fn primary_url(w: &World) -> String {
    w.env["SANDBOX_PRIMARY_URL"].clone()
}

fn backup_url(w: &World) -> String {
    w.env["SANDBOX_BACKUP_URL"].clone()
}

/// Kills the primary, waits until the service sees it down, and runs one incident
/// under [`EDITS`] to its end.
async fn fail_over(w: &World, why: &str) -> (String, RunEnd) {
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = w.executor(EDITS).await;
    let id = exec.open("test", why).await.unwrap();
    let end = exec.run(&id).await.unwrap();
    (id, end)
}

/// The incident's path: every state it entered, in order.
async fn path(w: &World, id: &str) -> Vec<String> {
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    j.transitions(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.rejected.is_none() && t.from_state != t.to_state)
        .map(|t| t.to_state)
        .collect()
}

async fn note_into(w: &World, id: &str, state: &str) -> String {
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    j.transitions(id).await.unwrap().into_iter().rev().find(|t| t.to_state == state).and_then(|t| t.note).unwrap_or_default()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn start_up_errors_that_stop_are_not_a_failed_verification() {
    // The deployed service's Redis client connects 2 s after start (a remote Redis
    // behind slow TLS): verification's first samples meet health 503 and the service
    // logs "Redis ping failed: Stream isn't writeable ...", as a real one does.
    let w = world(WorldOptions { connect_delay_ms: 2_000, ..Default::default() }).await;
    let (id, end) = fail_over(&w, "redis down").await;
    assert_eq!(end, RunEnd::Finished(Outcome::Recovered));

    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let verify: Vec<_> = j.checks(&id).await.unwrap().into_iter().filter(|c| c.phase == "verify").collect();
    assert!(
        verify.iter().any(|c| c.item == "health_up" && !c.holds),
        "the first samples met a service still connecting: {:#?}\n{}",
        verify.iter().map(|c| format!("{} {} {} {}", c.at, c.item, c.holds, c.observed)).collect::<Vec<_>>(),
        w.sandbox.node_service().unwrap().log_tail(40)
    );
    let noisy = verify.iter().find(|c| c.item == "no_new_errors" && !c.holds).expect("start-up errors were seen during verification");
    assert!(noisy.observed.contains("Stream isn't writeable"), "{}", noisy.observed);
    let last = verify.iter().rev().find(|c| c.item == "no_new_errors").unwrap();
    assert!(last.holds && last.observed.contains("since health was first up"), "{}", last.observed);
    assert_eq!(w.env_writes(), vec![("REDIS_URL".to_string(), backup_url(&w))]);
    assert_eq!(w.sandbox.platform().stats().deploy_count, 1);
    assert!(w.job_completes(Duration::from_secs(10)).await, "jobs complete on the backup");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_builds_are_retried_then_hold_on_the_flushed_backup_while_the_primary_is_dead() {
    let w = world(WorldOptions::default()).await;
    let platform = w.sandbox.platform();
    platform
        .set_faults(sandbox::FaultsPatch { fail_next_deploys: Some(100), fail_status: Some("build_failed".into()), ..Default::default() })
        .unwrap();
    let pid_before = w.sandbox.node_service().unwrap().pid();
    let (id, end) = fail_over(&w, "redis down, builds failing").await;
    assert_eq!(end, RunEnd::Finished(Outcome::Held));

    let stats = platform.stats();
    assert_eq!(stats.deploy_count, 2, "the deploy and the playbook's one retry; no rollback deploy");
    assert!(stats.deploys.iter().all(|d| d.status == "build_failed"), "{:?}", stats.deploys);
    assert_eq!(w.env_writes(), vec![("REDIS_URL".to_string(), backup_url(&w))], "never handed the dead primary's URL");
    assert_eq!(platform.env_var("REDIS_URL"), Some(backup_url(&w)), "the next successful deploy lands on the flushed backup");
    assert_eq!(w.sandbox.node_service().unwrap().pid(), pid_before, "a failed build changed nothing for the service");
    let p = path(&w, &id).await;
    assert!(p.ends_with(&["deploy".into(), "rollback".into(), "held".into()]), "{p:?}");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let retries = j.transitions(&id).await.unwrap().into_iter().filter(|t| t.from_state == "deploy" && t.to_state == "deploy").count();
    assert_eq!(retries, 1, "retried once, as the playbook says");
    let note = note_into(&w, &id, "held").await;
    assert!(note.contains("fails its preflight") && note.contains("flushed backup"), "{note}");
    assert!(!note.contains(PRIMARY_PW) && !note.contains(BACKUP_PW), "{note}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_builds_with_the_primary_alive_again_restore_its_url_without_a_deploy() {
    let w = world(WorldOptions::default()).await;
    let platform = w.sandbox.platform();
    platform
        .set_faults(sandbox::FaultsPatch { fail_next_deploys: Some(100), fail_status: Some("build_failed".into()), ..Default::default() })
        .unwrap();
    w.primary.kill();
    w.service_sees_redis_down().await;
    let mut edits = EDITS.to_vec();
    edits.push(("  steps: []", "  steps: [deploy]"));
    let exec = w.executor(&edits).await;
    let id = exec.open("test", "redis down, builds failing").await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::AwaitingApproval(Step::Deploy));
    w.primary.restart().unwrap();
    exec.journal.add_command(&id, orchestrator::journal::CommandKind::Approve, "oncall", "go", "cli", chrono::Utc::now()).await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::Finished(Outcome::RolledBack));
    assert_eq!(platform.stats().deploy_count, 2, "no rollback deploy: the old deploy stayed live");
    assert_eq!(
        w.env_writes(),
        vec![("REDIS_URL".to_string(), backup_url(&w)), ("REDIS_URL".to_string(), primary_url(&w))],
        "restored, so no later deploy picks up the backup"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_process_nothing_get_one_restart_then_hold_on_the_backup() {
    let w = world(WorldOptions::default()).await;
    let platform = w.sandbox.platform();
    // Every deploy starts the service with its workers connected but not processing.
    platform.set_faults(sandbox::FaultsPatch { workers_enabled: Some(false), ..Default::default() }).unwrap();
    let (id, end) = fail_over(&w, "redis down").await;
    assert_eq!(end, RunEnd::Finished(Outcome::Held));
    let p = path(&w, &id).await;
    assert!(p.ends_with(&["verify".into(), "restart".into(), "verify".into(), "rollback".into(), "held".into()]), "{p:?}");
    assert_eq!(platform.stats().deploy_count, 2, "the switch's deploy and exactly one restart");
    assert_eq!(w.env_writes(), vec![("REDIS_URL".to_string(), backup_url(&w))], "never handed the dead primary's URL");
    let note = note_into(&w, &id, "restart").await;
    assert!(note.contains("synthetic_job never held"), "{note}");
    let held = note_into(&w, &id, "held").await;
    assert!(held.contains("the service stays on the backup") && held.contains("which answers"), "{held}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_primary_alive_again_when_verification_fails_is_rolled_back_to() {
    let w = world(WorldOptions::default()).await;
    let platform = w.sandbox.platform();
    platform.set_faults(sandbox::FaultsPatch { workers_enabled: Some(false), ..Default::default() }).unwrap();
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = std::sync::Arc::new(w.executor(EDITS).await);
    let id = exec.open("test", "redis down").await.unwrap();
    let runner = spawn_run(&exec, &id);
    wait_state(&w, &id, &["restart"], Duration::from_secs(30)).await;
    w.primary.restart().unwrap();
    // Workers come back for the rollback's deploy (not the restart's), whose
    // verification processes a job on the primary.
    support::world::wait_until(Duration::from_secs(30), "the restart's deploy", || async { platform.stats().deploy_count >= 2 }).await;
    platform.set_faults(sandbox::FaultsPatch { workers_enabled: Some(true), ..Default::default() }).unwrap();
    assert_eq!(runner.await.unwrap(), RunEnd::Finished(Outcome::RolledBack));
    assert_eq!(w.env_writes(), vec![("REDIS_URL".to_string(), backup_url(&w)), ("REDIS_URL".to_string(), primary_url(&w))]);
    assert_eq!(platform.stats().deploy_count, 3, "switch, one restart, the rollback's deploy");
    assert!(w.job_completes(Duration::from_secs(15)).await, "jobs run on the restored primary");
}

/// Runs `EVAL "while true do end" 0` on the primary until killed: every other client
/// gets `-BUSY` after `busy-reply-threshold`.
async fn make_busy(w: &World) -> tokio::task::JoinHandle<()> {
    let url = primary_url(w);
    let client = redis::Client::open(url.as_str()).unwrap();
    let mut admin = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("busy-reply-threshold").arg(100).query_async(&mut admin).await.unwrap();
    let task = tokio::spawn(async move {
        let mut con = client
            .get_multiplexed_async_connection_with_config(&redis::AsyncConnectionConfig::new().set_response_timeout(None))
            .await
            .unwrap();
        let _: redis::RedisResult<()> = redis::cmd("EVAL").arg("while true do end").arg(0).query_async(&mut con).await;
    });
    // Busy once a probe says so.
    let probe = redis::Client::open(url.as_str()).unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
    loop {
        let mut c = probe.get_multiplexed_async_connection().await.unwrap();
        let r: redis::RedisResult<String> = redis::cmd("PING").query_async(&mut c).await;
        if matches!(&r, Err(e) if e.to_string().contains("BUSY")) {
            break;
        }
        assert!(tokio::time::Instant::now() < deadline, "the primary never became busy: {r:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    task
}

async fn script_kill(w: &World) {
    let client = redis::Client::open(primary_url(w).as_str()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: redis::RedisResult<()> = redis::cmd("SCRIPT").arg("KILL").query_async(&mut con).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_busy_primary_is_waited_for_never_failed_over() {
    let w = world(WorldOptions::default()).await;
    let script = make_busy(&w).await;
    w.service_sees_redis_down().await;
    let exec = std::sync::Arc::new(w.executor(EDITS).await);

    // Still busy at the end of busy_wait: escalated, nothing switched.
    let id = exec.open("test", "redis busy").await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::Finished(Outcome::Escalated));
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let t = j.transitions(&id).await.unwrap();
    let waits = t.iter().filter(|t| t.from_state == "assess" && t.to_state == "assess").count();
    assert!(waits >= 2, "re-sampled while busy: {waits}");
    assert!(t.iter().any(|t| t.note.as_deref().unwrap_or("").contains("class busy")), "classified busy");
    assert!(w.env_writes().is_empty(), "never a failover from a busy primary");

    // The script ends while the orchestrator waits: the primary answers, a false alarm.
    let id = exec.open("test", "redis busy again").await.unwrap();
    let runner = spawn_run(&exec, &id);
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !j.transitions(&id).await.unwrap().iter().any(|t| t.from_state == "assess" && t.to_state == "assess") {
        assert!(tokio::time::Instant::now() < deadline, "never waited for the busy primary");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    script_kill(&w).await;
    let _ = script.await;
    assert_eq!(runner.await.unwrap(), RunEnd::Finished(Outcome::FalseAlarm));
    assert!(w.env_writes().is_empty());
    assert_eq!(w.sandbox.platform().stats().deploy_count, 0);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_on_a_healthy_world_reads_as_healthy() {
    let w = world(WorldOptions::default()).await;
    // The service has been up a moment: its one start-up line is older than what
    // `check` counts, and its Redis is ready.
    assert!(w.job_completes(Duration::from_secs(15)).await);
    // `check` counts errors within the confirm window (1 s here): wait until the
    // service's start-up line is older than that.
    let client = reqwest::Client::new();
    support::world::wait_until(Duration::from_secs(10), "the start-up error to age", || {
        let client = client.clone();
        let url = format!("{}/api/v1/logs?level=error&limit=50", w.sandbox.service_url());
        async move {
            let Ok(r) = client.get(url).header("X-API-Key", support::world::SERVICE_KEY).send().await else { return false };
            let v: serde_json::Value = r.json().await.unwrap_or_default();
            let newest = v["data"].as_array().and_then(|l| l.iter().filter_map(|e| e["timestamp"].as_str()).max().map(str::to_string));
            newest
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
                .is_none_or(|t| chrono::Utc::now() - t.to_utc() > chrono::Duration::milliseconds(1500))
        }
    })
    .await;
    let playbook = w.playbook_file(EDITS);
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["check", "--playbook", playbook.to_str().unwrap()])
        .envs(&w.env)
        .output()
        .await
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert_eq!(out.status.code(), Some(0), "{text}{}", String::from_utf8_lossy(&out.stderr));
    let recovery: Vec<&str> = text.split("Recovery checklist").nth(1).unwrap().split("\n\n").next().unwrap().lines().skip(1).collect();
    assert!(recovery.iter().all(|l| l.trim_start().starts_with('✓')), "a healthy world reads as healthy:\n{text}");
    assert!(!text.contains("since the deploy went live"), "{text}");
    assert!(text.contains("Failure class of the primary now: none: the primary"), "{text}");
    assert!(!text.contains(PRIMARY_PW) && !text.contains(BACKUP_PW), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn confirmation_does_not_wait_for_a_service_call_it_does_not_need() {
    // While Redis is down the real service's metrics call takes ioredis's whole 1 s
    // command timeout. Confirm needs ping_failed plus one more signal: the error logs
    // answer at once, so each round is decided without the metrics call.
    let w = world(WorldOptions::default()).await;
    let (id, end) = fail_over(&w, "redis down").await;
    assert_eq!(end, RunEnd::Finished(Outcome::Recovered));
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let confirm: Vec<_> = j.checks(&id).await.unwrap().into_iter().filter(|c| c.phase == "confirm").collect();
    let skipped = confirm.iter().filter(|c| c.observed.starts_with("not awaited")).count();
    assert!(skipped >= 1, "a round was decided without the slow call: {confirm:#?}");
    assert!(confirm.iter().filter(|c| c.observed.starts_with("not awaited")).all(|c| !c.holds), "never counted as holding");
    // On the window's clock: Confirm lasts the window plus at most one bounded round
    // (the slowest bound here is the service's 2 s request timeout).
    let t = j.transitions(&id).await.unwrap();
    let at = |to: &str| {
        let row = t.iter().find(|r| r.to_state == to && r.from_state != to).unwrap();
        orchestrator::journal::parse_ts(&row.at).unwrap()
    };
    let took = (at("assess") - at("confirm")).to_std().unwrap();
    assert!(took < Duration::from_secs(3), "confirm took {took:?} for a 1 s window");
}
