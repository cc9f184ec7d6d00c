//! The orchestrator's own trouble is never evidence that Redis failed: `serve` out of
//! file descriptors (its limit lowered for real with prlimit(2) to what it already has
//! open) opens no incident while Redis is healthy,
//! and says in `/healthz` and `/metrics` that it is the one in trouble.

mod support;

use orchestrator::journal::prelude::*;
use orchestrator::journal::Journal;
use std::process::Stdio;
use std::time::Duration;
use support::world::World;

fn open_fds(pid: u32) -> u64 {
    std::fs::read_dir(format!("/proc/{pid}/fd")).map(|d| d.count() as u64).unwrap_or(0)
}

/// Sets the soft and hard RLIMIT_NOFILE of another process (we are its parent, and root
/// or the same user), returning the old soft and hard limits.
fn set_nofile(pid: u32, soft: u64, hard: Option<u64>) -> (u64, u64) {
    let mut old = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
    // SAFETY: prlimit(2) with valid pointers to stack values.
    let rc = unsafe {
        let mut cur = libc::rlimit { rlim_cur: 0, rlim_max: 0 };
        libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, std::ptr::null(), &mut cur);
        let new = libc::rlimit { rlim_cur: soft, rlim_max: hard.unwrap_or(cur.rlim_max) };
        libc::prlimit(pid as i32, libc::RLIMIT_NOFILE, &new, &mut old)
    };
    assert_eq!(rc, 0, "prlimit: {}", std::io::Error::last_os_error());
    (old.rlim_cur, old.rlim_max)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn running_out_of_file_descriptors_opens_no_incident() {
    let w = World::start().await;
    // Fast detection: without the fix an incident would open within ping_fail_for +
    // one interval of the first failing probe.
    let playbook = w.playbook_file(&[
        ("  interval: 1s\n  ping_fail_for: 2s", "  interval: 100ms\n  ping_fail_for: 300ms"),
        ("cooldown: 1m", "cooldown: 0s"),
    ]);
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["serve", "--playbook", playbook.to_str().unwrap(), "--listen", "127.0.0.1:0"])
        .envs(&w.env)
        .env("RUST_LOG", "info")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let pid = child.id().unwrap();
    let url = {
        use tokio::io::AsyncBufReadExt;
        let mut lines = tokio::io::BufReader::new(child.stdout.take().unwrap()).lines();
        let line = tokio::time::timeout(Duration::from_secs(20), lines.next_line()).await.unwrap().unwrap().unwrap();
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        v["listening"].as_str().unwrap().to_string()
    };
    let stderr = child.stderr.take().unwrap();
    let log = std::sync::Arc::new(std::sync::Mutex::new(String::new()));
    {
        let log = log.clone();
        tokio::spawn(async move {
            use tokio::io::AsyncBufReadExt;
            let mut lines = tokio::io::BufReader::new(stderr).lines();
            while let Ok(Some(l)) = lines.next_line().await {
                log.lock().unwrap().push_str(&l);
                log.lock().unwrap().push('\n');
            }
        });
    }
    let client = reqwest::Client::new();
    let r = client.get(format!("http://{url}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 200, "healthy before the fault");

    // The fault: no descriptor left. The limit is below what it has open now. (Flooding it with
    // idle connections no longer helps: serve closes the oldest idle one to accept a
    // new one, and its connection limit stays below the descriptor limit.)
    // A little below: a probe connection open at this moment frees its descriptor when it
    // closes, and the next probe would take it.
    let (old_soft, old_hard) = set_nofile(pid, open_fds(pid).saturating_sub(3), None);
    // Wait (deadline) until the orchestrator saw its own trouble while probing (or,
    // wrongly, opened an incident from it)...
    let j = Journal::open_existing(&w.journal_path()).await.unwrap();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while !log.lock().unwrap().contains("own host is in trouble") && j.incidents(1).await.map(|i| i.is_empty()).unwrap_or(true) {
        assert!(tokio::time::Instant::now() < deadline, "serve never hit its own descriptor limit:\n{}", log.lock().unwrap());
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    // ...then for longer than an incident would need to open from a failing probe
    // (ping_fail_for 300 ms + interval 100 ms), several times over.
    tokio::time::sleep(Duration::from_secs(2)).await;
    set_nofile(pid, old_soft, Some(old_hard));

    assert!(j.incidents(10).await.unwrap().is_empty(), "no incident from the orchestrator's own EMFILE:\n{}", log.lock().unwrap());
    let r = client.get(format!("http://{url}/healthz")).send().await.unwrap();
    assert_eq!(r.status(), 503, "it says it is the one in trouble");
    let body: serde_json::Value = r.json().await.unwrap();
    assert_eq!(body["status"], "unhealthy");
    assert!(body["reason"].as_str().unwrap().contains("Too many open files"), "{body}");
    let metrics = client.get(format!("http://{url}/metrics")).send().await.unwrap().text().await.unwrap();
    let line = metrics.lines().find(|l| l.starts_with("orchestrator_self_errors_total ")).expect("self errors metric");
    let n: u64 = line.split(' ').nth(1).unwrap().parse().unwrap();
    assert!(n > 0, "{line}");
    assert!(metrics.contains("orchestrator_self_healthy 0"), "{metrics}");
    // Redis was healthy all along; the watch loop judges it again once it can.
    assert!(w.primary.url().starts_with("redis://"));
}
