//! The job queue in BullMQ's Redis key layout (`bull:Q:*`), so the orchestrator's
//! flush patterns and queue guards meet the same keys as in production.
//!
//! Per queue `Q`: list `bull:Q:wait` (new jobs LPUSHed, taken from the right),
//! list `bull:Q:active`, sorted sets `bull:Q:completed` / `bull:Q:failed` scored by
//! finish time in ms, hash `bull:Q:meta` (a `paused` field pauses workers), counter
//! `bull:Q:id`, stream `bull:Q:events`, job hashes `bull:Q:<id>` and their locks
//! `bull:Q:<id>:lock`.

use std::collections::HashMap;

use serde::Serialize;

use crate::redis_link::{Op, RedisFailure, RedisLink};

/// The service's queues, as in the runbook's metrics.
pub const QUEUES: [&str; 3] = ["critical", "default", "bulk"];

/// How long a worker holds a job's lock (BullMQ's default lockDuration).
pub const LOCK_MS: u64 = 30_000;

/// Approximate cap of each queue's event stream (`XADD ... MAXLEN ~ 1000`).
pub const EVENTS_MAXLEN: u64 = 1000;

/// Key names of one queue.
#[derive(Debug, Clone)]
pub struct Keys {
    pub queue: String,
}

impl Keys {
    pub fn new(queue: &str) -> Keys {
        Keys { queue: queue.to_string() }
    }
    /// `bull:Q:` — the prefix every key of the queue starts with.
    pub fn prefix(&self) -> String {
        format!("bull:{}:", self.queue)
    }
    pub fn key(&self, suffix: &str) -> String {
        format!("bull:{}:{}", self.queue, suffix)
    }
    pub fn job(&self, id: &str) -> String {
        self.key(id)
    }
    pub fn lock(&self, id: &str) -> String {
        format!("bull:{}:{}:lock", self.queue, id)
    }
}

/// Counts of one queue, as in `/api/v1/queue/metrics`.
#[derive(Debug, Clone, Copy, Default, Serialize, PartialEq, Eq)]
pub struct QueueCounts {
    pub waiting: u64,
    pub active: u64,
    pub completed: u64,
    pub failed: u64,
}

/// A job's state as read from the keys.
#[derive(Debug, Clone, Serialize)]
pub struct JobInfo {
    pub id: String,
    pub queue: String,
    /// `waiting`, `active`, `completed`, `failed` or `unknown`.
    pub state: &'static str,
    pub name: Option<String>,
    pub timestamp: Option<i64>,
    #[serde(rename = "processedOn")]
    pub processed_on: Option<i64>,
    #[serde(rename = "finishedOn")]
    pub finished_on: Option<i64>,
    #[serde(rename = "failedReason", skip_serializing_if = "Option::is_none")]
    pub failed_reason: Option<String>,
    #[serde(rename = "returnvalue", skip_serializing_if = "Option::is_none")]
    pub return_value: Option<serde_json::Value>,
}

/// Enqueue atomically, like BullMQ's addJob: id from INCR, job hash, LPUSH to wait,
/// events. (Keys are derived inside the script from the prefix, as BullMQ does.)
const ADD_JOB: &str = r#"
local id = redis.call('INCR', KEYS[1])
local jobKey = ARGV[1] .. id
redis.call('HSET', jobKey, 'name', ARGV[2], 'data', ARGV[3], 'opts', '{}',
  'timestamp', ARGV[4], 'delay', 0, 'priority', 0, 'attemptsMade', 0)
redis.call('LPUSH', KEYS[2], id)
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', 'added', 'jobId', id, 'name', ARGV[2])
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[5], '*', 'event', 'waiting', 'jobId', id)
return id
"#;

/// Finish a job atomically, like BullMQ's moveToFinished: out of active, into
/// completed/failed, result fields, lock released, event. Returns -1 when the job hash
/// is gone (e.g. flushed while it ran), as BullMQ refuses a missing job.
const FINISH_JOB: &str = r#"
if redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('LREM', KEYS[1], -1, ARGV[1])
  redis.call('DEL', KEYS[4])
  return -1
