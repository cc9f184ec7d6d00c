//! Runs playbook hooks as processes: an argv without a shell, in a cleared environment,
//! in a process group of its own so that a timeout kills everything it started.

use crate::ports::{HookExit, HookRequest, HookRunner, HookStatus};
use async_trait::async_trait;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::AsyncReadExt;

/// At most this much of a hook's output is kept (the rest is read and dropped, so a
/// chatty hook never blocks on a full pipe).
pub const OUTPUT_LIMIT: usize = 4096;

/// How long to wait, after the hook ended, for the rest of what it wrote.
const DRAIN_GRACE: Duration = Duration::from_secs(1);

/// The real runner.
pub struct ProcessHooks;

#[derive(Default)]
struct Captured {
    bytes: Vec<u8>,
    truncated: bool,
}

async fn drain(mut from: impl tokio::io::AsyncRead + Unpin, into: Arc<Mutex<Captured>>) {
    let mut chunk = [0u8; 1024];
    loop {
        match from.read(&mut chunk).await {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                let mut c = into.lock().expect("hook output");
                let room = OUTPUT_LIMIT.saturating_sub(c.bytes.len());
                c.bytes.extend_from_slice(&chunk[..n.min(room)]);
                if n > room {
                    c.truncated = true;
                }
            }
        }
    }
}

/// SIGKILL to every process of the group `pgid`.
///
/// Crash-safety note: called while the group still has members (at the timeout, before
/// the leader is reaped) or right after the leader exited, to take down what it left
/// running; a process group id stays allocated while any member lives, so it cannot
/// name someone else's processes then.
fn kill_group(pgid: i32) {
    // SAFETY: kill(2) has no memory-safety preconditions; a negative pid names a group.
    unsafe {
        libc::kill(-pgid, libc::SIGKILL);
    }
}

/// Kills the group if the run is dropped before its leader was reaped.
struct GroupGuard(Option<i32>);

impl Drop for GroupGuard {
    fn drop(&mut self) {
        if let Some(pgid) = self.0 {
            kill_group(pgid);
        }
    }
}

#[async_trait]
impl HookRunner for ProcessHooks {
    async fn run(&self, req: &HookRequest) -> HookExit {
        let started = tokio::time::Instant::now();
        let not_started = |error: String| HookExit {
            status: HookStatus::NotStarted { error },
            output: String::new(),
            truncated: false,
            elapsed: started.elapsed(),
        };
        let Some((program, args)) = req.command.split_first() else { return not_started("empty command".into()) };
        let mut cmd = tokio::process::Command::new(program);
        cmd.args(args)
            // Nothing of the orchestrator's own environment (tokens, URLs with
            // passwords) reaches a hook: only what the executor hands over.
            .env_clear()
            .envs(req.env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .process_group(0)
            .kill_on_drop(true);
        let mut child = match cmd.spawn() {
            Ok(c) => c,
            Err(e) => return not_started(format!("{program}: {e}")),
        };
        let Some(pgid) = child.id().map(|p| p as i32) else { return not_started("exited before it could be watched".into()) };
        // A run cancelled midway (shutdown) takes its whole group down with it.
        let mut guard = GroupGuard(Some(pgid));
        let captured = Arc::new(Mutex::new(Captured::default()));
        let mut readers = tokio::task::JoinSet::new();
        if let Some(out) = child.stdout.take() {
            readers.spawn(drain(out, captured.clone()));
        }
        if let Some(err) = child.stderr.take() {
            readers.spawn(drain(err, captured.clone()));
        }
        let status = match tokio::time::timeout(req.timeout, child.wait()).await {
            Ok(Ok(st)) => {
                guard.0 = None;
                kill_group(pgid);
                use std::os::unix::process::ExitStatusExt;
                match (st.code(), st.signal()) {
                    (Some(code), _) => HookStatus::Exited { code },
                    (None, Some(signal)) => HookStatus::Signaled { signal },
                    (None, None) => HookStatus::Exited { code: -1 },
                }
            }
            Ok(Err(e)) => {
                guard.0 = None;
                kill_group(pgid);
                HookStatus::NotStarted { error: format!("waiting for {program}: {e}") }
            }
            Err(_) => {
                // Kill the group before reaping the leader, so the id still names it.
                guard.0 = None;
                kill_group(pgid);
                let _ = child.wait().await;
                HookStatus::TimedOut
            }
        };
        let _ = tokio::time::timeout(DRAIN_GRACE, async { while readers.join_next().await.is_some() {} }).await;
        readers.abort_all();
        let c = captured.lock().expect("hook output");
        HookExit { status, output: String::from_utf8_lossy(&c.bytes).into_owned(), truncated: c.truncated, elapsed: started.elapsed() }
    }
}
