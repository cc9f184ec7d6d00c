//! Benchmark 4: the journal. Replays a recorded incident (every transition with its
//! checks, every effect intent and outcome, its alert) 1,000 times into a fresh SQLite
//! journal, timing each `IncidentStore::record_decision` (one transaction, one fsync of the
//! WAL with `synchronous = FULL`), then times the CLI's reads of that journal.

use crate::failover::Recorded;
use crate::util::*;
use anyhow::{anyhow, bail, Context, Result};
use chrono::{Duration as CDuration, Utc};
use orchestrator::journal::prelude::*;
use orchestrator::journal::{parse_ts, Journal, NewAlert, NewIncident};
use orchestrator::machine::{Machine, Policy};
use serde::Serialize;
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::time::Instant;

pub const INCIDENTS: usize = 1000;

#[derive(Debug, Clone, Serialize)]
pub struct CliRow {
    pub command: String,
    pub median_ms: f64,
    pub max_ms: f64,
    pub runs: usize,
    pub output_bytes: usize,
}

pub struct Results {
    pub incidents: usize,
    pub per_incident: PerIncident,
    pub record_ms: Vec<f64>,
    pub fill_ms: f64,
    pub db_bytes: u64,
    pub wal_bytes_before_checkpoint: u64,
    pub rows: Vec<(String, i64)>,
    pub cli: Vec<CliRow>,
    pub source_incident: String,
    pub replay_outcome: String,
    /// Holds the journal file until the footprint benchmark has used it.
    pub _dir: tempfile::TempDir,
    pub db: PathBuf,
}

#[derive(Debug, Clone, Serialize)]
pub struct PerIncident {
    pub transitions: usize,
    pub checks: usize,
    pub effects: usize,
    pub alerts: usize,
}

fn file_len(p: &Path) -> u64 {
    std::fs::metadata(p).map(|m| m.len()).unwrap_or(0)
}

fn time_cli(ctx: &Ctx, db: &Path, args: &[&str], runs: usize) -> Result<CliRow> {
    let mut times = Vec::new();
    let mut bytes = 0;
    for _ in 0..runs {
        let t = Instant::now();
        let out = Command::new(ctx.orchestrator()).arg("--db").arg(db).args(args).stdin(Stdio::null()).stderr(Stdio::null()).output()?;
        times.push(ms(t.elapsed()));
        if !out.status.success() {
            bail!("orchestrator {} exited {}", args.join(" "), out.status);
        }
        bytes = out.stdout.len();
    }
    Ok(CliRow {
        command: format!("orchestrator {}", args.join(" ")),
        median_ms: median(&times),
        max_ms: max(&times),
        runs,
        output_bytes: bytes,
    })
}

pub async fn run(ctx: &Ctx, rec: &Recorded) -> Result<Results> {
    let dir = ctx.tempdir("bench-journal-")?;
    let db = dir.path().join("journal.db");
    let j = Journal::open(&db).await?;
    let checks_per: usize = {
        let mut n = 0;
        for (_, e) in &rec.events {
            let v = serde_json::to_value(e)?;
            for k in ["checks", "preflight"] {
                n += v[k].as_array().map(|a| a.len()).unwrap_or(0);
            }
        }
        n
    };
    let per_incident =
        PerIncident { transitions: rec.events.len(), checks: checks_per, effects: rec.effects.len(), alerts: rec.alerts.len() };
    let n = if ctx.quick { 200 } else { INCIDENTS };
    progress(format!(
        "journal: replaying incident {} ({} transitions, {} checks, {} effects, {} alert) {n} times",
        rec.incident_id, per_incident.transitions, per_incident.checks, per_incident.effects, per_incident.alerts
    ));
    let fill = Instant::now();
    let (record_ms, replay_outcome) = replay(&j, rec, n, |i| {
        if (i + 1) % 250 == 0 {
            progress(format!("  {}/{n} incidents journaled", i + 1));
        }
    })
    .await?;
    let fill_ms = ms(fill.elapsed());
    let wal = PathBuf::from(format!("{}-wal", db.display()));
    let wal_bytes_before_checkpoint = file_len(&wal);
    sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)").execute(j.pool()).await?;
    let mut rows = Vec::new();
    for (t, q) in [
        ("incidents", "SELECT COUNT(*) FROM incidents"),
        ("transitions", "SELECT COUNT(*) FROM transitions"),
        ("checks", "SELECT COUNT(*) FROM checks"),
        ("effects", "SELECT COUNT(*) FROM effects"),
        ("alerts", "SELECT COUNT(*) FROM alerts"),
    ] {
        let c: (i64,) = sqlx::query_as(q).fetch_one(j.pool()).await?;
        rows.push((t.to_string(), c.0));
    }
    let middle: (String,) =
        sqlx::query_as("SELECT id FROM incidents ORDER BY opened_at LIMIT 1 OFFSET ?").bind((n / 2) as i64).fetch_one(j.pool()).await?;
    j.close().await;
    let db_bytes = file_len(&db) + file_len(&wal);
    progress(format!("journal: {n} incidents in {} → {} on disk", fmt_ms(fill_ms), fmt_bytes(db_bytes)));

    let runs = if ctx.quick { 3 } else { 7 };
    let id = middle.0;
    let limit = n.to_string();
    let mut cli = Vec::new();
    for args in [
        vec!["incidents"],
        vec!["incidents", "--limit", limit.as_str(), "--json"],
        vec!["audit", id.as_str()],
        vec!["audit", id.as_str(), "--json"],
    ] {
        let r = time_cli(ctx, &db, &args, runs).with_context(|| format!("timing {args:?}"))?;
        progress(format!("  {}: median {}", r.command, fmt_ms(r.median_ms)));
        cli.push(r);
    }
    Ok(Results {
        incidents: n,
        per_incident,
        record_ms,
        fill_ms,
        db_bytes,
        wal_bytes_before_checkpoint,
        rows,
        cli,
        source_incident: rec.incident_id.clone(),
        replay_outcome,
        _dir: dir,
        db,
    })
}

