//! Flush of stale keys from the new Redis: SCAN + UNLINK in batches, pausing while the
//! target's latency is above the plan's bound, so the service keeps being served while
//! its keys are removed.
//!
//! Why not `KEYS` or a Lua loop over the keyspace: both run as one command, and Redis
//! runs one command at a time, so every other client waits for the whole deletion.
//! SCAN + UNLINK keeps each command small (about `batch` keys) and lets other clients'
//! commands in between. Each step is one short script (`SWEEP_STEP`: one SCAN, one
//! UNLINK of what it returned), so no key crosses the wire; where a server refuses
//! scripts (some managed Redis do), the same SCAN + UNLINK is sent from here.
//!
//! Invariants:
//! - Only keys returned by `SCAN ... MATCH pattern` are ever unlinked: a key matching
//!   none of the patterns is never deleted (except with `flushdb`, which means all).
//! - The flush is idempotent: a rerun after a crash scans again and deletes what is
//!   left; UNLINK of a key already gone counts zero.
//! - Every round trip is bounded by [`OP_TIMEOUT`], and pausing is bounded by
//!   [`MAX_STALL`]: the flush fails (class `Timeout`) rather than hang.
//! - When the flush returns (or its future is dropped) no UNLINK of ours is still
//!   waiting to be sent: in-flight requests are awaited or aborted.

use super::classify;
use super::conn::{bounded, connect, ping};
use crate::model::FailureClass;
use crate::ports::{FlushPlan, FlushProgress, FlushReport, ProgressFn, RedisFailure};
use crate::secret::RedisUrl;
use redis::aio::MultiplexedConnection;
use redis::{FromRedisValue, Value};
use std::collections::{HashSet, VecDeque};
use std::time::{Duration, Instant};
use tokio::task::JoinHandle;

/// Bound on one round trip (connect, SCAN, UNLINK, PING).
pub const OP_TIMEOUT: Duration = Duration::from_secs(10);
/// How often the target's latency is measured while flushing.
pub const CHECK_EVERY: Duration = Duration::from_millis(50);
/// Longest single pause; pauses start at the latency bound (at least 5 ms) and double.
pub const MAX_BACKOFF: Duration = Duration::from_secs(1);
/// Longest the target may stay slow before the flush gives up.
pub const MAX_STALL: Duration = Duration::from_secs(120);
/// UNLINK batches sent but not yet answered, at most. Keeps the server busy while we
/// decode the next SCAN reply, without queueing unbounded work on it.
const UNLINKS_IN_FLIGHT: usize = 3;

/// Runs the plan against `url`, calling `progress` after every batch.
///
/// With `flushdb` the database is emptied by one `FLUSHDB ASYNC` (the server frees
/// memory in a background thread) and the count is DBSIZE just before; the patterns
/// are then ignored, because `flushdb` means every key.
///
/// A dry run counts without deleting: each key SCAN returns is counted once, under the
/// first pattern that matched it (keys are remembered in a set, so SCAN's occasional
/// duplicates and overlapping patterns do not inflate the count). That is exactly what
/// a real run would delete if nothing is written meanwhile; keys created or removed
/// during the scan may or may not be seen, as SCAN guarantees nothing for them. The set
/// costs memory in proportion to the matching keys.
pub async fn run(url: &RedisUrl, plan: &FlushPlan, progress: ProgressFn<'_>) -> Result<FlushReport, RedisFailure> {
    let started = Instant::now();
    let mut work = connect(url, OP_TIMEOUT).await?;
    let monitor = connect(url, OP_TIMEOUT).await?;
    let mut guard = LatencyGuard::new(url.clone(), monitor, plan.max_latency);

    let mut report = FlushReport { per_pattern: Vec::new(), deleted: 0, scanned: 0, pauses: 0, elapsed_ms: 0, dry_run: plan.dry_run };

    if plan.flushdb {
        let keys: u64 = bounded(url, "DBSIZE", OP_TIMEOUT, redis::cmd("DBSIZE").query_async(&mut work)).await?;
        if !plan.dry_run {
            let mut flush = redis::cmd("FLUSHDB");
            flush.arg("ASYNC");
            let _: Value = bounded(url, "FLUSHDB ASYNC", OP_TIMEOUT, flush.query_async(&mut work)).await?;
        }
        report.per_pattern.push(("*".to_string(), keys));
        report.scanned = keys;
        report.deleted = keys;
        progress(FlushProgress { pattern_index: 0, scanned: keys, deleted: keys, pauses: 0 });
    } else {
        let mut seen: HashSet<Vec<u8>> = HashSet::new();
        for (index, pattern) in plan.patterns.iter().enumerate() {
            let mut sweep = Sweep {
                url,
                plan,
                pattern,
                index,
                seen: &mut seen,
                report: &mut report,
                guard: &mut guard,
                progress,
                unlinks: InFlight(VecDeque::new()),
            };
            let n = sweep.run(&work).await?;
            report.per_pattern.push((pattern.clone(), n));
        }
    }

    report.pauses = guard.pauses;
    report.elapsed_ms = started.elapsed().as_millis() as u64;
    Ok(report)
}

