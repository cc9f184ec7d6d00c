//! Benchmark 9: several `serve` instances sharing one PostgreSQL journal.
//!
//! 1. Takeover: three instances on a fresh database; SIGKILL the leader; kill → another
//!    instance answers 200 on `/leader` (polled every 20 ms), under a short lease and
//!    under the defaults.
//! 2. An incident (primary Redis SIGKILLed, the alert sent to a follower) from the kill to
//!    Recovered, with the leader left alone and with the leader SIGKILLed by its own fault
//!    injection on its deploy intent (`ORCH_FAULT_CRASH_AT=intent:deploy`).
//! 3. The journal's cost per transition (the replay of `journal.rs`) on SQLite and on
//!    PostgreSQL, and an alert batch write on both.
//!
//! Every database is `orch_bench_<random>` on the local PostgreSQL (`ORCH_BENCH_PG`,
//! default `postgres://postgres@127.0.0.1:5432`), created with `psql` and dropped at the
//! end of its run.

use crate::failover::Recorded;
use crate::util::*;
use anyhow::{anyhow, bail, Context, Result};
use chrono::Utc;
use orchestrator::journal::leader::{LeaderStore, Term};
use orchestrator::journal::prelude::*;
use orchestrator::journal::{Journal, NewAlert};
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

/// The playbook as `tests/leader.rs` runs it: a 4 s verify window, so an incident is short.
pub const EDITS: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];

/// The fault injection point the leader dies at in the incident benchmark.
pub const CRASH_AT: &str = "intent:deploy";

/// Transitions timed per backend in the journal-cost part (whole replayed incidents).
pub const TRANSITIONS: usize = 200;
/// Alerts per batch, and batches, in the alert-batch part.
pub const BATCH: usize = 100;
pub const BATCHES: usize = 20;

/// Polling period for `/leader` and the journal.
pub const POLL_MS: u64 = 20;

#[derive(Debug, Clone, Copy)]
pub struct Lease {
    pub ttl_ms: u64,
    pub renew_ms: u64,
    pub retry_ms: u64,
}

impl Lease {
    pub const SHORT: Lease = Lease { ttl_ms: 3000, renew_ms: 500, retry_ms: 1000 };
    pub const DEFAULT: Lease = Lease { ttl_ms: 15000, renew_ms: 3000, retry_ms: 4000 };

    pub fn args(&self) -> Vec<String> {
        self.label().split(' ').map(str::to_string).collect()
    }

    /// The flags as written on the command line, in seconds where whole.
    pub fn label(&self) -> String {
        let f = |ms: u64| if ms % 1000 == 0 { format!("{}s", ms / 1000) } else { format!("{ms}ms") };
        format!("--leader-ttl {} --leader-renew {} --leader-retry-timeout {}", f(self.ttl_ms), f(self.renew_ms), f(self.retry_ms))
    }

    pub fn is_default(&self) -> bool {
        self.ttl_ms == Lease::DEFAULT.ttl_ms && self.renew_ms == Lease::DEFAULT.renew_ms && self.retry_ms == Lease::DEFAULT.retry_ms
    }
}

/// One leader kill.
#[derive(Debug, Clone)]
pub struct Takeover {
    /// SIGKILL → a surviving instance answers 200 on `/leader`.
    pub takeover_ms: f64,
    /// The lease's remaining life at the kill, as the database reported it to a
    /// follower just before (so takeover − this = the follower's own delay after expiry).
    pub lease_left_ms: Option<f64>,
    pub term_before: i64,
    pub term_after: i64,
}

pub struct TakeoverRow {
    pub lease: Lease,
    pub runs: Vec<Takeover>,
    pub error: Option<String>,
}

/// One incident from the kill of the primary Redis.
#[derive(Debug, Clone)]
pub struct IncidentRun {
    /// Kill → the alert accepted (202) by a follower (includes waiting for the service
    /// to report Redis down, as the alert sender would).
    pub alert_ms: f64,
    /// Kill → the incident seen Recovered (or ended otherwise) in the journal.
    pub total_ms: f64,
    pub outcome: String,
    /// With the crash: kill → the leader process gone (SIGKILLed by itself at the point).
    pub crash_ms: Option<f64>,
    /// With the crash: the leader gone → a follower answers 200 on `/leader`.
    pub takeover_ms: Option<f64>,
    /// With the crash: whether the leader died of SIGKILL (the fault point was reached).
    pub killed_by_signal: Option<bool>,
}

