//! Benchmark 8: a fleet. One `serve` watching N targets (1,000 by default), each probed
//! every second: its CPU and RSS at steady state, how late its watch rounds start, and
//! kill → incident opened for primaries SIGKILLed among them.
//!
//! Layout: the N − V shared targets each have a primary on one logical DB of up to ten
//! `redis-server`s started with `--databases 100` (target i on server i mod S, DB
//! i div S) and a backup on the same DB of the next server; each of the V victims
//! (V = repetitions) has a `redis-server` of its own, so killing it affects only that
//! target. Service and platform of every target are one stub HTTP server in the
//! harness that answers fixed JSON (the queue-metrics reader of each target calls it
//! every interval; the stub touches no Redis, so it costs next to nothing).

use crate::util::*;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{DateTime, Utc};
use sandbox::RedisServer;
use serde::Serialize;
use std::path::Path;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

pub const DEFAULT_TARGETS: usize = 1000;
pub const DBS_PER_SERVER: usize = 100;
pub const MAX_SHARED_SERVERS: usize = 10;
/// `watch.interval` and `watch.ping_fail_for` of every target.
pub const INTERVAL_MS: u64 = 1000;
pub const PING_FAIL_FOR_MS: u64 = 2000;
/// After `listening`: every target has started its rounds and settled.
pub const WARMUP: Duration = Duration::from_secs(10);
/// The steady window (`--quick`: half).
pub const WINDOW: Duration = Duration::from_secs(30);
/// The aims (issue 11) the numbers are held against.
pub const AIM_CPU_PCT: f64 = 25.0;
pub const AIM_P99_LATE_MS: f64 = 100.0;
pub const AIM_DETECT_SLACK_MS: f64 = 100.0;

/// The lateness histogram's upper bounds (seconds), as `serve` exports them.
const LATENESS: &str = "orchestrator_watch_lateness_seconds";
const PROBE: &str = "orchestrator_probe_latency_seconds";

#[derive(Debug, Clone, Serialize)]
pub struct Kill {
    pub target: String,
    pub killed_at: String,
    pub opened_at: String,
    /// Kill → the incident's `opened_at` (both the system clock).
    pub detect_ms: f64,
}

/// Bucket upper bound (seconds; +Inf last) and the count that fell in the window.
pub type Buckets = Vec<(f64, u64)>;

#[derive(Debug, Clone, Serialize)]
pub struct Run {
    pub targets: usize,
    pub shared_servers: usize,
    pub victims: usize,
    /// spawn → `listening`.
    pub startup_ms: f64,
    pub window_s: f64,
    /// utime + stime of `serve` over the window, % of one core.
    pub cpu_pct: f64,
    pub rss: u64,
    pub hwm: u64,
    pub threads: u64,
    /// Watch rounds started in the window (the lateness histogram's count).
    pub rounds: u64,
    pub late: Buckets,
    pub late_mean_ms: f64,
    pub late_p50_ms: f64,
    pub late_p99_ms: f64,
    /// The same while the victims' incidents opened and ran (kill phase).
    pub kill_late_p99_ms: f64,
    pub kill_rounds: u64,
    pub probe_p50_ms: f64,
    pub probe_p99_ms: f64,
    pub probe_failures: u64,
    /// Requests the stub service answered per second in the window.
    pub service_rps: f64,
    /// Every shared `redis-server` together, % of one core; and the harness itself.
    pub redis_cpu_pct: f64,
    pub harness_cpu_pct: f64,
    pub kills: Vec<Kill>,
    /// WARN/ERROR lines `serve` logged over the whole run, with a few distinct ones.
    pub log_lines: usize,
    pub log_sample: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub runs: Vec<Run>,
    /// Sizes that could not run, with the error.
    pub failed: Vec<(usize, String)>,
}

