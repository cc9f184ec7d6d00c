//! The three platforms against real things: Render's API served by an axum server on a
//! loopback port, shell commands, and env files in a temporary directory.

use axum::body::Bytes;
use axum::extract::{Path, Request, State};
use axum::http::{header, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use chrono::{TimeZone, Utc};
use orchestrator::platform::command::{command_phase, CommandPlatform};
use orchestrator::platform::env_file::{read_value, set_value, EnvFilePlatform};
use orchestrator::platform::render::RenderPlatform;
use orchestrator::platform::retry::parse_retry_after;
use orchestrator::playbook::{CommandConfig, EnvFileConfig, RenderConfig};
use orchestrator::ports::{DeployPhase, Platform, PlatformError};
use orchestrator::secret::Secret;
use serde_json::{json, Value};
use std::collections::{BTreeMap, VecDeque};
use std::net::SocketAddr;
use std::os::unix::fs::{MetadataExt, PermissionsExt};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

// ---------------------------------------------------------------- a fake Render

const KEY: &str = "rnd_SECRET_api_key_123456";
const SERVICE: &str = "srv-test";

/// A scripted answer taken before the route runs.
#[derive(Clone)]
enum Fault {
    Status(u16),
    /// 429 with this `Retry-After` value.
    TooMany(&'static str),
}

#[derive(Default)]
struct Books {
    env: BTreeMap<String, String>,
    /// Oldest first.
    deploys: Vec<Value>,
    faults: VecDeque<Fault>,
    /// (method, path, when) of every request, faulted or not.
    log: Vec<(String, String, Instant)>,
    bulk_puts: u32,
    /// PUTs are answered 200 but not stored (a platform that loses writes).
    lose_writes: bool,
    /// Status of deploys created by POST.
    new_deploy_status: String,
    /// The next POST creates the deploy but answers 500 (the answer is lost).
    post_creates_then_500: bool,
    /// POST answers `202` with no body.
    post_202_empty: bool,
    /// The next POST is rate limited before anything is created.
    post_429_first: bool,
}

type Shared = Arc<Mutex<Books>>;

fn render_error(status: StatusCode, message: String) -> Response {
    (status, Json(json!({ "id": "error", "message": message }))).into_response()
}

async fn gate(State(s): State<Shared>, req: Request, next: Next) -> Response {
    let auth = req.headers().get(header::AUTHORIZATION).and_then(|v| v.to_str().ok()).unwrap_or("").to_string();
    let fault = {
        let mut b = s.lock().unwrap();
        b.log.push((req.method().to_string(), req.uri().to_string(), Instant::now()));
        b.faults.pop_front()
    };
    // Error bodies echo the credentials back, as careless servers do: the client must
    // not pass them on.
    if auth != format!("Bearer {KEY}") {
        return render_error(StatusCode::UNAUTHORIZED, format!("invalid token in header {auth:?}"));
    }
    match fault {
        Some(Fault::Status(code)) => render_error(StatusCode::from_u16(code).unwrap(), format!("injected failure for {auth}")),
        Some(Fault::TooMany(after)) => {
            let mut r = render_error(StatusCode::TOO_MANY_REQUESTS, "rate limited".into());
            r.headers_mut().insert(header::RETRY_AFTER, after.parse().unwrap());
            r
        }
        None => next.run(req).await,
    }
}

async fn get_env(State(s): State<Shared>, Path((_id, key)): Path<(String, String)>) -> Response {
    match s.lock().unwrap().env.get(&key) {
        Some(v) => Json(json!({ "key": key, "value": v })).into_response(),
        None => render_error(StatusCode::NOT_FOUND, "env var not found".into()),
    }
}

async fn put_env(State(s): State<Shared>, Path((_id, key)): Path<(String, String)>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap();
    let value = v["value"].as_str().unwrap().to_string();
    let mut b = s.lock().unwrap();
    if !b.lose_writes {
        b.env.insert(key.clone(), value.clone());
    }
    Json(json!({ "key": key, "value": value })).into_response()
}

async fn bulk_put(State(s): State<Shared>) -> Response {
    s.lock().unwrap().bulk_puts += 1;
    render_error(StatusCode::METHOD_NOT_ALLOWED, "the test server forbids the bulk PUT".into())
}

fn deploy_json(id: &str, status: &str, created_at: &str) -> Value {
    json!({ "id": id, "status": status, "trigger": "api", "createdAt": created_at, "updatedAt": created_at, "finishedAt": null })
}

async fn create_deploy(State(s): State<Shared>, body: Bytes) -> Response {
    let v: Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v, json!({ "clearCache": "do_not_clear" }));
    let mut b = s.lock().unwrap();
    if b.post_429_first {
        b.post_429_first = false;
        let mut r = render_error(StatusCode::TOO_MANY_REQUESTS, "rate limited".into());
        r.headers_mut().insert(header::RETRY_AFTER, "0".parse().unwrap());
        return r;
    }
    let id = format!("dep-{}", b.deploys.len() + 1);
    let status = if b.new_deploy_status.is_empty() { "build_in_progress".to_string() } else { b.new_deploy_status.clone() };
    let d = deploy_json(&id, &status, &Utc::now().to_rfc3339());
    b.deploys.push(d.clone());
    if b.post_creates_then_500 {
        b.post_creates_then_500 = false;
        return render_error(StatusCode::INTERNAL_SERVER_ERROR, "lost the answer".into());
    }
    if b.post_202_empty {
        return StatusCode::ACCEPTED.into_response();
    }
    (StatusCode::CREATED, Json(d)).into_response()
}

async fn list_deploys(State(s): State<Shared>) -> Response {
    let b = s.lock().unwrap();
    let items: Vec<Value> = b.deploys.iter().rev().take(20).map(|d| json!({ "deploy": d, "cursor": d["id"] })).collect();
    Json(items).into_response()
}

async fn get_deploy(State(s): State<Shared>, Path((_id, did)): Path<(String, String)>) -> Response {
    match s.lock().unwrap().deploys.iter().find(|d| d["id"] == did.as_str()) {
        Some(d) => Json(d.clone()).into_response(),
        None => render_error(StatusCode::NOT_FOUND, "deploy not found".into()),
    }
}

async fn serve(router: Router) -> SocketAddr {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    tokio::spawn(async move { axum::serve(listener, router).await.unwrap() });
    addr
}

async fn fake_render() -> (Shared, SocketAddr) {
    let s: Shared = Arc::default();
    let router = Router::new()
        .route("/v1/services/{id}/env-vars", get(|| async { StatusCode::OK }).put(bulk_put))
        .route("/v1/services/{id}/env-vars/{key}", get(get_env).put(put_env))
        .route("/v1/services/{id}/deploys", get(list_deploys).post(create_deploy))
        .route("/v1/services/{id}/deploys/{did}", get(get_deploy))
        .layer(middleware::from_fn_with_state(s.clone(), gate))
        .with_state(s.clone());
    (s.clone(), serve(router).await)
}

fn render_cfg(addr: SocketAddr, key: &str, deadline: Duration) -> RenderConfig {
    RenderConfig {
        base_url: url::Url::parse(&format!("http://{addr}")).unwrap(),
        api_key: Secret::new(key),
        service_id: SERVICE.into(),
        env_key: "REDIS_URL".into(),
        request_timeout: Duration::from_secs(5),
        retry_deadline: deadline,
    }
}

fn requests(s: &Shared) -> Vec<(String, String, Instant)> {
    s.lock().unwrap().log.clone()
}

fn assert_no_secret(e: &PlatformError, secrets: &[&str]) {
    let text = format!("{e} {e:?}");
    for s in secrets {
        assert!(!text.contains(s), "{s:?} leaked into {text}");
    }
}

const URL_A: &str = "rediss://default:pw-alpha-1@a.example:6379";
const URL_B: &str = "rediss://default:pw-bravo-2@b.example:6380/0";

#[tokio::test]
async fn render_reads_writes_one_var_and_reads_back() {
    let (s, addr) = fake_render().await;
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_secs(5)));
    assert_eq!(p.kind(), "render");
    assert_eq!(p.read_url().await.unwrap(), None, "404 means not set");
    p.write_url(URL_A).await.unwrap();
    assert_eq!(p.read_url().await.unwrap().as_deref(), Some(URL_A));
    p.write_url(URL_B).await.unwrap();
    assert_eq!(s.lock().unwrap().env.get("REDIS_URL").map(String::as_str), Some(URL_B));

    let log = requests(&s);
    let puts: Vec<_> = log.iter().filter(|(m, _, _)| m == "PUT").collect();
    assert_eq!(puts.len(), 2);
    assert!(puts.iter().all(|(_, p, _)| p == "/v1/services/srv-test/env-vars/REDIS_URL"), "{puts:?}");
    // Each write is followed by a read-back.
    let after_put = log.iter().skip_while(|(m, _, _)| m != "PUT").nth(1).unwrap();
    assert_eq!((after_put.0.as_str(), after_put.1.as_str()), ("GET", "/v1/services/srv-test/env-vars/REDIS_URL"));
    assert_eq!(s.lock().unwrap().bulk_puts, 0, "never the bulk PUT");
}

