//! Row 9 of issue 10: alert intake batches. Ten concurrent webhook bodies of 1,000
//! alerts each and one single alert, against the real `serve`: every request is
//! answered 202 only after its alerts are journaled, the single alert does not wait
//! behind the large bodies, and the storm opens one incident.

mod support;

use std::process::Stdio;
use std::time::{Duration, Instant};

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

fn group(n: usize, tag: &str) -> serde_json::Value {
    let alerts: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({"status": "firing", "labels": {"alertname": "RedisDown"}, "annotations": {"summary": "ping fails"},
            "startsAt": "2026-12-01T10:00:00Z", "fingerprint": format!("{tag}-{i}")})
        })
        .collect();
    serde_json::json!({ "status": "firing", "alerts": alerts })
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
    assert_eq!((alerts, incidents, chained), (10_001, 1, 10_001), "every alert journaled and chained; one incident");
    let report = j.verify(None).await.unwrap();
    assert!(report.ok(), "{}", report.render());
}
