//! Secrets never leak: whole incidents run with distinctive secret values (Redis
//! passwords, the service API key, the platform token, the Slack webhook URL), and
//! every byte the orchestrator wrote is searched for them: the journal files, its logs
//! at trace level, the bodies Slack received, and the output of every CLI command.

mod support;

use axum::routing::post;
use orchestrator::journal::prelude::*;
use std::process::Stdio;
use std::sync::{Arc, Mutex};
use support::world::{World, WorldOptions, PLATFORM_KEY, SERVICE_KEY};

const PRIMARY_PW: &str = "pw-primary-7f3a9c1e55";
const BACKUP_PW: &str = "pw-backup-2d8b4e6f11";
const SLACK_PATH_SECRET: &str = "B07SLACKSECRET9x8y7z";

async fn slack_stand_in() -> (String, Arc<Mutex<Vec<String>>>) {
    let bodies = Arc::new(Mutex::new(Vec::new()));
    let b = bodies.clone();
    let app = axum::Router::new().route(
        "/services/T000/{*rest}",
        post(move |body: String| {
            let b = b.clone();
            async move {
                b.lock().unwrap().push(body);
                "ok"
            }
        }),
    );
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let url = format!("http://{}/services/T000/{SLACK_PATH_SECRET}", listener.local_addr().unwrap());
    tokio::spawn(async move { axum::serve(listener, app).await.unwrap() });
    (url, bodies)
}

async fn cli(w: &World, args: &[&str]) -> (Option<i32>, String) {
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["--log", "trace"])
        .args(args)
        .envs(&w.env)
        .stdin(Stdio::null())
        .output()
        .await
        .unwrap();
    (out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr)))
}

