//! Unit tests of the pure machine: one test per row of the spec's transition table,
//! plus rejection of events a state does not accept and serde round-trips.

use super::*;
use crate::model::{Action, ConfirmItem, FailureClass, FlushMode, HookPoint, Step, VerifyItem};

fn policy() -> Policy {
    Policy {
        confirm_required: vec![ConfirmItem::PingFailed],
        confirm_min_signals: 2,
        confirm_attempts: 2,
        verify_required: VerifyItem::ALL.to_vec(),
        actions: FailureClass::ALL
            .iter()
            .map(|c| (*c, if *c == FailureClass::Auth { Action::Escalate } else { Action::Failover }))
            .collect(),
        flush_mode: FlushMode::Selective,
        gated_steps: vec![Step::Flush],
        approvers: vec!["alice".into(), "bob".into()],
        approvals_required: 1,
        busy_attempts: 2,
        deploy_retries: 0,
        restart_on_stall: false,
        observe: false,
    }
}

fn ok(item: &str) -> Check {
    Check::new(item, true, "observed")
}
fn bad(item: &str) -> Check {
    Check::new(item, false, "observed")
}

fn trigger() -> Event {
    Event::Trigger { source: "test".into(), detail: "".into(), from: Default::default(), planned: false }
}
fn confirmed() -> Event {
    Event::ConfirmChecked { checks: vec![ok("ping_failed"), ok("health_down"), bad("error_logs"), bad("queue_stopped")] }
}
fn assessed(class: FailureClass) -> Event {
    Event::Assessed {
        class,
        detail: "".into(),
        preflight: vec![ok("backup_ping"), ok("backup_latency"), ok("backup_distinct")],
        primary_answers: false,
    }
}
fn approve(who: &str) -> Event {
    Event::Approve { approver: who.into(), comment: "".into() }
}
fn all_verified(window_over: bool) -> Event {
    Event::VerifyChecked { checks: VerifyItem::ALL.iter().map(|i| ok(i.as_str())).collect(), window_over, started_at: None }
}
fn deploy(status: DeployStatus) -> Event {
    Event::DeployFinished { status, deploy_id: Some("dep-1".into()), detail: "".into() }
}
fn abort() -> Event {
    Event::Abort { actor: "carol".into(), reason: "drill".into() }
}

fn machine_with(p: Policy) -> Machine {
    Machine::new(p)
}

/// Drives a machine through `events`, asserting each one is accepted.
fn drive(m: &mut Machine, events: &[Event]) {
    for e in events {
        let d = m.handle(e);
        assert!(d.rejected.is_none(), "event {} rejected in {}: {:?}", e.name(), d.from.name(), d.rejected);
    }
}

fn at_verify() -> Machine {
    let mut m = machine_with(policy());
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::ConnectionRefused)]);
    drive(&mut m, &[Event::Switched { ok: true, detail: "".into() }]);
    assert_eq!(m.state().name(), "awaiting_approval");
    drive(
        &mut m,
        &[approve("bob"), Event::Flushed { mode: FlushMode::Selective, deleted: 3, detail: "".into() }, deploy(DeployStatus::Live)],
    );
    assert_eq!(m.state().name(), "verify");
    m
}

#[test]
fn detect_to_confirm_on_trigger() {
    let mut m = machine_with(policy());
    let d = m.handle(&trigger());
    assert_eq!((d.from.name(), d.to.name()), ("detect", "confirm"));
    assert_eq!(d.effects, vec![Effect::RunConfirmChecklist { attempt: 1 }]);
}

#[test]
fn confirm_to_assess_after_every_attempt_holds() {
    let mut m = machine_with(policy());
    drive(&mut m, &[trigger(), confirmed()]);
    assert_eq!(m.state(), &State::confirm(2));
    let d = m.handle(&confirmed());
    assert_eq!(d.to.name(), "assess");
    assert_eq!(d.effects, vec![Effect::Assess]);
}

