//! A whole sandbox world for end-to-end tests: real primary and backup redis-server
//! processes on free ports, the sandbox service and platform in-process on
//! 127.0.0.1:0 (or on [`WorldOptions::bind`]), a journal in a temp dir, and the
//! shipped sandbox playbook.

#![allow(dead_code)]

use orchestrator::executor::{ExecOptions, Executor, RunEnd};
use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use orchestrator::playbook::{load_bytes, Playbook};
use sandbox::{RedisServer, Sandbox, SandboxConfig};
use std::collections::HashMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

pub const SERVICE_KEY: &str = "svc-key-9f2c1e7a";
pub const PLATFORM_KEY: &str = "plat-key-4b8d0a63";

pub struct World {
    pub primary: RedisServer,
    pub backup: RedisServer,
    pub sandbox: Sandbox,
    pub dir: tempfile::TempDir,
    pub env: HashMap<String, String>,
    /// Where its servers listen ([`WorldOptions::bind`]; 127.0.0.1 by default).
    pub bind: IpAddr,
    /// The journal's PostgreSQL database when the suite runs on PostgreSQL
    /// (`ORCH_TEST_DB=postgres`); dropped with the world.
    pub pg: Option<super::pgdb::PgDatabase>,
}

pub struct WorldOptions {
    pub workers_enabled: bool,
    pub primary_args: Vec<&'static str>,
    /// `requirepass` of the primary and backup; the URLs then carry them.
    pub primary_password: Option<&'static str>,
    pub backup_password: Option<&'static str>,
    /// Delay of each of the sandbox platform's two deploy steps.
    pub deploy_steps_ms: u64,
    /// Run the real BullMQ service (`bullmq-service/`, a Node process on a fixed port)
    /// instead of the in-process stand-in; needs `npm ci --prefix bullmq-service`.
    pub bullmq: bool,
    /// The BullMQ service's Redis connections come up this long after each start.
    pub connect_delay_ms: u64,
    /// Where the redis-servers, the service and the platform listen (None: 127.0.0.1).
    /// A [`Net`](super::netns::Net)'s `host_ip()` lets orchestrators in its network
    /// namespaces reach the world; `env` (and so the playbook) then names that address.
    pub bind: Option<IpAddr>,
}

impl Default for WorldOptions {
    fn default() -> Self {
        WorldOptions {
            workers_enabled: true,
            primary_args: vec![],
            primary_password: None,
            backup_password: None,
            deploy_steps_ms: 50,
            // `ORCH_TEST_SERVICE=bullmq` runs every world on the real BullMQ service
            // (`make test` does so for the failover, fault and crash suites).
            bullmq: std::env::var("ORCH_TEST_SERVICE").is_ok_and(|v| v == "bullmq"),
            connect_delay_ms: 0,
            bind: None,
        }
    }
}

fn with_password(url: String, password: Option<&str>) -> String {
    match password {
        Some(pw) => url.replacen("redis://", &format!("redis://:{pw}@"), 1),
        None => url,
    }
}

impl World {
    pub async fn start() -> World {
        Self::start_with(WorldOptions::default()).await
    }

    pub async fn start_with(opts: WorldOptions) -> World {
        orchestrator::wiring::install_crypto();
        let mut primary_args = opts.primary_args.clone();
        if let Some(pw) = opts.primary_password {
            primary_args.extend(["--requirepass", pw]);
        }
        let bind = opts.bind.unwrap_or(IpAddr::V4(Ipv4Addr::LOCALHOST));
        let primary = RedisServer::start_on(bind, &primary_args).expect("primary redis");
        let backup_args = match opts.backup_password {
            Some(pw) => vec!["--requirepass", pw],
            None => vec![],
        };
        let backup = RedisServer::start_on(bind, &backup_args).expect("backup redis");
        let primary_url = with_password(primary.url(), opts.primary_password);
        let backup_url = with_password(backup.url(), opts.backup_password);
        let mut cfg = SandboxConfig::new(primary_url.clone());
        cfg.service_api_key = SERVICE_KEY.into();
        cfg.platform_api_key = PLATFORM_KEY.into();
        cfg.service_addr = SocketAddr::new(bind, 0);
        cfg.platform_addr = SocketAddr::new(bind, 0);
        cfg.workers_enabled = opts.workers_enabled;
        cfg.deploy_steps_ms = opts.deploy_steps_ms;
        cfg.job_ms = 5;
        if opts.bullmq {
            cfg.service_kind = sandbox::ServiceKind::Bullmq;
        }
        cfg.connect_delay_ms = opts.connect_delay_ms;
        let sandbox = sandbox::start(cfg).await.expect("sandbox");
        let mut env = HashMap::new();
        env.insert("SANDBOX_PRIMARY_URL".to_string(), primary_url);
        env.insert("SANDBOX_BACKUP_URL".to_string(), backup_url);
        env.insert("SANDBOX_SERVICE_URL".to_string(), sandbox.service_url());
        env.insert("SANDBOX_SERVICE_API_KEY".to_string(), SERVICE_KEY.to_string());
        env.insert("SANDBOX_PLATFORM_URL".to_string(), sandbox.platform_url());
        env.insert("SANDBOX_PLATFORM_API_KEY".to_string(), PLATFORM_KEY.to_string());
        let pg = super::pgdb::PgDatabase::for_suite();
        let world = World { primary, backup, sandbox, dir: tempfile::tempdir().unwrap(), env, bind, pg };
        if opts.bullmq {
            // A real service is only up once its queues work: BullMQ's start-up cut off
            // by a Redis outage leaves a queue that never enqueues again. Tests fault a
            // service that has finished starting, as production does.
            assert!(world.job_completes(Duration::from_secs(30)).await, "the BullMQ service processes a job after start");
        }
        world
    }

