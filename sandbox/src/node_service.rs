//! The real BullMQ service (`bullmq-service/`, Node 20 + BullMQ + ioredis) as a child
//! process the platform restarts on deploy, on one fixed loopback port, so the
//! orchestrator meets a production service's start-up errors, timeouts and reconnects
//! instead of the in-process stand-in's.

use std::fs::OpenOptions;
use std::io::{self, Write};
use std::net::{Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::queue::QUEUES;
use crate::redis_link::mask_url;
use crate::service::ServiceConfig;

/// How long a new process may take to answer liveness. Node loads BullMQ in about
/// 0.5 s here, but CI shares two cores with cargo builds.
pub const LIVENESS_DEADLINE: Duration = Duration::from_secs(20);
/// SIGTERM → SIGKILL. The service bounds its own graceful close at 1.5 s (it cannot
/// close cleanly against a dead Redis), so this is only the backstop.
pub const STOP_GRACE: Duration = Duration::from_secs(3);
const POLL: Duration = Duration::from_millis(20);

static SEQ: AtomicU64 = AtomicU64::new(0);

/// `bullmq-service/` at the repository root.
pub fn service_dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("..").join("bullmq-service")
}

/// Whether `node` runs and the service's packages are installed; the error says what
/// to run. Tests call it first so a missing install fails with that, not a timeout.
pub fn check_installed() -> Result<PathBuf, String> {
    check_installed_in(service_dir())
}

fn check_installed_in(dir: PathBuf) -> Result<PathBuf, String> {
    for pkg in ["bullmq", "ioredis"] {
        if !dir.join("node_modules").join(pkg).join("package.json").is_file() {
            return Err(format!(
                "the BullMQ service's packages are not installed ({} has no node_modules/{pkg}): run `npm ci --prefix bullmq-service`",
                dir.display()
            ));
        }
    }
    match Command::new("node").arg("--version").stdout(Stdio::null()).stderr(Stdio::null()).status() {
        Ok(s) if s.success() => Ok(dir),
        Ok(s) => Err(format!("`node --version` failed ({s}): install Node 20 (apt-get install nodejs npm)")),
        Err(e) => Err(format!("cannot run `node` ({e}): install Node 20 (apt-get install nodejs npm)")),
    }
}

/// A free loopback port, never Redis's default 6379 (a developer's own Redis may be
/// there; the orchestrator's tests never touch it).
pub fn free_port() -> io::Result<u16> {
    loop {
        let port = TcpListener::bind((Ipv4Addr::LOCALHOST, 0))?.local_addr()?.port();
        if port != 6379 {
            return Ok(port);
        }
    }
}

/// The BullMQ service process (cheap to clone). Its address stays the same across
/// restarts, as a Render service's URL does across deploys. The child is SIGKILLed
/// when the last clone is dropped; the service also exits by itself when this process
/// dies (`EXIT_WITH_PARENT`), so a killed test run leaves no service behind.
#[derive(Clone)]
pub struct NodeService {
    inner: Arc<Inner>,
}

struct Inner {
    addr: SocketAddr,
    dir: PathBuf,
    /// Holds `service.log`: every incarnation's output, appended.
    log_dir: PathBuf,
    current: Mutex<Option<Running>>,
    /// Serializes restarts (two deploys going live at once).
    restarting: tokio::sync::Mutex<()>,
}

struct Running {
    child: Child,
    config: ServiceConfig,
}

