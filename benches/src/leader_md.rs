//! Section 9 of BENCHMARKS.md: several instances on PostgreSQL (see `leader.rs`).

use crate::leader::{self, IncidentRun, Lease, Results};
use crate::util::*;
use std::fmt::Write;

fn stats(xs: &[f64]) -> (String, String, String) {
    (fmt_ms0(median(xs)), fmt_ms0(pct(xs, 90.0)), fmt_ms0(max(xs)))
}

fn list(xs: &[f64]) -> String {
    xs.iter().map(|x| format!("{x:.0}")).collect::<Vec<_>>().join(", ")
}

/// The headline lines for the terminal.
pub fn summary(r: &Results) -> String {
    let mut s = String::new();
    for t in &r.takeover {
        let xs: Vec<f64> = t.runs.iter().map(|k| k.takeover_ms).collect();
        let _ = writeln!(
            s,
            "leader: {} → kill → new leader median {} p90 {} max {} ({} runs)",
            t.lease.label(),
            fmt_ms0(median(&xs)),
            fmt_ms0(pct(&xs, 90.0)),
            fmt_ms0(max(&xs)),
            xs.len()
        );
    }
    if let Some(i) = &r.incident {
        let p: Vec<f64> = i.plain.iter().map(|x| x.total_ms).collect();
        let k: Vec<f64> = i.killed.iter().map(|x| x.total_ms).collect();
        let _ = writeln!(
            s,
            "leader: kill → Recovered median {} (leader kept) vs {} (leader SIGKILLed at {}): +{}",
            fmt_ms0(median(&p)),
            fmt_ms0(median(&k)),
            leader::CRASH_AT,
            fmt_ms0(median(&k) - median(&p))
        );
    }
    if let Some(j) = &r.journal {
        for row in &j.rows {
            let _ = writeln!(
                s,
                "leader: journal transition on {}: median {} p90 {}",
                row.backend,
                fmt_ms(median(&row.record_ms)),
                fmt_ms(pct(&row.record_ms, 90.0))
            );
        }
    }
    s
}

fn bound(l: &Lease) -> String {
    format!(
        "{}–{} ms (ttl ± renew: the lease expires ttl after the leader's last renewal, which was up to one renewal period \
         before the kill, and a follower tries to take it once per renewal period)",
        l.ttl_ms - l.renew_ms,
        l.ttl_ms + l.renew_ms
    )
}

