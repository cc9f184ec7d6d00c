//! The `env-file` platform: one `KEY=value` line of a `.env`-style file is rewritten in
//! place (every other line, comment and the order kept), and a restart command (the
//! runbook's local Docker Compose path) stands for the deploy.
//!
//! Crash safety: the file is replaced atomically (temporary file in the same
//! directory, fsync, rename), so a crash leaves either the old or the new file, never
//! half of one.

use super::command::{run_shell, ENV_ACTION, ENV_DEPLOY_ID, ENV_REDIS_URL};
use super::retry::{redact, url_secrets};
use crate::playbook::EnvFileConfig;
use crate::ports::{DeployInfo, DeployPhase, Platform, PlatformError};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

#[derive(Debug)]
pub struct EnvFilePlatform {
    cfg: EnvFileConfig,
    /// Serialises read-modify-write cycles of the file within this process.
    write_lock: tokio::sync::Mutex<()>,
    /// Restarts this process ran, for `deploy_status` and `deploys_since`.
    restarts: Mutex<Vec<DeployInfo>>,
    counter: AtomicU64,
}

impl EnvFilePlatform {
    pub fn new(cfg: &EnvFileConfig) -> Self {
        EnvFilePlatform {
            cfg: cfg.clone(),
            write_lock: tokio::sync::Mutex::new(()),
            restarts: Mutex::new(Vec::new()),
            counter: AtomicU64::new(0),
        }
    }

    fn io_error(&self, doing: &str, e: io::Error) -> PlatformError {
        PlatformError::Command(format!("cannot {doing} {}: {}", self.cfg.path.display(), redact(&e.to_string(), &[])))
    }

    async fn read_text(&self) -> Result<Option<String>, PlatformError> {
        let path = self.cfg.path.clone();
        match tokio::task::spawn_blocking(move || fs::read_to_string(path)).await {
            Ok(Ok(text)) => Ok(Some(text)),
            Ok(Err(e)) if e.kind() == io::ErrorKind::NotFound => Ok(None),
            Ok(Err(e)) => Err(self.io_error("read", e)),
            Err(e) => Err(PlatformError::Command(format!("reading the env file failed: {e}"))),
        }
    }
}

#[async_trait]
impl Platform for EnvFilePlatform {
    fn kind(&self) -> &'static str {
        "env-file"
    }

    async fn read_url(&self) -> Result<Option<String>, PlatformError> {
        Ok(self.read_text().await?.and_then(|t| read_value(&t, &self.cfg.key)))
    }

    async fn write_url(&self, value: &str) -> Result<(), PlatformError> {
        if value.contains(['\n', '\r', '\0']) {
            return Err(PlatformError::Refused("the value contains a line break or NUL; an env file cannot hold it".into()));
        }
        let _guard = self.write_lock.lock().await;
        let old = self.read_text().await?.unwrap_or_default();
        let new = set_value(&old, &self.cfg.key, value);
        if new == old {
            return Ok(());
        }
        let path = self.cfg.path.clone();
        let owned = url_secrets(value);
        let secrets: Vec<&str> = owned.iter().map(String::as_str).collect();
        match tokio::task::spawn_blocking(move || write_atomic(&path, new.as_bytes())).await {
            Ok(Ok(())) => {
                tracing::info!(path = %self.cfg.path.display(), key = %self.cfg.key, "env file rewritten");
                Ok(())
            }
            Ok(Err(e)) => {
                Err(PlatformError::Command(format!("cannot write {}: {}", self.cfg.path.display(), redact(&e.to_string(), &secrets))))
            }
            Err(e) => Err(PlatformError::Command(format!("writing the env file failed: {e}"))),
        }
    }

    /// Runs the restart command to its end: a zero exit is a live deploy, anything else
    /// (non-zero exit, timeout) a failed one. Only a command that cannot start at all
    /// is an error.
    async fn deploy(&self) -> Result<DeployInfo, PlatformError> {
        let n = self.counter.fetch_add(1, Ordering::Relaxed) + 1;
        let id = format!("restart-{n}");
        let url = self.read_url().await.ok().flatten().unwrap_or_default();
        let owned = url_secrets(&url);
        let secrets: Vec<&str> = owned.iter().map(String::as_str).collect();
        let created_at = Utc::now();
        let env = [(ENV_ACTION, "deploy"), (ENV_DEPLOY_ID, id.as_str()), (ENV_REDIS_URL, url.as_str())];
        let run = run_shell(&self.cfg.restart, &env, self.cfg.timeout)
            .await
            .map_err(|e| PlatformError::Command(format!("restart command could not start: {}", redact(&e.to_string(), &secrets))))?;
        let (status, phase) = match run.failure() {
            None => ("live".to_string(), DeployPhase::Live),
            Some(why) => {
                tracing::warn!(deploy = %id, "restart command {why}{}", run.stderr_quote(&secrets));
                let word = if run.timed_out.is_some() { "timed_out" } else { "failed" };
                (word.to_string(), DeployPhase::Failed)
            }
        };
        let info = DeployInfo { id, status, phase, created_at: Some(created_at) };
        self.restarts.lock().unwrap_or_else(|p| p.into_inner()).push(info.clone());
        Ok(info)
    }

    /// What the restart produced. The id must come from this process: restarts are
    /// not recorded anywhere else.
    async fn deploy_status(&self, id: &str) -> Result<DeployInfo, PlatformError> {
        let restarts = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        restarts
            .iter()
            .find(|d| d.id == id)
            .cloned()
            .ok_or_else(|| PlatformError::Body(format!("unknown deploy {id:?}: this process ran no such restart")))
    }

    async fn deploys_since(&self, since: DateTime<Utc>) -> Result<Vec<DeployInfo>, PlatformError> {
        let restarts = self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        Ok(restarts.iter().rev().filter(|d| d.created_at.is_some_and(|t| t >= since)).cloned().collect())
    }
}

