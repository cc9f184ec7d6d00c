//! Benchmark 3: an alert storm. N duplicate Alertmanager webhooks (one firing alert,
//! one fingerprint each) against the real `serve`, `CONCURRENCY` in flight, while the
//! primary is down (so the one incident they open runs its failover meanwhile).

use crate::util::*;
use anyhow::{bail, Result};
use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use serde::Serialize;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const CONCURRENCY: usize = 100;

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub n: usize,
    pub wall_ms: f64,
    pub rps: f64,
    pub p50_ms: f64,
    pub p99_ms: f64,
    pub max_ms: f64,
    pub accepted: usize,
    pub other_status: usize,
    pub incidents: i64,
    pub dispositions: Vec<(String, i64)>,
    pub rss_before: u64,
    pub hwm: u64,
    /// The storm's incident: its outcome and opened → closed.
    pub outcome: String,
    pub incident_ms: f64,
}

pub fn body() -> serde_json::Value {
    serde_json::json!({
        "version": "4", "groupKey": "{}:{alertname=\"RedisConnectionFailures\"}", "status": "firing", "receiver": "orchestrator",
        "groupLabels": {"alertname": "RedisConnectionFailures"}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": {"alertname": "RedisConnectionFailures", "severity": "critical"},
            "annotations": {"summary": "Redis ping fails for > 30 seconds"}, "startsAt": "2026-11-26T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom", "fingerprint": "fp-redis-down"}]
    })
}