/// Every size in `sizes`; a size that fails is recorded and the next one still runs.
pub async fn run(ctx: &Ctx, sizes: &[usize]) -> Result<Results> {
    let mut out = Results { runs: vec![], failed: vec![] };
    for &n in sizes {
        progress(format!("fleet: {n} targets, watch.interval {INTERVAL_MS} ms, one serve"));
        match one(ctx, n).await {
            Ok(r) => {
                progress(format!(
                    "  CPU {:.1} % of one core, RSS {}, lateness p50 {} p99 {} ({} rounds, {:.0}/s), kill → opened {}",
                    r.cpu_pct,
                    fmt_bytes(r.rss),
                    fmt_ms(r.late_p50_ms),
                    fmt_ms(r.late_p99_ms),
                    fmt_int(r.rounds as f64),
                    r.rounds as f64 / r.window_s,
                    r.kills.iter().map(|k| fmt_ms0(k.detect_ms)).collect::<Vec<_>>().join(", ")
                ));
                out.runs.push(r);
            }
            Err(e) => {
                progress(format!("  {n} targets: FAILED: {e:#}"));
                out.failed.push((n, format!("{e:#}")));
            }
        }
    }
    if out.runs.is_empty() {
        bail!("no fleet size ran: {}", out.failed.iter().map(|(n, e)| format!("{n}: {e}")).collect::<Vec<_>>().join("; "));
    }
    Ok(out)
}

/// One playbook: `playbooks/sandbox.yaml` with its name, endpoints and watch set, and
/// the switch behind an approval (a victim's incident then waits there, doing nothing).
fn playbook(template: &str, name: &str, primary: &str, backup: &str, stub: &str) -> Result<String> {
    let edits: [(&str, String); 7] = [
        ("\nname: sandbox\n", format!("\nname: {name}\n")),
        ("\"${SANDBOX_PRIMARY_URL:-redis://127.0.0.1:6391}\"", format!("\"{primary}\"")),
        ("\"${SANDBOX_BACKUP_URL:-redis://127.0.0.1:6392}\"", format!("\"{backup}\"")),
        ("\"${SANDBOX_SERVICE_URL:-http://127.0.0.1:7480}\"", format!("\"{stub}\"")),
        ("\"${SANDBOX_PLATFORM_URL:-http://127.0.0.1:7481}\"", format!("\"{stub}\"")),
        ("  steps: []\n", "  steps: [switch]\n".to_string()),
        ("  interval: 1s\n  ping_fail_for: 2s\n", format!("  interval: {INTERVAL_MS}ms\n  ping_fail_for: {PING_FAIL_FOR_MS}ms\n")),
    ];
    let mut text = template.to_string();
    for (from, to) in &edits {
        if !text.contains(from) {
            bail!("playbook edit target {from:?} not found in playbooks/sandbox.yaml");
        }
        text = text.replacen(from, to, 1);
    }
    Ok(text)
}

