//! One `serve` running several targets (issue 11): each target its own primary, backup,
//! service and platform (one sandbox world each), one journal, one listener. Real
//! redis-server processes killed for real; the platforms' own counts.

mod support;

use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use orchestrator::model::Side;
use std::time::{Duration, Instant};
use support::world::*;

const FAST: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];

/// The playbook edits that make a world the target `name`, routed by `service=NAME`,
/// re-arming one second after its standby passes preflight, with no cooldown.
fn target(name: &'static str) -> Vec<(&'static str, &'static str)> {
    let renamed: &'static str =
        Box::leak(format!("name: {name}\nrouting:\n  labels:\n    service: {name}\ntopology:\n  rearm_after: 1s").into_boxed_str());
    let mut e = FAST.to_vec();
    e.push(("name: sandbox", renamed));
    e.push(("cooldown: 1m", "cooldown: 0s"));
    e
}

async fn journal(w: &World) -> Journal {
    Journal::open_existing(&w.journal_path()).await.unwrap()
}

async fn wait_open(j: &Journal, target: &str, limit: Duration) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(i) = j.open_incident_for(target).await.unwrap() {
            return i.id;
        }
        assert!(tokio::time::Instant::now() < deadline, "no incident opened for {target} within {limit:?}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

async fn wait_outcome(j: &Journal, id: &str, limit: Duration) -> String {
    wait_closed(j, id, limit).await
}

async fn status(s: &Served) -> serde_json::Value {
    reqwest::Client::new().get(format!("{}/status", s.url)).bearer_auth(ONCALL_TOKEN).send().await.unwrap().json().await.unwrap()
}

fn of<'a>(status: &'a serde_json::Value, target: &str) -> &'a serde_json::Value {
    status.as_array().unwrap().iter().find(|t| t["target"] == target).unwrap_or_else(|| panic!("{target} in {status}"))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killing_one_targets_primary_fails_over_that_target_only_and_back_after_rearm() {
    let (a, b) = (World::start().await, World::start().await);
    let (ea, eb) = (target("alpha"), target("bravo"));
    let s = serve_fleet(&a.journal_path(), &[(&a, &ea), (&b, &eb)], true).await;
    let j = journal(&a).await;

    a.primary.kill();
    let id = wait_open(&j, "alpha", Duration::from_secs(20)).await;
    assert_eq!(j.incident(&id).await.unwrap().trigger_source, "watch", "the watch loop saw it");
    assert_eq!(wait_outcome(&j, &id, Duration::from_secs(60)).await, "recovered");
    assert_eq!(a.sandbox.platform().env_var("REDIS_URL"), Some(a.backup.url()));
    assert!(b.env_writes().is_empty(), "bravo's platform was never written");
    assert_eq!(b.sandbox.platform().stats().deploy_count, 0, "bravo never deployed");
    assert!(j.incidents(100).await.unwrap().iter().all(|i| i.target == "alpha"), "no incident for bravo");

    // The topology moved without a playbook edit; failover is disarmed while the old
    // primary is dead.
    let st = status(&s).await;
    let alpha = of(&st, "alpha");
    assert_eq!(
        (alpha["active"].as_str(), alpha["standby"].as_str(), alpha["armed"].as_bool()),
        (Some("backup"), Some("primary"), Some(false)),
        "{alpha}"
    );
    assert_eq!(alpha["through"].as_str(), Some(id.as_str()));
    assert_eq!(of(&st, "bravo")["active"], "primary");
    assert_eq!(of(&st, "bravo")["armed"], true);
    // Still disarmed: a breach now is journaled as failed_over, nothing starts.
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/generic/alpha", s.url))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&serde_json::json!({ "summary": "still down" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let d: serde_json::Value = r.json().await.unwrap();
    assert_eq!(d["alerts"][0]["disposition"], "failed_over", "{d}");

    // The old primary comes back; stale keys on it must be flushed before it is used.
    a.primary.restart().unwrap();
    let stale = redis::Client::open(a.primary.url()).unwrap();
    let mut c = stale.get_multiplexed_async_connection().await.unwrap();
    let _: () = redis::cmd("SET").arg("bull:default:stale-from-before").arg("x").query_async(&mut c).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !j.topology("alpha").await.unwrap().armed {
        assert!(tokio::time::Instant::now() < deadline, "alpha never re-armed: {:?}", j.topology("alpha").await.unwrap());
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let history = j.topology_history("alpha", 10).await.unwrap();
    let kinds: Vec<&str> = history.iter().map(|c| c.change.as_str()).collect();
    assert_eq!(kinds, ["moved", "standby_ok", "armed"], "{history:?}");

    // Killing the new active fails over back to the old primary, flushing it first.
    a.backup.kill();
    let back = {
        let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
        loop {
            if let Some(i) = j.open_incident_for("alpha").await.unwrap().filter(|i| i.id != id) {
                break i.id;
            }
            assert!(tokio::time::Instant::now() < deadline, "no failback incident");
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    };
    assert_eq!(wait_outcome(&j, &back, Duration::from_secs(60)).await, "recovered");
    assert_eq!(a.sandbox.platform().env_var("REDIS_URL"), Some(a.primary.url()), "back on the primary");
    let exists: i64 = redis::cmd("EXISTS").arg("bull:default:stale-from-before").query_async(&mut c).await.unwrap();
    assert_eq!(exists, 0, "the old primary was flushed before the service went back to it");
    let flush = j.effects(&back).await.unwrap().into_iter().find(|e| e.kind == "flush").expect("a flush");
    assert!(flush.intent.contains(&format!("127.0.0.1:{}", a.primary.port())), "flushed the old primary: {}", flush.intent);
    assert_eq!(j.topology("alpha").await.unwrap().active, Side::Primary);
    assert!(b.env_writes().is_empty(), "bravo untouched throughout");
    s.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_for_one_target_does_not_hold_up_another_targets_incident() {
    let (a, b) = (World::start().await, World::start().await);
    let (ea, eb) = (target("alpha"), target("bravo"));
    let s = serve_fleet(&a.journal_path(), &[(&a, &ea), (&b, &eb)], false).await;
    let j = journal(&a).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let fire = |target: &'static str, body: serde_json::Value| {
        let (client, url) = (client.clone(), format!("{}/webhooks/alertmanager/{target}", s.url));
        async move { client.post(url).bearer_auth(WEBHOOK_TOKEN).json(&body).send().await.map(|r| r.status().as_u16()) }
    };

    // Baseline: bravo's alert alone (resolved alerts open nothing: only the journal
    // write is timed).
    let quiet = serde_json::json!({"status": "resolved", "alerts": [{"labels": {"alertname": "X"}, "startsAt": "t", "fingerprint": "q"}]});
    let t = Instant::now();
    assert_eq!(fire("bravo", quiet.clone()).await.unwrap(), 202);
    let alone = t.elapsed();

    // A storm for alpha: 40 bodies of 1,000 alerts each, in flight together.
    let many: Vec<serde_json::Value> = (0..1000)
        .map(|i| serde_json::json!({"status": "firing", "labels": {"alertname": "Storm"}, "startsAt": "t", "fingerprint": format!("s{i}")}))
        .collect();
    let storm_body = serde_json::json!({"status": "firing", "alerts": many});
    b.primary.kill();
    b.service_sees_redis_down().await;
    let storm_started = Instant::now();
    let storm: Vec<_> = (0..40).map(|_| tokio::spawn(fire("alpha", storm_body.clone()))).collect();
    // Let the storm's first batches reach the journal, then send bravo's alert.
    support::world::wait_until(Duration::from_secs(20), "the storm to start landing", || {
        let j = j.clone();
        async move {
            let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE target = 'alpha'").fetch_one(j.pool()).await.unwrap();
            n.0 > 0
        }
    })
    .await;
    let t = Instant::now();
    let r = client
        .post(format!("{}/webhooks/alertmanager/bravo", s.url))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&firing_alertmanager("bravo-down"))
        .send()
        .await
        .unwrap();
    let during = t.elapsed();
    let bravo_answered = storm_started.elapsed();
    assert_eq!(r.status(), 202);
    let d: serde_json::Value = r.json().await.unwrap();
    let id = d["alerts"][0]["incident"].as_str().expect("bravo's incident opened").to_string();
    let mut statuses = std::collections::BTreeMap::new();
    for h in storm {
        *statuses.entry(h.await.unwrap().unwrap()).or_insert(0) += 1;
    }
    let storm_took = storm_started.elapsed();
    assert_eq!(statuses.get(&202), Some(&40), "{statuses:?}");
    eprintln!("bravo's alert: {alone:?} alone, {during:?} during alpha's storm of 40,000 alerts (which took {storm_took:?})");
    // The storm was still in flight when bravo was answered, and bravo waited for at
    // most the batch being written, never behind alpha's queue.
    assert!(bravo_answered < storm_took, "the storm ended before bravo's alert was answered: nothing was measured");
    assert!(during < storm_took / 2, "bravo's alert took {during:?} of the storm's {storm_took:?}: it queued behind alpha");
    assert_eq!(wait_outcome(&j, &id, Duration::from_secs(60)).await, "recovered");
    let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE target = 'alpha'").fetch_one(j.pool()).await.unwrap();
    assert_eq!(n.0, 40_000, "every storm alert journaled");
    // Alpha's primary is alive: its incidents end as false alarms, bravo's stands alone.
    assert!(j.incidents(100).await.unwrap().iter().filter(|i| i.target == "alpha").all(|i| i.outcome.as_deref() != Some("recovered")));
    s.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alerts_are_routed_by_url_and_labels_and_unmatched_ones_are_journaled_as_unrouted() {
    let (a, b) = (World::start().await, World::start().await);
    let (ea, eb) = (target("alpha"), target("bravo"));
    let s = serve_fleet(&a.journal_path(), &[(&a, &ea), (&b, &eb)], false).await;
    let j = journal(&a).await;
    let client = reqwest::Client::new();
    let post = |path: &str, body: serde_json::Value| {
        let req = client.post(format!("{}{path}", s.url)).bearer_auth(WEBHOOK_TOKEN).json(&body);
        async move {
            let r = req.send().await.unwrap();
            assert_eq!(r.status(), 202, "unrouted alerts are still 2xx");
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let resolved = |labels: serde_json::Value| serde_json::json!({"status": "resolved", "alerts": [{"labels": labels, "startsAt": "t"}]});
    // One Grafana body, three alerts: by playbook label, by `target` label, by nothing.
    let body = serde_json::json!({"status": "resolved", "alerts": [
        {"labels": {"alertname": "A", "service": "bravo"}, "startsAt": "t1"},
        {"labels": {"alertname": "B", "target": "alpha"}, "startsAt": "t2"},
        {"labels": {"alertname": "C", "service": "charlie"}, "startsAt": "t3"},
    ]});
    let d = post("/webhooks/grafana", body).await;
    let targets: Vec<_> = d["alerts"].as_array().unwrap().iter().map(|a| (a["target"].clone(), a["disposition"].clone())).collect();
    assert_eq!(
        targets,
        vec![
            (serde_json::json!("bravo"), serde_json::json!("resolved")),
            (serde_json::json!("alpha"), serde_json::json!("resolved")),
            (serde_json::Value::Null, serde_json::json!("unrouted")),
        ]
    );
    // A URL naming no target, and a generic alert naming one that does not exist.
    let d = post("/webhooks/alertmanager/nosuch", resolved(serde_json::json!({"alertname": "D"}))).await;
    assert_eq!(d["alerts"][0]["disposition"], "unrouted");
    let d = post("/webhooks/generic", serde_json::json!({"summary": "x", "target": "zulu", "status": "resolved"})).await;
    assert_eq!(d["alerts"][0]["disposition"], "unrouted");

    let unrouted = j.unrouted_alerts(100).await.unwrap();
    let named: Vec<&str> = unrouted.iter().map(|u| u.target.as_str()).collect();
    assert_eq!(named, ["", "nosuch", "zulu"], "{unrouted:?}");
    assert!(j.open_incidents().await.unwrap().is_empty(), "nothing started");
    let m = client.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("orchestrator_alerts_unrouted_total{source=\"grafana\"} 1"), "{m}");
    assert!(m.contains("orchestrator_alerts_unrouted_total{source=\"alertmanager\"} 1"), "{m}");
    assert!(m.contains("orchestrator_alerts_unrouted_total{source=\"generic\"} 1"), "{m}");
    assert!(m.contains("orchestrator_target_armed{target=\"alpha\"} 1"), "{m}");

    // The CLI lists them.
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .args(["--db", a.journal_path().to_str().unwrap(), "incidents", "--unrouted"])
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout);
    assert!(out.status.success() && text.contains("nosuch") && text.contains("zulu"), "{text}");
    s.stop.send(true).unwrap();
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn switchover_round_trip_moves_the_service_with_one_write_and_one_deploy_each_way() {
    let w = World::start().await;
    let pb = w.playbook_file(FAST);
    let run = |args: Vec<String>| {
        let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        cmd.arg("--db").arg(w.journal_path()).args(args).envs(&w.env);
        cmd.output().unwrap()
    };
    let pbs = pb.to_str().unwrap().to_string();
    let switchover = || run(vec!["switchover".into(), "sandbox".into(), "--playbook".into(), pbs.clone()]);

    let out = switchover();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.backup.url()));
    assert!(w.job_completes(Duration::from_secs(5)).await, "jobs run on the backup");
    let st = run(vec!["status".into(), "--playbook".into(), pbs.clone(), "--json".into()]);
    let st: serde_json::Value = serde_json::from_slice(&st.stdout).unwrap();
    assert_eq!(st[0]["active"], "backup", "{st}");

    let out = switchover();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.primary.url()), "back on the primary");
    assert!(w.job_completes(Duration::from_secs(5)).await, "jobs run on the primary");

    let stats = w.sandbox.platform().stats();
    assert_eq!(w.env_writes(), vec![("REDIS_URL".into(), w.backup.url()), ("REDIS_URL".into(), w.primary.url())], "one write per move");
    assert_eq!(stats.deploy_count, 2, "one deploy per move");
    let j = journal(&w).await;
    let incidents = j.incidents(10).await.unwrap();
    assert_eq!(incidents.len(), 2);
    for i in &incidents {
        assert_eq!(i.outcome.as_deref(), Some("recovered"));
        assert_eq!(i.trigger_source, "switchover");
        let path: Vec<String> =
            j.transitions(&i.id).await.unwrap().into_iter().filter(|t| t.from_state != t.to_state).map(|t| t.to_state).collect();
        assert_eq!(path, ["assess", "switch", "flush", "deploy", "verify", "recovered"], "no Confirm in a planned switchover");
    }
    assert_eq!(j.topology("sandbox").await.unwrap().active, Side::Primary);
    // The audit reads as a switchover.
    let audit = run(vec!["audit".into(), incidents[0].id.clone()]);
    assert!(String::from_utf8_lossy(&audit.stdout).contains("planned switchover"), "{}", String::from_utf8_lossy(&audit.stdout));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_switchover_to_a_dead_standby_is_refused_with_no_write() {
    let w = World::start().await;
    w.backup.kill();
    let pb = w.playbook_file(FAST);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["switchover", "sandbox", "--playbook", pb.to_str().unwrap()])
        .envs(&w.env)
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(5), "escalated: {}", String::from_utf8_lossy(&out.stderr));
    assert!(w.env_writes().is_empty(), "never switched to a dead standby");
    assert_eq!(journal(&w).await.topology("sandbox").await.unwrap().active, Side::Primary);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn arm_asks_the_platform_first_and_pause_can_name_one_target() {
    let w = World::start().await;
    let pb = w.playbook_file(FAST);
    let pbs = pb.to_str().unwrap().to_string();
    let run = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
            .arg("--db")
            .arg(w.journal_path())
            .args(args)
            .envs(&w.env)
            .output()
            .unwrap()
    };
    let out = run(&["switchover", "sandbox", "--playbook", &pbs]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let j = journal(&w).await;
    assert!(!j.topology("sandbox").await.unwrap().armed, "disarmed after the move");

    // Saying the primary is active while the platform holds the backup is refused.
    let out = run(&["arm", "sandbox", "--playbook", &pbs, "--active", "primary", "--as", "alice"]);
    assert_eq!(out.status.code(), Some(2), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("not the primary's URL"), "{}", String::from_utf8_lossy(&out.stderr));
    assert!(!j.topology("sandbox").await.unwrap().armed);
    let out = run(&["arm", "sandbox", "--playbook", &pbs, "--active", "backup", "--as", "alice", "--comment", "checked"]);
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let t = j.topology("sandbox").await.unwrap();
    assert!(t.armed && t.active == Side::Backup && t.reason.contains("alice"), "{t:?}");
    let last = j.topology_history("sandbox", 1).await.unwrap().remove(0);
    assert_eq!((last.change.as_str(), last.actor.as_str()), ("set", "alice"));

    // A pause for one target holds it alone; a global pause outlives unpausing it.
    assert!(run(&["pause", "--target", "sandbox", "--as", "alice"]).status.success());
    assert!(j.paused_for("sandbox").await.unwrap() && !j.paused_for("other").await.unwrap());
    let typo = run(&["pause", "--target", "sandbx", "--as", "alice"]);
    assert!(String::from_utf8_lossy(&typo.stderr).contains("check the name"), "{}", String::from_utf8_lossy(&typo.stderr));
    assert!(run(&["pause", "--as", "bob"]).status.success());
    let out = run(&["unpause", "--target", "sandbox", "--as", "alice"]);
    assert!(String::from_utf8_lossy(&out.stdout).contains("stays paused for every target"), "{}", String::from_utf8_lossy(&out.stdout));
    assert!(j.paused_for("sandbox").await.unwrap(), "the global pause still holds");
    assert!(run(&["unpause", "--as", "bob"]).status.success());
    assert!(!j.paused_for("sandbox").await.unwrap());
}