fn assert_clean(what: &str, haystack: &[u8], secrets: &[&str]) {
    for s in secrets {
        let found = haystack.windows(s.len()).any(|w| w == s.as_bytes());
        assert!(!found, "secret {s:?} leaked into {what}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_journal_logs_notifications_or_cli_output() {
    let mut w =
        World::start_with(WorldOptions { primary_password: Some(PRIMARY_PW), backup_password: Some(BACKUP_PW), ..Default::default() })
            .await;
    let (slack_url, slack_bodies) = slack_stand_in().await;
    w.env.insert("SLACK_WEBHOOK_URL".into(), slack_url);
    let secrets = [PRIMARY_PW, BACKUP_PW, SERVICE_KEY, PLATFORM_KEY, SLACK_PATH_SECRET];
    let playbook = w.playbook_file(&[
        ("verify_window: 15s", "verify_window: 4s"),
        (
            "cooldown: 1m",
            "notifications:\n  slack:\n    webhook_url: \"${SLACK_WEBHOOK_URL}\"\n    attempts: 2\n    timeout: 2s\ncooldown: 1m",
        ),
    ]);
    let pb = playbook.to_str().unwrap();
    let mut output = Vec::new();

    // A dry run while everything is healthy, then a real incident.
    output.push(cli(&w, &["check", "--playbook", pb]).await);
    w.primary.kill();
    w.service_sees_redis_down().await;
    // A careless service logs its own connection string, password and all (and its
    // API key): the orchestrator quotes the latest error log in its observations.
    let leak = format!("Redis connection failed: {} refused; key {SERVICE_KEY}", w.env["SANDBOX_PRIMARY_URL"]);
    assert!(leak.contains(PRIMARY_PW));
    w.sandbox.service().logs().error("redis", &leak);
    let (code, text) = cli(&w, &["run", "--playbook", pb, "--reason", "secrets drill"]).await;
    assert_eq!(code, Some(0), "the incident recovers:\n{text}");
    output.push((code, text));
    // A second incident that fails in other ways: the backup refuses its password.
    let mut wrong = w.env.clone();
    wrong.insert("SANDBOX_BACKUP_URL".into(), w.env["SANDBOX_BACKUP_URL"].replace(BACKUP_PW, "pw-wrong-for-backup-1234"));
    let out = tokio::process::Command::new(env!("CARGO_BIN_EXE_orchestrator"))
        .arg("--db")
        .arg(w.journal_path())
        .args(["--log", "trace", "run", "--playbook", pb, "--reason", "wrong backup password"])
        .envs(&wrong)
        .output()
        .await
        .unwrap();
    output.push((out.status.code(), format!("{}{}", String::from_utf8_lossy(&out.stdout), String::from_utf8_lossy(&out.stderr))));

    let journal = orchestrator::journal::Journal::open_existing(&w.journal_path()).await.unwrap();
    let ids: Vec<String> = journal.incidents(10).await.unwrap().into_iter().map(|i| i.id).collect();
    assert_eq!(ids.len(), 2);
    for id in &ids {
        output.push(cli(&w, &["audit", id]).await);
        output.push(cli(&w, &["audit", id, "--json"]).await);
        output.push(cli(&w, &["report", id]).await);
    }
    output.push(cli(&w, &["incidents", "--json"]).await);
    output.push(cli(&w, &["playbook", "check", pb]).await);

    // The journal shows the endpoints it acted on, masked.
    let audit = &output[3].1;
    assert!(audit.contains(":***@127.0.0.1"), "URLs appear with the password masked:\n{audit}");
    assert!(output.iter().any(|(_, t)| t.contains("TRACE") || t.contains("DEBUG")), "logs were captured at trace level");

    for (i, (_, text)) in output.iter().enumerate() {
        assert_clean(&format!("CLI output #{i}"), text.as_bytes(), &secrets);
    }
    journal.close().await;
    for entry in std::fs::read_dir(w.dir.path()).unwrap() {
        let path = entry.unwrap().path();
        if path.file_name().unwrap().to_string_lossy().starts_with("journal.db") {
            assert_clean(&path.display().to_string(), &std::fs::read(&path).unwrap(), &secrets);
        }
    }
    let bodies = slack_bodies.lock().unwrap().clone();
    assert!(bodies.len() >= 5, "Slack heard the transitions ({} bodies)", bodies.len());
    assert_clean("Slack bodies", bodies.join("\n").as_bytes(), &secrets);
}

/// Signs in to the console over HTTP: (cookie header, CSRF token).
async fn console_sign_in(base: &str, token: &str) -> (String, String) {
    let r =
        reqwest::Client::new().post(format!("{base}/console/api/login")).json(&serde_json::json!({ "token": token })).send().await.unwrap();
    assert_eq!(r.status(), 200);
    let cookie = r.headers()["set-cookie"].to_str().unwrap().split(';').next().unwrap().to_string();
    let v: serde_json::Value = r.json().await.unwrap();
    (cookie, v["csrf"].as_str().unwrap().to_string())
}

/// The web console: every page, every JSON answer, the live stream and every error,
/// for an incident whose service logged its Redis URL with the password, an alert
/// that quotes a token, and a comment a person pasted a token into.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn no_secret_reaches_the_console() {
    use support::world::{LEAD_TOKEN, MALLORY_TOKEN, ONCALL_TOKEN, VIEWER_TOKEN, WEBHOOK_TOKEN};
    let w = World::start_with(WorldOptions { primary_password: Some(PRIMARY_PW), backup_password: Some(BACKUP_PW), ..Default::default() })
        .await;
    let secrets = [
        PRIMARY_PW,
        BACKUP_PW,
        SERVICE_KEY,
        PLATFORM_KEY,
        ONCALL_TOKEN,
        LEAD_TOKEN,
        MALLORY_TOKEN,
        VIEWER_TOKEN,
        WEBHOOK_TOKEN,
        "hmac-secret-for-tests",
    ];
    let s = w.serve(&[("verify_window: 15s", "verify_window: 4s"), ("  steps: []", "  steps: [flush]")], false).await;
    w.primary.kill();
    w.service_sees_redis_down().await;
    let leak = format!("Redis connection failed: {} refused; key {SERVICE_KEY}", w.env["SANDBOX_PRIMARY_URL"]);
    w.sandbox.service().logs().error("redis", &leak);
    let client = reqwest::Client::new();
    let r = client
        .post(format!("{}/webhooks/generic", s.url))
        .bearer_auth(WEBHOOK_TOKEN)
        .json(&serde_json::json!({ "summary": format!("redis down at {} (token {LEAD_TOKEN})", w.env["SANDBOX_PRIMARY_URL"]) }))
        .send()
        .await
        .unwrap();
    let v: serde_json::Value = r.json().await.unwrap();
    let id = v["alerts"][0]["incident"].as_str().unwrap().to_string();
    support::world::wait_state(&w, &id, &["awaiting_approval"], std::time::Duration::from_secs(30)).await;

    let (cookie, csrf) = console_sign_in(&s.url, ONCALL_TOKEN).await;
    let mut seen: Vec<(String, String)> = Vec::new();
    let get = |path: String| {
        let (client, cookie, url) = (client.clone(), cookie.clone(), s.url.clone());
        async move {
            let r = client.get(format!("{url}{path}")).header("cookie", cookie).send().await.unwrap();
            let headers = format!("{:?}", r.headers());
            (path, format!("{headers}\n{}", r.text().await.unwrap()))
        }
    };
    // A person pastes a token into a comment (approved at the gate, from the web).
    let r = client
        .post(format!("{}/console/api/incidents/{id}/approve", s.url))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({ "comment": format!("ok, my token is {ONCALL_TOKEN} and the url {}", w.env["SANDBOX_BACKUP_URL"]) }))
        .send()
        .await
        .unwrap();
    seen.push(("approve answer".into(), r.text().await.unwrap()));
    let journal = orchestrator::journal::Journal::open_existing(&w.journal_path()).await.unwrap();
    let deadline = tokio::time::Instant::now() + std::time::Duration::from_secs(60);
    while journal.incident(&id).await.unwrap().outcome.is_none() {
        assert!(tokio::time::Instant::now() < deadline, "the incident ends");
        tokio::time::sleep(std::time::Duration::from_millis(100)).await;
    }
    for path in [
        "/".to_string(),
        "/console/incidents".into(),
        format!("/console/incidents/{id}"),
        "/console/assets/app.js".into(),
        "/console/assets/app.css".into(),
        "/console/api/session".into(),
        "/console/api/targets".into(),
        "/console/api/incidents".into(),
        format!("/console/api/incidents/{id}"),
        format!("/console/api/incidents/{id}/alerts?offset=0&limit=500"),
        "/console/api/incidents/inc-nope".into(),
        "/console/api/incidents?since=not-a-time".into(),
    ] {
        seen.push(get(path).await);
    }
    // Errors, too: an action on an ended incident quotes the incident, nothing else.
    let r = client
        .post(format!("{}/console/api/incidents/{id}/abort", s.url))
        .header("cookie", &cookie)
        .header("x-csrf-token", &csrf)
        .json(&serde_json::json!({ "comment": format!("too late {MALLORY_TOKEN}") }))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 409);
    seen.push(("abort on an ended incident".into(), r.text().await.unwrap()));
    // The live stream, for a second.
    let mut stream = client.get(format!("{}/console/api/stream?incident={id}", s.url)).header("cookie", &cookie).send().await.unwrap();
    let mut text = String::new();
    let until = tokio::time::Instant::now() + std::time::Duration::from_secs(1);
    while let Ok(Ok(Some(chunk))) = tokio::time::timeout_at(until, stream.chunk()).await {
        text.push_str(&String::from_utf8_lossy(&chunk));
    }
    assert!(text.contains("event: timeline"), "the stream sent the timeline: {text}");
    seen.push(("the event stream".into(), text));

    let view = &seen.iter().find(|(p, _)| p == &format!("/console/api/incidents/{id}")).unwrap().1;
    assert!(view.contains(":***@127.0.0.1"), "URLs appear with the password masked");
    assert!(view.contains("my token is ***"), "the comment is shown, the token in it is not");
    for (what, body) in &seen {
        assert_clean(&format!("console {what}"), body.as_bytes(), &secrets);
    }
}
