//! Shadow mode (`mode: observe`, `run --observe`, `serve --observe`) against real
//! redis-server processes and the sandbox: Detect, Confirm and Assess run for real, the
//! incident ends in what would have been done, and the platform's own counts show
//! nothing was written, flushed or deployed.

mod support;

use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use orchestrator::model::Side;
use std::process::Stdio;
use std::time::Duration;
use support::world::{outcome, wait_state, World, WEBHOOK_TOKEN};

const FAST: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];
const OBSERVE: (&str, &str) = ("\nname: sandbox\n", "\nname: sandbox\nmode: observe\n");

fn observing() -> Vec<(&'static str, &'static str)> {
    let mut e = FAST.to_vec();
    e.push(OBSERVE);
    e
}

/// Keys a flush would delete (`bull:*`, `idempotent:*`) and one it would keep.
async fn seed_backup(w: &World) -> redis::aio::MultiplexedConnection {
    let client = redis::Client::open(w.backup.url()).unwrap();
    let mut con = client.get_multiplexed_async_connection().await.unwrap();
    for (k, v) in [("bull:default:1", "stale job"), ("bull:default:id", "1"), ("idempotent:abc", "x"), ("keep:me", "y")] {
        let _: () = redis::cmd("SET").arg(k).arg(v).query_async(&mut con).await.unwrap();
    }
    con
}

async fn keys(con: &mut redis::aio::MultiplexedConnection) -> Vec<String> {
    let mut k: Vec<String> = redis::cmd("KEYS").arg("*").query_async(con).await.unwrap();
    // The preflight's own PING-and-write probe key (it expires) is not the service's data.
    k.retain(|k| !k.starts_with("orchestrator:probe:"));
    k.sort();
    k
}

