//! The real Redis probe: PING with a tiny write, latency sampling, INFO, BullMQ queue
//! reads and the flush, each over its own fresh connection.
//!
//! Invariant: no call can hang. Every await is bounded twice, by the redis crate's
//! connection/response timeouts and by our own `tokio::time::timeout`, because a
//! SIGSTOPped Redis accepts TCP connections (the kernel completes the handshake) and
//! then never answers: without a deadline the orchestrator would wait forever on the
//! very failure it exists to handle.
//!
//! A fresh connection per call is deliberate: a cached one could be half-dead after the
//! failure we are probing, and connecting is part of what we judge (refused, DNS, TLS,
//! AUTH all fail there).

use super::classify;
use super::conn::{bounded, connect, ping};
use super::flush;
use crate::ports::{FlushPlan, FlushReport, JobState, LatencyStats, ProgressFn, RedisFailure, RedisInfo, RedisProbe};
use crate::secret::RedisUrl;
use async_trait::async_trait;
use redis::{FromRedisValue, Value};
use std::time::Duration;

/// Probes real Redis servers (`redis://` and `rediss://`).
#[derive(Debug, Clone, Copy)]
pub struct RealRedis {
    _private: (),
}

impl RealRedis {
    pub fn new() -> Self {
        // rustls needs a process-wide crypto provider before the first TLS connection.
        // Installing fails only when one is already installed, which is just as good.
        let _ = rustls::crypto::aws_lc_rs::default_provider().install_default();
        RealRedis { _private: () }
    }
}

impl Default for RealRedis {
    fn default() -> Self {
        Self::new()
    }
}

#[async_trait]
impl RedisProbe for RealRedis {
    async fn check(&self, url: &RedisUrl, timeout: Duration) -> Result<Duration, RedisFailure> {
        let mut con = connect(url, timeout).await?;
        let rtt = ping(url, &mut con, timeout).await?;
        // PING succeeds on a full (noeviction) Redis and on a read-only replica; a
        // write does not. The key expires by itself, so nothing is left behind even
        // when we are cut off right after.
        let key = format!("orchestrator:probe:{}", uuid::Uuid::new_v4().simple());
        let mut set = redis::cmd("SET");
        set.arg(&key).arg(1).arg("PX").arg(10_000);
        let _: Value = bounded(url, "SET probe key", timeout, set.query_async(&mut con)).await?;
        Ok(rtt)
    }

    async fn latency(&self, url: &RedisUrl, samples: u32, timeout: Duration) -> Result<LatencyStats, RedisFailure> {
        let mut con = connect(url, timeout).await?;
        let samples = samples.max(1);
        let mut ms = Vec::with_capacity(samples as usize);
        for _ in 0..samples {
            ms.push(ping(url, &mut con, timeout).await?.as_secs_f64() * 1000.0);
        }
        Ok(stats(&mut ms))
    }

    async fn info(&self, url: &RedisUrl, timeout: Duration) -> Result<RedisInfo, RedisFailure> {
        let mut con = connect(url, timeout).await?;
        // Plain INFO (the default sections) holds server, clients, memory,
        // persistence and replication on every Redis version; INFO with several
        // section names needs Redis 7.
        let text: String = bounded(url, "INFO", timeout, redis::cmd("INFO").query_async(&mut con)).await?;
        let mut info = parse_info(&text);
        // Managed Redis often renames or forbids CONFIG: then maxclients is unknown,
        // not a failure. A timeout or a dropped connection still is one.
        let mut config = redis::cmd("CONFIG");
        config.arg("GET").arg("maxclients");
        match tokio::time::timeout(timeout, config.query_async::<Value>(&mut con)).await {
            Ok(Ok(v)) => info.maxclients = maxclients_from(v),
            Ok(Err(e)) if e.is_io_error() || e.is_timeout() => return Err(classify::from_redis(url, "CONFIG GET maxclients", &e)),
            Ok(Err(_)) => info.maxclients = None,
            Err(_) => return Err(classify::timed_out(url, "CONFIG GET maxclients", timeout)),
        }
        Ok(info)
    }

    async fn active_jobs(&self, url: &RedisUrl, queues: &[String], timeout: Duration) -> Result<Vec<(String, u64)>, RedisFailure> {
        if queues.is_empty() {
            return Ok(Vec::new());
        }
        let mut con = connect(url, timeout).await?;
        let mut pipe = redis::pipe();
        for q in queues {
            pipe.cmd("LLEN").arg(format!("bull:{q}:active"));
        }
        let counts: Vec<u64> = bounded(url, "LLEN active", timeout, pipe.query_async(&mut con)).await?;
        Ok(queues.iter().cloned().zip(counts).collect())
    }