async fn one(ctx: &Ctx, n: usize) -> Result<Row> {
    let world = World::start(ctx).await?;
    world.primary.kill();
    let playbook = world.playbook_file(ctx, &[])?;
    let db = world.journal_path();
    let (mut serve, url, _) = world.serve(ctx, &db, &playbook, false)?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let pid = serve.pid();
    let rss_before = proc_mem(pid, "VmRSS").unwrap_or(0);

    let client = reqwest::Client::builder().pool_max_idle_per_host(CONCURRENCY).timeout(Duration::from_secs(30)).build()?;
    let body = Arc::new(serde_json::to_vec(&body())?);
    let next = Arc::new(AtomicUsize::new(0));
    let target = format!("{url}/webhooks/alertmanager");
    let started = Instant::now();
    let mut workers = Vec::new();
    for _ in 0..CONCURRENCY.min(n) {
        let (client, body, next, target) = (client.clone(), body.clone(), next.clone(), target.clone());
        workers.push(tokio::spawn(async move {
            let mut lat = Vec::new();
            let mut statuses = Vec::new();
            while next.fetch_add(1, Ordering::Relaxed) < n {
                let t = Instant::now();
                let r = client
                    .post(&target)
                    .bearer_auth(WEBHOOK_TOKEN)
                    .header("content-type", "application/json")
                    .body(body.as_ref().clone())
                    .send()
                    .await;
                let status = match r {
                    Ok(r) => {
                        let s = r.status().as_u16();
                        let _ = r.bytes().await;
                        s
                    }
                    Err(_) => 0,
                };
                lat.push(ms(t.elapsed()));
                statuses.push(status);
            }
            (lat, statuses)
        }));
    }
    let mut lat = Vec::with_capacity(n);
    let mut statuses = Vec::with_capacity(n);
    for w in workers {
        let (l, s) = w.await?;
        lat.extend(l);
        statuses.extend(s);
    }
    let wall = started.elapsed();
    let hwm = proc_mem(pid, "VmHWM").unwrap_or(0);

    // The incident the storm opened: how did its failover fare meanwhile?
    let j = Journal::open_existing(&db).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let inc = loop {
        let inc = j.incidents(1).await?.into_iter().next();
        if inc.as_ref().map(|i| i.outcome.is_some()).unwrap_or(false) || Instant::now() > deadline {
            break inc;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    };
    serve.stop(Duration::from_secs(15));
    let (outcome, incident_ms) = match &inc {
        Some(i) => {
            let took =
                match (orchestrator::journal::parse_ts(&i.opened_at), i.closed_at.as_deref().and_then(orchestrator::journal::parse_ts)) {
                    (Some(a), Some(b)) => (b - a).num_milliseconds() as f64,
                    _ => f64::NAN,
                };
            (i.outcome.clone().unwrap_or_else(|| format!("still {}", i.state)), took)
        }
        None => ("no incident".to_string(), f64::NAN),
    };
    let incidents: (i64,) = sqlx::query_as("SELECT COUNT(*) FROM incidents").fetch_one(j.pool()).await?;
    let dispositions: Vec<(String, i64)> =
        sqlx::query_as("SELECT disposition, COUNT(*) FROM alerts GROUP BY disposition ORDER BY 2 DESC").fetch_all(j.pool()).await?;
    j.close().await;
    world.sandbox.shutdown().await;
    let accepted = statuses.iter().filter(|s| **s == 202).count();
    if lat.len() != n {
        bail!("sent {} of {n}", lat.len());
    }
    Ok(Row {
        n,
        wall_ms: ms(wall),
        rps: n as f64 / wall.as_secs_f64(),
        p50_ms: pct(&lat, 50.0),
        p99_ms: pct(&lat, 99.0),
        max_ms: max(&lat),
        accepted,
        other_status: n - accepted,
        incidents: incidents.0,
        dispositions,
        rss_before,
        hwm,
        outcome,
        incident_ms,
    })
}

pub async fn run(ctx: &Ctx) -> Result<Vec<Row>> {
    let sizes: &[usize] = if ctx.quick { &[100, 1000] } else { &[100, 1000, 10_000] };
    let mut rows = Vec::new();
    for &n in sizes {
        progress(format!("storm: {n} webhooks, {CONCURRENCY} concurrent"));
        let r = one(ctx, n).await?;
        progress(format!(
            "  {:.0} req/s, p50 {}, p99 {}, {} accepted, {} incident(s) ({} after {}), peak RSS {}",
            r.rps,
            fmt_ms(r.p50_ms),
            fmt_ms(r.p99_ms),
            r.accepted,
            r.incidents,
            r.outcome,
            fmt_ms(r.incident_ms),
            fmt_bytes(r.hwm)
        ));
        rows.push(r);
    }
    Ok(rows)
}

/// A 1,000-alert body and a single alert sent together (group commit: the single
/// alert shares a batch instead of waiting behind a thousand fsyncs).
#[derive(Debug, Clone, Serialize)]
pub struct Mixed {
    pub reps: usize,
    pub single_ms: Vec<f64>,
    pub big_ms: Vec<f64>,
}

fn group(n: usize, tag: &str) -> serde_json::Value {
    let alerts: Vec<_> = (0..n)
        .map(|i| {
            serde_json::json!({"status": "firing", "labels": {"alertname": "RedisConnectionFailures"},
            "annotations": {"summary": "Redis ping fails for > 30 seconds"}, "startsAt": "2026-11-26T10:00:00Z",
            "fingerprint": format!("{tag}-{i}")})
        })
        .collect();
    serde_json::json!({ "status": "firing", "alerts": alerts })
}

pub async fn mixed(ctx: &Ctx) -> Result<Mixed> {
    let world = World::start(ctx).await?;
    world.primary.kill();
    let playbook = world.playbook_file(ctx, &[])?;
    let db = world.journal_path();
    let (mut serve, url, _) = world.serve(ctx, &db, &playbook, false)?;
    let client = reqwest::Client::builder().timeout(Duration::from_secs(30)).build()?;
    let target = format!("{url}/webhooks/alertmanager");
    let reps = ctx.reps.max(3);
    let (mut single_ms, mut big_ms) = (Vec::new(), Vec::new());
    for rep in 0..reps {
        let big = serde_json::to_vec(&group(1000, &format!("big{rep}")))?;
        let small = serde_json::to_vec(&group(1, &format!("single{rep}")))?;
        let send = |body: Vec<u8>| {
            let (c, t) = (client.clone(), target.clone());
            async move {
                let started = Instant::now();
                let r = c.post(&t).bearer_auth(WEBHOOK_TOKEN).header("content-type", "application/json").body(body).send().await?;
                let status = r.status().as_u16();
                let _ = r.bytes().await;
                if status != 202 {
                    bail!("answered {status}");
                }
                Ok::<f64, anyhow::Error>(ms(started.elapsed()))
            }
        };
        // The big body first, the single alert right behind it.
        let b = tokio::spawn(send(big));
        tokio::task::yield_now().await;
        let s = send(small).await?;
        big_ms.push(b.await??);
        single_ms.push(s);
    }
    serve.stop(Duration::from_secs(15));
    world.sandbox.shutdown().await;
    Ok(Mixed { reps, single_ms, big_ms })
}

/// `playbook check` of the "billion laughs" alias bomb (431 bytes): wall time and the
/// checker's peak RSS (from wait4's rusage).
#[derive(Debug, Clone, Serialize)]
pub struct Bomb {
    pub bytes: usize,
    pub ms: f64,
    pub max_rss: u64,
    pub exit: i32,
}

pub fn alias_bomb(ctx: &Ctx) -> Result<Bomb> {
    let mut s = String::from("a: &a [\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\",\"lol\"]\n");
    let names = ["a", "b", "c", "d", "e", "f", "g", "h", "i"];
    for w in names.windows(2) {
        s.push_str(&format!("{}: &{} [{}]\n", w[1], w[1], vec![format!("*{}", w[0]); 9].join(",")));
    }
    let dir = ctx.tempdir("bomb")?;
    let path = dir.path().join("bomb.yaml");
    std::fs::write(&path, &s)?;
    let started = Instant::now();
    let child = std::process::Command::new(ctx.orchestrator())
        .args(["playbook", "check"])
        .arg(&path)
        .stdout(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .spawn()?;
    let mut status = 0;
    // SAFETY: an all-zero rusage is valid; wait4 fills it for our own child.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: waiting for the child we just spawned (std never waits for it after this).
    let pid = unsafe { libc::wait4(child.id() as i32, &mut status, 0, &mut usage) };
    let took = started.elapsed();
    if pid < 0 {
        bail!("wait4: {}", std::io::Error::last_os_error());
    }
    std::mem::forget(child);
    Ok(Bomb { bytes: s.len(), ms: ms(took), max_rss: usage.ru_maxrss as u64 * 1024, exit: libc::WEXITSTATUS(status) })
}