#[test]
fn confirm_to_false_alarm_when_redis_answers() {
    let mut m = machine_with(policy());
    drive(&mut m, &[trigger(), confirmed()]);
    let d = m.handle(&Event::ConfirmChecked { checks: vec![bad("ping_failed"), ok("health_down"), ok("error_logs")] });
    assert_eq!(d.to.name(), "false_alarm");
    assert!(d.note.unwrap().contains("ping_failed"));
}

#[test]
fn confirm_to_false_alarm_with_too_few_signals() {
    let mut m = machine_with(policy());
    drive(&mut m, &[trigger()]);
    let d = m.handle(&Event::ConfirmChecked { checks: vec![ok("ping_failed"), bad("health_down"), bad("error_logs")] });
    assert_eq!(d.to.name(), "false_alarm");
}

#[test]
fn assess_to_switch_when_failover_and_preflight_passes() {
    let mut p = policy();
    p.gated_steps = vec![];
    let mut m = machine_with(p);
    drive(&mut m, &[trigger(), confirmed(), confirmed()]);
    let d = m.handle(&assessed(FailureClass::Timeout));
    assert_eq!(d.to.name(), "switch");
    assert_eq!(d.effects, vec![Effect::SetPlatformUrl { target: Target::Backup }]);
    assert_eq!(m.incident().class, Some(FailureClass::Timeout));
}

#[test]
fn assess_to_escalated_when_class_says_escalate() {
    let mut m = machine_with(policy());
    drive(&mut m, &[trigger(), confirmed(), confirmed()]);
    assert_eq!(m.handle(&assessed(FailureClass::Auth)).to.name(), "escalated");
}

#[test]
fn assess_to_escalated_when_backup_fails_preflight() {
    let mut m = machine_with(policy());
    drive(&mut m, &[trigger(), confirmed(), confirmed()]);
    let d = m.handle(&Event::Assessed {
        class: FailureClass::ConnectionRefused,
        detail: "".into(),
        preflight: vec![bad("backup_ping"), ok("backup_distinct")],
        primary_answers: false,
    });
    assert_eq!(d.to.name(), "escalated");
    assert!(!m.incident().switched, "nothing was switched");
}

#[test]
fn switch_to_flush_after_read_back() {
    let mut p = policy();
    p.gated_steps = vec![];
    let mut m = machine_with(p);
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network)]);
    let d = m.handle(&Event::Switched { ok: true, detail: "read back".into() });
    assert_eq!(d.to, State::flush(1));
    assert_eq!(d.effects, vec![Effect::Flush { mode: FlushMode::Selective }]);
}

#[test]
fn switch_failure_rolls_back() {
    let mut p = policy();
    p.gated_steps = vec![];
    let mut m = machine_with(p);
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network)]);
    assert_eq!(m.handle(&Event::Switched { ok: false, detail: "mismatch".into() }).to.name(), "rollback");
}

#[test]
fn flush_gated_by_default_then_flush_to_deploy() {
    let mut m = machine_with(policy());
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network)]);
    let d = m.handle(&Event::Switched { ok: true, detail: "".into() });
    assert_eq!(d.to, State::awaiting_approval(Step::Flush, vec![]));
    assert_eq!(d.effects, vec![Effect::RequestApproval { step: Step::Flush }]);
    drive(&mut m, &[approve("alice")]);
    assert_eq!(m.state().name(), "flush");
    let d = m.handle(&Event::Flushed { mode: FlushMode::Selective, deleted: 10, detail: "".into() });
    assert_eq!((d.to.name(), d.effects.clone()), ("deploy", vec![Effect::Deploy { attempt: 1 }]));
}

#[test]
fn flush_none_skips_the_gate() {
    let mut p = policy();
    p.flush_mode = FlushMode::None;
    let mut m = machine_with(p);
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network)]);
    assert_eq!(m.handle(&Event::Switched { ok: true, detail: "".into() }).to.name(), "flush");
}