end
redis.call('LREM', KEYS[1], -1, ARGV[1])
redis.call('ZADD', KEYS[2], ARGV[2], ARGV[1])
redis.call('HSET', KEYS[3], 'finishedOn', ARGV[2], ARGV[3], ARGV[4], 'attemptsMade', 1)
redis.call('DEL', KEYS[4])
redis.call('XADD', KEYS[5], 'MAXLEN', '~', ARGV[6], '*', 'event', ARGV[5], 'jobId', ARGV[1], ARGV[3], ARGV[4])
return 1
"#;

pub fn now_ms() -> i64 {
    chrono::Utc::now().timestamp_millis()
}

/// Adds a job named `name` with JSON `data` to `queue`; returns its id.
pub async fn enqueue(link: &RedisLink, queue: &str, name: &str, data: &str) -> Result<String, RedisFailure> {
    let k = Keys::new(queue);
    let script = redis::Script::new(ADD_JOB);
    let ts = now_ms();
    link.run(Op::Command, |mut c| {
        let mut inv = script.key(k.key("id"));
        inv.key(k.key("wait")).key(k.key("events"));
        inv.arg(k.prefix()).arg(name).arg(data).arg(ts).arg(EVENTS_MAXLEN);
        async move { inv.invoke_async::<i64>(&mut c).await }
    })
    .await
    .map(|id| id.to_string())
}

/// Per-queue counts, read in one round trip. `waiting` includes the `paused` list and
/// `prioritized` set, as BullMQ's waiting count does.
pub async fn counts(link: &RedisLink) -> Result<Vec<(&'static str, QueueCounts)>, RedisFailure> {
    let values: Vec<u64> = link
        .run(Op::Command, |mut c| async move {
            let mut p = redis::pipe();
            for q in QUEUES {
                let k = Keys::new(q);
                p.llen(k.key("wait"))
                    .llen(k.key("paused"))
                    .zcard(k.key("prioritized"))
                    .llen(k.key("active"))
                    .zcard(k.key("completed"))
                    .zcard(k.key("failed"));
            }
            p.query_async::<Vec<u64>>(&mut c).await
        })
        .await?;
    Ok(QUEUES
        .iter()
        .zip(values.chunks(6))
        .map(|(q, v)| (*q, QueueCounts { waiting: v[0] + v[1] + v[2], active: v[3], completed: v[4], failed: v[5] }))
        .collect())
}

/// Reads a job's hash and where its id sits.
pub async fn job_info(link: &RedisLink, queue: &str, id: &str) -> Result<JobInfo, RedisFailure> {
    let k = Keys::new(queue);
    #[allow(clippy::type_complexity)]
    let (hash, completed, failed, active, wait, paused): (
        HashMap<String, String>,
        Option<f64>,
        Option<f64>,
        Option<i64>,
        Option<i64>,
        Option<i64>,
    ) = link
        .run(Op::Command, |mut c| {
            let k = k.clone();
            async move {
                redis::pipe()
                    .hgetall(k.job(id))
                    .zscore(k.key("completed"), id)
                    .zscore(k.key("failed"), id)
                    .cmd("LPOS")
                    .arg(k.key("active"))
                    .arg(id)
                    .cmd("LPOS")
                    .arg(k.key("wait"))
                    .arg(id)
                    .cmd("LPOS")
                    .arg(k.key("paused"))
                    .arg(id)
                    .query_async(&mut c)
                    .await
            }
        })
        .await?;
    let state = if hash.is_empty() {
        "unknown"
    } else if completed.is_some() {
        "completed"
    } else if failed.is_some() {
        "failed"
    } else if active.is_some() {
        "active"
    } else if wait.is_some() || paused.is_some() {
        "waiting"
    } else {
        "unknown"
    };
    let num = |f: &str| hash.get(f).and_then(|v| v.parse::<i64>().ok());
    Ok(JobInfo {
        id: id.to_string(),
        queue: queue.to_string(),
        state,
        name: hash.get("name").cloned(),
        timestamp: num("timestamp"),
        processed_on: num("processedOn"),
        finished_on: num("finishedOn"),
        failed_reason: hash.get("failedReason").cloned(),
        return_value: hash.get("returnvalue").map(|v| serde_json::from_str(v).unwrap_or(serde_json::Value::String(v.clone()))),
    })
}