#[tokio::test]
async fn render_base_url_with_v1_is_accepted() {
    let (s, addr) = fake_render().await;
    let mut cfg = render_cfg(addr, KEY, Duration::from_secs(5));
    cfg.base_url = url::Url::parse(&format!("http://{addr}/v1/")).unwrap();
    RenderPlatform::new(&cfg).write_url(URL_A).await.unwrap();
    assert!(requests(&s).iter().all(|(_, p, _)| p.starts_with("/v1/services/")));
}

#[tokio::test]
async fn render_write_fails_when_read_back_differs() {
    let (s, addr) = fake_render().await;
    s.lock().unwrap().env.insert("REDIS_URL".into(), URL_A.into());
    s.lock().unwrap().lose_writes = true;
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_secs(5)));
    let e = p.write_url(URL_B).await.unwrap_err();
    assert!(matches!(e, PlatformError::Body(_)), "{e:?}");
    assert!(e.to_string().contains("read-back"), "{e}");
    assert_no_secret(&e, &["pw-alpha-1", "pw-bravo-2", KEY]);
}

#[tokio::test]
async fn render_honours_retry_after_seconds() {
    let (s, addr) = fake_render().await;
    s.lock().unwrap().faults.push_back(Fault::TooMany("1"));
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_secs(10)));
    assert_eq!(p.read_url().await.unwrap(), None);
    let log = requests(&s);
    assert_eq!(log.len(), 2);
    let gap = log[1].2 - log[0].2;
    assert!(gap >= Duration::from_secs(1), "retried after {gap:?}, before Retry-After");
}

