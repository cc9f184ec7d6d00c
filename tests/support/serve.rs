//! Driving the real `orchestrator serve` binary: its address from the first stdout
//! line, a SIGTERM stop that waits (with a deadline) for it to exit, and [`Instance`]:
//! a `serve` child (here or in a network namespace) killed on drop.

use std::net::SocketAddr;
use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Reads the `{"listening": "127.0.0.1:PORT", ...}` line `serve` prints once bound.
pub async fn listening(child: &mut tokio::process::Child) -> String {
    let stdout = child.stdout.take().expect("serve's stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("serve printed its address within 20 s")
        .unwrap()
        .expect("serve exited before listening");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["listening"].as_str().unwrap().to_string()
}

/// SIGTERM, then the exit status within `limit`.
pub async fn stop_within(child: &mut tokio::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    tokio::time::timeout(limit, child.wait()).await.ok().map(|r| r.unwrap())
}

pub async fn stop(child: &mut tokio::process::Child) {
    if stop_within(child, Duration::from_secs(40)).await.is_none() {
        let _ = child.kill().await;
    }
}

/// `orchestrator --db DB`: the real binary, for any subcommand.
pub fn orchestrator(db: impl AsRef<std::ffi::OsStr>) -> tokio::process::Command {
    let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    cmd.arg("--db").arg(db);
    cmd
}

/// What an `orchestrator serve` child is started with.
#[derive(Clone, Debug)]
pub struct ServeSpec {
    /// `--db`: a journal file, or (with the PostgreSQL backend) a `postgres://` URL.
    pub db: std::ffi::OsString,
    /// `-p` each.
    pub playbooks: Vec<std::path::PathBuf>,
    /// Environment (e.g. a [`World`](super::world::World)'s `env`, which the playbooks
    /// read); the test tokens of [`super::world`] are added unless set here.
    pub env: std::collections::HashMap<String, String>,
    /// Further arguments after `serve …` (e.g. `--no-watch`).
    pub args: Vec<String>,
}

impl ServeSpec {
    pub fn new(db: impl Into<std::ffi::OsString>, playbooks: &[&std::path::Path]) -> ServeSpec {
        ServeSpec { db: db.into(), playbooks: playbooks.iter().map(|p| p.to_path_buf()).collect(), env: Default::default(), args: vec![] }
    }

    pub fn env(mut self, env: &std::collections::HashMap<String, String>) -> ServeSpec {
        self.env.extend(env.iter().map(|(k, v)| (k.clone(), v.clone())));
        self
    }

    pub fn arg(mut self, a: impl Into<String>) -> ServeSpec {
        self.args.push(a.into());
        self
    }

    /// The arguments after the program: `--db DB serve -p … --listen LISTEN ARGS…`.
    fn argv(&self, listen: SocketAddr) -> Vec<std::ffi::OsString> {
        let mut v: Vec<std::ffi::OsString> = vec!["--db".into(), self.db.clone(), "serve".into()];
        for p in &self.playbooks {
            v.push("-p".into());
            v.push(p.into());
        }
        v.push("--listen".into());
        v.push(listen.to_string().into());
        v.extend(self.args.iter().map(Into::into));
        v
    }

    fn prepare(&self, cmd: &mut tokio::process::Command) {
        use super::world::{LEAD_TOKEN, ONCALL_TOKEN, VIEWER_TOKEN, WEBHOOK_TOKEN};
        // Anything but loopback needs tokens; the test's own are the defaults.
        cmd.env("ORCH_WEBHOOK_TOKEN", WEBHOOK_TOKEN)
            .env("ORCH_APPROVER_TOKENS", format!("oncall={ONCALL_TOKEN},lead={LEAD_TOKEN}"))
            .env("ORCH_VIEWER_TOKENS", format!("watch={VIEWER_TOKEN}"))
            // Fault injection only when the spec asks for it, never from the test's own
            // environment.
            .env_remove("ORCH_FAULT_CRASH_AT")
            .envs(&self.env)
            .stdin(std::process::Stdio::null())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            // The child must not outlive a failed test.
            .kill_on_drop(true);
    }

    /// `orchestrator serve` on 127.0.0.1:0 in this namespace; returns once it listens.
    pub async fn spawn(&self) -> Instance {
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        cmd.args(self.argv(SocketAddr::from(([127, 0, 0, 1], 0))));
        self.prepare(&mut cmd);
        Instance::start(cmd, |addr| addr, None).await
    }

    /// The same inside namespace `i` of `net` (`ip netns exec`), listening on all of
    /// that namespace's addresses: [`Instance::url`] is the admin address (the test's
    /// way in, never cut), [`Instance::peer_url`] the bridge address (what other
    /// instances use; cut with the rest).
    pub async fn spawn_in_netns(&self, net: &super::netns::Net, i: usize) -> Instance {
        let mut cmd = net.tokio_command(i, env!("CARGO_BIN_EXE_orchestrator"));
        cmd.args(self.argv(SocketAddr::from(([0, 0, 0, 0], 0))));
        self.prepare(&mut cmd);
        let (admin, peer) = (net.admin_ip(i), net.ip(i));
        Instance::start(cmd, move |a| SocketAddr::new(admin, a.port()), Some(peer)).await
    }
}

/// A running `orchestrator serve` child. SIGKILLed on drop (tokio's `kill_on_drop`);
/// its stdout lines after the first and its stderr are kept for assertions and
/// failure messages.
pub struct Instance {
    pub child: tokio::process::Child,
    /// Where the test reaches its HTTP API.
    pub addr: SocketAddr,
    /// In a namespace: its address on the bridge.
    pub peer_ip: Option<std::net::IpAddr>,
    stdout: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
    stderr: std::sync::Arc<std::sync::Mutex<Vec<String>>>,
}

impl Instance {
    async fn start(
        mut cmd: tokio::process::Command,
        reach: impl Fn(SocketAddr) -> SocketAddr,
        peer_ip: Option<std::net::IpAddr>,
    ) -> Instance {
        let mut child = cmd.spawn().expect("spawning orchestrator serve");
        let stderr = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let err = child.stderr.take().expect("stderr is piped");
        let sink = stderr.clone();
        tokio::spawn(async move {
            let mut lines = BufReader::new(err).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        let out = child.stdout.take().expect("stdout is piped");
        let mut lines = BufReader::new(out).lines();
        let first = match tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await {
            Ok(Ok(Some(l))) => l,
            other => {
                let status = tokio::time::timeout(Duration::from_secs(2), child.wait()).await;
                panic!(
                    "orchestrator serve did not print its address ({other:?}, exit {status:?}); stderr:\n{}",
                    stderr.lock().unwrap().join("\n")
                );
            }
        };
        let v: serde_json::Value = serde_json::from_str(&first).unwrap_or_else(|e| panic!("serve's first line {first:?} is not JSON: {e}"));
        let bound: SocketAddr = v["listening"].as_str().and_then(|s| s.parse().ok()).unwrap_or_else(|| panic!("no address in {first:?}"));
        let stdout = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let sink = stdout.clone();
        // Keep draining stdout so the child never blocks on a full pipe.
        tokio::spawn(async move {
            while let Ok(Some(l)) = lines.next_line().await {
                sink.lock().unwrap().push(l);
            }
        });
        Instance { child, addr: reach(bound), peer_ip, stdout, stderr }
    }

    /// `http://ADDR` of its API, for the test.
    pub fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `http://BRIDGE_IP:PORT`, where other instances reach it (in a namespace only).
    pub fn peer_url(&self) -> Option<String> {
        self.peer_ip.map(|ip| format!("http://{}", SocketAddr::new(ip, self.addr.port())))
    }

    pub fn pid(&self) -> Option<u32> {
        self.child.id()
    }

    /// Its stderr so far (the log, at `ORCH_LOG`'s level).
    pub fn stderr(&self) -> String {
        self.stderr.lock().unwrap().join("\n")
    }

    /// Its stdout lines after the `listening` one.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.lock().unwrap().clone()
    }

    /// SIGTERM, then its exit status within `limit` (None: still running).
    pub async fn stop_within(&mut self, limit: Duration) -> Option<std::process::ExitStatus> {
        stop_within(&mut self.child, limit).await
    }

    /// SIGTERM; SIGKILL if it has not exited within 40 s.
    pub async fn stop(&mut self) {
        stop(&mut self.child).await
    }

    /// SIGKILL (a crash), and reap it.
    pub async fn kill(&mut self) {
        let _ = self.child.kill().await;
    }

    /// SIGSTOP: the process stops dead, connections stay open — a paused VM or a GC
    /// pause. Undo with [`cont`](Self::cont).
    pub fn freeze(&self) {
        self.signal(libc::SIGSTOP);
    }

    pub fn cont(&self) {
        self.signal(libc::SIGCONT);
    }

    fn signal(&self, sig: libc::c_int) {
        if let Some(pid) = self.child.id() {
            // SAFETY: kill(2) on our own, not yet reaped child.
            unsafe { libc::kill(pid as i32, sig) };
        }
    }
}

/// `GET URL/leader` of an instance: (answered 200, its body); `None` when it did not
/// answer within 3 s.
pub async fn leader_at(url: &str) -> Option<(bool, serde_json::Value)> {
    let client = reqwest::Client::builder().timeout(Duration::from_secs(3)).build().ok()?;
    let r = client.get(format!("{url}/leader")).send().await.ok()?;
    let ok = r.status() == 200;
    Some((ok, r.json().await.ok()?))
}

/// Waits until exactly one of the instances at `urls` answers 200 on `/leader` (and
/// fails at once if two do): its index and term.
pub async fn one_leader(urls: &[String], limit: Duration) -> (usize, i64) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let mut leaders = Vec::new();
        for (n, url) in urls.iter().enumerate() {
            if let Some((true, body)) = leader_at(url).await {
                leaders.push((n, body["term"].as_i64().unwrap_or(0)));
            }
        }
        assert!(leaders.len() <= 1, "two leaders at once: {leaders:?}");
        if let [one] = leaders[..] {
            return one;
        }
        assert!(tokio::time::Instant::now() < deadline, "no leader within {limit:?}");
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}