/// Whether `bull:Q:meta` has a `paused` field.
pub async fn is_paused(link: &RedisLink, queue: &str) -> Result<bool, RedisFailure> {
    let meta = Keys::new(queue).key("meta");
    link.run(Op::Command, |mut c| {
        let meta = meta.clone();
        async move { redis::cmd("HEXISTS").arg(meta).arg("paused").query_async::<bool>(&mut c).await }
    })
    .await
}

/// BLMOVE `wait` → `active` (right to left, oldest first), blocking up to `block_secs`.
pub async fn take(link: &RedisLink, queue: &str, block_secs: f64) -> Result<Option<String>, RedisFailure> {
    let k = Keys::new(queue);
    link.run(Op::Command, |mut c| {
        let (wait, active) = (k.key("wait"), k.key("active"));
        async move {
            redis::cmd("BLMOVE").arg(wait).arg(active).arg("RIGHT").arg("LEFT").arg(block_secs).query_async::<Option<String>>(&mut c).await
        }
    })
    .await
}

/// Starts a taken job, atomically: if the queue was paused meanwhile (BLMOVE may have
/// been blocking when the flag was set), the job goes back to the consuming end of
/// `wait` and `Paused` is returned; otherwise the job is locked, marked processed-on
/// now, an `active` event is emitted, and its data is returned.
const START_JOB: &str = r#"
if redis.call('HEXISTS', KEYS[5], 'paused') == 1 then
  redis.call('LREM', KEYS[1], -1, ARGV[1])
  redis.call('RPUSH', KEYS[6], ARGV[1])
  return {0, false}
end
redis.call('SET', KEYS[3], ARGV[2], 'PX', ARGV[3])
redis.call('HSET', KEYS[2], 'processedOn', ARGV[4])
redis.call('XADD', KEYS[4], 'MAXLEN', '~', ARGV[5], '*', 'event', 'active', 'jobId', ARGV[1], 'prev', 'waiting')
return {1, redis.call('HGET', KEYS[2], 'data')}
"#;

/// What [`start_job`] found.
pub enum Started {
    /// Locked and running; the job's data (None if the hash is gone).
    Running(Option<String>),
    /// The queue is paused; the job was put back.
    Paused,
}

pub async fn start_job(link: &RedisLink, queue: &str, id: &str, token: &str) -> Result<Started, RedisFailure> {
    let k = Keys::new(queue);
    let script = redis::Script::new(START_JOB);
    let (running, data): (i64, Option<String>) = link
        .run(Op::Command, |mut c| {
            let mut inv = script.key(k.key("active"));
            inv.key(k.job(id)).key(k.lock(id)).key(k.key("events")).key(k.key("meta")).key(k.key("wait"));
            inv.arg(id).arg(token).arg(LOCK_MS).arg(now_ms()).arg(EVENTS_MAXLEN);
            async move { inv.invoke_async(&mut c).await }
        })
        .await?;
    Ok(if running == 1 { Started::Running(data) } else { Started::Paused })
}

/// How a job ended.
pub enum Outcome {
    Completed { return_value: String },
    Failed { reason: String },
}

/// Moves a job to `completed` or `failed`. Returns false when the job hash had vanished.
pub async fn finish_job(link: &RedisLink, queue: &str, id: &str, outcome: &Outcome) -> Result<bool, RedisFailure> {
    let k = Keys::new(queue);
    let script = redis::Script::new(FINISH_JOB);
    let finished = now_ms();
    let (set, field, value, event) = match outcome {
        Outcome::Completed { return_value } => ("completed", "returnvalue", return_value.as_str(), "completed"),
        Outcome::Failed { reason } => ("failed", "failedReason", reason.as_str(), "failed"),
    };
    let r: i64 = link
        .run(Op::Command, |mut c| {
            let mut inv = script.key(k.key("active"));
            inv.key(k.key(set)).key(k.job(id)).key(k.lock(id)).key(k.key("events"));
            inv.arg(id).arg(finished).arg(field).arg(value).arg(event).arg(EVENTS_MAXLEN);
            async move { inv.invoke_async::<i64>(&mut c).await }
        })
        .await?;
    Ok(r == 1)
}
