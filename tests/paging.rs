//! Paging through PagerDuty's Events API v2, against a local stand-in of `/v2/enqueue`
//! on 127.0.0.1:0 (axum), with real redis-server processes and the sandbox: trigger at
//! an approval gate and at an escalation, resolve when the incident closes, the routing
//! key from the environment, no secret in any body, and a pager that is down changing
//! nothing about the incident.

mod support;

use orchestrator::executor::{Executor, RunEnd};
use orchestrator::journal::prelude::*;
use orchestrator::journal::{CommandKind, Journal};
use orchestrator::model::Step;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::world::{outcome, wait_until, World, WorldOptions, PLATFORM_KEY, SERVICE_KEY};

const ROUTING_KEY: &str = "pd-routing-key-e5a1c09b77d2";
const PRIMARY_PW: &str = "primary-pw-7Qx2vR";
const BACKUP_PW: &str = "backup-pw-3Kd9sL";
const FAST: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];

/// The stand-in: records every body and answers as PagerDuty does (202).
struct StandIn {
    url: String,
    bodies: Arc<Mutex<Vec<serde_json::Value>>>,
}

async fn stand_in() -> StandIn {
    let bodies: Arc<Mutex<Vec<serde_json::Value>>> = Default::default();
    let seen = bodies.clone();
    let app = axum::Router::new().route(
        "/v2/enqueue",
        axum::routing::post(move |body: axum::Json<serde_json::Value>| {
            let seen = seen.clone();
            async move {
                let key = body["dedup_key"].clone();
                seen.lock().unwrap().push(body.0);
                (
                    axum::http::StatusCode::ACCEPTED,
                    axum::Json(serde_json::json!({"status": "success", "message": "Event processed", "dedup_key": key})),
                )
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/v2/enqueue", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    StandIn { url, bodies }
}

/// An address nothing listens on: connection refused.
async fn nobody() -> String {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/v2/enqueue", listener.local_addr().unwrap());
    drop(listener);
    url
}

async fn world() -> World {
    let mut w =
        World::start_with(WorldOptions { primary_password: Some(PRIMARY_PW), backup_password: Some(BACKUP_PW), ..Default::default() })
            .await;
    w.env.insert("PD_ROUTING_KEY".into(), ROUTING_KEY.into());
    w
}

async fn paging_executor(w: &World, pd_url: &str, gate_flush: bool) -> Executor {
    let section = format!(
        "cooldown: 1m\nnotifications:\n  pagerduty:\n    routing_key: \"${{PD_ROUTING_KEY}}\"\n    url: \"{pd_url}\"\n    attempts: 2\n    timeout: 1s\n"
    );
    let mut edits: Vec<(&str, &str)> = FAST.to_vec();
    edits.push(("cooldown: 1m\n", &section));
    if gate_flush {
        edits.push(("  steps: []", "  steps: [flush]"));
    }
    w.executor(&edits).await
}

/// No secret of the test in any body but the routing key in its own field.
fn assert_no_secret(bodies: &[serde_json::Value]) {
    for b in bodies {
        let mut without_key = b.clone();
        assert_eq!(without_key["routing_key"], ROUTING_KEY, "the routing key comes from the environment");
        without_key.as_object_mut().unwrap().remove("routing_key");
        let text = without_key.to_string();
        for secret in [PRIMARY_PW, BACKUP_PW, SERVICE_KEY, PLATFORM_KEY, ROUTING_KEY] {
            assert!(!text.contains(secret), "{secret} leaked into a page: {text}");
        }
    }
}

async fn page_effects(w: &World, id: &str) -> Vec<(String, Option<String>)> {
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    j.effects(id).await.unwrap().into_iter().filter(|e| e.kind == "page").map(|e| (e.key, e.outcome)).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_approval_gate_pages_and_the_close_resolves_with_the_incident_as_dedup_key() {
    let w = world().await;
    let pd = stand_in().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = paging_executor(&w, &pd.url, true).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::AwaitingApproval(Step::Flush));
    wait_until(Duration::from_secs(10), "the gate's trigger", || async { !pd.bodies.lock().unwrap().is_empty() }).await;
    {
        let bodies = pd.bodies.lock().unwrap();
        let t = &bodies[0];
        assert_eq!((t["event_action"].as_str(), t["dedup_key"].as_str()), (Some("trigger"), Some(id.as_str())));
        assert_eq!(t["payload"]["severity"], "warning");
        assert!(t["payload"]["summary"].as_str().unwrap().contains("awaits approval for flush"), "{t}");
        assert!(t["payload"]["source"].as_str().unwrap().contains("sandbox"), "{t}");
        assert_eq!(t["payload"]["custom_details"]["incident"], id.as_str());
    }
    exec.journal.add_command(&id, CommandKind::Approve, "oncall", "go", "cli", chrono::Utc::now()).await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "recovered");
    exec.flush_notifications(Duration::from_secs(10)).await;
    let bodies = pd.bodies.lock().unwrap().clone();
    let actions: Vec<(&str, &str)> =
        bodies.iter().map(|b| (b["event_action"].as_str().unwrap(), b["dedup_key"].as_str().unwrap())).collect();
    assert_eq!(actions, [("trigger", id.as_str()), ("resolve", id.as_str())], "one trigger, then its resolve");
    assert_no_secret(&bodies);
    let effects = page_effects(&w, &id).await;
    assert_eq!(effects.len(), 2, "{effects:?}");
    assert!(effects.iter().all(|(_, o)| o.as_deref() == Some("ok")), "{effects:?}");
    assert!(
        effects[0].0.starts_with(&format!("{id}:page:trigger:approval:")) && effects[1].0 == format!("{id}:page:resolve"),
        "{effects:?}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_escalation_pages_critical_and_stays_open_for_the_person() {
    let w = world().await;
    let pd = stand_in().await;
    w.primary.kill();
    w.backup.kill();
    w.service_sees_redis_down().await;
    let exec = paging_executor(&w, &pd.url, false).await;
    let id = exec.open("test", "both down").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "escalated");
    exec.flush_notifications(Duration::from_secs(10)).await;
    let bodies = pd.bodies.lock().unwrap().clone();
    assert_eq!(bodies.len(), 1, "a trigger and no resolve: a person must act: {bodies:?}");
    let t = &bodies[0];
    assert_eq!((t["event_action"].as_str(), t["dedup_key"].as_str()), (Some("trigger"), Some(id.as_str())));
    assert_eq!(t["payload"]["severity"], "critical");
    let summary = t["payload"]["summary"].as_str().unwrap();
    assert!(summary.contains("escalated") && summary.contains("backup fails preflight"), "{summary}");
    assert_no_secret(&bodies);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_pager_that_is_down_leaves_the_incident_as_it_would_be() {
    // Escalated, the page journaled as failed.
    let w = world().await;
    w.primary.kill();
    w.backup.kill();
    w.service_sees_redis_down().await;
    let exec = paging_executor(&w, &nobody().await, false).await;
    let id = exec.open("test", "both down").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "escalated");
    exec.flush_notifications(Duration::from_secs(10)).await;
    let effects = page_effects(&w, &id).await;
    assert_eq!(effects.len(), 1, "{effects:?}");
    assert_eq!(effects[0].1.as_deref(), Some("failed"));
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let row = j.effects(&id).await.unwrap().into_iter().find(|e| e.kind == "page").unwrap();
    let result = row.result.unwrap_or_default();
    assert!(result.contains("cannot connect") && !result.contains(ROUTING_KEY), "{result}");

    // Recovered through a gate, both pages failed, nothing waited on them.
    let w = world().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let exec = paging_executor(&w, &nobody().await, true).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    assert_eq!(exec.run(&id).await.unwrap(), RunEnd::AwaitingApproval(Step::Flush));
    exec.journal.add_command(&id, CommandKind::Approve, "oncall", "go", "cli", chrono::Utc::now()).await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "recovered");
    exec.flush_notifications(Duration::from_secs(10)).await;
    let effects = page_effects(&w, &id).await;
    assert_eq!(effects.len(), 2, "the trigger was attempted, so its resolve is too: {effects:?}");
    assert!(effects.iter().all(|(_, o)| o.as_deref() == Some("failed")), "{effects:?}");
    assert_eq!(w.env_writes().len(), 1, "one platform write, as without a pager");
}