// ---------------------------------------------------------------- the file format

/// Where one assignment line keeps its parts: `value` is the byte range of the value as
/// written (quotes included), so a rewrite can keep what surrounds it.
struct Assignment<'a> {
    key: &'a str,
    value: std::ops::Range<usize>,
    quote: Option<char>,
}

/// Parses `[export ]KEY = value [# comment]`; `None` for blanks, comments and junk.
fn assignment(line: &str) -> Option<Assignment<'_>> {
    let start = line.len() - line.trim_start().len();
    let mut rest = &line[start..];
    if rest.starts_with('#') {
        return None;
    }
    let mut offset = start;
    if let Some(after) = rest.strip_prefix("export") {
        if after.starts_with([' ', '\t']) {
            let trimmed = after.trim_start();
            offset += rest.len() - trimmed.len();
            rest = trimmed;
        }
    }
    let eq = rest.find('=')?;
    let key = rest[..eq].trim();
    if key.is_empty() || !key.chars().all(|c| c.is_ascii_alphanumeric() || c == '_' || c == '.' || c == '-') {
        return None;
    }
    let after_eq = offset + eq + 1;
    let raw = &line[after_eq..];
    let v_start = after_eq + (raw.len() - raw.trim_start().len());
    let v = &line[v_start..];
    let (len, quote) = match v.chars().next() {
        Some(q @ ('"' | '\'')) => (quoted_len(v, q), Some(q)),
        _ => {
            // An unquoted value ends at ` #` (an inline comment) or the line's end.
            let end = v.find(" #").or_else(|| v.find("\t#")).unwrap_or(v.len());
            (v[..end].trim_end().len(), None)
        }
    };
    Some(Assignment { key, value: v_start..v_start + len, quote })
}

/// Length of a quoted value including both quotes (to the line's end if unclosed).
fn quoted_len(v: &str, q: char) -> usize {
    let mut escaped = false;
    for (i, c) in v.char_indices().skip(1) {
        if q == '"' && !escaped && c == '\\' {
            escaped = true;
            continue;
        }
        if c == q && !escaped {
            return i + 1;
        }
        escaped = false;
    }
    v.len()
}

fn unquote(raw: &str, quote: Option<char>) -> String {
    match quote {
        None => raw.to_string(),
        Some(q) => {
            let inner = raw.strip_prefix(q).unwrap_or(raw);
            let inner = inner.strip_suffix(q).unwrap_or(inner);
            if q == '\'' {
                return inner.to_string();
            }
            let mut out = String::with_capacity(inner.len());
            let mut chars = inner.chars();
            while let Some(c) = chars.next() {
                if c != '\\' {
                    out.push(c);
                    continue;
                }
                match chars.next() {
                    Some('n') => out.push('\n'),
                    Some('t') => out.push('\t'),
                    Some(other @ ('"' | '\\' | '$' | '`')) => out.push(other),
                    Some(other) => {
                        out.push('\\');
                        out.push(other);
                    }
                    None => out.push('\\'),
                }
            }
            out
        }
    }
}