#[test]
fn retry_after_parses_seconds_and_http_dates() {
    let now = Utc.with_ymd_and_hms(2015, 10, 21, 7, 27, 50).unwrap();
    assert_eq!(parse_retry_after("120", now), Some(Duration::from_secs(120)));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:28:00 GMT", now), Some(Duration::from_secs(10)));
    assert_eq!(parse_retry_after("Wed, 21 Oct 2015 07:00:00 GMT", now), Some(Duration::ZERO), "a past date means now");
    assert_eq!(parse_retry_after("soon", now), None);
}

#[tokio::test]
async fn render_retry_after_past_the_deadline_gives_up_at_once() {
    let (s, addr) = fake_render().await;
    s.lock().unwrap().faults.push_back(Fault::TooMany("3600"));
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_secs(5)));
    let started = Instant::now();
    let e = p.read_url().await.unwrap_err();
    assert!(matches!(e, PlatformError::Unavailable(_)) && e.is_retryable(), "{e:?}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(requests(&s).len(), 1);
}

#[tokio::test]
async fn render_retries_a_500_then_succeeds() {
    let (s, addr) = fake_render().await;
    s.lock().unwrap().env.insert("REDIS_URL".into(), URL_A.into());
    s.lock().unwrap().faults.extend([Fault::Status(500), Fault::Status(503)]);
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_secs(10)));
    assert_eq!(p.read_url().await.unwrap().as_deref(), Some(URL_A));
    let log = requests(&s);
    assert_eq!(log.len(), 3);
    // Backoff starts near 200 ms (jitter: between half and all of it) and doubles.
    assert!(log[1].2 - log[0].2 >= Duration::from_millis(100));
    assert!(log[2].2 - log[1].2 >= Duration::from_millis(200));
}

