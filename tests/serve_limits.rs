//! Rows 7 and 8 of issue 10, against the real `serve` binary on 127.0.0.1:0: SIGTERM
//! exits within a bounded time whatever clients do; a half-sent request is cut off by
//! the header timeout; 200 idle connections under `ulimit -n 128` do not stop
//! `/healthz` and webhooks from answering well-behaved clients.

mod support;

use std::os::unix::process::CommandExt as _;
use std::process::Stdio;
use std::time::{Duration, Instant};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

fn serve(db: &std::path::Path, extra: &[&str], nofile: Option<u64>) -> tokio::process::Child {
    let mut cmd = std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"));
    cmd.arg("--db")
        .arg(db)
        .args(["serve", "-p", "playbooks/sandbox.yaml", "--listen", "127.0.0.1:0", "--no-watch"])
        .args(extra)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .stdin(Stdio::null());
    if let Some(n) = nofile {
        // SAFETY: setrlimit between fork and exec touches nothing else.
        unsafe {
            cmd.pre_exec(move || {
                let lim = libc::rlimit { rlim_cur: n, rlim_max: n };
                if libc::setrlimit(libc::RLIMIT_NOFILE, &lim) != 0 {
                    return Err(std::io::Error::last_os_error());
                }
                Ok(())
            });
        }
    }
    let mut child = tokio::process::Command::from(cmd).kill_on_drop(true).spawn().unwrap();
    let _ = &mut child;
    child
}

/// Row 7: one half-sent request (and one with half its body) does not hold `serve`
/// open after SIGTERM: it exits within the documented bound (5 s for connections).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sigterm_exits_in_bounded_time_whatever_clients_do() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(&dir.path().join("j.db"), &[], None);
    let addr = support::serve::listening(&mut child).await;
    let mut half_headers = TcpStream::connect(&addr).await.unwrap();
    half_headers.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ").await.unwrap();
    let mut half_body = TcpStream::connect(&addr).await.unwrap();
    half_body
        .write_all(b"POST /webhooks/generic HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 500\r\n\r\n{\"summ")
        .await
        .unwrap();
    // Both are in the server's hands (a request it answers on a third connection
    // proves it is accepting).
    let ok = reqwest::get(format!("http://{addr}/healthz")).await.unwrap();
    assert_eq!(ok.status().as_u16(), 200);
    let started = Instant::now();
    let status = support::serve::stop_within(&mut child, Duration::from_secs(20)).await;
    let took = started.elapsed();
    assert!(status.is_some(), "serve still running 20 s after SIGTERM");
    assert_eq!(status.unwrap().code(), Some(0));
    assert!(took < Duration::from_secs(8), "exit took {took:?}; the bound is 5 s plus start-up of the drain");
    drop((half_headers, half_body));
}

/// Row 7: headers that never finish are cut off at the header timeout (the default,
/// 10 s).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_half_sent_request_is_closed_at_the_header_timeout() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(&dir.path().join("j.db"), &[], None);
    let addr = support::serve::listening(&mut child).await;
    let mut slow = TcpStream::connect(&addr).await.unwrap();
    slow.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\n").await.unwrap();
    let started = Instant::now();
    let mut buf = [0u8; 512];
    // The server closes it (EOF, or a 408 answer then EOF) well before our deadline.
    let closed = tokio::time::timeout(Duration::from_secs(20), async {
        loop {
            match slow.read(&mut buf).await {
                Ok(0) | Err(_) => break,
                Ok(_) => continue,
            }
        }
    })
    .await;
    assert!(closed.is_ok(), "a half-sent request was still open after 20 s");
    assert!(started.elapsed() >= Duration::from_millis(9_500), "closed only after the timeout");
    support::serve::stop(&mut child).await;
}

/// Row 8: 200 idle connections against a process limited to 128 descriptors: the
/// server keeps answering `/healthz` and webhooks from well-behaved clients.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn idle_connections_past_the_descriptor_limit_do_not_starve_healthz_or_webhooks() {
    let dir = tempfile::tempdir().unwrap();
    let mut child = serve(&dir.path().join("j.db"), &[], Some(128));
    let addr = support::serve::listening(&mut child).await;
    let mut idle = Vec::new();
    for _ in 0..200 {
        idle.push(TcpStream::connect(&addr).await.unwrap());
    }
    let client = reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap();
    for round in 0..5 {
        let h = client.get(format!("http://{addr}/healthz")).send().await;
        assert!(matches!(&h, Ok(r) if r.status().as_u16() == 200), "round {round}: /healthz {h:?}");
        let body = serde_json::json!({ "status": "resolved", "summary": format!("storm {round}") });
        let w = client.post(format!("http://{addr}/webhooks/generic")).json(&body).send().await;
        assert!(matches!(&w, Ok(r) if r.status().as_u16() == 202), "round {round}: webhook {w:?}");
        // More idle clients keep arriving.
        for _ in 0..20 {
            idle.push(TcpStream::connect(&addr).await.unwrap());
        }
    }
    drop(idle);
    support::serve::stop(&mut child).await;
}
