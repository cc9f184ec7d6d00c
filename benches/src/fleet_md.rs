//! Benchmark 8's section of BENCHMARKS.md: the method, the layout, every run, and the
//! aims each run met or missed.

use crate::fleet::{self, Results, Run};
use crate::util::*;
use std::fmt::Write;

fn met(ok: bool) -> &'static str {
    if ok {
        "met"
    } else {
        "**not met**"
    }
}

fn detects(r: &Run) -> Vec<f64> {
    r.kills.iter().map(|k| k.detect_ms).collect()
}

pub fn write(f: &Results, o: &mut String) {
    let budget = (fleet::PING_FAIL_FOR_MS + fleet::INTERVAL_MS) as f64;
    let _ = writeln!(
        o,
        "**What runs.** One release `orchestrator serve --playbooks DIR` (watch loop on, `ORCH_LOG=warn`) with one playbook per \
         target, each `playbooks/sandbox.yaml` with its own `name` and endpoints, `watch.interval: {}ms`, `watch.ping_fail_for: {}ms`, \
         and `approvals.steps: [switch]` (an incident stops at the switch, waiting for an approval nobody gives, so it does no heavy \
         work after opening). Each target's watch round connects afresh, PINGs and writes one expiring key on its active Redis; \
         its queue-metrics reader calls the service once per interval; rounds are spread over the interval by a hash of the name.\n",
        fleet::INTERVAL_MS,
        fleet::PING_FAIL_FOR_MS
    );
    let _ = writeln!(
        o,
        "**Layout.** N targets = V victims (V = the repetitions) + N − V shared targets. The shared targets' primaries are the \
         logical DBs of up to {} `redis-server`s started with `--databases {}` (target i on server i mod S, DB i div S, as \
         `redis://127.0.0.1:PORT/DB`); each one's backup is the same DB on the next server (never written: nothing fails over). \
         Each victim has a `redis-server` of its own as primary (so killing it affects only that target) and a DB of a shared \
         server as backup. Service and platform of every target are one stub HTTP/1.1 server in the harness that answers fixed \
         JSON (queue metrics: connected and empty; health: Redis down; logs: one Redis error; 404 elsewhere) and reaches no \
         Redis, so the service costs next to nothing. Every process binds 127.0.0.1 on a free port.\n",
        fleet::MAX_SHARED_SERVERS,
        fleet::DBS_PER_SERVER
    );
    let _ = writeln!(
        o,
        "**Method.** After `serve` prints its listening line the harness waits {} s (warm-up), then measures a steady window \
         (the wall time in the table): CPU = the change of `serve`'s utime + stime in `/proc/PID/stat` over the window, as % of \
         one core (likewise every shared `redis-server` together and the harness itself, which runs the stub); RSS = `VmRSS` at \
         the end of the window. Lateness = how late each watch round started against its tick, from `GET /metrics` \
         (`orchestrator_watch_lateness_seconds`, over every target): the change of every bucket between two scrapes that bound \
         the window. Its buckets are 1, 5, 10, 25, 50, 100, 250, 500, 1000 ms, so p50/p99 are **interpolated linearly inside \
         the bucket the rank falls in** (from the bound below it; a p50 of 0.5 ms means \"half the rounds in the first bucket, \
         under 1 ms\", not a measurement of 0.5 ms); the mean is `_sum`/`_count`. The probe latency is read the same way from \
         `orchestrator_probe_latency_seconds` summed over every target. Then each victim's `redis-server` is SIGKILLed in turn \
         (1.5 s plus a random 0 to 1 interval after the previous incident opened: each target's rounds sit at a phase fixed by its name, so only a random delay puts the kills at random points of the victims' rounds): \
         detection = kill → the incident's `opened_at` in the journal (`trigger_source = 'watch'`), both read from the system \
         clock (the journal stores milliseconds). A round sees the kill at its next tick (0 to one interval later) and the \
         incident opens when the failures span `ping_fail_for`, so detection falls in [{} ms, {} ms] plus the orchestrator's \
         own delay.\n",
        fleet::WARMUP.as_secs(),
        fleet::PING_FAIL_FOR_MS,
        fleet::PING_FAIL_FOR_MS + fleet::INTERVAL_MS
    );
    for (n, e) in &f.failed {
        let _ = writeln!(o, "**{} targets could not run:** `{}`\n", fmt_int(*n as f64), e.replace('`', "'"));
    }

    let _ = writeln!(o, "### Steady state\n");
    let _ = writeln!(
        o,
        "| targets | shared redis-servers + own | start-up (spawn → listening) | window | `serve` CPU (% of one core) | RSS | peak RSS | threads | rounds in the window (per s) | lateness p50 | p99 | mean | rounds ≤ 1 ms late | probe PING p50 / p99 | probe failures | stub requests/s | redis-servers CPU | harness CPU |\n\
         | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |"
    );
    for r in &f.runs {
        let _ = writeln!(
            o,
            "| {} | {} + {} | {} | {:.1} s | {:.1} % | {} | {} | {} | {} ({:.0}) | {} | {} | {} | {:.1} % | {} / {} | {} | {:.0} | {:.1} % | {:.1} % |",
            fmt_int(r.targets as f64),
            r.shared_servers,
            r.victims,
            fmt_ms(r.startup_ms),
            r.window_s,
            r.cpu_pct,
            fmt_bytes(r.rss),
            fmt_bytes(r.hwm),
            r.threads,
            fmt_int(r.rounds as f64),
            r.rounds as f64 / r.window_s,
            fmt_ms(r.late_p50_ms),
            fmt_ms(r.late_p99_ms),
            fmt_ms(r.late_mean_ms),
            fleet::share_within(&r.late, 0.001) * 100.0,
            fmt_ms(r.probe_p50_ms),
            fmt_ms(r.probe_p99_ms),
            r.probe_failures,
            r.service_rps,
            r.redis_cpu_pct,
            r.harness_cpu_pct
        );
    }
    let _ = writeln!(o, "\nLateness buckets in the window (rounds that started at most this late; not cumulative):\n");
    let _ = writeln!(
        o,
        "| targets | ≤ 1 ms | 1–5 ms | 5–10 ms | 10–25 ms | 25–50 ms | 50–100 ms | 100–250 ms | 250–500 ms | 0.5–1 s | > 1 s |"
    );
    let _ = writeln!(o, "| ---: |{}", " ---: |".repeat(10));
    for r in &f.runs {
        let mut row = format!("| {} |", fmt_int(r.targets as f64));
        let mut below = 0;
        for (_, c) in &r.late {
            let _ = write!(row, " {} |", fmt_int((c - below) as f64));
            below = *c;
        }
        let _ = writeln!(o, "{row}");
    }

    let _ = writeln!(o, "\n### Kill → incident opened\n");
    let _ = writeln!(
        o,
        "| targets | victim | killed at (UTC) | incident opened_at | kill → opened | within `ping_fail_for` + `interval` ({budget:.0} ms) + 100 ms |\n| ---: | --- | --- | --- | ---: | --- |"
    );
    for r in &f.runs {
        for k in &r.kills {
            let _ = writeln!(
                o,
                "| {} | {} | {} | {} | {} | {} |",
                fmt_int(r.targets as f64),
                k.target,
                k.killed_at.get(11..23).unwrap_or(&k.killed_at),
                k.opened_at.get(11..23).unwrap_or(&k.opened_at),
                fmt_ms0(k.detect_ms),
                if k.detect_ms <= budget + fleet::AIM_DETECT_SLACK_MS { "yes" } else { "**no**" }
            );
        }
        let _ = writeln!(
            o,
            "| {} | **median / worst** | | | **{} / {}** | |",
            fmt_int(r.targets as f64),
            fmt_ms0(median(&detects(r))),
            fmt_ms0(max(&detects(r)))
        );
    }
    let _ = writeln!(
        o,
        "\nWhile the kills ran (the victims' incidents opening, confirming and waiting at the gate in the same process), round \
         lateness p99 was {}.\n",
        f.runs
            .iter()
            .map(|r| format!(
                "{} over {} rounds at {} targets",
                fmt_ms(r.kill_late_p99_ms),
                fmt_int(r.kill_rounds as f64),
                fmt_int(r.targets as f64)
            ))
            .collect::<Vec<_>>()
            .join("; ")
    );

    let _ = writeln!(o, "### Aims\n\n| targets | aim | measured | |\n| ---: | --- | ---: | --- |");
    for r in &f.runs {
        let n = fmt_int(r.targets as f64);
        let worst = max(&detects(r));
        let _ = writeln!(
            o,
            "| {n} | `serve` CPU under {:.0} % of one core | {:.1} % | {} |",
            fleet::AIM_CPU_PCT,
            r.cpu_pct,
            met(r.cpu_pct < fleet::AIM_CPU_PCT)
        );
        let _ = writeln!(
            o,
            "| {n} | round lateness p99 under {:.0} ms | {} | {} |",
            fleet::AIM_P99_LATE_MS,
            fmt_ms(r.late_p99_ms),
            met(r.late_p99_ms < fleet::AIM_P99_LATE_MS)
        );
        let _ = writeln!(
            o,
            "| {n} | … and while the kills' incidents opened | {} | {} |",
            fmt_ms(r.kill_late_p99_ms),
            met(r.kill_late_p99_ms < fleet::AIM_P99_LATE_MS)
        );
        let _ = writeln!(
            o,
            "| {n} | detection within `ping_fail_for` + `interval` + 100 ms = {:.0} ms, every kill | worst {} | {} |",
            budget + fleet::AIM_DETECT_SLACK_MS,
            fmt_ms0(worst),
            met(!r.kills.is_empty() && worst <= budget + fleet::AIM_DETECT_SLACK_MS)
        );
    }
    for r in &f.runs {
        if r.log_lines > 0 {
            let _ = writeln!(
                o,
                "\nAt {} targets `serve` logged {} WARN/ERROR line(s), e.g.: {}.",
                fmt_int(r.targets as f64),
                r.log_lines,
                r.log_sample.iter().map(|l| format!("`{}`", l.replace('`', "'"))).collect::<Vec<_>>().join("; ")
            );
        } else {
            let _ = writeln!(o, "\nAt {} targets `serve` logged no WARN/ERROR line.", fmt_int(r.targets as f64));
        }
    }
    let _ = writeln!(o);
}