#[tokio::test]
async fn render_persistent_500_is_unavailable_at_the_deadline() {
    let (s, addr) = fake_render().await;
    s.lock().unwrap().faults.extend(std::iter::repeat_n(Fault::Status(500), 1000));
    let deadline = Duration::from_millis(1500);
    let p = RenderPlatform::new(&render_cfg(addr, KEY, deadline));
    let started = Instant::now();
    let e = p.read_url().await.unwrap_err();
    let took = started.elapsed();
    assert!(matches!(e, PlatformError::Unavailable(_)), "{e:?}");
    assert!(took >= deadline, "gave up after {took:?}, before the deadline");
    assert!(took < deadline + Duration::from_secs(1), "gave up after {took:?}, long after the deadline");
    let n = requests(&s).len();
    assert!((3..=10).contains(&n), "{n} requests: backoff is exponential, not a hot loop");
    assert!(e.to_string().contains("HTTP 500"), "{e}");
    assert_no_secret(&e, &[KEY]);
}

#[tokio::test]
async fn render_401_is_refused_at_once_without_leaking_the_key() {
    let (s, addr) = fake_render().await;
    let wrong = "rnd_WRONG_key_987654321";
    let p = RenderPlatform::new(&render_cfg(addr, wrong, Duration::from_secs(30)));
    let started = Instant::now();
    let e = p.write_url(URL_A).await.unwrap_err();
    assert!(matches!(e, PlatformError::Refused(_)) && !e.is_retryable(), "{e:?}");
    assert!(e.to_string().contains("401"), "{e}");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(requests(&s).len(), 1);
    assert_no_secret(&e, &[wrong, "pw-alpha-1"]);
    let debug = format!("{p:?}");
    assert!(!debug.contains(wrong), "{debug}");
}

#[tokio::test]
async fn render_errors_never_show_the_key_or_password() {
    let (s, addr) = fake_render().await;
    // 500 bodies echo the Authorization header; the deadline turns them into Unavailable.
    s.lock().unwrap().faults.extend(std::iter::repeat_n(Fault::Status(500), 1000));
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_millis(300)));
    let e = p.write_url(URL_A).await.unwrap_err();
    assert!(matches!(e, PlatformError::Unavailable(_)), "{e:?}");
    assert_no_secret(&e, &[KEY, "pw-alpha-1"]);
    for e in [p.read_url().await.unwrap_err(), p.deploy().await.unwrap_err(), p.deploy_status("dep-1").await.unwrap_err()] {
        assert_no_secret(&e, &[KEY]);
    }
    // Nothing listens here: a connect error.
    let gone = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap()
    };
    let p = RenderPlatform::new(&render_cfg(gone, KEY, Duration::from_millis(300)));
    let e = p.read_url().await.unwrap_err();
    assert!(matches!(e, PlatformError::Unavailable(_)), "{e:?}");
    assert_no_secret(&e, &[KEY]);
}

#[tokio::test]
async fn render_deploy_and_status_mapping() {
    let (s, addr) = fake_render().await;
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_secs(5)));
    let d = p.deploy().await.unwrap();
    assert_eq!(d.id, "dep-1");
    assert_eq!(d.status, "build_in_progress");
    assert_eq!(d.phase, DeployPhase::InProgress);
    assert!(d.created_at.is_some());
    let posts = requests(&s).iter().filter(|(m, _, _)| m == "POST").count();
    assert_eq!(posts, 1);

    let cases = [
        ("created", DeployPhase::InProgress),
        ("queued", DeployPhase::InProgress),
        ("build_in_progress", DeployPhase::InProgress),
        ("update_in_progress", DeployPhase::InProgress),
        ("pre_deploy_in_progress", DeployPhase::InProgress),
        ("live", DeployPhase::Live),
        ("build_failed", DeployPhase::Failed),
        ("update_failed", DeployPhase::Failed),
        ("pre_deploy_failed", DeployPhase::Failed),
        ("canceled", DeployPhase::Canceled),
        ("deactivated", DeployPhase::Superseded),
    ];
    for (i, (status, phase)) in cases.iter().enumerate() {
        let id = format!("dep-s{i}");
        s.lock().unwrap().deploys.push(deploy_json(&id, status, "2026-01-02T03:04:05.123456Z"));
        let info = p.deploy_status(&id).await.unwrap();
        assert_eq!((info.status.as_str(), info.phase), (*status, *phase), "{id}");
        assert_eq!(info.created_at, Some(Utc.with_ymd_and_hms(2026, 1, 2, 3, 4, 5).unwrap() + chrono::Duration::microseconds(123456)));
    }
    let e = p.deploy_status("dep-missing").await.unwrap_err();
    assert!(matches!(e, PlatformError::Refused(_)), "{e:?}");
}

