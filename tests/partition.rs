//! The leader's own trouble, for real: a network partition made with network
//! namespaces (three instances in their own namespaces, PostgreSQL and the world on a
//! bridge; the leader's link cut), and PostgreSQL restarted during an incident. The
//! cut-off leader stops acting within its deadline, the others elect a new leader and
//! finish the incident with every effect performed once, and the old leader rejoins as
//! a follower; while PostgreSQL is away webhooks answer 503 and nothing is lost.

mod support;

use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use std::time::{Duration, Instant};
use support::netns::Net;
use support::pg::{PgServer, LOOPBACK};
use support::serve::{Instance, ServeSpec};
use support::world::{wait_until, World, WorldOptions, ONCALL_TOKEN, WEBHOOK_TOKEN};

const FAST: &[(&str, &str)] = &[
    ("verify_window: 15s", "verify_window: 4s"),
    ("verify_interval: 500ms", "verify_interval: 200ms"),
    // The flush waits for a person: the incident is mid-way (switched) when the
    // leader's trouble starts.
    ("  steps: []", "  steps: [flush]"),
];
const TTL: Duration = Duration::from_secs(3);

fn spec(db: &str, w: &World) -> ServeSpec {
    let mut s = ServeSpec::new(db, &[&w.playbook_file(FAST)]).env(&w.env).arg("--no-watch");
    for a in ["--leader-ttl", "3s", "--leader-renew", "500ms", "--leader-retry-timeout", "1s", "--leader-takeover-grace", "1s"] {
        s = s.arg(a);
    }
    s.env.insert("ORCH_LOG".into(), "info".into());
    s
}

fn client() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(3)).build().unwrap()
}

async fn leader_of(i: &Instance) -> Option<(bool, serde_json::Value)> {
    support::serve::leader_at(&i.url()).await
}

async fn one_leader(instances: &[&Instance], limit: Duration) -> (usize, i64) {
    let urls: Vec<String> = instances.iter().map(|i| i.url()).collect();
    support::serve::one_leader(&urls, limit).await
}

async fn post_alert(i: &Instance, fingerprint: &str) -> Result<reqwest::StatusCode, reqwest::Error> {
    let body = serde_json::json!({"summary": "redis down", "fingerprint": fingerprint});
    // A sender's timeout (Alertmanager's default is 10 s).
    let client = reqwest::Client::builder().timeout(Duration::from_secs(10)).build().unwrap();
    client.post(format!("{}/webhooks/generic", i.url())).bearer_auth(WEBHOOK_TOKEN).json(&body).send().await.map(|r| r.status())
}

async fn approve(i: &Instance, id: &str) -> reqwest::StatusCode {
    client()
        .post(format!("{}/incidents/{id}/approve", i.url()))
        .bearer_auth(ONCALL_TOKEN)
        .json(&serde_json::json!({"comment": "go"}))
        .send()
        .await
        .unwrap()
        .status()
}

async fn wait_gate(j: &Journal) -> String {
    wait_until(Duration::from_secs(40), "the incident to wait for approval", || {
        let j = j.clone();
        async move { j.open_incidents().await.unwrap_or_default().first().is_some_and(|i| i.state == "awaiting_approval") }
    })
    .await;
    j.open_incidents().await.unwrap()[0].id.clone()
}

