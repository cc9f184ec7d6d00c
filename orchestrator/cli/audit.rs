//! The audit timeline ([`crate::timeline`]) rendered for a person at 3 a.m. (table), as
//! a Markdown report, or followed live.

use crate::journal::prelude::*;
use crate::journal::{parse_ts, Journal, JournalError};
pub use crate::timeline::{load, Timeline as Audit};
use chrono::Utc;
use std::fmt::Write;

/// Prints each transition as it is journaled (one line, with its note) until the
/// incident ends.
pub async fn follow(journal: &Journal, id: &str, poll: std::time::Duration) -> Result<(), JournalError> {
    let opened = parse_ts(&journal.incident(id).await?.opened_at).unwrap_or_else(Utc::now);
    let mut seen = 0i64;
    eprintln!("following {id} (Ctrl-C stops following; the incident goes on)");
    loop {
        for t in journal.transitions(id).await? {
            if t.seq <= seen {
                continue;
            }
            seen = t.seq;
            let at = parse_ts(&t.at).unwrap_or(opened);
            let what = match (&t.rejected, t.from_state == t.to_state) {
                (Some(r), _) => format!("{} rejected in {}: {r}", t.event, t.from_state),
                (None, true) => format!("{}: {}", t.from_state, t.event),
                (None, false) => format!("{} → {}  ({})", t.from_state, t.to_state, t.event),
            };
            eprintln!(
                "[{:>7}] {what}{}",
                secs((at - opened).num_milliseconds()),
                t.note.map(|n| format!("\n           {n}")).unwrap_or_default()
            );
        }
        if journal.incident(id).await?.outcome.is_some() {
            return Ok(());
        }
        tokio::time::sleep(poll).await;
    }
}

fn secs(ms: i64) -> String {
    if ms < 1000 {
        format!("{ms}ms")
    } else if ms < 120_000 {
        format!("{:.1}s", ms as f64 / 1000.0)
    } else {
        format!("{}m{:02}s", ms / 60_000, (ms % 60_000) / 1000)
    }
}

fn clock(ts: &str) -> String {
    parse_ts(ts).map(|t| t.format("%H:%M:%S%.3f").to_string()).unwrap_or_else(|| ts.to_string())
}

pub fn render(a: &Audit) -> String {
    let i = &a.incident;
    let mut out = String::new();
    let _ = writeln!(
        out,
        "Incident {}  playbook {} (sha256 {}…)  target {}",
        i.id,
        i.playbook_name,
        &i.playbook_hash[..12.min(i.playbook_hash.len())],
        i.target
    );
    let _ = writeln!(
        out,
        "Opened   {} by {}{}",
        i.opened_at,
        i.trigger_source,
        if i.trigger_detail.is_empty() { String::new() } else { format!(": {}", i.trigger_detail) }
    );
    match (&i.outcome, &i.closed_at) {
        (Some(o), Some(c)) => {
            let took = match (parse_ts(&i.opened_at), parse_ts(c)) {
                (Some(a), Some(b)) => format!(" after {}", secs((b - a).num_milliseconds())),
                _ => String::new(),
            };
            let _ = writeln!(out, "Outcome  {} at {}{took}", o.to_uppercase(), c);
        }
        _ => {
            let _ = writeln!(out, "State    {} (open)", i.state);
        }
    }
    if let Some(h) = &a.journal_head {
        let _ = writeln!(out, "Journal  head {h}");
    }
    let _ = writeln!(out);
    let _ = writeln!(out, "{:<13} {:>8} {:>8}  {:<34} {:<18} ACTOR", "TIME (UTC)", "+T", "IN STEP", "TRANSITION", "EVENT");
    for t in &a.transitions {
        let r = &t.row;
        let arrow = if r.rejected.is_some() {
            format!("{} ✗ rejected", r.from_state)
        } else if r.from_state == r.to_state {
            format!("{} (stays)", r.from_state)
        } else {
            format!("{} → {}", r.from_state, r.to_state)
        };
        let _ = writeln!(
            out,
            "{:<13} {:>8} {:>8}  {:<34} {:<18} {}",
            clock(&r.at),
            secs(t.elapsed_ms),
            secs(t.in_step_ms),
            arrow,
            r.event,
            r.actor
        );
        for c in &t.checks {
            let _ = writeln!(out, "{:<33}{} {:<22} {}", "", if c.holds { "✓" } else { "✗" }, c.item, c.observed);
        }
        if let Some(detail) = t.gist.clone() {
            let _ = writeln!(out, "{:<33}  {detail}", "");
        }
        if let Some(n) = &r.note {
            let _ = writeln!(out, "{:<33}  → {n}", "");
        }
        if let Some(why) = &r.rejected {
            let _ = writeln!(out, "{:<33}  ✗ {why}", "");
        }
    }
    if !a.effects.is_empty() {
        let _ = writeln!(out, "\nSide effects (intent → outcome)");
        for e in &a.effects {
            let outcome = e.outcome.as_deref().unwrap_or("IN FLIGHT (no outcome journaled)");
            let _ = writeln!(out, "  {:<13} {:<17} {:<11} {:<40} {}", clock(&e.intent_at), e.kind, outcome, e.key, e.intent);
        }
    }
    if !a.commands.is_empty() {
        let _ = writeln!(out, "\nCommands from people");
        for c in &a.commands {
            let state = match c.accepted {
                Some(true) => "accepted",
                Some(false) => "REFUSED",
                None => "pending",
            };
            let _ = writeln!(
                out,
                "  {:<13} {:<8} by {:<12} via {:<5} {:<9} {}{}{}",
                clock(&c.at),
                c.kind.as_str(),
                c.actor,
                c.via,
                state,
                c.result.clone().unwrap_or_default(),
                if c.comment.is_empty() { String::new() } else { format!("  “{}”", c.comment) },
                c.os_user.as_deref().map(|u| format!("  [os user {u}]")).unwrap_or_default()
            );
        }
    }
    if !a.alerts.is_empty() {
        let _ = writeln!(out, "\nAlerts");
        for al in &a.alerts {
            let _ =
                writeln!(out, "  {:<13} {:<12} {:<8} {:<9} {}", clock(&al.received_at), al.source, al.status, al.disposition, al.summary);
        }
    }
    out
}

/// A post-incident report in Markdown: summary, timeline, what was done.
pub fn report(a: &Audit) -> String {
    let i = &a.incident;
    let mut out = String::new();
    let _ = writeln!(out, "# Incident {}\n", i.id);
    let _ = writeln!(out, "- **Outcome:** {}", i.outcome.as_deref().unwrap_or("open"));
    let _ = writeln!(out, "- **Target:** `{}`", i.target);
    let _ = writeln!(out, "- **Playbook:** {} (`{}`, sha256 `{}`)", i.playbook_name, i.playbook_path, i.playbook_hash);
    let _ = writeln!(out, "- **Opened:** {} by {} {}", i.opened_at, i.trigger_source, i.trigger_detail);
    if let Some(c) = &i.closed_at {
        let _ = writeln!(out, "- **Closed:** {c}");
    }
    if let Some(h) = &a.journal_head {
        let _ = writeln!(out, "- **Journal head:** `{h}` (keep a copy; `orchestrator journal verify {}` checks the chain)", i.id);
    }
    let _ = writeln!(out, "\n## Time per step\n\n| step | time |\n| --- | --- |");
    for (step, ms) in a.time_per_step() {
        let _ = writeln!(out, "| {step} | {} |", secs(ms));
    }
    let _ = writeln!(out, "\n## Timeline\n\n```\n{}```", render(a));
    out
}