#[tokio::test]
async fn render_deploy_whose_answer_was_lost_is_not_posted_twice() {
    let (s, addr) = fake_render().await;
    s.lock().unwrap().post_creates_then_500 = true;
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_secs(5)));
    let d = p.deploy().await.unwrap();
    assert_eq!(d.id, "dep-1");
    assert_eq!(s.lock().unwrap().deploys.len(), 1, "one deploy created");
    assert_eq!(requests(&s).iter().filter(|(m, _, _)| m == "POST").count(), 1);
}

#[tokio::test]
async fn render_deploy_retries_a_rate_limited_post() {
    let (s, addr) = fake_render().await;
    // A 429 means nothing was created: safe to POST again.
    s.lock().unwrap().post_429_first = true;
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_secs(5)));
    let d = p.deploy().await.unwrap();
    assert_eq!(d.id, "dep-1");
    assert_eq!(s.lock().unwrap().deploys.len(), 1);
    assert_eq!(requests(&s).iter().filter(|(m, _, _)| m == "POST").count(), 2);
}

#[tokio::test]
async fn render_queued_deploy_without_body_is_found_in_the_list() {
    let (s, addr) = fake_render().await;
    s.lock().unwrap().deploys.push(deploy_json("dep-old", "live", "2020-01-01T00:00:00Z"));
    s.lock().unwrap().post_202_empty = true;
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_secs(5)));
    let d = p.deploy().await.unwrap();
    assert_eq!(d.id, "dep-2");
}

#[tokio::test]
async fn render_deploys_since_filters_and_orders_newest_first() {
    let (s, addr) = fake_render().await;
    {
        let mut b = s.lock().unwrap();
        b.deploys.push(deploy_json("dep-a", "live", "2026-03-01T10:00:00Z"));
        b.deploys.push(deploy_json("dep-b", "deactivated", "2026-03-01T11:00:00Z"));
        b.deploys.push(deploy_json("dep-c", "build_in_progress", "2026-03-01T12:00:00Z"));
    }
    let p = RenderPlatform::new(&render_cfg(addr, KEY, Duration::from_secs(5)));
    let since = Utc.with_ymd_and_hms(2026, 3, 1, 11, 0, 0).unwrap();
    let got = p.deploys_since(since).await.unwrap();
    let ids: Vec<_> = got.iter().map(|d| d.id.as_str()).collect();
    assert_eq!(ids, ["dep-c", "dep-b"]);
    assert_eq!(got[1].phase, DeployPhase::Superseded);
    assert!(requests(&s).iter().any(|(m, p, _)| m == "GET" && p == "/v1/services/srv-test/deploys?limit=20"));
}

// ---------------------------------------------------------------- command

fn sh_quote(p: &std::path::Path) -> String {
    format!("'{}'", p.display())
}

#[tokio::test]
async fn command_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let d = sh_quote(dir.path());
    let cfg = CommandConfig {
        read: format!("cat {d}/url 2>/dev/null || true"),
        switch: format!("[ \"$ORCH_ACTION\" = switch ] && printf '%s\\n' \"$ORCH_REDIS_URL\" > {d}/url"),
        deploy: format!("echo \"deploying with $ORCH_REDIS_URL\" > {d}/deploy.log; echo building; echo dep-42"),
        status: format!("[ \"$ORCH_DEPLOY_ID\" = dep-42 ] && cat {d}/status || echo unknown-id"),
        timeout: Duration::from_secs(10),
    };
    let p = CommandPlatform::new(&cfg);
    assert_eq!(p.kind(), "command");
    assert_eq!(p.read_url().await.unwrap(), None);
    p.write_url(URL_A).await.unwrap();
    assert_eq!(p.read_url().await.unwrap().as_deref(), Some(URL_A));

    let before = Utc::now();
    let d = p.deploy().await.unwrap();
    assert_eq!(d.id, "dep-42");
    assert_eq!(std::fs::read_to_string(dir.path().join("deploy.log")).unwrap().trim(), format!("deploying with {URL_A}"));
    for (word, phase) in [
        ("in_progress", DeployPhase::InProgress),
        ("update_in_progress", DeployPhase::InProgress),
        ("live", DeployPhase::Live),
        ("build_failed", DeployPhase::Failed),
        ("canceled", DeployPhase::Canceled),
    ] {
        std::fs::write(dir.path().join("status"), format!("{word}\n")).unwrap();
        let s = p.deploy_status("dep-42").await.unwrap();
        assert_eq!((s.id.as_str(), s.status.as_str(), s.phase), ("dep-42", word, phase));
    }
    let e = p.deploy_status("dep-other").await.unwrap_err();
    assert!(matches!(e, PlatformError::Body(_)), "{e:?}");

    let since = p.deploys_since(before).await.unwrap();
    assert_eq!(since.iter().map(|d| d.id.as_str()).collect::<Vec<_>>(), ["dep-42"]);
    assert!(p.deploys_since(Utc::now() + chrono::Duration::seconds(5)).await.unwrap().is_empty());
}

