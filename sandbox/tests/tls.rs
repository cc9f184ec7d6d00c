//! `rediss://` end to end: the kit starts a TLS-only redis-server and the service runs
//! its queue over TLS, as production does with Upstash. Its own test binary, because
//! it points `SSL_CERT_FILE` (read by rustls-native-certs) at a throwaway CA.

mod common;

use std::path::Path;
use std::process::Command;

use common::*;
use sandbox::RedisServer;
use serde_json::json;

/// A CA and a server certificate for 127.0.0.1, made with the openssl CLI.
fn make_certs(dir: &Path) {
    let run = |args: &[&str]| {
        let out = Command::new("openssl").args(args).current_dir(dir).output().expect("openssl is needed for this test");
        assert!(out.status.success(), "openssl {args:?}: {}", String::from_utf8_lossy(&out.stderr));
    };
    run(&[
        "req",
        "-x509",
        "-newkey",
        "rsa:2048",
        "-nodes",
        "-keyout",
        "ca.key",
        "-out",
        "ca.crt",
        "-days",
        "1",
        "-subj",
        "/CN=sandbox-test-ca",
    ]);
    run(&["req", "-newkey", "rsa:2048", "-nodes", "-keyout", "server.key", "-out", "server.csr", "-subj", "/CN=127.0.0.1"]);
    std::fs::write(dir.join("ext.cnf"), "subjectAltName=IP:127.0.0.1\nbasicConstraints=CA:FALSE\n").unwrap();
    run(&[
        "x509",
        "-req",
        "-in",
        "server.csr",
        "-CA",
        "ca.crt",
        "-CAkey",
        "ca.key",
        "-CAcreateserial",
        "-out",
        "server.crt",
        "-days",
        "1",
        "-extfile",
        "ext.cnf",
    ]);
}

#[tokio::test]
async fn service_runs_its_queue_over_tls() {
    let dir = std::env::temp_dir().join(format!("sandbox-tls-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    make_certs(&dir);
    let d = dir.to_string_lossy().to_string();
    // The only test in this binary, so setting the variable races with nothing.
    std::env::set_var("SSL_CERT_FILE", format!("{d}/ca.crt"));

    let (cert, key, ca) = (format!("{d}/server.crt"), format!("{d}/server.key"), format!("{d}/ca.crt"));
    let redis = RedisServer::start_with(&[
        "--port",
        "0",
        "--tls-port",
        "{port}",
        "--tls-cert-file",
        &cert,
        "--tls-key-file",
        &key,
        "--tls-ca-cert-file",
        &ca,
        "--tls-auth-clients",
        "no",
        "--requirepass",
        "tls-secret",
    ])
    .unwrap();
    assert!(redis.url().starts_with("rediss://127.0.0.1:"));

    let mut c = config(&redis);
    c.redis_url = format!("rediss://:tls-secret@127.0.0.1:{}", redis.port());
    let sb = sandbox::start(c).await.unwrap();
    let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "{}", r.text().await.unwrap());
    let id = trigger(&sb, "over-tls", "critical", json!({})).await;
    wait_job_state(&sb, "critical", &id, "completed").await;
    sb.shutdown().await;
    drop(redis);
    let _ = std::fs::remove_dir_all(&dir);
}
