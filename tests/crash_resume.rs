//! Crash-resume exactly once: the real binary is SIGKILLed (by its own fault injection,
//! `ORCH_FAULT_CRASH_AT`) in every state and between every side effect's intent, act
//! and outcome; `orchestrator resume` then finishes the incident, and the platform
//! stand-in counts exactly one env-var write per target value and one deploy per
//! deploy intent.

mod support;

use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use std::os::unix::process::ExitStatusExt;
use support::world::World;

const FAST: &[(&str, &str)] = &[("verify_window: 15s", "verify_window: 4s"), ("verify_interval: 500ms", "verify_interval: 200ms")];

#[derive(Clone, Copy, PartialEq)]
enum Scenario {
    Failover,
    /// Flush behind an approval gate; `oncall` approves between crash and resume.
    Gated,
    /// Every deploy of the backup fails (two: one retry); the primary comes back before
    /// resume, so the rollback restores its URL (no rollback deploy: the old one stayed live).
    Rollback,
    /// Every deploy fails and the primary stays dead: the rollback holds.
    Held,
    /// The first deploy fails, its retry goes live.
    DeployRetry,
    /// Deploys start the service with its workers stopped; workers are enabled before
    /// resume, so the one restart (if not already requested) brings them back.
    Stalled,
    /// A planned switchover (`orchestrator switchover`): the primary is alive.
    Switchover,
    /// A second switchover, back from the backup to the primary (the incident's `from`
    /// is the backup: a resume must drive it that way round).
    SwitchoverBack,
}

async fn orchestrator(w: &World, args: &[&str], crash_at: Option<&str>) -> std::process::ExitStatus {
    w.cli(args, crash_at, &[]).await
}

async fn crash_then_resume(point: &str, scenario: Scenario) {
    let w = World::start().await;
    let failing = match scenario {
        Scenario::Rollback | Scenario::Held => 2,
        Scenario::DeployRetry => 1,
        _ => 0,
    };
    if failing > 0 {
        w.sandbox
            .platform()
            .set_faults(sandbox::FaultsPatch {
                fail_next_deploys: Some(failing),
                fail_status: Some("build_failed".into()),
                ..Default::default()
            })
            .unwrap();
    }
    if scenario == Scenario::Stalled {
        w.sandbox.platform().set_faults(sandbox::FaultsPatch { workers_enabled: Some(false), ..Default::default() }).unwrap();
    }
    let planned = matches!(scenario, Scenario::Switchover | Scenario::SwitchoverBack);
    if !planned {
        w.primary.kill();
        w.service_sees_redis_down().await;
    }
    let mut edits = FAST.to_vec();
    if scenario == Scenario::Gated {
        edits.push(("  steps: []", "  steps: [flush]"));
    }
    let playbook = w.playbook_file(&edits);
    let pb = playbook.to_str().unwrap();

    if scenario == Scenario::SwitchoverBack {
        let first = orchestrator(&w, &["switchover", "sandbox", "--playbook", pb, "--reason", "there"], None).await;
        assert!(first.success(), "the first switchover (to the backup) recovers");
    }
    let status = if planned {
        orchestrator(&w, &["switchover", "sandbox", "--playbook", pb, "--reason", point], Some(point)).await
    } else {
        orchestrator(&w, &["run", "--playbook", pb, "--reason", point], Some(point)).await
    };
    assert_eq!(status.signal(), Some(libc_sigkill()), "the run was killed at {point} (status {status:?})");

    let journal = Journal::open_existing(&w.journal_path()).await.unwrap();
    let id = journal.incidents(1).await.unwrap()[0].id.clone();
    // A crash just after the closing transition: closed, and its topology move with it
    // (one transaction); resume only reports it.
    let closes = point == "state:recovered";
    assert_eq!(journal.incident(&id).await.unwrap().is_open(), !closes, "open after the crash at {point}: {}", !closes);
    if scenario == Scenario::Gated {
        let ok = orchestrator(&w, &["approve", &id, "--as", "oncall", "--comment", "go"], None).await;
        assert!(ok.success(), "approve after the crash");
    }
    if scenario == Scenario::Rollback {
        w.primary.restart().unwrap();
    }
    if scenario == Scenario::Stalled {
        w.sandbox.platform().set_faults(sandbox::FaultsPatch { workers_enabled: Some(true), ..Default::default() }).unwrap();
    }
    let status = orchestrator(&w, &["resume", &id, "--playbook", pb], None).await;
    let (expected, name) = match scenario {
        Scenario::Rollback => (4, "RolledBack"),
        Scenario::Held => (9, "Held"),
        // The restart was already requested (with workers stopped) before the crash:
        // still stalled after it, the primary dead, so the incident holds on the backup.
        Scenario::Stalled if point == "outcome:restart" => (9, "Held"),
        _ => (0, "Recovered"),
    };
    assert_eq!(status.code(), Some(expected), "resume after a crash at {point} ends {name}");

    // Exactly once: one write per target value, one deploy per deploy intent.
    let stats = w.sandbox.platform().stats();
    for (write, n) in &stats.env_write_counts {
        assert_eq!(*n, 1, "{write} written {n} times after a crash at {point}");
    }
    let mut deploy_intents = 0;
    for inc in journal.incidents(10).await.unwrap() {
        deploy_intents += journal.effects(&inc.id).await.unwrap().iter().filter(|e| e.kind == "deploy").count();
    }
    assert_eq!(stats.deploy_count, deploy_intents, "deploys on the platform vs deploy intents after a crash at {point}");
    assert!(journal.effects(&id).await.unwrap().iter().all(|e| e.outcome.is_some()), "no effect left in flight");
    let expected_writes = if matches!(scenario, Scenario::Rollback | Scenario::SwitchoverBack) { 2 } else { 1 };
    assert_eq!(stats.env_write_counts.len(), expected_writes);
    if expected == 9 {
        assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.backup.url()), "held: never handed the dead primary's URL");
    }
    check_no_dup_transitions(&journal, &id).await;
    if scenario == Scenario::Switchover {
        assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.backup.url()), "the switchover moved the service");
        assert_eq!(journal.topology("sandbox").await.unwrap().active, orchestrator::model::Side::Backup, "topology moved once");
        let moves = journal.topology_history("sandbox", 100).await.unwrap().into_iter().filter(|c| c.change == "moved").count();
        assert_eq!(moves, 1, "one topology move after a crash at {point}");
    }
    if scenario == Scenario::SwitchoverBack {
        assert_eq!(w.sandbox.platform().env_var("REDIS_URL"), Some(w.primary.url()), "back on the primary after a crash at {point}");
        assert_eq!(journal.topology("sandbox").await.unwrap().active, orchestrator::model::Side::Primary);
        let inc = journal.machine(&id).await.unwrap();
        assert_eq!(inc.incident().from, orchestrator::model::Side::Backup, "the incident moved away from the backup");
        let moves = journal.topology_history("sandbox", 100).await.unwrap().into_iter().filter(|c| c.change == "moved").count();
        assert_eq!(moves, 2, "one topology move per switchover after a crash at {point}");
    }
}

