//! Benchmark 1: failover time. SIGKILL the primary and time the orchestrator (the real
//! `serve` binary, its watch loop detecting the kill) step by step from its journal;
//! then the same kill under Redis Sentinel, timed by a client that follows Sentinel.

use crate::resp::{info_field, pairs_field, Conn, Reply};
use crate::util::*;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use orchestrator::journal::prelude::*;
use orchestrator::journal::{parse_ts, Journal};
use sandbox::RedisServer;
use serde::Serialize;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The confirm window under test, and Sentinel's `down-after-milliseconds`.
pub const CONFIRM_WINDOW_MS: u64 = 1000;
pub const WATCH_INTERVAL_MS: u64 = 100;
pub const PING_FAIL_FOR_MS: u64 = 200;

/// The edits to playbooks/sandbox.yaml for this benchmark (everything else as shipped).
pub const EDITS: &[(&str, &str)] = &[("  interval: 1s", "  interval: 100ms"), ("  ping_fail_for: 2s", "  ping_fail_for: 200ms")];

pub const STEPS: &[&str] = &["detect", "confirm", "assess", "switch", "flush", "deploy", "verify"];

#[derive(Debug, Clone, Serialize)]
pub struct OrchRun {
    /// Milliseconds per step, in STEPS order: detection (kill → incident opened) then
    /// the time spent in each state.
    pub steps: Vec<f64>,
    pub total_ms: f64,
    /// Kill → the service's health shows Redis up again (it talks to the backup).
    pub service_up_ms: Option<f64>,
    pub outcome: String,
    pub flushed: u64,
    pub verify_attempts: usize,
}

#[derive(Debug, Clone, Serialize)]
pub struct SentinelRun {
    /// Kill → a sentinel answers get-master-addr-by-name with the new master.
    pub switch_ms: f64,
    /// Kill → the client's first successful write (to the new master).
    pub write_ms: f64,
}

pub struct Recorded {
    /// The recorded incident's events (from `transitions.observations`), with their
    /// offsets from the incident's opening, and its effects and alerts.
    pub events: Vec<(i64, orchestrator::machine::Event)>,
    pub effects: Vec<orchestrator::journal::EffectRow>,
    pub alerts: Vec<orchestrator::journal::AlertRow>,
    pub playbook: orchestrator::playbook::Playbook,
    pub opened_at: DateTime<Utc>,
    pub incident_id: String,
}

pub struct Results {
    pub orch: Vec<OrchRun>,
    pub sentinel: Vec<SentinelRun>,
    pub sentinel_error: Option<String>,
    pub deploy_steps_ms: u64,
    pub job_ms: u64,
    pub recorded: Option<Recorded>,
}

/// One orchestrator failover, only for its journal (when `failover` is not selected).
pub async fn run_orchestrator_only(ctx: &Ctx) -> Result<Recorded> {
    Ok(orchestrator_once(ctx).await?.1)
}

pub async fn run(ctx: &Ctx) -> Result<Results> {
    let mut orch = Vec::new();
    let mut recorded = None;
    let (mut deploy_steps_ms, mut job_ms) = (0, 0);
    for i in 0..ctx.reps {
        progress(format!("failover: orchestrator run {}/{}", i + 1, ctx.reps));
        let (r, rec, d, j) = orchestrator_once(ctx).await.with_context(|| format!("orchestrator failover run {}", i + 1))?;
        progress(format!(
            "  kill → recovered {} (detect {}, confirm {}, deploy {}, verify {}) outcome {}",
            fmt_ms(r.total_ms),
            fmt_ms(r.steps[0]),
            fmt_ms(r.steps[1]),
            fmt_ms(r.steps[5]),
            fmt_ms(r.steps[6]),
            r.outcome
        ));
        orch.push(r);
        recorded = Some(rec);
        deploy_steps_ms = d;
        job_ms = j;
    }
    let mut sentinel = Vec::new();
    let mut sentinel_error = None;
    for i in 0..ctx.reps {
        progress(format!("failover: Redis Sentinel run {}/{}", i + 1, ctx.reps));
        let r = tokio::task::spawn_blocking(sentinel_once).await?;
        match r {
            Ok(r) => {
                progress(format!("  kill → sentinel switch {}, kill → client writes {}", fmt_ms(r.switch_ms), fmt_ms(r.write_ms)));
                sentinel.push(r);
            }
            Err(e) => {
                progress(format!("  Sentinel run failed: {e:#}"));
                sentinel_error = Some(format!("{e:#}"));
            }
        }
    }
    Ok(Results { orch, sentinel, sentinel_error, deploy_steps_ms, job_ms, recorded })
}

