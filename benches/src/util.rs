//! Statistics, processes, the sandbox world, the machine description.

use anyhow::{anyhow, bail, Context, Result};
use sandbox::{RedisServer, Sandbox, SandboxConfig};
use std::collections::HashMap;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const SERVICE_KEY: &str = "bench-service-key-3c9a";
pub const PLATFORM_KEY: &str = "bench-platform-key-7e21";
pub const WEBHOOK_TOKEN: &str = "bench-webhook-token-5b0d2f";
pub const APPROVER_TOKEN: &str = "bench-approver-token-91ce4a";

/// Everything the harness needs to find.
#[derive(Clone)]
pub struct Ctx {
    pub root: PathBuf,
    pub bin_dir: PathBuf,
    pub reps: usize,
    pub quick: bool,
    /// Where temporary journals and Redis files go (a disk, so fsync costs what it costs).
    pub tmp: PathBuf,
}

impl Ctx {
    pub fn orchestrator(&self) -> PathBuf {
        self.bin_dir.join("orchestrator")
    }
    pub fn tempdir(&self, prefix: &str) -> Result<tempfile::TempDir> {
        Ok(tempfile::Builder::new().prefix(prefix).tempdir_in(&self.tmp)?)
    }
}

pub fn progress(msg: impl AsRef<str>) {
    eprintln!("[bench {}] {}", chrono::Local::now().format("%H:%M:%S"), msg.as_ref());
}

// ------------------------------------------------------------------ statistics

/// Nearest-rank percentile of a sample (p in 0..=100).
pub fn pct(xs: &[f64], p: f64) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let rank = ((p / 100.0) * v.len() as f64).ceil().max(1.0) as usize;
    v[rank.min(v.len()) - 1]
}

pub fn median(xs: &[f64]) -> f64 {
    if xs.is_empty() {
        return f64::NAN;
    }
    let mut v = xs.to_vec();
    v.sort_by(|a, b| a.partial_cmp(b).unwrap());
    let n = v.len();
    if n % 2 == 1 {
        v[n / 2]
    } else {
        (v[n / 2 - 1] + v[n / 2]) / 2.0
    }
}

pub fn max(xs: &[f64]) -> f64 {
    xs.iter().cloned().fold(f64::NAN, f64::max)
}

pub fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1000.0
}

/// Milliseconds, human-sized.
pub fn fmt_ms(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else if v >= 10_000.0 {
        format!("{:.1} s", v / 1000.0)
    } else if v >= 100.0 {
        format!("{v:.0} ms")
    } else if v >= 10.0 {
        format!("{v:.1} ms")
    } else {
        format!("{v:.2} ms")
    }
}

/// Whole milliseconds (for times read from the journal, which has millisecond resolution).
pub fn fmt_ms0(v: f64) -> String {
    if v.is_nan() {
        "–".into()
    } else {
        format!("{v:.0} ms")
    }
}

pub fn fmt_bytes(b: u64) -> String {
    let b = b as f64;
    if b >= 1024.0 * 1024.0 {
        format!("{:.1} MiB", b / 1024.0 / 1024.0)
    } else if b >= 1024.0 {
        format!("{:.1} KiB", b / 1024.0)
    } else {
        format!("{b:.0} B")
    }
}

pub fn fmt_int(n: f64) -> String {
    let s = format!("{:.0}", n);
    let mut out = String::new();
    for (i, c) in s.chars().enumerate() {
        if i > 0 && (s.len() - i) % 3 == 0 && c != '-' {
            out.push(',');
        }
        out.push(c);
    }
    out
}

// ------------------------------------------------------------------ processes

/// `VmRSS` / `VmHWM` of a process, in bytes.
pub fn proc_mem(pid: u32, field: &str) -> Option<u64> {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = s.lines().find(|l| l.starts_with(field))?;
    let kb: u64 = line.split_whitespace().nth(1)?.parse().ok()?;
    Some(kb * 1024)
}

pub fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) on a child we spawned and have not reaped.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

/// A child process SIGKILLed on drop (by its own pid, never by name).
pub struct Proc {
    pub child: Child,
}