type Reply<T> = JoinHandle<Result<T, RedisFailure>>;

/// One flush step inside Redis (`replicate_commands` lets Redis 3.2–4 write after the
/// non-deterministic SCAN; later versions always do): one SCAN with the pattern and COUNT, then UNLINK of
/// exactly the keys it returned (in chunks, as Lua's `unpack` is bounded). Returns
/// `{next cursor, keys unlinked, keys returned}`. Bounded work, like a plain SCAN.
const SWEEP_STEP: &str = r#"
if redis.replicate_commands then redis.replicate_commands() end
local r = redis.call('SCAN', ARGV[1], 'MATCH', ARGV[2], 'COUNT', ARGV[3])
local keys = r[2]
local n = 0
for i = 1, #keys, 1000 do
  n = n + redis.call('UNLINK', unpack(keys, i, math.min(i + 999, #keys)))
end
return {r[1], n, #keys}
"#;

/// Whether an error means "this server does not run scripts" (disabled commands,
/// ACLs), as opposed to a failure of the server.
fn scripts_refused(message: &str) -> bool {
    let m = message.to_ascii_lowercase();
    ["unknown command", "noperm", "no permissions", "not allowed", "disabled"].iter().any(|p| m.contains(p))
}

/// One pattern's SCAN loop.
struct Sweep<'a, 'p> {
    url: &'a RedisUrl,
    plan: &'a FlushPlan,
    pattern: &'a str,
    index: usize,
    /// Dry run only: keys already counted.
    seen: &'a mut HashSet<Vec<u8>>,
    report: &'a mut FlushReport,
    guard: &'a mut LatencyGuard,
    progress: ProgressFn<'p>,
    unlinks: InFlight<u64>,
}

impl Sweep<'_, '_> {
    /// Returns the number of keys deleted (or counted) for this pattern: by server-side
    /// steps when the server runs scripts, else by client-side SCAN + UNLINK.
    async fn run(&mut self, work: &MultiplexedConnection) -> Result<u64, RedisFailure> {
        if !self.plan.dry_run {
            if let Some(n) = self.run_server_side(work).await? {
                return Ok(n);
            }
        }
        self.run_client_side(work).await
    }

    /// One `SWEEP_STEP` script per batch: bounded work per call (like a SCAN), and the
    /// matched keys never travel to us and back. `Ok(None)` when the server refuses
    /// scripts before anything was deleted.
    async fn run_server_side(&mut self, work: &MultiplexedConnection) -> Result<Option<u64>, RedisFailure> {
        let script = redis::Script::new(SWEEP_STEP);
        let mut con = work.clone();
        let mut matched: u64 = 0;
        let mut cursor: u64 = 0;
        loop {
            let mut call = script.prepare_invoke();
            call.arg(cursor).arg(self.pattern).arg(self.plan.batch.max(1));
            let step = bounded(self.url, "flush step", OP_TIMEOUT, call.invoke_async::<(String, u64, u64)>(&mut con));
            let result = if self.guard.due() {
                let (reply, rtt) = tokio::join!(step, self.guard.ping());
                self.guard.observe(rtt?);
                reply
            } else {
                step.await
            };
            let (next, deleted, returned) = match result {
                Ok((next, deleted, returned)) => {
                    let next: u64 = next.parse().map_err(|_| {
                        classify::other(self.url, FailureClass::Unknown, "flush step", &format!("cursor {next:?} is not a number"))
                    })?;
                    (next, deleted, returned)
                }
                Err(e) if cursor == 0 && matched == 0 && scripts_refused(&e.message) => {
                    tracing::info!(error = %e.message, "server refuses scripts; flushing with client-side SCAN + UNLINK");
                    return Ok(None);
                }
                Err(e) => return Err(e),
            };
            self.guard.hold_while_slow().await?;
            matched += deleted;
            self.report.deleted += deleted;
            self.report.scanned += returned;
            (self.progress)(FlushProgress {
                pattern_index: self.index,
                scanned: self.report.scanned,
                deleted: self.report.deleted,
                pauses: self.guard.pauses,
            });
            if next == 0 {
                return Ok(Some(matched));
            }
            cursor = next;
        }
    }

    /// SCAN's cursor chain is sequential, but the deletion need not wait for it: the
    /// keys a SCAN returns are unlinked from a task of their own (at most
    /// [`UNLINKS_IN_FLIGHT`] batches outstanding), so their UNLINK travels and runs while
    /// the next SCAN is sent and its reply parsed. Unlinking during a SCAN is safe: SCAN
    /// still returns every key that exists for the whole scan, and the unlinked ones
    /// were already returned.
    async fn run_client_side(&mut self, work: &MultiplexedConnection) -> Result<u64, RedisFailure> {
        let mut matched: u64 = 0;
        let mut cursor: Option<u64> = Some(0);
        let mut con = work.clone();
        while let Some(at) = cursor.take() {
            let mut cmd = redis::cmd("SCAN");
            cmd.arg(at).arg("MATCH").arg(self.pattern).arg("COUNT").arg(self.plan.batch.max(1));
            let scan = bounded(self.url, "SCAN", OP_TIMEOUT, cmd.query_async::<Value>(&mut con));
            let reply = if self.guard.due() {
                // The PING queues behind our requests on the server, so it measures what
                // any other client experiences while we flush.
                let (reply, rtt) = tokio::join!(scan, self.guard.ping());
                self.guard.observe(rtt?);
                reply?
            } else {
                scan.await?
            };
            let (next, keys): (u64, Vec<Vec<u8>>) = decode(self.url, "SCAN", reply)?;
            // Pause before sending more work, not after: the pause is what lets the
            // server's other clients catch up.
            self.guard.hold_while_slow().await?;
            if next != 0 {
                cursor = Some(next);
            }

            self.report.scanned += keys.len() as u64;
            if self.plan.dry_run {
                for key in keys {
                    if self.seen.insert(key) {
                        matched += 1;
                        self.report.deleted += 1;
                    }
                }
            } else if !keys.is_empty() {
                if self.unlinks.0.len() >= UNLINKS_IN_FLIGHT {
                    let n = self.unlinks.oldest(self.url).await?;
                    matched += n;
                    self.report.deleted += n;
                }
                self.unlinks.0.push_back(self.send_unlink(work, keys));
            }

            (self.progress)(FlushProgress {
                pattern_index: self.index,
                scanned: self.report.scanned,
                deleted: self.report.deleted,
                pauses: self.guard.pauses,
            });
        }
        while !self.unlinks.0.is_empty() {
            let n = self.unlinks.oldest(self.url).await?;
            matched += n;
            self.report.deleted += n;
        }
        if !self.plan.dry_run {
            (self.progress)(FlushProgress {
                pattern_index: self.index,
                scanned: self.report.scanned,
                deleted: self.report.deleted,
                pauses: self.guard.pauses,
            });
        }
        Ok(matched)
    }

    fn send_unlink(&self, work: &MultiplexedConnection, keys: Vec<Vec<u8>>) -> Reply<u64> {
        let mut con = work.clone();
        let url = self.url.clone();
        let mut cmd = redis::cmd("UNLINK");
        cmd.arg(keys);
        tokio::spawn(async move { bounded(&url, "UNLINK", OP_TIMEOUT, cmd.query_async(&mut con)).await })
    }
}

/// Requests sent from their own tasks, oldest first. Dropping it aborts those not yet
/// answered, so a cancelled flush stops sending.
struct InFlight<T>(VecDeque<Reply<T>>);

impl<T> InFlight<T> {
    async fn oldest(&mut self, url: &RedisUrl) -> Result<T, RedisFailure> {
        let handle = self.0.pop_front().expect("a request in flight");
        joined(url, handle.await)
    }
}

impl<T> Drop for InFlight<T> {
    fn drop(&mut self) {
        for h in &self.0 {
            h.abort();
        }
    }
}

fn joined<T>(url: &RedisUrl, r: Result<Result<T, RedisFailure>, tokio::task::JoinError>) -> Result<T, RedisFailure> {
    r.map_err(|e| classify::other(url, FailureClass::Unknown, "flush", &format!("request task failed: {e}")))?
}

fn decode<T: FromRedisValue>(url: &RedisUrl, what: &str, v: Value) -> Result<T, RedisFailure> {
    T::from_redis_value(v).map_err(|e| classify::other(url, FailureClass::Unknown, what, &format!("unexpected reply: {e}")))
}

/// Watches the target's PING latency on a second connection and holds the flush while
/// it is above the bound.
struct LatencyGuard {
    url: RedisUrl,
    con: MultiplexedConnection,
    max_latency: Duration,
    last_check: Instant,
    /// The latency seen at the last check, when it was above the bound.
    slow: Option<Duration>,
    pauses: u32,
}

impl LatencyGuard {
    fn new(url: RedisUrl, con: MultiplexedConnection, max_latency: Duration) -> Self {
        // Due at once, so the first batch is measured too.
        let last_check = Instant::now().checked_sub(CHECK_EVERY).unwrap_or_else(Instant::now);
        LatencyGuard { url, con, max_latency, last_check, slow: None, pauses: 0 }
    }

    fn due(&self) -> bool {
        self.last_check.elapsed() >= CHECK_EVERY
    }

    async fn ping(&mut self) -> Result<Duration, RedisFailure> {
        ping(&self.url, &mut self.con, OP_TIMEOUT).await
    }

    fn observe(&mut self, rtt: Duration) {
        self.last_check = Instant::now();
        self.slow = (rtt > self.max_latency).then_some(rtt);
    }

    /// While the last measured latency is above the bound: sleep with doubling backoff,
    /// then measure again.
    async fn hold_while_slow(&mut self) -> Result<(), RedisFailure> {
        let Some(mut rtt) = self.slow.take() else { return Ok(()) };
        let stall_start = Instant::now();
        let mut backoff = self.max_latency.max(Duration::from_millis(5)).min(MAX_BACKOFF);
        while rtt > self.max_latency {
            if stall_start.elapsed() >= MAX_STALL {
                return Err(classify::other(
                    &self.url,
                    FailureClass::Timeout,
                    "flush",
                    &format!(
                        "PING latency stayed above {} ms for {} s (last {} ms); flush stopped, rerun to continue",
                        self.max_latency.as_millis(),
                        MAX_STALL.as_secs(),
                        rtt.as_millis()
                    ),
                ));
            }
            self.pauses += 1;
            tokio::time::sleep(backoff).await;
            backoff = (backoff * 2).min(MAX_BACKOFF);
            rtt = self.ping().await?;
        }
        self.last_check = Instant::now();
        Ok(())
    }
}
