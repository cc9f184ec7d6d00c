//! Maintenance windows: `pause --for` against a real `serve` (in-process) and the real
//! binary. The pause holds alerts back (journaled `paused`), shows its end in `status`,
//! `GET /status` and `/metrics`, and lifts itself at its end, journaled once as a
//! settings change by "orchestrator (maintenance window expired)".

mod support;

use orchestrator::journal::prelude::*;
use orchestrator::journal::{Journal, WINDOW_EXPIRED};
use std::process::Stdio;
use std::time::Duration;
use support::world::{wait_until, World, ONCALL_TOKEN, WEBHOOK_TOKEN};

const FAST: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];

async fn orchestrator(w: &World, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(args)
        .envs(&w.env)
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .output()
        .await
        .unwrap();
    if !out.status.success() {
        eprintln!("orchestrator {args:?} stderr:\n{}", String::from_utf8_lossy(&out.stderr));
    }
    (out.status.code(), String::from_utf8_lossy(&out.stdout).into_owned())
}

async fn fire(url: &str) -> serde_json::Value {
    let r = reqwest::Client::new()
        .post(format!("{url}/webhooks/generic"))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&serde_json::json!({ "summary": "redis down" }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 202);
    r.json().await.unwrap()
}

async fn metrics(url: &str) -> String {
    reqwest::get(format!("{url}/metrics")).await.unwrap().text().await.unwrap()
}