impl Proc {
    pub fn pid(&self) -> u32 {
        self.child.id()
    }
    /// SIGTERM, then SIGKILL after `grace`.
    pub fn stop(&mut self, grace: Duration) {
        if self.child.try_wait().ok().flatten().is_some() {
            return;
        }
        signal(self.pid(), libc::SIGTERM);
        let deadline = Instant::now() + grace;
        while Instant::now() < deadline {
            if self.child.try_wait().ok().flatten().is_some() {
                return;
            }
            std::thread::sleep(Duration::from_millis(10));
        }
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        if self.child.try_wait().ok().flatten().is_none() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

pub fn free_port() -> Result<u16> {
    loop {
        let port = std::net::TcpListener::bind(("127.0.0.1", 0))?.local_addr()?.port();
        if port != 6379 {
            return Ok(port);
        }
    }
}

// ------------------------------------------------------------------ the sandbox world

/// Primary and backup `redis-server`s, the sandbox service and platform in-process, a
/// temp dir for the journal and playbook, and the playbook's environment.
pub struct World {
    pub primary: RedisServer,
    /// Alive as long as the world: the failover's target.
    pub _backup: RedisServer,
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
    pub deploy_steps_ms: u64,
    pub job_ms: u64,
}

impl World {
    pub async fn start(ctx: &Ctx) -> Result<World> {
        World::start_with(ctx, |_| {}).await
    }

    /// As [`World::start`], with the sandbox's configuration changed by `tweak` (e.g.
    /// the BullMQ service instead of the in-process one).
    pub async fn start_with(ctx: &Ctx, tweak: impl FnOnce(&mut SandboxConfig)) -> Result<World> {
        orchestrator::wiring::install_crypto();
        let primary = RedisServer::start().context("primary redis-server")?;
        let backup = RedisServer::start_with(&["--enable-debug-command", "yes"]).context("backup redis-server")?;
        // Stale data on the backup from an earlier drill, for the flush to remove:
        // 1,000 keys under a queue nobody reads, and some idempotency keys.
        let mut c = crate::resp::Conn::port(backup.port())?;
        c.cmd(&["DEBUG", "POPULATE", "1000", "bull:stale"])?;
        c.cmd(&["DEBUG", "POPULATE", "100", "idempotent:old"])?;
        c.cmd(&["SET", "keep:settings", "untouched"])?;
        let mut cfg = SandboxConfig {
            service_api_key: SERVICE_KEY.into(),
            platform_api_key: PLATFORM_KEY.into(),
            ..SandboxConfig::new(primary.url())
        };
        tweak(&mut cfg);
        let (deploy_steps_ms, job_ms) = (cfg.deploy_steps_ms, cfg.job_ms);
        let sandbox = sandbox::start(cfg).await?;
        let mut env = HashMap::new();
        env.insert("SANDBOX_PRIMARY_URL".to_string(), primary.url());
        env.insert("SANDBOX_BACKUP_URL".to_string(), backup.url());
        env.insert("SANDBOX_SERVICE_URL".to_string(), sandbox.service_url());
        env.insert("SANDBOX_SERVICE_API_KEY".to_string(), SERVICE_KEY.to_string());
        env.insert("SANDBOX_PLATFORM_URL".to_string(), sandbox.platform_url());
        env.insert("SANDBOX_PLATFORM_API_KEY".to_string(), PLATFORM_KEY.to_string());
        Ok(World { primary, _backup: backup, sandbox, dir: ctx.tempdir("bench-world-")?, env, deploy_steps_ms, job_ms })
    }

    pub fn journal_path(&self) -> PathBuf {
        self.dir.path().join("journal.db")
    }

    /// The shipped sandbox playbook with text edits, written into the world's dir.
    pub fn playbook_file(&self, ctx: &Ctx, edits: &[(&str, &str)]) -> Result<PathBuf> {
        let mut text = std::fs::read_to_string(ctx.root.join("playbooks/sandbox.yaml"))?;
        for (from, to) in edits {
            if !text.contains(from) {
                bail!("playbook edit target {from:?} not found in playbooks/sandbox.yaml");
            }
            text = text.replace(from, to);
        }
        let path = self.dir.path().join("playbook.yaml");
        std::fs::write(&path, text)?;
        Ok(path)
    }

    pub fn load(&self, path: &Path) -> Result<orchestrator::playbook::Playbook> {
        let env = self.env.clone();
        let lookup = move |name: &str| env.get(name).cloned();
        orchestrator::playbook::load_bytes(&std::fs::read(path)?, path, &lookup).map_err(|e| anyhow!("playbook: {e}"))
    }

    /// Runs the real `orchestrator serve` against this world and waits for its
    /// "listening" line. Returns the process, its address and the spawn → listening time.
    pub fn serve(&self, ctx: &Ctx, db: &Path, playbook: &Path, watch: bool) -> Result<(Proc, String, Duration)> {
        let mut cmd = Command::new(ctx.orchestrator());
        cmd.arg("--db").arg(db).arg("serve").arg("--playbook").arg(playbook).args(["--listen", "127.0.0.1:0"]);
        if !watch {
            cmd.arg("--no-watch");
        }
        cmd.envs(&self.env)
            .env("ORCH_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .env("ORCH_APPROVER_TOKENS", format!("oncall={APPROVER_TOKEN}"))
            .env("ORCH_LOG", "warn")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(std::fs::File::create(self.dir.path().join(format!("serve-{}.log", chrono::Utc::now().timestamp_millis())))?);
        spawn_listening(cmd)
    }
}

/// Spawns `cmd` (stdout piped) and waits for its `{"listening": ...}` line.
pub fn spawn_listening(mut cmd: Command) -> Result<(Proc, String, Duration)> {
    let started = Instant::now();
    let mut child = cmd.spawn().context("spawning orchestrator serve")?;
    let stdout = child.stdout.take().expect("piped stdout");
    let proc_ = Proc { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut r = BufReader::new(stdout);
        let mut line = String::new();
        let res = r.read_line(&mut line).map(|_| (line.clone(), started.elapsed()));
        let _ = tx.send(res);
        // Keep draining so serve never blocks on a full pipe.
        let mut sink = String::new();
        while r.read_line(&mut sink).map(|n| n > 0).unwrap_or(false) {
            sink.clear();
        }
    });
    let (line, took) = rx.recv_timeout(Duration::from_secs(30)).map_err(|_| anyhow!("serve printed no listening line within 30 s"))??;
    let v: serde_json::Value = serde_json::from_str(line.trim()).with_context(|| format!("serve's first line: {line:?}"))?;
    let addr = v["listening"].as_str().ok_or_else(|| anyhow!("no listening address in {line:?}"))?.to_string();
    Ok((proc_, format!("http://{addr}"), took))
}

// ------------------------------------------------------------------ the machine

pub struct Machine {
    pub rows: Vec<(String, String)>,
}

fn cmd_out(prog: &str, args: &[&str]) -> String {
    Command::new(prog)
        .args(args)
        .output()
        .ok()
        .map(|o| String::from_utf8_lossy(&o.stdout).trim().to_string())
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "unknown".into())
}

pub fn machine(root: &Path) -> Machine {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|l| l.strip_prefix("model name").map(|r| r.trim_start_matches([' ', '\t', ':']).trim().to_string()))
        .unwrap_or_else(|| "unknown".into());
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let mem_kb: u64 =
        meminfo.lines().find_map(|l| l.strip_prefix("MemTotal:")).and_then(|r| r.split_whitespace().next()?.parse().ok()).unwrap_or(0);
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease").unwrap_or_default().trim().to_string();
    let load = std::fs::read_to_string("/proc/loadavg").unwrap_or_default().split_whitespace().take(3).collect::<Vec<_>>().join(" ");
    let nproc = std::thread::available_parallelism().map(|n| n.get()).unwrap_or(0);
    let git = {
        let head = cmd_out("git", &["-C", &root.to_string_lossy(), "rev-parse", "--short", "HEAD"]);
        let dirty = Command::new("git")
            .args(["-C", &root.to_string_lossy(), "status", "--porcelain", "--untracked-files=no"])
            .output()
            .map(|o| !o.stdout.is_empty())
            .unwrap_or(false);
        format!("{head}{}", if dirty { " (with uncommitted changes)" } else { "" })
    };
    let fs = cmd_out("df", &["--output=fstype", std::env::temp_dir().to_string_lossy().as_ref()])
        .lines()
        .last()
        .unwrap_or("unknown")
        .to_string();
    Machine {
        rows: vec![
            ("CPU".into(), format!("{cpu} ({nproc} cores visible to this process: nproc = {})", cmd_out("nproc", &[]))),
            ("RAM".into(), format!("{:.1} GiB", mem_kb as f64 / 1024.0 / 1024.0)),
            ("kernel".into(), kernel),
            ("redis".into(), cmd_out("redis-server", &["--version"])),
            ("rustc".into(), cmd_out("rustc", &["--version"])),
            ("commit".into(), git),
            ("temp files".into(), format!("{} ({fs}): journals and Redis files, so fsync is real", std::env::temp_dir().display())),
            ("load average at start".into(), format!("{load} (the machine is shared with other builds: expect noise)")),
            ("date".into(), chrono::Utc::now().format("%Y-%m-%d %H:%M UTC").to_string()),
        ],
    }
}