/// The journal reads as one incident: each state is entered once per path.
async fn check_no_dup_transitions(journal: &Journal, id: &str) {
    let moves: Vec<(String, String)> = journal
        .transitions(id)
        .await
        .unwrap()
        .into_iter()
        .filter(|t| t.rejected.is_none() && t.from_state != t.to_state)
        .map(|t| (t.from_state, t.to_state))
        .collect();
    let mut seen = std::collections::HashSet::new();
    for m in &moves {
        assert!(seen.insert(m.clone()), "transition {m:?} journaled twice: {moves:?}");
    }
}

fn libc_sigkill() -> i32 {
    9
}

macro_rules! crash_tests {
    ($($name:ident: $point:literal, $scenario:expr;)+) => {
        $(
            #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
            async fn $name() {
                crash_then_resume($point, $scenario).await;
            }
        )+
    };
}

crash_tests! {
    killed_in_detect: "state:detect", Scenario::Failover;
    killed_in_confirm: "state:confirm", Scenario::Failover;
    killed_in_assess: "state:assess", Scenario::Failover;
    killed_in_switch: "state:switch", Scenario::Failover;
    killed_after_switch_intent: "intent:set_env", Scenario::Failover;
    killed_after_switch_write: "outcome:set_env", Scenario::Failover;
    killed_in_awaiting_approval: "state:awaiting_approval", Scenario::Gated;
    killed_in_flush: "state:flush", Scenario::Failover;
    killed_after_flush_intent: "intent:flush", Scenario::Failover;
    killed_after_flush: "outcome:flush", Scenario::Failover;
    killed_in_deploy: "state:deploy", Scenario::Failover;
    killed_after_deploy_intent: "intent:deploy", Scenario::Failover;
    killed_after_deploy_request: "outcome:deploy", Scenario::Failover;
    killed_in_verify: "state:verify", Scenario::Failover;
    killed_in_rollback: "state:rollback", Scenario::Rollback;
    killed_in_rollback_that_holds: "state:rollback", Scenario::Held;
    killed_after_deploy_retry_intent: "intent:deploy_retry", Scenario::DeployRetry;
    killed_after_deploy_retry_request: "outcome:deploy_retry", Scenario::DeployRetry;
    killed_in_restart: "state:restart", Scenario::Stalled;
    killed_after_restart_intent: "intent:restart", Scenario::Stalled;
    killed_after_restart_request: "outcome:restart", Scenario::Stalled;
    switchover_killed_in_detect: "state:detect", Scenario::Switchover;
    switchover_killed_in_assess: "state:assess", Scenario::Switchover;
    switchover_killed_in_switch: "state:switch", Scenario::Switchover;
    switchover_killed_after_switch_intent: "intent:set_env", Scenario::Switchover;
    switchover_killed_after_switch_write: "outcome:set_env", Scenario::Switchover;
    switchover_killed_in_flush: "state:flush", Scenario::Switchover;
    switchover_killed_after_flush_intent: "intent:flush", Scenario::Switchover;
    switchover_killed_after_flush: "outcome:flush", Scenario::Switchover;
    switchover_killed_in_deploy: "state:deploy", Scenario::Switchover;
    switchover_killed_after_deploy_intent: "intent:deploy", Scenario::Switchover;
    switchover_killed_after_deploy_request: "outcome:deploy", Scenario::Switchover;
    switchover_killed_in_verify: "state:verify", Scenario::Switchover;
    switchover_killed_at_recovered: "state:recovered", Scenario::Switchover;
    switchover_back_killed_in_detect: "state:detect", Scenario::SwitchoverBack;
    switchover_back_killed_in_assess: "state:assess", Scenario::SwitchoverBack;
    switchover_back_killed_after_switch_intent: "intent:set_env", Scenario::SwitchoverBack;
    switchover_back_killed_after_switch_write: "outcome:set_env", Scenario::SwitchoverBack;
    switchover_back_killed_after_flush_intent: "intent:flush", Scenario::SwitchoverBack;
    switchover_back_killed_after_deploy_request: "outcome:deploy", Scenario::SwitchoverBack;
    switchover_back_killed_in_verify: "state:verify", Scenario::SwitchoverBack;
}