    /// The journal, as `--db` names it: a file in the world's directory, or (with
    /// `ORCH_TEST_DB=postgres`) the URL of the world's own PostgreSQL database.
    pub fn journal_path(&self) -> PathBuf {
        match &self.pg {
            Some(db) => PathBuf::from(db.url()),
            None => self.dir.path().join("journal.db"),
        }
    }

    /// The shipped sandbox playbook with text edits applied (e.g. shorter windows),
    /// written next to the journal so its hash is what an incident pins. Off loopback
    /// it allows plain http:// (the sandbox's servers speak nothing else; they are on
    /// a test bridge only).
    pub fn playbook_file(&self, edits: &[(&str, &str)]) -> PathBuf {
        let mut text = std::fs::read_to_string("playbooks/sandbox.yaml").unwrap();
        for (from, to) in edits {
            assert!(text.contains(from), "playbook edit target {from:?} not found");
            text = text.replace(from, to);
        }
        if !self.bind.is_loopback() && !text.contains("\nallow_insecure_http:") {
            if !text.ends_with('\n') {
                text.push('\n');
            }
            text.push_str("allow_insecure_http: true\n");
        }
        let path = self.dir.path().join("playbook.yaml");
        std::fs::write(&path, text).unwrap();
        path
    }

    pub fn load(&self, path: &Path) -> Playbook {
        let env = self.env.clone();
        let lookup = move |name: &str| env.get(name).cloned();
        load_bytes(&std::fs::read(path).unwrap(), path, &lookup).expect("test playbook is valid")
    }

    pub async fn executor(&self, edits: &[(&str, &str)]) -> Executor {
        let path = self.playbook_file(edits);
        let pb = Arc::new(self.load(&path));
        let journal = Journal::open(&self.journal_path()).await.unwrap();
        let ports = orchestrator::wiring::real_ports(&pb);
        let (_tx, rx) = watch::channel(false);
        std::mem::forget(_tx);
        Executor::new(journal, ports, pb, ExecOptions::default(), rx)
    }

