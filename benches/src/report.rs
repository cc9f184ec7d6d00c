//! BENCHMARKS.md: the machine, how to read the numbers, one section per benchmark.

use crate::failover::{self, STEPS};
use crate::util::*;
use crate::{bullmq, fleet, flush, footprint, journal, leader, storm};
use std::fmt::Write;
use std::time::Duration;

pub struct Report {
    pub machine: Machine,
    pub sections: Vec<String>,
    pub reps: usize,
    pub quick: bool,
    pub failover: Option<failover::Results>,
    pub flush: Option<flush::Results>,
    pub storm: Option<Vec<storm::Row>>,
    pub storm_mixed: Option<storm::Mixed>,
    pub bomb: Option<storm::Bomb>,
    pub journal: Option<journal::Results>,
    pub footprint: Option<footprint::Results>,
    pub bullmq: Option<bullmq::Results>,
    pub fleet: Option<fleet::Results>,
    pub leader: Option<leader::Results>,
    pub errors: Vec<(String, String)>,
    pub runtime: Duration,
    /// The orchestrator binary measured, relative to the repository when inside it.
    pub bin_label: String,
}

const COMMAND: &str = "make bench";

impl Report {
    pub fn new(machine: Machine, sections: &[String], reps: usize, quick: bool) -> Report {
        Report {
            machine,
            sections: sections.to_vec(),
            reps,
            quick,
            failover: None,
            flush: None,
            storm: None,
            storm_mixed: None,
            bomb: None,
            journal: None,
            footprint: None,
            bullmq: None,
            fleet: None,
            leader: None,
            errors: vec![],
            runtime: Duration::ZERO,
            bin_label: String::new(),
        }
    }

    pub fn error(&mut self, section: &str, e: anyhow::Error) {
        progress(format!("{section}: FAILED: {e:#}"));
        self.errors.push((section.to_string(), format!("{e:#}")));
    }

    fn errors_of(&self, section: &str, out: &mut String) {
        for (s, e) in &self.errors {
            if s == section {
                let _ = writeln!(out, "**This benchmark could not run:** `{}`\n", e.replace('`', "'"));
            }
        }
    }

    /// The headline numbers for the terminal.
    pub fn summary(&self) -> String {
        let mut s = String::from("\n== headline numbers ==\n");
        if let Some(f) = &self.failover {
            let tot: Vec<f64> = f.orch.iter().map(|r| r.total_ms).collect();
            let _ = writeln!(s, "failover: orchestrator kill → Recovered median {} (worst {})", fmt_ms(median(&tot)), fmt_ms(max(&tot)));
            let w: Vec<f64> = f.sentinel.iter().map(|r| r.write_ms).collect();
            let _ = writeln!(s, "failover: Sentinel kill → client writes median {} (worst {})", fmt_ms(median(&w)), fmt_ms(max(&w)));
        }
        if let Some(f) = &self.flush {
            let _ = writeln!(s, "flush: {}", flush_verdict(f).0);
        }
        if let Some(rows) = &self.storm {
            for r in rows {
                let _ = writeln!(
                    s,
                    "storm: {} webhooks → {:.0} req/s, p99 {}, {} incident(s), peak RSS {}",
                    r.n,
                    r.rps,
                    fmt_ms(r.p99_ms),
                    r.incidents,
                    fmt_bytes(r.hwm)
                );
            }
        }
        if let Some(j) = &self.journal {
            let _ = writeln!(
                s,
                "journal: record_decision median {} p99 {}; {} incidents = {}",
                fmt_ms(median(&j.record_ms)),
                fmt_ms(pct(&j.record_ms, 99.0)),
                j.incidents,
                fmt_bytes(j.db_bytes)
            );
        }
        if let Some(f) = &self.footprint {
            let _ = writeln!(
                s,
                "footprint: start-up {}, idle RSS {}",
                fmt_ms(median(&f.startup_fresh_ms)),
                fmt_bytes(median(&f.idle_rss.iter().map(|x| *x as f64).collect::<Vec<_>>()) as u64)
            );
        }
        if let Some(r) = &self.bullmq {
            for b in &r.budgets {
                let _ = writeln!(
                    s,
                    "bullmq {}: kill → first job: orchestrator median {} (worst {}), Sentinel median {} (worst {}); orchestrator overhead median {} (worst {}; sampling as measured: median {}, worst {}; aim < {:.0} ms); jobs lost: orchestrator {}, Sentinel {}",
                    b.budget.label(),
                    fmt_ms0(bullmq::med(&b.orch, |r| r.seen.first_job_ms)),
                    fmt_ms0(bullmq::worst(&b.orch, |r| r.seen.first_job_ms)),
                    fmt_ms0(bullmq::med(&b.sentinel, |r| r.seen.first_job_ms)),
                    fmt_ms0(bullmq::worst(&b.sentinel, |r| r.seen.first_job_ms)),
                    fmt_ms0(bullmq::med(&b.orch, |r| Some(r.overhead_ms))),
                    fmt_ms0(bullmq::worst(&b.orch, |r| Some(r.overhead_ms))),
                    fmt_ms0(bullmq::med(&b.orch, |r| Some(r.overhead_exact_ms))),
                    fmt_ms0(bullmq::worst(&b.orch, |r| Some(r.overhead_exact_ms))),
                    bullmq::AIM_OVERHEAD_MS,
                    b.orch.iter().map(|r| r.seen.lost().to_string()).collect::<Vec<_>>().join("/"),
                    b.sentinel.iter().map(|r| r.seen.lost().to_string()).collect::<Vec<_>>().join("/"),
                );
            }
        }
        if let Some(f) = &self.fleet {
            for r in &f.runs {
                let d: Vec<f64> = r.kills.iter().map(|k| k.detect_ms).collect();
                let _ = writeln!(
                    s,
                    "fleet: {} targets → serve CPU {:.1} % of one core, RSS {}, round lateness p50 {} p99 {}; kill → incident opened median {} (worst {}, {} kills; budget {} ms)",
                    fmt_int(r.targets as f64),
                    r.cpu_pct,
                    fmt_bytes(r.rss),
                    fmt_ms(r.late_p50_ms),
                    fmt_ms(r.late_p99_ms),
                    fmt_ms0(median(&d)),
                    fmt_ms0(max(&d)),
                    d.len(),
                    fleet::PING_FAIL_FOR_MS + fleet::INTERVAL_MS
                );
            }
        }
        if let Some(l) = &self.leader {
            s.push_str(&crate::leader_md::summary(l));
        }
        for (sec, e) in &self.errors {
            let _ = writeln!(s, "{sec}: FAILED: {e}");
        }
        s
    }

    pub fn markdown(&self) -> String {
        let mut o = String::new();
        let _ = writeln!(o, "# Benchmarks\n");
        let _ = writeln!(
            o,
            "Generated by `{COMMAND}` (`scripts/bench.sh`: `cargo build --release --workspace`, then \
             `target/release/bench --root . --out BENCHMARKS.md`) in {:.0} s. Rerun it with:\n\n```sh\n{COMMAND}\n```\n",
            self.runtime.as_secs_f64()
        );
        if self.is_partial() {
            let _ = writeln!(o, "> Partial run (`--quick` or `--only {}`): not the full benchmark.\n", self.sections.join(","));
        }
        let _ = writeln!(o, "## Machine\n\n| | |\n| --- | --- |");
        for (k, v) in &self.machine.rows {
            let _ = writeln!(o, "| {k} | {v} |");
        }
        let _ = writeln!(
            o,
            "\n## How to read this\n\n\
             - Every number is wall-clock time on the machine above, measured in one run of `{COMMAND}`. \
               The machine is small and shared, so treat differences under ~20 % as noise; rerun to compare.\n\
             - \"median\" is over the repetitions stated in each section ({} for the failover and start-up \
               benchmarks); \"worst\" is the slowest repetition, not a percentile. p50/p99 are nearest-rank percentiles \
               over every sample (every request, every PING, every journaled transition).\n\
             - Benchmarks print numbers; they are not tests and never fail on speed. `make bench` fails only if a \
               benchmark could not run at all, and then says so in its section.\n\
             - Everything runs on loopback with real processes: `redis-server` {redis}, the `orchestrator` binary \
               (`{bin}`), the sandbox service and Render-compatible platform (in the harness process), SQLite files on disk.\n",
            self.reps,
            bin = self.bin_label,
            redis = self
                .machine
                .rows
                .iter()
                .find(|(k, _)| k == "redis")
                .map(|(_, v)| v.split_whitespace().nth(2).unwrap_or("").trim_start_matches("v="))
                .unwrap_or("")
        );
        self.failover_md(&mut o);
        self.flush_md(&mut o);
        self.storm_md(&mut o);
        self.mixed_md(&mut o);
        self.journal_md(&mut o);
        self.footprint_md(&mut o);
        self.hostile_md(&mut o);
        self.bullmq_md(&mut o);
        self.fleet_md(&mut o);
        self.leader_md(&mut o);
        o
    }

