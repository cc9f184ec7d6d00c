//! Benchmark 5: footprint. Start-up time of `serve` (spawn → its "listening" line),
//! its idle RSS, and the release binaries' sizes.

use crate::util::*;
use anyhow::Result;
use serde::Serialize;
use std::path::Path;
use std::time::Duration;

pub const IDLE_AFTER: Duration = Duration::from_secs(2);

#[derive(Debug, Clone, Serialize)]
pub struct Results {
    pub startup_fresh_ms: Vec<f64>,
    pub startup_big_ms: Vec<f64>,
    pub idle_rss: Vec<u64>,
    pub idle_hwm: Vec<u64>,
    pub binaries: Vec<(String, u64)>,
    pub big_incidents: usize,
}

pub async fn run(ctx: &Ctx, big_journal: Option<(&Path, usize)>) -> Result<Results> {
    let world = World::start(ctx).await?;
    let playbook = world.playbook_file(ctx, &[])?;
    let reps = ctx.reps;
    let (mut startup_fresh_ms, mut startup_big_ms, mut idle_rss, mut idle_hwm) = (vec![], vec![], vec![], vec![]);
    for i in 0..reps {
        // A fresh journal each time: start-up includes creating it and its migrations.
        let db = world.dir.path().join(format!("fresh-{i}.db"));
        let (mut p, _, took) = world.serve(ctx, &db, &playbook, true)?;
        tokio::time::sleep(IDLE_AFTER).await;
        idle_rss.push(proc_mem(p.pid(), "VmRSS").unwrap_or(0));
        idle_hwm.push(proc_mem(p.pid(), "VmHWM").unwrap_or(0));
        p.stop(Duration::from_secs(10));
        startup_fresh_ms.push(ms(took));
        progress(format!("footprint: start-up {} (fresh journal), idle RSS {}", fmt_ms(ms(took)), fmt_bytes(*idle_rss.last().unwrap())));
    }
    let mut big_incidents = 0;
    if let Some((big, n)) = big_journal {
        big_incidents = n;
        for i in 0..reps {
            let db = world.dir.path().join(format!("big-{i}.db"));
            std::fs::copy(big, &db)?;
            let (mut p, _, took) = world.serve(ctx, &db, &playbook, true)?;
            p.stop(Duration::from_secs(10));
            startup_big_ms.push(ms(took));
        }
        progress(format!("footprint: start-up with the {n}-incident journal, median {}", fmt_ms(median(&startup_big_ms))));
    }
    let mut binaries = Vec::new();
    for b in ["orchestrator", "sandbox"] {
        let p = ctx.bin_dir.join(b);
        binaries.push((p.display().to_string(), std::fs::metadata(&p).map(|m| m.len()).unwrap_or(0)));
    }
    world.sandbox.shutdown().await;
    Ok(Results { startup_fresh_ms, startup_big_ms, idle_rss, idle_hwm, binaries, big_incidents })
}
