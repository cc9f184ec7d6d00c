//! Exit codes, in one place: how scripts and CI tell outcomes apart.

use crate::model::Outcome;

/// Recovered, or a command that succeeded.
pub const OK: i32 = 0;
/// Something failed at run time: unknown incident, journal unreadable or locked, a
/// platform unreachable during `check`.
pub const FAILURE: i32 = 1;
/// Usage or configuration error: bad arguments, invalid playbook, refused command.
pub const USAGE: i32 = 2;
pub const AWAITING_APPROVAL: i32 = 3;
pub const ROLLED_BACK: i32 = 4;
pub const ESCALATED: i32 = 5;
pub const FALSE_ALARM: i32 = 6;
pub const ABORTED: i32 = 7;
/// Stopped by a signal mid-incident; `orchestrator resume ID` continues it.
pub const INTERRUPTED: i32 = 8;
/// Held: a rollback could not help (the primary is dead), so nothing more was changed;
/// the service stays where it is best off and a person must decide.
pub const HELD: i32 = 9;
/// `journal verify` found a change to recorded history (or a dropped trigger).
pub const TAMPERED: i32 = 10;
/// Shadow mode: a failover would have followed; nothing was changed.
pub const WOULD_FAIL_OVER: i32 = 11;
/// Shadow mode: the incident would have escalated; nothing was changed.
pub const WOULD_ESCALATE: i32 = 12;

pub fn for_outcome(o: Outcome) -> i32 {
    match o {
        Outcome::Recovered => OK,
        Outcome::RolledBack => ROLLED_BACK,
        Outcome::Escalated => ESCALATED,
        Outcome::FalseAlarm => FALSE_ALARM,
        Outcome::Aborted => ABORTED,
        Outcome::Held => HELD,
        Outcome::WouldFailOver => WOULD_FAIL_OVER,
        Outcome::WouldEscalate => WOULD_ESCALATE,
    }
}

pub const TABLE: &str = "Exit codes:
  0  recovered (or the command succeeded)
  1  run-time failure (unknown incident, journal unreadable or locked)
  2  usage or configuration error (bad arguments, invalid playbook)
  3  awaiting approval (the incident waits at a gate)
  4  rolled back
  5  escalated
  6  false alarm
  7  aborted
  8  interrupted (resumable with `orchestrator resume ID`)
  9  held (rollback could not help: the primary is dead; nothing more changed, page a person)
 10  `journal verify`: the journal's history was changed
 11  shadow mode (observe): would have failed over; nothing was changed
 12  shadow mode (observe): would have escalated; nothing was changed
130  stopped at once by a second SIGINT/SIGTERM (resumable too)";