pub struct IncidentRows {
    pub lease: Lease,
    pub plain: Vec<IncidentRun>,
    pub killed: Vec<IncidentRun>,
    pub errors: Vec<String>,
}

pub struct JournalCost {
    pub backend: String,
    pub record_ms: Vec<f64>,
    /// One `record_alerts` of BATCH alerts, each.
    pub batch_ms: Vec<f64>,
}

pub struct JournalRows {
    pub rows: Vec<JournalCost>,
    pub transitions_per_incident: usize,
    pub incidents: usize,
    pub error: Option<String>,
}

pub struct Results {
    pub takeover: Vec<TakeoverRow>,
    pub incident: Option<IncidentRows>,
    pub journal: Option<JournalRows>,
    pub pg_version: String,
    pub pg_settings: String,
    pub reps: usize,
    pub started: String,
    pub commit: String,
    pub load: String,
}

// ------------------------------------------------------------------ PostgreSQL

pub fn pg_server() -> String {
    std::env::var("ORCH_BENCH_PG").unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432".into())
}

fn psql(sql: &str) -> Result<String> {
    let out = Command::new("psql")
        .arg(format!("{}/postgres", pg_server().trim_end_matches('/')))
        .args(["-v", "ON_ERROR_STOP=1", "-qAtc", sql])
        .stdin(Stdio::null())
        .output()
        .context("running psql (PostgreSQL's client is needed for this benchmark)")?;
    if !out.status.success() {
        bail!("psql {sql:?}: {}", String::from_utf8_lossy(&out.stderr).trim());
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

/// A database of its own, dropped (WITH FORCE: a killed instance's connections may
/// linger) on drop.
pub struct PgDb {
    name: String,
}

impl PgDb {
    pub fn create() -> Result<PgDb> {
        let name = format!("orch_bench_{:016x}", rand_u64());
        psql(&format!("CREATE DATABASE {name}"))?;
        Ok(PgDb { name })
    }
    pub fn url(&self) -> String {
        format!("{}/{}", pg_server().trim_end_matches('/'), self.name)
    }
}

impl Drop for PgDb {
    fn drop(&mut self) {
        if let Err(e) = psql(&format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name)) {
            progress(format!("leader: could not drop database {}: {e:#}", self.name));
        }
    }
}

fn rand_u64() -> u64 {
    use std::hash::{BuildHasher, Hasher};
    let mut h = std::collections::hash_map::RandomState::new().build_hasher();
    h.write_u128(std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos()).unwrap_or(0));
    h.write_u32(std::process::id());
    h.finish()
}

// ------------------------------------------------------------------ instances

struct Instance {
    proc_: Proc,
    url: String,
}

impl Instance {
    fn start(ctx: &Ctx, world: &World, db: &str, playbook: &Path, lease: Lease, crash_at: Option<&str>) -> Result<Instance> {
        let mut cmd = Command::new(ctx.orchestrator());
        cmd.args(["--db", db, "serve", "--playbook"])
            .arg(playbook)
            .args(["--listen", "127.0.0.1:0", "--no-watch"])
            .args(lease.args())
            .envs(&world.env)
            .env("ORCH_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .env("ORCH_APPROVER_TOKENS", format!("oncall={APPROVER_TOKEN}"))
            .env("ORCH_LOG", "warn")
            .env_remove("ORCH_FAULT_CRASH_AT")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(world.dir.path().join(format!("serve-{}.log", rand_u64())))?);
        if let Some(p) = crash_at {
            cmd.env("ORCH_FAULT_CRASH_AT", p);
        }
        let (proc_, url, _) = spawn_listening(cmd)?;
        Ok(Instance { proc_, url })
    }

