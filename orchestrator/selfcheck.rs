//! The orchestrator's own health: trouble of its own host (out of file descriptors or
//! memory, no route because its own network is down) seen while probing.
//!
//! Such an error is never evidence that Redis failed, so the probes report it here
//! instead, and `/healthz` and `/metrics` say the orchestrator is unhealthy. It is one
//! record per process on purpose: a descriptor limit or a dead network interface is a
//! property of the process and its host, whichever target or task ran into it.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// How long after the last local error the orchestrator still reports itself unhealthy.
pub const UNHEALTHY_FOR: Duration = Duration::from_secs(30);

struct Record {
    last: Mutex<Option<(Instant, String)>>,
    count: AtomicU64,
}

static RECORD: Record = Record { last: Mutex::new(None), count: AtomicU64::new(0) };

/// Notes one local error (already free of secrets: probe messages are masked).
pub fn report(message: &str) {
    RECORD.count.fetch_add(1, Ordering::Relaxed);
    let mut last = RECORD.last.lock().unwrap_or_else(|p| p.into_inner());
    let first_in_a_while = last.as_ref().is_none_or(|(at, _)| at.elapsed() >= UNHEALTHY_FOR);
    *last = Some((Instant::now(), message.to_string()));
    drop(last);
    if first_in_a_while {
        tracing::error!(error = %message, "the orchestrator's own host is in trouble; not counted as evidence against Redis");
    }
}

/// The last local error, if it was seen within [`UNHEALTHY_FOR`].
pub fn unhealthy() -> Option<String> {
    let last = RECORD.last.lock().unwrap_or_else(|p| p.into_inner());
    last.as_ref().filter(|(at, _)| at.elapsed() < UNHEALTHY_FOR).map(|(_, m)| m.clone())
}

/// Local errors seen since the process started.
pub fn count() -> u64 {
    RECORD.count.load(Ordering::Relaxed)
}
