//! The service against real redis-server processes: jobs through the trigger endpoint
//! land in BullMQ's key layout and complete; a dead, frozen or password-protected
//! Redis shows up in health, metrics and logs the way the runbook expects.

mod common;

use std::time::Duration;

use common::*;
use redis::AsyncCommands;
use sandbox::RedisServer;
use serde_json::{json, Value};

#[tokio::test]
async fn triggered_jobs_complete_in_bullmq_layout_and_are_counted() {
    let redis = RedisServer::start().unwrap();
    let sb = sandbox::start(config(&redis)).await.unwrap();

    // Health and liveness in the runbook's shapes.
    let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 200);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["status"], "ok");
    assert_eq!(h["info"]["redis"]["status"], "up");
    assert_eq!(h["info"]["redis"]["message"], "Redis is accessible and responsive");
    assert_eq!(h["info"]["database"]["status"], "up");
    assert_eq!(h["details"], h["info"]);
    let l: Value = http().get(format!("{}/api/v1/health/liveness", sb.service_url())).send().await.unwrap().json().await.unwrap();
    assert_eq!(l["status"], "ok");
    assert!(chrono::DateTime::parse_from_rfc3339(l["timestamp"].as_str().unwrap()).is_ok());

    let id = trigger(&sb, "health-check", "default", json!({"test": "redis-recovery-test"})).await;
    let job = wait_job_state(&sb, "default", &id, "completed").await;
    assert!(job["finishedOn"].as_i64().unwrap() > 0);
    assert_eq!(job["name"], "health-check");

    let failing = trigger(&sb, "doomed", "critical", json!({"fail": true})).await;
    wait_job_state(&sb, "critical", &failing, "failed").await;

    let (s, m) = svc_get(&sb, "/api/v1/queue/metrics").await;
    assert_eq!(s, 200);
    assert_eq!(m["connection_status"], "connected");
    assert_eq!(m["completed_jobs"], 1);
    assert_eq!(m["failed_jobs"], 1);
    assert_eq!(m["total_jobs"], 2);
    assert_eq!(m["queues"]["default"]["completed"], 1);
    assert_eq!(m["queues"]["critical"]["failed"], 1);
    assert_eq!(m["queues"]["bulk"], json!({"waiting": 0, "active": 0, "completed": 0, "failed": 0}));

    // The keys BullMQ would have written.
    let mut c = redis_conn(&redis.url()).await;
    let counter: String = c.get("bull:default:id").await.unwrap();
    assert_eq!(counter, id);
    let hash: std::collections::HashMap<String, String> = c.hgetall(format!("bull:default:{id}")).await.unwrap();
    for f in ["name", "data", "timestamp", "processedOn", "finishedOn", "returnvalue", "attemptsMade"] {
        assert!(hash.contains_key(f), "job hash lacks {f}: {hash:?}");
    }
    let data: Value = serde_json::from_str(&hash["data"]).unwrap();
    assert_eq!(data["test"], "redis-recovery-test");
    let score: Option<f64> = c.zscore("bull:default:completed", &id).await.unwrap();
    assert!(score.is_some());
    let failed: Option<f64> = c.zscore("bull:critical:failed", &failing).await.unwrap();
    assert!(failed.is_some());
    let failed_hash: std::collections::HashMap<String, String> = c.hgetall(format!("bull:critical:{failing}")).await.unwrap();
    assert!(failed_hash.contains_key("failedReason"));
    assert_eq!(c.llen::<_, u64>("bull:default:wait").await.unwrap(), 0);
    assert_eq!(c.llen::<_, u64>("bull:default:active").await.unwrap(), 0);
    assert!(!c.exists::<_, bool>(format!("bull:default:{id}:lock")).await.unwrap());
    let events: u64 = redis::cmd("XLEN").arg("bull:default:events").query_async(&mut c).await.unwrap();
    assert!(events >= 4, "added, waiting, active, completed events expected, got {events}");

    // A paused queue is left alone until resumed.
    let _: () = c.hset("bull:bulk:meta", "paused", 1).await.unwrap();
    let held = trigger(&sb, "later", "bulk", json!({})).await;
    tokio::time::sleep(Duration::from_millis(300)).await; // a window in which it must not run
    let (_, j) = svc_get(&sb, &format!("/api/v1/jobs/bulk/{held}")).await;
    assert_eq!(j["state"], "waiting");
    let _: () = c.hdel("bull:bulk:meta", "paused").await.unwrap();
    wait_job_state(&sb, "bulk", &held, "completed").await;

    let (_, unknown) = svc_get(&sb, "/api/v1/jobs/default/999").await;
    assert_eq!(unknown["state"], "unknown");

    sb.shutdown().await;
}

