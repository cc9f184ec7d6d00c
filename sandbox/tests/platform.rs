//! The Render-compatible platform against real redis-server processes: env-var writes
//! take effect only through a deploy, deploys restart the service on the new Redis,
//! and injected faults (failed deploys, idle workers, 429s) behave as documented.

mod common;

use std::time::Duration;

use common::*;
use redis::AsyncCommands;
use reqwest::Method;
use sandbox::RedisServer;
use serde_json::{json, Value};

async fn put_redis_url(sb: &sandbox::Sandbox, url: &str) {
    let sid = sb.service_id().to_string();
    let r = platform(sb, Method::PUT, &format!("/v1/services/{sid}/env-vars/REDIS_URL")).json(&json!({"value": url})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let v: Value = r.json().await.unwrap();
    assert_eq!(v, json!({"key": "REDIS_URL", "value": url}));
}

async fn stats(sb: &sandbox::Sandbox) -> Value {
    platform(sb, Method::GET, "/admin/stats").send().await.unwrap().json().await.unwrap()
}

#[tokio::test]
async fn env_write_and_deploy_move_the_service_to_the_new_redis() {
    let primary = RedisServer::start().unwrap();
    let backup = RedisServer::start().unwrap();
    let sb = sandbox::start(config(&primary)).await.unwrap();
    let sid = sb.service_id().to_string();
    assert_eq!(sid, "srv-sandbox");

    let r = platform(&sb, Method::GET, &format!("/v1/services/{sid}/env-vars/REDIS_URL")).send().await.unwrap();
    let v: Value = r.json().await.unwrap();
    assert_eq!(v["value"], primary.url());

    primary.kill();
    put_redis_url(&sb, &backup.url()).await;
    // Stored, not applied: the service still points at the dead primary.
    let list: Value = platform(&sb, Method::GET, &format!("/v1/services/{sid}/env-vars")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list[0]["envVar"], json!({"key": "REDIS_URL", "value": backup.url()}));
    assert!(list[0]["cursor"].is_string());
    assert_eq!(sb.service().config().unwrap().redis_url, primary.url());

    let d = deploy_and_wait(&sb).await;
    assert_eq!(d["status"], "live");
    assert!(d["finishedAt"].is_string());
    assert_eq!(sb.service().config().unwrap().redis_url, backup.url());

    // Healthy again, and a job completes on the backup.
    let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let id = trigger(&sb, "redis-recovery-test", "default", json!({})).await;
    wait_job_state(&sb, "default", &id, "completed").await;
    let mut c = redis_conn(&backup.url()).await;
    let score: Option<f64> = c.zscore("bull:default:completed", &id).await.unwrap();
    assert!(score.is_some(), "the job must have completed in the backup Redis");
    let (_, m) = svc_get(&sb, "/api/v1/queue/metrics").await;
    assert_eq!(m["connection_status"], "connected");
    assert_eq!(m["completed_jobs"], 1);

    // A second deploy deactivates the first; the list is newest first.
    let d2 = deploy_and_wait(&sb).await;
    assert_eq!(d2["status"], "live");
    let list: Value =
        platform(&sb, Method::GET, &format!("/v1/services/{sid}/deploys?limit=5")).send().await.unwrap().json().await.unwrap();
    assert_eq!(list.as_array().unwrap().len(), 2);
    assert_eq!(list[0]["deploy"]["id"], d2["id"]);
    assert_eq!(list[1]["deploy"]["id"], d["id"]);
    assert_eq!(list[1]["deploy"]["status"], "deactivated");
    let one: Value = platform(&sb, Method::GET, &format!("/v1/services/{sid}/deploys?limit=1")).send().await.unwrap().json().await.unwrap();
    assert_eq!(one.as_array().unwrap().len(), 1);

    let s = stats(&sb).await;
    assert_eq!(s["env_write_counts"][format!("REDIS_URL={}", backup.url())], 1);
    assert_eq!(s["env_writes"].as_array().unwrap().len(), 1);
    assert_eq!(s["deploy_count"], 2);
    assert!(s["requests"].as_u64().unwrap() >= 6);
    sb.shutdown().await;
}

#[tokio::test]
async fn failed_deploys_keep_the_old_redis_and_idle_workers_never_finish_jobs() {
    let primary = RedisServer::start().unwrap();
    let backup = RedisServer::start().unwrap();
    let sb = sandbox::start(config(&primary)).await.unwrap();

    let r = platform(&sb, Method::POST, "/admin/faults")
        .json(&json!({"fail_next_deploys": 1, "fail_status": "update_failed"}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 200);
    put_redis_url(&sb, &backup.url()).await;
    let d = deploy_and_wait(&sb).await;
    assert_eq!(d["status"], "update_failed");
    assert!(d["finishedAt"].is_string());
    // Still on the primary: a job lands and completes there.
    assert_eq!(sb.service().config().unwrap().redis_url, primary.url());
    let id = trigger(&sb, "still-primary", "default", json!({})).await;
    wait_job_state(&sb, "default", &id, "completed").await;
    let mut p = redis_conn(&primary.url()).await;
    assert!(p.zscore::<_, _, Option<f64>>("bull:default:completed", &id).await.unwrap().is_some());

    // build_failed, then a deploy that goes live with no workers.
    platform(&sb, Method::POST, "/admin/faults")
        .json(&json!({"fail_next_deploys": 1, "fail_status": "build_failed", "workers_enabled": false}))
        .send()
        .await
        .unwrap();
    assert_eq!(deploy_and_wait(&sb).await["status"], "build_failed");
    assert_eq!(sb.service().config().unwrap().redis_url, primary.url());
    assert_eq!(deploy_and_wait(&sb).await["status"], "live");
    assert_eq!(sb.service().config().unwrap().redis_url, backup.url());
    assert!(!sb.service().config().unwrap().workers_enabled);

    let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200, "healthy, yet nothing is processed");
    let stuck = trigger(&sb, "never", "default", json!({})).await;
    // Proving a negative needs a window: twenty job times is plenty for a worker.
    tokio::time::sleep(Duration::from_millis(400)).await;
    let (_, j) = svc_get(&sb, &format!("/api/v1/jobs/default/{stuck}")).await;
    assert_eq!(j["state"], "waiting");
    let (_, m) = svc_get(&sb, "/api/v1/queue/metrics").await;
    assert_eq!(m["waiting_jobs"], 1);
    assert_eq!(m["active_jobs"], 0);
    let mut b = redis_conn(&backup.url()).await;
    assert_eq!(b.llen::<_, u64>("bull:default:wait").await.unwrap(), 1);

    // Re-enabling workers and redeploying recovers.
    platform(&sb, Method::POST, "/admin/faults").json(&json!({"workers_enabled": true})).send().await.unwrap();
    assert_eq!(deploy_and_wait(&sb).await["status"], "live");
    wait_job_state(&sb, "default", &stuck, "completed").await;

    let s = stats(&sb).await;
    let statuses: Vec<&str> = s["deploys"].as_array().unwrap().iter().map(|d| d["status"].as_str().unwrap()).collect();
    assert_eq!(statuses, ["update_failed", "build_failed", "deactivated", "live"]);
    sb.shutdown().await;
}

#[tokio::test]
async fn auth_rate_limits_and_injected_errors() {
    let redis = RedisServer::start().unwrap();
    let sb = sandbox::start(config(&redis)).await.unwrap();
    let sid = sb.service_id().to_string();
    let url = format!("{}/v1/services/{sid}/env-vars/REDIS_URL", sb.platform_url());

    // Auth is required everywhere, /admin included.
    assert_eq!(http().get(&url).send().await.unwrap().status().as_u16(), 401);
    assert_eq!(http().get(&url).bearer_auth("wrong").send().await.unwrap().status().as_u16(), 401);
    let admin = format!("{}/admin/stats", sb.platform_url());
    assert_eq!(http().get(&admin).send().await.unwrap().status().as_u16(), 401);
    let unknown = platform(&sb, Method::GET, "/v1/services/srv-other/env-vars/REDIS_URL").send().await.unwrap();
    assert_eq!(unknown.status().as_u16(), 404);
    let missing = platform(&sb, Method::GET, &format!("/v1/services/{sid}/env-vars/NOPE")).send().await.unwrap();
    assert_eq!(missing.status().as_u16(), 404);
    // No bulk replacement of every variable.
    let bulk = platform(&sb, Method::PUT, &format!("/v1/services/{sid}/env-vars"))
        .json(&json!([{"key": "REDIS_URL", "value": "x"}]))
        .send()
        .await
        .unwrap();
    assert_eq!(bulk.status().as_u16(), 405);

    platform(&sb, Method::POST, "/admin/faults")
        .json(&json!({"respond_429": 2, "retry_after_secs": 7, "respond_500": 1}))
        .send()
        .await
        .unwrap();
    for _ in 0..2 {
        let r = platform(&sb, Method::GET, &format!("/v1/services/{sid}/env-vars/REDIS_URL")).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 429);
        assert_eq!(r.headers()["retry-after"], "7");
    }
    let r = platform(&sb, Method::GET, &format!("/v1/services/{sid}/env-vars/REDIS_URL")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 500);
    let r = platform(&sb, Method::GET, &format!("/v1/services/{sid}/env-vars/REDIS_URL")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    // Admin requests are never faulted.
    let bad = platform(&sb, Method::POST, "/admin/faults").json(&json!({"fail_status": "exploded"})).send().await.unwrap();
    assert_eq!(bad.status().as_u16(), 400);

    // Slow answers, for client timeout tests.
    platform(&sb, Method::POST, "/admin/faults").json(&json!({"delay_ms": 300})).send().await.unwrap();
    let started = std::time::Instant::now();
    let r = platform(&sb, Method::GET, &format!("/v1/services/{sid}/deploys")).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    assert!(started.elapsed() >= Duration::from_millis(300));
    let s = stats(&sb).await;
    assert_eq!(s["deploy_count"], 0);
    assert!(s["requests"].as_u64().unwrap() >= 10);
    sb.shutdown().await;
}

#[tokio::test]
async fn redis_server_kit_kills_freezes_and_restarts() {
    let r = RedisServer::start().unwrap();
    assert_ne!(r.port(), 6379);
    assert_eq!(r.url(), format!("redis://127.0.0.1:{}", r.port()));
    let pid = r.pid();
    assert!(pid > 0);
    let mut c = redis_conn(&r.url()).await;
    let _: () = c.set("k", "v").await.unwrap();

    r.stop();
    let frozen = tokio::time::timeout(Duration::from_millis(300), redis::cmd("PING").query_async::<String>(&mut c)).await;
    assert!(frozen.is_err(), "a stopped server must not answer");
    r.cont();
    let pong: String = redis::cmd("PING").query_async(&mut c).await.unwrap();
    assert_eq!(pong, "PONG");

    r.kill();
    assert_eq!(r.pid(), 0);
    assert!(std::net::TcpStream::connect(("127.0.0.1", r.port())).is_err());
    r.restart().unwrap();
    assert_ne!(r.pid(), pid);
    let mut c = redis_conn(&r.url()).await;
    let v: Option<String> = c.get("k").await.unwrap();
    assert_eq!(v, None, "no persistence across restarts");
}
