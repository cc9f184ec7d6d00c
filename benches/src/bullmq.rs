//! Benchmark 6: failover on the real BullMQ service (`bullmq-service/`, Node 20 +
//! BullMQ + ioredis), side by side with the same service connected through ioredis's
//! own Sentinel support. SIGKILL the Redis master/primary under a steady stream of
//! jobs and time, for both, kill → the first job completed again, kill → the service's
//! health up, and the jobs lost; for the orchestrator also its time per step (from the
//! journal) and its own overhead beyond the waits the playbook and the platform set.
//!
//! Two detection budgets D, each with interleaved pairs (orchestrator run, Sentinel run):
//! Sentinel's `down-after-milliseconds` = D = the orchestrator's `ping_fail_for +
//! confirm_window`.

use crate::failover::{query, since, split_steps, start_sentinels_with, wait_for, Sentinels, STEPS};
use crate::resp::{info_field, pairs_field};
use crate::util::*;
use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use orchestrator::journal::prelude::*;
use orchestrator::journal::{parse_ts, Journal};
use sandbox::RedisServer;
use serde_json::Value;
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The client submits one job this often (each POST on its own task, so a hanging
/// request never slows the stream).
pub const SUBMIT_EVERY_MS: u64 = 50;
/// How often the client reads the state of every job not yet completed or failed.
pub const POLL_EVERY_MS: u64 = 100;
/// A job accepted but not completed this long after recovery is lost.
pub const LOST_DEADLINE: Duration = Duration::from_secs(30);
/// A job the service's (recovered) Redis keeps answering `unknown` for (or with another
/// job under its id) this long is lost before the deadline: nothing can bring it back,
/// the Redis that held it is dead and stays dead.
pub const ABSENT_FOR: Duration = Duration::from_secs(3);
/// Sentinel's `failover-timeout` (small: a failed election retries sooner).
pub const FAILOVER_TIMEOUT_MS: u64 = 2000;
/// The sandbox platform's two deploy steps: 2 × 150 ms = 0.3 s.
pub const DEPLOY_STEPS_MS: u64 = 150;
/// The aim for the orchestrator's own time beyond the configured waits.
pub const AIM_OVERHEAD_MS: f64 = 150.0;
/// Pairs per budget (fewer with `--reps` below it, 1 with `--quick`).
pub const PAIRS: usize = 3;
const QUEUE: &str = "default";
const SENTINEL_NAME: &str = "mymaster";

/// One detection budget D.
#[derive(Debug, Clone, Copy)]
pub struct Budget {
    pub d_ms: u64,
    pub ping_fail_for_ms: u64,
    pub confirm_window_ms: u64,
    pub interval_ms: u64,
}

pub const BUDGETS: [Budget; 2] = [
    Budget { d_ms: 1000, ping_fail_for_ms: 500, confirm_window_ms: 500, interval_ms: 100 },
    Budget { d_ms: 3000, ping_fail_for_ms: 2000, confirm_window_ms: 1000, interval_ms: 1000 },
];

impl Budget {
    /// The edits to playbooks/sandbox.yaml (as shipped: interval 1s, ping_fail_for 2s,
    /// confirm_window 1s, confirm_attempts 2).
    pub fn edits(&self) -> Vec<(String, String)> {
        vec![
            ("  interval: 1s".into(), format!("  interval: {}ms", self.interval_ms)),
            ("  ping_fail_for: 2s".into(), format!("  ping_fail_for: {}ms", self.ping_fail_for_ms)),
            ("  confirm_window: 1s".into(), format!("  confirm_window: {}ms", self.confirm_window_ms)),
            ("  confirm_attempts: 2".into(), "  confirm_attempts: 2".into()),
        ]
    }
    pub fn label(&self) -> String {
        format!("D = {} s", self.d_ms as f64 / 1000.0)
    }
    /// How long traffic flows (and the watch loop probes a healthy primary) before the kill.
    fn before_kill(&self) -> Duration {
        Duration::from_millis((self.interval_ms + 500).max(1000))
    }
}

/// What the job client saw, either side.
#[derive(Debug, Clone, Default)]
pub struct Seen {
    /// Kill → `finishedOn` of the first job submitted after the kill that completed.
    pub first_job_ms: Option<f64>,
    /// Kill → the first `GET /api/v1/health` 200 after it had answered otherwise.
    pub health_up_ms: Option<f64>,
    pub submitted: usize,
    /// Answered 2xx by the trigger endpoint.
    pub accepted: usize,
    pub accepted_after_kill: usize,
    pub completed: usize,
    /// Lost: the service's Redis no longer has the job (dead with the old master).
    pub lost_absent: usize,
    /// Lost: BullMQ moved it to failed.
    pub lost_failed: usize,
    /// Lost: still waiting/active at the deadline.
    pub lost_pending: usize,
}

impl Seen {
    pub fn lost(&self) -> usize {
        self.lost_absent + self.lost_failed + self.lost_pending
    }
}

#[derive(Debug, Clone)]
pub struct OrchRun {
    pub seen: Seen,
    /// Per step, STEPS order (as benchmark 1).
    pub steps: Vec<f64>,
    /// Kill → Recovered (the journal's last transition).
    pub total_ms: f64,
    /// The platform's deploy, created → live (sum if the orchestrator deployed twice).
    pub deploy_live_ms: f64,
    pub deploys: usize,
    pub verify_attempts: usize,
    /// verify_interval × (attempts − 1): the waits between verification samples.
    pub verify_waits_ms: f64,
    /// Everything subtracted: ping_fail_for + interval + confirm_window + deploy + verify waits.
    pub waits_ms: f64,
    /// total − waits_ms (one full watch.interval subtracted for sampling).
    pub overhead_ms: f64,
    /// Kill → the watch loop's first failing probe (serve's /metrics).
    pub first_fail_ms: Option<f64>,
    /// As overhead_ms, but subtracting the sampling wait as measured (kill → first
    /// failing probe) instead of a full watch.interval.
    pub overhead_exact_ms: f64,
    pub outcome: String,
    /// The first verify attempt's failed checks, if any (why a second one was needed).
    pub first_verify_failed: Vec<String>,
    /// The watch loop's journaled alert (says how long the pings had failed).
    pub alert: String,
}

#[derive(Debug, Clone)]
pub struct SentinelRun {
    pub seen: Seen,
    /// Kill → a sentinel names the new master.
    pub switch_ms: Option<f64>,
}

#[derive(Debug, Clone)]
pub struct BudgetResults {
    pub budget: Budget,
    pub orch: Vec<OrchRun>,
    pub sentinel: Vec<SentinelRun>,
    pub errors: Vec<String>,
}

pub struct Results {
    pub budgets: Vec<BudgetResults>,
    pub pairs: usize,
    pub job_ms: u64,
    pub verify_interval_ms: f64,
}

pub async fn run(ctx: &Ctx) -> Result<Results> {
    sandbox::node_service::check_installed().map_err(|e| anyhow!(e))?;
    let pairs = if ctx.quick { 1 } else { ctx.reps.min(PAIRS) };
    let mut budgets = Vec::new();
    let mut verify_interval_ms = f64::NAN;
    let mut job_ms = 0;
    for b in BUDGETS {
        let mut r = BudgetResults { budget: b, orch: vec![], sentinel: vec![], errors: vec![] };
        for i in 0..pairs {
            // Interleaved, alternating which side goes first.
            for side in if i % 2 == 0 { [false, true] } else { [true, false] } {
                let tag = format!("{}-{}-{}", b.d_ms, i, if side { "s" } else { "o" });
                if side {
                    progress(format!("bullmq: {} pair {}/{pairs}: Sentinel", b.label(), i + 1));
                    match sentinel_once(ctx, b, &tag).await {
                        Ok(s) => {
                            progress(format!(
                                "  kill → first job {}, → health up {}, → new master named {}; lost {} of {} accepted",
                                opt_ms(s.seen.first_job_ms),
                                opt_ms(s.seen.health_up_ms),
                                opt_ms(s.switch_ms),
                                s.seen.lost(),
                                s.seen.accepted
                            ));
                            r.sentinel.push(s);
                        }
                        Err(e) => {
                            progress(format!("  Sentinel run failed: {e:#}"));
                            r.errors.push(format!("Sentinel pair {}: {e:#}", i + 1));
                        }
                    }
                } else {
                    progress(format!("bullmq: {} pair {}/{pairs}: orchestrator", b.label(), i + 1));
                    match orch_once(ctx, b, &tag).await {
                        Ok((o, vi, j)) => {
                            verify_interval_ms = vi;
                            job_ms = j;
                            progress(format!(
                                "  kill → first job {}, → health up {}, → Recovered {} (first failing probe {}, deploy created→live {}, verify ×{}), overhead {} (sampling as measured: {}); lost {} of {} accepted; {}",
                                opt_ms(o.seen.first_job_ms),
                                opt_ms(o.seen.health_up_ms),
                                fmt_ms0(o.total_ms),
                                opt_ms(o.first_fail_ms),
                                fmt_ms0(o.deploy_live_ms),
                                o.verify_attempts,
                                fmt_ms0(o.overhead_ms),
                                fmt_ms0(o.overhead_exact_ms),
                                o.seen.lost(),
                                o.seen.accepted,
                                o.outcome
                            ));
                            r.orch.push(o);
                        }
                        Err(e) => {
                            progress(format!("  orchestrator run failed: {e:#}"));
                            r.errors.push(format!("orchestrator pair {}: {e:#}", i + 1));
                        }
                    }
                }
            }
        }
        budgets.push(r);
    }
    if budgets.iter().all(|b| b.orch.is_empty() && b.sentinel.is_empty()) {
        bail!("no run succeeded: {}", budgets.iter().flat_map(|b| b.errors.iter().cloned()).collect::<Vec<_>>().join("; "));
    }
    Ok(Results { budgets, pairs, job_ms, verify_interval_ms })
}

/// `orchestrator_probe_failures_total` from serve's /metrics, summed over targets (0
/// before the first failure: the series appears with it).
async fn probe_failures(http: &reqwest::Client, url: &str) -> Option<u64> {
    let text = http.get(url).send().await.ok()?.text().await.ok()?;
    if !text.contains("orchestrator_self_healthy") {
        return None;
    }
    Some(
        text.lines()
            .filter(|l| l.starts_with("orchestrator_probe_failures_total"))
            .filter_map(|l| l.rsplit(' ').next()?.trim().parse::<u64>().ok())
            .sum(),
    )
}

fn opt_ms(v: Option<f64>) -> String {
    v.map(fmt_ms0).unwrap_or_else(|| "–".into())
}

fn epoch_ms() -> i64 {
    SystemTime::now().duration_since(UNIX_EPOCH).map(|d| d.as_millis() as i64).unwrap_or(0)
}

// ------------------------------------------------------------------ the job client

struct Job {
    name: String,
    sent_ms: i64,
    id: String,
    /// The last state read for it under its name (`None`: not read yet).
    state: Option<String>,
    finished_on: Option<i64>,
    /// Since when the service keeps saying the job does not exist.
    absent_since: Option<Instant>,
}

impl Job {
    fn resolved(&self) -> bool {
        matches!(self.state.as_deref(), Some("completed" | "failed"))
    }
}

struct Shared {
    jobs: Mutex<Vec<Job>>,
    submitted: AtomicUsize,
    in_flight: AtomicUsize,
    /// Epoch ms of the kill (0 until then), and the kill as an Instant.
    kill_ms: AtomicI64,
    kill_at: Mutex<Option<Instant>>,
    health_up_ms: Mutex<Option<f64>>,
    health_ok: AtomicBool,
    stop_submit: AtomicBool,
    stop_all: AtomicBool,
}

/// Submits a job every SUBMIT_EVERY_MS, reads the state of every unresolved job every
/// POLL_EVERY_MS, polls health every 20 ms. The same client for both sides.
struct Client {
    sh: Arc<Shared>,
    tasks: Vec<tokio::task::JoinHandle<()>>,
}

impl Client {
    fn start(base: String, tag: String) -> Client {
        let sh = Arc::new(Shared {
            jobs: Mutex::new(Vec::new()),
            submitted: AtomicUsize::new(0),
            in_flight: AtomicUsize::new(0),
            kill_ms: AtomicI64::new(0),
            kill_at: Mutex::new(None),
            health_up_ms: Mutex::new(None),
            health_ok: AtomicBool::new(false),
            stop_submit: AtomicBool::new(false),
            stop_all: AtomicBool::new(false),
        });
        let http = reqwest::Client::builder().timeout(Duration::from_secs(7)).build().expect("reqwest client");
        let mut tasks = Vec::new();
        // Submitter.
        {
            let (sh, http, base) = (sh.clone(), http.clone(), base.clone());
            tasks.push(tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_millis(SUBMIT_EVERY_MS));
                tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
                let mut seq = 0u64;
                while !sh.stop_submit.load(Ordering::Relaxed) {
                    tick.tick().await;
                    seq += 1;
                    let name = format!("bench-{tag}-{seq}");
                    let url = format!("{base}/api/v1/triggers/{name}?queue={QUEUE}");
                    let (sh, http) = (sh.clone(), http.clone());
                    sh.submitted.fetch_add(1, Ordering::Relaxed);
                    sh.in_flight.fetch_add(1, Ordering::Relaxed);
                    tokio::spawn(async move {
                        let sent_ms = epoch_ms();
                        let r = http.post(&url).header("x-api-key", SERVICE_KEY).json(&serde_json::json!({ "bench": seq })).send().await;
                        if let Ok(r) = r {
                            if r.status().is_success() {
                                if let Ok(v) = r.json::<Value>().await {
                                    if let Some(id) =
                                        v["jobId"].as_str().map(str::to_string).or_else(|| v["jobId"].as_u64().map(|n| n.to_string()))
                                    {
                                        sh.jobs.lock().unwrap().push(Job {
                                            name,
                                            sent_ms,
                                            id,
                                            state: None,
                                            finished_on: None,
                                            absent_since: None,
                                        });
                                    }
                                }
                            }
                        }
                        sh.in_flight.fetch_sub(1, Ordering::Relaxed);
                    });
                }
            }));
        }
        // Job-state poller.
        {
            let (sh, base) = (sh.clone(), base.clone());
            let http = reqwest::Client::builder().timeout(Duration::from_millis(1500)).build().expect("reqwest client");
            tasks.push(tokio::spawn(async move {
                while !sh.stop_all.load(Ordering::Relaxed) {
                    let todo: Vec<(usize, String, String)> = sh
                        .jobs
                        .lock()
                        .unwrap()
                        .iter()
                        .enumerate()
                        .filter(|(_, j)| !j.resolved())
                        .map(|(i, j)| (i, j.id.clone(), j.name.clone()))
                        .collect();
                    let mut set = tokio::task::JoinSet::new();
                    for (i, id, name) in todo {
                        let (http, url) = (http.clone(), format!("{base}/api/v1/jobs/{QUEUE}/{id}"));
                        set.spawn(async move {
                            let v: Option<Value> = match http.get(&url).header("x-api-key", SERVICE_KEY).send().await {
                                Ok(r) if r.status().is_success() => r.json().await.ok(),
                                _ => None,
                            };
                            (i, name, v)
                        });
                    }
                    while let Some(Ok((i, name, v))) = set.join_next().await {
                        let Some(v) = v else { continue };
                        let mut jobs = sh.jobs.lock().unwrap();
                        let j = &mut jobs[i];
                        let state = v["state"].as_str().unwrap_or("unknown");
                        // Job ids restart on a fresh Redis: another job under this id is
                        // not this one.
                        if state == "unknown" || v["name"].as_str() != Some(name.as_str()) {
                            j.absent_since.get_or_insert_with(Instant::now);
                        } else {
                            j.absent_since = None;
                            j.state = Some(state.to_string());
                            j.finished_on = v["finishedOn"].as_i64();
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(POLL_EVERY_MS)).await;
                }
            }));
        }
        // Health.
        {
            let sh = sh.clone();
            let http = reqwest::Client::builder().timeout(Duration::from_secs(2)).build().expect("reqwest client");
            let url = format!("{base}/api/v1/health");
            tasks.push(tokio::spawn(async move {
                let mut seen_down = false;
                while !sh.stop_all.load(Ordering::Relaxed) {
                    let up = http.get(&url).send().await.map(|r| r.status().is_success()).unwrap_or(false);
                    sh.health_ok.store(up, Ordering::Relaxed);
                    let kill_at = *sh.kill_at.lock().unwrap();
                    if let Some(k) = kill_at {
                        if !up {
                            seen_down = true;
                        } else if seen_down {
                            sh.health_up_ms.lock().unwrap().get_or_insert(ms(k.elapsed()));
                        }
                    }
                    tokio::time::sleep(Duration::from_millis(20)).await;
                }
            }));
        }
        Client { sh, tasks }
    }

    /// Until health is up and some job completed.
    async fn warm(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        loop {
            let done = self.sh.jobs.lock().unwrap().iter().any(|j| j.state.as_deref() == Some("completed"));
            if done && self.sh.health_ok.load(Ordering::Relaxed) {
                return Ok(());
            }
            if Instant::now() > deadline {
                bail!("the service did not complete a job with health up within {limit:?}");
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    fn mark_kill(&self) {
        self.sh.kill_ms.store(epoch_ms(), Ordering::SeqCst);
        *self.sh.kill_at.lock().unwrap() = Some(Instant::now());
    }

    fn first_job_ms(&self) -> Option<f64> {
        let k = self.sh.kill_ms.load(Ordering::SeqCst);
        if k == 0 {
            return None;
        }
        let jobs = self.sh.jobs.lock().unwrap();
        jobs.iter()
            .filter(|j| j.sent_ms >= k && j.state.as_deref() == Some("completed"))
            .filter_map(|j| j.finished_on)
            .min()
            .map(|f| (f - k) as f64)
    }

    fn health_up_ms(&self) -> Option<f64> {
        *self.sh.health_up_ms.lock().unwrap()
    }

    /// Waits until the service is back for this client: health up and a job submitted
    /// after the kill completed.
    async fn wait_recovered(&self, limit: Duration) -> Result<()> {
        let deadline = Instant::now() + limit;
        while self.first_job_ms().is_none() || self.health_up_ms().is_none() {
            if Instant::now() > deadline {
                bail!(
                    "within {limit:?}: first job after the kill {}, health up {}",
                    opt_ms(self.first_job_ms()),
                    opt_ms(self.health_up_ms())
                );
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(())
    }

    /// Stops submitting, waits for the answers in flight, then until every accepted job
    /// completed, failed or is gone for good (or LOST_DEADLINE), and counts.
    async fn finish(self) -> Seen {
        self.sh.stop_submit.store(true, Ordering::Relaxed);
        let deadline = Instant::now() + Duration::from_secs(8);
        while self.sh.in_flight.load(Ordering::Relaxed) > 0 && Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
        let deadline = Instant::now() + LOST_DEADLINE;
        loop {
            let open =
                self.sh.jobs.lock().unwrap().iter().any(|j| !j.resolved() && j.absent_since.is_none_or(|t| t.elapsed() < ABSENT_FOR));
            if !open || Instant::now() > deadline {
                break;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
        self.sh.stop_all.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
        let k = self.sh.kill_ms.load(Ordering::SeqCst);
        let mut s = Seen { first_job_ms: self.first_job_ms(), health_up_ms: self.health_up_ms(), ..Seen::default() };
        s.submitted = self.sh.submitted.load(Ordering::Relaxed);
        let jobs = self.sh.jobs.lock().unwrap();
        s.accepted = jobs.len();
        s.accepted_after_kill = jobs.iter().filter(|j| k > 0 && j.sent_ms >= k).count();
        for j in jobs.iter() {
            match j.state.as_deref() {
                Some("completed") => s.completed += 1,
                Some("failed") => s.lost_failed += 1,
                _ if j.absent_since.is_some() => s.lost_absent += 1,
                _ => s.lost_pending += 1,
            }
        }
        s
    }
}

impl Drop for Client {
    fn drop(&mut self) {
        self.sh.stop_all.store(true, Ordering::Relaxed);
        self.sh.stop_submit.store(true, Ordering::Relaxed);
        for t in &self.tasks {
            t.abort();
        }
    }
}

// ------------------------------------------------------------------ the orchestrator side

/// One failover by the orchestrator on the BullMQ service. Also returns the playbook's
/// verify_interval and the service's job time.
async fn orch_once(ctx: &Ctx, b: Budget, tag: &str) -> Result<(OrchRun, f64, u64)> {
    let world = World::start_with(ctx, |c| {
        c.service_kind = sandbox::ServiceKind::Bullmq;
        c.deploy_steps_ms = DEPLOY_STEPS_MS;
    })
    .await?;
    let edits = b.edits();
    let refs: Vec<(&str, &str)> = edits.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
    let playbook = world.playbook_file(ctx, &refs)?;
    let pb = world.load(&playbook)?;
    let db = world.journal_path();
    let (mut serve, serve_url, _) = world.serve(ctx, &db, &playbook, true)?;
    let client = Client::start(world.sandbox.service_url(), tag.to_string());
    client
        .warm(Duration::from_secs(30))
        .await
        .with_context(|| format!("service log: {}", world.sandbox.node_service().map(|n| n.log_tail(6)).unwrap_or_default()))?;
    tokio::time::sleep(b.before_kill()).await;

    // Kill → the watch loop's first failing probe, from serve's /metrics (polled every
    // 5 ms): the sampling wait detection actually had (at most one watch.interval).
    let metrics_url = format!("{serve_url}/metrics");
    let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build()?;
    let before = probe_failures(&http, &metrics_url).await.context("reading serve's /metrics")?;
    let first_fail = {
        let kill_at = Instant::now();
        tokio::spawn(async move {
            while kill_at.elapsed() < Duration::from_secs(30) {
                if probe_failures(&http, &metrics_url).await.is_some_and(|n| n > before) {
                    return Some(ms(kill_at.elapsed()));
                }
                tokio::time::sleep(Duration::from_millis(5)).await;
            }
            None
        })
    };
    let t0_utc = Utc::now();
    client.mark_kill();
    world.primary.kill();

    let journal = Journal::open_existing(&db).await?;
    let deadline = Instant::now() + Duration::from_secs(90);
    let inc = loop {
        if let Some(inc) = journal.incidents(1).await?.into_iter().next() {
            if inc.outcome.is_some() {
                break inc;
            }
        }
        if Instant::now() > deadline {
            bail!("no incident ended within 90 s of the kill");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    };
    let recovered = client.wait_recovered(Duration::from_secs(30)).await;
    let seen = client.finish().await;
    let first_fail_ms = first_fail.await.ok().flatten();
    serve.stop(Duration::from_secs(10));
    recovered?;

    let opened = parse_ts(&inc.opened_at).ok_or_else(|| anyhow!("bad opened_at"))?;
    let rows = journal.transitions(&inc.id).await?;
    let split = split_steps(&rows, opened, t0_utc);
    let first_verify_failed: Vec<String> = rows
        .iter()
        .find(|r| r.event == "verify_checked")
        .and_then(|r| serde_json::from_str::<orchestrator::machine::Event>(&r.observations).ok())
        .map(|ev| match ev {
            orchestrator::machine::Event::VerifyChecked { checks, .. } => {
                checks.into_iter().filter(|c| !c.holds).map(|c| format!("{}: {}", c.item, c.observed)).collect()
            }
            _ => vec![],
        })
        .unwrap_or_default();
    let alert = journal.alerts(&inc.id).await?.into_iter().find(|a| a.source == "watch").map(|a| a.summary).unwrap_or_default();
    journal.close().await;

    // The platform's deploy time, created → live, of the deploys made after the kill.
    let stats = world.sandbox.platform().stats();
    let mut deploy_live_ms = 0.0;
    let mut deploys = 0;
    for d in &stats.deploys {
        let (Some(c), Some(f)) = (parse_ts(&d.created_at), d.finished_at.as_deref().and_then(parse_ts)) else { continue };
        if c >= t0_utc {
            deploys += 1;
            deploy_live_ms += since(f, c);
        }
    }
    let total_ms = since(split.end, t0_utc);
    let vi = ms(pb.thresholds.verify_interval);
    let verify_waits_ms = vi * split.verify_attempts.saturating_sub(1) as f64;
    let waits_ms = (b.ping_fail_for_ms + b.interval_ms + b.confirm_window_ms) as f64 + deploy_live_ms + verify_waits_ms;
    let sampling = first_fail_ms.unwrap_or(b.interval_ms as f64);
    let waits_exact_ms = waits_ms - b.interval_ms as f64 + sampling;
    let run = OrchRun {
        seen,
        steps: split.steps,
        total_ms,
        deploy_live_ms,
        deploys,
        verify_attempts: split.verify_attempts,
        verify_waits_ms,
        waits_ms,
        overhead_ms: total_ms - waits_ms,
        first_fail_ms,
        overhead_exact_ms: total_ms - waits_exact_ms,
        outcome: inc.outcome.clone().unwrap_or_default(),
        first_verify_failed,
        alert,
    };
    let job_ms = world.job_ms;
    world.sandbox.shutdown().await;
    Ok((run, vi, job_ms))
}

// ------------------------------------------------------------------ the Sentinel side

/// Master + replica + three sentinels, ready: every sentinel sees the replica and the
/// two others.
fn sentinel_setup(d_ms: u64) -> Result<(RedisServer, RedisServer, Sentinels)> {
    let master = RedisServer::start()?;
    let mport = master.port().to_string();
    let replica = RedisServer::start_with(&["--replicaof", "127.0.0.1", &mport])?;
    wait_for("the replica to sync", Duration::from_secs(20), || {
        query(replica.port(), &["INFO", "replication"])
            .map(|r| info_field(&r.text(), "master_link_status").as_deref() == Some("up"))
            .unwrap_or(false)
    })?;
    let sentinels = start_sentinels_with(master.port(), d_ms, FAILOVER_TIMEOUT_MS)?;
    wait_for("three sentinels that know the replica and each other", Duration::from_secs(30), || {
        sentinels.ports.iter().all(|p| {
            query(*p, &["SENTINEL", "MASTER", SENTINEL_NAME])
                .map(|r| {
                    pairs_field(&r, "num-slaves").as_deref() == Some("1")
                        && pairs_field(&r, "num-other-sentinels").as_deref() == Some("2")
                        && pairs_field(&r, "flags").as_deref() == Some("master")
                })
                .unwrap_or(false)
        })
    })?;
    Ok((master, replica, sentinels))
}

async fn sentinel_once(ctx: &Ctx, b: Budget, tag: &str) -> Result<SentinelRun> {
    let (master, replica, mut sentinels) = tokio::task::spawn_blocking(move || sentinel_setup(b.d_ms)).await??;
    let dir = ctx.tempdir("bench-bullmq-sentinel-")?;
    let port = free_port()?;
    let log = dir.path().join("service.log");
    let out = std::fs::File::create(&log)?;
    let err = out.try_clone()?;
    let list: Vec<String> = sentinels.ports.iter().map(|p| format!("127.0.0.1:{p}")).collect();
    // The same service and settings the sandbox runs (sandbox/src/node_service.rs),
    // with the sentinels instead of REDIS_URL.
    let mut node = Proc {
        child: Command::new("node")
            .arg("server.js")
            .current_dir(sandbox::node_service::service_dir())
            .env("PORT", port.to_string())
            .env("HOST", "127.0.0.1")
            .env_remove("REDIS_URL")
            .env("REDIS_SENTINELS", list.join(","))
            .env("REDIS_SENTINEL_NAME", SENTINEL_NAME)
            .env("API_KEY", SERVICE_KEY)
            .env("WORKERS_ENABLED", "true")
            .env("WORKERS_PER_QUEUE", "2")
            .env("JOB_MS", "20")
            .env("QUEUES", sandbox::queue::QUEUES.join(","))
            .env("EXIT_WITH_PARENT", "true")
            .env("REDIS_CONNECT_DELAY_MS", "0")
            .env_remove("NODE_OPTIONS")
            .env_remove("COMMAND_TIMEOUT_MS")
            .env_remove("PING_INTERVAL_MS")
            .env_remove("REQUEST_TIMEOUT_MS")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err))
            .spawn()
            .context("starting the BullMQ service (node)")?,
    };
    let tail = || std::fs::read_to_string(&log).unwrap_or_default().lines().rev().take(6).collect::<Vec<_>>().join(" | ");
    let base = format!("http://127.0.0.1:{port}");
    {
        let http = reqwest::Client::builder().timeout(Duration::from_millis(500)).build()?;
        let deadline = Instant::now() + sandbox::node_service::LIVENESS_DEADLINE;
        loop {
            if http.get(format!("{base}/api/v1/health/liveness")).send().await.is_ok_and(|r| r.status().is_success()) {
                break;
            }
            if node.child.try_wait()?.is_some() || Instant::now() > deadline {
                bail!("the BullMQ service did not come up: {}", tail());
            }
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    let client = Client::start(base, tag.to_string());
    client.warm(Duration::from_secs(30)).await.with_context(|| format!("service log: {}", tail()))?;
    tokio::time::sleep(b.before_kill()).await;

    // When does a sentinel first name the new master? (Polled every 10 ms.)
    let original = master.port();
    let stop = Arc::new(AtomicBool::new(false));
    let sport = sentinels.ports[0];
    let kill_at = Instant::now();
    let watcher = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            while !stop.load(Ordering::Relaxed) {
                let port = query(sport, &["SENTINEL", "get-master-addr-by-name", SENTINEL_NAME])
                    .ok()
                    .and_then(|r| r.items().get(1).and_then(|p| p.text().parse::<u16>().ok()));
                if port.is_some_and(|p| p != original) {
                    return Some(ms(kill_at.elapsed()));
                }
                std::thread::sleep(Duration::from_millis(10));
            }
            None
        })
    };
    client.mark_kill();
    master.kill();
    let recovered = client.wait_recovered(Duration::from_secs(60)).await;
    let seen = client.finish().await;
    stop.store(true, Ordering::Relaxed);
    let switch_ms = tokio::task::spawn_blocking(move || watcher.join().ok().flatten()).await.ok().flatten();
    node.stop(Duration::from_secs(3));
    for p in sentinels.procs.iter_mut() {
        p.stop(Duration::from_secs(2));
    }
    drop(replica);
    drop(master);
    recovered.with_context(|| format!("service log: {}", tail()))?;
    Ok(SentinelRun { seen, switch_ms })
}

/// Medians over a field (NaN if none).
pub fn med<T>(xs: &[T], f: impl Fn(&T) -> Option<f64>) -> f64 {
    median(&xs.iter().filter_map(f).collect::<Vec<_>>())
}

pub fn worst<T>(xs: &[T], f: impl Fn(&T) -> Option<f64>) -> f64 {
    max(&xs.iter().filter_map(f).collect::<Vec<_>>())
}

/// The steps' names for the report, STEPS order.
pub fn step_names() -> &'static [&'static str] {
    STEPS
}
