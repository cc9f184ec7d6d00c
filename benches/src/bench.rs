//! `make bench`: every benchmark of the orchestrator in one run, printing progress and
//! writing the numbers, with the machine they ran on, to BENCHMARKS.md.
//!
//! ```text
//! bench [--root DIR] [--out FILE] [--reps N] [--only failover,flush,storm,journal,footprint,hostile,bullmq,fleet,leader] [--quick]
//!       [--fleet-targets N,N...]
//! ```
//!
//! Benchmarks print numbers; none of them fails on speed. The process exits non-zero
//! only when a benchmark could not run at all (its error is in the report too).
//!
//! A partial run (`--only`, `--quick`) onto an existing `--out` file replaces only the
//! sections it ran (matched by their `## N.` heading; a new one is appended) and keeps
//! the rest of the file as it was; a full run writes the whole file.

mod bullmq;
mod failover;
mod fleet;
mod fleet_md;
mod flush;
mod footprint;
mod journal;
mod leader;
mod leader_md;
mod report;
mod resp;
mod storm;
mod util;

use anyhow::{bail, Context, Result};
use std::path::PathBuf;
use util::*;

pub const SECTIONS: &[&str] = &["failover", "flush", "storm", "journal", "footprint", "hostile", "bullmq", "fleet", "leader"];

struct Args {
    root: PathBuf,
    out: PathBuf,
    reps: usize,
    only: Vec<String>,
    quick: bool,
    /// Fleet sizes (targets watched by one `serve`), one row each.
    fleet_targets: Vec<usize>,
}

