//! One redaction path (issue 10, rows 1–4): passwords with URL delimiters, alert
//! fingerprints, `check` output, `--reason`, command-script stderr and environment
//! values referenced by scripts never reach the journal, the CLI, HTTP answers; no
//! client carries a credential across a redirect. Real binary, real SQLite files, real
//! HTTP servers on 127.0.0.1:0, real redis-server processes.

mod support;

use axum::routing::get;
use orchestrator::journal::prelude::*;
use std::collections::HashMap;
use std::path::Path;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use support::world::World;

const SLASH_PW: &str = "Ab/Cd9xQz7";
const PW: &str = "pw-check-5be1d09a";
const KEY: &str = "svc-check-key-77c0a1b2";

fn bin() -> std::process::Command {
    std::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
}

fn all_output(o: &std::process::Output) -> String {
    format!("{}{}", String::from_utf8_lossy(&o.stdout), String::from_utf8_lossy(&o.stderr))
}

fn journal_bytes(dir: &Path) -> Vec<u8> {
    let mut out = Vec::new();
    for e in std::fs::read_dir(dir).unwrap() {
        let p = e.unwrap().path();
        if p.file_name().unwrap().to_string_lossy().starts_with("journal.db") {
            out.extend(std::fs::read(&p).unwrap());
        }
    }
    out
}

fn contains(hay: &[u8], needle: &str) -> bool {
    hay.windows(needle.len()).any(|w| w == needle.as_bytes())
}

/// Row 1: `redis://default:Ab/Cd9@host` is masked by `playbook check`, `run` and
/// `serve`, including inside the error about the URL itself.
#[test]
fn password_with_slash_hash_or_question_mark_is_masked_by_every_command() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    for pw in [SLASH_PW, "Ab#Cd9xQz7", "Ab?Cd9xQz7"] {
        let url = format!("redis://default:{pw}@127.0.0.1:6391");
        for args in [
            vec!["playbook", "check", "playbooks/sandbox.yaml"],
            vec!["run", "-p", "playbooks/sandbox.yaml"],
            vec!["serve", "-p", "playbooks/sandbox.yaml", "--listen", "127.0.0.1:0"],
        ] {
            let out = bin().arg("--db").arg(&db).args(&args).env("SANDBOX_PRIMARY_URL", &url).stdin(Stdio::null()).output().unwrap();
            let text = all_output(&out);
            assert_eq!(out.status.code(), Some(2), "{args:?}: {text}");
            assert!(text.contains("redis://default:***@127.0.0.1:6391"), "{args:?} names the URL, masked: {text}");
            assert!(!text.contains("Cd9xQz7"), "{args:?} leaked the password: {text}");
        }
    }
    // The same masking where such a URL is only quoted (the platform holding it, a
    // library's error): by the last `@`, without knowing the password.
    let observed = format!("platform holds redis://default:{SLASH_PW}@10.0.0.7:6379/0, not the primary");
    let masked = orchestrator::platform::retry::redact(&observed, &[]);
    assert!(!masked.contains("Cd9xQz7"), "{masked}");
    assert_eq!(orchestrator::secret::mask_url(&format!("redis://u:{SLASH_PW}@h:1")), "redis://u:***@h:1");
}

async fn stand_in_service(health_message: String) -> String {
    let logs = serde_json::json!({ "logs": [{ "timestamp": chrono::Utc::now().to_rfc3339(), "level": "error", "context": "redis",
        "message": health_message.clone() }] });
    let health = serde_json::json!({ "status": "error", "error": { "redis": { "status": "down", "message": health_message } } });
    let app = axum::Router::new()
        .route("/api/v1/health", get(move || async move { (axum::http::StatusCode::SERVICE_UNAVAILABLE, axum::Json(health)) }))
        .route("/api/v1/logs", get(move || async move { axum::Json(logs) }))
        .route("/api/v1/queue/metrics", get(|| async { axum::Json(serde_json::json!({ "connection_status": "disconnected" })) }));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    url
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port()
}

