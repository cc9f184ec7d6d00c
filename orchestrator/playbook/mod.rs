//! Playbooks: the YAML file that supplies every URL, threshold and policy of an
//! incident, validated before anything runs.
//!
//! Loading happens in two steps: `yaml` builds a tree that keeps positions, then
//! `compile` turns it into the typed [`Playbook`], collecting every problem with its
//! line and column so one run of `playbook check` shows them all.

mod compile;
mod decode;
mod hooks;
mod model;
pub mod yaml;

pub use decode::Problem;
pub use model::*;

use sha2::{Digest, Sha256};
use std::fmt;
use std::path::{Path, PathBuf};

/// Files larger than this are refused before parsing: a playbook is a page of YAML.
const MAX_PLAYBOOK_BYTES: usize = 1 << 20;

#[derive(Debug, thiserror::Error)]
pub enum PlaybookError {
    #[error("cannot read playbook {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    /// Every problem found, each with its place. Retrying cannot help; editing can.
    #[error("{}", render_problems(.path, .problems))]
    Invalid { path: PathBuf, problems: Vec<Problem> },
}

fn render_problems(path: &Path, problems: &[Problem]) -> String {
    let mut lines: Vec<String> =
        problems.iter().map(|p| format!("{}:{}:{}: {}", path.display(), p.pos.line, p.pos.col, p.message)).collect();
    lines.push(format!("{} problem{} in {}; nothing was run", problems.len(), if problems.len() == 1 { "" } else { "s" }, path.display()));
    lines.join("\n")
}

/// Loads and validates a playbook file, resolving `${NAME}` from the process
/// environment.
pub fn load(path: &Path) -> Result<Playbook, PlaybookError> {
    let bytes = std::fs::read(path).map_err(|source| PlaybookError::Read { path: path.to_path_buf(), source })?;
    let env = |name: &str| std::env::var(name).ok();
    let pb = load_bytes(&bytes, path, &env)?;
    // Logs and the CLI's own lines go through the process-wide redactor.
    crate::redact::install(&pb.redactor);
    Ok(pb)
}

/// Loads a playbook from bytes with a given environment: what tests call.
pub fn load_bytes(bytes: &[u8], path: &Path, env: decode::EnvLookup<'_>) -> Result<Playbook, PlaybookError> {
    let invalid = |problems| PlaybookError::Invalid { path: path.to_path_buf(), problems };
    let one = |message: String| vec![Problem { pos: yaml::Pos { line: 1, col: 1 }, message }];
    if bytes.len() > MAX_PLAYBOOK_BYTES {
        return Err(invalid(one(format!("playbook is {} bytes; the limit is {MAX_PLAYBOOK_BYTES}", bytes.len()))));
    }
    let text = std::str::from_utf8(bytes).map_err(|e| invalid(one(format!("playbook is not UTF-8 ({e})"))))?;
    let hash = hex::encode(Sha256::digest(bytes));
    let root = yaml::parse(text).map_err(|errs| invalid(errs.into_iter().map(|e| Problem { pos: e.pos, message: e.message }).collect()))?;
    let mut decoder = decode::Decoder::new(env);
    let playbook = compile::compile(&root, path.to_path_buf(), hash, &mut decoder);
    let mut problems = decoder.problems;
    // A problem may quote a value the playbook took from the environment (a URL that
    // does not parse): problems are output like everything else.
    for p in problems.iter_mut() {
        p.message = decoder.redactor.redact(&p.message);
    }
    if !problems.is_empty() {
        crate::redact::install(&decoder.redactor);
    }
    problems.sort_by_key(|p| (p.pos.line, p.pos.col));
    problems.dedup();
    match playbook {
        Some(pb) if problems.is_empty() => Ok(pb),
        _ => {
            if problems.is_empty() {
                problems = one("playbook is invalid".into());
            }
            Err(invalid(problems))
        }
    }
}

/// The hash of a file as the journal pins it, for comparing on resume.
pub fn hash_file(path: &Path) -> std::io::Result<String> {
    Ok(hex::encode(Sha256::digest(std::fs::read(path)?)))
}

/// A short human summary for `playbook check`. Never shows a secret.
pub struct Summary<'a>(pub &'a Playbook);

impl fmt::Display for Summary<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        use crate::duration::format_duration as fd;
        let p = self.0;
        let t = &p.thresholds;
        writeln!(f, "playbook {:?} is valid ({})", p.name, p.source.display())?;
        writeln!(f, "  sha256      {}", p.hash)?;
        writeln!(f, "  primary     {}", p.redis.primary)?;
        writeln!(f, "  backup      {}", p.redis.backup)?;
        writeln!(f, "  service     {}", p.service.base_url)?;
        writeln!(f, "  platform    {}", p.platform.kind())?;
        writeln!(
            f,
            "  confirm     {} of {{{}}} required, at least {} signals, {} attempts over {}",
            p.confirm.required.len(),
            p.confirm.required.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(", "),
            p.confirm.min_signals,
            t.confirm_attempts,
            fd(t.confirm_window)
        )?;
        writeln!(
            f,
            "  verify      {} within {}",
            p.verify.required.iter().map(|i| i.as_str()).collect::<Vec<_>>().join(", "),
            fd(t.verify_window)
        )?;
        let failover: Vec<_> = p.actions.iter().filter(|(_, a)| **a == crate::model::Action::Failover).map(|(c, _)| c.as_str()).collect();
        writeln!(
            f,
            "  failover on {}",
            if failover.is_empty() { "nothing (every class escalates)".to_string() } else { failover.join(", ") }
        )?;
        writeln!(f, "  flush       {} {}", p.flush.mode, p.flush.patterns.join(" "))?;
        if p.approvals.steps.is_empty() {
            writeln!(f, "  approvals   no gates")?;
        } else {
            writeln!(
                f,
                "  approvals   {} needs {} of [{}] within {}",
                p.approvals.steps.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", "),
                p.approvals.required,
                p.approvals.approvers.join(", "),
                fd(p.approvals.ttl)
            )?;
        }
        writeln!(
            f,
            "  thresholds  ping timeout {}, latency {}, verify latency {}, job timeout {}, deploy timeout {}",
            fd(t.ping_timeout),
            fd(t.latency),
            fd(t.verify_latency),
            fd(t.job_timeout),
            fd(t.deploy_timeout)
        )?;
        let n = &p.notifications;
        let notify: Vec<&str> =
            [n.slack.as_ref().map(|_| "slack"), n.pagerduty.as_ref().map(|_| "pagerduty (pages)")].into_iter().flatten().collect();
        writeln!(f, "  notify      {}", if notify.is_empty() { "none".to_string() } else { notify.join(", ") })?;
        if !p.hooks.is_empty() {
            let hooks: Vec<String> = p.hooks.iter().map(|(point, h)| format!("{point} ({}, {})", h.command[0], fd(h.timeout))).collect();
            writeln!(f, "  hooks       {} (a pre_* hook that fails vetoes its step)", hooks.join(", "))?;
        }
        write!(
            f,
            "  mode        {}",
            match p.mode {
                crate::model::Mode::Act => "act",
                crate::model::Mode::Observe => "observe (shadow: ends after Assess with what would have been done; changes nothing)",
            }
        )
    }
}