    /// `GET /leader`: (200?, body), None when it does not answer.
    async fn leader(&self, http: &reqwest::Client) -> Option<(bool, serde_json::Value)> {
        let r = http.get(format!("{}/leader", self.url)).send().await.ok()?;
        let ok = r.status() == 200;
        Some((ok, r.json().await.ok()?))
    }

    fn gone(&mut self) -> Option<std::process::ExitStatus> {
        self.proc_.child.try_wait().ok().flatten()
    }
}

fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_millis(1000)).build().expect("an HTTP client")
}

/// Waits until exactly one of `insts` answers 200 on `/leader`: its index and term.
async fn one_leader(http: &reqwest::Client, insts: &[&Instance], limit: Duration) -> Result<(usize, i64)> {
    let deadline = Instant::now() + limit;
    loop {
        let mut leaders = Vec::new();
        for (i, inst) in insts.iter().enumerate() {
            if let Some((true, body)) = inst.leader(http).await {
                leaders.push((i, body["term"].as_i64().unwrap_or(0)));
            }
        }
        if leaders.len() > 1 {
            bail!("two leaders at once: {leaders:?}");
        }
        if let [one] = leaders[..] {
            return Ok(one);
        }
        if Instant::now() > deadline {
            bail!("no leader within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

/// `GET /leader` on both survivors at the same moment: the term of one that leads.
async fn leader_of_two(http: &reqwest::Client, x: &Instance, y: &Instance) -> Option<i64> {
    let (p, q) = tokio::join!(x.leader(http), y.leader(http));
    [p, q].into_iter().flatten().find(|(ok, _)| *ok).map(|(_, body)| body["term"].as_i64().unwrap_or(0))
}

/// Polls both survivors every POLL_MS until one answers 200 on `/leader`: its term.
async fn first_leader(http: &reqwest::Client, x: &Instance, y: &Instance, limit: Duration) -> Result<i64> {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(term) = leader_of_two(http, x, y).await {
            return Ok(term);
        }
        if Instant::now() > deadline {
            bail!("no instance took over within {limit:?}");
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
}

// ------------------------------------------------------------------ 1. takeover

async fn takeover_once(ctx: &Ctx, world: &World, playbook: &Path, lease: Lease) -> Result<Takeover> {
    let db = PgDb::create()?;
    let url = db.url();
    let http = http();
    let mut a = Instance::start(ctx, world, &url, playbook, lease, None)?;
    one_leader(&http, &[&a], Duration::from_secs(20)).await.context("the first instance to lead")?;
    let b = Instance::start(ctx, world, &url, playbook, lease, None)?;
    let c = Instance::start(ctx, world, &url, playbook, lease, None)?;
    let (i, term_before) = one_leader(&http, &[&a, &b, &c], Duration::from_secs(20)).await?;
    if i != 0 {
        bail!("the first instance started should lead, instance {i} does");
    }
    // Let the followers settle into their retry rhythm (one renewal period at least).
    tokio::time::sleep(Duration::from_millis(lease.renew_ms + 300)).await;
    let lease_left_ms = b.leader(&http).await.and_then(|(_, body)| body["lease"]["expires_in_ms"].as_f64()).filter(|_| a.gone().is_none());
    let t0 = Instant::now();
    signal(a.proc_.pid(), libc::SIGKILL);
    let term_after = first_leader(&http, &b, &c, Duration::from_millis(lease.ttl_ms * 3 + 10_000)).await?;
    let takeover_ms = ms(t0.elapsed());
    let _ = a.proc_.child.wait();
    for mut inst in [b, c] {
        inst.proc_.stop(Duration::from_secs(5));
    }
    drop(db);
    if term_after <= term_before {
        bail!("the new leader's term {term_after} is not above {term_before}");
    }
    Ok(Takeover { takeover_ms, lease_left_ms, term_before, term_after })
}

async fn takeover(ctx: &Ctx, world: &World, playbook: &Path, lease: Lease) -> TakeoverRow {
    let mut runs = Vec::new();
    let mut error = None;
    for i in 0..ctx.reps {
        match takeover_once(ctx, world, playbook, lease).await {
            Ok(r) => {
                progress(format!(
                    "  {}/{}: kill → new leader {} (lease left at the kill {}; term {} → {})",
                    i + 1,
                    ctx.reps,
                    fmt_ms(r.takeover_ms),
                    r.lease_left_ms.map(fmt_ms0).unwrap_or_else(|| "?".into()),
                    r.term_before,
                    r.term_after
                ));
                runs.push(r)
            }
            Err(e) => {
                progress(format!("  {}/{}: FAILED: {e:#}", i + 1, ctx.reps));
                error = Some(format!("{e:#}"));
            }
        }
    }
    TakeoverRow { lease, runs, error }
}

// ------------------------------------------------------------------ 2. incident

async fn incident_once(ctx: &Ctx, lease: Lease, crash: bool) -> Result<IncidentRun> {
    let world = World::start(ctx).await?;
    let playbook = world.playbook_file(ctx, EDITS)?;
    let db = PgDb::create()?;
    let url = db.url();
    let http = http();
    let mut a = Instance::start(ctx, &world, &url, &playbook, lease, crash.then_some(CRASH_AT))?;
    one_leader(&http, &[&a], Duration::from_secs(20)).await.context("the first instance to lead")?;
    let b = Instance::start(ctx, &world, &url, &playbook, lease, None)?;
    let c = Instance::start(ctx, &world, &url, &playbook, lease, None)?;
    let (i, _) = one_leader(&http, &[&a, &b, &c], Duration::from_secs(20)).await?;
    if i != 0 {
        bail!("the first instance started should lead, instance {i} does");
    }
    let j = Journal::open_existing(&url).await?;
    let health = format!("{}/api/v1/health", world.sandbox.service_url());

    let t0 = Instant::now();
    world.primary.kill();
    // As the alert sender would: the service reports Redis down, then the alert goes
    // to a follower (which journals it and opens the incident for the leader).
    loop {
        if http.get(&health).send().await.map(|r| r.status().as_u16() == 503).unwrap_or(false) {
            break;
        }
        if t0.elapsed() > Duration::from_secs(10) {
            bail!("the service did not report Redis down within 10 s");
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    }
    let body = serde_json::json!({"summary": "redis down", "fingerprint": format!("bench-leader-{}", rand_u64())});
    let r = http.post(format!("{}/webhooks/generic", b.url)).bearer_auth(WEBHOOK_TOKEN).json(&body).send().await?;
    if r.status() != 202 {
        bail!("the follower answered {} to the alert", r.status());
    }
    let alert_ms = ms(t0.elapsed());

    let (mut crash_ms, mut takeover_ms, mut killed_by_signal) = (None, None, None);
    let deadline = Instant::now() + Duration::from_secs(90);
    let inc = loop {
        if crash {
            if crash_ms.is_none() {
                if let Some(st) = a.gone() {
                    use std::os::unix::process::ExitStatusExt;
                    crash_ms = Some(ms(t0.elapsed()));
                    killed_by_signal = Some(st.signal() == Some(libc::SIGKILL));
                }
            } else if takeover_ms.is_none() {
                if leader_of_two(&http, &b, &c).await.is_some() {
                    takeover_ms = Some(ms(t0.elapsed()) - crash_ms.unwrap_or(0.0));
                }
            }
        }
        if let Some(inc) = j.incidents(1).await?.into_iter().next() {
            if inc.outcome.is_some() {
                break inc;
            }
        }
        if Instant::now() > deadline {
            bail!("no incident ended within 90 s of the kill");
        }
        tokio::time::sleep(Duration::from_millis(POLL_MS)).await;
    };
    let total_ms = ms(t0.elapsed());
    j.close().await;
    a.proc_.stop(Duration::from_secs(5));
    for mut inst in [b, c] {
        inst.proc_.stop(Duration::from_secs(5));
    }
    drop(db);
    world.sandbox.shutdown().await;
    if crash && crash_ms.is_none() {
        bail!("the leader did not reach its crash point {CRASH_AT} (the incident ended {:?} with it alive)", inc.outcome);
    }
    Ok(IncidentRun { alert_ms, total_ms, outcome: inc.outcome.unwrap_or_default(), crash_ms, takeover_ms, killed_by_signal })
}

async fn incident(ctx: &Ctx, lease: Lease) -> IncidentRows {
    let mut rows = IncidentRows { lease, plain: vec![], killed: vec![], errors: vec![] };
    for i in 0..ctx.reps {
        for crash in [false, true] {
            let what = if crash { format!("leader SIGKILLed at {CRASH_AT}") } else { "leader not killed".to_string() };
            match incident_once(ctx, lease, crash).await {
                Ok(r) => {
                    progress(format!(
                        "  {}/{} {what}: kill → {} {} (alert accepted at {}{})",
                        i + 1,
                        ctx.reps,
                        r.outcome,
                        fmt_ms(r.total_ms),
                        fmt_ms(r.alert_ms),
                        match (r.crash_ms, r.takeover_ms) {
                            (Some(c), Some(t)) => format!(", leader died at {}, takeover {} later", fmt_ms(c), fmt_ms(t)),
                            _ => String::new(),
                        }
                    ));
                    let runs = if crash { &mut rows.killed } else { &mut rows.plain };
                    runs.push(r);
                }
                Err(e) => {
                    progress(format!("  {}/{} {what}: FAILED: {e:#}", i + 1, ctx.reps));
                    rows.errors.push(format!("{what}: {e:#}"));
                }
            }
        }
    }
    rows
}

// ------------------------------------------------------------------ 3. journal cost

async fn journal_cost_on(label: &str, j: &Journal, rec: &Recorded, n: usize) -> Result<JournalCost> {
    let (record_ms, outcome) = crate::journal::replay(j, rec, n, |_| {}).await?;
    if outcome.is_empty() {
        bail!("the replay reached no state");
    }
    let target = rec.playbook.redis.primary.endpoint();
    let mut batch_ms = Vec::with_capacity(BATCHES);
    for b in 0..BATCHES {
        let rows: Vec<(NewAlert, Option<String>, &str)> = (0..BATCH)
            .map(|i| {
                (
                    NewAlert {
                        source: "generic".into(),
                        fingerprint: format!("bench-batch-{b}-{i}"),
                        status: "firing".into(),
                        target: target.clone(),
                        summary: "redis down".into(),
                    },
                    None,
                    "ignored",
                )
            })
            .collect();
        let t = Instant::now();
        j.record_alerts(&rows, Utc::now()).await?;
        batch_ms.push(ms(t.elapsed()));
    }
    progress(format!(
        "  {label}: transition median {} p90 {} ({} transitions); {BATCH}-alert batch median {}",
        fmt_ms(median(&record_ms)),
        fmt_ms(pct(&record_ms, 90.0)),
        record_ms.len(),
        fmt_ms(median(&batch_ms))
    ));
    Ok(JournalCost { backend: label.to_string(), record_ms, batch_ms })
}

async fn journal_cost(ctx: &Ctx, rec: &Recorded) -> Result<JournalRows> {
    let per = rec.events.len().max(1);
    let n = TRANSITIONS.div_ceil(per);
    let mut rows = Vec::new();
    // SQLite: a file, WAL, synchronous = FULL (as `Journal::open` sets it).
    let dir = ctx.tempdir("bench-leader-journal-")?;
    let j = Journal::open(dir.path().join("journal.db")).await?;
    rows.push(journal_cost_on("SQLite (file, WAL, synchronous = FULL)", &j, rec, n).await?);
    j.close().await;
    // PostgreSQL, unfenced: the journal as one instance alone writes it.
    let db = PgDb::create()?;
    let j = Journal::open(db.url()).await?;
    rows.push(journal_cost_on("PostgreSQL (synchronous_commit = on), unfenced", &j, rec, n).await?);
    j.close().await;
    drop(db);
    // PostgreSQL as the leader of several writes it: each write fenced by its term
    // (the lease row read inside the transaction).
    let db = PgDb::create()?;
    let j = Journal::open(db.url()).await?;
    let holder = format!("bench:{}:leader", std::process::id());
    let ttl = Duration::from_secs(3600);
    let term =
        j.acquire_lease(&holder, "127.0.0.1:0", ttl).await?.ok_or_else(|| anyhow!("could not take the lease on a fresh database"))?;
    let fenced = j.fenced_by(std::sync::Arc::new(Term::new(term, &holder, tokio::time::Instant::now() + ttl)));
    rows.push(journal_cost_on("PostgreSQL (synchronous_commit = on), fenced by the leader's term", &fenced, rec, n).await?);
    j.close().await;
    drop(db);
    Ok(JournalRows { rows, transitions_per_incident: per, incidents: n, error: None })
}

// ------------------------------------------------------------------ the section

pub async fn run(ctx: &Ctx, recorded: Option<&Recorded>) -> Result<Results> {
    let pg_version = psql("SHOW server_version").context("the local PostgreSQL")?;
    let pg_settings = psql(
        "SELECT string_agg(name || ' = ' || setting, ', ' ORDER BY name) FROM pg_settings \
         WHERE name IN ('synchronous_commit', 'fsync', 'wal_sync_method', 'shared_buffers')",
    )?;
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let commit = Command::new("git")
        .args(["-C", &ctx.root.to_string_lossy(), "rev-parse", "--short", "HEAD"])
        .output()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .unwrap_or_default();
    let mut res = Results {
        takeover: vec![],
        incident: None,
        journal: None,
        pg_version,
        pg_settings,
        reps: ctx.reps,
        started: Utc::now().format("%Y-%m-%d %H:%M UTC").to_string(),
        commit,
        load,
    };

    // 1. Takeover. One world (Redis, the sandbox) for the playbook's environment; no
    // incident happens in it.
    {
        let world = World::start(ctx).await?;
        let playbook = world.playbook_file(ctx, EDITS)?;
        for lease in [Lease::SHORT, Lease::DEFAULT] {
            progress(format!("leader: takeover after SIGKILL of the leader, {} ({} runs)", lease.label(), ctx.reps));
            res.takeover.push(takeover(ctx, &world, &playbook, lease).await);
        }
        world.sandbox.shutdown().await;
    }

    // 2. An incident, with and without the leader's death.
    progress(format!("leader: kill → Recovered on three instances, leader kept vs SIGKILLed at {CRASH_AT} ({} runs each)", ctx.reps));
    res.incident = Some(incident(ctx, Lease::SHORT).await);

    // 3. The journal's cost per transition.
    progress("leader: journal cost per transition, SQLite beside PostgreSQL");
    let owned;
    let rec = match recorded {
        Some(r) => Some(r),
        None => {
            progress("  recording one real incident to replay (SQLite, one failover)");
            let one = Ctx { reps: 1, ..ctx.clone() };
            match crate::failover::run_orchestrator_only(&one).await {
                Ok(r) => {
                    owned = r;
                    Some(&owned)
                }
                Err(e) => {
                    res.journal = Some(JournalRows {
                        rows: vec![],
                        transitions_per_incident: 0,
                        incidents: 0,
                        error: Some(format!("recording an incident to replay: {e:#}")),
                    });
                    None
                }
            }
        }
    };
    if let Some(rec) = rec {
        res.journal = Some(match journal_cost(ctx, rec).await {
            Ok(r) => r,
            Err(e) => {
                progress(format!("  FAILED: {e:#}"));
                JournalRows { rows: vec![], transitions_per_incident: rec.events.len(), incidents: 0, error: Some(format!("{e:#}")) }
            }
        });
    }
    Ok(res)
}

/// Whether any part failed (the section still reports what ran).
pub fn errors(r: &Results) -> Vec<String> {
    let mut out = Vec::new();
    for t in &r.takeover {
        if let Some(e) = &t.error {
            out.push(format!("takeover ({}): {e}", t.lease.label()));
        }
    }
    if let Some(i) = &r.incident {
        out.extend(i.errors.iter().map(|e| format!("incident: {e}")));
    }
    if let Some(e) = r.journal.as_ref().and_then(|j| j.error.clone()) {
        out.push(format!("journal cost: {e}"));
    }
    out
}