async fn one(ctx: &Ctx, n: usize) -> Result<Run> {
    orchestrator::wiring::install_crypto();
    let victims = ctx.reps.min(n.saturating_sub(1)).max(1);
    let shared = n - victims;
    let servers_n = shared.div_ceil(DBS_PER_SERVER).clamp(1, MAX_SHARED_SERVERS);
    if shared > servers_n * DBS_PER_SERVER {
        bail!("{shared} shared targets need more than {MAX_SHARED_SERVERS} × {DBS_PER_SERVER} DBs");
    }
    let dbs = DBS_PER_SERVER.to_string();
    let mut servers = Vec::new();
    for i in 0..servers_n {
        servers.push(RedisServer::start_with(&["--databases", &dbs]).with_context(|| format!("shared redis-server {i}"))?);
    }
    let mut victim_servers = Vec::new();
    for i in 0..victims {
        victim_servers.push(RedisServer::start().with_context(|| format!("victim redis-server {i}"))?);
    }
    let stub = Stub::start().await?;
    let dir = ctx.tempdir("bench-fleet-")?;
    let pb_dir = dir.path().join("playbooks");
    std::fs::create_dir(&pb_dir)?;
    let template = std::fs::read_to_string(ctx.root.join("playbooks/sandbox.yaml"))?;
    let url = |s: &RedisServer, db: usize| format!("{}/{db}", s.url());
    for i in 0..shared {
        let (s, db) = (i % servers_n, i / servers_n);
        let name = format!("fleet-{i:04}");
        // The same DB on the next server; with a single server, another DB of it (a
        // playbook whose backup is its primary is refused).
        let backup = match servers_n {
            1 => url(&servers[0], (db + DBS_PER_SERVER / 2) % DBS_PER_SERVER),
            _ => url(&servers[(s + 1) % servers_n], db),
        };
        let text = playbook(&template, &name, &url(&servers[s], db), &backup, &stub.url())?;
        std::fs::write(pb_dir.join(format!("{name}.yaml")), text)?;
    }
    let victim_names: Vec<String> = (0..victims).map(|k| format!("victim-{k}")).collect();
    for (k, name) in victim_names.iter().enumerate() {
        // Its backup: a DB of a shared server (backups are never written here: the
        // switch waits for an approval nobody gives).
        let backup = url(&servers[k % servers_n], DBS_PER_SERVER - 1 - k / servers_n);
        let text = playbook(&template, name, &url(&victim_servers[k], 0), &backup, &stub.url())?;
        std::fs::write(pb_dir.join(format!("{name}.yaml")), text)?;
    }

    let db = dir.path().join("journal.db");
    let log = dir.path().join("serve.log");
    let mut cmd = Command::new(ctx.orchestrator());
    cmd.arg("--db").arg(&db).arg("serve").arg("--playbooks").arg(&pb_dir).args(["--listen", "127.0.0.1:0"]);
    cmd.env("ORCH_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
        .env("ORCH_APPROVER_TOKENS", format!("oncall={APPROVER_TOKEN}"))
        .env("ORCH_LOG", "warn")
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(std::fs::File::create(&log)?);
    let (mut serve, base, took) = spawn_listening(cmd).map_err(|e| e.context(log_tail(&log)))?;
    let pid = serve.pid();
    progress(format!(
        "  serve listening after {} ({n} targets: {shared} on {servers_n} shared redis-servers, {victims} with their own)",
        fmt_ms(ms(took))
    ));
    tokio::time::sleep(WARMUP).await;
    if serve.child.try_wait()?.is_some() {
        bail!("serve exited during warm-up: {}", log_tail(&log));
    }

    let client = reqwest::Client::builder().timeout(Duration::from_secs(20)).build()?;
    let window = if ctx.quick { WINDOW / 2 } else { WINDOW };
    let redis_pids: Vec<u32> = servers.iter().map(|s| s.pid()).collect();
    let m0 = scrape(&client, &base).await?;
    let (cpu0, redis0, self0, req0, t0) = (
        cpu_ticks(pid)?,
        redis_pids.iter().filter_map(|p| cpu_ticks(*p).ok()).sum::<u64>(),
        cpu_ticks(std::process::id())?,
        stub.requests(),
        Instant::now(),
    );
    tokio::time::sleep(window).await;
    let (cpu1, redis1, self1, req1, elapsed) = (
        cpu_ticks(pid)?,
        redis_pids.iter().filter_map(|p| cpu_ticks(*p).ok()).sum::<u64>(),
        cpu_ticks(std::process::id())?,
        stub.requests(),
        t0.elapsed(),
    );
    let (rss, hwm, threads) = (proc_mem(pid, "VmRSS").unwrap_or(0), proc_mem(pid, "VmHWM").unwrap_or(0), proc_threads(pid));
    let m1 = scrape(&client, &base).await?;
    let secs = elapsed.as_secs_f64();
    let pct_of = |ticks: u64| ticks as f64 / clk_tck() / secs * 100.0;
    let late = delta(&hist(&m1, LATENESS), &hist(&m0, LATENESS));
    let probe = delta(&hist(&m1, PROBE), &hist(&m0, PROBE));
    let late_sum = sum_of(&m1, LATENESS) - sum_of(&m0, LATENESS);
    let rounds = late.last().map(|b| b.1).unwrap_or(0);
    let probe_failures =
        counter_total(&m1, "orchestrator_probe_failures_total").saturating_sub(counter_total(&m0, "orchestrator_probe_failures_total"));

    // The kills, one at a time: each victim's own redis-server, SIGKILLed.
    let journal = sqlx::sqlite::SqlitePoolOptions::new()
        .max_connections(1)
        .connect_with(sqlx::sqlite::SqliteConnectOptions::new().filename(&db).read_only(true))
        .await
        .context("opening the journal read-only")?;
    let mut kills = Vec::new();
    for (k, name) in victim_names.iter().enumerate() {
        // Let the previous incident's first steps pass, then a random part of an
        // interval: the rounds' phases are fixed by the names, so a fixed delay would
        // put every run's kills at the same points of the victims' rounds.
        tokio::time::sleep(Duration::from_millis(1500 + random_below(INTERVAL_MS))).await;
        let killed_at = Utc::now();
        victim_servers[k].kill();
        let deadline = Instant::now() + Duration::from_secs(20);
        let opened = loop {
            let row: Option<(String,)> =
                sqlx::query_as("SELECT opened_at FROM incidents WHERE target = ? AND trigger_source = 'watch' ORDER BY opened_at LIMIT 1")
                    .bind(name)
                    .fetch_optional(&journal)
                    .await?;
            if let Some((at,)) = row {
                break at;
            }
            if Instant::now() > deadline {
                bail!("no incident opened for {name} within 20 s of killing its primary; {}", log_tail(&log));
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        let at: DateTime<Utc> = orchestrator::journal::parse_ts(&opened).ok_or_else(|| anyhow!("bad opened_at {opened:?}"))?;
        let detect_ms = (at - killed_at).num_milliseconds() as f64;
        progress(format!("  {name}: kill → incident opened {}", fmt_ms0(detect_ms)));
        kills.push(Kill { target: name.clone(), killed_at: killed_at.to_rfc3339(), opened_at: opened, detect_ms });
    }
    let m2 = scrape(&client, &base).await?;
    let kill_late = delta(&hist(&m2, LATENESS), &hist(&m1, LATENESS));
    journal.close().await;
    // Before the SIGTERM: its own "shutdown requested" warning is not an oddity.
    let (log_lines, log_sample) = log_summary(&log);
    serve.stop(Duration::from_secs(15));
    stub.stop();

    Ok(Run {
        targets: n,
        shared_servers: servers_n,
        victims,
        startup_ms: ms(took),
        window_s: secs,
        cpu_pct: pct_of(cpu1 - cpu0),
        rss,
        hwm,
        threads,
        rounds,
        late_mean_ms: late_sum / rounds.max(1) as f64 * 1000.0,
        late_p50_ms: quantile(&late, 0.50) * 1000.0,
        late_p99_ms: quantile(&late, 0.99) * 1000.0,
        late,
        kill_late_p99_ms: quantile(&kill_late, 0.99) * 1000.0,
        kill_rounds: kill_late.last().map(|b| b.1).unwrap_or(0),
        probe_p50_ms: quantile(&probe, 0.50) * 1000.0,
        probe_p99_ms: quantile(&probe, 0.99) * 1000.0,
        probe_failures,
        service_rps: (req1 - req0) as f64 / secs,
        redis_cpu_pct: pct_of(redis1.saturating_sub(redis0)),
        harness_cpu_pct: pct_of(self1 - self0),
        kills,
        log_lines,
        log_sample,
    })
}

/// A random number in 0..n (std only: a randomly keyed hash of the time).
fn random_below(n: u64) -> u64 {
    use std::hash::BuildHasher;
    std::collections::hash_map::RandomState::new().hash_one(Instant::now()) % n.max(1)
}

// ------------------------------------------------------------------ /proc

fn clk_tck() -> f64 {
    // SAFETY: sysconf has no preconditions.
    (unsafe { libc::sysconf(libc::_SC_CLK_TCK) }) as f64
}

/// utime + stime of a process, in clock ticks.
fn cpu_ticks(pid: u32) -> Result<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).with_context(|| format!("/proc/{pid}/stat"))?;
    // The command name may hold spaces: fields are counted after its closing paren.
    let rest = &s[s.rfind(')').ok_or_else(|| anyhow!("odd /proc/{pid}/stat"))? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    Ok(f[11].parse::<u64>()? + f[12].parse::<u64>()?)
}

fn proc_threads(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| s.lines().find_map(|l| l.strip_prefix("Threads:").and_then(|v| v.trim().parse().ok())))
        .unwrap_or(0)
}

fn log_tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    format!("serve's log ends: {}", lines[lines.len().saturating_sub(5)..].join(" | "))
}

