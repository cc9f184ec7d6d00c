//! Several `serve` instances on one PostgreSQL journal: exactly one leader; the leader
//! SIGKILLed mid-incident (by its own fault injection, at a named point) → a follower
//! takes over within the lease and the incident ends Recovered with one env write per
//! value and one deploy per deploy intent (the platform's own counts); a leader frozen
//! (SIGSTOP) past its lease performs nothing after it wakes and steps down.

mod support;

use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use std::time::Duration;
use support::pgdb::PgDatabase;
use support::serve::{Instance, ServeSpec};
use support::world::{wait_until, World, WEBHOOK_TOKEN};

const FAST: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];
/// A short lease so takeovers are quick: renew + 2 × retry + margin (300 ms) ≤ ttl.
/// A short takeover grace too: the platform stand-in answers at once.
const LEASE: &[&str] = &["--leader-ttl", "3s", "--leader-renew", "500ms", "--leader-retry-timeout", "1s", "--leader-takeover-grace", "1s"];

/// `serve` on `db` with the short lease, the log at info (it shows what each instance
/// did: "incident ended", "stepping down"), and the fault injection `crash_at`.
async fn start(w: &World, db: &str, playbook: &std::path::Path, crash_at: Option<&str>) -> Instance {
    let mut spec = ServeSpec::new(db, &[playbook]).env(&w.env).arg("--no-watch");
    for a in LEASE {
        spec = spec.arg(*a);
    }
    spec.env.insert("ORCH_LOG".into(), "info".into());
    if let Some(p) = crash_at {
        spec.env.insert("ORCH_FAULT_CRASH_AT".into(), p.into());
    }
    spec.spawn().await
}

async fn leader_of(i: &Instance) -> Option<(bool, serde_json::Value)> {
    support::serve::leader_at(&i.url()).await
}

/// Waits until exactly one of `instances` answers 200 on `/leader`: its index and term.
async fn one_leader(instances: &[&Instance], limit: Duration) -> (usize, i64) {
    let urls: Vec<String> = instances.iter().map(|i| i.url()).collect();
    support::serve::one_leader(&urls, limit).await
}

async fn try_post_alert(inst: &Instance, fingerprint: &str) -> Option<reqwest::StatusCode> {
    let body = serde_json::json!({"summary": "redis down", "fingerprint": fingerprint});
    let r = reqwest::Client::new().post(format!("{}/webhooks/generic", inst.url())).bearer_auth(WEBHOOK_TOKEN).json(&body).send().await;
    r.ok().map(|r| r.status())
}

async fn post_alert(inst: &Instance, fingerprint: &str) -> reqwest::StatusCode {
    try_post_alert(inst, fingerprint).await.expect("the instance answers")
}