#[test]
fn flush_waits_for_guards_then_escalates() {
    let mut p = policy();
    p.gated_steps = vec![];
    let mut m = machine_with(p);
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network), Event::Switched { ok: true, detail: "".into() }]);
    let d = m.handle(&Event::FlushBlocked { checks: vec![bad("critical_active")], gave_up: false });
    assert_eq!(d.to, State::flush(2));
    assert_eq!(
        m.handle(&Event::FlushBlocked { checks: vec![bad("critical_active")], gave_up: true }).to.name(),
        "rollback",
        "the switch is undone before a person takes over"
    );
}

#[test]
fn deploy_live_to_verify_and_failures_to_rollback() {
    for (status, expect) in [
        (DeployStatus::Live, "verify"),
        (DeployStatus::Failed, "rollback"),
        (DeployStatus::Canceled, "rollback"),
        (DeployStatus::TimedOut, "rollback"),
    ] {
        let mut p = policy();
        p.gated_steps = vec![];
        let mut m = machine_with(p);
        drive(
            &mut m,
            &[
                trigger(),
                confirmed(),
                confirmed(),
                assessed(FailureClass::Network),
                Event::Switched { ok: true, detail: "".into() },
                Event::Flushed { mode: FlushMode::Selective, deleted: 0, detail: "".into() },
            ],
        );
        assert_eq!(m.handle(&deploy(status)).to.name(), expect, "{status:?}");
    }
}

#[test]
fn verify_to_recovered_when_every_item_holds() {
    let mut m = at_verify();
    let d = m.handle(&all_verified(false));
    assert_eq!(d.to.name(), "recovered");
    assert_eq!(d.effects, vec![Effect::Close]);
    assert_eq!(d.to.outcome(), Some(crate::model::Outcome::Recovered));
}

#[test]
fn verify_keeps_sampling_then_rolls_back_when_window_ends() {
    let mut m = at_verify();
    let failing = |over| Event::VerifyChecked {
        checks: VerifyItem::ALL.iter().map(|i| if *i == VerifyItem::SyntheticJob { bad(i.as_str()) } else { ok(i.as_str()) }).collect(),
        window_over: over,
        started_at: None,
    };
    assert_eq!(m.handle(&failing(false)).to, State::verify(2));
    let d = m.handle(&failing(true));
    assert_eq!(d.to.name(), "rollback");
    assert!(d.note.unwrap().contains("synthetic_job"));
}

#[test]
fn rollback_to_rolled_back_or_escalated() {
    let mut m = at_verify();
    drive(&mut m, &[Event::VerifyChecked { checks: vec![], window_over: true, started_at: None }]);
    let mut m2 = m.clone();
    assert_eq!(m.handle(&Event::RollbackFinished { ok: true, detail: "".into() }).to.name(), "rolled_back");
    assert_eq!(m2.handle(&Event::RollbackFinished { ok: false, detail: "deploy failed".into() }).to.name(), "escalated");
}

#[test]
fn abort_before_switch_aborts_and_after_switch_rolls_back() {
    let mut m = machine_with(policy());
    drive(&mut m, &[trigger()]);
    assert_eq!(m.handle(&abort()).to.name(), "aborted");

    let mut m = at_verify();
    assert_eq!(m.handle(&abort()).to.name(), "rollback");
    let d = m.handle(&abort());
    assert!(d.rejected.is_some(), "second abort during rollback is reported");
}

#[test]
fn approvals_count_allowed_people_once() {
    let mut p = policy();
    p.approvals_required = 2;
    let mut m = machine_with(p);
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network), Event::Switched { ok: true, detail: "".into() }]);
    let d = m.handle(&approve("mallory"));
    assert!(d.rejected.unwrap().contains("not on the approver list"));
    drive(&mut m, &[approve("alice")]);
    let d = m.handle(&approve("alice"));
    assert!(d.rejected.unwrap().contains("already approved"));
    assert_eq!(m.state().name(), "awaiting_approval");
    drive(&mut m, &[approve("bob")]);
    assert_eq!(m.state().name(), "flush");
}