async fn orchestrator_once(ctx: &Ctx) -> Result<(OrchRun, Recorded, u64, u64)> {
    let world = World::start(ctx).await?;
    let playbook = world.playbook_file(ctx, EDITS)?;
    let pb = world.load(&playbook)?;
    let db = world.journal_path();
    let (mut serve, _url, _) = world.serve(ctx, &db, &playbook, true)?;
    // Let the watch loop see a healthy primary first (its failing clock starts at the
    // first failed probe after the kill).
    tokio::time::sleep(Duration::from_millis(500)).await;

    // The service's view: when does its health show Redis up again?
    let health_url = format!("{}/api/v1/health", world.sandbox.service_url());
    let stop = Arc::new(AtomicBool::new(false));
    let t0 = Instant::now();
    let t0_utc = Utc::now();
    let poller = {
        let stop = stop.clone();
        tokio::spawn(async move {
            let client = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().unwrap();
            let mut seen_down = false;
            while !stop.load(Ordering::Relaxed) {
                let up = client.get(&health_url).send().await.map(|r| r.status().is_success()).unwrap_or(false);
                if !up {
                    seen_down = true;
                } else if seen_down {
                    return Some(ms(t0.elapsed()));
                }
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            None
        })
    };
    world.primary.kill();

    let journal = Journal::open_existing(&db).await?;
    let deadline = Instant::now() + Duration::from_secs(60);
    let inc = loop {
        if let Some(inc) = journal.incidents(1).await?.into_iter().next() {
            if inc.outcome.is_some() {
                break inc;
            }
        }
        if Instant::now() > deadline {
            bail!("no incident ended within 60 s of the kill");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let service_up = tokio::time::timeout(Duration::from_secs(5), poller).await.ok().and_then(|r| r.ok()).flatten();
    stop.store(true, Ordering::Relaxed);
    serve.stop(Duration::from_secs(10));

    let opened = parse_ts(&inc.opened_at).ok_or_else(|| anyhow!("bad opened_at"))?;
    let rows = journal.transitions(&inc.id).await?;
    let split = split_steps(&rows, opened, t0_utc);
    let (steps, end, verify_attempts) = (split.steps, split.end, split.verify_attempts);
    let flushed = journal
        .effects(&inc.id)
        .await?
        .iter()
        .find(|e| e.kind == "flush")
        .map(|e| e.result_json()["deleted"].as_u64().unwrap_or(0))
        .unwrap_or(0);
    let run = OrchRun {
        steps,
        total_ms: since(end, t0_utc),
        service_up_ms: service_up,
        outcome: inc.outcome.clone().unwrap_or_default(),
        flushed,
        verify_attempts,
    };
    let mut events = Vec::new();
    for r in &rows {
        let ev: orchestrator::machine::Event = serde_json::from_str(&r.observations).context("decoding a journaled event")?;
        events.push(((parse_ts(&r.at).unwrap_or(opened) - opened).num_milliseconds(), ev));
    }
    let recorded = Recorded {
        events,
        effects: journal.effects(&inc.id).await?,
        alerts: journal.alerts(&inc.id).await?,
        playbook: pb,
        opened_at: opened,
        incident_id: inc.id.clone(),
    };
    journal.close().await;
    world.sandbox.shutdown().await;
    Ok((run, recorded, world.deploy_steps_ms, world.job_ms))
}

/// Milliseconds from `from` to `t`.
pub fn since(t: DateTime<Utc>, from: DateTime<Utc>) -> f64 {
    (t - from).num_microseconds().unwrap_or(0) as f64 / 1000.0
}

/// An incident's time per step, from its journaled transitions.
pub struct StepSplit {
    /// Milliseconds per step, in STEPS order: detection (kill → incident opened) then
    /// the time spent in each state.
    pub steps: Vec<f64>,
    /// The last state change (the incident's end once it has one).
    pub end: DateTime<Utc>,
    pub verify_attempts: usize,
}

/// Splits an incident into STEPS from its transitions; `t0` is the kill.
pub fn split_steps(rows: &[orchestrator::journal::TransitionRow], opened: DateTime<Utc>, t0: DateTime<Utc>) -> StepSplit {
    let mut steps = vec![0.0; STEPS.len()];
    steps[0] = since(opened, t0);
    let mut entered = opened;
    let mut end = opened;
    let mut verify_attempts = 0;
    for r in rows {
        let at = parse_ts(&r.at).unwrap_or(opened);
        if r.event == "verify_checked" {
            verify_attempts += 1;
        }
        if r.rejected.is_none() && r.from_state != r.to_state {
            if let Some(i) = STEPS.iter().position(|s| *s == r.from_state) {
                // Detect's own time (trigger → Confirm) is counted with detection.
                steps[i] += since(at, entered);
            }
            entered = at;
            end = at;
        }
    }
    StepSplit { steps, end, verify_attempts }
}

// ------------------------------------------------------------------ Redis Sentinel

pub struct Sentinels {
    pub procs: Vec<Proc>,
    pub ports: Vec<u16>,
    _dir: tempfile::TempDir,
}

pub fn addr(port: u16) -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], port))
}