    /// `--quick` or `--only` with fewer than every section.
    pub fn is_partial(&self) -> bool {
        self.quick || crate::SECTIONS.iter().any(|s| !self.sections.iter().any(|x| x == s))
    }

    fn failover_md(&self, o: &mut String) {
        if !self.sections.iter().any(|s| s == "failover") {
            return;
        }
        let _ = writeln!(o, "## 1. Failover time, side by side with Redis Sentinel\n");
        self.errors_of("failover", o);
        let Some(f) = &self.failover else { return };
        let (d, j) = (f.deploy_steps_ms as f64, f.job_ms as f64);
        let waits = failover::PING_FAIL_FOR_MS as f64 + failover::CONFIRM_WINDOW_MS as f64 + 2.0 * d + j;
        let _ = writeln!(
            o,
            "**What runs.** Each repetition starts a fresh world: primary and backup `redis-server`s (the backup holds \
             1,100 stale `bull:*`/`idempotent:*` keys to flush), the sandbox service (2 workers per queue, {j:.0} ms jobs) and \
             its Render-compatible platform (deploys take two steps of {d:.0} ms), and the real `orchestrator serve` with \
             `playbooks/sandbox.yaml` as shipped except the watch loop: `watch.interval: {}ms`, `watch.ping_fail_for: {}ms`. \
             So: confirm window {} ms with 2 attempts (one at the start, one at the end of the window), flush batch 500, \
             deploy_poll 100 ms, the full recovery checklist (synthetic job included). The harness SIGKILLs the primary \
             and reads every step's time from the journal's transitions (the `at` of each transition; detection is \
             kill → the incident's `opened_at`, i.e. the watch loop's alert journaled).\n",
            failover::WATCH_INTERVAL_MS,
            failover::PING_FAIL_FOR_MS,
            failover::CONFIRM_WINDOW_MS
        );
        let _ = writeln!(
            o,
            "**Sentinel.** A master, one replica, three sentinels (`redis-server --sentinel`), quorum 2, \
             `down-after-milliseconds {}` (= the confirm window), `failover-timeout 10000`, `parallel-syncs 1`; started \
             fresh each repetition and killed only once every sentinel sees the replica and the two other sentinels. \
             The client asks a sentinel `SENTINEL get-master-addr-by-name`, connects, writes (`SET`) every 10 ms; on any \
             error it asks again (each sentinel in turn) and retries 10 ms later. Timed: kill → a sentinel names the \
             new master, and kill → the client's first successful write to it.\n",
            failover::CONFIRM_WINDOW_MS
        );
        let n = f.orch.len();
        let _ = writeln!(o, "### Orchestrator, per step ({n} runs)\n");
        let _ = writeln!(o, "| step | median | worst | configured wait inside it |\n| --- | ---: | ---: | --- |");
        let configured = [
            format!(
                "watch.ping_fail_for {} ms + up to one watch.interval ({} ms)",
                failover::PING_FAIL_FOR_MS,
                failover::WATCH_INTERVAL_MS
            ),
            format!("confirm_window {} ms (between the 2 samples)", failover::CONFIRM_WINDOW_MS),
            "–".into(),
            "–".into(),
            "–".into(),
            format!("sandbox deploy: 2 × {d:.0} ms, polled every 100 ms (deploy_poll)"),
            format!("synthetic job: {j:.0} ms of work, polled every 100 ms"),
        ];
        let names = ["detection (kill → incident opened)", "confirmation", "assessment", "switch", "flush", "deploy", "verification"];
        for (i, name) in names.iter().enumerate() {
            let xs: Vec<f64> = f.orch.iter().map(|r| r.steps[i]).collect();
            let _ = writeln!(o, "| {name} | {} | {} | {} |", fmt_ms0(median(&xs)), fmt_ms0(max(&xs)), configured[i]);
        }
        let tot: Vec<f64> = f.orch.iter().map(|r| r.total_ms).collect();
        let _ = writeln!(o, "| **kill → Recovered** | **{}** | **{}** | |", fmt_ms0(median(&tot)), fmt_ms0(max(&tot)));
        let up: Vec<f64> = f.orch.iter().filter_map(|r| r.service_up_ms).collect();
        let _ = writeln!(
            o,
            "| kill → the service's health shows Redis up (it runs on the backup) | {} | {} | |",
            fmt_ms0(median(&up)),
            fmt_ms0(max(&up))
        );
        let outcomes: Vec<&str> = f.orch.iter().map(|r| r.outcome.as_str()).collect();
        let flushed: Vec<String> = f.orch.iter().map(|r| r.flushed.to_string()).collect();
        let attempts: Vec<String> = f.orch.iter().map(|r| r.verify_attempts.to_string()).collect();
        let _ = writeln!(
            o,
            "\nOutcomes: {}; keys flushed per run: {}; verify attempts per run: {}.\n",
            outcomes.join(", "),
            flushed.join(", "),
            attempts.join(", ")
        );

        let over: Vec<f64> = tot.iter().map(|t| t - waits).collect();
        let _ = writeln!(o, "### Side by side\n");
        let _ = writeln!(o, "| | median | worst | runs |\n| --- | ---: | ---: | ---: |");
        let _ = writeln!(
            o,
            "| orchestrator: kill → Recovered (verified: a real job completed on the backup) | {} | {} | {n} |",
            fmt_ms0(median(&tot)),
            fmt_ms0(max(&tot))
        );
        let _ = writeln!(
            o,
            "| orchestrator: kill → service healthy on the backup | {} | {} | {} |",
            fmt_ms0(median(&up)),
            fmt_ms0(max(&up)),
            up.len()
        );
        let sw: Vec<f64> = f.sentinel.iter().map(|r| r.switch_ms).collect();
        let wr: Vec<f64> = f.sentinel.iter().map(|r| r.write_ms).collect();
        let _ = writeln!(
            o,
            "| Sentinel: kill → a sentinel names the new master | {} | {} | {} |",
            fmt_ms0(median(&sw)),
            fmt_ms0(max(&sw)),
            sw.len()
        );
        let _ =
            writeln!(o, "| Sentinel: kill → the client writes again | {} | {} | {} |", fmt_ms0(median(&wr)), fmt_ms0(max(&wr)), wr.len());
        let _ = writeln!(o, "| orchestrator's own overhead (below) | {} | {} | {n} |\n", fmt_ms0(median(&over)), fmt_ms0(max(&over)));
        if let Some(e) = &f.sentinel_error {
            let _ = writeln!(o, "Sentinel: a repetition failed: `{e}`\n");
        }
        let _ = writeln!(
            o,
            "**Overhead** = kill → Recovered minus the waits the playbook and the sandbox configure: \
             `watch.ping_fail_for` {} ms + `confirm_window` {} ms + the sandbox platform's two deploy steps 2 × {d:.0} ms + \
             the synthetic job's {j:.0} ms of work = **{waits:.0} ms** subtracted. What remains is the orchestrator's own \
             time (probes, HTTP calls, journal writes with fsync, the flush of 1,100 keys) plus polling granularity, which \
             is also configured but not subtracted: up to {} ms (watch interval) + 100 ms (`deploy_poll`) + 100 ms \
             (synthetic-job poll).\n",
            failover::PING_FAIL_FOR_MS,
            failover::CONFIRM_WINDOW_MS,
            failover::WATCH_INTERVAL_MS
        );
        let per_step: Vec<String> = (0..STEPS.len())
            .map(|i| {
                let sub = match i {
                    0 => failover::PING_FAIL_FOR_MS as f64,
                    1 => failover::CONFIRM_WINDOW_MS as f64,
                    5 => 2.0 * d,
                    6 => j,
                    _ => 0.0,
                };
                let xs: Vec<f64> = f.orch.iter().map(|r| r.steps[i] - sub).collect();
                format!("{} {}", STEPS[i], fmt_ms0(median(&xs)))
            })
            .collect();
        let _ = writeln!(o, "Median overhead per step (step time minus its configured wait): {}.\n", per_step.join(", "));
        let _ = writeln!(
            o,
            "**Reading it.** Both systems wait about the same 1 s before believing the failure (Sentinel's \
             `down-after-milliseconds`, the orchestrator's confirm window). The orchestrator additionally detects with its \
             own watch loop ({} ms), switches the service through the platform, deploys it and proves recovery with a \
             real job; Sentinel only promotes a replica, and its time includes the ODOWN agreement, the leader election \
             and the replica's promotion. Sentinel clients see the new master without a redeploy; the runbook's \
             service cannot (its Redis URL is an environment variable), which is why the orchestrator's path has a deploy. \
             The comparison flatters the orchestrator in one respect: {} ms of failing PINGs is an aggressive detection \
             threshold chosen for this benchmark (the shipped sandbox playbook says `ping_fail_for: 2s`, which would add \
             about {} ms to detection and to both orchestrator totals), whereas Sentinel's 1 s `down-after-milliseconds` is both its \
             detection and its confirmation.\n",
            failover::PING_FAIL_FOR_MS,
            failover::PING_FAIL_FOR_MS,
            2000 - failover::PING_FAIL_FOR_MS
        );
        let _ = writeln!(o, "<details><summary>Every run</summary>\n");
        let _ = writeln!(
            o,
            "| run | {} | kill → Recovered | service up |\n| --- |{} ---: | ---: |",
            STEPS.join(" | "),
            " ---: |".repeat(STEPS.len())
        );
        for (i, r) in f.orch.iter().enumerate() {
            let steps: Vec<String> = r.steps.iter().map(|x| format!("{x:.0}")).collect();
            let _ = writeln!(
                o,
                "| {} | {} | {:.0} | {} |",
                i + 1,
                steps.join(" | "),
                r.total_ms,
                r.service_up_ms.map(|x| format!("{x:.0}")).unwrap_or("–".into())
            );
        }
        let _ = writeln!(o, "\n| Sentinel run | new master named (ms) | client writes (ms) |\n| --- | ---: | ---: |");
        for (i, r) in f.sentinel.iter().enumerate() {
            let _ = writeln!(o, "| {} | {:.0} | {:.0} |", i + 1, r.switch_ms, r.write_ms);
        }
        let _ = writeln!(o, "\n</details>\n");
    }

