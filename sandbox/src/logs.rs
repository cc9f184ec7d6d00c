//! The service's in-memory application log: a bounded ring buffer behind
//! `GET /api/v1/logs`, where the orchestrator looks for Redis errors the way the
//! runbook's on-call engineer does.

use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use chrono::{DateTime, SecondsFormat, Utc};
use serde::{Serialize, Serializer};

/// Log levels, serialized lowercase as a Node (NestJS) logger writes them.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Error,
    Warn,
    Info,
    Debug,
}

impl Level {
    pub fn as_str(self) -> &'static str {
        match self {
            Level::Error => "error",
            Level::Warn => "warn",
            Level::Info => "info",
            Level::Debug => "debug",
        }
    }
}

/// One log line as `GET /api/v1/logs` returns it.
#[derive(Debug, Clone, Serialize)]
pub struct LogEntry {
    #[serde(serialize_with = "rfc3339_ms")]
    pub timestamp: DateTime<Utc>,
    pub level: Level,
    pub message: String,
    /// Where it came from, e.g. `Worker[default#1]` or `HealthController`.
    pub context: String,
}

fn rfc3339_ms<S: Serializer>(t: &DateTime<Utc>, s: S) -> Result<S::Ok, S::Error> {
    s.serialize_str(&t.to_rfc3339_opts(SecondsFormat::Millis, true))
}

/// Filters of `GET /api/v1/logs`.
#[derive(Debug, Clone, Default)]
pub struct LogQuery {
    /// Exact level, e.g. `error`.
    pub level: Option<String>,
    /// Case-insensitive substrings that must all occur in the message.
    pub search: Vec<String>,
    /// Keep entries at or after this instant.
    pub since: Option<DateTime<Utc>>,
    /// At most this many entries (newest first).
    pub limit: usize,
}

/// A shared ring buffer of the newest [`LogBuffer::CAPACITY`] entries. Cloning shares it.
///
/// It outlives service restarts (like a log drain would), so history from before a
/// failover stays queryable; use `since` to look only at what is new.
#[derive(Clone, Default)]
pub struct LogBuffer {
    inner: Arc<Mutex<Inner>>,
}

#[derive(Default)]
struct Inner {
    entries: VecDeque<LogEntry>,
    /// Last time each (context, message) was written, to rate-limit repeats.
    last_seen: HashMap<(String, String), Instant>,
}

/// Identical lines from one context are written at most once per this window, so a
/// worker spinning against a dead Redis cannot flush the buffer with one message.
pub const REPEAT_WINDOW: Duration = Duration::from_millis(250);

impl LogBuffer {
    pub const CAPACITY: usize = 1000;

    pub fn new() -> Self {
        Self::default()
    }

    /// Appends an entry unless the same context wrote the same message within
    /// [`REPEAT_WINDOW`]. Returns whether it was written.
    pub fn push(&self, level: Level, context: &str, message: &str) -> bool {
        let now = Instant::now();
        let mut inner = self.inner.lock().unwrap();
        let key = (context.to_string(), message.to_string());
        if let Some(last) = inner.last_seen.get(&key) {
            if now.duration_since(*last) < REPEAT_WINDOW {
                return false;
            }
        }
        if inner.last_seen.len() > Self::CAPACITY {
            // Bounded memory: forget old rate-limit marks (worst case: one extra line).
            inner.last_seen.retain(|_, t| now.duration_since(*t) < REPEAT_WINDOW);
        }
        inner.last_seen.insert(key, now);
        if inner.entries.len() == Self::CAPACITY {
            inner.entries.pop_front();
        }
        inner.entries.push_back(LogEntry { timestamp: Utc::now(), level, message: message.to_string(), context: context.to_string() });
        drop(inner);
        match level {
            Level::Error => tracing::error!(target: "sandbox::service", context, "{message}"),
            Level::Warn => tracing::warn!(target: "sandbox::service", context, "{message}"),
            Level::Info => tracing::info!(target: "sandbox::service", context, "{message}"),
            Level::Debug => tracing::debug!(target: "sandbox::service", context, "{message}"),
        }
        true
    }

    pub fn error(&self, context: &str, message: &str) -> bool {
        self.push(Level::Error, context, message)
    }

    pub fn warn(&self, context: &str, message: &str) -> bool {
        self.push(Level::Warn, context, message)
    }

    pub fn info(&self, context: &str, message: &str) -> bool {
        self.push(Level::Info, context, message)
    }

    /// Matching entries, newest first, truncated to `limit`, plus the number that
    /// matched before truncation.
    pub fn query(&self, q: &LogQuery) -> (Vec<LogEntry>, usize) {
        let needles: Vec<String> = q.search.iter().map(|s| s.to_lowercase()).collect();
        let inner = self.inner.lock().unwrap();
        let matching: Vec<&LogEntry> = inner
            .entries
            .iter()
            .rev()
            .filter(|e| q.level.as_deref().is_none_or(|l| e.level.as_str() == l))
            .filter(|e| q.since.is_none_or(|s| e.timestamp >= s))
            .filter(|e| {
                let m = e.message.to_lowercase();
                needles.iter().all(|n| m.contains(n))
            })
            .collect();
        let total = matching.len();
        (matching.into_iter().take(q.limit).cloned().collect(), total)
    }

    /// Every entry, newest first.
    pub fn entries(&self) -> Vec<LogEntry> {
        self.inner.lock().unwrap().entries.iter().rev().cloned().collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ring_is_bounded_and_queries_filter() {
        let logs = LogBuffer::new();
        for i in 0..(LogBuffer::CAPACITY + 10) {
            logs.info("t", &format!("line {i}"));
        }
        assert_eq!(logs.entries().len(), LogBuffer::CAPACITY);
        logs.error("Worker[default#1]", "Redis connection failed: connect ECONNREFUSED 127.0.0.1:1");
        // A repeat within the window is dropped.
        assert!(!logs.error("Worker[default#1]", "Redis connection failed: connect ECONNREFUSED 127.0.0.1:1"));
        let q = LogQuery { level: Some("error".into()), search: vec!["REDIS".into(), "econnrefused".into()], since: None, limit: 50 };
        let (found, total) = logs.query(&q);
        assert_eq!(total, 1);
        assert_eq!(found[0].context, "Worker[default#1]");
        let q = LogQuery { search: vec!["redis".into(), "auth".into()], limit: 50, ..Default::default() };
        assert_eq!(logs.query(&q).1, 0);
    }
}