fn start_sentinels(master_port: u16) -> Result<Sentinels> {
    start_sentinels_with(master_port, CONFIRM_WINDOW_MS, 10000)
}

/// Three sentinels (quorum 2) monitoring `mymaster` at `master_port`.
pub fn start_sentinels_with(master_port: u16, down_after_ms: u64, failover_timeout_ms: u64) -> Result<Sentinels> {
    let dir = tempfile::Builder::new().prefix("bench-sentinel-").tempdir()?;
    let mut procs = Vec::new();
    let mut ports = Vec::new();
    for _ in 0..3 {
        let port = free_port()?;
        let conf: PathBuf = dir.path().join(format!("sentinel-{port}.conf"));
        std::fs::write(
            &conf,
            format!(
                "port {port}\nbind 127.0.0.1\ndaemonize no\ndir {d}\nlogfile {d}/sentinel-{port}.log\n\
                 sentinel monitor mymaster 127.0.0.1 {master_port} 2\n\
                 sentinel down-after-milliseconds mymaster {down_after_ms}\n\
                 sentinel failover-timeout mymaster {failover_timeout_ms}\n\
                 sentinel parallel-syncs mymaster 1\n",
                d = dir.path().display()
            ),
        )?;
        let child = Command::new("redis-server")
            .arg(&conf)
            .arg("--sentinel")
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .context("starting redis-server --sentinel")?;
        procs.push(Proc { child });
        ports.push(port);
    }
    Ok(Sentinels { procs, ports, _dir: dir })
}

pub fn query(port: u16, args: &[&str]) -> Result<Reply> {
    let mut c = Conn::connect(addr(port), Duration::from_millis(200), Duration::from_millis(500))?;
    Ok(c.cmd(args)?)
}

