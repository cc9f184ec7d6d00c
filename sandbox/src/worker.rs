//! Queue workers: take jobs from `bull:Q:wait`, "process" them for a while, and move
//! them to `completed` or `failed`, logging every Redis failure like a Node worker.

use std::sync::Arc;
use std::time::Duration;

use rand::Rng;
use tokio::sync::watch;

use crate::logs::LogBuffer;
use crate::queue::{self, Outcome};
use crate::redis_link::{RedisLink, RedisTarget, TIMEOUT};

/// BLMOVE blocks this long when the queue is empty, so a stop request is seen within
/// about a second even without cancelling the command.
const BLOCK_SECS: f64 = 1.0;
/// On stop, an in-flight BLMOVE may finish within this grace (so a job it just moved
/// is processed, not stranded in `active`); after it, the command is abandoned (a
/// frozen Redis would never answer).
const STOP_GRACE: Duration = Duration::from_millis(1500);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(1);
const PAUSED_POLL: Duration = Duration::from_millis(200);

pub struct WorkerSpec {
    pub queue: &'static str,
    pub index: usize,
    pub job_ms: u64,
    pub target: Arc<RedisTarget>,
    pub logs: LogBuffer,
    pub stop: watch::Receiver<bool>,
}

/// Runs until `stop` turns true. Never returns early on Redis errors: it logs them
/// and retries with a backoff, as BullMQ workers do.
pub async fn run(mut w: WorkerSpec) {
    let context = format!("Worker[{}#{}]", w.queue, w.index + 1);
    // Its own connection: BLMOVE holds the connection while it blocks. Replies may
    // take the block time plus the usual deadline.
    let link = RedisLink::new(w.target.clone(), Duration::from_secs_f64(BLOCK_SECS) + TIMEOUT);
    let token = format!("{:016x}", rand::rng().random::<u64>());
    let mut backoff = BACKOFF_MIN;

    // Set once a stop is seen, also when the sender is gone (then `changed()` fails
    // at once and the value may never turn true).
    let mut stopping = false;
    while !stopping && !*w.stop.borrow() {
        let paused = match queue::is_paused(&link, w.queue).await {
            Ok(p) => p,
            Err(f) => {
                w.logs.error(&context, &f.message);
                if sleep_or_stop(&mut w.stop, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        if paused {
            if sleep_or_stop(&mut w.stop, PAUSED_POLL).await {
                break;
            }
            continue;
        }

        let take = queue::take(&link, w.queue, BLOCK_SECS);
        tokio::pin!(take);
        let taken = tokio::select! {
            r = &mut take => r,
            _ = w.stop.changed() => {
                stopping = true;
                match tokio::time::timeout(STOP_GRACE, &mut take).await {
                    Ok(r) => r,
                    Err(_) => break,
                }
            }
        };
        let id = match taken {
            Ok(Some(id)) => id,
            Ok(None) => continue,
            Err(f) => {
                w.logs.error(&context, &f.message);
                if sleep_or_stop(&mut w.stop, backoff).await {
                    break;
                }
                backoff = (backoff * 2).min(BACKOFF_MAX);
                continue;
            }
        };
        backoff = BACKOFF_MIN;
        // A taken job is finished even if a stop arrives meanwhile (graceful close).
        process(&link, &w, &context, &token, &id).await;
    }
}

async fn process(link: &RedisLink, w: &WorkerSpec, context: &str, token: &str, id: &str) {
    let data = match queue::start_job(link, w.queue, id, token).await {
        Ok(queue::Started::Running(d)) => d,
        Ok(queue::Started::Paused) => {
            let mut stop = w.stop.clone();
            sleep_or_stop(&mut stop, PAUSED_POLL).await;
            return;
        }
        Err(f) => {
            w.logs.error(context, &format!("{} (job {id})", f.message));
            return;
        }
    };
    tokio::time::sleep(Duration::from_millis(w.job_ms)).await;

    let parsed: serde_json::Value = data.as_deref().and_then(|d| serde_json::from_str(d).ok()).unwrap_or_default();
    let outcome = if parsed.get("fail").and_then(|v| v.as_bool()) == Some(true) {
        let reason = parsed.get("failReason").and_then(|v| v.as_str()).unwrap_or("Job failed: payload asked to fail").to_string();
        Outcome::Failed { reason }
    } else {
        let rv = serde_json::json!({ "ok": true, "queue": w.queue, "processedBy": context });
        Outcome::Completed { return_value: rv.to_string() }
    };

    // The result must land; a short retry rides out a blip, after which the job stays
    // in `active` with an expiring lock, as a crashed BullMQ worker leaves it.
    for attempt in 0..3 {
        match queue::finish_job(link, w.queue, id, &outcome).await {
            Ok(true) => {
                if let Outcome::Failed { reason } = &outcome {
                    w.logs.warn(context, &format!("Job {id} in queue {} failed: {reason}", w.queue));
                }
                return;
            }
            Ok(false) => {
                w.logs.warn(context, &format!("Missing key for job {id}. moveToFinished (queue {})", w.queue));
                return;
            }
            Err(f) => {
                w.logs.error(context, &format!("{} (job {id})", f.message));
                if attempt < 2 {
                    tokio::time::sleep(BACKOFF_MIN * (attempt + 1)).await;
                }
            }
        }
    }
}

/// Sleeps, returning true early if a stop was requested.
async fn sleep_or_stop(stop: &mut watch::Receiver<bool>, d: Duration) -> bool {
    if *stop.borrow() {
        return true;
    }
    tokio::select! {
        _ = tokio::time::sleep(d) => *stop.borrow(),
        _ = stop.changed() => true,
    }
}
