//! `orchestrator check`: every probe once, the checklists printed, nothing changed.

use crate::executor::Probes;
use crate::machine::{Check, Event};
use crate::playbook::Playbook;
use crate::ports::{FlushPlan, Ports};
use std::fmt::Write;

pub struct CheckReport {
    pub sections: Vec<(String, Vec<Check>)>,
    pub class: Option<String>,
}

pub async fn check(pb: &Playbook, ports: &Ports) -> CheckReport {
    let probes = Probes { pb, ports };
    // Every item is awaited: this is a report, not a decision.
    let confirm = probes.confirm_checklist(false).await;
    let (class, preflight) = match probes.assess().await {
        // A primary that answers has no failure to classify: say so, not "unknown".
        Event::Assessed { primary_answers: true, preflight, .. } => {
            (Some(format!("none: the primary {} answers PING and a write now", pb.redis.primary)), preflight)
        }
        Event::Assessed { class, detail, preflight, .. } => (Some(format!("{class} ({detail})")), preflight),
        _ => (None, vec![]),
    };
    // No deploy happened in a dry run: "new" errors are those within the window the
    // playbook judges a failure over (`confirm_window`), i.e. is it still erroring now.
    let span = pb.thresholds.confirm_window;
    let since = ports.clock.now() - chrono::Duration::from_std(span).unwrap_or_default();
    let what = format!("{} ago (the confirm window; no deploy in a dry run)", crate::duration::format_duration(span));
    let recovery = probes.recovery_checklist("dry-run", since, &what, 1, false).await;
    let mut flush = Vec::new();
    if pb.flush.mode == crate::model::FlushMode::Selective {
        let plan = FlushPlan {
            patterns: pb.flush.patterns.clone(),
            flushdb: false,
            batch: pb.flush.batch,
            max_latency: pb.flush.max_latency,
            dry_run: true,
        };
        flush.push(match ports.redis.flush(&pb.redis.backup, &plan, &|_| {}).await {
            Ok(r) => Check::new(
                "flush_dry_run",
                true,
                format!(
                    "{} keys on {} would be removed ({})",
                    r.deleted,
                    pb.redis.backup,
                    r.per_pattern.iter().map(|(p, n)| format!("{p} {n}")).collect::<Vec<_>>().join(", ")
                ),
            ),
            Err(e) => Check::new("flush_dry_run", false, format!("{}: {}", e.class, e.message)),
        });
    }
    CheckReport {
        sections: vec![
            (format!("Confirmation checklist (primary {}): does the failure hold now?", pb.redis.primary), confirm),
            (format!("Backup preflight ({})", pb.redis.backup), preflight),
            (format!("Recovery checklist against the backup (synthetic job skipped: dry run) ({})", pb.redis.backup), recovery),
            ("Flush (dry run, counts only)".to_string(), flush),
        ],
        class,
    }
}

impl CheckReport {
    pub fn render(&self) -> String {
        let mut out = String::new();
        for (title, checks) in &self.sections {
            if checks.is_empty() {
                continue;
            }
            let _ = writeln!(out, "{title}");
            for c in checks {
                let _ = writeln!(out, "  {} {:<22} {}", if c.holds { "✓" } else { "✗" }, c.item, c.observed);
            }
            let _ = writeln!(out);
        }
        if let Some(c) = &self.class {
            let _ = writeln!(out, "Failure class of the primary now: {c}");
        }
        out
    }

    /// Whether every system answered (the backup preflight is the part that must hold
    /// for a failover to be possible at all).
    pub fn all_reachable(&self) -> bool {
        self.sections.get(1).map(|(_, c)| c.iter().all(|c| c.holds)).unwrap_or(false)
    }
}
