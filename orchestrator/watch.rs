//! The runbook's "Alert Conditions" as a pure evaluator: samples in, breaches out. The
//! daemon's watch loop feeds it what it measured; tests feed it made-up samples and
//! times.

use crate::duration::format_duration as fd;
use crate::playbook::WatchPolicy;
use std::collections::VecDeque;
use std::time::Duration;

/// One round of measurements. `at` is time since any fixed start (monotonic).
#[derive(Debug, Clone)]
pub struct Sample {
    pub at: Duration,
    /// PING round trip, or the failure's text.
    pub ping: Result<Duration, String>,
    /// `(waiting_jobs, failed_jobs)` from the service's queue metrics, when it answered.
    pub queue: Option<(u64, u64)>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Breach {
    /// Stable per condition, so duplicates are recognisable in the journal.
    pub fingerprint: &'static str,
    pub summary: String,
}

pub struct Conditions {
    policy: WatchPolicy,
    /// Conditions that raised their alert and have not cleared since.
    fired: std::collections::HashSet<&'static str>,
    failing_since: Option<Duration>,
    slow_since: Option<Duration>,
    failed_history: VecDeque<(Duration, u64)>,
}

impl Conditions {
    pub fn new(policy: WatchPolicy) -> Self {
        Conditions { policy, fired: Default::default(), failing_since: None, slow_since: None, failed_history: VecDeque::new() }
    }

    /// Edge-triggered: the breaches that started with this sample. A condition raises
    /// one alert when it starts and again only after it has cleared, so a persistent
    /// breach (a backlog while Redis is fine) cannot open an incident every round.
    pub fn observe_new(&mut self, s: &Sample) -> Vec<Breach> {
        let now = self.observe(s);
        self.fired.retain(|f| now.iter().any(|b| b.fingerprint == *f));
        let new: Vec<Breach> = now.into_iter().filter(|b| !self.fired.contains(b.fingerprint)).collect();
        self.fired.extend(new.iter().map(|b| b.fingerprint));
        new
    }

    /// Forget that `fingerprint` fired (its alert could not be journaled): it is raised
    /// again with the next sample that still breaches.
    pub fn rearm(&mut self, fingerprint: &str) {
        self.fired.retain(|f| *f != fingerprint);
    }