async fn settings_entries(j: &Journal) -> i64 {
    sqlx::query_as::<_, (i64,)>("SELECT COUNT(*) FROM ledger WHERE chain = 'settings'").fetch_one(j.pool()).await.unwrap().0
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_timed_pause_holds_alerts_shows_its_end_and_lifts_itself_once() {
    let w = World::start().await;
    let s = w.serve(FAST, false).await;
    let playbook = w.playbook_file(FAST);
    let (code, out) =
        orchestrator(&w, &["pause", "--target", "sandbox", "--for", "4s", "--reason", "redis upgrade", "--as", "alice"]).await;
    assert_eq!(code, Some(0));
    assert!(out.contains("paused for sandbox until") && out.contains("4s from now"), "{out}");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let until = j.pause(Some("sandbox"), chrono::Utc::now()).await.unwrap().expect("in force").until.expect("timed");

    // Alerts during the window are journaled as paused and start nothing.
    let v = fire(&s.url).await;
    assert_eq!(v["alerts"][0]["disposition"], "paused", "{v}");
    assert!(j.incidents(10).await.unwrap().is_empty());

    // status (CLI and HTTP) and /metrics show the window's end.
    let (_, status) = orchestrator(&w, &["status", "--playbook", playbook.to_str().unwrap()]).await;
    assert!(status.contains("sandbox  [PAUSED]"), "{status}");
    assert!(status.contains("paused   by alice") && status.contains("lifted automatically): redis upgrade"), "{status}");
    let st: serde_json::Value =
        reqwest::Client::new().get(format!("{}/status", s.url)).bearer_auth(ONCALL_TOKEN).send().await.unwrap().json().await.unwrap();
    assert_eq!(st[0]["paused"], true, "{st}");
    assert_eq!(st[0]["pause"]["reason"], "redis upgrade");
    assert_eq!(st[0]["pause"]["until"].as_str().map(|u| u.parse::<chrono::DateTime<chrono::Utc>>().unwrap()), Some(until));
    let m = metrics(&s.url).await;
    assert!(m.contains("orchestrator_target_paused{target=\"sandbox\"} 1"), "{m}");
    assert!(m.contains(&format!("orchestrator_target_paused_until_seconds{{target=\"sandbox\"}} {}", until.timestamp())), "{m}");

    // It lifts itself, journaled as a settings change by the orchestrator.
    wait_until(Duration::from_secs(15), "the window's lift to be journaled", || {
        let j = j.clone();
        async move { j.setting("paused:sandbox").await.unwrap().is_some_and(|(v, by, _)| v == "0" && by == WINDOW_EXPIRED) }
    })
    .await;
    let (_, _, at) = j.setting("paused:sandbox").await.unwrap().unwrap();
    assert!(orchestrator::journal::parse_ts(&at).unwrap() >= until, "lifted at or after its end");
    // Once: a lifted pause is no longer there to lift, whoever looks.
    let entries = settings_entries(&j).await;
    assert_eq!(j.lift_expired_pause(Some("sandbox"), chrono::Utc::now()).await.unwrap(), None);
    // Three more rounds of the loop (500 ms each) write nothing more.
    let deadline = tokio::time::Instant::now() + Duration::from_millis(1600);
    while tokio::time::Instant::now() < deadline {
        assert_eq!(settings_entries(&j).await, entries, "the lift is journaled once");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let m = metrics(&s.url).await;
    assert!(m.contains("orchestrator_target_paused{target=\"sandbox\"} 0"), "{m}");
    assert!(m.contains("orchestrator_target_paused_until_seconds{target=\"sandbox\"} 0"), "{m}");
    assert_ne!(fire(&s.url).await["alerts"][0]["disposition"], "paused", "failover is armed again");
    // The settings chain verifies with the lift in it.
    let (code, _) = orchestrator(&w, &["journal", "verify"]).await;
    assert_eq!(code, Some(0));
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_that_ended_while_nothing_ran_is_no_pause_and_is_lifted_at_start() {
    let w = World::start().await;
    let j = Journal::open(&w.journal_path()).await.unwrap();
    let past = chrono::Utc::now() - chrono::Duration::seconds(30);
    let ended = chrono::Utc::now() - chrono::Duration::seconds(1);
    j.set_pause(None, Some(ended), Some("datacenter move"), "bob", None, past).await.unwrap();
    j.set_pause(Some("sandbox"), Some(ended), None, "bob", None, past).await.unwrap();
    // Judged by the expiry: no pause any more, though nobody journaled the lift yet.
    assert!(!j.paused().await.unwrap());
    assert!(!j.paused_for("sandbox").await.unwrap());
    assert!(j.pause_record(None).await.unwrap().is_some(), "still switched on in the journal");
    // An untimed pause of another target is untouched by the windows' end.
    j.set_paused(Some("other"), true, "carol", None, past).await.unwrap();

    let s = w.serve(FAST, false).await;
    wait_until(Duration::from_secs(10), "both lifts journaled", || {
        let j = j.clone();
        async move {
            let lifted = |v: Option<(String, String, String)>| v.is_some_and(|(v, by, _)| v == "0" && by == WINDOW_EXPIRED);
            lifted(j.setting("paused").await.unwrap()) && lifted(j.setting("paused:sandbox").await.unwrap())
        }
    })
    .await;
    assert!(j.paused_for("other").await.unwrap(), "an untimed pause stays");
    assert_eq!(j.setting("paused:other").await.unwrap().unwrap().1, "carol");
    drop(s);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pause_refuses_a_window_it_cannot_keep() {
    let w = World::start().await;
    let (code, _) = orchestrator(&w, &["pause", "--for", "0s", "--as", "alice"]).await;
    assert_eq!(code, Some(2));
    let (code, _) = orchestrator(&w, &["unpause", "--for", "1h", "--as", "alice"]).await;
    assert_eq!(code, Some(2), "--for is pause's");
    // A plain pause after a timed one is untimed: no stale expiry.
    let (code, _) = orchestrator(&w, &["pause", "--for", "1h", "--as", "alice"]).await;
    assert_eq!(code, Some(0));
    let (code, _) = orchestrator(&w, &["pause", "--as", "alice"]).await;
    assert_eq!(code, Some(0));
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    assert_eq!(j.pause(None, chrono::Utc::now() + chrono::Duration::hours(2)).await.unwrap().map(|p| p.until), Some(None));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_console_pauses_for_a_window_and_shows_its_end_until_it_lifts() {
    let w = World::start().await;
    let s = w.serve(FAST, false).await;
    let client = reqwest::Client::new();
    let r = client.post(format!("{}/console/api/login", s.url)).json(&serde_json::json!({ "token": ONCALL_TOKEN })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let csrf = r.json::<serde_json::Value>().await.unwrap()["csrf"].as_str().unwrap().to_string();
    let pause = |body: serde_json::Value| {
        client.post(format!("{}/console/api/pause", s.url)).header("cookie", &cookie).header("x-csrf-token", &csrf).json(&body).send()
    };
    let bad = pause(serde_json::json!({ "paused": true, "for": "soon" })).await.unwrap();
    assert_eq!(bad.status(), 400, "a window must be a duration");
    let r = pause(serde_json::json!({ "paused": true, "for": "3s", "reason": "failover drill" })).await.unwrap();
    assert_eq!(r.status(), 200);
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["paused"], true, "{v}");
    assert_eq!(v["pause_reason"], "failover drill");
    assert!(v["paused_until"].as_str().is_some(), "{v}");
    assert_eq!(v["targets"][0]["pause"]["until"], v["paused_until"]);
    assert!(v["targets"][0]["armed_reason"].as_str().unwrap().contains("a maintenance window until"), "{v}");
    assert_eq!(fire(&s.url).await["alerts"][0]["disposition"], "paused");

    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    assert_eq!(j.setting("paused").await.unwrap().unwrap().1, "oncall via web");
    wait_until(Duration::from_secs(15), "the console's window to lift", || {
        let j = j.clone();
        async move { j.setting("paused").await.unwrap().is_some_and(|(v, by, _)| v == "0" && by == WINDOW_EXPIRED) }
    })
    .await;
    let v: serde_json::Value =
        client.get(format!("{}/console/api/targets", s.url)).header("cookie", &cookie).send().await.unwrap().json().await.unwrap();
    assert_eq!(v["paused"], false, "{v}");
    assert!(v["paused_until"].is_null());
    drop(s);
}