pub fn wait_for(what: &str, limit: Duration, mut cond: impl FnMut() -> bool) -> Result<()> {
    let deadline = Instant::now() + limit;
    while !cond() {
        if Instant::now() > deadline {
            bail!("timed out after {limit:?} waiting for {what}");
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Ok(())
}

/// Master + one replica + three sentinels (quorum 2, down-after = the confirm window);
/// SIGKILL the master; a client that follows Sentinel writes again when?
fn sentinel_once() -> Result<SentinelRun> {
    let master = RedisServer::start()?;
    let mport = master.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &mport])?;
    wait_for("the replica to sync", Duration::from_secs(20), || {
        query(replica.port(), &["INFO", "replication"])
            .map(|r| info_field(&r.text(), "master_link_status").as_deref() == Some("up"))
            .unwrap_or(false)
    })?;
    let mut sentinels = start_sentinels(master.port())?;
    wait_for("three sentinels that know the replica and each other", Duration::from_secs(30), || {
        sentinels.ports.iter().all(|p| {
            query(*p, &["SENTINEL", "MASTER", "mymaster"])
                .map(|r| {
                    pairs_field(&r, "num-slaves").as_deref() == Some("1")
                        && pairs_field(&r, "num-other-sentinels").as_deref() == Some("2")
                        && pairs_field(&r, "flags").as_deref() == Some("master")
                })
                .unwrap_or(false)
        })
    })?;

    // The client: asks a sentinel for the master, connects, writes every 10 ms; on any
    // error asks again (all sentinels in turn) and retries after 10 ms.
    let original = master.port();
    let stop = Arc::new(AtomicBool::new(false));
    let kill_at: Arc<Mutex<Option<Instant>>> = Arc::new(Mutex::new(None));
    let seen = Arc::new(Mutex::new((None::<f64>, None::<f64>)));
    let client = {
        let (stop, kill_at, seen, sports) = (stop.clone(), kill_at.clone(), seen.clone(), sentinels.ports.clone());
        std::thread::spawn(move || {
            let mut conn: Option<(u16, Conn)> = None;
            let mut n: u64 = 0;
            while !stop.load(Ordering::Relaxed) {
                if conn.is_none() {
                    for sp in &sports {
                        let Ok(r) = query(*sp, &["SENTINEL", "get-master-addr-by-name", "mymaster"]) else { continue };
                        let items = r.items();
                        let Some(port) = items.get(1).and_then(|p| p.text().parse::<u16>().ok()) else { continue };
                        if let Ok(c) = Conn::connect(addr(port), Duration::from_millis(100), Duration::from_millis(200)) {
                            conn = Some((port, c));
                        }
                        break;
                    }
                }
                let ok = match conn.as_mut() {
                    Some((port, c)) => {
                        n += 1;
                        let r = c.cmd(&["SET", "bench:sentinel:client", &n.to_string()]);
                        match r {
                            Ok(Reply::Status(s)) if s == "OK" => Some(*port),
                            _ => None,
                        }
                    }
                    None => None,
                };
                match ok {
                    Some(port) if port != original => {
                        if let Some(t) = *kill_at.lock().unwrap() {
                            let mut s = seen.lock().unwrap();
                            s.1.get_or_insert(ms(t.elapsed()));
                            return;
                        }
                    }
                    Some(_) => {}
                    None => conn = None,
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    // Separately: when does a sentinel first name the new master? (Polled every 10 ms.)
    let watcher = {
        let (stop, kill_at, seen, sport) = (stop.clone(), kill_at.clone(), seen.clone(), sentinels.ports[0]);
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                if let Some(t) = *kill_at.lock().unwrap() {
                    let port = query(sport, &["SENTINEL", "get-master-addr-by-name", "mymaster"])
                        .ok()
                        .and_then(|r| r.items().get(1).and_then(|p| p.text().parse::<u16>().ok()));
                    if port.is_some_and(|p| p != original) {
                        seen.lock().unwrap().0 = Some(ms(t.elapsed()));
                        return;
                    }
                }
                std::thread::sleep(Duration::from_millis(10));
            }
        })
    };
    std::thread::sleep(Duration::from_millis(300));
    *kill_at.lock().unwrap() = Some(Instant::now());
    master.kill();
    let res = wait_for("the client to write to the new master", Duration::from_secs(60), || {
        let s = seen.lock().unwrap();
        s.0.is_some() && s.1.is_some()
    });
    stop.store(true, Ordering::Relaxed);
    let _ = client.join();
    let _ = watcher.join();
    for p in sentinels.procs.iter_mut() {
        p.stop(Duration::from_secs(2));
    }
    drop(replica);
    res?;
    let (switch, write) = *seen.lock().unwrap();
    Ok(SentinelRun { switch_ms: switch.unwrap_or(f64::NAN), write_ms: write.ok_or_else(|| anyhow!("no write"))? })
}