pub fn write(r: &Results, o: &mut String) {
    let _ = writeln!(
        o,
        "Several `orchestrator serve` instances sharing one PostgreSQL journal (one leader by a lease row judged by the \
         database's clock; see README \"Several instances\"). Measured by `target/release/bench --only leader` \
         (`--reps N` for more runs; {} here), started {}, commit {}, load average {} at the start of this section (the rest \
         of this file may come from other runs: a partial run replaces only its own sections). PostgreSQL {} on \
         127.0.0.1:5432 ({}); every run uses a database of its own, `orch_bench_<random>`, created with `CREATE DATABASE` \
         and dropped at its end. The instances run with `--no-watch` (the alert opens the incident) and the sandbox \
         playbook with `verify_window: 4s`, `verify_interval: 200ms`, as `tests/leader.rs` runs them. Rerun it with:\n\n\
         ```sh\ncargo build --release --bin orchestrator && cargo build --release -p benches --bin bench\n\
         target/release/bench --only leader\n```\n",
        r.reps, r.started, r.commit, r.load, r.pg_version, r.pg_settings
    );
    let errs = leader::errors(r);
    if !errs.is_empty() {
        let _ = writeln!(o, "**Some runs failed** (the numbers below are of the runs that completed):\n");
        for e in &errs {
            let _ = writeln!(o, "- `{}`", e.replace('`', "'"));
        }
        let _ = writeln!(o);
    }

    // 1. Takeover.
    let _ = writeln!(o, "### Takeover: SIGKILL the leader → another instance answers 200 on `/leader`\n");
    let _ = writeln!(
        o,
        "Three instances on a fresh database; the first started takes the lease, two follow. After one renewal period \
         the leader is SIGKILLed (so it cannot give the lease up) and both survivors' `GET /leader` are polled every \
         {} ms until one answers 200. \"lease left\" is the lease's remaining life on the database's clock as a follower \
         reported it just before the kill: the takeover minus it is how long after the expiry a follower took over.\n",
        leader::POLL_MS
    );
    let _ = writeln!(
        o,
        "| lease | runs | median | p90 | max | lease left at the kill, median | bound |\n| --- | ---: | ---: | ---: | ---: | ---: | --- |"
    );
    for t in &r.takeover {
        let xs: Vec<f64> = t.runs.iter().map(|k| k.takeover_ms).collect();
        let left: Vec<f64> = t.runs.iter().filter_map(|k| k.lease_left_ms).collect();
        let (m, p, x) = stats(&xs);
        let _ = writeln!(
            o,
            "| `{}`{} | {} | {m} | {p} | {x} | {} | {} |",
            t.lease.label(),
            if t.lease.is_default() { " (the defaults)" } else { "" },
            xs.len(),
            fmt_ms0(median(&left)),
            bound(&t.lease)
        );
    }
    let _ = writeln!(o);
    for t in &r.takeover {
        let _ = writeln!(
            o,
            "- `{}`: kill → new leader, every run (ms): {}; lease left at the kill: {}.",
            t.lease.label(),
            list(&t.runs.iter().map(|k| k.takeover_ms).collect::<Vec<_>>()),
            list(&t.runs.iter().filter_map(|k| k.lease_left_ms).collect::<Vec<_>>())
        );
    }
    let _ = writeln!(o);

    // 2. Incident.
    if let Some(i) = &r.incident {
        let _ = writeln!(o, "### An incident with the leader killed in the middle, beside one without\n");
        let _ = writeln!(
            o,
            "Lease `{}`. Three instances on a fresh database (a fresh world too: two `redis-server`s, the sandbox service \
             and platform); the primary Redis is SIGKILLed; as soon as the service reports Redis down the alert goes to a \
             follower, which journals it and opens the incident for the leader; the journal is polled every {} ms until \
             the incident ends. (a) the leader lives; (b) the leader was started first with `ORCH_FAULT_CRASH_AT={}` and \
             SIGKILLs itself after journaling its deploy intent, before deploying; a follower takes the lease, adopts the \
             incident, re-reads the world and finishes it.\n",
            i.lease.label(),
            leader::POLL_MS,
            leader::CRASH_AT
        );
        let _ = writeln!(
            o,
            "| case | runs | outcomes | kill → alert accepted, median | kill → Recovered, median | p90 | max |\n\
             | --- | ---: | --- | ---: | ---: | ---: | ---: |"
        );
        let row = |o: &mut String, name: &str, runs: &[IncidentRun]| {
            let tot: Vec<f64> = runs.iter().map(|x| x.total_ms).collect();
            let alert: Vec<f64> = runs.iter().map(|x| x.alert_ms).collect();
            let mut outcomes: Vec<String> = runs.iter().map(|x| x.outcome.clone()).collect();
            outcomes.sort();
            outcomes.dedup();
            let (m, p, x) = stats(&tot);
            let _ = writeln!(o, "| {name} | {} | {} | {} | {m} | {p} | {x} |", runs.len(), outcomes.join(", "), fmt_ms0(median(&alert)));
        };
        row(&mut *o, "(a) leader not killed", &i.plain);
        row(&mut *o, &format!("(b) leader SIGKILLed at `{}`", leader::CRASH_AT), &i.killed);
        let p: Vec<f64> = i.plain.iter().map(|x| x.total_ms).collect();
        let k: Vec<f64> = i.killed.iter().map(|x| x.total_ms).collect();
        let crash: Vec<f64> = i.killed.iter().filter_map(|x| x.crash_ms).collect();
        let take: Vec<f64> = i.killed.iter().filter_map(|x| x.takeover_ms).collect();
        let sig = i.killed.iter().filter(|x| x.killed_by_signal == Some(true)).count();
        let _ = writeln!(
            o,
            "\nThe leader's death costs **{}** (difference of the medians). In (b): kill of Redis → the leader gone, median {}; \
             the leader gone → a follower answers 200 on `/leader`, median {} (every run, ms: {}), against the short lease's \
             bound of {}; the rest of the difference is the new leader adopting the incident (its adopt loop runs \
             every second on a shared journal), re-reading the world and resuming the incident from its journal at the \
             deploy intent the dead leader left without an outcome. The leader died of SIGKILL in {sig} of {} runs.\n",
            fmt_ms0(median(&k) - median(&p)),
            fmt_ms0(median(&crash)),
            fmt_ms0(median(&take)),
            list(&take),
            bound(&i.lease),
            i.killed.len()
        );
        let _ =
            writeln!(o, "- (a) kill → Recovered, every run (ms): {}.\n- (b) kill → Recovered, every run (ms): {}.\n", list(&p), list(&k));
    }

    // 3. Journal.
    if let Some(j) = &r.journal {
        let _ = writeln!(o, "### Journal cost per transition: SQLite beside PostgreSQL\n");
        if let Some(e) = &j.error {
            let _ = writeln!(o, "**This part could not run:** `{}`\n", e.replace('`', "'"));
        }
        if !j.rows.is_empty() {
            let _ = writeln!(
                o,
                "The replay of section 4 (a recorded real incident: {} transitions with their checks, effects and alert), \
                 {} times into a fresh journal per backend, timing each `IncidentStore::record_decision` (one transaction \
                 committed durably: SQLite's WAL fsynced with `synchronous = FULL`; PostgreSQL's commit waiting for its WAL \
                 flush, `synchronous_commit = on`, over a loopback TCP connection, with the journal's write lock \
                 `pg_advisory_xact_lock` in every write transaction). \"fenced\" is how the leader of several instances \
                 writes: its term is checked against the lease row inside each transaction. Then {} batches of {} alerts \
                 (`AlertStore::record_alerts`, one transaction each).\n",
                j.transitions_per_incident,
                j.incidents,
                leader::BATCHES,
                leader::BATCH
            );
            let _ = writeln!(
                o,
                "| journal | transitions | median | p90 | p99 | max | {}-alert batch, median | p90 |\n\
                 | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
                leader::BATCH
            );
            for row in &j.rows {
                let x = &row.record_ms;
                let _ = writeln!(
                    o,
                    "| {} | {} | {} | {} | {} | {} | {} | {} |",
                    row.backend,
                    x.len(),
                    fmt_ms(median(x)),
                    fmt_ms(pct(x, 90.0)),
                    fmt_ms(pct(x, 99.0)),
                    fmt_ms(max(x)),
                    fmt_ms(median(&row.batch_ms)),
                    fmt_ms(pct(&row.batch_ms, 90.0))
                );
            }
            let _ = writeln!(o);
        }
    }
}
