//! Benchmark 2: deleting 500,000 `bull:*` keys out of 1,000,000 without stalling Redis.
//! The orchestrator's flush (`RealRedis::flush`: SCAN + UNLINK, latency guard) against
//! the runbook's Lua script (`KEYS` + `DEL` in one EVAL), each with a separate
//! connection PINGing the same server throughout.

use crate::resp::{Conn, Reply};
use crate::util::*;
use anyhow::{bail, Result};
use orchestrator::ports::{FlushPlan, RedisProbe};
use orchestrator::secret::RedisUrl;
use sandbox::RedisServer;
use serde::Serialize;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

pub const TOTAL_KEYS: u64 = 1_000_000;
pub const MATCHING: u64 = 500_000;
pub const SCRIPT: &str = "for _,k in ipairs(redis.call('keys','bull:*')) do redis.call('del',k) end";
/// Pause between two PINGs of the monitoring client.
pub const PING_GAP: Duration = Duration::from_millis(1);

#[derive(Debug, Clone, Serialize)]
pub struct Row {
    pub method: String,
    pub batch: Option<u32>,
    pub patterns: Vec<String>,
    /// Per repetition.
    pub duration_ms: Vec<f64>,
    pub deleted: Vec<u64>,
    pub ping_worst_ms: Vec<f64>,
    pub ping_p99_ms: Vec<f64>,
    pub ping_p50_ms: Vec<f64>,
    pub pings: Vec<usize>,
    pub pauses: Vec<u32>,
    /// CPU time redis-server used during the deletion (user + system).
    pub redis_cpu_ms: Vec<f64>,
}

impl Row {
    pub fn keys_per_s(&self) -> f64 {
        let rates: Vec<f64> = self.duration_ms.iter().zip(&self.deleted).map(|(d, n)| *n as f64 / (d / 1000.0)).collect();
        median(&rates)
    }
}

pub struct Results {
    pub rows: Vec<Row>,
    pub seed_ms: f64,
    pub reps: usize,
}

/// Empties the server and loads 1,000,000 keys, 500,000 of them `bull:q:N`.
fn seed(port: u16) -> Result<f64> {
    let mut c = Conn::port(port)?;
    c.cmd(&["FLUSHALL"])?;
    let t = Instant::now();
    for args in [["DEBUG", "POPULATE", "500000", "bull:q"], ["DEBUG", "POPULATE", "500000", "app:data"]] {
        let r = c.cmd(&args)?;
        if r.is_error() {
            bail!("DEBUG POPULATE: {}", r.text());
        }
    }
    let took = ms(t.elapsed());
    let n = c.cmd(&["DBSIZE"])?;
    if n != Reply::Int(TOTAL_KEYS as i64) {
        bail!("seeded {} keys, expected {TOTAL_KEYS}", n.text());
    }
    Ok(took)
}

/// PINGs `port` from its own connection until stopped; returns each PING's start
/// and round trip. Connected (and one PING answered) before it returns.
fn monitor(port: u16, stop: Arc<AtomicBool>) -> Result<std::thread::JoinHandle<Vec<(Instant, f64)>>> {
    let mut c = Conn::port(port)?;
    c.ping()?;
    Ok(std::thread::spawn(move || {
        let mut out = Vec::with_capacity(20_000);
        while !stop.load(Ordering::Relaxed) {
            let t = Instant::now();
            let _ = c.ping();
            out.push((t, ms(t.elapsed())));
            std::thread::sleep(PING_GAP);
        }
        out
    }))
}

/// CPU time (user + system) the process has used so far, in ms (clock-tick resolution).
fn cpu_ms(pid: u32) -> f64 {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name (which is in parentheses and may contain spaces).
    let rest = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = rest.split_whitespace().collect();
    // utime and stime are fields 14 and 15 of the whole line: 12 and 13 after ')'.
    let ticks: f64 = [11, 12].iter().filter_map(|i| f.get(*i)?.parse::<f64>().ok()).sum();
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    ticks * 1000.0 / hz.max(1.0)
}

fn remaining(port: u16) -> Result<u64> {
    let mut c = Conn::port(port)?;
    let r = c.cmd(&["DBSIZE"])?;
    Ok(r.text().parse().unwrap_or(0))
}

enum Method {
    Script,
    Flush { batch: u32, patterns: Vec<String> },
}

