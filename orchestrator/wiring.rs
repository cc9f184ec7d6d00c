//! Builds the real outside-world bundle from a playbook, and the shutdown signal.

use crate::playbook::Playbook;
use crate::ports::{Ports, SystemClock};
use std::sync::Arc;
use tokio::sync::watch;

/// Installs the process-wide rustls provider (aws-lc-rs) once: redis, reqwest and sqlx
/// must agree on one, or a `rediss://` connection panics at first use.
pub fn install_crypto() {
    let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
}

pub fn real_ports(pb: &Playbook) -> Ports {
    install_crypto();
    Ports {
        redis: Arc::new(crate::probe::RealRedis::new()),
        hooks: Arc::new(crate::hooks::ProcessHooks),
        service: Arc::new(crate::service::HttpService::new(&pb.service)),
        platform: crate::platform::platform_for(&pb.platform),
        notifier: crate::notify::notifier_for(pb),
        pager: crate::pagerduty::pager_for(pb),
        clock: Arc::new(SystemClock),
    }
}

/// A shutdown flag set by SIGTERM or SIGINT. Must be called inside a tokio runtime.
pub fn shutdown_on_signals() -> (watch::Sender<bool>, watch::Receiver<bool>) {
    let (tx, rx) = watch::channel(false);
    let signal_tx = tx.clone();
    tokio::spawn(async move {
        use tokio::signal::unix::{signal, SignalKind};
        let (Ok(mut term), Ok(mut int)) = (signal(SignalKind::terminate()), signal(SignalKind::interrupt())) else { return };
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        tracing::warn!(
            "shutdown requested: finishing the journal write in flight; the incident stays resumable (signal again to stop at once)"
        );
        let _ = signal_tx.send(true);
        // A second signal means "now": the journal is consistent at every await, and
        // resume reconciles whatever step was in flight.
        tokio::select! {
            _ = term.recv() => {}
            _ = int.recv() => {}
        }
        eprintln!("second signal: stopping now; `orchestrator resume` continues the incident");
        // _exit: no atexit handlers racing the runtime's other threads. Nothing is
        // lost: every journal write is a committed transaction or none.
        // SAFETY: _exit has no preconditions.
        unsafe { libc::_exit(130) };
    });
    (tx, rx)
}
