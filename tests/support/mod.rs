//! Shared helpers of the integration tests: `world` (redis-servers, the sandbox
//! service and platform, a journal), `serve` (`orchestrator serve` children, here or in
//! a network namespace), `pg` (fresh databases on the shared PostgreSQL, private
//! servers to stop, kill and partition), `pgdb` (a world's own PostgreSQL journal
//! database), `netns` (namespaces on a bridge, with real partitions).
#![allow(dead_code)]
pub mod browser;
pub mod minimal;
pub mod netns;
pub mod pg;
pub mod pgdb;
pub mod serve;
pub mod world;

/// A pinned policy for journal tests that drive the machine by hand: one confirm
/// attempt, failover for every class, flush behind `alice`'s approval.
pub fn policy() -> orchestrator::machine::Policy {
    use orchestrator::model::{Action, ConfirmItem, FailureClass, FlushMode, Step, VerifyItem};
    orchestrator::machine::Policy {
        confirm_required: vec![ConfirmItem::PingFailed],
        confirm_min_signals: 1,
        confirm_attempts: 1,
        verify_required: VerifyItem::ALL.to_vec(),
        actions: FailureClass::ALL.iter().map(|c| (*c, Action::Failover)).collect(),
        flush_mode: FlushMode::Selective,
        gated_steps: vec![Step::Flush],
        approvers: vec!["alice".into()],
        approvals_required: 1,
        busy_attempts: 1,
        deploy_retries: 0,
        restart_on_stall: false,
        observe: false,
    }
}
