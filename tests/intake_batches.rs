//! Row 9 of issue 10: alert intake batches. Ten concurrent webhook bodies of 1,000
//! alerts each and one single alert, against the real `serve`: every request is
//! answered 202 only after its alerts are journaled, and the single alert, sent once
//! the large bodies are being journaled, does not wait behind them.

mod support;

use orchestrator::journal::prelude::*;
use std::process::Stdio;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn group(n: usize, tag: &str) -> serde_json::Value {
    let alerts: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({"status": "resolved", "labels": {"alertname": "RedisDown"}, "annotations": {"summary": "ping fails"},
            "startsAt": "2026-12-01T10:00:00Z", "fingerprint": format!("{tag}-{i}")})
        })
        .collect();
    // Resolved alerts: journaled like firing ones, and no incident runs meanwhile.
    serde_json::json!({ "status": "resolved", "alerts": alerts })
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_single_alert_is_not_starved_by_large_bodies_and_every_alert_is_journaled() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(&db)
        .args(["serve", "-p", "playbooks/sandbox.yaml", "--listen", "127.0.0.1:0", "--no-watch"])
        .env("SANDBOX_PRIMARY_URL", format!("redis://127.0.0.1:{}", free_port()))
        .env("SANDBOX_BACKUP_URL", format!("redis://127.0.0.1:{}", free_port()))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = support::serve::listening(&mut child).await;
    let url = format!("http://{addr}/webhooks/alertmanager");
    let client = reqwest::Client::builder().timeout(Duration::from_secs(60)).build().unwrap();
    let big: Vec<Vec<u8>> = (0..10).map(|b| serde_json::to_vec(&group(1000, &format!("big{b}"))).unwrap()).collect();
    let small = serde_json::to_vec(&group(1, "single")).unwrap();
    let mut large = Vec::new();
    for body in big {
        let (c, u) = (client.clone(), url.clone());
        large.push(tokio::spawn(async move {
            let r = c.post(&u).header("content-type", "application/json").body(body).send().await.unwrap();
            r.status().as_u16()
        }));
    }
    // Only once the large bodies are being journaled (their first alerts are on disk)
    // does the single alert go: it must not queue behind the rest of them.
    let ro = sqlx::sqlite::SqliteConnectOptions::new().filename(&db).read_only(true);
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if let Ok(mut c) = sqlx::ConnectOptions::connect(&ro).await {
            let n: Result<(i64,), _> = sqlx::query_as("SELECT COUNT(*) FROM alerts").fetch_one(&mut c).await;
            if matches!(n, Ok((n,)) if n > 0) {
                break;
            }
        }
        assert!(Instant::now() < deadline, "no alert journaled within 30 s");
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    let started = Instant::now();
    let single = client.post(&url).header("content-type", "application/json").body(small).send().await.unwrap();
    let single_took = started.elapsed();
    assert_eq!(single.status().as_u16(), 202);
    for l in large {
        assert_eq!(l.await.unwrap(), 202);
    }
    let all_took = started.elapsed();
    // Before group commit the single alert waited 10.6 s behind the large bodies (one
    // fsync per alert); now it shares a batch.
    assert!(single_took < Duration::from_secs(3), "the single alert took {single_took:?} (all: {all_took:?})");
    support::serve::stop(&mut child).await;
    let j = orchestrator::journal::Journal::open_existing(&db).await.unwrap();
    let (alerts, incidents, chained): (i64, i64, i64) = sqlx::query_as(
        "SELECT (SELECT COUNT(*) FROM alerts), (SELECT COUNT(*) FROM incidents), (SELECT COUNT(*) FROM ledger WHERE chain = 'alerts')",
    )
    .fetch_one(j.pool())
    .await
    .unwrap();
    let opened: Vec<(String, String)> =
        sqlx::query_as("SELECT trigger_source, trigger_detail FROM incidents").fetch_all(j.pool()).await.unwrap();
    assert_eq!((alerts, incidents, chained), (10_001, 0, 10_001), "every alert journaled and chained: {opened:?}");
    let report = j.verify(None).await.unwrap();
    assert!(report.ok(), "{}", report.render());
}