#[test]
fn command_status_words() {
    assert_eq!(command_phase("live"), Some(DeployPhase::Live));
    assert_eq!(command_phase("failed"), Some(DeployPhase::Failed));
    assert_eq!(command_phase("pre_deploy_failed"), Some(DeployPhase::Failed));
    assert_eq!(command_phase("deactivated"), Some(DeployPhase::Superseded));
    assert_eq!(command_phase("queued"), Some(DeployPhase::InProgress));
    assert_eq!(command_phase("banana"), None);
}

#[tokio::test]
async fn command_deploy_without_an_id_gets_one() {
    let cfg = CommandConfig {
        read: "true".into(),
        switch: "true".into(),
        deploy: "true".into(),
        status: "echo live".into(),
        timeout: Duration::from_secs(5),
    };
    let p = CommandPlatform::new(&cfg);
    let a = p.deploy().await.unwrap();
    let b = p.deploy().await.unwrap();
    assert!(a.id.starts_with("command-") && a.id != b.id, "{a:?} {b:?}");
    assert_eq!(p.deploy_status(&a.id).await.unwrap().phase, DeployPhase::Live);
}

#[tokio::test]
async fn command_nonzero_exit_is_an_error_with_the_code_and_no_password() {
    let cfg = CommandConfig {
        read: "true".into(),
        switch: "echo \"cannot apply $ORCH_REDIS_URL\" >&2; echo 'pw-alpha-1 rejected' >&2; exit 3".into(),
        deploy: "true".into(),
        status: "true".into(),
        timeout: Duration::from_secs(5),
    };
    let e = CommandPlatform::new(&cfg).write_url(URL_A).await.unwrap_err();
    let PlatformError::Command(text) = &e else { panic!("{e:?}") };
    assert!(text.contains("code 3"), "{text}");
    assert!(text.contains("rejected"), "stderr tail quoted: {text}");
    assert_no_secret(&e, &["pw-alpha-1", URL_A]);
}

/// Whether a process is gone (or a zombie nobody reaps, which holds no resources).
fn gone(pid: u32) -> bool {
    match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
        Err(_) => true,
        Ok(stat) => stat.rsplit(')').next().is_some_and(|rest| rest.trim_start().starts_with('Z')),
    }
}

