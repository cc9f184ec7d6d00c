//! End-to-end incidents against real redis-server processes and the sandbox: each
//! test injects a real fault and checks how the incident ends and what it did.

mod support;

use orchestrator::executor::RunEnd;
use orchestrator::journal::prelude::*;
use orchestrator::model::Outcome;
use std::time::Duration;
use support::world::{outcome, spawn_run, wait_state, World};

/// Shorter windows than the shipped sandbox playbook, to keep the suite fast.
const FAST: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];

async fn transitions(w: &World, id: &str) -> Vec<(String, String, String)> {
    let j = orchestrator::journal::Journal::open_existing(&w.journal_path()).await.unwrap();
    j.transitions(id).await.unwrap().into_iter().map(|t| (t.from_state, t.to_state, t.event)).collect()
}

async fn assessed_class(w: &World, id: &str) -> String {
    let j = orchestrator::journal::Journal::open_existing(&w.journal_path()).await.unwrap();
    let t = j.transitions(id).await.unwrap().into_iter().find(|t| t.event == "assessed").expect("assessed");
    let v: serde_json::Value = serde_json::from_str(&t.observations).unwrap();
    v["class"].as_str().unwrap().to_string()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_fails_over_and_jobs_run_on_the_backup() {
    let w = World::start().await;
    assert!(w.job_completes(Duration::from_secs(5)).await, "service works before the fault");
    w.primary.kill();
    w.service_sees_redis_down().await;

    let exec = w.executor(FAST).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    let end = exec.run(&id).await.unwrap();
    assert_eq!(outcome(end), "recovered");
    assert_eq!(assessed_class(&w, &id).await, "connection_refused");

    // The service really processes jobs on the backup now.
    assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.backup.url()));
    assert!(w.job_completes(Duration::from_secs(5)).await, "jobs complete after the failover");
    let stats = w.sandbox.platform().stats();
    assert_eq!(w.env_writes(), vec![("REDIS_URL".to_string(), w.backup.url())], "exactly one platform write");
    assert_eq!(stats.deploy_count, 1, "exactly one deploy");
    let path: Vec<String> = transitions(&w, &id).await.into_iter().filter(|(f, t, _)| f != t).map(|(_, t, _)| t).collect();
    assert_eq!(path, ["confirm", "assess", "switch", "flush", "deploy", "verify", "recovered"]);

    // The old primary is still dead, so its checklist still fails; but a second failover
    // under the same playbook would switch to (and flush) the Redis now in use.
    let again = exec.open("test", "the old primary is still down").await.unwrap();
    assert_eq!(outcome(exec.run(&again).await.unwrap()), "escalated");
    assert_eq!(w.env_writes().len(), 1, "no second write");
    let j = orchestrator::journal::Journal::open_existing(&w.journal_path()).await.unwrap();
    let why = j.checks(&again).await.unwrap().into_iter().find(|c| c.item == "platform_url_known").unwrap();
    assert!(!why.holds && why.observed.contains("failed over before"), "{}", why.observed);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_frozen_is_classified_timeout_and_recovers() {
    let w = World::start().await;
    w.primary.stop(); // SIGSTOP: the process is there but never answers
    w.service_sees_redis_down().await;
    let exec = w.executor(FAST).await;
    let id = exec.open("test", "primary SIGSTOPped").await.unwrap();
    let end = exec.run(&id).await.unwrap();
    w.primary.cont();
    assert_eq!(assessed_class(&w, &id).await, "timeout");
    assert_eq!(outcome(end), "recovered");
    assert!(w.job_completes(Duration::from_secs(5)).await);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_requiring_a_password_is_classified_auth_and_escalated_without_switching() {
    let w = World::start().await;
    let client = redis::Client::open(w.primary.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("rotated-pw-77").query_async(&mut con).await.unwrap();
    // A rotated password only affects new connections: a real service keeps working on
    // its authenticated ones until it reconnects. Drop them, as a restart would.
    let _: redis::Value =
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").arg("SKIPME").arg("yes").query_async(&mut con).await.unwrap();
    w.service_sees_redis_down().await;

    let exec = w.executor(FAST).await;
    let id = exec.open("test", "password rotated").await.unwrap();
    let end = exec.run(&id).await.unwrap();
    assert_eq!(assessed_class(&w, &id).await, "auth");
    assert_eq!(outcome(end), "escalated", "the sandbox playbook says escalate for auth");
    assert!(w.env_writes().is_empty(), "no platform write");
    assert_eq!(w.sandbox.platform().stats().deploy_count, 0);

    // The same fault under a playbook whose action for auth is failover does switch.
    let w2 = World::start().await;
    let client = redis::Client::open(w2.primary.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("CONFIG").arg("SET").arg("requirepass").arg("rotated-pw-77").query_async(&mut con).await.unwrap();
    // A rotated password only affects new connections: a real service keeps working on
    // its authenticated ones until it reconnects. Drop them, as a restart would.
    let _: redis::Value =
        redis::cmd("CLIENT").arg("KILL").arg("TYPE").arg("normal").arg("SKIPME").arg("yes").query_async(&mut con).await.unwrap();
    w2.service_sees_redis_down().await;
    let mut edits = FAST.to_vec();
    edits.push(("  auth: escalate", "  auth: failover"));
    let exec = w2.executor(&edits).await;
    let id = exec.open("test", "password rotated").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "recovered");
    assert_eq!(w2.env_writes().len(), 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_down_as_well_escalates_with_no_platform_write() {
    let w = World::start().await;
    w.primary.kill();
    w.backup.kill();
    w.service_sees_redis_down().await;
    let exec = w.executor(FAST).await;
    let id = exec.open("test", "both down").await.unwrap();
    let end = exec.run(&id).await.unwrap();
    assert_eq!(outcome(end), "escalated");
    assert!(w.env_writes().is_empty(), "never switch to a dead backup");
    assert_eq!(w.sandbox.platform().stats().requests, 1, "only the read of the current URL reached the platform");
    let j = orchestrator::journal::Journal::open_existing(&w.journal_path()).await.unwrap();
    let failing: Vec<_> = j.checks(&id).await.unwrap().into_iter().filter(|c| c.phase == "preflight" && !c.holds).map(|c| c.item).collect();
    assert!(failing.contains(&"backup_ping".to_string()), "{failing:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn failed_deploy_rolls_back_to_the_restored_primary() {
    let w = World::start().await;
    w.sandbox
        .platform()
        .set_faults(sandbox::FaultsPatch { fail_next_deploys: Some(2), fail_status: Some("update_failed".into()), ..Default::default() })
        .unwrap();
    w.primary.kill();
    w.service_sees_redis_down().await;
    // Deploy gated, so the primary is back (for certain) before the deploys fail.
    let mut edits = FAST.to_vec();
    edits.push(("  steps: []", "  steps: [deploy]"));
    let exec = std::sync::Arc::new(w.executor(&edits).await);
    let id = exec.open("test", "deploy will fail").await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::AwaitingApproval(orchestrator::model::Step::Deploy));
    w.primary.restart().unwrap();
    exec.journal.add_command(&id, orchestrator::journal::CommandKind::Approve, "oncall", "go", "cli", chrono::Utc::now()).await.unwrap();
    let end = exec.run(&id).await.unwrap();
    assert_eq!(end, RunEnd::Finished(Outcome::RolledBack));
    let t = transitions(&w, &id).await;
    assert!(t.iter().any(|(f, to, e)| f == "deploy" && to == "deploy" && e == "deploy_finished"), "retried once: {t:?}");
    assert!(t.iter().any(|(f, to, e)| f == "deploy" && to == "rollback" && e == "deploy_finished"), "{t:?}");
    assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.primary.url()), "original restored");
    let writes = w.env_writes();
    assert_eq!(writes, vec![("REDIS_URL".to_string(), w.backup.url()), ("REDIS_URL".to_string(), w.primary.url())]);
    assert_eq!(
        w.sandbox.platform().stats().deploy_count,
        2,
        "the failed deploy and its retry; no rollback deploy (the old one stayed live)"
    );
    // The service never left the primary, but its workers were cut off while it was
    // down: BullMQ's workers reconnect on their own backoff (up to 20 s), not at once.
    assert!(
        w.job_completes(Duration::from_secs(30)).await,
        "jobs run on the primary: {}",
        w.sandbox.node_service().map(|n| n.log_tail(30)).unwrap_or_default()
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn workers_that_never_resume_fail_verify_and_roll_back() {
    let w = World::start().await;
    // Deploys start the service with its workers stopped: connected, but processing nothing.
    w.sandbox.platform().set_faults(sandbox::FaultsPatch { workers_enabled: Some(false), ..Default::default() }).unwrap();
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = std::sync::Arc::new(w.executor(FAST).await);
    let id = exec.open("test", "workers stuck").await.unwrap();
    let runner = spawn_run(&exec, &id);
    // The runbook's remedy first: one restart. The primary is back meanwhile, so the
    // rollback that follows the second failed verification can help.
    wait_state(&w, &id, &["restart"], Duration::from_secs(30)).await;
    w.primary.restart().unwrap();
    // Workers come back for the deploys after the restart's (the rollback's): its
    // verification processes a job on the primary.
    support::world::wait_until(Duration::from_secs(30), "the restart's deploy", || async {
        w.sandbox.platform().stats().deploy_count >= 2
    })
    .await;
    w.sandbox.platform().set_faults(sandbox::FaultsPatch { workers_enabled: Some(true), ..Default::default() }).unwrap();
    let end = runner.await.unwrap();
    let journal = orchestrator::journal::Journal::open_existing(&w.journal_path()).await.unwrap();
    assert_eq!(end, RunEnd::Finished(Outcome::RolledBack));

    let checks = journal.checks(&id).await.unwrap();
    let verify: Vec<_> = checks.iter().filter(|c| c.phase == "verify").collect();
    assert!(verify.iter().all(|c| c.item != "synthetic_job" || !c.holds), "the synthetic job never completed");
    assert!(verify.iter().any(|c| c.item == "queue_connected" && c.holds), "yet the queue reported connected");
    let t = transitions(&w, &id).await;
    let path: Vec<&str> = t.iter().filter(|(f, to, _)| f != to).map(|(_, to, _)| to.as_str()).collect();
    assert!(path.ends_with(&["verify", "restart", "verify", "rollback", "rolled_back"]), "one restart, then rollback: {path:?}");
    let deploys = w.sandbox.platform().stats().deploy_count;
    assert_eq!(deploys, 3, "the switch's deploy, the one restart, the rollback's deploy");
}