/// Row 3 (`check`, `--reason`): what the service echoes is masked in `check`'s
/// output, and `incidents.trigger_detail` never holds `--reason` raw.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn check_output_and_trigger_reason_are_redacted() {
    let dir = tempfile::tempdir().unwrap();
    let primary = format!("redis://default:{PW}@127.0.0.1:{}", free_port());
    let leak = format!("cannot connect to {primary} (api key {KEY})");
    let service = stand_in_service(leak).await;
    let env: HashMap<&str, String> = HashMap::from([
        ("SANDBOX_PRIMARY_URL", primary.clone()),
        ("SANDBOX_BACKUP_URL", format!("redis://default:{PW}@127.0.0.1:{}", free_port())),
        ("SANDBOX_SERVICE_URL", service),
        ("SANDBOX_SERVICE_API_KEY", KEY.to_string()),
        ("SANDBOX_PLATFORM_URL", format!("http://127.0.0.1:{}", free_port())),
    ]);
    let db = dir.path().join("journal.db");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(&db)
        .args(["check", "-p", "playbooks/sandbox.yaml"])
        .envs(&env)
        .output()
        .await
        .unwrap();
    let text = all_output(&out);
    assert!(text.contains("health"), "check printed its checklist: {text}");
    assert!(text.contains("***"), "the echoed secrets are shown masked: {text}");
    assert!(!text.contains(PW) && !text.contains(KEY), "check leaked a secret: {text}");

    let reason = format!("paged: {primary} refuses, key {KEY}");
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(&db)
        .args(["trigger", "-p", "playbooks/sandbox.yaml", "--reason", &reason])
        .envs(&env)
        .output()
        .await
        .unwrap();
    assert_eq!(out.status.code(), Some(0), "{}", all_output(&out));
    let journal = journal_bytes(dir.path());
    assert!(!contains(&journal, PW) && !contains(&journal, KEY), "trigger_detail holds the reason raw");
    let j = orchestrator::journal::Journal::open_existing(&db).await.unwrap();
    let inc = j.incidents(1).await.unwrap().remove(0);
    assert!(inc.trigger_detail.contains("paged: redis://default:***@127.0.0.1"), "{}", inc.trigger_detail);
}

/// Row 2: an alert's fingerprint (and summary) quoting a connection string is redacted
/// before it is journaled and echoed: the 202 answer, `GET /incidents/{id}`, `audit
/// --json` and the journal file.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn alert_fingerprints_are_redacted_before_they_are_stored_or_echoed() {
    let dir = tempfile::tempdir().unwrap();
    let db = dir.path().join("journal.db");
    let primary = format!("redis://default:{PW}@127.0.0.1:{}", free_port());
    let approver = "approver-token-0123456789";
    let mut child = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(&db)
        .args(["serve", "-p", "playbooks/sandbox.yaml", "--listen", "127.0.0.1:0", "--no-watch"])
        .env("SANDBOX_PRIMARY_URL", &primary)
        .env("SANDBOX_SERVICE_API_KEY", KEY)
        .env("ORCH_APPROVER_TOKENS", format!("oncall={approver}"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .unwrap();
    let addr = support::serve::listening(&mut child).await;
    let client = reqwest::Client::new();
    // Someone else's connection string too: masked by its last `@` without knowing it.
    let foreign = "redis://admin:Zz/9other-pass@10.9.9.9:6379";
    let body = serde_json::json!({
        "summary": format!("redis down: {primary}"),
        "fingerprint": format!("RedisDown@{primary} key={KEY} other={foreign}"),
    });
    let resp = client.post(format!("http://{addr}/webhooks/generic")).json(&body).send().await.unwrap();
    assert_eq!(resp.status().as_u16(), 202);
    let answer = resp.text().await.unwrap();
    let clean = |what: &str, text: &str| {
        assert!(!text.contains(PW) && !text.contains(KEY) && !text.contains("9other-pass"), "{what} leaked: {text}");
    };
    clean("the 202 answer", &answer);
    assert!(answer.contains("RedisDown@redis://default:***@127.0.0.1"), "{answer}");
    let v: serde_json::Value = serde_json::from_str(&answer).unwrap();
    let id = v["alerts"][0]["incident"].as_str().unwrap().to_string();
    let got = client.get(format!("http://{addr}/incidents/{id}")).bearer_auth(approver).send().await.unwrap();
    assert_eq!(got.status().as_u16(), 200);
    clean("GET /incidents/{id}", &got.text().await.unwrap());
    let audit = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(&db)
        .args(["audit", &id, "--json"])
        .output()
        .await
        .unwrap();
    let audit = all_output(&audit);
    assert!(audit.contains("RedisDown@"), "{audit}");
    clean("audit --json", &audit);
    support::serve::stop(&mut child).await;
    let journal = journal_bytes(dir.path());
    assert!(!contains(&journal, PW) && !contains(&journal, KEY) && !contains(&journal, "9other-pass"), "the journal holds a secret");
}

/// Row 4: the service client never follows a redirect, so a 302 to another origin never
/// receives `X-API-Key`.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_credential_follows_a_redirect_to_another_origin() {
    use orchestrator::ports::ServiceApi;
    let seen: Arc<Mutex<Vec<String>>> = Default::default();
    let s = seen.clone();
    let thief = axum::Router::new().fallback(move |headers: axum::http::HeaderMap| {
        let s = s.clone();
        async move {
            s.lock().unwrap().push(format!("{headers:?}"));
            axum::Json(serde_json::json!({ "status": "ok", "info": { "redis": { "status": "up" } } }))
        }
    });
    let tl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let thief_url = format!("http://{}/stolen", tl.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(tl, thief).await.unwrap() });
    let to = thief_url.clone();
    let redirector = axum::Router::new().fallback(move || {
        let to = to.clone();
        async move { (axum::http::StatusCode::FOUND, [("location", to)], "") }
    });
    let rl = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let service = format!("http://{}", rl.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(rl, redirector).await.unwrap() });

    let env: HashMap<String, String> =
        HashMap::from([("SANDBOX_SERVICE_URL".into(), service), ("SANDBOX_SERVICE_API_KEY".into(), KEY.to_string())]);
    let lookup = move |n: &str| env.get(n).cloned();
    let pb = orchestrator::playbook::load_bytes(&std::fs::read("playbooks/sandbox.yaml").unwrap(), Path::new("p.yaml"), &lookup).unwrap();
    let client = orchestrator::service::HttpService::new(&pb.service);
    let _ = client.health().await;
    let _ = client.queue_metrics().await;
    let _ = client.error_logs(chrono::Utc::now() - chrono::Duration::minutes(5)).await;
    tokio::time::sleep(Duration::from_millis(100)).await; // nothing to wait for: the thief must stay unvisited
    let seen = seen.lock().unwrap().clone();
    assert!(seen.iter().all(|h| !h.contains(KEY)), "the API key crossed to another origin: {seen:?}");
    assert!(seen.is_empty(), "the redirect was followed: {seen:?}");
}