#[test]
fn rejection_aborts_before_switch_and_rolls_back_after() {
    let mut p = policy();
    p.gated_steps = vec![Step::Switch, Step::Flush];
    let mut m = machine_with(p.clone());
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network)]);
    assert_eq!(m.state().name(), "awaiting_approval");
    assert_eq!(m.handle(&Event::Reject { approver: "bob".into(), comment: "no".into() }).to.name(), "aborted");

    let mut m = machine_with(p);
    drive(
        &mut m,
        &[
            trigger(),
            confirmed(),
            confirmed(),
            assessed(FailureClass::Network),
            approve("bob"),
            Event::Switched { ok: true, detail: "".into() },
        ],
    );
    assert_eq!(m.handle(&Event::Reject { approver: "alice".into(), comment: "no".into() }).to.name(), "rollback");
}

#[test]
fn approval_ttl_expiry_escalates_before_the_switch_and_rolls_back_after() {
    let mut p = policy();
    p.gated_steps = vec![Step::Switch, Step::Flush];
    let mut m = machine_with(p);
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network)]);
    let mut before = m.clone();
    assert_eq!(before.handle(&Event::ApprovalExpired).to.name(), "escalated");
    drive(&mut m, &[approve("alice"), Event::Switched { ok: true, detail: "".into() }]);
    assert_eq!(m.state(), &State::awaiting_approval(Step::Flush, vec![]));
    assert_eq!(m.handle(&Event::ApprovalExpired).to.name(), "rollback", "never leave the backup URL undeployed on the platform");
}

#[test]
fn abort_in_switch_rolls_back_even_before_the_switch_is_confirmed() {
    // A crash after the platform write but before `Switched` was journaled: the write
    // may have landed, so an abort must roll back.
    let mut p = policy();
    p.gated_steps = vec![];
    let mut m = machine_with(p);
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network)]);
    assert_eq!(m.state().name(), "switch");
    assert_eq!(m.handle(&abort()).to.name(), "rollback");
}

#[test]
fn gated_deploy_waits_for_approval() {
    let mut p = policy();
    p.gated_steps = vec![Step::Deploy];
    let mut m = machine_with(p);
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network), Event::Switched { ok: true, detail: "".into() }]);
    let d = m.handle(&Event::Flushed { mode: FlushMode::Selective, deleted: 0, detail: "".into() });
    assert_eq!(d.to, State::awaiting_approval(Step::Deploy, vec![]));
    drive(&mut m, &[approve("alice")]);
    assert_eq!(m.state().name(), "deploy");
}

#[test]
fn events_a_state_does_not_accept_are_rejected_and_reported() {
    let mut m = machine_with(policy());
    let d = m.handle(&deploy(DeployStatus::Live));
    assert_eq!(d.from, d.to);
    assert_eq!(d.rejected.as_deref(), Some("event `deploy_finished` is not accepted in this state"));
    assert!(d.effects.is_empty());

    drive(&mut m, &[trigger()]);
    assert!(m.handle(&trigger()).rejected.is_some(), "a second trigger does not restart confirmation");
    assert!(m.handle(&approve("alice")).rejected.is_some(), "approval outside a gate");

    let mut done = at_verify();
    drive(&mut done, &[all_verified(false)]);
    for e in [abort(), trigger(), all_verified(false), Event::ApprovalExpired] {
        let d = done.handle(&e);
        assert!(d.rejected.is_some(), "{} accepted by a terminal state", e.name());
        assert_eq!(d.to.name(), "recovered");
    }
}

