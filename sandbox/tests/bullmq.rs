//! The real BullMQ service (`bullmq-service/`, Node + BullMQ + ioredis) behind the
//! sandbox's platform, against real redis-server processes: what a production service
//! shows that the in-process stand-in does not (start-up errors, ioredis's command
//! timeout while Redis is down, its reconnects, connected-but-idle workers), and that
//! deploys restart the process on the same port. Needs `npm ci --prefix bullmq-service`.

mod common;

use std::time::{Duration, Instant};

use common::*;
use redis::AsyncCommands;
use reqwest::Method;
use sandbox::{RedisServer, Sandbox, SandboxConfig, ServiceKind};
use serde_json::{json, Value};

const STARTUP_ERROR: &str = "Redis ping failed: Stream isn't writeable and enableOfflineQueue options is false";

fn bullmq_config(url: &str) -> SandboxConfig {
    if let Err(e) = sandbox::node_service::check_installed() {
        panic!("{e}");
    }
    let mut c = SandboxConfig::new(url);
    c.service_api_key = SERVICE_KEY.into();
    c.platform_api_key = PLATFORM_KEY.into();
    c.deploy_steps_ms = 50;
    c.job_ms = 5;
    c.service_kind = ServiceKind::Bullmq;
    c
}

/// Starts the sandbox with the BullMQ service; returns it and the time to liveness.
async fn start(c: SandboxConfig) -> (Sandbox, Duration) {
    let t = Instant::now();
    let sb = sandbox::start(c).await.unwrap();
    (sb, t.elapsed())
}

/// `GET /api/v1/health`: (status, body, how long it took).
async fn health(sb: &Sandbox) -> (u16, Value, Duration) {
    let t = Instant::now();
    let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
    let status = r.status().as_u16();
    (status, r.json().await.unwrap(), t.elapsed())
}

async fn health_up(sb: &Sandbox, within: Duration) -> Value {
    eventually("health to report Redis up", within, || async {
        let (s, v, _) = health(sb).await;
        (s == 200 && v["info"]["redis"]["status"] == "up").then_some(v)
    })
    .await
}

/// Error-level log entries whose message contains `needle`, newest first.
async fn error_logs(sb: &Sandbox, needle: &str) -> Vec<Value> {
    let (s, v) = svc_get(sb, "/api/v1/logs?level=error&limit=1000").await;
    assert_eq!(s, 200);
    v["data"].as_array().unwrap().iter().filter(|e| e["message"].as_str().unwrap().contains(needle)).cloned().collect()
}

async fn put_redis_url(sb: &Sandbox, url: &str) {
    let sid = sb.service_id().to_string();
    let r = platform(sb, Method::PUT, &format!("/v1/services/{sid}/env-vars/REDIS_URL")).json(&json!({"value": url})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
}

/// Creates a deploy and waits until it is final. Like `common::deploy_and_wait`, with
/// room for a Node process start on a loaded machine.
async fn deploy(sb: &Sandbox) -> Value {
    let sid = sb.service_id().to_string();
    let r = platform(sb, Method::POST, &format!("/v1/services/{sid}/deploys")).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 201);
    let id = r.json::<Value>().await.unwrap()["id"].as_str().unwrap().to_string();
    eventually("deploy to finish", Duration::from_secs(30), || async {
        let d: Value = platform(sb, Method::GET, &format!("/v1/services/{sid}/deploys/{id}")).send().await.unwrap().json().await.unwrap();
        (!d["status"].as_str().unwrap().ends_with("_in_progress")).then_some(d)
    })
    .await
}

async fn liveness_ok(sb: &Sandbox) -> bool {
    http().get(format!("{}/api/v1/health/liveness", sb.service_url())).send().await.map(|r| r.status().as_u16() == 200).unwrap_or(false)
}

