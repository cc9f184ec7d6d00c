//! Shared helpers for the sandbox's integration tests: waiting on conditions with a
//! deadline, and small HTTP and Redis shortcuts.

#![allow(dead_code)]

use std::future::Future;
use std::time::{Duration, Instant};

use sandbox::{RedisServer, Sandbox, SandboxConfig};
use serde_json::Value;

pub const SERVICE_KEY: &str = "test-service-key";
pub const PLATFORM_KEY: &str = "test-platform-key";

/// Polls `f` until it yields `Some`, failing the test after `timeout`.
pub async fn eventually<T, F, Fut>(what: &str, timeout: Duration, mut f: F) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = Option<T>>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(v) = f().await {
            return v;
        }
        if Instant::now() >= deadline {
            panic!("timed out after {timeout:?} waiting for {what}");
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

pub fn config(redis: &RedisServer) -> SandboxConfig {
    let mut c = SandboxConfig::new(redis.url());
    c.service_api_key = SERVICE_KEY.into();
    c.platform_api_key = PLATFORM_KEY.into();
    c.deploy_steps_ms = 50;
    c
}

pub fn http() -> reqwest::Client {
    reqwest::Client::builder().timeout(Duration::from_secs(5)).build().unwrap()
}

/// GET on the service with the API key; (status, JSON body).
pub async fn svc_get(sb: &Sandbox, path: &str) -> (u16, Value) {
    let r = http().get(format!("{}{path}", sb.service_url())).header("X-API-Key", SERVICE_KEY).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap())
}

/// Submits a job through the trigger endpoint; returns the job id.
pub async fn trigger(sb: &Sandbox, key: &str, queue: &str, body: Value) -> String {
    let r = http()
        .post(format!("{}/api/v1/triggers/{key}?queue={queue}", sb.service_url()))
        .header("X-API-Key", SERVICE_KEY)
        .json(&body)
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201, "trigger should be accepted");
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["queue"], queue);
    assert_eq!(v["status"], "queued");
    v["jobId"].as_str().unwrap().to_string()
}

/// Waits until the job reaches `state` (as the jobs endpoint reports it).
pub async fn wait_job_state(sb: &Sandbox, queue: &str, id: &str, state: &str) -> Value {
    eventually(&format!("job {queue}/{id} to be {state}"), Duration::from_secs(5), || async {
        let (s, v) = svc_get(sb, &format!("/api/v1/jobs/{queue}/{id}")).await;
        (s == 200 && v["state"] == state).then_some(v)
    })
    .await
}

/// Platform request with the bearer token.
pub fn platform(sb: &Sandbox, method: reqwest::Method, path: &str) -> reqwest::RequestBuilder {
    http().request(method, format!("{}{path}", sb.platform_url())).bearer_auth(PLATFORM_KEY)
}

pub async fn redis_conn(url: &str) -> redis::aio::MultiplexedConnection {
    redis::Client::open(url).unwrap().get_multiplexed_async_connection().await.unwrap()
}

/// Creates a deploy and waits until it reaches a final status; returns the deploy.
pub async fn deploy_and_wait(sb: &Sandbox) -> Value {
    let sid = sb.service_id().to_string();
    let r = platform(sb, reqwest::Method::POST, &format!("/v1/services/{sid}/deploys"))
        .json(&serde_json::json!({"clearCache": "do_not_clear"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let d: Value = r.json().await.unwrap();
    assert_eq!(d["status"], "build_in_progress");
    assert_eq!(d["trigger"], "api");
    assert!(d["finishedAt"].is_null());
    let id = d["id"].as_str().unwrap().to_string();
    assert!(id.starts_with("dep-"));
    eventually("deploy to finish", Duration::from_secs(5), || async {
        let r = platform(sb, reqwest::Method::GET, &format!("/v1/services/{sid}/deploys/{id}")).send().await.unwrap();
        let d: Value = r.json().await.unwrap();
        let s = d["status"].as_str().unwrap().to_string();
        (!s.ends_with("_in_progress")).then_some(d)
    })
    .await
}
