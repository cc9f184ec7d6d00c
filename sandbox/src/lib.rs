//! The sandbox: a stand-in for the runbook's VisAPI service (a Redis job queue in
//! BullMQ's key layout behind the runbook's HTTP endpoints, or the real BullMQ service
//! in `bullmq-service/` as a Node process) and for Render's platform API, plus a kit
//! for real `redis-server` processes, for the orchestrator's demo, integration tests
//! and drills.

pub mod host;
pub mod logs;
pub mod node_service;
pub mod platform;
pub mod queue;
pub mod redis_link;
pub mod redis_server;
pub mod service;
mod worker;

use std::net::SocketAddr;
use std::time::Duration;

use anyhow::Context;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

pub use host::Host;
pub use logs::{Level, LogBuffer, LogEntry, LogQuery};
pub use node_service::NodeService;
pub use platform::{Deploy, Faults, FaultsPatch, Platform, PlatformConfig, Stats};
pub use redis_server::RedisServer;
pub use service::{Service, ServiceConfig};

/// Which service the sandbox runs behind its platform.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum ServiceKind {
    /// The Rust stand-in inside this process (fast and clean; the default).
    #[default]
    InProcess,
    /// `bullmq-service/`: Node with real BullMQ and ioredis, a child process on a fixed
    /// port, with a production service's start-up errors, timeouts and backoffs. Needs
    /// `node` and `npm ci --prefix bullmq-service`.
    Bullmq,
}

/// Everything `start` needs.
#[derive(Clone)]
pub struct SandboxConfig {
    /// The service's initial `REDIS_URL` (also the platform's initial env var).
    pub redis_url: String,
    /// `X-API-Key` of the service.
    pub service_api_key: String,
    /// Bearer token of the platform API.
    pub platform_api_key: String,
    /// The platform's one service id (default `srv-sandbox`).
    pub service_id: String,
    /// Where the service listens (tests use `127.0.0.1:0`).
    pub service_addr: SocketAddr,
    /// Where the platform API listens.
    pub platform_addr: SocketAddr,
    pub workers_per_queue: usize,
    pub job_ms: u64,
    pub workers_enabled: bool,
    /// Delay of each of the two deploy steps, in ms.
    pub deploy_steps_ms: u64,
    /// Which service runs; `Bullmq` uses `service_addr`'s port for every incarnation
    /// (port 0: a free one, chosen once).
    pub service_kind: ServiceKind,
    /// The BullMQ service only: delay of its Redis connections after each start
    /// ([`ServiceConfig::connect_delay_ms`]).
    pub connect_delay_ms: u64,
}

impl SandboxConfig {
    /// Defaults: keys `sandbox-service-key` / `sandbox-platform-key`, service id
    /// `srv-sandbox`, both listeners on `127.0.0.1:0`, 2 workers per queue, 20 ms jobs,
    /// workers enabled, 150 ms deploy steps, the in-process service.
    pub fn new(redis_url: impl Into<String>) -> SandboxConfig {
        let any = SocketAddr::from(([127, 0, 0, 1], 0));
        SandboxConfig {
            redis_url: redis_url.into(),
            service_api_key: "sandbox-service-key".into(),
            platform_api_key: "sandbox-platform-key".into(),
            service_id: "srv-sandbox".into(),
            service_addr: any,
            platform_addr: any,
            workers_per_queue: 2,
            job_ms: 20,
            workers_enabled: true,
            deploy_steps_ms: 150,
            service_kind: ServiceKind::InProcess,
            connect_delay_ms: 0,
        }
    }
}

impl std::fmt::Debug for SandboxConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SandboxConfig")
            .field("redis_url", &redis_link::mask_url(&self.redis_url))
            .field("service_api_key", &"***")
            .field("platform_api_key", &"***")
            .field("service_id", &self.service_id)
            .field("service_addr", &self.service_addr)
            .field("platform_addr", &self.platform_addr)
            .field("workers_per_queue", &self.workers_per_queue)
            .field("job_ms", &self.job_ms)
            .field("workers_enabled", &self.workers_enabled)
            .field("deploy_steps_ms", &self.deploy_steps_ms)
            .field("service_kind", &self.service_kind)
            .finish()
    }
}

/// A running sandbox. Everything stops on [`shutdown`](Sandbox::shutdown) or, abruptly,
/// on drop.
pub struct Sandbox {
    host: Host,
    platform: Platform,
    service_addr: SocketAddr,
    platform_addr: SocketAddr,
    stop: watch::Sender<bool>,
    servers: Vec<JoinHandle<()>>,
}