    fn flush_md(&self, o: &mut String) {
        if !self.sections.iter().any(|s| s == "flush") {
            return;
        }
        let _ = writeln!(o, "## 2. Flush without stalling Redis\n");
        self.errors_of("flush", o);
        let Some(f) = &self.flush else { return };
        let _ = writeln!(
            o,
            "One `redis-server` holding {} keys, {} of them matching `bull:*` (string keys `bull:q:N` and `app:data:N`, \
             seeded with `DEBUG POPULATE` in {}; reseeded before every repetition). Deleted with the orchestrator's flush \
             (`RealRedis::flush`: one short server-side step per batch, a SCAN `COUNT batch` and an UNLINK of exactly \
             what it returned, so no key crosses the wire; pausing while its own PING exceeds `max_latency` 50 ms) and with the runbook's script `EVAL \"{}\" 0`. Meanwhile a separate connection \
             PINGs the same server in a loop (1 ms pause between PINGs) and records every round trip. Duration is the \
             flush call (or the EVAL round trip); keys/s = keys deleted / duration; Redis CPU = user + system CPU time of the \
             `redis-server` process during it (from `/proc/PID/stat`, 10 ms ticks). {} repetitions each: duration and keys/s \
             are medians, p50/p99 are medians of the per-run percentiles, \"worst PING\" is the maximum over all repetitions. \
             (The script blocks the monitoring client for its whole duration, so it gets only one or two PINGs in per run.)\n",
            fmt_int(flush::TOTAL_KEYS as f64),
            fmt_int(flush::MATCHING as f64),
            fmt_ms(f.seed_ms),
            flush::SCRIPT,
            f.reps
        );
        let script = f.rows.iter().find(|r| r.batch.is_none()).map(|r| r.keys_per_s()).unwrap_or(f64::NAN);
        let _ = writeln!(
            o,
            "| method | batch | patterns | duration | keys/s | × script | PING p50 | PING p99 | worst PING | Redis CPU | latency pauses | aim (≥ 0.8×, worst < 10 ms) |\n\
             | --- | ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- |"
        );
        for r in &f.rows {
            let kps = r.keys_per_s();
            let worst = max(&r.ping_worst_ms);
            let aim = if r.batch.is_none() || !r.method.starts_with("orchestrator") {
                "–".to_string()
            } else if kps >= 0.8 * script && worst < 10.0 {
                "met".to_string()
            } else {
                let mut why = vec![];
                if kps < 0.8 * script {
                    why.push(format!("{:.2}× < 0.8×", kps / script));
                }
                if worst >= 10.0 {
                    why.push(format!("worst PING {}", fmt_ms(worst)));
                }
                format!("not met ({})", why.join(", "))
            };
            let _ = writeln!(
                o,
                "| {} | {} | `{}` | {} | {} | {:.2} | {} | {} | {} | {} | {} | {} |",
                r.method,
                r.batch.map(|b| b.to_string()).unwrap_or("–".into()),
                r.patterns.join("`, `"),
                fmt_ms(median(&r.duration_ms)),
                fmt_int(kps),
                kps / script,
                fmt_ms(median(&r.ping_p50_ms)),
                fmt_ms(median(&r.ping_p99_ms)),
                fmt_ms(worst),
                fmt_ms(median(&r.redis_cpu_ms)),
                r.pauses.iter().map(|p| p.to_string()).collect::<Vec<_>>().join("/"),
                aim
            );
        }
        let (verdict, detail) = flush_verdict(f);
        let _ = writeln!(o, "\n**Aim:** {verdict}\n\n{detail}\n");
        let _ = writeln!(o, "<details><summary>Every repetition</summary>\n\n| method | batch | duration (ms) | deleted | worst PING (ms) | p99 PING (ms) | PINGs |\n| --- | ---: | ---: | ---: | ---: | ---: | ---: |");
        for r in &f.rows {
            for i in 0..r.duration_ms.len() {
                let _ = writeln!(
                    o,
                    "| {} | {} | {:.0} | {} | {:.2} | {:.2} | {} |",
                    r.method,
                    r.batch.map(|b| b.to_string()).unwrap_or("–".into()),
                    r.duration_ms[i],
                    r.deleted[i],
                    r.ping_worst_ms[i],
                    r.ping_p99_ms[i],
                    r.pings[i]
                );
            }
        }
        let _ = writeln!(o, "\n</details>\n");
    }

