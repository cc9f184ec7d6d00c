//! Driving the real `orchestrator serve` binary: its address from the first stdout
//! line, and a SIGTERM stop that waits (with a deadline) for it to exit.

use std::time::Duration;
use tokio::io::{AsyncBufReadExt, BufReader};

/// Reads the `{"listening": "127.0.0.1:PORT", ...}` line `serve` prints once bound.
pub async fn listening(child: &mut tokio::process::Child) -> String {
    let stdout = child.stdout.take().expect("serve's stdout is piped");
    let mut lines = BufReader::new(stdout).lines();
    let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line())
        .await
        .expect("serve printed its address within 20 s")
        .unwrap()
        .expect("serve exited before listening");
    // Keep draining stdout so the child never blocks on a full pipe.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    v["listening"].as_str().unwrap().to_string()
}

/// SIGTERM, then the exit status within `limit`.
pub async fn stop_within(child: &mut tokio::process::Child, limit: Duration) -> Option<std::process::ExitStatus> {
    if let Some(pid) = child.id() {
        // SAFETY: kill(2) with a pid we spawned.
        unsafe { libc::kill(pid as i32, libc::SIGTERM) };
    }
    tokio::time::timeout(limit, child.wait()).await.ok().map(|r| r.unwrap())
}

pub async fn stop(child: &mut tokio::process::Child) {
    if stop_within(child, Duration::from_secs(40)).await.is_none() {
        let _ = child.kill().await;
    }
}