impl Drop for Running {
    /// Whoever lets go of a running process kills it, also a restart aborted midway
    /// (a deploy task cancelled by the platform's shutdown).
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl NodeService {
    /// Starts the service on `addr` (port 0: a free port, chosen once) with `config`
    /// and waits until it answers liveness — not until Redis is connected.
    pub async fn start(addr: SocketAddr, config: ServiceConfig) -> anyhow::Result<NodeService> {
        let dir = check_installed().map_err(anyhow::Error::msg)?;
        let mut attempt = 0;
        loop {
            attempt += 1;
            let chosen = if addr.port() == 0 { SocketAddr::new(addr.ip(), free_port()?) } else { addr };
            let svc = NodeService::new(chosen, dir.clone())?;
            match svc.restart(config.clone()).await {
                Ok(()) => return Ok(svc),
                // A free port can be taken between choosing it and node binding it.
                Err(e) if addr.port() == 0 && attempt < 3 && e.contains("EADDRINUSE") => continue,
                Err(e) => return Err(anyhow::Error::msg(e)),
            }
        }
    }

    fn new(addr: SocketAddr, dir: PathBuf) -> io::Result<NodeService> {
        let log_dir = std::env::temp_dir().join(format!(
            "sandbox-bullmq-{}-{}-{}",
            std::process::id(),
            addr.port(),
            SEQ.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir_all(&log_dir)?;
        let inner = Inner { addr, dir, log_dir, current: Mutex::new(None), restarting: tokio::sync::Mutex::new(()) };
        Ok(NodeService { inner: Arc::new(inner) })
    }

    pub fn addr(&self) -> SocketAddr {
        self.inner.addr
    }

    /// `http://127.0.0.1:PORT`.
    pub fn url(&self) -> String {
        format!("http://{}", self.inner.addr)
    }

    /// The pid of the running process, if one runs.
    pub fn pid(&self) -> Option<u32> {
        self.inner.current.lock().unwrap().as_ref().map(|r| r.child.id())
    }

    /// The configuration of the running process (None after shutdown).
    pub fn config(&self) -> Option<ServiceConfig> {
        self.inner.current.lock().unwrap().as_ref().map(|r| r.config.clone())
    }

    /// The file every incarnation's stdout and stderr go to (JSON log lines).
    pub fn log_path(&self) -> PathBuf {
        self.inner.log_dir.join("service.log")
    }

    /// The last `n` lines of the process output, for failure messages.
    pub fn log_tail(&self, n: usize) -> String {
        tail(&self.log_path(), n)
    }

    /// What a deploy does: the old process gets SIGTERM (SIGKILL after
    /// [`STOP_GRACE`]), then a new one starts with `config` on the same port and is
    /// up once it answers `GET /api/v1/health/liveness`. Its Redis connections may
    /// still be coming up then, as on Render, so whoever looks first can see the
    /// start-up errors. On error no process runs.
    pub async fn restart(&self, config: ServiceConfig) -> Result<(), String> {
        let _guard = self.inner.restarting.lock().await;
        self.stop_current().await;
        let child = self.spawn(&config)?;
        let pid = child.id();
        *self.inner.current.lock().unwrap() = Some(Running { child, config });
        let started = Instant::now();
        loop {
            if let Some(status) = self.exited() {
                return Err(format!("the BullMQ service (pid {pid}) exited during start ({status}): {}", self.log_tail(8)));
            }
            if get_ok(self.inner.addr, "/api/v1/health/liveness").await {
                tracing::debug!(pid, took_ms = started.elapsed().as_millis() as u64, "BullMQ service answers liveness");
                return Ok(());
            }
            if started.elapsed() >= LIVENESS_DEADLINE {
                self.stop_current().await;
                return Err(format!(
                    "the BullMQ service (pid {pid}) did not answer liveness on {} within {LIVENESS_DEADLINE:?}: {}",
                    self.inner.addr,
                    self.log_tail(8)
                ));
            }
            tokio::time::sleep(POLL).await;
        }
    }

    /// SIGTERM and wait (SIGKILL after the grace); afterwards nothing listens.
    pub async fn shutdown(&self) {
        let _guard = self.inner.restarting.lock().await;
        self.stop_current().await;
    }

    /// SIGKILL at once and reap, without waiting on anything async (for drops).
    pub fn kill_now(&self) {
        drop(self.inner.current.lock().unwrap().take());
    }

    fn spawn(&self, config: &ServiceConfig) -> Result<Child, String> {
        let log = self.log_path();
        let mut out = OpenOptions::new().create(true).append(true).open(&log).map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        // A header per incarnation, so the file reads as the deploy history. Masked:
        // the file outlives nothing, but secrets stay out of every file all the same.
        let _ = writeln!(
            out,
            "--- starting node {} with REDIS_URL={} WORKERS_ENABLED={}",
            self.inner.dir.join("server.js").display(),
            mask_url(&config.redis_url),
            config.workers_enabled
        );
        let err = out.try_clone().map_err(|e| format!("cannot open {}: {e}", log.display()))?;
        let mut cmd = Command::new("node");
        cmd.arg("server.js")
            .current_dir(&self.inner.dir)
            .env("PORT", self.inner.addr.port().to_string())
            .env("HOST", self.inner.addr.ip().to_string())
            .env("REDIS_URL", &config.redis_url)
            .env("API_KEY", &config.api_key)
            .env("WORKERS_ENABLED", config.workers_enabled.to_string())
            .env("WORKERS_PER_QUEUE", config.workers_per_queue.max(1).to_string())
            .env("JOB_MS", config.job_ms.to_string())
            .env("QUEUES", QUEUES.join(","))
            .env("EXIT_WITH_PARENT", "true")
            .env("REDIS_CONNECT_DELAY_MS", config.connect_delay_ms.to_string())
            // Settings from the developer's shell must not change the service's behaviour.
            .env_remove("NODE_OPTIONS")
            .env_remove("COMMAND_TIMEOUT_MS")
            .env_remove("PING_INTERVAL_MS")
            .env_remove("REQUEST_TIMEOUT_MS")
            .stdin(Stdio::null())
            .stdout(Stdio::from(out))
            .stderr(Stdio::from(err));
        // Dies with the test process even when that is SIGKILLed (a nextest time limit, a
        // killed run): a service left behind reconnecting forever to a busy Redis once
        // wrote 8 MB of log a second. EXIT_WITH_PARENT alone cannot be relied on: a hot
        // BullMQ error loop starves the service's own timers. The signal follows the
        // spawning thread, a runtime worker that lives as long as the test.
        use std::os::unix::process::CommandExt;
        // SAFETY: prctl(2) is async-signal-safe and touches only the child's own state.
        unsafe {
            cmd.pre_exec(|| {
                libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL);
                Ok(())
            });
        }
        cmd.spawn().map_err(|e| format!("cannot run `node` for the BullMQ service: {e}"))
    }

    fn exited(&self) -> Option<std::process::ExitStatus> {
        let mut guard = self.inner.current.lock().unwrap();
        let status = guard.as_mut().and_then(|r| r.child.try_wait().ok().flatten());
        if status.is_some() {
            guard.take();
        }
        status
    }

    async fn stop_current(&self) {
        let Some(mut running) = self.inner.current.lock().unwrap().take() else {
            return;
        };
        signal(&running.child, libc::SIGTERM);
        let deadline = Instant::now() + STOP_GRACE;
        loop {
            match running.child.try_wait() {
                Ok(Some(_)) | Err(_) => return,
                Ok(None) if Instant::now() >= deadline => {
                    // Dropping `running` SIGKILLs and reaps it.
                    tracing::warn!(pid = running.child.id(), "BullMQ service ignored SIGTERM for {STOP_GRACE:?}: SIGKILL");
                    return;
                }
                Ok(None) => tokio::time::sleep(POLL).await,
            }
        }
    }
}

impl Drop for Inner {
    fn drop(&mut self) {
        drop(self.current.get_mut().unwrap().take());
        let _ = std::fs::remove_dir_all(&self.log_dir);
    }
}

impl std::fmt::Debug for NodeService {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("NodeService").field("addr", &self.inner.addr).field("pid", &self.pid()).finish()
    }
}

fn signal(child: &Child, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child,
    // not yet reaped (we hold the Child), so it cannot have been reused.
    unsafe {
        libc::kill(child.id() as libc::pid_t, sig);
    }
}

/// One `GET` with a short deadline; true on a 200. A hand-written HTTP/1.0 request:
/// the crate has no HTTP client outside its tests, and liveness needs nothing more.
async fn get_ok(addr: SocketAddr, path: &str) -> bool {
    let attempt = async {
        let mut s = TcpStream::connect(addr).await.ok()?;
        s.write_all(format!("GET {path} HTTP/1.0\r\nHost: {addr}\r\n\r\n").as_bytes()).await.ok()?;
        let mut head = [0u8; 12];
        s.read_exact(&mut head).await.ok()?;
        Some(head.starts_with(b"HTTP/1.1 200") || head.starts_with(b"HTTP/1.0 200"))
    };
    matches!(tokio::time::timeout(Duration::from_millis(500), attempt).await, Ok(Some(true)))
}

fn tail(path: &Path, n: usize) -> String {
    let text = std::fs::read_to_string(path).unwrap_or_default();
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join(" | ")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_missing_install_names_the_command_to_run() {
        let dir = std::env::temp_dir().join(format!("sandbox-bullmq-empty-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let e = check_installed_in(dir.clone()).unwrap_err();
        assert!(e.contains("run `npm ci --prefix bullmq-service`"), "{e}");
        assert!(e.contains("node_modules/bullmq"), "{e}");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