    fn storm_md(&self, o: &mut String) {
        if !self.sections.iter().any(|s| s == "storm") {
            return;
        }
        let _ = writeln!(o, "## 3. Alert storm\n");
        self.errors_of("storm", o);
        let Some(rows) = &self.storm else { return };
        let _ = writeln!(
            o,
            "The real `orchestrator serve --no-watch` (sandbox playbook as shipped, fresh journal per row) with the \
             primary already SIGKILLed; the harness sends N identical Alertmanager webhooks (one firing alert, same \
             fingerprint, bearer token), {} in flight over keep-alive connections. Every webhook is answered only after \
             its alert is journaled (group commit: the alerts of every webhook waiting at that moment in one SQLite \
             transaction and one fsync, decided in arrival order so duplicates open one incident, each alert chained in \
             the tamper-evident ledger), while the one incident they open runs its failover in the same process. Latency is per request at the \
             client; req/s = N / wall time; peak RSS is `VmHWM` of the serve process after the storm.\n",
            storm::CONCURRENCY
        );
        let _ = writeln!(o, "| webhooks | wall time | req/s | p50 | p99 | max | answered 202 | incidents opened | alert dispositions | the incident: outcome, opened → closed | RSS before | peak RSS |\n| ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | --- | --- | ---: | ---: |");
        for r in rows {
            let disp: Vec<String> = r.dispositions.iter().map(|(d, n)| format!("{d} {}", fmt_int(*n as f64))).collect();
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} | {} | {}{} | {} | {}, {} | {} | {} |",
                fmt_int(r.n as f64),
                fmt_ms(r.wall_ms),
                fmt_int(r.rps),
                fmt_ms(r.p50_ms),
                fmt_ms(r.p99_ms),
                fmt_ms(r.max_ms),
                fmt_int(r.accepted as f64),
                r.incidents,
                if r.incidents == 1 { "" } else { " (**expected 1**)" },
                disp.join(", "),
                r.outcome,
                fmt_ms(r.incident_ms),
                fmt_bytes(r.rss_before),
                fmt_bytes(r.hwm)
            );
        }
        let _ = writeln!(
            o,
            "\n`attached` = joined the open incident; `failed_over` = arrived after that incident recovered (journaled; no \
             second failover under the same playbook). A 202 still means the request's own alerts are on \
             disk (5xx when their batch could not be written). The incident's own journal writes share SQLite's single writer with the storm's; the \
             journal queues every write of the process in arrival order, so the failover is not starved by the alerts \
             it triggered: compare the \"opened → closed\" column{}.\n",
            self.failover
                .as_ref()
                .map(|f| {
                    let xs: Vec<f64> = f.orch.iter().map(|r| r.total_ms - r.steps[0]).collect();
                    format!(" with opened → Recovered = {} (median) without a storm in benchmark 1, same thresholds", fmt_ms0(median(&xs)))
                })
                .unwrap_or_default()
        );
    }

    fn hostile_md(&self, o: &mut String) {
        if !self.sections.iter().any(|s| s == "hostile") {
            return;
        }
        let _ = writeln!(
            o,
            "## 6. Hostile input
"
        );
        self.errors_of("hostile", o);
        if let Some(b) = &self.bomb {
            let _ = writeln!(
                o,
                "`orchestrator playbook check` of the \"billion laughs\" alias bomb ({} bytes, nine levels of nine aliases; \
                 before the alias limit: 23 s and 5.85 GB): exit code {} in {}, peak RSS {} (`ru_maxrss` from wait4). \
                 Aliases may materialise at most 10,000 nodes; past that the check fails with a clear error.\n",
                b.bytes,
                b.exit,
                fmt_ms(b.ms),
                fmt_bytes(b.max_rss)
            );
        }
    }

    fn mixed_md(&self, o: &mut String) {
        let Some(m) = &self.storm_mixed else { return };
        let _ = writeln!(
            o,
            "A 1,000-alert Alertmanager body and a single alert sent together ({} times, same `serve`, primary down): the single \
             alert's latency median {}, worst {}; the 1,000-alert body's median {}, worst {}. (Before group commit, ten such \
             bodies held a single alert for 10.6 s.)\n",
            m.reps,
            fmt_ms(median(&m.single_ms)),
            fmt_ms(max(&m.single_ms)),
            fmt_ms(median(&m.big_ms)),
            fmt_ms(max(&m.big_ms))
        );
    }

    fn journal_md(&self, o: &mut String) {
        if !self.sections.iter().any(|s| s == "journal") {
            return;
        }
        let _ = writeln!(o, "## 4. Journal\n");
        self.errors_of("journal", o);
        let Some(j) = &self.journal else { return };
        let p = &j.per_incident;
        let _ = writeln!(
            o,
            "A real incident recorded by benchmark 1 (`{}`: {} transitions, {} checklist rows, {} effects, {} alert) is \
             replayed {} times into a fresh journal file on disk through the library (`Journal::create_incident`, \
             `record_decision`, `effect_intent`/`effect_outcome`, `record_alert`), one incident per simulated hour; the \
             replayed machine ends in `{}` like the original. WAL mode, `synchronous = FULL`: each call is one \
             transaction and one fsync.\n",
            j.source_incident,
            p.transitions,
            p.checks,
            p.effects,
            p.alerts,
            fmt_int(j.incidents as f64),
            j.replay_outcome
        );
        let _ = writeln!(o, "| | value |\n| --- | ---: |");
        let _ = writeln!(
            o,
            "| one journaled transition (`record_decision`, with its checks and fsync): median | {} |",
            fmt_ms(median(&j.record_ms))
        );
        let _ = writeln!(o, "| … p99 | {} |", fmt_ms(pct(&j.record_ms, 99.0)));
        let _ = writeln!(o, "| … worst | {} |", fmt_ms(max(&j.record_ms)));
        let _ = writeln!(o, "| … samples | {} |", fmt_int(j.record_ms.len() as f64));
        let _ = writeln!(
            o,
            "| writing all {} incidents (every row above, each with its fsync) | {} |",
            fmt_int(j.incidents as f64),
            fmt_ms(j.fill_ms)
        );
        let _ = writeln!(
            o,
            "| journal size after {} incidents (after a WAL checkpoint) | {} |",
            fmt_int(j.incidents as f64),
            fmt_bytes(j.db_bytes)
        );
        let _ = writeln!(o, "| … per incident | {} |", fmt_bytes(j.db_bytes / j.incidents.max(1) as u64));
        let _ = writeln!(o, "| WAL size before the checkpoint | {} |", fmt_bytes(j.wal_bytes_before_checkpoint));
        let rows: Vec<String> = j.rows.iter().map(|(t, n)| format!("{t} {}", fmt_int(*n as f64))).collect();
        let _ = writeln!(o, "\nRows: {}.\n", rows.join(", "));
        let _ = writeln!(
            o,
            "Reading it back with `{}` (wall time of the whole process: start, open the journal, query, print):\n",
            self.bin_label
        );
        let _ = writeln!(o, "| command | median | worst | runs | output |\n| --- | ---: | ---: | ---: | ---: |");
        for c in &j.cli {
            let _ = writeln!(
                o,
                "| `{}` | {} | {} | {} | {} |",
                c.command.replace(&j.db.display().to_string(), "J"),
                fmt_ms(c.median_ms),
                fmt_ms(c.max_ms),
                c.runs,
                fmt_bytes(c.output_bytes as u64)
            );
        }
        let _ = writeln!(
            o,
            "\n(`incidents` lists the latest 50 by default; the audited incident is the middle one of the {}.)\n",
            fmt_int(j.incidents as f64)
        );
    }

    fn footprint_md(&self, o: &mut String) {
        if !self.sections.iter().any(|s| s == "footprint") {
            return;
        }
        let _ = writeln!(o, "## 5. Footprint\n");
        self.errors_of("footprint", o);
        let Some(f) = &self.footprint else { return };
        let rss: Vec<f64> = f.idle_rss.iter().map(|x| *x as f64).collect();
        let hwm: Vec<f64> = f.idle_hwm.iter().map(|x| *x as f64).collect();
        let _ = writeln!(
            o,
            "`orchestrator serve` with the shipped sandbox playbook (watch loop on, 1 s interval) against a live sandbox. \
             Start-up = spawn → its `{{\"listening\": ...}}` line on stdout (opening or creating the journal, migrations, \
             resuming open incidents, binding). Idle RSS = `VmRSS` {} s after start-up, no incidents. {} runs each.\n",
            footprint::IDLE_AFTER.as_secs(),
            f.startup_fresh_ms.len()
        );
        let _ = writeln!(o, "| | median | worst |\n| --- | ---: | ---: |");
        let _ = writeln!(o, "| start-up, new journal | {} | {} |", fmt_ms(median(&f.startup_fresh_ms)), fmt_ms(max(&f.startup_fresh_ms)));
        if !f.startup_big_ms.is_empty() {
            let _ = writeln!(
                o,
                "| start-up, the {}-incident journal of benchmark 4 | {} | {} |",
                fmt_int(f.big_incidents as f64),
                fmt_ms(median(&f.startup_big_ms)),
                fmt_ms(max(&f.startup_big_ms))
            );
        }
        let _ = writeln!(o, "| idle RSS (`VmRSS`) | {} | {} |", fmt_bytes(median(&rss) as u64), fmt_bytes(max(&rss) as u64));
        let _ = writeln!(o, "| peak RSS so far (`VmHWM`) | {} | {} |", fmt_bytes(median(&hwm) as u64), fmt_bytes(max(&hwm) as u64));
        let _ = writeln!(o, "\n| binary | size |\n| --- | ---: |");
        for (p, b) in &f.binaries {
            let name = std::path::Path::new(p).file_name().map(|n| n.to_string_lossy().into_owned()).unwrap_or_default();
            let _ = writeln!(
                o,
                "| `{}/{name}` (as `cargo build --release` leaves it, symbols not stripped) | {} |",
                self.bin_label.trim_end_matches("/orchestrator"),
                fmt_bytes(*b)
            );
        }
        let _ = writeln!(o);
    }
}