    /// Judges one sample; returns every condition that is breached now (level).
    pub fn observe(&mut self, s: &Sample) -> Vec<Breach> {
        let w = &self.policy;
        let mut out = Vec::new();
        match &s.ping {
            Ok(lat) => {
                self.failing_since = None;
                if *lat > w.latency_threshold {
                    let since = *self.slow_since.get_or_insert(s.at);
                    if s.at - since >= w.latency_for {
                        out.push(Breach {
                            fingerprint: "watch:latency",
                            summary: format!(
                                "Redis latency {:.0}ms above {} for {}",
                                lat.as_secs_f64() * 1000.0,
                                fd(w.latency_threshold),
                                fd(s.at - since)
                            ),
                        });
                    }
                } else {
                    self.slow_since = None;
                }
            }
            Err(why) => {
                self.slow_since = None;
                let since = *self.failing_since.get_or_insert(s.at);
                if s.at - since >= w.ping_fail_for {
                    out.push(Breach { fingerprint: "watch:ping", summary: format!("Redis ping failing for {}: {why}", fd(s.at - since)) });
                }
            }
        }
        if let Some((waiting, failed)) = s.queue {
            if waiting > w.queue_depth {
                out.push(Breach { fingerprint: "watch:queue_depth", summary: format!("queue depth {waiting} above {}", w.queue_depth) });
            }
            self.failed_history.push_back((s.at, failed));
            while self.failed_history.front().map(|(t, _)| s.at - *t > w.failed_window).unwrap_or(false) {
                self.failed_history.pop_front();
            }
            if let Some((_, oldest)) = self.failed_history.front() {
                let new_failures = failed.saturating_sub(*oldest);
                if new_failures > w.failed_jobs {
                    out.push(Breach {
                        fingerprint: "watch:failed_jobs",
                        summary: format!("{new_failures} failed jobs within {}", fd(w.failed_window)),
                    });
                }
            }
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn policy() -> WatchPolicy {
        WatchPolicy {
            enabled: true,
            interval: Duration::from_secs(5),
            ping_fail_for: Duration::from_secs(30),
            latency_threshold: Duration::from_millis(1000),
            latency_for: Duration::from_secs(120),
            queue_depth: 1000,
            failed_jobs: 50,
            failed_window: Duration::from_secs(300),
        }
    }

    fn at(secs: u64, ping: Result<u64, &str>, queue: Option<(u64, u64)>) -> Sample {
        Sample { at: Duration::from_secs(secs), ping: ping.map(Duration::from_millis).map_err(str::to_string), queue }
    }

    fn names(b: &[Breach]) -> Vec<&'static str> {
        b.iter().map(|b| b.fingerprint).collect()
    }

    #[test]
    fn ping_must_fail_for_the_whole_window() {
        let mut c = Conditions::new(policy());
        assert!(c.observe(&at(0, Err("refused"), None)).is_empty());
        assert!(c.observe(&at(29, Err("refused"), None)).is_empty());
        assert_eq!(names(&c.observe(&at(30, Err("refused"), None))), ["watch:ping"]);
        // One answer resets the window.
        assert!(c.observe(&at(31, Ok(1), None)).is_empty());
        assert!(c.observe(&at(40, Err("refused"), None)).is_empty());
    }

    #[test]
    fn latency_above_threshold_for_two_minutes() {
        let mut c = Conditions::new(policy());
        assert!(c.observe(&at(0, Ok(1500), None)).is_empty());
        assert!(c.observe(&at(119, Ok(1500), None)).is_empty());
        let b = c.observe(&at(120, Ok(1500), None));
        assert_eq!(names(&b), ["watch:latency"]);
        assert!(b[0].summary.contains("1500ms above 1s for 2m"), "{}", b[0].summary);
        assert!(c.observe(&at(121, Ok(10), None)).is_empty(), "a fast answer resets it");
    }

    #[test]
    fn alerts_are_raised_when_a_condition_starts_and_again_after_it_clears() {
        let mut c = Conditions::new(policy());
        assert_eq!(names(&c.observe_new(&at(0, Ok(1), Some((2000, 0))))), ["watch:queue_depth"]);
        assert!(c.observe_new(&at(5, Ok(1), Some((2000, 0)))).is_empty(), "still breached: no second alert");
        assert!(c.observe_new(&at(10, Ok(1), Some((10, 0)))).is_empty(), "cleared");
        assert_eq!(names(&c.observe_new(&at(15, Ok(1), Some((2000, 0))))), ["watch:queue_depth"], "started again");
        c.rearm("watch:queue_depth");
        assert_eq!(names(&c.observe_new(&at(20, Ok(1), Some((2000, 0))))), ["watch:queue_depth"], "re-raised after a failed journal write");
    }

    #[test]
    fn queue_depth_above_bound() {
        let mut c = Conditions::new(policy());
        assert!(c.observe(&at(0, Ok(1), Some((1000, 0)))).is_empty());
        assert_eq!(names(&c.observe(&at(5, Ok(1), Some((1001, 0))))), ["watch:queue_depth"]);
    }

    #[test]
    fn failed_jobs_within_the_window() {
        let mut c = Conditions::new(policy());
        assert!(c.observe(&at(0, Ok(1), Some((0, 100)))).is_empty());
        assert!(c.observe(&at(100, Ok(1), Some((0, 150)))).is_empty(), "50 new failures is not more than 50");
        assert_eq!(names(&c.observe(&at(200, Ok(1), Some((0, 151))))), ["watch:failed_jobs"]);
        // Failures older than the window no longer count.
        assert!(c.observe(&at(600, Ok(1), Some((0, 160)))).is_empty());
    }
}
