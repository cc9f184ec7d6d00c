//! `GET /metrics` in Prometheus text format: incidents by outcome, open incidents by
//! state, time per step, webhooks by result, probe latency.

use crate::journal::Journal;
use sqlx::Row;
use std::collections::BTreeMap;
use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

/// Upper bounds (seconds) of the probe latency histogram.
const BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];

#[derive(Default)]
pub struct Metrics {
    webhooks: Mutex<BTreeMap<(String, String), u64>>,
    probe_buckets: [AtomicU64; 8],
    probe_count: AtomicU64,
    probe_sum_us: AtomicU64,
    probe_failures: AtomicU64,
}

impl Metrics {
    pub fn webhook(&self, source: &str, result: &str) {
        *self.webhooks.lock().expect("metrics lock").entry((source.to_string(), result.to_string())).or_default() += 1;
    }

    pub fn probe(&self, latency: Option<std::time::Duration>) {
        match latency {
            Some(d) => {
                let s = d.as_secs_f64();
                for (i, b) in BUCKETS.iter().enumerate() {
                    if s <= *b {
                        self.probe_buckets[i].fetch_add(1, Ordering::Relaxed);
                    }
                }
                self.probe_count.fetch_add(1, Ordering::Relaxed);
                self.probe_sum_us.fetch_add(d.as_micros() as u64, Ordering::Relaxed);
            }
            None => {
                self.probe_failures.fetch_add(1, Ordering::Relaxed);
            }
        }
    }

    /// Renders the text exposition. Incident figures are read from the journal, so
    /// they are right after a restart too.
    pub async fn render(&self, journal: &Journal, paused: bool) -> Result<String, crate::journal::JournalError> {
        let mut out = String::new();
        let pool = journal.pool();
        let _ = writeln!(
            out,
            "# HELP orchestrator_incidents_total Incidents that ended, by outcome.\n# TYPE orchestrator_incidents_total counter"
        );
        for r in sqlx::query("SELECT outcome, COUNT(*) FROM incidents WHERE outcome IS NOT NULL GROUP BY outcome").fetch_all(pool).await? {
            let _ = writeln!(out, "orchestrator_incidents_total{{outcome=\"{}\"}} {}", r.get::<String, _>(0), r.get::<i64, _>(1));
        }
        let _ = writeln!(out, "# HELP orchestrator_open_incidents Open incidents, by state.\n# TYPE orchestrator_open_incidents gauge");
        for r in sqlx::query("SELECT state, COUNT(*) FROM incidents WHERE closed_at IS NULL GROUP BY state").fetch_all(pool).await? {
            let _ = writeln!(out, "orchestrator_open_incidents{{state=\"{}\"}} {}", r.get::<String, _>(0), r.get::<i64, _>(1));
        }
        // Time in each step: from entering a state to leaving it, over all incidents.
        let _ = writeln!(
            out,
            "# HELP orchestrator_step_seconds Time spent per step, from the journal.\n# TYPE orchestrator_step_seconds summary"
        );
        let rows = sqlx::query(
            "WITH moves AS (
                SELECT incident_id, from_state, to_state, julianday(at) AS t,
                       LAG(julianday(at)) OVER (PARTITION BY incident_id ORDER BY seq) AS prev
                FROM transitions WHERE rejected IS NULL AND from_state != to_state)
             SELECT from_state, COUNT(*), SUM((t - prev) * 86400.0) FROM moves WHERE prev IS NOT NULL GROUP BY from_state",
        )
        .fetch_all(pool)
        .await?;
        for r in rows {
            let state: String = r.get(0);
            let _ = writeln!(out, "orchestrator_step_seconds_count{{step=\"{state}\"}} {}", r.get::<i64, _>(1));
            let _ = writeln!(out, "orchestrator_step_seconds_sum{{step=\"{state}\"}} {:.3}", r.get::<f64, _>(2));
        }
        let _ = writeln!(
            out,
            "# HELP orchestrator_webhooks_total Webhook requests, by source and result.\n# TYPE orchestrator_webhooks_total counter"
        );
        for ((source, result), n) in self.webhooks.lock().expect("metrics lock").iter() {
            let _ = writeln!(out, "orchestrator_webhooks_total{{source=\"{source}\",result=\"{result}\"}} {n}");
        }
        let _ = writeln!(out, "# HELP orchestrator_probe_latency_seconds PING latency to the primary seen by the watch loop.\n# TYPE orchestrator_probe_latency_seconds histogram");
        for (i, b) in BUCKETS.iter().enumerate() {
            let _ =
                writeln!(out, "orchestrator_probe_latency_seconds_bucket{{le=\"{b}\"}} {}", self.probe_buckets[i].load(Ordering::Relaxed));
        }
        let count = self.probe_count.load(Ordering::Relaxed);
        let _ = writeln!(out, "orchestrator_probe_latency_seconds_bucket{{le=\"+Inf\"}} {count}");
        let _ = writeln!(out, "orchestrator_probe_latency_seconds_sum {:.6}", self.probe_sum_us.load(Ordering::Relaxed) as f64 / 1e6);
        let _ = writeln!(out, "orchestrator_probe_latency_seconds_count {count}");
        let _ = writeln!(out, "# HELP orchestrator_probe_failures_total Watch-loop probes of the primary that failed.\n# TYPE orchestrator_probe_failures_total counter");
        let _ = writeln!(out, "orchestrator_probe_failures_total {}", self.probe_failures.load(Ordering::Relaxed));
        let _ = writeln!(
            out,
            "# HELP orchestrator_self_errors_total Errors of the orchestrator's own host (descriptors, memory, its own network) seen while probing; never counted against Redis.\n# TYPE orchestrator_self_errors_total counter"
        );
        let _ = writeln!(out, "orchestrator_self_errors_total {}", crate::selfcheck::count());
        let _ = writeln!(out, "# HELP orchestrator_self_healthy 0 while the orchestrator's own host is in trouble (a local error within the last 30 s).\n# TYPE orchestrator_self_healthy gauge");
        let _ = writeln!(out, "orchestrator_self_healthy {}", u8::from(crate::selfcheck::unhealthy().is_none()));
        let _ = writeln!(
            out,
            "# HELP orchestrator_paused Whether automatic failover is paused.\n# TYPE orchestrator_paused gauge\norchestrator_paused {}",
            u8::from(paused)
        );
        Ok(out)
    }
}