async fn wait_until(what: &str, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !cond() {
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn command_timeout_kills_the_whole_process_group() {
    let dir = tempfile::tempdir().unwrap();
    let pidfile = dir.path().join("pid");
    let cfg = CommandConfig {
        read: "true".into(),
        switch: "true".into(),
        // A grandchild that would outlive a killed shell if only the shell died.
        deploy: format!("sleep 300 & echo $! > {}; wait", sh_quote(&pidfile)),
        status: "true".into(),
        timeout: Duration::from_millis(500),
    };
    let started = Instant::now();
    let e = CommandPlatform::new(&cfg).deploy().await.unwrap_err();
    assert!(started.elapsed() < Duration::from_secs(5), "bounded by the timeout");
    let PlatformError::Command(text) = &e else { panic!("{e:?}") };
    assert!(text.contains("timed out"), "{text}");
    let pid: u32 = std::fs::read_to_string(&pidfile).unwrap().trim().parse().unwrap();
    wait_until("the grandchild is killed", || gone(pid)).await;
}

// ---------------------------------------------------------------- env file

const ENV_TEXT: &str = "# service settings\n\
NODE_ENV=production\n\
\n\
export REDIS_URL=\"redis://old:6379\" # the primary\n\
  # indented comment\n\
WORKERS=4\n\
QUOTED='single # not a comment'\n";

#[test]
fn env_file_rewrite_keeps_every_other_byte() {
    let new = set_value(ENV_TEXT, "REDIS_URL", URL_B);
    let expected = ENV_TEXT.replace("\"redis://old:6379\"", &format!("\"{URL_B}\""));
    assert_eq!(new, expected);
    assert_eq!(read_value(&new, "REDIS_URL").as_deref(), Some(URL_B));
    assert_eq!(read_value(&new, "QUOTED").as_deref(), Some("single # not a comment"));
    assert_eq!(read_value(&new, "WORKERS").as_deref(), Some("4"));
    assert_eq!(read_value(&new, "MISSING"), None);

    // Missing key: appended, even after a last line without a newline.
    let added = set_value("A=1\r\nB=2", "REDIS_URL", URL_A);
    assert_eq!(added, format!("A=1\r\nB=2\nREDIS_URL={URL_A}\n"));
    // CRLF and an inline comment are kept on the rewritten line.
    assert_eq!(set_value("REDIS_URL=redis://x:1 # old\r\nZ=9\r\n", "REDIS_URL", "redis://y:2"), "REDIS_URL=redis://y:2 # old\r\nZ=9\r\n");
}

#[test]
fn env_file_values_needing_quotes_stay_literal() {
    let tricky = "redis://u:p$w'd \"x\"@h:1/0?a=1&b=2";
    let text = set_value("REDIS_URL=redis://old\n", "REDIS_URL", tricky);
    assert_eq!(read_value(&text, "REDIS_URL").as_deref(), Some(tricky), "{text}");
    let dollar = "redis://:pa$$word@h:1";
    let text = set_value("", "REDIS_URL", dollar);
    assert_eq!(text, format!("REDIS_URL='{dollar}'\n"), "single quotes: no interpolation");
    assert_eq!(read_value(&text, "REDIS_URL").as_deref(), Some(dollar));
    assert_eq!(read_value("REDIS_URL=\"a\\\"b\"\n", "REDIS_URL").as_deref(), Some("a\"b"));
    assert_eq!(read_value("REDIS_URL = spaced \n", "REDIS_URL").as_deref(), Some("spaced"));
    assert_eq!(read_value("REDIS_URL=first\nREDIS_URL=second\n", "REDIS_URL").as_deref(), Some("second"), "last wins");
}

fn env_cfg(path: std::path::PathBuf, restart: &str, timeout: Duration) -> EnvFileConfig {
    EnvFileConfig { path, key: "REDIS_URL".into(), restart: restart.into(), timeout }
}

#[tokio::test]
async fn env_file_write_is_atomic_and_keeps_permissions() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    std::fs::write(&path, ENV_TEXT).unwrap();
    std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
    let inode = std::fs::metadata(&path).unwrap().ino();
    let p = EnvFilePlatform::new(&env_cfg(path.clone(), "true", Duration::from_secs(5)));
    assert_eq!(p.kind(), "env-file");
    assert_eq!(p.read_url().await.unwrap().as_deref(), Some("redis://old:6379"));
    p.write_url(URL_B).await.unwrap();
    assert_ne!(std::fs::metadata(&path).unwrap().ino(), inode, "replaced by rename, not rewritten in place");

    // A reader running throughout only ever sees a whole file, old or new.
    let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
    let reader = {
        let (path, stop) = (path.clone(), stop.clone());
        std::thread::spawn(move || {
            let mut seen = 0u32;
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                let text = std::fs::read_to_string(&path).unwrap();
                assert!(
                    text.starts_with("# service settings\n") && text.ends_with("QUOTED='single # not a comment'\n"),
                    "torn read: {text:?}"
                );
                seen += 1;
            }
            seen
        })
    };
    for i in 0..50 {
        p.write_url(if i % 2 == 0 { URL_A } else { URL_B }).await.unwrap();
    }
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    assert!(reader.join().unwrap() > 0);

    assert_eq!(p.read_url().await.unwrap().as_deref(), Some(URL_B));
    assert_eq!(std::fs::read_to_string(&path).unwrap(), set_value(ENV_TEXT, "REDIS_URL", URL_B));
    let meta = std::fs::metadata(&path).unwrap();
    assert_eq!(meta.permissions().mode() & 0o777, 0o640);
    let names: Vec<_> = std::fs::read_dir(dir.path()).unwrap().map(|e| e.unwrap().file_name()).collect();
    assert_eq!(names, [std::ffi::OsString::from(".env")], "no temporary file left behind");
}