/// Binds the listeners, seeds the platform's `REDIS_URL`, starts the service. With
/// [`ServiceKind::Bullmq`] it returns once the Node process answers liveness (its
/// Redis connections may still be coming up).
pub async fn start(config: SandboxConfig) -> anyhow::Result<Sandbox> {
    install_crypto_provider();
    let platform_listener =
        TcpListener::bind(config.platform_addr).await.with_context(|| format!("binding platform on {}", config.platform_addr))?;
    let platform_addr = platform_listener.local_addr()?;

    let service_config = ServiceConfig {
        redis_url: config.redis_url.clone(),
        api_key: config.service_api_key.clone(),
        workers_per_queue: config.workers_per_queue,
        job_ms: config.job_ms,
        workers_enabled: config.workers_enabled,
        connect_delay_ms: config.connect_delay_ms,
    };
    let (stop, stop_rx) = watch::channel(false);
    let mut servers = Vec::new();
    let (host, service_addr) = match config.service_kind {
        ServiceKind::InProcess => {
            let service_listener =
                TcpListener::bind(config.service_addr).await.with_context(|| format!("binding service on {}", config.service_addr))?;
            let service_addr = service_listener.local_addr()?;
            let service = Service::start(service_config.clone());
            servers.push(tokio::spawn(serve(service_listener, service.router(), stop_rx.clone())));
            (Host::InProcess(service), service_addr)
        }
        ServiceKind::Bullmq => {
            let node = NodeService::start(config.service_addr, service_config.clone()).await.context("starting the BullMQ service")?;
            let addr = node.addr();
            (Host::Bullmq(node), addr)
        }
    };
    let platform = Platform::hosting(
        PlatformConfig {
            api_key: config.platform_api_key.clone(),
            service_id: config.service_id.clone(),
            deploy_steps_ms: config.deploy_steps_ms,
        },
        host.clone(),
        service_config,
    );
    servers.push(tokio::spawn(serve(platform_listener, platform.router(), stop_rx)));
    Ok(Sandbox { host, platform, service_addr, platform_addr, stop, servers })
}

async fn serve(listener: TcpListener, router: axum::Router, mut stop: watch::Receiver<bool>) {
    let shutdown = async move {
        let _ = stop.wait_for(|s| *s).await;
    };
    if let Err(e) = axum::serve(listener, router).with_graceful_shutdown(shutdown).await {
        tracing::error!("HTTP server failed: {e}");
    }
}

impl Sandbox {
    /// `http://127.0.0.1:PORT` of the service.
    pub fn service_url(&self) -> String {
        format!("http://{}", self.service_addr)
    }

    /// `http://127.0.0.1:PORT` of the platform API.
    pub fn platform_url(&self) -> String {
        format!("http://{}", self.platform_addr)
    }

    pub fn service_addr(&self) -> SocketAddr {
        self.service_addr
    }

    pub fn platform_addr(&self) -> SocketAddr {
        self.platform_addr
    }

    pub fn service_id(&self) -> &str {
        self.platform.service_id()
    }

    /// The in-process service.
    ///
    /// # Panics
    /// When the sandbox runs [`ServiceKind::Bullmq`]: use [`node_service`](Self::node_service)
    /// or [`host`](Self::host) there.
    pub fn service(&self) -> &Service {
        match &self.host {
            Host::InProcess(s) => s,
            Host::Bullmq(_) => panic!("this sandbox runs the BullMQ service: use Sandbox::node_service() or host()"),
        }
    }

    /// The BullMQ service process, when the sandbox runs [`ServiceKind::Bullmq`].
    pub fn node_service(&self) -> Option<&NodeService> {
        match &self.host {
            Host::Bullmq(n) => Some(n),
            Host::InProcess(_) => None,
        }
    }

    /// The service the platform deploys, of either kind.
    pub fn host(&self) -> &Host {
        &self.host
    }

    pub fn platform(&self) -> &Platform {
        &self.platform
    }

    /// Stops accepting requests, lets in-flight ones finish (bounded), stops deploys
    /// in flight, the workers and the Redis connections (or the BullMQ process).
    pub async fn shutdown(mut self) {
        let _ = self.stop.send(true);
        self.platform.shutdown();
        for h in self.servers.drain(..) {
            let abort = h.abort_handle();
            if tokio::time::timeout(Duration::from_secs(2), h).await.is_err() {
                abort.abort();
            }
        }
        self.host.shutdown().await;
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        self.platform.shutdown();
        for h in &self.servers {
            h.abort();
        }
        match &self.host {
            // Worker tasks are aborted when the last handle on their runtime goes; the
            // spawned stop makes that happen even while a request still holds one.
            Host::InProcess(service) => {
                let service = service.clone();
                if let Ok(handle) = tokio::runtime::Handle::try_current() {
                    handle.spawn(async move { service.shutdown().await });
                }
            }
            // Not left to the last clone's drop: an aborted deploy task may hold one
            // until its runtime goes, and the process must not outlive the sandbox.
            Host::Bullmq(node) => node.kill_now(),
        }
    }
}

/// rustls needs one process-wide crypto provider for `rediss://`; installing it twice
/// is harmless.
pub(crate) fn install_crypto_provider() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}