    async fn job_state(&self, url: &RedisUrl, queue: &str, job_id: &str, timeout: Duration) -> Result<JobState, RedisFailure> {
        let mut con = connect(url, timeout).await?;
        let key = |suffix: &str| format!("bull:{queue}:{suffix}");
        // One round trip for every place BullMQ may keep the id; judged in order of
        // finality below, so a job caught mid-move between two keys reads as the
        // further state.
        let mut pipe = redis::pipe();
        pipe.cmd("ZSCORE").arg(key("completed")).arg(job_id);
        pipe.cmd("ZSCORE").arg(key("failed")).arg(job_id);
        pipe.cmd("LPOS").arg(key("active")).arg(job_id);
        pipe.cmd("LPOS").arg(key("wait")).arg(job_id);
        pipe.cmd("LPOS").arg(key("paused")).arg(job_id);
        pipe.cmd("ZSCORE").arg(key("prioritized")).arg(job_id);
        pipe.cmd("ZSCORE").arg(key("delayed")).arg(job_id);
        pipe.cmd("ZSCORE").arg(key("waiting-children")).arg(job_id);
        let found: Vec<Value> = bounded(url, "read job state", timeout, pipe.query_async(&mut con)).await?;
        let present: Vec<bool> = found.iter().map(|v| !matches!(v, Value::Nil)).collect();
        let state = match present.as_slice() {
            [true, ..] => JobState::Completed,
            [_, true, ..] => JobState::Failed,
            [_, _, true, ..] => JobState::Active,
            [_, _, _, rest @ ..] if rest.iter().any(|p| *p) => JobState::Waiting,
            _ => JobState::Unknown,
        };
        Ok(state)
    }

    async fn flush(&self, url: &RedisUrl, plan: &FlushPlan, progress: ProgressFn<'_>) -> Result<FlushReport, RedisFailure> {
        flush::run(url, plan, progress).await
    }
}

fn stats(ms: &mut [f64]) -> LatencyStats {
    ms.sort_by(f64::total_cmp);
    let n = ms.len();
    let median = if n % 2 == 1 { ms[n / 2] } else { (ms[n / 2 - 1] + ms[n / 2]) / 2.0 };
    LatencyStats { samples: n as u32, min_ms: ms[0], median_ms: median, max_ms: ms[n - 1] }
}

/// Reads the fields we judge from INFO's `key:value` lines; missing fields keep their
/// defaults (a Redis that omits `loading` is not loading).
pub fn parse_info(text: &str) -> RedisInfo {
    let mut info = RedisInfo::default();
    for line in text.lines() {
        let Some((k, v)) = line.trim_end_matches('\r').split_once(':') else { continue };
        let num = || v.trim().parse::<u64>().unwrap_or(0);
        match k {
            "role" => info.role = v.trim().to_string(),
            "used_memory" => info.used_memory = num(),
            "maxmemory" => info.maxmemory = num(),
            "connected_clients" => info.connected_clients = num(),
            "loading" => info.loading = v.trim() == "1",
            "redis_version" => info.redis_version = v.trim().to_string(),
            _ => {}
        }
    }
    info
}

/// CONFIG GET answers `[name, value]` in RESP2 and `{name: value}` in RESP3.
fn maxclients_from(v: Value) -> Option<u64> {
    let pairs: Vec<(String, String)> = match v {
        Value::Map(m) => {
            m.into_iter().filter_map(|(k, v)| Some((String::from_redis_value(k).ok()?, String::from_redis_value(v).ok()?))).collect()
        }
        other => {
            let flat: Vec<String> = Vec::from_redis_value(other).ok()?;
            flat.chunks(2).filter(|c| c.len() == 2).map(|c| (c[0].clone(), c[1].clone())).collect()
        }
    };
    pairs.into_iter().find(|(k, _)| k == "maxclients").and_then(|(_, v)| v.parse().ok())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_info() {
        let text = "# Server\r\nredis_version:7.0.15\r\n# Clients\r\nconnected_clients:3\r\n# Memory\r\nused_memory:1048576\r\nmaxmemory:0\r\n# Persistence\r\nloading:1\r\n# Replication\r\nrole:slave\r\n";
        let i = parse_info(text);
        assert_eq!(i.redis_version, "7.0.15");
        assert_eq!(i.connected_clients, 3);
        assert_eq!(i.used_memory, 1_048_576);
        assert_eq!(i.maxmemory, 0);
        assert!(i.loading);
        assert_eq!(i.role, "slave");
        assert_eq!(i.maxclients, None);
    }

    #[test]
    fn latency_stats() {
        let s = stats(&mut [3.0, 1.0, 2.0, 10.0]);
        assert_eq!((s.samples, s.min_ms, s.median_ms, s.max_ms), (4, 1.0, 2.5, 10.0));
        let s = stats(&mut [5.0]);
        assert_eq!((s.min_ms, s.median_ms, s.max_ms), (5.0, 5.0, 5.0));
    }

    #[test]
    fn maxclients_both_protocols() {
        let resp2 = Value::Array(vec![Value::BulkString(b"maxclients".to_vec()), Value::BulkString(b"10000".to_vec())]);
        assert_eq!(maxclients_from(resp2), Some(10000));
        let resp3 = Value::Map(vec![(Value::BulkString(b"maxclients".to_vec()), Value::BulkString(b"42".to_vec()))]);
        assert_eq!(maxclients_from(resp3), Some(42));
        assert_eq!(maxclients_from(Value::Array(vec![])), None);
    }
}