#[tokio::test]
async fn env_file_missing_file_is_created_with_the_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("app.env");
    let p = EnvFilePlatform::new(&env_cfg(path.clone(), "true", Duration::from_secs(5)));
    assert_eq!(p.read_url().await.unwrap(), None);
    p.write_url(URL_A).await.unwrap();
    assert_eq!(std::fs::read_to_string(&path).unwrap(), format!("REDIS_URL={URL_A}\n"));
    assert_eq!(std::fs::metadata(&path).unwrap().permissions().mode() & 0o777, 0o600, "a new file holding a password is private");
    let e = p.write_url("redis://a\nINJECTED=1").await.unwrap_err();
    assert!(matches!(e, PlatformError::Refused(_)), "{e:?}");
}

#[tokio::test]
async fn env_file_restart_success_is_live_and_failure_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(".env");
    let log = dir.path().join("restarts");
    std::fs::write(&path, "REDIS_URL=redis://old:1\n").unwrap();
    let restart = format!("echo \"$ORCH_DEPLOY_ID $ORCH_REDIS_URL\" >> {}; [ ! -e {}/fail ]", sh_quote(&log), sh_quote(dir.path()));
    let p = EnvFilePlatform::new(&env_cfg(path, &restart, Duration::from_secs(10)));
    let before = Utc::now();
    p.write_url(URL_A).await.unwrap();

    let ok = p.deploy().await.unwrap();
    assert_eq!((ok.id.as_str(), ok.status.as_str(), ok.phase), ("restart-1", "live", DeployPhase::Live));
    assert_eq!(std::fs::read_to_string(&log).unwrap(), format!("restart-1 {URL_A}\n"));

    std::fs::write(dir.path().join("fail"), "").unwrap();
    let failed = p.deploy().await.unwrap();
    assert_eq!((failed.id.as_str(), failed.phase), ("restart-2", DeployPhase::Failed));

    assert_eq!(p.deploy_status("restart-1").await.unwrap(), ok);
    assert_eq!(p.deploy_status("restart-2").await.unwrap(), failed);
    assert!(p.deploy_status("restart-9").await.is_err());
    let since: Vec<_> = p.deploys_since(before).await.unwrap().into_iter().map(|d| d.id).collect();
    assert_eq!(since, ["restart-2", "restart-1"]);
}

#[tokio::test]
async fn env_file_restart_timeout_is_failed() {
    let dir = tempfile::tempdir().unwrap();
    let p = EnvFilePlatform::new(&env_cfg(dir.path().join(".env"), "sleep 300", Duration::from_millis(300)));
    let started = Instant::now();
    let d = p.deploy().await.unwrap();
    assert_eq!((d.status.as_str(), d.phase), ("timed_out", DeployPhase::Failed));
    assert!(started.elapsed() < Duration::from_secs(5));
}

#[tokio::test]
async fn platform_for_builds_each_kind() {
    use orchestrator::playbook::PlatformConfig;
    let dir = tempfile::tempdir().unwrap();
    let cmd = CommandConfig {
        read: "true".into(),
        switch: "true".into(),
        deploy: "true".into(),
        status: "true".into(),
        timeout: Duration::from_secs(1),
    };
    let render = render_cfg("127.0.0.1:9".parse().unwrap(), KEY, Duration::from_secs(1));
    let kinds: Vec<_> = [
        PlatformConfig::Render(render),
        PlatformConfig::Command(cmd),
        PlatformConfig::EnvFile(env_cfg(dir.path().join(".env"), "true", Duration::from_secs(1))),
    ]
    .iter()
    .map(|c| orchestrator::platform::platform_for(c).kind())
    .collect();
    assert_eq!(kinds, ["render", "command", "env-file"]);
}
