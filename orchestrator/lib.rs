//! Automated Redis failover orchestrator: the library behind the `orchestrator` binary.
//!
//! The runbook's procedure (Detect → Confirm → Assess → Switch → Flush → Deploy →
//! Verify → Rollback) as a pure state machine ([`machine`]), driven by an executor
//! ([`executor`]) that journals every decision to SQLite ([`journal`]) before acting
//! on the outside world through narrow traits ([`ports`]).

pub mod cli;
pub mod daemon;
pub mod dryrun;
pub mod duration;
pub mod executor;
pub mod fleet;
pub mod hooks;
pub mod http;
pub mod journal;
pub mod leadership;
pub mod machine;
pub mod metrics;
pub mod model;
pub mod notify;
pub mod pagerduty;
pub mod platform;
pub mod playbook;
pub mod ports;
pub mod probe;
pub mod redact;
pub mod secret;
pub mod selfcheck;
pub mod server;
pub mod service;
pub mod timeline;
pub mod topology;
pub mod watch;
pub mod wiring;