#[test]
fn machine_round_trips_through_json_mid_incident() {
    let mut m = machine_with(policy());
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Network), Event::Switched { ok: true, detail: "".into() }]);
    let json = m.to_json();
    let mut back = Machine::from_json(&json).unwrap();
    assert_eq!(back.state(), m.state());
    assert_eq!(back.incident(), m.incident());
    assert!(back.incident().switched);
    drive(&mut back, &[approve("alice")]);
    assert_eq!(back.state().name(), "flush");
}

// ---------------------------------------------------------------- never make it worse

fn at_deploy(p: Policy) -> Machine {
    let mut m = machine_with(Policy { gated_steps: vec![], ..p });
    drive(
        &mut m,
        &[
            trigger(),
            confirmed(),
            confirmed(),
            assessed(FailureClass::ConnectionRefused),
            Event::Switched { ok: true, detail: "".into() },
            Event::Flushed { mode: FlushMode::Selective, deleted: 0, detail: "".into() },
        ],
    );
    assert_eq!(m.state().name(), "deploy");
    m
}

/// A machine in Verify after an ungated failover under `p`.
fn verifying(p: Policy) -> Machine {
    let mut m = at_deploy(p);
    drive(&mut m, &[deploy(DeployStatus::Live)]);
    m
}

fn verify_sample(holding: &[VerifyItem], over: bool) -> Event {
    Event::VerifyChecked {
        checks: VerifyItem::ALL.iter().map(|i| if holding.contains(i) { ok(i.as_str()) } else { bad(i.as_str()) }).collect(),
        window_over: over,
        started_at: Some("2026-12-01T00:00:01.000Z".into()),
    }
}

#[test]
fn a_failed_deploy_is_retried_as_its_own_effect_then_rolls_back_without_a_deploy() {
    let mut m = at_deploy(Policy { deploy_retries: 2, ..policy() });
    let d = m.handle(&deploy(DeployStatus::Failed));
    assert_eq!((d.to.name(), d.rejected.clone()), ("deploy", None));
    assert_eq!(m.effects(), vec![Effect::Deploy { attempt: 2 }], "the retry is a new effect, with its own key");
    assert!(d.note.unwrap().contains("retrying (1 of 2)"));
    m.handle(&deploy(DeployStatus::Canceled));
    assert_eq!(m.effects(), vec![Effect::Deploy { attempt: 3 }]);
    let d = m.handle(&deploy(DeployStatus::Failed));
    assert_eq!(d.to.name(), "rollback");
    assert!(m.incident().deploy_failed && !m.incident().backup_deployed, "the old deploy is still live: no rollback deploy");
}

#[test]
fn a_deploy_that_goes_live_after_a_retry_verifies() {
    let mut m = at_deploy(Policy { deploy_retries: 1, ..policy() });
    m.handle(&deploy(DeployStatus::Failed));
    assert_eq!(m.handle(&deploy(DeployStatus::Live)).to.name(), "verify");
    assert!(m.incident().backup_deployed && !m.incident().deploy_failed);
}

#[test]
fn a_timed_out_deploy_may_still_land_so_rollback_deploys() {
    let mut m = at_deploy(Policy { deploy_retries: 3, ..policy() });
    assert_eq!(m.handle(&deploy(DeployStatus::TimedOut)).to.name(), "rollback", "a timeout is not retried: it may still go live");
    assert!(m.incident().backup_deployed);
}

#[test]
fn start_up_noise_that_stops_is_not_a_failure() {
    use VerifyItem::*;
    let mut m = at_verify();
    // First sample: the service is still connecting.
    assert_eq!(m.handle(&verify_sample(&[Latency, QueueConnected], false)).to.name(), "verify");
    // Items hold later, all in the same sample: recovered.
    assert_eq!(m.handle(&verify_sample(&[HealthUp, QueueConnected, SyntheticJob, WaitingDecreasing, Latency], false)).to.name(), "verify");
    assert_eq!(m.incident().healthy_since.as_deref(), Some("2026-12-01T00:00:01.000Z"), "errors count from the first healthy sample");
    assert_eq!(m.handle(&all_verified(false)).to.name(), "recovered");
}

