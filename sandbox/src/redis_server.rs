//! A test kit for real `redis-server` processes: start one on a free loopback port
//! (or on a given address, e.g. a test bridge's), kill, freeze, thaw and restart it,
//! so tests exercise real failures, not mocks.

use std::io::{self, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long a freshly spawned server may take to answer PING. Generous because CI
/// machines are slow; readiness is polled, so a fast start returns at once.
const START_DEADLINE: Duration = Duration::from_secs(10);
const POLL: Duration = Duration::from_millis(10);

static SEQ: AtomicU64 = AtomicU64::new(0);

/// One `redis-server` child process on `127.0.0.1:port` (or `bind:port`), with its own temporary
/// directory and no persistence. It is SIGKILLed (and the directory removed) on drop.
///
/// All methods take `&self` so a server can be shared between a test and the tasks it
/// spawns (e.g. behind an `Arc`).
pub struct RedisServer {
    bind: IpAddr,
    port: u16,
    args: Vec<String>,
    tls: bool,
    dir: PathBuf,
    child: Mutex<Option<Child>>,
}

impl RedisServer {
    /// Starts a plain server on a free port and waits until it answers PING.
    pub fn start() -> io::Result<RedisServer> {
        Self::start_with(&[])
    }

    /// Starts a server with extra arguments appended after the defaults (later ones
    /// win, so they can override defaults). Any `{port}` in an argument is replaced by
    /// the chosen port, and `{dir}` by the server's temporary directory.
    ///
    /// For TLS pass e.g. `["--port", "0", "--tls-port", "{port}", "--tls-cert-file", ..]`:
    /// when `--tls-port` is present readiness is judged from the server's log and a TCP
    /// connect instead of a plaintext PING, and [`url`](Self::url) uses `rediss://`.
    pub fn start_with(args: &[&str]) -> io::Result<RedisServer> {
        Self::start_on(IpAddr::V4(Ipv4Addr::LOCALHOST), args)
    }

    /// [`start_with`](Self::start_with) listening on `bind` instead of loopback (only
    /// there: e.g. a test bridge's address, so processes in other network namespaces
    /// reach it). [`url`](Self::url) then names that address.
    pub fn start_on(bind: IpAddr, args: &[&str]) -> io::Result<RedisServer> {
        let tls = args.contains(&"--tls-port");
        // A free port can be taken by someone else between probing and binding, so
        // try a few ports before giving up.
        let mut last_err = None;
        for _ in 0..5 {
            let port = free_port(bind)?;
            let dir = make_dir(port)?;
            let args: Vec<String> =
                args.iter().map(|a| a.replace("{port}", &port.to_string()).replace("{dir}", &dir.to_string_lossy())).collect();
            let server = RedisServer { bind, port, args, tls, dir, child: Mutex::new(None) };
            match server.spawn_and_wait() {
                Ok(()) => return Ok(server),
                Err(e) => last_err = Some(e), // dropping `server` cleans up
            }
        }
        Err(last_err.unwrap_or_else(|| io::Error::other("redis-server did not start")))
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// `redis://127.0.0.1:PORT` (`rediss://` when started with `--tls-port`; the bind
    /// address instead of 127.0.0.1 when started with [`start_on`](Self::start_on)).
    pub fn url(&self) -> String {
        let scheme = if self.tls { "rediss" } else { "redis" };
        format!("{scheme}://{}", self.addr())
    }

    /// The address the server listens on.
    pub fn bind(&self) -> IpAddr {
        self.bind
    }

    /// The pid of the current process, or 0 when it has been killed.
    pub fn pid(&self) -> u32 {
        self.child.lock().unwrap().as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// The temporary directory the server runs in (its log is `redis.log` there).
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// SIGKILL, then wait until the process has exited: afterwards connections are
    /// refused. A no-op when already killed.
    pub fn kill(&self) {
        let mut guard = self.child.lock().unwrap();
        if let Some(mut child) = guard.take() {
            // SIGKILL also ends a SIGSTOPped process.
            signal(child.id(), libc::SIGKILL);
            let _ = child.wait();
        }
    }

    /// SIGSTOP: the port still accepts TCP connections (the kernel completes the
    /// handshake) but nothing answers, the way a frozen or overloaded Redis looks.
    pub fn stop(&self) {
        if let Some(child) = self.child.lock().unwrap().as_ref() {
            signal(child.id(), libc::SIGSTOP);
        }
    }

    /// SIGCONT: undo [`stop`](Self::stop).
    pub fn cont(&self) {
        if let Some(child) = self.child.lock().unwrap().as_ref() {
            signal(child.id(), libc::SIGCONT);
        }
    }

    /// Kills the server if it runs, then starts it again on the same port with the same
    /// arguments (and an empty dataset), waiting until it answers.
    pub fn restart(&self) -> io::Result<()> {
        self.kill();
        self.spawn_and_wait()
    }

    fn spawn_and_wait(&self) -> io::Result<()> {
        let log = self.dir.join("redis.log");
        let _ = std::fs::remove_file(&log);
        let mut cmd = Command::new("redis-server");
        cmd.arg("--port").arg(self.port.to_string()).arg("--bind").arg(self.bind.to_string());
        if !self.bind.is_loopback() {
            // Protected mode refuses everyone but loopback when there is no password;
            // off loopback the server is bound to one test address only.
            cmd.args(["--protected-mode", "no"]);
        }
        cmd.args(["--save", ""])
            .args(["--appendonly", "no"])
            .args(["--daemonize", "no"])
            .arg("--dir")
            .arg(&self.dir)
            .arg("--logfile")
            .arg(&log)
            .args(&self.args)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null());
        let child = cmd.spawn().map_err(|e| io::Error::new(e.kind(), format!("cannot run redis-server (is it installed?): {e}")))?;
        *self.child.lock().unwrap() = Some(child);

        let deadline = Instant::now() + START_DEADLINE;
        loop {
            // In its own statement so the lock is released before the branch below.
            let exited = self.child.lock().unwrap().as_mut().and_then(|c| c.try_wait().ok().flatten());
            if let Some(status) = exited {
                let tail = read_tail(&log);
                self.child.lock().unwrap().take();
                return Err(io::Error::other(format!("redis-server on port {} exited during start ({status}): {tail}", self.port)));
            }
            if self.ready(&log) {
                return Ok(());
            }
            if Instant::now() >= deadline {
                let tail = read_tail(&log);
                self.kill();
                return Err(io::Error::new(
                    io::ErrorKind::TimedOut,
                    format!("redis-server on port {} did not answer within {START_DEADLINE:?}: {tail}", self.port),
                ));
            }
            std::thread::sleep(POLL);
        }
    }

    fn ready(&self, log: &Path) -> bool {
        if self.tls {
            // No plaintext PING over a TLS port: trust the server's own readiness line,
            // then confirm the port accepts connections.
            let logged = std::fs::read_to_string(log).map(|s| s.contains("Ready to accept connections")).unwrap_or(false);
            return logged && TcpStream::connect_timeout(&self.addr(), Duration::from_millis(200)).is_ok();
        }
        ping(self.addr())
    }

    fn addr(&self) -> SocketAddr {
        SocketAddr::new(self.bind, self.port)
    }
}

impl Drop for RedisServer {
    fn drop(&mut self) {
        self.kill();
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

impl std::fmt::Debug for RedisServer {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("RedisServer").field("port", &self.port).field("pid", &self.pid()).finish()
    }
}

/// Sends a raw PING; any RESP reply counts as answering (`-NOAUTH` from a server with
/// `--requirepass` is an answer too).
fn ping(addr: SocketAddr) -> bool {
    let Ok(mut s) = TcpStream::connect_timeout(&addr, Duration::from_millis(200)) else {
        return false;
    };
    let _ = s.set_read_timeout(Some(Duration::from_millis(500)));
    if s.write_all(b"PING\r\n").is_err() {
        return false;
    }
    let mut buf = [0u8; 64];
    matches!(s.read(&mut buf), Ok(n) if n > 0 && (buf[0] == b'+' || buf[0] == b'-'))
}

fn free_port(bind: IpAddr) -> io::Result<u16> {
    loop {
        let port = TcpListener::bind((bind, 0))?.local_addr()?.port();
        // Never the default port: a developer's own Redis may live there.
        if port != 6379 {
            return Ok(port);
        }
    }
}

fn make_dir(port: u16) -> io::Result<PathBuf> {
    let dir = std::env::temp_dir().join(format!("sandbox-redis-{}-{}-{}", std::process::id(), port, SEQ.fetch_add(1, Ordering::Relaxed)));
    std::fs::create_dir_all(&dir)?;
    Ok(dir)
}

fn signal(pid: u32, sig: libc::c_int) {
    // SAFETY: kill(2) has no memory-safety preconditions; the pid is our own child,
    // not yet reaped (we hold the Child), so it cannot have been reused.
    unsafe {
        libc::kill(pid as libc::pid_t, sig);
    }
}

fn read_tail(log: &Path) -> String {
    let s = std::fs::read_to_string(log).unwrap_or_default();
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(5)..].join(" | ")
}
