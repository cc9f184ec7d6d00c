//! The process's metrics in Prometheus text format, through `prometheus-client`:
//! webhooks by result, unrouted alerts, probes of each target's active Redis, how late
//! watch rounds start; and incident figures read from the journal at each scrape (so
//! they are right after a restart too).

use crate::journal::prelude::*;
use crate::journal::{Journal, JournalError, Stats};
use prometheus_client::collector::Collector;
use prometheus_client::encoding::{DescriptorEncoder, EncodeLabelSet, EncodeMetric};
use prometheus_client::metrics::counter::{ConstCounter, Counter};
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::ConstGauge;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;
use std::sync::{Arc, Mutex};
use std::time::Duration;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct WebhookLabels {
    source: String,
    result: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct TargetLabel {
    target: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct SourceLabel {
    source: String,
}

/// Upper bounds (seconds) of the probe latency histogram.
const PROBE_BUCKETS: [f64; 8] = [0.001, 0.005, 0.01, 0.05, 0.1, 0.5, 1.0, 5.0];
/// Upper bounds (seconds) of the watch-round lateness histogram.
const LATENESS_BUCKETS: [f64; 9] = [0.001, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0];

fn probe_histogram() -> Histogram {
    Histogram::new(PROBE_BUCKETS)
}

pub struct Metrics {
    registry: Registry,
    webhooks: Family<WebhookLabels, Counter>,
    unrouted: Family<SourceLabel, Counter>,
    probe_latency: Family<TargetLabel, Histogram, fn() -> Histogram>,
    probe_failures: Family<TargetLabel, Counter>,
    lateness: Histogram,
    journal: Arc<JournalFigures>,
    /// 1 while this instance leads the instances sharing the journal (always 1 on a
    /// journal of its own), and the term it leads under (0: none).
    leader: prometheus_client::metrics::gauge::Gauge,
    term: prometheus_client::metrics::gauge::Gauge,
    leadership_changes: Counter,
}

impl Default for Metrics {
    fn default() -> Self {
        let mut registry = Registry::default();
        let webhooks = Family::<WebhookLabels, Counter>::default();
        let unrouted = Family::<SourceLabel, Counter>::default();
        let probe_latency = Family::<TargetLabel, Histogram, fn() -> Histogram>::new_with_constructor(probe_histogram);
        let probe_failures = Family::<TargetLabel, Counter>::default();
        let lateness = Histogram::new(LATENESS_BUCKETS);
        let journal = Arc::new(JournalFigures::default());
        registry.register("orchestrator_webhooks", "Webhook requests, by source and result", webhooks.clone());
        registry.register(
            "orchestrator_alerts_unrouted",
            "Alerts that matched no target (journaled as unrouted), by source",
            unrouted.clone(),
        );
        registry.register(
            "orchestrator_probe_latency_seconds",
            "PING latency to each target's active Redis seen by the watch loop",
            probe_latency.clone(),
        );
        registry.register(
            "orchestrator_probe_failures",
            "Watch-loop probes of a target's active Redis that failed",
            probe_failures.clone(),
        );
        registry.register(
            "orchestrator_watch_lateness_seconds",
            "How late a watch round started against its tick, over every target (a loaded orchestrator shows here first)",
            lateness.clone(),
        );
        registry.register_collector(Box::new(journal.clone()));
        let leader = prometheus_client::metrics::gauge::Gauge::default();
        leader.set(1);
        let term = prometheus_client::metrics::gauge::Gauge::default();
        let leadership_changes = Counter::default();
        registry.register(
            "orchestrator_leader",
            "1 while this instance acts (leads the instances sharing the journal), 0 while it follows",
            leader.clone(),
        );
        registry.register(
            "orchestrator_leader_term",
            "The leadership term this instance acts under (0: none, or a journal of its own)",
            term.clone(),
        );
        registry.register(
            "orchestrator_leadership_changes",
            "Times this instance took or gave up the leadership",
            leadership_changes.clone(),
        );
        Metrics { registry, webhooks, unrouted, probe_latency, probe_failures, lateness, journal, leader, term, leadership_changes }
    }
}

impl Metrics {
    pub fn webhook(&self, source: &str, result: &str) {
        self.webhooks.get_or_create(&WebhookLabels { source: source.into(), result: result.into() }).inc();
    }

    pub fn unrouted(&self, source: &str, n: u64) {
        self.unrouted.get_or_create(&SourceLabel { source: source.into() }).inc_by(n);
    }

    pub fn probe(&self, target: &str, latency: Option<Duration>) {
        let label = TargetLabel { target: target.into() };
        match latency {
            Some(d) => self.probe_latency.get_or_create(&label).observe(d.as_secs_f64()),
            None => {
                self.probe_failures.get_or_create(&label).inc();
            }
        }
    }

    /// This instance took the leadership under `Some(term)`, or gave it up (`None`).
    pub fn leadership(&self, term: Option<i64>) {
        self.leader.set(term.is_some() as i64);
        self.term.set(term.unwrap_or(0));
        self.leadership_changes.inc();
    }

    /// This instance shares the journal and does not lead (yet).
    pub fn following(&self) {
        self.leader.set(0);
    }

    pub fn lateness(&self, late: Duration) {
        self.lateness.observe(late.as_secs_f64());
    }

    /// Renders the text exposition (Prometheus text format 0.0.4).
    pub async fn render(&self, journal: &Journal, targets: &[String]) -> Result<String, JournalError> {
        let mut stats = journal.stats().await?;
        let now = chrono::Utc::now();
        stats.paused = journal.paused_at(now).await?;
        let global = journal.pause(None, now).await?;
        let mut pauses = Vec::with_capacity(targets.len());
        for t in targets {
            pauses.push(match journal.pause(Some(t), now).await? {
                Some(p) => Some(p),
                None => global.clone(),
            });
        }
        *self.journal.figures.lock().expect("metrics snapshot") = Figures::of(stats, targets, &pauses);
        let mut out = String::new();
        prometheus_client::encoding::prometheus_text::encode(&mut out, &self.registry)
            .map_err(|_| JournalError::Corrupt("metrics could not be encoded".into()))?;
        Ok(out)
    }

    pub const CONTENT_TYPE: &'static str = prometheus_client::encoding::prometheus_text::CONTENT_TYPE;
}

/// Figures read from the journal (and the process's self-check) at each scrape.
#[derive(Debug, Default)]
struct JournalFigures {
    figures: Mutex<Figures>,
}

#[derive(Debug, Default, Clone)]
struct Figures {
    stats: Stats,
    /// (target, paused, armed, on the backup) for every target this process runs.
    targets: Vec<(String, bool, bool, bool)>,
    /// (target, unix time the pause in force ends; 0: not paused, or until unpaused).
    paused_until: Vec<(String, i64)>,
}

impl Figures {
    /// `pauses`: per target, the pause in force now (the target's own, else everyone's),
    /// judged by its expiry, so a window that is over shows unpaused before its lift.
    fn of(stats: Stats, targets: &[String], pauses: &[Option<crate::journal::Pause>]) -> Figures {
        let targets: Vec<_> = targets
            .iter()
            .zip(pauses)
            .map(|(t, p)| {
                let topo = stats.topologies.iter().find(|x| &x.target == t);
                (
                    t.clone(),
                    p.is_some(),
                    topo.map(|x| x.armed).unwrap_or(true),
                    topo.map(|x| x.active == crate::model::Side::Backup).unwrap_or(false),
                )
            })
            .collect();
        let paused_until = targets
            .iter()
            .zip(pauses)
            .map(|((t, ..), p)| (t.clone(), p.as_ref().and_then(|p| p.until).map(|u| u.timestamp()).unwrap_or(0)))
            .collect();
        Figures { stats, targets, paused_until }
    }
}

fn counter<L: EncodeLabelSet>(e: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(L, u64)]) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Counter)?;
    for (labels, n) in rows {
        ConstCounter::new(*n).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

fn gauge<L: EncodeLabelSet>(e: &mut DescriptorEncoder, name: &str, help: &str, rows: &[(L, i64)]) -> Result<(), std::fmt::Error> {
    let mut m = e.encode_descriptor(name, help, None, prometheus_client::metrics::MetricType::Gauge)?;
    for (labels, n) in rows {
        ConstGauge::new(*n).encode(m.encode_family(labels)?)?;
    }
    Ok(())
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct OutcomeLabels {
    target: String,
    outcome: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StateLabels {
    target: String,
    state: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct StepLabel {
    step: String,
}

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
struct NoLabels {}

impl Collector for JournalFigures {
    fn encode(&self, mut e: DescriptorEncoder) -> Result<(), std::fmt::Error> {
        let f = self.figures.lock().expect("metrics snapshot").clone();
        let s = &f.stats;
        let outcomes: Vec<_> =
            s.outcomes.iter().map(|(t, o, n)| (OutcomeLabels { target: t.clone(), outcome: o.clone() }, *n as u64)).collect();
        counter(&mut e, "orchestrator_incidents", "Incidents that ended, by target and outcome", &outcomes)?;
        let open: Vec<_> = s.open.iter().map(|(t, st, n)| (StateLabels { target: t.clone(), state: st.clone() }, *n)).collect();
        gauge(&mut e, "orchestrator_open_incidents", "Open incidents, by target and state", &open)?;
        let steps: Vec<_> = s.steps.iter().map(|(st, n, _)| (StepLabel { step: st.clone() }, *n as u64)).collect();
        counter(&mut e, "orchestrator_steps", "Steps left, over all incidents (journal)", &steps)?;
        let mut m = e.encode_descriptor(
            "orchestrator_step_seconds",
            "Time spent per step, from entering a state to leaving it, over all incidents (journal)",
            None,
            prometheus_client::metrics::MetricType::Counter,
        )?;
        for (st, _, secs) in &s.steps {
            ConstCounter::new(*secs).encode(m.encode_family(&StepLabel { step: st.clone() })?)?;
        }
        let label = |t: &String| TargetLabel { target: t.clone() };
        let paused: Vec<_> = f.targets.iter().map(|(t, p, _, _)| (label(t), i64::from(*p))).collect();
        gauge(&mut e, "orchestrator_target_paused", "Whether automatic failover is paused for the target (or for everyone)", &paused)?;
        let until: Vec<_> = f.paused_until.iter().map(|(t, u)| (label(t), *u)).collect();
        gauge(
            &mut e,
            "orchestrator_target_paused_until_seconds",
            "Unix time at which the target's pause (a maintenance window, `pause --for`) lifts itself; 0 when not paused or paused until unpaused",
            &until,
        )?;
        let armed: Vec<_> = f.targets.iter().map(|(t, _, a, _)| (label(t), i64::from(*a))).collect();
        gauge(&mut e, "orchestrator_target_armed", "Whether automatic failover is armed for the target (topology)", &armed)?;
        let active: Vec<_> = f.targets.iter().map(|(t, _, _, b)| (label(t), i64::from(*b))).collect();
        gauge(&mut e, "orchestrator_target_on_backup", "1 while the target's service is on the playbook's backup endpoint", &active)?;
        gauge(&mut e, "orchestrator_paused", "Whether automatic failover is paused for everyone", &[(NoLabels {}, i64::from(s.paused))])?;
        counter(
            &mut e,
            "orchestrator_self_errors",
            "Errors of the orchestrator's own host (descriptors, memory, its own network) seen while probing; never counted against Redis",
            &[(NoLabels {}, crate::selfcheck::count())],
        )?;
        gauge(
            &mut e,
            "orchestrator_self_healthy",
            "0 while the orchestrator's own host is in trouble (a local error within the last 30 s)",
            &[(NoLabels {}, i64::from(crate::selfcheck::unhealthy().is_none()))],
        )?;
        Ok(())
    }
}