/// How many WARN/ERROR lines, and up to five distinct messages (timestamps cut).
fn log_summary(log: &Path) -> (usize, Vec<String>) {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().filter(|l| l.contains("WARN") || l.contains("ERROR")).collect();
    let mut sample: Vec<String> = Vec::new();
    for l in &lines {
        let msg = l.split_once(' ').map(|(_, m)| m).unwrap_or(l).trim().chars().take(200).collect::<String>();
        let key: String = msg.chars().filter(|c| !c.is_ascii_digit()).collect();
        if sample.len() < 5 && !sample.iter().any(|s| s.chars().filter(|c| !c.is_ascii_digit()).collect::<String>() == key) {
            sample.push(msg);
        }
    }
    (lines.len(), sample)
}

// ------------------------------------------------------------------ /metrics

async fn scrape(client: &reqwest::Client, base: &str) -> Result<String> {
    let r = client.get(format!("{base}/metrics")).send().await.context("GET /metrics")?;
    if !r.status().is_success() {
        bail!("GET /metrics answered {}", r.status());
    }
    Ok(r.text().await?)
}

/// A histogram's cumulative buckets summed over every series (e.g. every target),
/// sorted by upper bound, +Inf last.
fn hist(text: &str, name: &str) -> Buckets {
    let prefix = format!("{name}_bucket{{");
    let mut out: Buckets = Vec::new();
    for line in text.lines().filter(|l| l.starts_with(&prefix)) {
        let Some((labels, value)) = line[prefix.len()..].rsplit_once("} ") else { continue };
        let Some(le) = labels.split(',').find_map(|kv| kv.trim().strip_prefix("le=\"")).map(|v| v.trim_end_matches('"')) else {
            continue;
        };
        let le = if le == "+Inf" { f64::INFINITY } else { le.parse().unwrap_or(f64::NAN) };
        let v: u64 = value.trim().parse::<f64>().unwrap_or(0.0) as u64;
        match out.iter_mut().find(|(b, _)| *b == le) {
            Some(slot) => slot.1 += v,
            None => out.push((le, v)),
        }
    }
    out.sort_by(|a, b| a.0.total_cmp(&b.0));
    out
}