fn assert_untouched(w: &World) {
    let stats = w.sandbox.platform().stats();
    assert!(stats.env_writes.is_empty(), "no platform write: {:?}", stats.env_writes);
    assert_eq!(stats.deploy_count, 0, "no deploy");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn primary_killed_in_observe_mode_would_fail_over_and_touches_nothing() {
    let w = World::start().await;
    let mut backup = seed_backup(&w).await;
    let before = keys(&mut backup).await;
    w.primary.kill();
    w.service_sees_redis_down().await;

    let exec = w.executor(&observing()).await;
    let id = exec.open("test", "primary SIGKILLed").await.unwrap();
    assert_eq!(outcome(exec.run(&id).await.unwrap()), "would_fail_over");

    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let path: Vec<String> =
        j.transitions(&id).await.unwrap().into_iter().filter(|t| t.from_state != t.to_state).map(|t| t.to_state).collect();
    assert_eq!(path, ["confirm", "assess", "would_fail_over"]);
    let last = j.transitions(&id).await.unwrap().pop().unwrap();
    let note = last.note.unwrap();
    assert!(note.starts_with("shadow mode: would have failed over"), "{note}");
    assert!(note.contains("no platform write, flush or deploy"), "{note}");

    // The full checklists are journaled: every confirm round, the preflight, the count.
    let checks = j.checks(&id).await.unwrap();
    let confirm_rounds: std::collections::BTreeSet<i64> =
        checks.iter().filter(|c| c.phase == "confirm").map(|c| c.transition_seq).collect();
    assert_eq!(confirm_rounds.len(), 2, "both confirm attempts journaled");
    for item in ["ping_failed", "health_down", "error_logs", "queue_stopped"] {
        assert!(checks.iter().any(|c| c.phase == "confirm" && c.item == item), "confirm item {item} journaled");
    }
    for item in ["backup_distinct", "backup_ping", "backup_latency", "platform_url_known"] {
        assert!(checks.iter().any(|c| c.phase == "preflight" && c.item == item && c.holds), "preflight {item} holds");
    }
    let estimate = checks.iter().find(|c| c.phase == "preflight" && c.item == "flush_estimate").expect("the flush estimate");
    assert!(estimate.holds, "{}", estimate.observed);
    assert!(estimate.observed.starts_with("3 keys on "), "bull:* 2 + idempotent:* 1: {}", estimate.observed);
    assert!(note.contains("3 keys"), "the note says what the flush would do: {note}");

    // Zero platform writes, flushes or deploys: the platform's own counts, the keys.
    assert_untouched(&w);
    assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.primary.url()));
    assert_eq!(keys(&mut backup).await, before, "the backup's keys are untouched");
    let effects: Vec<String> = j.effects(&id).await.unwrap().into_iter().map(|e| e.kind).collect();
    assert!(effects.iter().all(|k| k == "notify"), "no side effect but notifications: {effects:?}");
    // The topology neither moves nor disarms.
    let topo = j.topology("sandbox").await.unwrap();
    assert_eq!((topo.active, topo.armed, topo.incident), (Side::Primary, true, None));
    // Audited like any incident: the hash chain holds.
    assert!(j.verify(Some(&id)).await.unwrap().ok());
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn backup_down_under_run_observe_would_escalate_with_the_reason() {
    let w = World::start().await;
    w.primary.kill();
    w.backup.kill();
    w.service_sees_redis_down().await;
    // The shipped playbook acts; `run --observe` makes this one incident a shadow.
    let playbook = w.playbook_file(FAST);
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["run", "--observe", "--playbook"])
        .arg(&playbook)
        .envs(&w.env)
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(12), "exit 12: would have escalated\n{stderr}");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let inc = j.incidents(10).await.unwrap().pop().unwrap();
    assert_eq!(inc.outcome.as_deref(), Some("would_escalate"));
    let note = j.transitions(&inc.id).await.unwrap().pop().unwrap().note.unwrap();
    assert!(note.contains("would have escalated") && note.contains("backup fails preflight (backup_ping, backup_latency"), "{note}");
    assert_untouched(&w);
    let topo = j.topology("sandbox").await.unwrap();
    assert!(topo.armed && !topo.needs_person, "a shadow escalation needs nobody to re-arm");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_observe_records_a_shadow_incident_from_a_webhook_which_does_not_hold_back_a_real_one() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let playbook = w.playbook_file(FAST);
    let mut serve = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["serve", "--observe", "--listen", "127.0.0.1:0", "--no-watch", "--playbook"])
        .arg(&playbook)
        .envs(&w.env)
        .env("ORCH_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
        .env("ORCH_APPROVER_TOKENS", "oncall=oncall-token-for-shadow-1")
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let url = format!("http://{}", support::serve::listening(&mut serve).await);
    let client = reqwest::Client::new();
    let post = |summary: &'static str| {
        let client = client.clone();
        let url = url.clone();
        async move {
            let r = client
                .post(format!("{url}/webhooks/generic"))
                .bearer_auth(WEBHOOK_TOKEN)
                .json(&serde_json::json!({"summary": summary}))
                .send()
                .await
                .unwrap();
            assert!(r.status().is_success(), "{}", r.status());
            r.json::<serde_json::Value>().await.unwrap()
        }
    };
    let v = post("redis down").await;
    assert_eq!(v["alerts"][0]["disposition"], "opened", "{v}");
    let id = v["alerts"][0]["incident"].as_str().unwrap().to_string();
    wait_state(&w, &id, &["would_fail_over"], Duration::from_secs(30)).await;
    assert_untouched(&w);
    // In observe mode a shadow incident starts the cooldown for shadow incidents: a
    // storm of alerts records one, not one per alert.
    let v = post("redis still down").await;
    assert_eq!(v["alerts"][0]["disposition"], "cooldown", "{v}");
    support::serve::stop(&mut serve).await;

    // The same target switched to act: the shadow incident does not hold it back.
    let served = w.serve(FAST, false).await;
    let r = client
        .post(format!("{}/webhooks/generic", served.url))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&serde_json::json!({"summary": "redis down, now acting"}))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    assert_eq!(v["alerts"][0]["disposition"], "opened", "a shadow outcome is no cooldown for a real incident: {v}");
    let real = v["alerts"][0]["incident"].as_str().unwrap().to_string();
    assert_eq!(wait_state(&w, &real, &["recovered"], Duration::from_secs(60)).await, "recovered");
    assert_eq!(w.env_writes().len(), 1, "the real incident switched once");
    // Metrics label shadow outcomes like any other.
    let m = client.get(format!("{}/metrics", served.url)).send().await.unwrap().text().await.unwrap();
    assert!(m.contains("orchestrator_incidents_total{target=\"sandbox\",outcome=\"would_fail_over\"} 1"), "{m}");
    assert!(m.contains("orchestrator_incidents_total{target=\"sandbox\",outcome=\"recovered\"} 1"), "{m}");
    let _ = served.stop.send(true);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn report_since_summarises_a_week_of_shadow_incidents() {
    let w = World::start().await;
    let exec = w.executor(&observing()).await;
    // 1. Nothing is failing: a false alarm, in observe mode as in act mode.
    let fa = exec.open("test", "a flapping alert").await.unwrap();
    assert_eq!(outcome(exec.run(&fa).await.unwrap()), "false_alarm");
    // 2, 3. The primary dies: would have failed over, twice.
    w.primary.kill();
    w.service_sees_redis_down().await;
    let mut shadow = Vec::new();
    for _ in 0..2 {
        let id = exec.open("test", "primary down").await.unwrap();
        assert_eq!(outcome(exec.run(&id).await.unwrap()), "would_fail_over");
        shadow.push(id);
    }
    // 4. The backup dies too: would have escalated.
    w.backup.kill();
    let esc = exec.open("test", "both down").await.unwrap();
    assert_eq!(outcome(exec.run(&esc).await.unwrap()), "would_escalate");
    assert_untouched(&w);

    let report = |args: &[&str]| {
        std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator")).arg("--db").arg(w.journal_path()).args(args).output().unwrap()
    };
    let out = report(&["report", "--since", "7d", "--json"]);
    assert_eq!(out.status.code(), Some(0), "{}", String::from_utf8_lossy(&out.stderr));
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["incidents"], 4);
    assert_eq!(v["false_alarms"], 1);
    assert_eq!(v["shadow"], 3);
    assert_eq!(v["open"], 0);
    assert_eq!(v["by_target"]["sandbox"], serde_json::json!({"false_alarm": 1, "would_fail_over": 2, "would_escalate": 1}));
    let rows = v["shadow_incidents"].as_array().unwrap();
    assert_eq!(rows.len(), 3);
    assert_eq!(rows.iter().map(|r| r["id"].as_str().unwrap()).collect::<Vec<_>>(), [&shadow[0], &shadow[1], &esc]);
    assert!(rows[2]["reason"].as_str().unwrap().starts_with("would have escalated: class connection_refused: backup fails preflight"));
    assert!(rows[0]["reason"].as_str().unwrap().starts_with("would have failed over"));
    // Time to decision: the journal's own timestamps, open → end of Assess (shadow) or
    // the close (false alarm); Confirm takes its 1 s window, so at least that.
    let (median, p90) = (v["decision_median_s"].as_f64().unwrap(), v["decision_p90_s"].as_f64().unwrap());
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let mut times = Vec::new();
    for id in [&fa, &shadow[0], &shadow[1], &esc] {
        let inc = j.incident(id).await.unwrap();
        let opened = orchestrator::journal::parse_ts(&inc.opened_at).unwrap();
        let t = j.transitions(id).await.unwrap().pop().unwrap();
        times.push((orchestrator::journal::parse_ts(&t.at).unwrap() - opened).num_milliseconds() as f64 / 1000.0);
    }
    times.sort_by(|a, b| a.total_cmp(b));
    assert_eq!((median, p90), (times[1], times[3]), "nearest-rank median and p90 of {times:?}");
    assert!(times[1] >= 1.0, "the confirm window is in the decision time: {times:?}");

    // The Markdown summary has the table of shadow incidents with the reasons.
    let out = report(&["report", "--since", "7d"]);
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(text.contains("4 incident(s): 1 false alarm(s), 3 shadow (would-have), 0 still open."), "{text}");
    assert!(text.contains("| sandbox | would_fail_over | 2 |"), "{text}");
    assert!(text.contains(&format!("| {esc} | sandbox |")) && text.contains("| escalated |"), "{text}");
    // An empty period says so; `report ID` still prints one incident's report.
    let none = report(&["report", "--since", "1ms", "--json"]);
    let v: serde_json::Value = serde_json::from_slice(&none.stdout).unwrap();
    assert_eq!(v["incidents"], 0);
    let one = report(&["report", &esc]);
    assert_eq!(one.status.code(), Some(0));
    assert!(String::from_utf8_lossy(&one.stdout).contains(&esc));
    // Neither an id nor --since is a usage error.
    assert_eq!(report(&["report"]).status.code(), Some(2));
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_shadow_incident_killed_mid_assess_resumes_as_a_shadow() {
    let w = World::start().await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let playbook = w.playbook_file(FAST);
    let orch = |args: &[&str], crash: Option<&str>| {
        let mut c = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        c.arg("--db").arg(w.journal_path()).args(args).arg("--playbook").arg(&playbook).envs(&w.env);
        if let Some(point) = crash {
            c.env("ORCH_FAULT_CRASH_AT", point);
        }
        c.output().unwrap()
    };
    let out = orch(&["run", "--observe"], Some("state:assess"));
    assert_eq!(out.status.code(), None, "SIGKILLed at assess");
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let inc = j.incidents(10).await.unwrap().pop().unwrap();
    assert_eq!(inc.state, "assess");
    // Resumed without --observe: the mode is pinned with the incident.
    let out = orch(&["resume", &inc.id], None);
    assert_eq!(out.status.code(), Some(11), "{}", String::from_utf8_lossy(&out.stderr));
    assert_eq!(j.incident(&inc.id).await.unwrap().outcome.as_deref(), Some("would_fail_over"));
    assert_untouched(&w);
}
