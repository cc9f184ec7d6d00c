//! `serve` in-process against the sandbox: webhook intake (auth, limits, storms,
//! cooldown, pause), approvals over HTTP, TTL expiry, the watch loop, metrics.

mod support;

use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use std::time::Duration;
use support::world::*;

async fn incident_count(w: &World) -> usize {
    Journal::open_existing(&w.journal_path()).await.unwrap().incidents(10_000).await.unwrap().len()
}

async fn alert_rows(w: &World) -> i64 {
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts").fetch_one(j.pool()).await.unwrap();
    n.0
}

async fn wait_outcome(w: &World, id: &str, limit: Duration) -> String {
    wait_closed(&Journal::open_existing(&w.journal_path()).await.unwrap(), id, limit).await
}

/// Sends a generic firing alert with the webhook token; returns the answer's JSON.
async fn fire(s: &Served, summary: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(format!("{}/webhooks/generic", s.url))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&serde_json::json!({ "summary": summary }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json().await.unwrap()
}

/// Fires an alert and returns the incident it opened.
async fn open_incident(s: &Served) -> String {
    fire(s, "redis down").await["alerts"][0]["incident"].as_str().expect("an incident was opened").to_string()
}

const FAST: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_storm_of_1000_duplicate_alerts_opens_one_incident() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let s = w.serve(FAST, false).await;
    let client = reqwest::Client::builder().pool_max_idle_per_host(64).build().unwrap();
    let body = firing_alertmanager("fp-redis-down");
    let mut handles = Vec::new();
    for _ in 0..1000 {
        let client = client.clone();
        let url = format!("{}/webhooks/alertmanager", s.url);
        let body = body.clone();
        handles.push(tokio::spawn(async move {
            client.post(url).bearer_auth(WEBHOOK_TOKEN).json(&body).send().await.map(|r| r.status().as_u16())
        }));
    }
    let mut statuses = std::collections::BTreeMap::new();
    for h in handles {
        *statuses.entry(h.await.unwrap().unwrap()).or_insert(0) += 1;
    }
    assert_eq!(statuses.get(&202), Some(&1000), "every webhook answered 2xx: {statuses:?}");
    assert_eq!(incident_count(&w).await, 1, "exactly one incident");
    assert_eq!(alert_rows(&w).await, 1000, "every alert journaled");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let id = j.incidents(1).await.unwrap()[0].id.clone();
    assert_eq!(wait_outcome(&w, &id, Duration::from_secs(60)).await, "recovered");
    // After a completed failover, the playbook's primary is no longer in service: a new
    // firing alert is journaled but never starts a second failover (that would flush
    // the Redis production now uses) until the playbook is updated.
    let r = client.post(format!("{}/webhooks/alertmanager", s.url)).bearer_auth(WEBHOOK_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["alerts"][0]["disposition"], "failed_over");
    assert_eq!(incident_count(&w).await, 1);
    let _ = s.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_webhooks_are_refused_and_nothing_is_journaled() {
    let w = World::start().await;
    let s = w.serve(FAST, false).await;
    let client = reqwest::Client::new();
    let url = format!("{}/webhooks/grafana", s.url);
    let body = firing_alertmanager("fp");

    let r = client.post(&url).bearer_auth("wrong-token").json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401);
    let r = client.post(&url).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401, "no token at all");
    let r = client.post(&url).bearer_auth(ONCALL_TOKEN).json(&body).send().await.unwrap();
    assert_eq!(r.status(), 401, "an approver token is not a webhook token");

    let huge = vec![b'x'; 300 * 1024];
    let r = client.post(&url).bearer_auth(WEBHOOK_TOKEN).body(huge).send().await.unwrap();
    assert_eq!(r.status(), 413);
    let r = client.post(&url).bearer_auth(WEBHOOK_TOKEN).body("{\"alerts\": [").send().await.unwrap();
    assert_eq!(r.status(), 400);
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["error"].as_str().unwrap().contains("not valid JSON"));
    let r = client.post(&url).bearer_auth(WEBHOOK_TOKEN).body(vec![0xff, 0xfe, 0xfd]).send().await.unwrap();
    assert_eq!(r.status(), 400, "not UTF-8");
    let deep = format!("{}{}", "[".repeat(5000), "]".repeat(5000));
    let r = client.post(&url).bearer_auth(WEBHOOK_TOKEN).body(deep).send().await.unwrap();
    assert_eq!(r.status(), 400, "too deeply nested");
    let many = serde_json::json!({"alerts": vec![serde_json::json!({"labels": {}}); 5000]});
    let r = client.post(&url).bearer_auth(WEBHOOK_TOKEN).json(&many).send().await.unwrap();
    assert_eq!(r.status(), 413, "thousands of alerts in one body");

    assert_eq!(alert_rows(&w).await, 0, "nothing journaled");
    assert_eq!(incident_count(&w).await, 0);
    // And the server keeps serving.
    let r = client.get(format!("{}/healthz", s.url)).send().await.unwrap();
    assert_eq!(r.status(), 200);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn grafana_hmac_signature_is_accepted_and_resolved_alerts_are_journaled() {
    let w = World::start().await;
    let s = w.serve(FAST, false).await;
    let body = serde_json::to_vec(&serde_json::json!({"status": "resolved", "alerts": [{"status": "resolved", "labels": {"alertname": "RedisDown"}, "fingerprint": "g1"}]})).unwrap();
    let ts = chrono::Utc::now().timestamp().to_string();
    let sig = orchestrator::server::auth::sign("hmac-secret-for-tests", Some(&ts), &body);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/webhooks/grafana", s.url))
        .header("X-Grafana-Alerting-Signature", &sig)
        .header("X-Grafana-Alerting-Signature-Timestamp", &ts)
        .body(body.clone())
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["alerts"][0]["disposition"], "resolved");
    let r = client
        .post(format!("{}/webhooks/grafana", s.url))
        .header("X-Grafana-Alerting-Signature", "00".repeat(32))
        .body(body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 401);
    assert_eq!(incident_count(&w).await, 0, "a resolved alert opens nothing");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn paused_failover_journals_alerts_without_opening_incidents() {
    let w = World::start().await;
    let s = w.serve(FAST, false).await;
    s.daemon.journal.set_setting("paused", "1", "test", chrono::Utc::now()).await.unwrap();
    let client = reqwest::Client::new();
    let v = fire(&s, "redis down").await;
    assert_eq!(v["alerts"][0]["disposition"], "paused");
    assert_eq!(incident_count(&w).await, 0);
    let m = client.get(format!("{}/metrics", s.url)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("orchestrator_paused 1"), "{m}");
    assert!(m.contains("orchestrator_webhooks_total{source=\"generic\",result=\"accepted\"} 1"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn approvals_over_http_refuse_strangers_and_count_allowed_people() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let mut edits = FAST.to_vec();
    edits.push(("  steps: []", "  steps: [flush]"));
    let s = w.serve(&edits, false).await;
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/webhooks/alertmanager", s.url))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&firing_alertmanager("fp"))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let id = v["alerts"][0]["incident"].as_str().unwrap().to_string();
    wait_state(&w, &id, &["awaiting_approval"], Duration::from_secs(30)).await;
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();

    let r = client.post(format!("{}/incidents/{id}/approve", s.url)).json(&serde_json::json!({"comment": "lgtm"})).send().await.unwrap();
    assert_eq!(r.status(), 401, "no approver token");
    let r = client
        .post(format!("{}/incidents/{id}/approve", s.url))
        .bearer_auth(MALLORY_TOKEN)
        .json(&serde_json::json!({"comment": "let me"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 403, "mallory is not on the playbook's approver list");
    let v: serde_json::Value = r.json().await.unwrap();
    assert!(v["result"].as_str().unwrap().contains("not on the approver list"), "{v}");
    assert_eq!(j.incident(&id).await.unwrap().state, "awaiting_approval");

    let r = client.post(format!("{}/incidents/inc-nope/approve", s.url)).bearer_auth(ONCALL_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 404);

    let r = client
        .post(format!("{}/incidents/{id}/approve", s.url))
        .bearer_auth(ONCALL_TOKEN)
        .json(&serde_json::json!({"comment": "flush ok"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(wait_outcome(&w, &id, Duration::from_secs(60)).await, "recovered");

    // The refusal and the approval are both in the journal, with who and why.
    let cmds = j.commands(&id).await.unwrap();
    assert_eq!(cmds.len(), 2);
    assert_eq!((cmds[0].actor.as_str(), cmds[0].accepted, cmds[0].comment.as_str()), ("mallory", Some(false), "let me"));
    assert_eq!((cmds[1].actor.as_str(), cmds[1].accepted, cmds[1].via.as_str()), ("oncall", Some(true), "http"));
    let r = client.get(format!("{}/incidents/{id}", s.url)).bearer_auth(LEAD_TOKEN).send().await.unwrap();
    let audit: serde_json::Value = r.json().await.unwrap();
    assert!(audit["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .any(|t| t["rejected"].as_str().map(|r| r.contains("mallory")).unwrap_or(false)));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_that_never_comes_escalates_when_the_ttl_expires() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let mut edits = FAST.to_vec();
    edits.push(("  steps: []", "  steps: [flush]"));
    edits.push(("  ttl: 10m", "  ttl: 2s"));
    let s = w.serve(&edits, false).await;
    let id = open_incident(&s).await;
    assert_eq!(wait_outcome(&w, &id, Duration::from_secs(30)).await, "held");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let t = j.transitions(&id).await.unwrap();
    assert!(
        t.iter().any(|t| t.event == "approval_expired" && t.to_state == "rollback"),
        "giving up after the switch goes through rollback"
    );
    let held = t.iter().find(|t| t.from_state == "rollback" && t.to_state == "held").expect("held: the primary is still down");
    assert!(held.note.as_deref().unwrap_or("").contains("not deployed"), "{:?}", held.note);
    assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.backup.url()), "no write back to a dead primary");
    assert_eq!(w.sandbox.platform().stats().deploy_count, 0, "and no deploy");
    // Held on the backup: automatic failover is disarmed until a person says where the
    // service is (`orchestrator arm`); a new alert is journaled and starts nothing.
    let v = fire(&s, "still down").await;
    assert_eq!(v["alerts"][0]["disposition"], "failed_over");
    let topo = j.topology("sandbox").await.unwrap();
    assert!(!topo.armed && topo.needs_person && topo.reason.contains("orchestrator arm"), "{topo:?}");
    assert_eq!(incident_count(&w).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_watch_loop_detects_a_killed_primary_and_recovers() {
    let w = World::start().await;
    let mut edits = FAST.to_vec();
    edits.push(("  interval: 1s", "  interval: 200ms"));
    edits.push(("  ping_fail_for: 2s", "  ping_fail_for: 600ms"));
    let s = w.serve(&edits, true).await;
    w.primary.kill();
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    wait_until(Duration::from_secs(20), "the watch loop to open an incident", || {
        let j = j.clone();
        async move { !j.incidents(1).await.unwrap().is_empty() }
    })
    .await;
    let inc = j.incidents(1).await.unwrap().remove(0);
    assert_eq!(inc.trigger_source, "watch");
    assert!(inc.trigger_detail.contains("Redis ping failing"), "{}", inc.trigger_detail);
    assert_eq!(wait_outcome(&w, &inc.id, Duration::from_secs(60)).await, "recovered");
    let m = reqwest::get(format!("{}/metrics", s.url)).await.unwrap().text().await.unwrap();
    assert!(m.contains("orchestrator_incidents_total{target=\"sandbox\",outcome=\"recovered\"} 1"), "{m}");
    assert!(m.contains("orchestrator_steps_total{step=\"verify\"} 1"), "{m}");
    assert!(m.contains("orchestrator_probe_failures_total"), "{m}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_adopts_an_incident_opened_by_trigger() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let _s = w.serve(FAST, false).await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["trigger", "--playbook", w.playbook_file(FAST).to_str().unwrap(), "--reason", "on-call saw it first"])
        .envs(&w.env)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let id = String::from_utf8_lossy(&out.stdout).trim().to_string();
    assert!(id.starts_with("inc-"), "{id}");
    assert_eq!(wait_outcome(&w, &id, Duration::from_secs(60)).await, "recovered");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_process_cannot_drive_an_incident_that_serve_drives() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let mut edits = FAST.to_vec();
    edits.push(("  steps: []", "  steps: [flush]"));
    let s = w.serve(&edits, false).await;
    let client = reqwest::Client::new();
    let id = open_incident(&s).await;
    wait_state(&w, &id, &["awaiting_approval"], Duration::from_secs(30)).await;
    let playbook = w.playbook_file(&edits);
    let cli = |args: Vec<String>| {
        let w = &w;
        async move {
            tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
                .arg("--db")
                .arg(w.journal_path())
                .args(args)
                .envs(&w.env)
                .output()
                .await
                .unwrap()
        }
    };
    let out = cli(vec!["resume".into(), id.clone(), "--playbook".into(), playbook.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(1), "refused: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("is being driven by"), "{}", String::from_utf8_lossy(&out.stderr));
    let out = cli(vec!["run".into(), "--playbook".into(), playbook.display().to_string()]).await;
    assert_eq!(out.status.code(), Some(2), "no second incident for the same target: {}", String::from_utf8_lossy(&out.stderr));
    assert!(String::from_utf8_lossy(&out.stderr).contains("already open"));

    let r = client.post(format!("{}/incidents/{id}/approve", s.url)).bearer_auth(ONCALL_TOKEN).send().await.unwrap();
    assert_eq!(r.status(), 200);
    assert_eq!(wait_outcome(&w, &id, Duration::from_secs(60)).await, "recovered");
    assert_eq!(w.env_writes().len(), 1);
    assert_eq!(w.sandbox.platform().stats().deploy_count, 1);
    assert_eq!(incident_count(&w).await, 1);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_breach_held_back_by_pause_is_raised_again_after_unpause() {
    let w = World::start().await;
    let mut edits = FAST.to_vec();
    edits.push(("  interval: 1s", "  interval: 100ms"));
    edits.push(("  ping_fail_for: 2s", "  ping_fail_for: 300ms"));
    let s = w.serve(&edits, true).await;
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    j.set_setting("paused", "1", "test", chrono::Utc::now()).await.unwrap();
    w.primary.kill();
    wait_until(Duration::from_secs(20), "the breach to be journaled as paused", || {
        let j = j.clone();
        async move {
            let n: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM alerts WHERE disposition = 'paused'").fetch_one(j.pool()).await.unwrap();
            n.0 > 0
        }
    })
    .await;
    assert_eq!(incident_count(&w).await, 0, "paused: nothing opened");
    j.set_setting("paused", "0", "test", chrono::Utc::now()).await.unwrap();
    wait_until(Duration::from_secs(20), "an incident once unpaused", || {
        let j = j.clone();
        async move { !j.incidents(1).await.unwrap().is_empty() }
    })
    .await;
    let id = j.incidents(1).await.unwrap()[0].id.clone();
    assert_eq!(wait_outcome(&w, &id, Duration::from_secs(60)).await, "recovered");
    drop(s);
}