/// Row 3 (command scripts): a `command` platform script's stderr (here a failing
/// switch that prints its bearer token, as `set -x` or curl would) is quoted into
/// effects and transitions with the token masked: values of environment variables a
/// script references are secrets.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn command_script_stderr_is_quoted_with_referenced_env_values_masked() {
    let mut w = World::start().await;
    let token = "deploy-token-6f1e2d3c4b";
    w.env.insert("DEPLOY_TOKEN".into(), token.into());
    let platform = "platform:\n  kind: command\n  read: 'echo \"$SANDBOX_PRIMARY_URL\"'\n  switch: 'echo \"curl -H Authorization: Bearer ${DEPLOY_TOKEN}\" >&2; exit 3'\n  deploy: 'echo d1'\n  status: 'echo live'\n  timeout: 5s\n\ncooldown: 1m";
    let start = std::fs::read_to_string("playbooks/sandbox.yaml").unwrap();
    let from = &start[start.find("platform:\n  kind: render").unwrap()..start.find("cooldown: 1m").unwrap() + "cooldown: 1m".len()];
    let pb = w.playbook_file(&[(from, platform)]);
    w.primary.kill();
    w.service_sees_redis_down().await;
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["--log", "debug", "run", "-p", pb.to_str().unwrap()])
        .envs(&w.env)
        .output()
        .await
        .unwrap();
    let text = all_output(&out);
    assert!(!text.contains(token), "run's output leaked the token: {text}");
    let audit = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["audit", "--json"])
        .arg(orchestrator::journal::Journal::open_existing(&w.journal_path()).await.unwrap().incidents(1).await.unwrap()[0].id.clone())
        .output()
        .await
        .unwrap();
    let audit = all_output(&audit);
    assert!(audit.contains("Authorization: Bearer ***"), "the stderr is quoted, masked: {audit}");
    assert!(!audit.contains(token), "{audit}");
    assert!(!contains(&journal_bytes(w.dir.path()), token), "the journal holds the token");
}
