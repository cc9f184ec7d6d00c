//! Topology as state: which of a target's two endpoints the service is on (the active),
//! which is the standby, and whether automatic failover is armed. Pure rules here; the
//! journal keeps the state and its history, the daemon measures the standby.
//!
//! After a recovered failover the old backup is active and the old primary the standby.
//! Automatic failover stays disarmed until the standby has passed its preflight (PING
//! and a write within the timeout) continuously for the playbook's `rearm_after`, and
//! the platform holds the active's URL: a failover back must land on a Redis that has
//! been healthy for a while, and must start from where the service really is. Where a
//! person must look (held, escalated after a switch), only `orchestrator arm` re-arms.

use crate::model::{Outcome, Side};
use chrono::{DateTime, Utc};
use serde::Serialize;
use std::time::Duration;

/// A target's topology as the journal holds it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Topology {
    pub target: String,
    pub active: Side,
    /// When the service moved to the active ("" for a target as its playbook is written).
    pub since: String,
    /// The incident that moved it, if one did.
    pub incident: Option<String>,
    pub armed: bool,
    pub reason: String,
    pub needs_person: bool,
    /// The standby has passed its preflight continuously since then.
    pub standby_ok_since: Option<String>,
}

impl Topology {
    /// A target nobody has failed over yet: the playbook's primary is active, armed.
    pub fn as_written(target: &str) -> Topology {
        Topology {
            target: target.to_string(),
            active: Side::Primary,
            since: String::new(),
            incident: None,
            armed: true,
            reason: "as the playbook is written".into(),
            needs_person: false,
            standby_ok_since: None,
        }
    }

    pub fn standby(&self) -> Side {
        self.active.other()
    }
}

/// What a change records, in the journal's words.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "snake_case")]
pub enum ChangeKind {
    /// The service moved to the other endpoint (an incident ended).
    Moved,
    Armed,
    Disarmed,
    /// The standby started passing its preflight.
    StandbyOk,
    /// The standby stopped passing it: the re-arm clock starts again.
    StandbyFailing,
    /// A person set it (`orchestrator arm`).
    Set,
}

impl ChangeKind {
    pub fn as_str(self) -> &'static str {
        match self {
            ChangeKind::Moved => "moved",
            ChangeKind::Armed => "armed",
            ChangeKind::Disarmed => "disarmed",
            ChangeKind::StandbyOk => "standby_ok",
            ChangeKind::StandbyFailing => "standby_failing",
            ChangeKind::Set => "set",
        }
    }
}

/// A change of a target's topology: the new state in full, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Change {
    pub kind: ChangeKind,
    pub active: Side,
    /// Set for moves (the new `since`); others keep it.
    pub moved: bool,
    pub incident: Option<String>,
    pub armed: bool,
    pub needs_person: bool,
    pub standby_ok_since: Option<String>,
    pub reason: String,
    pub actor: String,
}

/// What the end of an incident does to its target's topology. `from` is the endpoint
/// that was active when it opened; `switched` whether the platform write may have happened.
pub fn after_close(outcome: Outcome, from: Side, switched: bool, incident: &str, rearm_after: Duration) -> Option<Change> {
    let to = from.other();
    let change = |kind, active, armed, needs_person, reason: String| Change {
        kind,
        active,
        moved: active != from,
        incident: Some(incident.to_string()),
        armed,
        needs_person,
        standby_ok_since: None,
        reason,
        actor: "orchestrator".into(),
    };
    match outcome {
        Outcome::Recovered => Some(change(
            ChangeKind::Moved,
            to,
            false,
            false,
            format!(
                "failed over to the {to} by {incident}; automatic failover re-arms once the {from} (now the standby) passes its preflight for {}",
                crate::duration::format_duration(rearm_after)
            ),
        )),
        // The service was left on the other endpoint with its old one dead: a person
        // must look before anything moves it again.
        Outcome::Held => Some(change(
            ChangeKind::Moved,
            to,
            false,
            true,
            format!(
                "{incident} held on the {to} (the {from} failed its preflight): a person must check the service and run `orchestrator arm`"
            ),
        )),
        Outcome::Escalated if switched => Some(change(
            ChangeKind::Disarmed,
            from,
            false,
            true,
            format!(
                "{incident} escalated after the switch: where the service runs must be checked; `orchestrator arm TARGET --active primary|backup` re-arms"
            ),
        )),
        _ => None,
    }
}