#[test]
fn a_failed_verification_says_which_item_never_held_and_what_was_seen() {
    use VerifyItem::*;
    let mut m = at_verify();
    m.handle(&verify_sample(&[HealthUp, QueueConnected, NoNewErrors, Latency, WaitingDecreasing], false));
    let d = m.handle(&verify_sample(&[HealthUp, QueueConnected, Latency, WaitingDecreasing], true));
    let note = d.note.unwrap();
    assert!(note.contains("synthetic_job never held (last seen: observed)"), "{note}");
    assert!(note.contains("no_new_errors did not hold in the last sample"), "{note}");
}

#[test]
fn stalled_workers_get_one_restart_then_verify_again() {
    use VerifyItem::*;
    let mut m = verifying(Policy { restart_on_stall: true, gated_steps: vec![], ..policy() });
    let stalled = [HealthUp, QueueConnected, NoNewErrors, Latency, WaitingDecreasing];
    let d = m.handle(&verify_sample(&stalled, true));
    assert_eq!((d.to.name(), d.effects.clone()), ("restart", vec![Effect::Restart]));
    assert_eq!(m.handle(&deploy(DeployStatus::Live)).to, State::verify(1), "a fresh verification after the restart");
    assert!(m.incident().verify_held.is_empty() && m.incident().healthy_since.is_none());
    // Still stalled: no second restart.
    assert_eq!(m.handle(&verify_sample(&stalled, true)).to.name(), "rollback");
}

#[test]
fn a_service_that_is_down_is_not_restarted_for_a_stall() {
    use VerifyItem::*;
    let mut m = verifying(Policy { restart_on_stall: true, gated_steps: vec![], ..policy() });
    assert_eq!(m.handle(&verify_sample(&[Latency], true)).to.name(), "rollback", "health down: not a stall");
}

#[test]
fn rollback_holds_when_the_primary_is_dead() {
    let mut m = at_verify();
    drive(&mut m, &[Event::VerifyChecked { checks: vec![], window_over: true, started_at: None }]);
    let d = m.handle(&Event::RollbackHeld { checks: vec![bad("primary_ping")], detail: "Holding: the primary is down".into() });
    assert_eq!(d.to.name(), "held");
    assert_eq!(d.to.outcome(), Some(crate::model::Outcome::Held));
    assert_eq!(d.effects, vec![Effect::Close]);
    assert_eq!(d.note.as_deref(), Some("Holding: the primary is down"));
}

fn busy_policy() -> Policy {
    let mut p = policy();
    p.actions.insert(FailureClass::Busy, Action::Wait);
    p
}

#[test]
fn a_busy_primary_is_waited_for_never_failed_over() {
    let mut m = machine_with(busy_policy());
    drive(&mut m, &[trigger(), confirmed(), confirmed()]);
    let d = m.handle(&assessed(FailureClass::Busy));
    assert_eq!((d.to.name(), d.rejected), ("assess", None));
    assert_eq!(m.effects(), vec![Effect::Assess], "re-sample");
    m.handle(&assessed(FailureClass::Busy));
    let d = m.handle(&assessed(FailureClass::Busy));
    assert_eq!(d.to.name(), "escalated", "still busy after the wait: a person decides");
    assert!(!m.incident().switched);
}

#[test]
fn a_busy_primary_that_answers_again_was_a_false_alarm() {
    let mut m = machine_with(busy_policy());
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Busy)]);
    let d = m.handle(&Event::Assessed { class: FailureClass::Unknown, detail: "".into(), preflight: vec![], primary_answers: true });
    assert_eq!(d.to.name(), "false_alarm");
}

#[test]
fn the_orchestrators_own_trouble_never_leads_to_a_failover() {
    let mut m = machine_with(policy()); // the test policy says failover for every class
    drive(&mut m, &[trigger(), confirmed(), confirmed()]);
    let d = m.handle(&assessed(FailureClass::Local));
    assert_eq!(d.to.name(), "escalated");
    assert!(!m.incident().switched);
}