/// Whether the orchestrator's flush with the playbook defaults meets the aim, and why.
pub fn flush_verdict(f: &flush::Results) -> (String, String) {
    let script = f.rows.iter().find(|r| r.batch.is_none());
    let default = f.rows.iter().find(|r| r.batch == Some(500) && r.patterns.len() == 1);
    let (Some(s), Some(d)) = (script, default) else { return ("not measured".into(), String::new()) };
    let (sk, dk) = (s.keys_per_s(), d.keys_per_s());
    let (dw, sw) = (max(&d.ping_worst_ms), max(&s.ping_worst_ms));
    let ratio = dk / sk;
    let met = ratio >= 0.8 && dw < 10.0;
    let verdict = if met {
        format!("**met** with the playbook defaults (batch 500): {ratio:.2}× the script's keys/s with the worst PING at {} (the script's worst PING: {}).", fmt_ms(dw), fmt_ms(sw))
    } else {
        let mut why = vec![];
        if ratio < 0.8 {
            why.push(format!(
                "{ratio:.2}× the script's keys/s, {:.0} % short of 0.8× (it would need {} keys/s, {:.0} % more)",
                (0.8 - ratio) / 0.8 * 100.0,
                fmt_int(0.8 * sk),
                (0.8 * sk / dk - 1.0) * 100.0
            ));
        } else {
            why.push(format!("{ratio:.2}× the script's keys/s (enough)"));
        }
        if dw >= 10.0 {
            why.push(format!("worst PING {} (≥ 10 ms)", fmt_ms(dw)));
        } else {
            why.push(format!("but the worst PING stays at {} (the script's: {})", fmt_ms(dw), fmt_ms(sw)));
        }
        format!("**not met** with the playbook defaults (batch 500): {}.", why.join("; "))
    };
    let ours: Vec<&flush::Row> = f.rows.iter().filter(|r| r.method.starts_with("orchestrator") && r.patterns.len() == 1).collect();
    let meeting: Vec<String> = ours
        .iter()
        .filter(|r| r.keys_per_s() / sk >= 0.8 && max(&r.ping_worst_ms) < 10.0)
        .map(|r| format!("batch {}", r.batch.unwrap_or(0)))
        .collect();
    let mut detail = String::new();
    if !met {
        if meeting.is_empty() {
            let _ = write!(
                detail,
                "No batch size measured ({}) meets both halves of the aim. ",
                ours.iter().map(|r| r.batch.unwrap_or(0).to_string()).collect::<Vec<_>>().join(", ")
            );
        } else {
            let _ = write!(detail, "A larger batch meets it: {}. ", meeting.join(", "));
        }
    }
    let (scpu, dcpu) = (median(&s.redis_cpu_ms), median(&d.redis_cpu_ms));
    let ceiling = scpu / dcpu;
    let busy = dcpu / median(&d.duration_ms);
    let biggest = ours.iter().max_by_key(|r| r.batch.unwrap_or(0));
    let big_batch = biggest.and_then(|r| r.batch).unwrap_or(0);
    let big_worst = biggest.map(|r| fmt_ms(max(&r.ping_worst_ms))).unwrap_or_default();
    let _ = write!(
        detail,
        "**Why.** The script is one command: Redis serves nobody else until it ends, so its worst PING is its whole \
         duration ({}), and its keys/s is Redis deleting at full speed. The flush runs SCAN + UNLINK as many small \
         commands that other clients' commands slip between (worst PING {}). It pays for that twice. (1) Redis's own \
         work: Redis used {} of CPU for the script and {} for the flush at batch 500 ({:.2}×): walking the keyspace \
         with a SCAN cursor (Redis 7.0's SCAN copies every key it visits into a list before filtering by the pattern; \
         KEYS matches in place) and running a script per batch costs more than one KEYS + DEL, so even a client that \
         cost nothing would top out near {:.2}× the script's keys/s on this machine. (2) Waiting: Redis was busy only \
         {:.0} % of the flush's wall time; the rest is the sequential cursor chain (each step waits for the previous \
         reply) and the client's own CPU on a 2-core machine it shares with Redis. ",
        fmt_ms(max(&s.duration_ms)),
        fmt_ms(dw),
        fmt_ms(scpu),
        fmt_ms(dcpu),
        dcpu / scpu,
        ceiling,
        busy * 100.0,
    );
    let _ = write!(
        detail,
        "Larger batches move keys/s only from {} to {} (batch 500 → {big_batch}) while the worst PING grows \
         ({big_worst} at batch {big_batch}), so a larger batch is not the fix{}. ",
        fmt_int(d.keys_per_s()),
        fmt_int(biggest.map(|r| r.keys_per_s()).unwrap_or(f64::NAN)),
        if ceiling < 0.8 {
            ": on this data Redis's own extra work alone rules out 0.8×"
        } else {
            "; what could close the gap is overlapping the next SCAN with the current one's UNLINK and decode (the client pipelining deeper), not bigger commands"
        }
    );
    let _ = write!(
        detail,
        "The sandbox playbook's second pattern (`idempotent:*`) costs a second full SCAN of the keyspace, hence its slower row."
    );
    (verdict, detail)
}