fn args() -> Result<Args> {
    let mut a = Args {
        root: PathBuf::from(concat!(env!("CARGO_MANIFEST_DIR"), "/..")),
        out: PathBuf::from("BENCHMARKS.md"),
        reps: 5,
        only: SECTIONS.iter().map(|s| s.to_string()).collect(),
        quick: false,
        fleet_targets: vec![fleet::DEFAULT_TARGETS],
    };
    let mut it = std::env::args().skip(1);
    while let Some(flag) = it.next() {
        let mut value = || it.next().with_context(|| format!("{flag} needs a value"));
        match flag.as_str() {
            "--root" => a.root = PathBuf::from(value()?),
            "--out" => a.out = PathBuf::from(value()?),
            "--reps" => a.reps = value()?.parse().context("--reps")?,
            "--only" => a.only = value()?.split(',').map(|s| s.trim().to_string()).collect(),
            "--quick" => a.quick = true,
            "--fleet-targets" => {
                a.fleet_targets = value()?.split(',').map(|s| s.trim().parse()).collect::<Result<_, _>>().context("--fleet-targets")?
            }
            "-h" | "--help" => {
                println!(
                    "bench [--root DIR] [--out FILE] [--reps N (default 5)] [--only {}] [--quick] [--fleet-targets N,N... (default {})]",
                    SECTIONS.join(","),
                    fleet::DEFAULT_TARGETS
                );
                std::process::exit(0);
            }
            other => bail!("unknown argument {other:?} (try --help)"),
        }
    }
    for s in &a.only {
        if !SECTIONS.contains(&s.as_str()) {
            bail!("unknown section {s:?}; sections: {}", SECTIONS.join(", "));
        }
    }
    a.root = a.root.canonicalize().with_context(|| format!("--root {}", a.root.display()))?;
    Ok(a)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> Result<()> {
    let a = args()?;
    let bin_dir = std::env::current_exe()?.parent().context("the bench binary's directory")?.to_path_buf();
    let ctx = Ctx { root: a.root.clone(), bin_dir, reps: a.reps.max(1), quick: a.quick, tmp: std::env::temp_dir() };
    if !ctx.orchestrator().exists() {
        bail!("{} not found: build the workspace first (cargo build --release --workspace)", ctx.orchestrator().display());
    }
    let started = std::time::Instant::now();
    let mut rep = report::Report::new(machine(&ctx.root), &a.only, ctx.reps, a.quick);
    let bin = ctx.orchestrator();
    rep.bin_label = bin.strip_prefix(&ctx.root).unwrap_or(&bin).display().to_string();
    progress(format!("benchmarks: {} with {} ({} repetitions)", a.only.join(", "), ctx.orchestrator().display(), ctx.reps));
    let want = |s: &str| a.only.iter().any(|o| o == s);

    let mut recorded = None;
    if want("failover") {
        match failover::run(&ctx).await {
            Ok(mut r) => {
                recorded = r.recorded.take();
                rep.failover = Some(r);
            }
            Err(e) => rep.error("failover", e),
        }
    }
    if want("flush") {
        match flush::run(&ctx).await {
            Ok(r) => rep.flush = Some(r),
            Err(e) => rep.error("flush", e),
        }
    }
    if want("storm") {
        match storm::run(&ctx).await {
            Ok(r) => rep.storm = Some(r),
            Err(e) => rep.error("storm", e),
        }
        progress("storm: a 1,000-alert body and a single alert together");
        match storm::mixed(&ctx).await {
            Ok(r) => {
                progress(format!("  single alert median {}, worst {}", fmt_ms(median(&r.single_ms)), fmt_ms(max(&r.single_ms))));
                rep.storm_mixed = Some(r)
            }
            Err(e) => rep.error("storm", e),
        }
    }
    if want("hostile") {
        progress("hostile: playbook check of the alias bomb");
        match storm::alias_bomb(&ctx) {
            Ok(r) => {
                progress(format!("  {} in {}, peak RSS {}", r.exit, fmt_ms(r.ms), fmt_bytes(r.max_rss)));
                rep.bomb = Some(r)
            }
            Err(e) => rep.error("hostile", e),
        }
    }
    let mut journal_results = None;
    if want("journal") {
        if recorded.is_none() {
            progress("journal: recording one real incident to replay");
            let one = Ctx { reps: 1, ..ctx.clone() };
            match failover::run_orchestrator_only(&one).await {
                Ok(r) => recorded = Some(r),
                Err(e) => rep.error("journal", e.context("recording an incident to replay")),
            }
        }
        if let Some(rec) = &recorded {
            match journal::run(&ctx, rec).await {
                Ok(r) => journal_results = Some(r),
                Err(e) => rep.error("journal", e),
            }
        }
    }
    if want("footprint") {
        let big = journal_results.as_ref().map(|j| (j.db.as_path(), j.incidents));
        match footprint::run(&ctx, big).await {
            Ok(r) => rep.footprint = Some(r),
            Err(e) => rep.error("footprint", e),
        }
    }
    if want("bullmq") {
        match bullmq::run(&ctx).await {
            Ok(r) => rep.bullmq = Some(r),
            Err(e) => rep.error("bullmq", e),
        }
    }
    if want("fleet") {
        match fleet::run(&ctx, &a.fleet_targets).await {
            Ok(r) => rep.fleet = Some(r),
            Err(e) => rep.error("fleet", e),
        }
    }
    if want("leader") {
        match leader::run(&ctx, recorded.as_ref()).await {
            Ok(r) => {
                for e in leader::errors(&r) {
                    rep.error("leader", anyhow::anyhow!(e));
                }
                rep.leader = Some(r)
            }
            Err(e) => rep.error("leader", e),
        }
    }
    rep.journal = journal_results;
    rep.runtime = started.elapsed();
    let mut md = rep.markdown();
    if rep.is_partial() {
        if let Ok(existing) = std::fs::read_to_string(&a.out) {
            progress(format!("partial run: replacing only the sections run in {}", a.out.display()));
            md = report::splice(&existing, &md);
        }
    }
    std::fs::write(&a.out, &md).with_context(|| format!("writing {}", a.out.display()))?;
    println!("{}", rep.summary());
    progress(format!("wrote {} in {:.0} s", a.out.display(), started.elapsed().as_secs_f64()));
    if !rep.errors.is_empty() {
        bail!(
            "{} benchmark(s) could not run: {}",
            rep.errors.len(),
            rep.errors.iter().map(|(s, _)| s.as_str()).collect::<Vec<_>>().join(", ")
        );
    }
    Ok(())
}
