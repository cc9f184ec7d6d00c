//! The `command` platform: shell commands (`sh -c`) read, switch, deploy and report
//! status, given their context in `ORCH_*` environment variables. Also the bounded
//! shell runner the `env-file` platform's restart uses.

use super::render::render_phase;
use super::retry::{redact, tail, url_secrets};
use crate::playbook::CommandConfig;
use crate::ports::{DeployInfo, DeployPhase, Platform, PlatformError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::process::Stdio;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncReadExt};

/// The context variables a command sees.
pub const ENV_REDIS_URL: &str = "ORCH_REDIS_URL";
pub const ENV_DEPLOY_ID: &str = "ORCH_DEPLOY_ID";
pub const ENV_ACTION: &str = "ORCH_ACTION";

/// Bytes of stdout and of stderr kept per run (the tail: the last line and the
/// reason for a failure are at the end).
const OUTPUT_KEEP: usize = 64 * 1024;
/// Characters of stderr quoted in an error.
const STDERR_QUOTE: usize = 400;
/// After the shell exits, how long to wait for its pipes to close. Something it left
/// running in the background may hold them open for ever.
const PIPE_GRACE: Duration = Duration::from_millis(500);

#[derive(Debug)]
pub struct CommandPlatform {
    cfg: CommandConfig,
    /// The last URL written, handed to `deploy` as `ORCH_REDIS_URL`.
    last_written: Mutex<Option<String>>,
    /// Deploys this process started, for `deploys_since`.
    started: Mutex<Vec<DeployInfo>>,
    counter: AtomicU64,
}

impl CommandPlatform {
    pub fn new(cfg: &CommandConfig) -> Self {
        CommandPlatform { cfg: cfg.clone(), last_written: Mutex::new(None), started: Mutex::new(Vec::new()), counter: AtomicU64::new(0) }
    }

    /// Runs one configured command; a non-zero exit or a timeout is an error. Returns
    /// stdout.
    async fn run(&self, action: &str, script: &str, env: &[(&str, &str)], secrets: &[&str]) -> Result<String, PlatformError> {
        let mut all_env = vec![(ENV_ACTION, action)];
        all_env.extend_from_slice(env);
        let run = run_shell(script, &all_env, self.cfg.timeout)
            .await
            .map_err(|e| PlatformError::Command(format!("{action} command could not start: {}", redact(&e.to_string(), secrets))))?;
        if let Some(why) = run.failure() {
            return Err(PlatformError::Command(format!("{action} command {why}{}", run.stderr_quote(secrets))));
        }
        Ok(run.stdout)
    }
}

#[async_trait]
impl Platform for CommandPlatform {
    fn kind(&self) -> &'static str {
        "command"
    }

    /// The read command prints the URL; its last non-empty line counts, nothing
    /// printed means not set.
    async fn read_url(&self) -> Result<Option<String>, PlatformError> {
        let out = self.run("read", &self.cfg.read, &[], &[]).await?;
        Ok(last_line(&out).map(str::to_string))
    }

    async fn write_url(&self, value: &str) -> Result<(), PlatformError> {
        let owned = url_secrets(value);
        let secrets: Vec<&str> = owned.iter().map(String::as_str).collect();
        self.run("switch", &self.cfg.switch, &[(ENV_REDIS_URL, value)], &secrets).await?;
        *self.last_written.lock().unwrap_or_else(|p| p.into_inner()) = Some(value.to_string());
        Ok(())
    }

    /// The deploy command may print an id on its last line; without one the id is
    /// made up here. Its progress is the status command's to tell.
    async fn deploy(&self) -> Result<DeployInfo, PlatformError> {
        // After a restart (run stopped at a gate, then resume) nothing was written by
        // this process: ask the read command what the service should now use.
        let remembered = self.last_written.lock().unwrap_or_else(|p| p.into_inner()).clone();
        let url = match remembered {
            Some(u) => Some(u),
            None => self.read_url().await?,
        };
        let owned = url.as_deref().map(url_secrets).unwrap_or_default();
        let secrets: Vec<&str> = owned.iter().map(String::as_str).collect();
        let env: Vec<(&str, &str)> = url.as_deref().map(|u| vec![(ENV_REDIS_URL, u)]).unwrap_or_default();
        let created_at = Utc::now();
        let out = self.run("deploy", &self.cfg.deploy, &env, &secrets).await?;
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let id = match last_line(&out) {
            Some(line) if line.len() <= 200 && !line.contains(char::is_whitespace) => line.to_string(),
            _ => format!("command-{}-{n}", created_at.timestamp_millis()),
        };
        let info = DeployInfo { id, status: "started".into(), phase: DeployPhase::InProgress, created_at: Some(created_at) };
        self.started.lock().unwrap_or_else(|p| p.into_inner()).push(info.clone());
        Ok(info)
    }

    async fn deploy_status(&self, id: &str) -> Result<DeployInfo, PlatformError> {
        let out = self.run("status", &self.cfg.status, &[(ENV_DEPLOY_ID, id)], &[]).await?;
        let word = last_line(&out).unwrap_or("").to_ascii_lowercase();
        let phase = command_phase(&word).ok_or_else(|| {
            PlatformError::Body(format!(
                "status command printed {:?}; expected live, failed, canceled, in_progress or a Render status",
                tail(&redact(&word, &[]), 80)
            ))
        })?;
        let created_at = self.started.lock().unwrap_or_else(|p| p.into_inner()).iter().find(|d| d.id == id).and_then(|d| d.created_at);
        Ok(DeployInfo { id: id.to_string(), status: word, phase, created_at })
    }

    /// Only deploys this process started: a shell command has no deploy history to ask,
    /// so after a crash between starting a deploy and journaling it the deploy command
    /// runs again. Deploy commands must therefore be safe to repeat (README).
    async fn deploys_since(&self, since: DateTime<Utc>) -> Result<Vec<DeployInfo>, PlatformError> {
        let started = self.started.lock().unwrap_or_else(|p| p.into_inner());
        Ok(started.iter().rev().filter(|d| d.created_at.is_some_and(|t| t >= since)).cloned().collect())
    }
}