/// Replays `rec` `n` times into `j` (one incident an hour, ending now), timing each
/// `IncidentStore::record_decision`: the transitions' times in ms, and the outcome the
/// first replay reached. `each(i)` runs after incident `i`. Works on either backend.
pub async fn replay(j: &Journal, rec: &Recorded, n: usize, mut each: impl FnMut(usize)) -> Result<(Vec<f64>, String)> {
    let pb = &rec.playbook;
    let policy = Policy::from_playbook(pb);
    let target = pb.redis.primary.endpoint();
    let offset = |at: &str| parse_ts(at).map(|t| t - rec.opened_at).unwrap_or_else(CDuration::zero);
    let base = Utc::now() - CDuration::hours(n as i64 + 1);
    let mut record_ms = Vec::with_capacity(n * rec.events.len());
    let mut replay_outcome = String::new();
    for i in 0..n {
        // One incident an hour: distinct ids (they embed the second) and a realistic spread.
        let opened = base + CDuration::hours(i as i64);
        let mut m = Machine::new(policy.clone());
        let new = NewIncident {
            playbook_name: pb.name.clone(),
            playbook_path: pb.source.display().to_string(),
            playbook_hash: pb.hash.clone(),
            target: target.clone(),
            trigger_source: "watch".into(),
            trigger_detail: "Redis ping failing for 200ms: connection_refused".into(),
            os_user: None,
            approver_os_users: Default::default(),
        };
        let id = j.create_incident(&new, &m, opened).await?;
        for a in &rec.alerts {
            let alert = NewAlert {
                source: a.source.clone(),
                fingerprint: a.fingerprint.clone(),
                status: a.status.clone(),
                target: target.clone(),
                summary: a.summary.clone(),
            };
            j.record_alert(&alert, Some(&id), &a.disposition, opened + offset(&a.received_at)).await?;
        }
        let mut effects = rec.effects.iter().peekable();
        for (off, ev) in &rec.events {
            let at = opened + CDuration::milliseconds(*off);
            // Effects whose intent came before this transition, in journal order.
            while let Some(e) = effects.peek().filter(|e| offset(&e.intent_at) <= CDuration::milliseconds(*off)) {
                replay_effect(&j, &id, &rec.incident_id, e, opened, &offset).await?;
                effects.next();
            }
            let d = m.handle(ev);
            let t = Instant::now();
            j.record_decision(&id, ev, &d, &m, at).await?;
            record_ms.push(ms(t.elapsed()));
        }
        for e in effects {
            replay_effect(&j, &id, &rec.incident_id, e, opened, &offset).await?;
        }
        if i == 0 {
            replay_outcome = m.state().name().to_string();
        }
        each(i);
    }
    Ok((record_ms, replay_outcome))
}

async fn replay_effect(
    j: &Journal,
    id: &str,
    old_id: &str,
    e: &orchestrator::journal::EffectRow,
    opened: chrono::DateTime<Utc>,
    offset: &dyn Fn(&str) -> CDuration,
) -> Result<()> {
    let key = e.key.replace(old_id, id);
    let intent: serde_json::Value = serde_json::from_str(&e.intent).map_err(|x| anyhow!("effect intent: {x}"))?;
    j.effect_intent(id, &key, &e.kind, &intent, opened + offset(&e.intent_at)).await?;
    if let Some(outcome) = &e.outcome {
        let done = e.done_at.as_deref().map(offset).unwrap_or_else(CDuration::zero);
        j.effect_outcome(&key, outcome, &e.result_json(), opened + done).await?;
    }
    Ok(())
}