impl Report {
    fn bullmq_md(&self, o: &mut String) {
        if !self.sections.iter().any(|s| s == "bullmq") {
            return;
        }
        let _ = writeln!(o, "## 7. Failover on the real BullMQ service, beside the same service on ioredis's own Sentinel support\n");
        self.errors_of("bullmq", o);
        let Some(r) = &self.bullmq else { return };
        let vi = r.verify_interval_ms;
        let _ = writeln!(
            o,
            "**What runs.** Two detection budgets D, {} interleaved pairs each (an orchestrator run and a Sentinel run, \
             alternating which goes first), every run on fresh processes. Both sides run the same Node 20 BullMQ + ioredis \
             service (`bullmq-service/`, 2 workers per queue, {} ms jobs) under the same client, and the harness SIGKILLs \
             the Redis the service is using.\n",
            r.pairs, r.job_ms
        );
        let _ = writeln!(
            o,
            "- **Orchestrator:** the sandbox's Render-compatible platform hosts the service (a deploy is 2 steps × {} ms = \
             0.3 s, then the platform SIGTERMs the old Node process and starts a new one on the same port; the deploy is \
             `live` once the new process answers liveness); primary and backup `redis-server`s (the backup holds 1,100 \
             stale keys to flush); the real `orchestrator serve` (`{}`) detecting the kill with its watch loop, \
             `playbooks/sandbox.yaml` as shipped except `watch.interval`, `watch.ping_fail_for` and \
             `thresholds.confirm_window` per D (`confirm_attempts 2`, `verify_interval` {}, `deploy_poll 100ms`, the full \
             recovery checklist with its synthetic job).\n\
             - **Sentinel:** a master, one replica (`--replicaof`), three sentinels (`redis-server --sentinel`), quorum 2, \
             `down-after-milliseconds` = D, `failover-timeout {}`, `parallel-syncs 1`, killed once every sentinel sees the \
             replica and the two others. The service runs with `REDIS_SENTINELS` (the three) and `REDIS_SENTINEL_NAME`: \
             every connection (health, queues, BullMQ's worker connections) is ioredis `{{ sentinels, name }}` with \
             ioredis's and BullMQ's default reconnect strategies (ioredis: 50 ms doubling up to 5 s, plus jitter; BullMQ's \
             workers: at least 1 s; `failoverDetector` off, as by default). No redeploy: the same process reconnects.\n\
             - **The client, both sides:** `POST /api/v1/triggers/bench-…?queue=default` every {} ms (each on its own task, \
             so a hanging request never slows the stream), `GET /api/v1/jobs/default/{{id}}` every {} ms for each accepted \
             job not yet completed or failed, `GET /api/v1/health` every 20 ms.\n",
            bullmq::DEPLOY_STEPS_MS,
            self.bin_label,
            fmt_ms0(vi),
            bullmq::FAILOVER_TIMEOUT_MS,
            bullmq::SUBMIT_EVERY_MS,
            bullmq::POLL_EVERY_MS
        );
        let _ = writeln!(
            o,
            "**Definitions (the same for both).** *kill → first job completed again*: the service's own `finishedOn` \
             (same machine clock) of the earliest-finishing job **submitted after the kill** that completes, minus the \
             kill; jobs submitted before the kill do not count. *kill → health up*: the first 200 from `/api/v1/health` \
             after it answered otherwise. *Jobs lost*: jobs the trigger accepted (201) that never complete: gone (the \
             Redis the service ends on answers `unknown` for the id, or holds another job under it, for {} s: the job died \
             with the killed Redis, which stays dead), failed, or still pending {} s after the run's end. \
             *Orchestrator overhead*: kill → Recovered (the journal's last transition) minus the waits the playbook and \
             the platform configure: `ping_fail_for` + one full `watch.interval` + `confirm_window` + the platform's \
             deploy as measured (the deploy's `createdAt` → `finishedAt`, i.e. created → live) + `verify_interval` × \
             (verify attempts − 1), as the issue defines it. A second, tighter figure subtracts the sampling wait \
             as it happened (kill → the watch loop's first failing probe, from `serve`'s `/metrics`) instead of a full \
             `watch.interval`, so a late watch round counts as the orchestrator's. Aim: overhead < {:.0} ms.\n",
            bullmq::ABSENT_FOR.as_secs(),
            bullmq::LOST_DEADLINE.as_secs(),
            bullmq::AIM_OVERHEAD_MS
        );
        let load = self.machine.rows.iter().find(|(k, _)| k.starts_with("load")).map(|(_, v)| v.clone()).unwrap_or_default();
        let _ = writeln!(
            o,
            "**Load caveat.** 2 shared cores: Node, three Redis servers or three sentinels, `serve` and the harness all \
             compete for them, and other builds ran beside this one (load average at the start of the run: {load}). \
             Medians of {} runs are indicative; a spread of a few hundred ms between runs is noise here.\n",
            r.pairs
        );
        let mut first_job_verdicts = vec![];
        let mut overhead_verdicts: Vec<String> = vec![];
        for b in &r.budgets {
            let bud = b.budget;
            let _ = writeln!(
                o,
                "### {} (orchestrator: `ping_fail_for {}ms` + `confirm_window {}ms`, `watch.interval {}ms`; Sentinel: `down-after-milliseconds {}`)\n",
                bud.label(),
                bud.ping_fail_for_ms,
                bud.confirm_window_ms,
                bud.interval_ms,
                bud.d_ms
            );
            for e in &b.errors {
                let _ = writeln!(o, "A run failed: `{}`\n", e.replace('`', "'"));
            }
            let (no, ns) = (b.orch.len(), b.sentinel.len());
            let _ = writeln!(
                o,
                "| | orchestrator median | orchestrator worst | Sentinel median | Sentinel worst |\n| --- | ---: | ---: | ---: | ---: |"
            );
            let row = |o: &mut String,
                       name: &str,
                       fo: &dyn Fn(&bullmq::OrchRun) -> Option<f64>,
                       fs: &dyn Fn(&bullmq::SentinelRun) -> Option<f64>,
                       f: fn(f64) -> String| {
                let _ = writeln!(
                    o,
                    "| {name} | {} | {} | {} | {} |",
                    f(bullmq::med(&b.orch, fo)),
                    f(bullmq::worst(&b.orch, fo)),
                    f(bullmq::med(&b.sentinel, fs)),
                    f(bullmq::worst(&b.sentinel, fs))
                );
            };
            row(o, "**kill → first job completed again**", &|r| r.seen.first_job_ms, &|r| r.seen.first_job_ms, fmt_ms0);
            row(o, "kill → `GET /api/v1/health` up", &|r| r.seen.health_up_ms, &|r| r.seen.health_up_ms, fmt_ms0);
            row(o, "jobs lost per run", &|r| Some(r.seen.lost() as f64), &|r| Some(r.seen.lost() as f64), |v| {
                if v.is_nan() {
                    "–".into()
                } else {
                    format!("{v:.0}")
                }
            });
            row(o, "kill → Recovered (orchestrator) / a sentinel names the new master", &|r| Some(r.total_ms), &|r| r.switch_ms, fmt_ms0);
            let lost = |v: Vec<(usize, usize, usize, usize, usize)>| {
                v.iter()
                    .map(|(l, a, g, f, p)| {
                        format!("{l} of {a}{}", if *l > 0 { format!(" ({g} gone, {f} failed, {p} pending)") } else { String::new() })
                    })
                    .collect::<Vec<_>>()
                    .join(", ")
            };
            let _ = writeln!(
                o,
                "\nJobs lost of accepted, per run: orchestrator {}; Sentinel {}. Runs: orchestrator {no}, Sentinel {ns}.\n",
                lost(
                    b.orch
                        .iter()
                        .map(|r| (r.seen.lost(), r.seen.accepted, r.seen.lost_absent, r.seen.lost_failed, r.seen.lost_pending))
                        .collect()
                ),
                lost(
                    b.sentinel
                        .iter()
                        .map(|r| (r.seen.lost(), r.seen.accepted, r.seen.lost_absent, r.seen.lost_failed, r.seen.lost_pending))
                        .collect()
                )
            );
            let (fo, fs) = (bullmq::med(&b.orch, |r| r.seen.first_job_ms), bullmq::med(&b.sentinel, |r| r.seen.first_job_ms));
            let verdict = |xs: &[f64]| {
                if xs.is_empty() {
                    "not measured"
                } else if max(xs) < bullmq::AIM_OVERHEAD_MS {
                    "**met** in every run"
                } else if median(xs) < bullmq::AIM_OVERHEAD_MS {
                    "**met at the median**, not in the worst run"
                } else {
                    "**not met**"
                }
            };
            let over_b: Vec<f64> = b.orch.iter().map(|r| r.overhead_ms).collect();
            let ex_b: Vec<f64> = b.orch.iter().map(|r| r.overhead_exact_ms).collect();
            overhead_verdicts.push(format!(
                "{}: a full `watch.interval` subtracted, median {}, worst {} ({}); the sampling wait as measured, median {}, worst {} ({})",
                bud.label(),
                fmt_ms0(median(&over_b)),
                fmt_ms0(max(&over_b)),
                verdict(&over_b),
                fmt_ms0(median(&ex_b)),
                fmt_ms0(max(&ex_b)),
                verdict(&ex_b)
            ));
            first_job_verdicts.push(format!(
                "{}: orchestrator {} vs Sentinel {} ({})",
                bud.label(),
                fmt_ms0(fo),
                fmt_ms0(fs),
                if fo <= fs { format!("at or below, by {}", fmt_ms0(fs - fo)) } else { format!("**above**, by {}", fmt_ms0(fo - fs)) }
            ));

            // The orchestrator's time per step and its own share.
            let sub = |r: &bullmq::OrchRun, i: usize| -> f64 {
                match i {
                    0 => (bud.ping_fail_for_ms + bud.interval_ms) as f64,
                    1 => bud.confirm_window_ms as f64,
                    5 => r.deploy_live_ms,
                    6 => r.verify_waits_ms,
                    _ => 0.0,
                }
            };
            let waits_desc = [
                format!("`ping_fail_for` {} ms + `watch.interval` {} ms", bud.ping_fail_for_ms, bud.interval_ms),
                format!("`confirm_window` {} ms", bud.confirm_window_ms),
                "–".into(),
                "–".into(),
                "–".into(),
                "the platform's deploy, created → live (measured)".into(),
                format!("`verify_interval` {} × (attempts − 1)", fmt_ms0(vi)),
            ];
            let names = ["detection (kill → incident opened)", "confirmation", "assessment", "switch", "flush", "deploy", "verification"];
            let _ = writeln!(o, "Orchestrator, per step:\n\n| step | median | worst | configured wait subtracted | its median | own time median | own time worst |\n| --- | ---: | ---: | --- | ---: | ---: | ---: |");
            let mut own_med = vec![];
            for (i, name) in names.iter().enumerate() {
                let xs: Vec<f64> = b.orch.iter().map(|r| r.steps[i]).collect();
                let ws: Vec<f64> = b.orch.iter().map(|r| sub(r, i)).collect();
                let own: Vec<f64> = b.orch.iter().map(|r| r.steps[i] - sub(r, i)).collect();
                own_med.push((bullmq::step_names()[i], median(&own)));
                let _ = writeln!(
                    o,
                    "| {name} | {} | {} | {} | {} | {} | {} |",
                    fmt_ms0(median(&xs)),
                    fmt_ms0(max(&xs)),
                    waits_desc[i],
                    fmt_ms0(median(&ws)),
                    fmt_ms0(median(&own)),
                    fmt_ms0(max(&own))
                );
            }
            let tot: Vec<f64> = b.orch.iter().map(|r| r.total_ms).collect();
            let ws: Vec<f64> = b.orch.iter().map(|r| r.waits_ms).collect();
            let over: Vec<f64> = b.orch.iter().map(|r| r.overhead_ms).collect();
            let _ = writeln!(
                o,
                "| **kill → Recovered** | **{}** | **{}** | all of the above | {} | **{}** | **{}** |\n",
                fmt_ms0(median(&tot)),
                fmt_ms0(max(&tot)),
                fmt_ms0(median(&ws)),
                fmt_ms0(median(&over)),
                fmt_ms0(max(&over))
            );
            let ex: Vec<f64> = b.orch.iter().map(|r| r.overhead_exact_ms).collect();
            let ff: Vec<f64> = b.orch.iter().filter_map(|r| r.first_fail_ms).collect();
            let _ = writeln!(
                o,
                "With the sampling wait as it happened (kill → the watch loop's first failing probe, read from `serve`'s \
                 `/metrics` every 5 ms: median {}, worst {}) subtracted instead of a full `watch.interval`, the own time is \
                 **median {}, worst {}**.\n",
                fmt_ms0(median(&ff)),
                fmt_ms0(max(&ff)),
                fmt_ms0(median(&ex)),
                fmt_ms0(max(&ex))
            );
            let dl: Vec<f64> = b.orch.iter().map(|r| r.deploy_live_ms).collect();
            let restart: Vec<f64> = dl.iter().map(|d| d - 2.0 * bullmq::DEPLOY_STEPS_MS as f64).collect();
            let attempts: Vec<String> = b.orch.iter().map(|r| r.verify_attempts.to_string()).collect();
            let deploys: Vec<String> = b.orch.iter().map(|r| r.deploys.to_string()).collect();
            let outcomes: Vec<&str> = b.orch.iter().map(|r| r.outcome.as_str()).collect();
            let _ = writeln!(
                o,
                "The deploy, created → live: median {} = the platform's 2 × {} ms steps + {} (median) restarting the Node \
                 process (SIGTERM to the old one, whose graceful close against a dead Redis the service bounds at 1.5 s, \
                 then Node + BullMQ starting until liveness); the platform's time, subtracted. Deploys per run: {}; verify \
                 attempts per run: {}; outcomes: {}.\n",
                fmt_ms0(median(&dl)),
                bullmq::DEPLOY_STEPS_MS,
                fmt_ms0(median(&restart)),
                deploys.join(", "),
                attempts.join(", "),
                outcomes.join(", ")
            );
            let mut failed: Vec<String> = b.orch.iter().flat_map(|r| r.first_verify_failed.iter().cloned()).collect();
            failed.dedup();
            if !failed.is_empty() {
                let _ = writeln!(
                    o,
                    "Checks that failed in a first verify attempt (why a second one, {} later, was needed): {}.\n",
                    fmt_ms0(vi),
                    failed.iter().map(|f| format!("`{}`", f.replace('`', "'"))).collect::<Vec<_>>().join("; ")
                );
            }
            let alerts: Vec<String> =
                b.orch.iter().map(|r| format!("`{}`", r.alert.split(':').next().unwrap_or("").replace('`', "'"))).collect();
            let first_fail: Vec<f64> = b.orch.iter().filter_map(|r| r.first_fail_ms).collect();
            let _ = writeln!(
                o,
                "Where the orchestrator's own time goes. *Detection*: the watch loop raised its alert with {} (journaled alerts, per run); kill → the first failing probe took {} (median, measured; at most one `watch.interval`, which the table subtracts in full, so this step's own time there can be negative). The bound is `now − first failure ≥ ping_fail_for` on the probes' completion times: when a later probe answers faster than the first failing one, the sample that should close the window lands a hair short of it and the alert waits one more round (up to one more `watch.interval`). *Deploy*: beyond the platform's created → live, the env-var PUT, the deploy POST and `deploy_poll` granularity (100 ms). *Verification*: the synthetic job's {} ms of work, polled by the orchestrator every 100 ms, plus the checklist's HTTP calls and latency PINGs.\n",
                alerts.join(", "),
                fmt_ms0(median(&first_fail)),
                r.job_ms
            );
            let late = b
                .orch
                .iter()
                .filter(|r| failing_for_ms(&r.alert).is_some_and(|f| f >= bud.ping_fail_for_ms as f64 + bud.interval_ms as f64 / 2.0))
                .count();
            if late > 0 {
                let _ = writeln!(
                    o,
                    "**In {late} of {} runs the watch alert came one round late** (the pings had failed for one more \
                     `watch.interval` than `ping_fail_for` {} ms): that extra round of {} ms is inside detection and, beyond \
                     the one interval subtracted, the largest part of this budget's overhead.\n",
                    b.orch.len(),
                    bud.ping_fail_for_ms,
                    bud.interval_ms
                );
            }
            own_med.sort_by(|a, b| b.1.partial_cmp(&a.1).unwrap_or(std::cmp::Ordering::Equal));
            let _ = writeln!(
                o,
                "Own time by step, largest first (median): {}.\n",
                own_med.iter().map(|(n, v)| format!("{n} {}", fmt_ms0(*v))).collect::<Vec<_>>().join(", ")
            );
        }
        let _ = writeln!(
            o,
            "### Aim\n\nThe orchestrator's own time beyond the configured waits, aim < {:.0} ms: {}. Kill → first job \
             completed again, medians (aim: at or below Sentinel's): {}.\n",
            bullmq::AIM_OVERHEAD_MS,
            overhead_verdicts.join("; "),
            first_job_verdicts.join("; ")
        );
        let switch: Vec<String> =
            r.budgets.iter().map(|b| format!("{} at {}", b.budget.label(), fmt_ms0(bullmq::med(&b.sentinel, |x| x.switch_ms)))).collect();
        let lost_o: Vec<String> = r.budgets.iter().flat_map(|b| b.orch.iter().map(|x| x.seen.lost().to_string())).collect();
        let lost_s: Vec<String> = r.budgets.iter().flat_map(|b| b.sentinel.iter().map(|x| x.seen.lost().to_string())).collect();
        let _ = writeln!(
            o,
            "**Reading it.** Sentinel names the new master early (medians: {}), but the service only follows when its \
             connections reconnect: ioredis's backoff (health) and BullMQ's worker backoff (at least 1 s, so the first \
             job trails health). The orchestrator's path is longer on paper (a redeploy whose Node restart, most of it \
             the old process's bounded graceful close against a dead Redis, is inside the measured created → live) yet \
             a fresh process connects at once. Its price is the jobs the killed primary had accepted and not yet \
             finished: the backup is a separate Redis, so they are gone (per run, orchestrator: {}; Sentinel, whose \
             replica had them and whose workers finished them after the switch: {}).\n",
            switch.join(", "),
            lost_o.join(", "),
            lost_s.join(", ")
        );
        let _ = writeln!(o, "<details><summary>Every run</summary>\n");
        let _ = writeln!(
            o,
            "| D | side | pair | first job | health up | lost / accepted (after the kill) | kill → Recovered / new master named | first failing probe | {} | deploy created→live | verify attempts | overhead | overhead, sampling as measured |\n| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |{} ---: | ---: | ---: | ---: |",
            STEPS.join(" | "),
            " ---: |".repeat(STEPS.len())
        );
        let f0 = |v: Option<f64>| v.map(|x| format!("{x:.0}")).unwrap_or("–".into());
        for b in &r.budgets {
            for (i, x) in b.orch.iter().enumerate() {
                let steps: Vec<String> = x.steps.iter().map(|s| format!("{s:.0}")).collect();
                let _ = writeln!(
                    o,
                    "| {} | orchestrator | {} | {} | {} | {} / {} ({}) | {:.0} | {} | {} | {:.0} | {} | {:.0} | {:.0} |",
                    b.budget.label(),
                    i + 1,
                    f0(x.seen.first_job_ms),
                    f0(x.seen.health_up_ms),
                    x.seen.lost(),
                    x.seen.accepted,
                    x.seen.accepted_after_kill,
                    x.total_ms,
                    f0(x.first_fail_ms),
                    steps.join(" | "),
                    x.deploy_live_ms,
                    x.verify_attempts,
                    x.overhead_ms,
                    x.overhead_exact_ms
                );
            }
            for (i, x) in b.sentinel.iter().enumerate() {
                let _ = writeln!(
                    o,
                    "| {} | Sentinel | {} | {} | {} | {} / {} ({}) | {} | – |{} – | – | – | – |",
                    b.budget.label(),
                    i + 1,
                    f0(x.seen.first_job_ms),
                    f0(x.seen.health_up_ms),
                    x.seen.lost(),
                    x.seen.accepted,
                    x.seen.accepted_after_kill,
                    f0(x.switch_ms),
                    " – |".repeat(STEPS.len())
                );
            }
        }
        let _ = writeln!(o, "\nTimes in ms from the kill. Pairs are numbered in run order within each D.\n\n</details>\n");
    }
}