/// The status command's word: the four plain ones or any of Render's.
pub fn command_phase(word: &str) -> Option<DeployPhase> {
    match word {
        "live" => Some(DeployPhase::Live),
        "failed" => Some(DeployPhase::Failed),
        "canceled" | "cancelled" => Some(DeployPhase::Canceled),
        "in_progress" | "created" | "queued" | "build_in_progress" | "update_in_progress" | "pre_deploy_in_progress" => {
            Some(DeployPhase::InProgress)
        }
        "build_failed" | "update_failed" | "pre_deploy_failed" | "deactivated" => Some(render_phase(word)),
        _ => None,
    }
}

fn last_line(text: &str) -> Option<&str> {
    text.lines().map(str::trim).rfind(|l| !l.is_empty())
}

/// What one shell run produced.
#[derive(Debug, Clone)]
pub struct ShellRun {
    /// `None` when killed by a signal (or by the timeout).
    pub code: Option<i32>,
    pub stdout: String,
    pub stderr: String,
    pub timed_out: Option<Duration>,
}

impl ShellRun {
    /// Why the run counts as failed, or `None` for a zero exit.
    pub fn failure(&self) -> Option<String> {
        match (self.timed_out, self.code) {
            (Some(t), _) => Some(format!("timed out after {t:?} and was killed")),
            (None, Some(0)) => None,
            (None, Some(c)) => Some(format!("exited with code {c}")),
            (None, None) => Some("was killed by a signal".into()),
        }
    }

    /// `: <end of stderr>`, redacted, or nothing when stderr is empty.
    pub fn stderr_quote(&self, secrets: &[&str]) -> String {
        let text = redact(self.stderr.trim(), secrets);
        if text.is_empty() {
            String::new()
        } else {
            format!(": {}", tail(&text, STDERR_QUOTE))
        }
    }
}

/// Runs `sh -c script` with extra environment variables, in its own process group,
/// bounded by `timeout`. On timeout, or if the returned future is dropped, the whole
/// group is killed (a shell's children would otherwise outlive it). After a normal
/// exit nothing is killed: a restart command may leave a daemon running.
pub async fn run_shell(script: &str, env: &[(&str, &str)], timeout: Duration) -> std::io::Result<ShellRun> {
    let mut cmd = tokio::process::Command::new("sh");
    cmd.arg("-c")
        .arg(script)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    let mut child = cmd.spawn()?;
    // Declared after `child`, so dropped first: the group dies while its leader is not
    // yet reaped, and its id cannot have been reused.
    let mut group = GroupKiller(child.id());
    let out = Capture::start(child.stdout.take());
    let err = Capture::start(child.stderr.take());

    let (code, timed_out) = match tokio::time::timeout(timeout, child.wait()).await {
        Ok(status) => {
            group.disarm();
            (status?.code(), None)
        }
        Err(_) => {
            group.kill();
            let _ = child.kill().await;
            (None, Some(timeout))
        }
    };
    let stdout = out.finish().await;
    let stderr = err.finish().await;
    Ok(ShellRun { code, stdout, stderr, timed_out })
}

/// Kills a process group when told to, or when dropped armed.
struct GroupKiller(Option<u32>);

impl GroupKiller {
    fn disarm(&mut self) {
        self.0 = None;
    }

    fn kill(&mut self) {
        if let Some(pgid) = self.0.take() {
            // The shell's own `kill` takes a negative id for a group; no libc needed.
            let _ = std::process::Command::new("sh")
                .arg("-c")
                .arg(format!("kill -s KILL -- -{pgid} 2>/dev/null"))
                .stdin(Stdio::null())
                .stdout(Stdio::null())
                .stderr(Stdio::null())
                .status();
        }
    }
}

impl Drop for GroupKiller {
    fn drop(&mut self) {
        self.kill();
    }
}

/// Reads a pipe to its end in the background, keeping the last [`OUTPUT_KEEP`] bytes.
/// The reader keeps draining after [`Capture::finish`] gives up waiting, so a
/// background process writing to the pipe never gets SIGPIPE.
struct Capture {
    buf: Arc<Mutex<Vec<u8>>>,
    done: Option<tokio::task::JoinHandle<()>>,
}

impl Capture {
    fn start<R: AsyncRead + Unpin + Send + 'static>(pipe: Option<R>) -> Capture {
        let buf = Arc::new(Mutex::new(Vec::new()));
        let done = pipe.map(|mut pipe| {
            let buf = buf.clone();
            tokio::spawn(async move {
                let mut chunk = [0u8; 8192];
                loop {
                    match pipe.read(&mut chunk).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            let mut b = buf.lock().unwrap_or_else(|p| p.into_inner());
                            b.extend_from_slice(&chunk[..n]);
                            if b.len() > 2 * OUTPUT_KEEP {
                                let cut = b.len() - OUTPUT_KEEP;
                                b.drain(..cut);
                            }
                        }
                    }
                }
            })
        });
        Capture { buf, done }
    }

    async fn finish(mut self) -> String {
        if let Some(handle) = self.done.take() {
            let _ = tokio::time::timeout(PIPE_GRACE, handle).await;
        }
        let b = self.buf.lock().unwrap_or_else(|p| p.into_inner());
        let start = b.len().saturating_sub(OUTPUT_KEEP);
        String::from_utf8_lossy(&b[start..]).into_owned()
    }
}