#[test]
fn incidents_journaled_before_these_fields_existed_still_load() {
    let m = at_verify();
    let mut v: serde_json::Value = serde_json::from_str(&m.to_json()).unwrap();
    // Strip every field added for the decisions work, wherever statig keeps them.
    fn strip(v: &mut serde_json::Value) {
        if let Some(o) = v.as_object_mut() {
            for k in [
                "waits",
                "failed_deploys",
                "deploy_failed",
                "backup_deployed",
                "restarted",
                "verify_held",
                "healthy_since",
                "busy_attempts",
                "deploy_retries",
                "restart_on_stall",
                "observe",
            ] {
                o.remove(k);
            }
            o.values_mut().for_each(strip);
        }
    }
    strip(&mut v);
    let back = Machine::from_json(&v.to_string()).expect("old machine JSON loads");
    assert_eq!(back.state().name(), "verify");
    assert_eq!(back.incident().failed_deploys, 0);
}

#[test]
fn a_slow_answer_after_waiting_for_a_busy_primary_is_still_waited_for() {
    let mut m = machine_with(busy_policy()); // the test policy says failover for timeout
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::Busy)]);
    let d = m.handle(&assessed(FailureClass::Timeout));
    assert_eq!(d.to.name(), "assess", "draining after its script: keep waiting");
    assert!(!m.incident().switched);
}

#[test]
fn no_restart_unasked_where_deploys_need_approval() {
    use VerifyItem::*;
    let mut m = machine_with(Policy { restart_on_stall: true, gated_steps: vec![Step::Deploy], ..policy() });
    drive(
        &mut m,
        &[
            trigger(),
            confirmed(),
            confirmed(),
            assessed(FailureClass::ConnectionRefused),
            Event::Switched { ok: true, detail: "".into() },
            Event::Flushed { mode: FlushMode::Selective, deleted: 0, detail: "".into() },
            approve("alice"),
            deploy(DeployStatus::Live),
        ],
    );
    let stalled = [HealthUp, QueueConnected, NoNewErrors, Latency, WaitingDecreasing];
    assert_eq!(m.handle(&verify_sample(&stalled, true)).to.name(), "rollback");
}

fn observing() -> Policy {
    Policy { observe: true, gated_steps: vec![Step::Switch, Step::Flush], ..policy() }
}

#[test]
fn shadow_mode_ends_at_assess_where_a_failover_would_switch() {
    let mut m = machine_with(observing());
    drive(&mut m, &[trigger(), confirmed(), confirmed()]);
    let mut ev = assessed(FailureClass::ConnectionRefused);
    if let Event::Assessed { preflight, .. } = &mut ev {
        // A count that could not be taken is for the record, not a dead backup.
        preflight.push(Check::new(FLUSH_ESTIMATE, false, "could not count: timeout"));
    }
    let d = m.handle(&ev);
    assert_eq!(d.to.name(), "would_fail_over");
    assert_eq!(d.to.outcome(), Some(crate::model::Outcome::WouldFailOver));
    assert_eq!(d.effects, vec![Effect::Close], "nothing to do: no switch, flush or deploy");
    let note = d.note.unwrap();
    assert!(note.contains("after approval of the switch") && note.contains("could not count"), "{note}");
    assert!(!m.incident().switched);
}