async fn one(port: u16, pid: u32, url: &RedisUrl, m: &Method, row: &mut Row) -> Result<()> {
    seed(port)?;
    let stop = Arc::new(AtomicBool::new(false));
    let mon = monitor(port, stop.clone())?;
    let cpu0 = cpu_ms(pid);
    let t = Instant::now();
    let (deleted, pauses) = match m {
        Method::Script => {
            let r = tokio::task::spawn_blocking(move || -> Result<Reply> {
                let mut c = Conn::port(port)?;
                Ok(c.cmd(&["EVAL", SCRIPT, "0"])?)
            })
            .await??;
            if r.is_error() {
                bail!("EVAL: {}", r.text());
            }
            (TOTAL_KEYS - remaining(port)?, 0)
        }
        Method::Flush { batch, patterns } => {
            let plan = FlushPlan {
                patterns: patterns.clone(),
                flushdb: false,
                batch: *batch,
                max_latency: Duration::from_millis(50),
                dry_run: false,
            };
            let report =
                orchestrator::probe::RealRedis::new().flush(url, &plan, &|_| {}).await.map_err(|e| anyhow::anyhow!("flush: {e}"))?;
            (report.deleted, report.pauses)
        }
    };
    let took = ms(t.elapsed());
    let end = Instant::now();
    let cpu = cpu_ms(pid) - cpu0;
    stop.store(true, Ordering::Relaxed);
    // Only PINGs that overlapped the deletion (one sent just before a script starts
    // waits for all of it, and counts).
    let pings: Vec<f64> = mon
        .join()
        .map_err(|_| anyhow::anyhow!("monitor thread panicked"))?
        .into_iter()
        .filter(|(start, rtt)| *start <= end && *start + Duration::from_secs_f64(rtt / 1000.0) >= t)
        .map(|(_, rtt)| rtt)
        .collect();
    let left = remaining(port)?;
    if left != TOTAL_KEYS - MATCHING {
        bail!("{} left {left} keys, expected {}", row.method, TOTAL_KEYS - MATCHING);
    }
    row.duration_ms.push(took);
    row.deleted.push(deleted);
    row.ping_worst_ms.push(max(&pings));
    row.ping_p99_ms.push(pct(&pings, 99.0));
    row.ping_p50_ms.push(pct(&pings, 50.0));
    row.pings.push(pings.len());
    row.pauses.push(pauses);
    row.redis_cpu_ms.push(cpu);
    Ok(())
}

pub async fn run(ctx: &Ctx) -> Result<Results> {
    let reps = if ctx.quick { 1 } else { 3 };
    let server = RedisServer::start_with(&["--enable-debug-command", "yes"])?;
    let port = server.port();
    let pid = server.pid();
    let url = RedisUrl::parse(&server.url()).map_err(anyhow::Error::msg)?;
    let seed_ms = seed(port)?;
    progress(format!(
        "flush: seeded {} keys ({} matching bull:*) in {}",
        fmt_int(TOTAL_KEYS as f64),
        fmt_int(MATCHING as f64),
        fmt_ms(seed_ms)
    ));
    let bull = vec!["bull:*".to_string()];
    let playbook_patterns = vec!["bull:*".to_string(), "idempotent:*".to_string()];
    let methods: Vec<(String, Method)> = vec![
        ("runbook script (EVAL KEYS + DEL)".into(), Method::Script),
        ("orchestrator flush, playbook defaults".into(), Method::Flush { batch: 500, patterns: bull.clone() }),
        ("orchestrator flush, the sandbox playbook's two patterns".into(), Method::Flush { batch: 500, patterns: playbook_patterns }),
        ("orchestrator flush".into(), Method::Flush { batch: 1000, patterns: bull.clone() }),
        ("orchestrator flush".into(), Method::Flush { batch: 2000, patterns: bull.clone() }),
        ("orchestrator flush".into(), Method::Flush { batch: 5000, patterns: bull.clone() }),
    ];
    let mut rows = Vec::new();
    for (name, m) in &methods {
        let (batch, patterns) = match m {
            Method::Script => (None, vec!["bull:*".to_string()]),
            Method::Flush { batch, patterns } => (Some(*batch), patterns.clone()),
        };
        let mut row = Row {
            method: name.clone(),
            batch,
            patterns,
            duration_ms: vec![],
            deleted: vec![],
            ping_worst_ms: vec![],
            ping_p99_ms: vec![],
            ping_p50_ms: vec![],
            pings: vec![],
            pauses: vec![],
            redis_cpu_ms: vec![],
        };
        for i in 0..reps {
            one(port, pid, &url, m, &mut row).await?;
            progress(format!(
                "flush: {name}{} [{}/{reps}]: {} for {} keys ({} keys/s), PING worst {} p99 {}, redis CPU {}",
                batch.map(|b| format!(" batch {b}")).unwrap_or_default(),
                i + 1,
                fmt_ms(*row.duration_ms.last().unwrap()),
                fmt_int(*row.deleted.last().unwrap() as f64),
                fmt_int(*row.deleted.last().unwrap() as f64 / (row.duration_ms.last().unwrap() / 1000.0)),
                fmt_ms(*row.ping_worst_ms.last().unwrap()),
                fmt_ms(*row.ping_p99_ms.last().unwrap()),
                fmt_ms(*row.redis_cpu_ms.last().unwrap()),
            ));
        }
        rows.push(row);
    }
    Ok(Results { rows, seed_ms, reps })
}
