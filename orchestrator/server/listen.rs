//! The accept loop of `serve`: bounded header and body reads, a connection limit below
//! the descriptor limit, and a graceful shutdown with a deadline.
//!
//! `axum::serve` has none of these: a client that sends half a request holds its
//! connection (and, at shutdown, the whole process) for as long as it likes, and idle
//! connections can take every descriptor until `/healthz` and webhooks time out.
//!
//! Invariants:
//! - at most [`Limits::max_connections`] connections are open; when a new one arrives
//!   at the limit, the oldest connection with no request in flight (idle, or still
//!   sending its headers) is closed to make room, so well-behaved clients are served
//!   whatever idle clients do;
//! - a request's headers must arrive within `header_timeout` and its body within
//!   `body_timeout`;
//! - after shutdown is signalled, idle connections close at once, requests in flight
//!   get `shutdown_grace`, and then every connection is dropped: `serve` returns within
//!   `shutdown_grace` (plus a scheduling tick) whatever clients do.

use axum::body::Body;
use axum::Router;
use hyper_util::rt::{TokioIo, TokioTimer};
use std::collections::BTreeMap;
use std::future::Future;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::{watch, Notify};
use tower::ServiceExt;

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub header_timeout: Duration,
    pub body_timeout: Duration,
    pub max_connections: usize,
    pub shutdown_grace: Duration,
}

/// Descriptors kept free for the journal, Redis, the platform and the service.
pub const RESERVED_FDS: u64 = 64;
/// Connections at most, whatever the descriptor limit.
pub const MAX_CONNECTIONS: usize = 1024;
/// How long requests in flight may finish after SIGTERM.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

impl Default for Limits {
    fn default() -> Self {
        Limits {
            header_timeout: Duration::from_secs(10),
            body_timeout: Duration::from_secs(10),
            max_connections: connection_limit(),
            shutdown_grace: SHUTDOWN_GRACE,
        }
    }
}

/// Below the soft descriptor limit by [`RESERVED_FDS`] (at least 8), at most
/// [`MAX_CONNECTIONS`].
pub fn connection_limit() -> usize {
    let mut lim = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: getrlimit writes into the struct we pass.
    let soft = if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut lim) } == 0 { lim.rlim_cur } else { 1024 };
    (soft.saturating_sub(RESERVED_FDS) as usize).clamp(8, MAX_CONNECTIONS)
}

struct Conn {
    /// Requests in flight on this connection.
    busy: Arc<AtomicUsize>,
    close: Arc<Notify>,
}

/// Open connections by accept order (oldest first).
#[derive(Default)]
struct Table {
    next: u64,
    open: BTreeMap<u64, Conn>,
}

impl Table {
    /// Closes the oldest connection with no request in flight; `false` if all are busy.
    fn evict_idle(&mut self) -> bool {
        let victim = self.open.iter().find(|(_, c)| c.busy.load(Ordering::Acquire) == 0).map(|(id, _)| *id);
        match victim.and_then(|id| self.open.remove(&id)) {
            Some(c) => {
                c.close.notify_one();
                true
            }
            None => false,
        }
    }
}

/// Counts a request in flight for as long as it lives.
struct Busy(Arc<AtomicUsize>);

impl Drop for Busy {
    fn drop(&mut self) {
        self.0.fetch_sub(1, Ordering::AcqRel);
    }
}

pub async fn serve(
    listener: tokio::net::TcpListener,
    router: Router,
    limits: Limits,
    shutdown: impl Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    let router = router.layer(tower_http::timeout::RequestBodyTimeoutLayer::new(limits.body_timeout));
    let table: Arc<Mutex<Table>> = Default::default();
    let (stop_tx, stop_rx) = watch::channel(false);
    let mut tasks = tokio::task::JoinSet::new();
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            _ = &mut shutdown => break,
            a = listener.accept() => a,
        };
        while tasks.try_join_next().is_some() {}
        let (stream, _) = match accepted {
            Ok(a) => a,
            Err(e) => {
                // Out of descriptors (or a connection reset before accept): make room
                // and try again shortly, never spin.
                tracing::warn!(error = %e, "accept failed; closing an idle connection");
                table.lock().expect("connection table").evict_idle();
                tokio::time::sleep(Duration::from_millis(20)).await;
                continue;
            }
        };
        let (id, busy, close) = {
            let mut t = table.lock().expect("connection table");
            if t.open.len() >= limits.max_connections && !t.evict_idle() {
                // Every connection has a request in flight: this one waits its turn by
                // reconnecting; dropping it closes it at once.
                tracing::warn!(limit = limits.max_connections, "connection limit reached with every connection busy; refusing one");
                continue;
            }
            let id = t.next;
            t.next += 1;
            let conn = Conn { busy: Arc::new(AtomicUsize::new(0)), close: Arc::new(Notify::new()) };
            let handles = (conn.busy.clone(), conn.close.clone());
            t.open.insert(id, conn);
            (id, handles.0, handles.1)
        };
        let _ = stream.set_nodelay(true);
        let router = router.clone();
        let table = table.clone();
        let mut stop = stop_rx.clone();
        tasks.spawn(async move {
            let counted = busy.clone();
            let service = hyper::service::service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                counted.fetch_add(1, Ordering::AcqRel);
                let guard = Busy(counted.clone());
                let router = router.clone();
                async move {
                    let resp = router.oneshot(req.map(Body::new)).await;
                    drop(guard);
                    resp
                }
            });
            let mut builder = hyper::server::conn::http1::Builder::new();
            builder.timer(TokioTimer::new()).header_read_timeout(limits.header_timeout);
            let conn = builder.serve_connection(TokioIo::new(stream), service);
            tokio::pin!(conn);
            let mut draining = false;
            loop {
                tokio::select! {
                    _ = conn.as_mut() => break,
                    _ = close.notified() => break,
                    changed = stop.changed(), if !draining => {
                        let _ = changed;
                        draining = true;
                        // Idle connections close now; one with a request in flight after
                        // its answer. The deadline is the caller's.
                        conn.as_mut().graceful_shutdown();
                    }
                }
            }
            table.lock().expect("connection table").open.remove(&id);
        });
    }
    drop(listener);
    let _ = stop_tx.send(true);
    let drained = tokio::time::timeout(limits.shutdown_grace, async { while tasks.join_next().await.is_some() {} }).await;
    if drained.is_err() {
        tracing::warn!(left = tasks.len(), grace = ?limits.shutdown_grace, "connections still open after the shutdown grace; closing them");
        tasks.abort_all();
        while tasks.join_next().await.is_some() {}
    }
    Ok(())
}