fn assert_once(w: &World, j_effects: &[orchestrator::journal::EffectRow], what: &str) {
    let stats = w.sandbox.platform().stats();
    assert!(!stats.env_write_counts.is_empty(), "the switch wrote the platform");
    for (write, n) in &stats.env_write_counts {
        assert_eq!(*n, 1, "{write} written {n} times {what}");
    }
    let deploys = j_effects.iter().filter(|e| e.kind == "deploy").count();
    assert_eq!(stats.deploy_count, deploys, "one deploy per deploy intent {what}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_partitioned_leader_stops_acting_the_others_take_over_and_it_rejoins_as_a_follower() {
    let net = Net::new(3);
    let ip = net.host_ip();
    let pg = tokio::task::spawn_blocking(move || PgServer::start(ip)).await.unwrap();
    let db = pg.create_database("journal").await;
    let w = World::start_with(WorldOptions { bind: Some(net.host_ip()), ..Default::default() }).await;
    let spec = spec(&db, &w);
    let a = spec.spawn_in_netns(&net, 0).await;
    one_leader(&[&a], Duration::from_secs(15)).await;
    let b = spec.spawn_in_netns(&net, 1).await;
    let c = spec.spawn_in_netns(&net, 2).await;
    let (first, term) = one_leader(&[&a, &b, &c], Duration::from_secs(15)).await;
    assert_eq!(first, 0, "the first instance leads");

    w.primary.kill();
    w.service_sees_redis_down().await;
    assert_eq!(post_alert(&b, "partition").await.unwrap(), 202, "a follower journals the alert");
    let j = Journal::open_existing(&db).await.unwrap();
    let id = wait_gate(&j).await;

    // Cut the leader off from everything: PostgreSQL, Redis, the platform, its peers.
    net.cut(0);
    let cut_at = Instant::now();
    // It stops acting within its deadline (ttl − margin after its last renewal): the
    // admin link (never cut) still reaches it to ask.
    wait_until(TTL + Duration::from_secs(2), "the cut-off leader to stop acting", || async {
        matches!(leader_of(&a).await, Some((false, _)))
    })
    .await;
    // Each question takes up to 1 s while its journal hangs (/leader waits that long
    // for the database's view before answering from its own): the bound allows it.
    let stopped_after = cut_at.elapsed();
    assert!(stopped_after <= TTL + Duration::from_millis(1500), "stopped acting {stopped_after:?} after the cut (ttl {TTL:?})");
    eprintln!("the cut-off leader reported not leading {stopped_after:?} after the cut");
    let (_, body) = leader_of(&a).await.unwrap();
    assert!(body["note"].as_str().unwrap_or("").contains("stepped down"), "it says why: {body}");
    // The others elect a new leader under a higher term, which adopts the incident.
    let (_, term2) = one_leader(&[&b, &c], Duration::from_secs(15)).await;
    assert!(term2 > term);
    assert!(approve(&b, &id).await.is_success(), "any instance takes the approval");
    assert_eq!(support::world::wait_closed(&j, &id, Duration::from_secs(60)).await, "recovered");
    assert_once(&w, &j.effects(&id).await.unwrap(), "across the partition");

    // The link returns: the old leader rejoins as a follower, and one leader remains.
    net.heal(0);
    wait_until(Duration::from_secs(15), "the old leader to follow", || async {
        matches!(leader_of(&a).await, Some((false, body)) if body["note"].as_str().unwrap_or("").starts_with("following"))
    })
    .await;
    let (_, term3) = one_leader(&[&a, &b, &c], Duration::from_secs(5)).await;
    assert_eq!(term3, term2, "the healed instance took nothing");
    assert_once(&w, &j.effects(&id).await.unwrap(), "after the heal");
    let log = a.stderr();
    assert!(log.contains("stepping down"), "the cut-off leader logged its step-down:\n{log}");
    assert!(!log.contains("incident ended"), "the cut-off leader did not finish the incident:\n{log}");
    assert!(j.verify(None).await.unwrap().ok(), "the chain verifies");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn postgres_restarted_during_an_incident_webhooks_503_while_away_and_nothing_is_lost() {
    let pg = tokio::task::spawn_blocking(|| PgServer::start(LOOPBACK)).await.unwrap();
    let db = pg.create_database("journal").await;
    let w = World::start().await;
    let spec = spec(&db, &w);
    let a = spec.spawn().await;
    let b = spec.spawn().await;
    let (leader, _) = one_leader(&[&a, &b], Duration::from_secs(15)).await;
    let follower = if leader == 0 { &b } else { &a };
    w.primary.kill();
    w.service_sees_redis_down().await;
    assert_eq!(post_alert(follower, "before").await.unwrap(), 202);
    let j = Journal::open_existing(&db).await.unwrap();
    let id = wait_gate(&j).await;

    let pg2 = std::sync::Arc::new(pg);
    let p = pg2.clone();
    tokio::task::spawn_blocking(move || p.stop()).await.unwrap();
    // Away: a webhook is not journaled, and says so.
    for inst in [&a, &b] {
        let status = post_alert(inst, "while-away").await.unwrap();
        assert_eq!(status, 503, "not journaled while PostgreSQL is away, so the sender retries");
    }
    let p = pg2.clone();
    tokio::task::spawn_blocking(move || p.start_again()).await.unwrap();
    // Back: the sender's retry is journaled (possibly after a 503 or two while the
    // pool finds its connections dead).
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    loop {
        match post_alert(follower, "while-away").await {
            Ok(s) if s == 202 => break,
            Ok(s) => assert_eq!(s, 503, "a failed write is a 503, never a loss"),
            Err(_) => {}
        }
        assert!(tokio::time::Instant::now() < deadline, "never journaled after PostgreSQL returned");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let j = Journal::open_existing(&db).await.unwrap();
    let alerts = j.alerts(&id).await.unwrap();
    assert_eq!(alerts.iter().filter(|a| a.fingerprint == "while-away").count(), 1, "journaled once: {alerts:?}");
    // The incident continues: a leader (re-elected if the outage cost the lease)
    // applies the approval and finishes it.
    one_leader(&[&a, &b], Duration::from_secs(20)).await;
    assert!(approve(follower, &id).await.is_success());
    assert_eq!(support::world::wait_closed(&j, &id, Duration::from_secs(60)).await, "recovered");
    assert_once(&w, &j.effects(&id).await.unwrap(), "across the PostgreSQL restart");
    assert!(j.verify(None).await.unwrap().ok());
}