/// One measurement of the standby, for the re-arm rule.
#[derive(Debug, Clone)]
pub struct StandbySample {
    /// Preflight result: `Err` says why it failed.
    pub preflight: Result<(), String>,
    /// Whether the platform holds the active's URL (None: could not tell).
    pub platform_on_active: Option<bool>,
}

/// The re-arm rule: given the topology and a fresh sample of the standby, the change
/// to journal, if any. Only state changes are journaled (never one row per probe).
///
/// `last_sample` is when the previous sample of the standby was taken by this process
/// (`None`: none yet); a gap longer than `gap` (the orchestrator stopped, its own
/// trouble, rounds skipped) restarts the clock: time nobody watched is no evidence.
pub fn rearm_step(
    t: &Topology,
    sample: &StandbySample,
    now: DateTime<Utc>,
    rearm_after: Duration,
    last_sample: Option<DateTime<Utc>>,
    gap: Duration,
) -> Option<Change> {
    if t.armed || t.needs_person {
        return None;
    }
    let unwatched = match last_sample {
        None => true,
        Some(at) => (now - at).to_std().unwrap_or_default() > gap,
    };
    let keep = |kind, armed, standby_ok_since: Option<String>, reason: String| Change {
        kind,
        active: t.active,
        moved: false,
        incident: t.incident.clone(),
        armed,
        needs_person: false,
        standby_ok_since,
        reason,
        actor: "orchestrator".into(),
    };
    let standby = t.standby();
    match (&sample.preflight, &t.standby_ok_since) {
        (Err(why), Some(_)) => Some(keep(
            ChangeKind::StandbyFailing,
            false,
            None,
            format!("the {standby} (standby) fails its preflight ({why}): the re-arm clock starts again when it passes"),
        )),
        (Err(_), None) => None,
        (Ok(()), None) => Some(keep(
            ChangeKind::StandbyOk,
            false,
            Some(crate::journal::ts(now)),
            format!(
                "the {standby} (standby) passes its preflight since {}; automatic failover re-arms after {} of that",
                crate::journal::ts(now),
                crate::duration::format_duration(rearm_after)
            ),
        )),
        (Ok(()), Some(_)) if unwatched => Some(keep(
            ChangeKind::StandbyOk,
            false,
            Some(crate::journal::ts(now)),
            format!(
                "the {standby} (standby) passes its preflight, but nobody watched it for a while: the re-arm clock starts again at {} ({} to go)",
                crate::journal::ts(now),
                crate::duration::format_duration(rearm_after)
            ),
        )),
        (Ok(()), Some(since)) => {
            let since_t = crate::journal::parse_ts(since)?;
            let held = (now - since_t).to_std().unwrap_or_default();
            if held < rearm_after {
                return None;
            }
            match sample.platform_on_active {
                Some(true) => Some(keep(
                    ChangeKind::Armed,
                    true,
                    Some(since.clone()),
                    format!(
                        "armed: the {standby} (standby) passed its preflight continuously for {} and the platform holds the {}'s URL",
                        crate::duration::format_duration(held),
                        t.active
                    ),
                )),
                other => {
                    let reason = format!(
                        "not armed: the standby is healthy, but the platform {} the {}'s URL",
                        if other == Some(false) { "does not hold" } else { "could not be asked whether it holds" },
                        t.active
                    );
                    (reason != t.reason).then(|| keep(ChangeKind::Disarmed, false, Some(since.clone()), reason))
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GAP: Duration = Duration::from_secs(3);

    fn recovered() -> Topology {
        let c = after_close(Outcome::Recovered, Side::Primary, true, "inc-1", Duration::from_secs(60)).expect("a move");
        Topology {
            target: "t".into(),
            active: c.active,
            since: "x".into(),
            incident: c.incident,
            armed: c.armed,
            reason: c.reason,
            needs_person: c.needs_person,
            standby_ok_since: None,
        }
    }

    #[test]
    fn a_recovered_failover_swaps_and_disarms() {
        let t = recovered();
        assert_eq!((t.active, t.standby(), t.armed, t.needs_person), (Side::Backup, Side::Primary, false, false));
        assert!(after_close(Outcome::RolledBack, Side::Primary, true, "i", Duration::ZERO).is_none());
        assert!(after_close(Outcome::Escalated, Side::Primary, false, "i", Duration::ZERO).is_none(), "nothing moved before a switch");
        let held = after_close(Outcome::Held, Side::Backup, true, "i", Duration::ZERO).unwrap();
        assert_eq!((held.active, held.needs_person), (Side::Primary, true));
    }

    #[test]
    fn rearms_only_after_the_standby_held_for_the_whole_time_and_the_platform_agrees() {
        let mut t = recovered();
        let now = Utc::now();
        let ok = StandbySample { preflight: Ok(()), platform_on_active: Some(true) };
        let bad = StandbySample { preflight: Err("connection refused".into()), platform_on_active: Some(true) };
        assert_eq!(rearm_step(&t, &bad, now, Duration::from_secs(60), Some(now), GAP), None, "failing and never ok: nothing to journal");
        let c = rearm_step(&t, &ok, now, Duration::from_secs(60), None, GAP).unwrap();
        assert_eq!(c.kind, ChangeKind::StandbyOk);
        t.standby_ok_since = c.standby_ok_since;
        assert_eq!(
            rearm_step(
                &t,
                &ok,
                now + chrono::Duration::seconds(59),
                Duration::from_secs(60),
                Some(now + chrono::Duration::seconds(58)),
                GAP
            ),
            None
        );
        // A failure inside the window restarts the clock.
        let f = rearm_step(
            &t,
            &bad,
            now + chrono::Duration::seconds(30),
            Duration::from_secs(60),
            Some(now + chrono::Duration::seconds(29)),
            GAP,
        )
        .unwrap();
        assert_eq!((f.kind, f.standby_ok_since.clone()), (ChangeKind::StandbyFailing, None));
        let later = now + chrono::Duration::seconds(61);
        let not_on_active = StandbySample { preflight: Ok(()), platform_on_active: Some(false) };
        let d = rearm_step(&t, &not_on_active, later, Duration::from_secs(60), Some(later), GAP).unwrap();
        assert_eq!((d.kind, d.armed), (ChangeKind::Disarmed, false));
        let a = rearm_step(&t, &ok, later, Duration::from_secs(60), Some(later), GAP).unwrap();
        assert_eq!((a.kind, a.armed), (ChangeKind::Armed, true));
        // Not watched for longer than the gap (serve was stopped): the clock starts again.
        let r = rearm_step(&t, &ok, later, Duration::from_secs(60), Some(now), GAP).unwrap();
        assert_eq!((r.kind, r.armed, r.standby_ok_since.clone()), (ChangeKind::StandbyOk, false, Some(crate::journal::ts(later))));
        let r = rearm_step(&t, &ok, later, Duration::from_secs(60), None, GAP).unwrap();
        assert_eq!(r.kind, ChangeKind::StandbyOk, "after a restart nothing counts from before");
        t.needs_person = true;
        assert_eq!(rearm_step(&t, &ok, later, Duration::from_secs(60), Some(later), GAP), None, "held: only a person re-arms");
    }
}
