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
