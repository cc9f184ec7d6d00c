//! The Slack notifier against a real webhook server on a loopback port: the body it
//! posts, bounded retries, and a webhook URL that never shows in errors.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use axum::Router;
use orchestrator::notify::{slack_body, SlackNotifier};
use orchestrator::playbook::SlackConfig;
use orchestrator::ports::{Notification, Notifier};
use orchestrator::secret::Secret;
use serde_json::{json, Value};
use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The secret part of the webhook URL, as Slack issues them.
const HOOK_PATH: &str = "/services/T0000/B0000/XXXXsecretTOKEN";

#[derive(Default)]
struct Hook {
    bodies: Vec<Value>,
    /// Statuses to answer, in order; 200 once they run out (unless `always`).
    script: VecDeque<u16>,
    always: Option<u16>,
}

type Shared = Arc<Mutex<Hook>>;

async fn hook(State(s): State<Shared>, body: Bytes) -> Response {
    let mut h = s.lock().unwrap();
    h.bodies.push(serde_json::from_slice(&body).unwrap_or(Value::Null));
    let code = h.always.or_else(|| h.script.pop_front()).unwrap_or(200);
    // Error answers echo the webhook path, as a careless proxy might.
    let text = if code == 200 { "ok".to_string() } else { format!("failure at {HOOK_PATH}") };
    (StatusCode::from_u16(code).unwrap(), text).into_response()
}

async fn server() -> (Shared, SocketAddr) {
    let s: Shared = Arc::default();
    let router = Router::new().route(HOOK_PATH, post(hook)).with_state(s.clone());
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    (s, addr)
}

fn cfg(addr: SocketAddr, attempts: u32) -> SlackConfig {
    SlackConfig {
        webhook_url: Secret::new(format!("http://{addr}{HOOK_PATH}")),
        channel: Some("#incidents".into()),
        attempts,
        timeout: Duration::from_secs(2),
    }
}

fn note() -> Notification {
    Notification { incident: "inc-1".into(), title: "Switch done".into(), text: "REDIS_URL now points at the backup".into() }
}

fn requests(s: &Shared) -> usize {
    s.lock().unwrap().bodies.len()
}

#[tokio::test]
async fn posts_the_incoming_webhook_body() {
    let (s, addr) = server().await;
    SlackNotifier::new(&cfg(addr, 3)).notify(&note()).await.unwrap();
    let bodies = s.lock().unwrap().bodies.clone();
    assert_eq!(bodies, [json!({ "text": "*Switch done*\nREDIS_URL now points at the backup", "channel": "#incidents" })]);

    let mut no_channel = cfg(addr, 1);
    no_channel.channel = None;
    SlackNotifier::new(&no_channel).notify(&note()).await.unwrap();
    assert_eq!(s.lock().unwrap().bodies[1], json!({ "text": "*Switch done*\nREDIS_URL now points at the backup" }));
}

#[test]
fn body_escapes_slack_control_characters_and_masks_urls() {
    let n = Notification { incident: "i".into(), title: "a<b & c>d".into(), text: "to redis://:pw-secret-9@h:6379/0 now".into() };
    let body = slack_body(&n, None);
    let text = body["text"].as_str().unwrap();
    assert_eq!(text, "*a&lt;b &amp; c&gt;d*\nto redis://:***@h:6379/0 now");
}

#[tokio::test]
async fn two_failures_then_success_take_three_requests() {
    let (s, addr) = server().await;
    s.lock().unwrap().script.extend([500, 503]);
    let started = Instant::now();
    SlackNotifier::new(&cfg(addr, 5)).notify(&note()).await.unwrap();
    assert_eq!(requests(&s), 3);
    // Short backoff: 250 ms, then 500 ms.
    assert!(started.elapsed() >= Duration::from_millis(750), "{:?}", started.elapsed());
}

#[tokio::test]
async fn always_failing_gives_up_after_exactly_the_attempts() {
    let (s, addr) = server().await;
    s.lock().unwrap().always = Some(500);
    let e = SlackNotifier::new(&cfg(addr, 4)).notify(&note()).await.unwrap_err();
    assert_eq!(requests(&s), 4);
    assert!(e.to_string().contains("4 attempt"), "{e}");
    assert!(e.to_string().contains("HTTP 500"), "{e}");
    let text = format!("{e} {e:?}");
    assert!(!text.contains("XXXXsecretTOKEN"), "webhook URL leaked: {text}");
}

#[tokio::test]
async fn a_refusing_webhook_is_not_retried() {
    let (s, addr) = server().await;
    s.lock().unwrap().always = Some(404);
    let e = SlackNotifier::new(&cfg(addr, 4)).notify(&note()).await.unwrap_err();
    assert_eq!(requests(&s), 1, "a 404 (no_service) does not heal: {e}");
}

#[tokio::test]
async fn unreachable_webhook_is_an_error_not_a_panic() {
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let n = SlackNotifier::new(&cfg(gone, 2));
    let e = n.notify(&note()).await.unwrap_err();
    let text = format!("{e} {e:?} {n:?}");
    assert!(text.contains("2 attempt"), "{text}");
    assert!(!text.contains("XXXXsecretTOKEN") && !text.contains(HOOK_PATH), "webhook URL leaked: {text}");
}

#[tokio::test]
async fn a_slow_webhook_is_bounded_by_the_timeout() {
    // Accepts connections and never answers.
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let held = Arc::new(Mutex::new(Vec::new()));
    let h = held.clone();
    tokio::spawn(async move {
        while let Ok((sock, _)) = listener.accept().await {
            h.lock().unwrap().push(sock);
        }
    });
    let mut c = cfg(addr, 2);
    c.timeout = Duration::from_millis(200);
    let started = Instant::now();
    let e = SlackNotifier::new(&c).notify(&note()).await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(3), "{:?}", started.elapsed());
    assert!(e.to_string().contains("timed out"), "{e}");
    assert!(!e.to_string().contains("XXXXsecretTOKEN"), "{e}");
}

#[test]
fn messages_link_the_incident_in_the_console_when_the_playbook_gives_its_address() {
    let cfg = SlackConfig {
        webhook_url: Secret::new(format!("http://127.0.0.1:9{HOOK_PATH}")),
        channel: None,
        attempts: 1,
        timeout: Duration::from_secs(1),
    };
    let n = Notification { incident: "inc-42".into(), title: "inc-42: flush → deploy".into(), text: "ok".into() };
    let plain = SlackNotifier::new(&cfg).body(&n);
    assert!(!plain["text"].as_str().unwrap().contains("console"), "no console address, no link: {plain}");
    let base = url::Url::parse("https://orchestrator.example.com/").unwrap();
    let linked = SlackNotifier::new(&cfg).with_console(Some(&base)).body(&n);
    let text = linked["text"].as_str().unwrap();
    assert!(text.ends_with("<https://orchestrator.example.com/console/incidents/inc-42|Open inc-42 in the console>"), "{text}");
}