/// The value of `key` in an env file's text; the last assignment wins, as in
/// Docker Compose. Quotes are removed and escapes in double quotes resolved.
pub fn read_value(text: &str, key: &str) -> Option<String> {
    text.lines().rev().find_map(|line| {
        let a = assignment(line)?;
        (a.key == key).then(|| unquote(&line[a.value.clone()], a.quote))
    })
}

/// Characters that never need quotes, in Compose or in a shell (`&` and `?`, common in
/// URLs, do in a shell).
fn plain(value: &str) -> bool {
    !value.is_empty() && value.chars().all(|c| c.is_ascii_alphanumeric() || "-_./:@%+=,".contains(c))
}

/// The value as written to the file. A quoted original keeps its kind of quotes;
/// otherwise values that need quoting get single quotes, which neither Compose nor a
/// shell interpolate (a password with `$` must stay literal).
fn format_value(value: &str, original_quote: Option<char>) -> String {
    let double = || {
        let mut s = String::from("\"");
        for c in value.chars() {
            if matches!(c, '"' | '\\' | '$' | '`') {
                s.push('\\');
            }
            s.push(c);
        }
        s.push('"');
        s
    };
    match original_quote {
        Some('"') => double(),
        Some('\'') if !value.contains('\'') => format!("'{value}'"),
        _ if plain(value) => value.to_string(),
        _ if !value.contains('\'') => format!("'{value}'"),
        _ => double(),
    }
}

/// The text with every assignment of `key` set to `value` (its place, any `export`,
/// inline comment and line ending kept), or one line appended when the key is absent.
/// All other bytes stay as they were.
pub fn set_value(text: &str, key: &str, value: &str) -> String {
    let mut out = String::with_capacity(text.len() + value.len() + key.len() + 2);
    let mut found = false;
    for line in text.split_inclusive('\n') {
        let body = line.trim_end_matches(['\n', '\r']);
        match assignment(body) {
            Some(a) if a.key == key => {
                out.push_str(&body[..a.value.start]);
                out.push_str(&format_value(value, a.quote));
                out.push_str(&line[a.value.end..]);
                found = true;
            }
            _ => out.push_str(line),
        }
    }
    if !found {
        if !out.is_empty() && !out.ends_with('\n') {
            out.push('\n');
        }
        out.push_str(key);
        out.push('=');
        out.push_str(&format_value(value, None));
        out.push('\n');
    }
    out
}

/// Replaces `path` with `contents` atomically, keeping its permissions (and owner,
/// where allowed). A symlink is followed, so the file it points at is replaced.
pub fn write_atomic(path: &Path, contents: &[u8]) -> io::Result<()> {
    let target: PathBuf = match fs::canonicalize(path) {
        Ok(p) => p,
        Err(e) if e.kind() == io::ErrorKind::NotFound => path.to_path_buf(),
        Err(e) => return Err(e),
    };
    let dir = match target.parent() {
        Some(d) if !d.as_os_str().is_empty() => d.to_path_buf(),
        _ => PathBuf::from("."),
    };
    let name = target.file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_else(|| "env".into());
    let old = fs::metadata(&target).ok();
    let tmp = dir.join(format!(".{name}.orch-{}-{:08x}.tmp", std::process::id(), rand::random::<u32>()));
    let result = (|| {
        // 0600 until the old permissions are copied: the file holds secrets.
        let mut f = fs::OpenOptions::new().write(true).create_new(true).mode(0o600).open(&tmp)?;
        f.write_all(contents)?;
        if let Some(m) = &old {
            fs::set_permissions(&tmp, m.permissions())?;
            let _ = std::os::unix::fs::chown(&tmp, Some(m.uid()), Some(m.gid()));
        }
        f.sync_all()?;
        drop(f);
        fs::rename(&tmp, &target)?;
        // Make the rename itself durable.
        if let Ok(d) = fs::File::open(&dir) {
            let _ = d.sync_all();
        }
        Ok(())
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}