#[tokio::test]
async fn dead_primary_shows_in_health_logs_and_metrics() {
    let redis = RedisServer::start().unwrap();
    let port = redis.port();
    let sb = sandbox::start(config(&redis)).await.unwrap();
    // Connected first, so the failure is a lost connection, not a bad start.
    let (_, m) = svc_get(&sb, "/api/v1/queue/metrics").await;
    assert_eq!(m["connection_status"], "connected");

    let before = chrono::Utc::now();
    redis.kill();

    let h = eventually("health to report redis down", Duration::from_secs(5), || async {
        let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
        let status = r.status().as_u16();
        let v: Value = r.json().await.unwrap();
        (status == 503).then_some(v)
    })
    .await;
    assert_eq!(h["status"], "error");
    assert_eq!(h["error"]["redis"]["status"], "down");
    assert_eq!(h["info"]["database"]["status"], "up");
    let msg = h["error"]["redis"]["message"].as_str().unwrap();
    assert!(msg.contains(&format!("connect ECONNREFUSED 127.0.0.1:{port}")), "{msg}");

    let logs = eventually("a Redis connection error in the logs", Duration::from_secs(5), || async {
        let since = before.to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
        let (s, v) = svc_get(
            &sb,
            &format!("/api/v1/logs?level=error&search=redis&search=ECONNREFUSED&limit=50&since={}", since.replace('+', "%2B")),
        )
        .await;
        assert_eq!(s, 200);
        (v["total"].as_u64().unwrap() > 0).then_some(v)
    })
    .await;
    let first = &logs["data"][0];
    assert_eq!(first["level"], "error");
    assert!(first["message"].as_str().unwrap().contains("Redis connection failed"), "{first}");
    assert!(first["timestamp"].as_str().unwrap().ends_with('Z'));
    // Newest first.
    let stamps: Vec<&str> = logs["data"].as_array().unwrap().iter().map(|e| e["timestamp"].as_str().unwrap()).collect();
    assert!(stamps.windows(2).all(|w| w[0] >= w[1]));
    // Workers report it too, not only the health check.
    let (_, w) = svc_get(&sb, "/api/v1/logs?level=error&search=econnrefused&limit=1000").await;
    assert!(w["data"].as_array().unwrap().iter().any(|e| e["context"].as_str().unwrap().starts_with("Worker[")));

    let (s, m) = svc_get(&sb, "/api/v1/queue/metrics").await;
    assert_eq!(s, 200);
    assert_eq!(m["connection_status"], "disconnected");
    assert_eq!(m["total_jobs"], 0);
    assert!(m["error"].as_str().unwrap().contains("ECONNREFUSED"));

    let r = http()
        .post(format!("{}/api/v1/triggers/test", sb.service_url()))
        .header("X-API-Key", SERVICE_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 503);

    // Back on the same port: the service reconnects by itself.
    redis.restart().unwrap();
    eventually("health to recover", Duration::from_secs(5), || async {
        let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    let id = trigger(&sb, "after-restart", "default", json!({})).await;
    wait_job_state(&sb, "default", &id, "completed").await;
    sb.shutdown().await;
}

#[tokio::test]
async fn frozen_redis_times_out_within_a_second() {
    let redis = RedisServer::start().unwrap();
    let sb = sandbox::start(config(&redis)).await.unwrap();
    let (_, m) = svc_get(&sb, "/api/v1/queue/metrics").await;
    assert_eq!(m["connection_status"], "connected");

    redis.stop();
    let started = std::time::Instant::now();
    let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
    let elapsed = started.elapsed();
    assert_eq!(r.status().as_u16(), 503);
    let h: Value = r.json().await.unwrap();
    assert_eq!(h["error"]["redis"]["message"], "Redis ping exceeded timeout (1s)");
    assert!(elapsed < Duration::from_millis(2500), "took {elapsed:?}");
    redis.cont();
    eventually("health to recover after SIGCONT", Duration::from_secs(5), || async {
        let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
        (r.status().as_u16() == 200).then_some(())
    })
    .await;
    sb.shutdown().await;
}

#[tokio::test]
async fn auth_errors_are_reported_without_the_password() {
    let redis = RedisServer::start_with(&["--requirepass", "hunter2-secret"]).unwrap();
    // Without the password: NOAUTH.
    let sb = sandbox::start(config(&redis)).await.unwrap();
    let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let h: Value = r.json().await.unwrap();
    let msg = h["error"]["redis"]["message"].as_str().unwrap();
    assert!(msg.contains("NOAUTH") && msg.contains("Redis"), "{msg}");
    let (_, logs) = svc_get(&sb, "/api/v1/logs?search=auth&search=redis").await;
    assert!(logs["total"].as_u64().unwrap() > 0);
    sb.shutdown().await;

    // A wrong password in the URL never shows up anywhere.
    let url = format!("redis://default:wrong-pass-42@127.0.0.1:{}", redis.port());
    let mut c = config(&redis);
    c.redis_url = url;
    let sb = sandbox::start(c).await.unwrap();
    let r = http().get(format!("{}/api/v1/health", sb.service_url())).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 503);
    let body = r.text().await.unwrap();
    assert!(body.contains("WRONGPASS") || body.contains("Redis"), "{body}");
    assert!(!body.contains("wrong-pass-42"), "{body}");
    eventually("worker errors to be logged", Duration::from_secs(5), || async {
        (sb.service().logs().entries().iter().any(|e| e.context.starts_with("Worker["))).then_some(())
    })
    .await;
    let all = serde_json::to_string(&sb.service().logs().entries()).unwrap();
    assert!(!all.contains("wrong-pass-42"), "{all}");
    sb.shutdown().await;

    // The right password works.
    let mut c = config(&redis);
    c.redis_url = format!("redis://:hunter2-secret@127.0.0.1:{}", redis.port());
    let sb = sandbox::start(c).await.unwrap();
    let id = trigger(&sb, "authed", "default", json!({})).await;
    wait_job_state(&sb, "default", &id, "completed").await;
    let all = serde_json::to_string(&sb.service().logs().entries()).unwrap();
    assert!(!all.contains("hunter2-secret"), "{all}");
    sb.shutdown().await;
}

#[tokio::test]
async fn service_endpoints_require_the_api_key() {
    let redis = RedisServer::start().unwrap();
    let sb = sandbox::start(config(&redis)).await.unwrap();
    for path in ["/api/v1/queue/metrics", "/api/v1/logs", "/api/v1/jobs/default/1"] {
        let r = http().get(format!("{}{path}", sb.service_url())).send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let r = http().get(format!("{}{path}", sb.service_url())).header("X-API-Key", "nope").send().await.unwrap();
        assert_eq!(r.status().as_u16(), 401, "{path}");
        let v: Value = r.json().await.unwrap();
        assert_eq!(v["statusCode"], 401);
    }
    let r = http().post(format!("{}/api/v1/triggers/x", sb.service_url())).json(&json!({})).send().await.unwrap();
    assert_eq!(r.status().as_u16(), 401);
    let r = http()
        .post(format!("{}/api/v1/triggers/x?queue=nope", sb.service_url()))
        .header("X-API-Key", SERVICE_KEY)
        .json(&json!({}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status().as_u16(), 400);
    sb.shutdown().await;
}