    /// Submits a job through the service and waits (deadline) until it completes.
    /// A real service may refuse the trigger (503) while its queue connection is still
    /// reconnecting: submitting is retried until the deadline too.
    pub async fn job_completes(&self, within: Duration) -> bool {
        let client = reqwest::Client::new();
        let deadline = tokio::time::Instant::now() + within;
        let body: serde_json::Value = loop {
            let resp = client
                .post(format!("{}/api/v1/triggers/check", self.sandbox.service_url()))
                .header("X-API-Key", SERVICE_KEY)
                .json(&serde_json::json!({"check": true}))
                .send()
                .await;
            match resp {
                Ok(r) if r.status().is_success() => break r.json().await.unwrap(),
                _ if tokio::time::Instant::now() < deadline => tokio::time::sleep(Duration::from_millis(100)).await,
                _ => return false,
            }
        };
        let (id, queue) = (body["jobId"].as_str().unwrap().to_string(), body["queue"].as_str().unwrap().to_string());
        while tokio::time::Instant::now() < deadline {
            let state: serde_json::Value = client
                .get(format!("{}/api/v1/jobs/{queue}/{id}", self.sandbox.service_url()))
                .header("X-API-Key", SERVICE_KEY)
                .send()
                .await
                .unwrap()
                .json()
                .await
                .unwrap();
            if state["state"] == "completed" {
                return true;
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        false
    }

    /// `orchestrator --db JOURNAL ARGS…` with the world's environment plus `env`, and the
    /// fault injection `crash_at` (never the test's own): its exit status within 90 s.
    /// Its stderr is printed when it fails other than by a signal.
    pub async fn cli(&self, args: &[&str], crash_at: Option<&str>, env: &[(&str, &str)]) -> std::process::ExitStatus {
        use std::os::unix::process::ExitStatusExt;
        let mut cmd = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
        cmd.arg("--db")
            .arg(self.journal_path())
            .args(args)
            .envs(&self.env)
            .envs(env.iter().copied())
            .env_remove("ORCH_FAULT_CRASH_AT")
            .stdout(std::process::Stdio::null())
            .stderr(std::process::Stdio::piped());
        if let Some(point) = crash_at {
            cmd.env("ORCH_FAULT_CRASH_AT", point);
        }
        let child = cmd.spawn().expect("orchestrator binary");
        let out =
            tokio::time::timeout(Duration::from_secs(90), child.wait_with_output()).await.expect("orchestrator finished in time").unwrap();
        if !out.status.success() && out.status.signal().is_none() {
            eprintln!("orchestrator {args:?} stderr:\n{}", String::from_utf8_lossy(&out.stderr));
        }
        out.status
    }

    /// Waits until the service reports Redis down (the failure is visible).
    pub async fn service_sees_redis_down(&self) {
        let client = reqwest::Client::new();
        wait_until(Duration::from_secs(10), "service to report redis down", || {
            let client = client.clone();
            let url = format!("{}/api/v1/health", self.sandbox.service_url());
            async move { client.get(url).send().await.map(|r| r.status().as_u16() == 503).unwrap_or(false) }
        })
        .await;
    }

    pub fn env_writes(&self) -> Vec<(String, String)> {
        self.sandbox.platform().stats().env_writes.iter().map(|w| (w.key.clone(), w.value.clone())).collect()
    }
}

/// Waits (deadline) until the incident ends; returns its outcome.
pub async fn wait_closed(j: &Journal, id: &str, limit: Duration) -> String {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if let Some(o) = j.incident(id).await.unwrap().outcome {
            return o;
        }
        assert!(tokio::time::Instant::now() < deadline, "incident {id} did not end within {limit:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

/// Polls `cond` until it holds, failing the test after `limit`.
pub async fn wait_until<F, Fut>(limit: Duration, what: &str, mut cond: F)
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = bool>,
{
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        if cond().await {
            return;
        }
        assert!(tokio::time::Instant::now() < deadline, "timed out after {limit:?} waiting for {what}");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

pub fn outcome(end: RunEnd) -> String {
    match end {
        RunEnd::Finished(o) => o.as_str().to_string(),
        other => format!("{other:?}"),
    }
}

/// A running daemon (`serve` in-process) on 127.0.0.1:0.
pub struct Served {
    pub url: String,
    pub daemon: Arc<orchestrator::daemon::Daemon>,
    pub stop: watch::Sender<bool>,
    pub server: tokio::task::JoinHandle<()>,
}

pub const WEBHOOK_TOKEN: &str = "hook-token-5e1f77aa90";
pub const ONCALL_TOKEN: &str = "oncall-token-0c3d9e51a7";
pub const LEAD_TOKEN: &str = "lead-token-7a2b6c0d4e";
pub const MALLORY_TOKEN: &str = "mallory-token-1f8e2d3c4b";
pub const VIEWER_TOKEN: &str = "viewer-token-6d5c4b3a29";

impl World {
    /// Starts the daemon with tokens for `oncall` and `lead` (on the sandbox playbook's
    /// approver list) and `mallory` (not on it).
    pub async fn serve(&self, edits: &[(&str, &str)], watch_loop: bool) -> Served {
        self.serve_console(edits, watch_loop, Default::default()).await
    }

    /// [`World::serve`] with the web console's options; `watch` (a read-only viewer)
    /// may sign in to the console too.
    pub async fn serve_console(
        &self,
        edits: &[(&str, &str)],
        watch_loop: bool,
        console: orchestrator::server::console::ConsoleOptions,
    ) -> Served {
        serve_fleet_with(&self.journal_path(), &[(self, edits)], watch_loop, console).await
    }
}

/// The test tokens for the daemon's HTTP side.
pub fn test_auth() -> orchestrator::server::auth::AuthConfig {
    use orchestrator::secret::Secret;
    orchestrator::server::auth::AuthConfig {
        webhook_token: Some(Secret::new(WEBHOOK_TOKEN)),
        hmac_secret: Some(Secret::new("hmac-secret-for-tests")),
        approvers: vec![
            ("oncall".into(), Secret::new(ONCALL_TOKEN)),
            ("lead".into(), Secret::new(LEAD_TOKEN)),
            ("mallory".into(), Secret::new(MALLORY_TOKEN)),
        ],
        viewers: vec![("watch".into(), Secret::new(VIEWER_TOKEN))],
    }
}

/// Starts one daemon (`serve` in-process) for several worlds, each its own target
/// (give each playbook its own `name` with an edit), on the journal at `journal`.
pub async fn serve_fleet(journal: &Path, worlds: &[(&World, &[(&str, &str)])], watch_loop: bool) -> Served {
    serve_fleet_with(journal, worlds, watch_loop, Default::default()).await
}

/// [`serve_fleet`] with the web console's options.
pub async fn serve_fleet_with(
    journal: &Path,
    worlds: &[(&World, &[(&str, &str)])],
    watch_loop: bool,
    mut console: orchestrator::server::console::ConsoleOptions,
) -> Served {
    let journal = Journal::open_with(journal, true, Duration::from_millis(300)).await.unwrap();
    let (stop, rx) = watch::channel(false);
    let opts = ExecOptions { wait_for_approval: true, command_poll: Duration::from_millis(50), ..ExecOptions::default() };
    let mut targets = Vec::new();
    for (w, edits) in worlds {
        let path = w.playbook_file(edits);
        let pb = Arc::new(w.load(&path));
        let ports = orchestrator::wiring::real_ports(&pb);
        targets.push(orchestrator::fleet::Target::new(journal.clone(), ports, pb, opts.clone(), rx.clone()));
    }
    let registry = orchestrator::fleet::Registry::new(targets).unwrap();
    let auth = test_auth();
    let daemon = orchestrator::daemon::Daemon::new(journal, registry, &auth.secrets(), rx.clone());
    daemon.load_topology().await.unwrap();
    daemon.resume_open().await.unwrap();
    daemon.start_loops(watch_loop);
    tokio::spawn(daemon.clone().adopt_loop(Duration::from_millis(200)));
    let app = orchestrator::server::App::new(daemon.clone(), auth);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    console.shutdown.get_or_insert_with(|| rx.clone());
    let mut stop_rx = rx;
    let server = tokio::spawn(async move {
        let signal = async move {
            while !*stop_rx.borrow() {
                if stop_rx.changed().await.is_err() {
                    break;
                }
            }
        };
        orchestrator::server::serve_console(listener, app, console, Default::default(), signal).await.unwrap();
    });
    Served { url, daemon, stop, server }
}

pub fn firing_alertmanager(fingerprint: &str) -> serde_json::Value {
    serde_json::json!({
        "version": "4", "groupKey": "{}:{alertname=\"RedisConnectionFailures\"}", "status": "firing", "receiver": "orchestrator",
        "groupLabels": {"alertname": "RedisConnectionFailures"}, "commonLabels": {}, "commonAnnotations": {}, "externalURL": "http://am",
        "truncatedAlerts": 0,
        "alerts": [{"status": "firing", "labels": {"alertname": "RedisConnectionFailures", "severity": "critical"},
            "annotations": {"summary": "Redis ping fails for > 30 seconds"}, "startsAt": "2026-11-26T10:00:00Z",
            "endsAt": "0001-01-01T00:00:00Z", "generatorURL": "http://prom", "fingerprint": fingerprint}]
    })
}

/// Waits until the incident is in one of `states`.
pub async fn wait_state(w: &World, id: &str, states: &[&str], limit: Duration) -> String {
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let inc = j.incident(id).await.unwrap();
        if states.contains(&inc.state.as_str()) {
            return inc.state;
        }
        assert!(inc.outcome.is_none() || states.contains(&inc.state.as_str()), "incident ended {} before reaching {states:?}", inc.state);
        assert!(tokio::time::Instant::now() < deadline, "incident {id} never reached {states:?} (is {})", inc.state);
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
}

/// Runs an incident in the background.
pub fn spawn_run(exec: &Arc<Executor>, id: &str) -> tokio::task::JoinHandle<RunEnd> {
    let exec = exec.clone();
    let id = id.to_string();
    tokio::spawn(async move { exec.run(&id).await.unwrap() })
}