#[test]
fn shadow_mode_records_every_escalation_with_its_reason() {
    // Backup fails preflight.
    let mut m = machine_with(observing());
    drive(&mut m, &[trigger(), confirmed(), confirmed()]);
    let d = m.handle(&Event::Assessed {
        class: FailureClass::ConnectionRefused,
        detail: "".into(),
        preflight: vec![bad("backup_ping"), ok("backup_latency"), ok("backup_distinct")],
        primary_answers: false,
    });
    assert_eq!(d.to.name(), "would_escalate");
    assert!(d.note.as_deref().unwrap().contains("would have escalated: class connection_refused: backup fails preflight (backup_ping)"));
    // The playbook says escalate.
    let mut m = machine_with(observing());
    drive(&mut m, &[trigger(), confirmed(), confirmed()]);
    let d = m.handle(&assessed(FailureClass::Auth));
    assert_eq!((d.to.name(), d.to.outcome()), ("would_escalate", Some(crate::model::Outcome::WouldEscalate)));
    // A false alarm stays a false alarm.
    let mut m = machine_with(observing());
    drive(&mut m, &[trigger()]);
    let d = m.handle(&Event::ConfirmChecked { checks: vec![bad("ping_failed"), ok("health_down")] });
    assert_eq!(d.to.name(), "false_alarm");
}

#[test]
fn act_mode_is_unchanged_by_a_failing_flush_estimate() {
    let mut m = machine_with(policy());
    drive(&mut m, &[trigger(), confirmed(), confirmed()]);
    let d = m.handle(&assessed(FailureClass::ConnectionRefused));
    assert_eq!(d.to.name(), "switch");
}

fn vetoed(hook: HookPoint) -> Event {
    Event::HookVetoed { hook, detail: "exited 1: change freeze".into() }
}

fn at_switch() -> Machine {
    let mut p = policy();
    p.gated_steps = vec![];
    let mut m = machine_with(p);
    drive(&mut m, &[trigger(), confirmed(), confirmed(), assessed(FailureClass::ConnectionRefused)]);
    assert_eq!(m.state().name(), "switch");
    m
}

#[test]
fn a_pre_switch_veto_escalates_without_a_switch() {
    let mut m = at_switch();
    let d = m.handle(&vetoed(HookPoint::PreSwitch));
    assert!(d.rejected.is_none());
    assert_eq!(d.to.name(), "escalated");
    assert!(!m.incident().switched, "no platform write was made: nothing to roll back or disarm");
    let note = d.note.unwrap();
    assert!(note.contains("pre_switch hook vetoed") && note.contains("change freeze") && note.contains("no platform write"), "{note}");
}

#[test]
fn a_pre_flush_veto_after_the_switch_rolls_back() {
    let mut m = at_switch();
    drive(&mut m, &[Event::Switched { ok: true, detail: "".into() }]);
    assert_eq!(m.state().name(), "flush");
    let d = m.handle(&vetoed(HookPoint::PreFlush));
    assert!(d.rejected.is_none());
    assert_eq!(d.to.name(), "rollback");
    assert_eq!(d.effects, vec![Effect::Rollback]);
    assert!(m.incident().switched);
}

#[test]
fn a_pre_rollback_veto_holds() {
    let mut m = at_switch();
    drive(&mut m, &[Event::Switched { ok: true, detail: "".into() }, vetoed(HookPoint::PreFlush)]);
    let d = m.handle(&vetoed(HookPoint::PreRollback));
    assert!(d.rejected.is_none());
    assert_eq!(d.to.name(), "held");
    assert!(d.note.unwrap().contains("A person must decide"));
}

#[test]
fn a_veto_for_another_step_is_rejected() {
    let mut m = at_switch();
    for hook in [HookPoint::PreFlush, HookPoint::PreRollback, HookPoint::PostRecovered] {
        let d = m.handle(&vetoed(hook));
        assert!(d.rejected.is_some(), "{hook} veto in switch is refused");
        assert_eq!(d.to.name(), "switch");
    }
    let mut v = at_verify();
    assert!(v.handle(&vetoed(HookPoint::PreSwitch)).rejected.is_some());
}

#[test]
fn hook_veto_round_trips_through_json() {
    let e = vetoed(HookPoint::PreFlush);
    let back: Event = serde_json::from_str(&serde_json::to_string(&e).unwrap()).unwrap();
    assert_eq!(back, e);
    assert_eq!(e.name(), "hook_vetoed");
}
