//! Row 11 of issue 10: a signed Grafana body is accepted once; a replay within the
//! freshness window is refused, and off loopback a signature without a timestamp is
//! refused. The daemon's real router on 127.0.0.1:0, a real SQLite journal.

use orchestrator::secret::Secret;
use orchestrator::server::auth::{sign, AuthConfig};
use std::path::Path;
use std::sync::Arc;

const SECRET: &str = "hmac-secret-0123456789abcdef";

async fn daemon(dir: &Path) -> (String, Arc<orchestrator::server::App>) {
    orchestrator::wiring::install_crypto();
    let none = |_: &str| None;
    let pb = Arc::new(
        orchestrator::playbook::load_bytes(&std::fs::read("playbooks/sandbox.yaml").unwrap(), Path::new("p.yaml"), &none).unwrap(),
    );
    let journal = orchestrator::journal::Journal::open(&dir.join("j.db")).await.unwrap();
    let ports = orchestrator::wiring::real_ports(&pb);
    let (tx, rx) = tokio::sync::watch::channel(false);
    std::mem::forget(tx);
    let target = orchestrator::fleet::Target::new(journal.clone(), ports, pb, Default::default(), rx.clone());
    let registry = orchestrator::fleet::Registry::new(vec![target]).unwrap();
    let auth = AuthConfig { webhook_token: None, hmac_secret: Some(Secret::new(SECRET)), approvers: vec![], viewers: vec![] };
    let d = orchestrator::daemon::Daemon::new(journal, registry, &auth.secrets(), rx);
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/webhooks/grafana", listener.local_addr().unwrap());
    let app = orchestrator::server::App::new(d, auth);
    let router = orchestrator::server::router(app.clone());
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (url, app)
}

// Resolved alerts: journaled, and no incident is opened (nothing else runs).
const BODY: &str = r#"{"status":"resolved","alerts":[{"labels":{"alertname":"RedisDown"},"startsAt":"2026-12-01T10:00:00Z"}]}"#;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_signature_is_accepted_once() {
    let dir = tempfile::tempdir().unwrap();
    let (url, _d) = daemon(dir.path()).await;
    let client = reqwest::Client::new();
    let ts = chrono::Utc::now().timestamp().to_string();
    let post = || {
        client
            .post(&url)
            .header("x-grafana-alerting-signature", sign(SECRET, Some(&ts), BODY.as_bytes()))
            .header("x-grafana-alerting-signature-timestamp", &ts)
            .body(BODY)
            .send()
    };
    assert_eq!(post().await.unwrap().status().as_u16(), 202);
    let again = post().await.unwrap();
    assert_eq!(again.status().as_u16(), 409, "the same signed body within the window is a replay");
    assert!(again.text().await.unwrap().contains("replay"));
    // A different body is a different signature.
    let other = BODY.replace("10:00:00", "10:00:01");
    let r = client
        .post(&url)
        .header("x-grafana-alerting-signature", sign(SECRET, Some(&ts), other.as_bytes()))
        .header("x-grafana-alerting-signature-timestamp", &ts)
        .body(other)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 202);
    // Without a timestamp (accepted on loopback): still only once.
    let bare = || client.post(&url).header("x-grafana-alerting-signature", sign(SECRET, None, BODY.as_bytes())).body(BODY).send();
    assert_eq!(bare().await.unwrap().status().as_u16(), 202);
    assert_eq!(bare().await.unwrap().status().as_u16(), 409);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn off_loopback_a_signature_without_timestamp_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let (url, d) = daemon(dir.path()).await;
    // What `serve --listen` sets for a non-loopback address.
    d.require_signed_timestamp.store(true, std::sync::atomic::Ordering::Relaxed);
    let client = reqwest::Client::new();
    let r = client.post(&url).header("x-grafana-alerting-signature", sign(SECRET, None, BODY.as_bytes())).body(BODY).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    assert!(r.text().await.unwrap().contains("replayable"));
}