impl Report {
    fn fleet_md(&self, o: &mut String) {
        if !self.sections.iter().any(|s| s == "fleet") {
            return;
        }
        let _ = writeln!(o, "## 8. Fleet: one `serve` watching many targets\n");
        self.errors_of("fleet", o);
        if let Some(f) = &self.fleet {
            crate::fleet_md::write(f, o);
        }
    }
}

/// "Redis ping failing for 2.0s: ..." → 2000.
fn failing_for_ms(summary: &str) -> Option<f64> {
    let rest = summary.split("failing for ").nth(1)?;
    let d = rest.split(':').next()?.trim();
    if let Some(v) = d.strip_suffix("ms") {
        v.parse().ok()
    } else if let Some(v) = d.strip_suffix('s') {
        v.parse::<f64>().ok().map(|s| s * 1000.0)
    } else {
        None
    }
}

impl Report {
    fn leader_md(&self, o: &mut String) {
        if !self.sections.iter().any(|s| s == "leader") {
            return;
        }
        let _ = writeln!(o, "## 9. Several instances on PostgreSQL\n");
        match &self.leader {
            Some(l) => crate::leader_md::write(l, o),
            None => self.errors_of("leader", o),
        }
    }
}

/// The number of a numbered section heading (`## 9. ...` → "9").
fn section_number(line: &str) -> Option<&str> {
    let rest = line.strip_prefix("## ")?;
    let (n, _) = rest.split_once('.')?;
    (!n.is_empty() && n.chars().all(|c| c.is_ascii_digit())).then_some(n)
}