fn delta(later: &Buckets, earlier: &Buckets) -> Buckets {
    later.iter().map(|(le, c)| (*le, c.saturating_sub(earlier.iter().find(|(b, _)| b == le).map(|b| b.1).unwrap_or(0)))).collect()
}

fn sum_of(text: &str, name: &str) -> f64 {
    let prefix = format!("{name}_sum");
    text.lines().filter(|l| l.starts_with(&prefix)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum()
}

fn counter_total(text: &str, name: &str) -> u64 {
    text.lines().filter(|l| l.starts_with(name)).filter_map(|l| l.rsplit(' ').next()?.parse::<f64>().ok()).sum::<f64>() as u64
}

/// The q-quantile (0..1) of cumulative buckets, interpolated linearly inside the bucket
/// it falls in (from the bound below, 0 for the first). In the +Inf bucket: the last
/// finite bound (a lower bound of the true value). NaN when empty.
pub fn quantile(b: &Buckets, q: f64) -> f64 {
    let total = b.last().map(|x| x.1).unwrap_or(0);
    if total == 0 {
        return f64::NAN;
    }
    let rank = q * total as f64;
    let (mut lo, mut below) = (0.0, 0u64);
    for &(le, c) in b {
        if c as f64 >= rank && c > below {
            if le.is_infinite() {
                return lo;
            }
            return lo + (le - lo) * (rank - below as f64) / (c - below) as f64;
        }
        (lo, below) = (le, c);
    }
    lo
}

/// The share of rounds in the window that started within `bound` seconds of their tick.
pub fn share_within(b: &Buckets, bound: f64) -> f64 {
    let total = b.last().map(|x| x.1).unwrap_or(0).max(1) as f64;
    b.iter().find(|(le, _)| (*le - bound).abs() < 1e-9).map(|(_, c)| *c as f64 / total).unwrap_or(f64::NAN)
}

// ------------------------------------------------------------------ the stub service

/// The service and platform of every target: HTTP/1.1 keep-alive on loopback, fixed
/// JSON per path (queue metrics empty and connected, health down, one Redis error in
/// the logs, 404 elsewhere), no Redis behind it.
struct Stub {
    addr: std::net::SocketAddr,
    requests: Arc<AtomicU64>,
    task: tokio::task::JoinHandle<()>,
}

impl Stub {
    async fn start() -> Result<Stub> {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let requests = Arc::new(AtomicU64::new(0));
        let counter = requests.clone();
        let task = tokio::spawn(async move {
            let mut conns = tokio::task::JoinSet::new();
            while let Ok((sock, _)) = listener.accept().await {
                conns.spawn(stub_conn(sock, counter.clone()));
                while conns.try_join_next().is_some() {}
            }
        });
        Ok(Stub { addr, requests, task })
    }
    fn url(&self) -> String {
        format!("http://{}", self.addr)
    }
    fn requests(&self) -> u64 {
        self.requests.load(Ordering::Relaxed)
    }
    /// Aborting the accept loop drops its JoinSet, which aborts every connection.
    fn stop(&self) {
        self.task.abort();
    }
}

impl Drop for Stub {
    fn drop(&mut self) {
        self.task.abort();
    }
}

fn stub_answer(path: &str) -> (&'static str, String) {
    match path.split('?').next().unwrap_or("") {
        "/api/v1/queue/metrics" => (
            "200 OK",
            r#"{"connection_status":"connected","total_jobs":0,"active_jobs":0,"waiting_jobs":0,"completed_jobs":0,"failed_jobs":0,"queues":{}}"#.into(),
        ),
        "/api/v1/health" => (
            "503 Service Unavailable",
            r#"{"status":"error","error":{"redis":{"status":"down","message":"connect ECONNREFUSED"}}}"#.into(),
        ),
        "/api/v1/logs" => (
            "200 OK",
            serde_json::json!({"data": [{"timestamp": Utc::now().to_rfc3339(), "level": "error", "message": "Redis connection error: connect ECONNREFUSED"}]})
                .to_string(),
        ),
        _ => ("404 Not Found", r#"{"error":"not found"}"#.into()),
    }
}

async fn stub_conn(mut sock: tokio::net::TcpStream, requests: Arc<AtomicU64>) {
    let mut buf: Vec<u8> = Vec::with_capacity(2048);
    let mut chunk = [0u8; 4096];
    loop {
        let head_end = loop {
            if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
                break i + 4;
            }
            if buf.len() > 64 * 1024 {
                return;
            }
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        };
        let head = String::from_utf8_lossy(&buf[..head_end]).into_owned();
        let path = head.split_whitespace().nth(1).unwrap_or("/").to_string();
        let body_len = head
            .lines()
            .find_map(|l| {
                let (k, v) = l.split_once(':')?;
                k.trim().eq_ignore_ascii_case("content-length").then(|| v.trim().parse::<usize>().ok()).flatten()
            })
            .unwrap_or(0);
        while buf.len() < head_end + body_len {
            match sock.read(&mut chunk).await {
                Ok(0) | Err(_) => return,
                Ok(k) => buf.extend_from_slice(&chunk[..k]),
            }
        }
        buf.drain(..head_end + body_len);
        requests.fetch_add(1, Ordering::Relaxed);
        let (status, body) = stub_answer(&path);
        let resp = format!("HTTP/1.1 {status}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{body}", body.len());
        if sock.write_all(resp.as_bytes()).await.is_err() {
            return;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn quantiles_interpolate_inside_buckets() {
        let b: Buckets = vec![(0.001, 50), (0.005, 90), (0.01, 100), (f64::INFINITY, 100)];
        assert!((quantile(&b, 0.5) - 0.001).abs() < 1e-12);
        assert!((quantile(&b, 0.25) - 0.0005).abs() < 1e-12);
        assert!((quantile(&b, 0.7) - 0.003).abs() < 1e-12);
        assert!((quantile(&b, 0.99) - 0.0095).abs() < 1e-12);
        let tail: Buckets = vec![(0.5, 1), (1.0, 1), (f64::INFINITY, 4)];
        assert_eq!(quantile(&tail, 0.99), 1.0);
    }

    #[test]
    fn histograms_sum_over_series() {
        let text = "x_bucket{target=\"a\",le=\"0.1\"} 2\nx_bucket{target=\"a\",le=\"+Inf\"} 3\nx_bucket{target=\"b\",le=\"0.1\"} 1\nx_bucket{target=\"b\",le=\"+Inf\"} 1\nx_sum{target=\"a\"} 0.5\n";
        assert_eq!(hist(text, "x"), vec![(0.1, 3), (f64::INFINITY, 4)]);
        assert_eq!(sum_of(text, "x"), 0.5);
    }
}