#[tokio::test]
async fn the_startup_ping_error_is_logged_then_health_turns_up() {
    let redis = RedisServer::start().unwrap();
    let (sb, to_liveness) = start(bullmq_config(&redis.url())).await;
    let node = sb.node_service().expect("the BullMQ service runs");
    assert!(node.pid().is_some());
    assert!(liveness_ok(&sb).await, "start returns once liveness answers");

    // Logged before the listener is up: the health connection's first PING goes out
    // while ioredis is still connecting, exactly as a production service logs it.
    let startup = error_logs(&sb, STARTUP_ERROR).await;
    assert!(!startup.is_empty(), "the start-up PING error is in the logs");
    assert_eq!(startup[0]["context"], "RedisMonitor");
    let up = health_up(&sb, Duration::from_secs(10)).await;
    assert_eq!(up["status"], "ok");
    assert_eq!(up["info"]["redis"]["message"], "Redis is accessible and responsive");
    assert_eq!(up["info"]["database"]["status"], "up");
    let errors_at_start = svc_get(&sb, "/api/v1/logs?level=error").await.1["total"].as_u64().unwrap();
    eprintln!("bullmq: start to liveness {to_liveness:?}; {errors_at_start} error line(s) logged by the time health was up");

    // The logs endpoint filters as the sandbox's does: every search term must match.
    let (s, v) = svc_get(&sb, "/api/v1/logs?level=error&search=redis&search=enableofflinequeue&limit=1").await;
    assert_eq!(s, 200);
    assert_eq!(v["data"].as_array().unwrap().len(), 1);
    assert_eq!(v["data"][0]["level"], "error");
    assert!(v["data"][0]["timestamp"].as_str().unwrap().ends_with('Z'));
    let (s, v) = svc_get(&sb, "/api/v1/logs?since=2999-01-01T00:00:00Z").await;
    assert_eq!((s, v["total"].as_u64()), (200, Some(0)));
    let (s, _) = svc_get(&sb, "/api/v1/logs?limit=many").await;
    assert_eq!(s, 400);
    // Auth as on the sandbox: the key on everything but health.
    let r = http().get(format!("{}/api/v1/queue/metrics", sb.service_url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http().get(format!("{}/api/v1/logs", sb.service_url())).header("X-API-Key", "wrong").send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let body: Value = r.json().await.unwrap();
    assert_eq!(body["message"], "Invalid API key");
    sb.shutdown().await;
}

#[tokio::test]
async fn health_is_down_while_the_connection_is_not_ready() {
    let redis = RedisServer::start().unwrap();
    // Frozen before the service starts: TCP connects, the ready check never answers.
    redis.stop();
    let (sb, _) = start(bullmq_config(&redis.url())).await;
    let (s, v, took) = health(&sb).await;
    assert_eq!(s, 503);
    assert_eq!(v["status"], "error");
    assert_eq!(v["error"]["redis"]["status"], "down");
    let message = v["error"]["redis"]["message"].as_str().unwrap();
    assert!(message.starts_with("Redis ping failed: "), "{message}");
    assert!(took < Duration::from_millis(1800), "health answers within about a second, took {took:?}");
    assert!(!error_logs(&sb, STARTUP_ERROR).await.is_empty());

    redis.cont();
    health_up(&sb, Duration::from_secs(15)).await;
    sb.shutdown().await;
}

#[tokio::test]
async fn a_triggered_job_is_processed_by_a_bullmq_worker() {
    let redis = RedisServer::start().unwrap();
    let (sb, _) = start(bullmq_config(&redis.url())).await;
    health_up(&sb, Duration::from_secs(10)).await;

    let id = trigger(&sb, "redis-recovery-test", "default", json!({"test": "redis-recovery-test"})).await;
    let job = wait_job_state(&sb, "default", &id, "completed").await;
    assert_eq!(job["name"], "redis-recovery-test");
    assert_eq!(job["queue"], "default");
    assert!(job["finishedOn"].as_i64().unwrap() >= job["processedOn"].as_i64().unwrap());
    assert_eq!(job["returnvalue"]["ok"], true);
    // Where the orchestrator reads it: BullMQ's own keys.
    let mut c = redis_conn(&redis.url()).await;
    let score: Option<f64> = c.zscore("bull:default:completed", &id).await.unwrap();
    assert!(score.is_some(), "job {id} is in bull:default:completed");

    // A job asking to fail ends in `failed` with its reason.
    let bad = trigger(&sb, "bad", "critical", json!({"fail": true, "failReason": "boom"})).await;
    let failed = wait_job_state(&sb, "critical", &bad, "failed").await;
    assert_eq!(failed["failedReason"], "boom");

    let (s, m) = svc_get(&sb, "/api/v1/queue/metrics").await;
    assert_eq!(s, 200);
    assert_eq!(m["connection_status"], "connected");
    assert_eq!(m["completed_jobs"], 1);
    assert_eq!(m["failed_jobs"], 1);
    assert_eq!(m["queues"]["default"]["completed"], 1);
    assert_eq!(m["queues"].as_object().unwrap().len(), 3);
    let (s, v) = svc_get(&sb, "/api/v1/jobs/default/999999").await;
    assert_eq!((s, v["state"].as_str()), (200, Some("unknown")));
    let (s, _) = svc_get(&sb, "/api/v1/jobs/nosuch/1").await;
    assert_eq!(s, 404);
    sb.shutdown().await;
}

#[tokio::test]
async fn with_redis_killed_metrics_wait_for_the_command_timeout_and_health_says_down() {
    let redis = RedisServer::start().unwrap();
    let (sb, _) = start(bullmq_config(&redis.url())).await;
    health_up(&sb, Duration::from_secs(10)).await;

    redis.kill();
    let down = eventually("health to report Redis down", Duration::from_secs(10), || async {
        let (s, v, took) = health(&sb).await;
        (s == 503).then_some((v, took))
    })
    .await;
    assert_eq!(down.0["error"]["redis"]["status"], "down");
    assert!(down.0["error"]["redis"]["message"].as_str().unwrap().starts_with("Redis ping failed: "));
    assert!(down.1 < Duration::from_millis(1800), "health answered in {:?}", down.1);

    // The queue connection keeps its offline queue: the call waits for a reconnect
    // until ioredis's 1 s command timeout, then answers disconnected.
    let t = Instant::now();
    let (s, m) = svc_get(&sb, "/api/v1/queue/metrics").await;
    let took = t.elapsed();
    assert_eq!(s, 200);
    assert_ne!(m["connection_status"], "connected");
    assert_eq!(m["error"], "Command timed out");
    assert!(took >= Duration::from_millis(800), "metrics answered after {took:?}, before ioredis's command timeout");
    assert!(took < Duration::from_secs(3), "metrics answered after {took:?}");
    let t = Instant::now();
    let r = http().post(format!("{}/api/v1/triggers/x", sb.service_url())).header("X-API-Key", SERVICE_KEY).send().await.unwrap();
    let trigger_took = t.elapsed();
    assert_eq!(r.status().as_u16(), 503);
    eprintln!("bullmq: with Redis killed, health answered in {:?}, metrics in {took:?}, trigger in {trigger_took:?}", down.1);

    // ioredis's `error` events, as a service logs them.
    let refused = format!("Redis connection error: connect ECONNREFUSED 127.0.0.1:{}", redis.port());
    eventually("the connection error in the logs", Duration::from_secs(10), || async {
        (!error_logs(&sb, &refused).await.is_empty()).then_some(())
    })
    .await;

    // Back on the same port: ioredis reconnects by itself, BullMQ's workers too.
    redis.restart().unwrap();
    let t = Instant::now();
    health_up(&sb, Duration::from_secs(15)).await;
    let reconnect = t.elapsed();
    // Health's connection is not the queues': each reconnects on its own backoff, so
    // the trigger may still time out for a moment after health is up.
    let t = Instant::now();
    let id = eventually("the trigger to accept a job after the reconnect", Duration::from_secs(15), || async {
        let r = http().post(format!("{}/api/v1/triggers/after", sb.service_url())).header("X-API-Key", SERVICE_KEY).send().await.unwrap();
        if r.status().as_u16() != 201 {
            return None;
        }
        Some(r.json::<Value>().await.unwrap()["jobId"].as_str().unwrap().to_string())
    })
    .await;
    let accepted = t.elapsed();
    eventually("a job to complete after the reconnect", Duration::from_secs(30), || async {
        let (s, v) = svc_get(&sb, &format!("/api/v1/jobs/default/{id}")).await;
        (s == 200 && v["state"] == "completed").then_some(())
    })
    .await;
    eprintln!("bullmq: after Redis came back, health up in {reconnect:?}; then a trigger accepted after {accepted:?}, its job completed after {:?}", t.elapsed());
    // The trigger that timed out while Redis was down stayed in ioredis's offline queue
    // and ran on the reconnect: the job the caller was told failed may exist after all.
    let (_, ghost) = svc_get(&sb, "/api/v1/jobs/default/1").await;
    eprintln!("bullmq: the job of the timed-out trigger: name {} state {}", ghost["name"], ghost["state"]);
    sb.shutdown().await;
}

#[tokio::test]
async fn with_redis_frozen_metrics_and_health_take_the_command_timeout() {
    let redis = RedisServer::start().unwrap();
    let (sb, _) = start(bullmq_config(&redis.url())).await;
    health_up(&sb, Duration::from_secs(10)).await;

    redis.stop();
    let (s, v, took) = health(&sb).await;
    assert_eq!(s, 503);
    assert_eq!(v["error"]["redis"]["message"], "Redis ping failed: Command timed out");
    assert!(took >= Duration::from_millis(800) && took < Duration::from_millis(1800), "health took {took:?}");
    let t = Instant::now();
    let (_, m) = svc_get(&sb, "/api/v1/queue/metrics").await;
    let took = t.elapsed();
    assert_ne!(m["connection_status"], "connected");
    assert!(took >= Duration::from_millis(800) && took < Duration::from_secs(3), "metrics took {took:?}");
    eprintln!("bullmq: with Redis frozen, metrics answered in {took:?}");

    // SIGTERM while Redis is frozen: the service gives up its graceful close in time.
    let t = Instant::now();
    sb.shutdown().await;
    let stop = t.elapsed();
    eprintln!("bullmq: shutdown with Redis frozen took {stop:?}");
    assert!(stop < Duration::from_millis(2500), "shutdown took {stop:?}");
    redis.cont();
}

#[tokio::test]
async fn with_workers_disabled_the_job_stays_waiting_while_everything_looks_up() {
    let redis = RedisServer::start().unwrap();
    let mut c = bullmq_config(&redis.url());
    c.workers_enabled = false;
    let (sb, _) = start(c).await;
    health_up(&sb, Duration::from_secs(10)).await;

    // The workers are connected (BullMQ names their connections), processing nothing.
    let mut conn = redis_conn(&redis.url()).await;
    eventually("the idle workers' connections", Duration::from_secs(10), || {
        let mut conn = conn.clone();
        async move {
            let list: String = redis::cmd("CLIENT").arg("LIST").query_async(&mut conn).await.unwrap();
            list.contains("name=worker:default").then_some(())
        }
    })
    .await;

    let id = trigger(&sb, "redis-recovery-test", "default", json!({})).await;
    // Nothing may take it: observed over a window 100 times the job time.
    let window = Instant::now() + Duration::from_millis(500);
    while Instant::now() < window {
        let (_, v) = svc_get(&sb, &format!("/api/v1/jobs/default/{id}")).await;
        assert_eq!(v["state"], "waiting");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let (_, m) = svc_get(&sb, "/api/v1/queue/metrics").await;
    assert_eq!(m["connection_status"], "connected");
    assert_eq!(m["waiting_jobs"], 1);
    assert_eq!(m["active_jobs"], 0);
    let (s, _, _) = health(&sb).await;
    assert_eq!(s, 200);
    let waiting: i64 = conn.llen("bull:default:wait").await.unwrap();
    assert_eq!(waiting, 1);

    // The platform's sticky fault turned off: the next deploy's workers take the job.
    platform(&sb, Method::POST, "/admin/faults").json(&json!({"workers_enabled": true})).send().await.unwrap();
    let d = deploy(&sb).await;
    assert_eq!(d["status"], "live");
    assert!(sb.node_service().unwrap().config().unwrap().workers_enabled);
    wait_job_state(&sb, "default", &id, "completed").await;
    sb.shutdown().await;
}

#[tokio::test]
async fn a_deploy_restarts_the_process_on_the_same_port_with_the_new_url() {
    let primary = RedisServer::start().unwrap();
    let backup = RedisServer::start().unwrap();
    let (sb, _) = start(bullmq_config(&primary.url())).await;
    let node = sb.node_service().unwrap().clone();
    let url = sb.service_url();
    let first_pid = node.pid().unwrap();
    health_up(&sb, Duration::from_secs(10)).await;

    // A failed deploy leaves the running process alone.
    platform(&sb, Method::POST, "/admin/faults")
        .json(&json!({"fail_next_deploys": 1, "fail_status": "update_failed"}))
        .send()
        .await
        .unwrap();
    put_redis_url(&sb, &backup.url()).await;
    let failed = deploy(&sb).await;
    assert_eq!(failed["status"], "update_failed");
    assert_eq!(node.pid(), Some(first_pid));
    assert_eq!(node.config().unwrap().redis_url, primary.url());

    let t = Instant::now();
    let d = deploy(&sb).await;
    let deploy_took = t.elapsed();
    assert_eq!(d["status"], "live");
    // Live means the new process answers liveness, on the same address.
    assert!(liveness_ok(&sb).await);
    assert_eq!(sb.service_url(), url);
    let second_pid = node.pid().unwrap();
    assert_ne!(second_pid, first_pid, "the deploy started a new process");
    assert_eq!(node.config().unwrap().redis_url, backup.url());
    // SAFETY: kill(pid, 0) only asks whether the pid exists.
    assert_ne!(unsafe { libc::kill(first_pid as libc::pid_t, 0) }, 0, "the old process is gone");
    eprintln!("bullmq: a deploy (2 × 50 ms steps + restart) went live in {deploy_took:?}");

    health_up(&sb, Duration::from_secs(10)).await;
    let id = trigger(&sb, "redis-recovery-test", "default", json!({})).await;
    wait_job_state(&sb, "default", &id, "completed").await;
    let mut c = redis_conn(&backup.url()).await;
    let score: Option<f64> = c.zscore("bull:default:completed", &id).await.unwrap();
    assert!(score.is_some(), "the job completed in the backup");
    let s = platform(&sb, Method::GET, "/admin/stats").send().await.unwrap().json::<Value>().await.unwrap();
    assert_eq!(s["deploy_count"], 2);

    sb.shutdown().await;
    let answered = http().get(format!("{url}/api/v1/health/liveness")).send().await;
    assert!(answered.is_err(), "nothing listens after shutdown");
}

#[tokio::test]
async fn a_password_in_redis_url_works_and_never_reaches_the_logs() {
    const PW: &str = "pw-7c1e9a44d2";
    let redis = RedisServer::start_with(&["--requirepass", PW]).unwrap();
    let url = format!("redis://:{PW}@127.0.0.1:{}/0", redis.port());
    let (sb, _) = start(bullmq_config(&url)).await;
    health_up(&sb, Duration::from_secs(10)).await;
    let id = trigger(&sb, "redis-recovery-test", "default", json!({})).await;
    wait_job_state(&sb, "default", &id, "completed").await;

    // Errors with the password in play: a deploy with a wrong one, then Redis gone.
    put_redis_url(&sb, &format!("redis://:wrong-{PW}@127.0.0.1:{}/0", redis.port())).await;
    assert_eq!(deploy(&sb).await["status"], "live");
    eventually("the authentication error in the logs", Duration::from_secs(10), || async {
        let (_, v) = svc_get(&sb, "/api/v1/logs?level=error&search=WRONGPASS").await;
        (v["total"].as_u64().unwrap() > 0).then_some(())
    })
    .await;
    let (s, v, _) = health(&sb).await;
    assert_eq!(s, 503);
    assert!(!v.to_string().contains(PW));
    redis.kill();
    eventually("the connection error in the logs", Duration::from_secs(10), || async {
        (!error_logs(&sb, "ECONNREFUSED").await.is_empty()).then_some(())
    })
    .await;

    let (_, all) = svc_get(&sb, "/api/v1/logs?limit=1000").await;
    let text = all.to_string();
    assert!(text.contains("redis://:***@127.0.0.1"), "the start-up line names the masked URL");
    assert!(!text.contains(PW), "the password appears in the logs endpoint");
    let file = std::fs::read_to_string(sb.node_service().unwrap().log_path()).unwrap();
    assert!(!file.contains(PW), "the password appears in the process output");
    sb.shutdown().await;
}