/// A partial run onto an existing BENCHMARKS.md: each numbered section of `new`
/// (from its `## N.` heading to the next `## ` heading, an HTML comment at the start of
/// a line, or the end) replaces the section with the same number in `old`, or is
/// appended when `old` has none. Everything else in `old` (the machine, other sections,
/// hand-written notes, the console section) is kept as it was.
pub fn splice(old: &str, new: &str) -> String {
    fn blocks(text: &str) -> Vec<(String, usize, usize)> {
        let lines: Vec<&str> = text.split_inclusive('\n').collect();
        let mut offs = Vec::with_capacity(lines.len() + 1);
        let mut at = 0;
        for l in &lines {
            offs.push(at);
            at += l.len();
        }
        offs.push(at);
        let mut out = Vec::new();
        let mut i = 0;
        while i < lines.len() {
            if let Some(n) = section_number(lines[i]) {
                let mut k = i + 1;
                while k < lines.len() && !lines[k].starts_with("## ") && !lines[k].starts_with("<!--") {
                    k += 1;
                }
                out.push((n.to_string(), offs[i], offs[k]));
                i = k;
            } else {
                i += 1;
            }
        }
        out
    }
    let mut text = old.to_string();
    for (n, start, end) in blocks(new) {
        let mut section = new[start..end].trim_end().to_string();
        section.push_str("\n\n");
        match blocks(&text).into_iter().find(|(m, _, _)| *m == n) {
            Some((_, s, e)) => text.replace_range(s..e, &section),
            None => {
                let keep = text.trim_end().len();
                text.truncate(keep);
                text.push_str("\n\n");
                text.push_str(&section);
            }
        }
    }
    let keep = text.trim_end().len();
    text.truncate(keep);
    text.push('\n');
    text
}

#[cfg(test)]
mod tests {
    use super::splice;

    #[test]
    fn a_partial_run_replaces_its_sections_and_keeps_the_rest() {
        let old = "# B\n\n## Machine\nold\n\n## 1. A\na1\n\n<!-- note -->\n## 2. B\nb1\n";
        let new = "# B\n\n## Machine\nnew\n\n## 2. B\nb2\n\n## 9. N\nn2\n";
        let got = splice(old, new);
        assert_eq!(got, "# B\n\n## Machine\nold\n\n## 1. A\na1\n\n<!-- note -->\n## 2. B\nb2\n\n## 9. N\nn2\n");
    }
}