async fn wait_outcome(j: &Journal, id: &str, limit: Duration) -> String {
    support::world::wait_closed(j, id, limit).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn three_instances_elect_exactly_one_leader_and_a_clean_stop_hands_over() {
    let w = World::start().await;
    let db = PgDatabase::create();
    let pb = w.playbook_file(FAST);
    let a = start(&w, &db.url(), &pb, None).await;
    let b = start(&w, &db.url(), &pb, None).await;
    let c = start(&w, &db.url(), &pb, None).await;
    let (i, term) = one_leader(&[&a, &b, &c], Duration::from_secs(15)).await;
    // Every instance names the same lease (the database's view).
    for inst in [&a, &b, &c] {
        let (_, body) = leader_of(inst).await.expect("answers /leader");
        assert_eq!(body["lease"]["term"].as_i64(), Some(term), "{body}");
    }
    // A clean stop gives the lease up: a follower leads under a higher term well
    // within one TTL of waiting.
    let mut all = vec![a, b, c];
    let mut leader = all.remove(i);
    leader.stop().await;
    let (_, term2) = one_leader(&[&all[0], &all[1]], Duration::from_secs(10)).await;
    assert!(term2 > term, "a new leadership takes a higher term ({term2} > {term})");
}

/// The leader (started first, so it leads) carries the crash point. The alert goes to
/// a follower, which journals it and opens the incident for the leader (for a crash on
/// entering Confirm, to the leader itself: the instance that opens an incident feeds
/// its trigger, which enters Confirm).
async fn leader_killed_at(point: &str) {
    let w = World::start().await;
    let db = PgDatabase::create();
    let pb = w.playbook_file(FAST);
    let mut a = start(&w, &db.url(), &pb, Some(point)).await;
    one_leader(&[&a], Duration::from_secs(15)).await;
    let b = start(&w, &db.url(), &pb, None).await;
    let c = start(&w, &db.url(), &pb, None).await;
    let (leader, term) = one_leader(&[&a, &b, &c], Duration::from_secs(15)).await;
    assert_eq!(leader, 0, "the first instance leads");
    w.primary.kill();
    w.service_sees_redis_down().await;
    let fingerprint = format!("kill-{point}");
    if point == "state:confirm" {
        // The leader dies while answering: the sender retries, on another instance
        // (the alert attaches to the incident the leader opened, or opens it).
        if try_post_alert(&a, &fingerprint).await != Some(reqwest::StatusCode::ACCEPTED) {
            assert_eq!(post_alert(&b, &fingerprint).await, 202, "the retry is journaled by a follower");
        }
    } else {
        assert_eq!(post_alert(&b, &fingerprint).await, 202, "a follower journals the alert");
    }
    // The leader kills itself at the point.
    let status = tokio::time::timeout(Duration::from_secs(60), a.child.wait()).await.expect("the leader reached the crash point").unwrap();
    use std::os::unix::process::ExitStatusExt;
    assert_eq!(status.signal(), Some(9), "killed at {point}");
    let (_, term2) = one_leader(&[&b, &c], Duration::from_secs(10)).await;
    assert!(term2 > term);
    let j = Journal::open_existing(db.url()).await.unwrap();
    let id = j.incidents(1).await.unwrap()[0].id.clone();
    assert_eq!(wait_outcome(&j, &id, Duration::from_secs(60)).await, "recovered", "the new leader finished the incident killed at {point}");
    // Exactly once across the takeover (the platform's own counts).
    let stats = w.sandbox.platform().stats();
    for (write, n) in &stats.env_write_counts {
        assert_eq!(*n, 1, "{write} written {n} times across a leader kill at {point}");
    }
    let deploy_intents = j.effects(&id).await.unwrap().iter().filter(|e| e.kind == "deploy").count();
    assert_eq!(stats.deploy_count, deploy_intents, "one deploy per deploy intent across a leader kill at {point}");
    assert!(j.verify(None).await.unwrap().ok(), "the chain verifies after the takeover");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_in_confirm_a_follower_finishes() {
    leader_killed_at("state:confirm").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_between_switch_intent_and_outcome_a_follower_finishes() {
    leader_killed_at("intent:set_env").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_in_deploy_a_follower_finishes() {
    leader_killed_at("intent:deploy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn leader_killed_in_verify_a_follower_finishes() {
    leader_killed_at("state:verify").await;
}

/// SIGSTOP the leader mid-incident (waiting at an approval gate) longer than its
/// lease; a follower takes over; the old leader, woken, writes nothing and does no
/// side effect (its term is stale) and steps down.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_frozen_leader_woken_after_its_lease_does_nothing_and_steps_down() {
    let w = World::start().await;
    let db = PgDatabase::create();
    let mut edits = FAST.to_vec();
    edits.push(("  steps: []", "  steps: [flush]"));
    let pb = w.playbook_file(&edits);
    let a = start(&w, &db.url(), &pb, None).await;
    one_leader(&[&a], Duration::from_secs(15)).await;
    let b = start(&w, &db.url(), &pb, None).await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    assert_eq!(post_alert(&a, "frozen").await, 202);
    let j = Journal::open_existing(db.url()).await.unwrap();
    wait_until(Duration::from_secs(30), "the incident to wait for approval", || {
        let j = j.clone();
        async move { j.open_incidents().await.unwrap().first().is_some_and(|i| i.state == "awaiting_approval") }
    })
    .await;
    let id = j.open_incidents().await.unwrap()[0].id.clone();
    a.freeze();
    let (leader, _) = one_leader(&[&b], Duration::from_secs(10)).await;
    assert_eq!(leader, 0);
    // The new leader adopted it (it drives the approval wait now); wake the old one.
    let b_pid = b.pid().unwrap();
    wait_until(Duration::from_secs(10), "the new leader to claim the incident", || {
        let db = db.url();
        let id = id.clone();
        async move {
            let out = std::process::Command::new("psql")
                .arg(&db)
                .args(["-qAtc", &format!("SELECT owner FROM incidents WHERE id = '{id}'")])
                .output()
                .unwrap();
            let owner = String::from_utf8_lossy(&out.stdout).trim().to_string();
            owner.contains(&format!(":{b_pid}:"))
        }
    })
    .await;
    let transitions_before = j.transitions(&id).await.unwrap().len();
    a.cont();
    // The woken instance steps down: /leader answers 503 with the reason.
    wait_until(Duration::from_secs(10), "the woken instance to say it is not the leader", || {
        let a = &a;
        async move { matches!(leader_of(a).await, Some((false, _))) }
    })
    .await;
    // Approve through the OLD instance: it journals the command; the new leader applies
    // it and finishes.
    let r = reqwest::Client::new()
        .post(format!("{}/incidents/{id}/approve", a.url()))
        .bearer_auth(support::world::ONCALL_TOKEN)
        .json(&serde_json::json!({"comment": "go"}))
        .send()
        .await
        .unwrap();
    assert!(r.status().is_success(), "a follower takes approvals: {}", r.status());
    assert_eq!(wait_outcome(&j, &id, Duration::from_secs(60)).await, "recovered");
    // Nothing the old leader did after waking: every transition after the freeze was
    // written by the new leader, and every env value was written once.
    let stats = w.sandbox.platform().stats();
    for (write, n) in &stats.env_write_counts {
        assert_eq!(*n, 1, "{write} written {n} times");
    }
    assert!(j.transitions(&id).await.unwrap().len() > transitions_before);
    assert!(j.verify(None).await.unwrap().ok());
    // The woken instance said why it stopped, and its runner stopped at its next check
    // instead of acting.
    let log = a.stderr();
    assert!(log.contains("stepping down"), "the old leader logs its step-down:\n{log}");
    assert!(!log.contains("incident ended"), "the old leader did not finish the incident:\n{log}");
}
