//! The `sandbox` binary: runs the stand-in service and platform API until SIGTERM or
//! SIGINT, announcing its URLs as one JSON line on stdout (for scripts and `make demo`).

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;

use clap::{ArgAction, Parser, ValueEnum};

#[derive(Parser)]
#[command(name = "sandbox", version, about = "Stand-in for the runbook's service and Render's platform API, backed by real Redis")]
struct Args {
    /// The service's initial REDIS_URL.
    #[arg(long, env = "REDIS_URL", hide_env_values = true)]
    redis_url: String,
    /// The service's X-API-Key.
    #[arg(long, env = "SANDBOX_SERVICE_API_KEY", hide_env_values = true)]
    service_api_key: String,
    /// The platform API's bearer token.
    #[arg(long, env = "SANDBOX_PLATFORM_API_KEY", hide_env_values = true)]
    platform_api_key: String,
    /// The platform's service id.
    #[arg(long, default_value = "srv-sandbox")]
    service_id: String,
    /// Listen address of the service (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3000")]
    service_addr: SocketAddr,
    /// Listen address of the platform API (port 0 picks a free one).
    #[arg(long, default_value = "127.0.0.1:3001")]
    platform_addr: SocketAddr,
    /// Workers per queue (critical, default, bulk).
    #[arg(long, default_value_t = 2)]
    workers_per_queue: usize,
    /// How long processing one job takes, in ms.
    #[arg(long, default_value_t = 20)]
    job_ms: u64,
    /// Start workers at all (`--workers-enabled false`: jobs are never processed).
    #[arg(long, default_value_t = true, action = ArgAction::Set)]
    workers_enabled: bool,
    /// Delay of each deploy step (build, update), in ms.
    #[arg(long, default_value_t = 150)]
    deploy_steps_ms: u64,
    /// Which service runs: the in-process stand-in, or the real BullMQ service
    /// (`bullmq-service/`, needs node and `npm ci --prefix bullmq-service`).
    #[arg(long, value_enum, default_value_t = Kind::InProcess)]
    service: Kind,
}

#[derive(Clone, Copy, ValueEnum)]
enum Kind {
    InProcess,
    Bullmq,
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_writer(std::io::stderr)
        .with_ansi(std::io::stderr().is_terminal())
        .with_env_filter(tracing_subscriber::EnvFilter::try_from_default_env().unwrap_or_else(|_| "info".into()))
        .init();
    let a = Args::parse();
    let config = sandbox::SandboxConfig {
        redis_url: a.redis_url,
        service_api_key: a.service_api_key,
        platform_api_key: a.platform_api_key,
        service_id: a.service_id,
        service_addr: a.service_addr,
        platform_addr: a.platform_addr,
        workers_per_queue: a.workers_per_queue,
        job_ms: a.job_ms,
        workers_enabled: a.workers_enabled,
        deploy_steps_ms: a.deploy_steps_ms,
        service_kind: match a.service {
            Kind::InProcess => sandbox::ServiceKind::InProcess,
            Kind::Bullmq => sandbox::ServiceKind::Bullmq,
        },
        connect_delay_ms: 0,
    };
    // Debug of the config masks the keys and the Redis password.
    tracing::info!(?config, "starting sandbox");
    let sb = sandbox::start(config).await?;

    let ready = serde_json::json!({
        "service": sb.service_url(),
        "platform": sb.platform_url(),
        "service_id": sb.service_id(),
    });
    let mut out = std::io::stdout().lock();
    writeln!(out, "{ready}")?;
    out.flush()?;
    drop(out);

    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => {}
        _ = tokio::signal::ctrl_c() => {}
    }
    tracing::info!("shutting down");
    sb.shutdown().await;
    tracing::info!("stopped");
    Ok(())
}
