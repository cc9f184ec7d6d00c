//! `orchestrator report --since 7d`: a period's incidents summarised — by target and
//! outcome (real and would-have), false alarms, time to decision, and the shadow
//! incidents with what automation would have done.

use crate::journal::prelude::*;
use crate::journal::{parse_ts, Journal, JournalError, PeriodIncident};
use crate::model::Outcome;
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write;

#[derive(Debug, Clone, Serialize)]
pub struct Summary {
    pub from: String,
    pub to: String,
    pub incidents: usize,
    pub open: usize,
    pub false_alarms: usize,
    /// Incidents that ended in a shadow outcome (would_fail_over, would_escalate).
    pub shadow: usize,
    /// target → outcome (or `open`) → count.
    pub by_target: BTreeMap<String, BTreeMap<String, usize>>,
    /// Seconds from open to decision, over the incidents decided in the period.
    pub decision_median_s: Option<f64>,
    pub decision_p90_s: Option<f64>,
    pub shadow_incidents: Vec<ShadowRow>,
}

#[derive(Debug, Clone, Serialize)]
pub struct ShadowRow {
    pub id: String,
    pub target: String,
    pub opened_at: String,
    pub outcome: String,
    pub decision_s: Option<f64>,
    pub reason: String,
}

/// The value at quantile `q` (nearest rank) of sorted `v`.
fn quantile(v: &[f64], q: f64) -> Option<f64> {
    if v.is_empty() {
        return None;
    }
    let rank = ((q * v.len() as f64).ceil() as usize).clamp(1, v.len());
    Some(v[rank - 1])
}

fn decision_seconds(i: &PeriodIncident) -> Option<f64> {
    let open = parse_ts(&i.opened_at)?;
    let decided = parse_ts(i.decided_at.as_deref()?)?;
    Some((decided - open).num_milliseconds() as f64 / 1000.0)
}

impl Summary {
    pub async fn load(journal: &Journal, from: DateTime<Utc>, to: DateTime<Utc>) -> Result<Summary, JournalError> {
        Ok(Summary::of(&journal.incidents_between(from, to).await?, from, to))
    }

    pub fn of(rows: &[PeriodIncident], from: DateTime<Utc>, to: DateTime<Utc>) -> Summary {
        let mut by_target: BTreeMap<String, BTreeMap<String, usize>> = BTreeMap::new();
        let mut times = Vec::new();
        let mut shadow_incidents = Vec::new();
        for i in rows {
            let outcome = i.outcome.clone().unwrap_or_else(|| "open".into());
            *by_target.entry(i.target.clone()).or_default().entry(outcome.clone()).or_default() += 1;
            let secs = decision_seconds(i);
            if i.outcome.is_some() {
                times.extend(secs);
            }
            if Outcome::parse(&outcome).is_some_and(|o| o.is_shadow()) {
                let reason = i.close_note.clone().unwrap_or_default();
                let reason = reason.strip_prefix("shadow mode: ").unwrap_or(&reason).to_string();
                shadow_incidents.push(ShadowRow {
                    id: i.id.clone(),
                    target: i.target.clone(),
                    opened_at: i.opened_at.clone(),
                    outcome,
                    decision_s: secs,
                    reason,
                });
            }
        }
        times.sort_by(|a, b| a.total_cmp(b));
        let count = |o: Outcome| rows.iter().filter(|i| i.outcome.as_deref() == Some(o.as_str())).count();
        Summary {
            from: crate::journal::ts(from),
            to: crate::journal::ts(to),
            incidents: rows.len(),
            open: rows.iter().filter(|i| i.outcome.is_none()).count(),
            false_alarms: count(Outcome::FalseAlarm),
            shadow: shadow_incidents.len(),
            by_target,
            decision_median_s: quantile(&times, 0.5),
            decision_p90_s: quantile(&times, 0.9),
            shadow_incidents,
        }
    }

    pub fn render(&self) -> String {
        let mut o = String::new();
        let secs = |s: Option<f64>| s.map(|s| format!("{s:.1} s")).unwrap_or_else(|| "–".into());
        let _ = writeln!(o, "# Incidents from {} to {}\n", self.from, self.to);
        let _ = writeln!(
            o,
            "{} incident(s): {} false alarm(s), {} shadow (would-have), {} still open.\n",
            self.incidents, self.false_alarms, self.shadow, self.open
        );
        let _ = writeln!(
            o,
            "Time to decision (open → the closing transition; for shadow incidents, open → the end of Assess): median {}, p90 {}.\n",
            secs(self.decision_median_s),
            secs(self.decision_p90_s)
        );
        if !self.by_target.is_empty() {
            let _ = writeln!(o, "## By target and outcome\n\n| target | outcome | incidents |\n| --- | --- | --- |");
            for (t, outcomes) in &self.by_target {
                for (outcome, n) in outcomes {
                    let _ = writeln!(o, "| {t} | {outcome} | {n} |");
                }
            }
            let _ = writeln!(o);
        }
        if !self.shadow_incidents.is_empty() {
            let _ = writeln!(
                o,
                "## Shadow incidents (mode: observe): what automation would have done\n\n| incident | target | opened | would have | decided in | reason |\n| --- | --- | --- | --- | --- | --- |"
            );
            for s in &self.shadow_incidents {
                let would = if s.outcome == Outcome::WouldFailOver.as_str() { "failed over" } else { "escalated" };
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {would} | {} | {} |",
                    s.id,
                    s.target,
                    s.opened_at,
                    secs(s.decision_s),
                    s.reason.replace('|', "\\|").replace('\n', " ")
                );
            }
            let _ = writeln!(o);
        }
        o
    }
}

#[cfg(test)]
mod tests {
    use super::quantile;

    #[test]
    fn nearest_rank_quantiles() {
        let v = [1.0, 2.0, 3.0, 4.0, 5.0, 6.0, 7.0, 8.0, 9.0, 10.0];
        assert_eq!(quantile(&v, 0.5), Some(5.0));
        assert_eq!(quantile(&v, 0.9), Some(9.0));
        assert_eq!(quantile(&[3.0], 0.9), Some(3.0));
        assert_eq!(quantile(&[], 0.5), None);
    }
}
