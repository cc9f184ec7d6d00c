//! Playbook hooks as effects: each run journaled under `ID:hook:POINT` (intent before,
//! outcome after), with the incident's context in a cleared environment.
//!
//! Delivery is **at least once**: the key is handed to the hook as `ORCH_HOOK_KEY` so it
//! can tell a repeat. A run whose outcome is journaled is never repeated (a `pre_*`
//! hook's recorded verdict stands on resume); a run whose intent is journaled without
//! an outcome (the orchestrator died while it ran) is run again on resume, since its
//! verdict was never recorded and a step must not go ahead unasked.

use super::once::{Done, Failed, Seen};
use super::{ExecError, Executor};
use crate::journal::prelude::*;
use crate::machine::Machine;
use crate::model::{HookPoint, Outcome};
use crate::ports::{HookRequest, HookStatus};
use serde::{Deserialize, Serialize};
use serde_json::json;

/// The journaled result of a hook run that succeeded (exit 0). A failed run is
/// journaled as a failure whose error says how it ended and what it wrote.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct HookRan {
    pub hook: String,
    #[serde(flatten)]
    pub status: HookStatus,
    /// What it wrote to stdout and stderr, redacted and cut at 4 KiB.
    pub output: String,
    pub elapsed_ms: u64,
}

impl Executor {
    /// The environment a hook gets: `PATH`, the incident's context (`ORCH_*`, endpoints
    /// without credentials) and what the playbook maps in. Nothing else of ours.
    async fn hook_env(&self, id: &str, point: HookPoint, key: &str, state: &str, outcome: Option<Outcome>) -> Vec<(String, String)> {
        let pb = &self.playbook;
        let path = std::env::var("PATH").unwrap_or_else(|_| "/usr/local/bin:/usr/bin:/bin".into());
        let source = self.journal.incident(id).await.map(|i| i.trigger_source).unwrap_or_default();
        let mut env = vec![
            ("PATH".to_string(), path),
            ("ORCH_HOOK".into(), point.as_str().into()),
            ("ORCH_HOOK_KEY".into(), key.into()),
            ("ORCH_INCIDENT".into(), id.into()),
            ("ORCH_TARGET".into(), self.target()),
            ("ORCH_PLAYBOOK".into(), pb.name.clone()),
            ("ORCH_STATE".into(), state.into()),
            ("ORCH_TRIGGER_SOURCE".into(), self.redact_text(&source)),
            // Masked: `redis://default:***@host:port/db`, never the password.
            ("ORCH_PRIMARY".into(), pb.redis.primary.masked().to_string()),
            ("ORCH_BACKUP".into(), pb.redis.backup.masked().to_string()),
            ("ORCH_PRIMARY_ENDPOINT".into(), pb.redis.primary.endpoint()),
            ("ORCH_BACKUP_ENDPOINT".into(), pb.redis.backup.endpoint()),
        ];
        if let Some(o) = outcome {
            env.push(("ORCH_OUTCOME".into(), o.as_str().into()));
        }
        if let Some(h) = pb.hooks.get(&point) {
            env.extend(h.env.iter().map(|(k, v)| (k.clone(), v.expose().to_string())));
        }
        env
    }

    /// Runs the hook at `point` once (see the module's delivery rule). `None` when the
    /// playbook has none; else whether it succeeded, with its journaled result.
    async fn run_hook(
        &self,
        id: &str,
        point: HookPoint,
        state: &str,
        outcome: Option<Outcome>,
    ) -> Result<Option<Done<HookRan>>, ExecError> {
        let Some(hook) = self.playbook.hooks.get(&point) else { return Ok(None) };
        let key = format!("{id}:hook:{point}");
        let timeout = crate::duration::format_duration(hook.timeout);
        let intent = json!({
            "hook": point.as_str(),
            "command": hook.command.iter().map(|a| self.redact_text(a)).collect::<Vec<_>>(),
            "timeout": timeout,
        });
        let req =
            HookRequest { command: hook.command.clone(), env: self.hook_env(id, point, &key, state, outcome).await, timeout: hook.timeout };
        let runner = self.ports.hooks.clone();
        let crash_point = format!("hook:{point}");
        let run = self.once_as(
            &crash_point,
            id,
            &key,
            "hook",
            intent,
            // Nothing in the world says whether a hook ran: run it again (at least once).
            async { Seen::NotDone },
            async {
                let exit = runner.run(&req).await;
                // What a hook wrote is shown in terminals (`audit`) and pages: no
                // control characters (escape sequences) beyond lines and tabs.
                let printable: String =
                    exit.output.chars().map(|c| if c.is_control() && c != '\n' && c != '\t' { '\u{FFFD}' } else { c }).collect();
                let mut output = self.redact_text(printable.trim());
                if exit.truncated {
                    output.push_str(" … (output cut at 4 KiB)");
                }
                let said = if output.is_empty() { "no output".to_string() } else { output.clone() };
                let elapsed_ms = exit.elapsed.as_millis() as u64;
                match &exit.status {
                    HookStatus::Exited { code: 0 } => Ok(HookRan { hook: point.as_str().into(), status: exit.status, output, elapsed_ms }),
                    HookStatus::Exited { code } => Err(Failed::new(format!("{point} hook exited with status {code}: {said}"))),
                    HookStatus::Signaled { signal } => Err(Failed::new(format!("{point} hook was killed by signal {signal}: {said}"))),
                    HookStatus::TimedOut => {
                        Err(Failed::new(format!("{point} hook timed out after {timeout} (its process group was killed): {said}")))
                    }
                    HookStatus::NotStarted { error } => {
                        Err(Failed::new(format!("{point} hook could not be started: {}", self.redact_text(error))))
                    }
                }
            },
        );
        // Shutdown does not wait for a hook (it may take minutes): the run is dropped,
        // its process group killed, and the intent left without an outcome, as after a
        // crash; resume runs it again (at least once). The journal is consistent at
        // every await, so dropping the effect midway is no worse than a crash.
        let mut shutdown = self.shutdown.clone();
        let stop = async move {
            while !*shutdown.borrow() {
                if shutdown.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::select! {
            done = run => Ok(Some(done?)),
            _ = stop => Err(ExecError::Interrupted),
        }
    }

    /// A `pre_*` hook before its step: `Some(why)` when it vetoes the step. Shadow
    /// incidents run no hooks (they never reach a step a hook guards, and change nothing).
    pub(super) async fn pre_hook(&self, id: &str, machine: &Machine, point: HookPoint) -> Result<Option<String>, ExecError> {
        if machine.incident().policy.observe {
            return Ok(None);
        }
        Ok(match self.run_hook(id, point, machine.state().name(), None).await? {
            Some(Done::Failed(f)) => Some(f.error),
            _ => None,
        })
    }

    /// The `post_*` hook for how the incident ended, after the close is journaled. Its
    /// result is journaled; it never changes the incident (already closed) or fails the
    /// run, and is bounded by its timeout.
    pub(super) async fn post_hook(&self, id: &str, machine: &Machine, outcome: Outcome) {
        if machine.incident().policy.observe {
            return;
        }
        let Some(point) = HookPoint::after(outcome) else { return };
        match self.run_hook(id, point, machine.state().name(), Some(outcome)).await {
            Ok(Some(Done::Failed(f))) => {
                tracing::warn!(incident = id, hook = %point, error = %f.error, "post hook failed; the incident stays {outcome}")
            }
            Ok(_) => {}
            Err(e) => tracing::warn!(incident = id, hook = %point, error = %e, "post hook not finished (its intent stays open)"),
        }
    }
}
