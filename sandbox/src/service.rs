//! The stand-in for the runbook's VisAPI service: the runbook's HTTP endpoints
//! (health, queue metrics, logs, triggers, job state) over a Redis job queue in
//! BullMQ's key layout, with workers. It can be restarted in place with a new
//! configuration, which is what a platform deploy does.

use std::sync::{Arc, RwLock};

use axum::body::Bytes;
use axum::extract::{Path, Query, RawQuery, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{DateTime, SecondsFormat, Utc};
use serde::Deserialize;
use serde_json::{json, Value};
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::logs::{LogBuffer, LogQuery};
use crate::queue::{self, QUEUES};
use crate::redis_link::{RedisLink, RedisTarget, TIMEOUT};
use crate::worker::{self, WorkerSpec};

/// How the service runs; a deploy restarts it with a new one.
#[derive(Clone)]
pub struct ServiceConfig {
    /// `REDIS_URL`: `redis://` or `rediss://`, password allowed (it is never logged).
    pub redis_url: String,
    /// Required in `X-API-Key` by every endpoint except health.
    pub api_key: String,
    /// Workers per queue (default 2).
    pub workers_per_queue: usize,
    /// How long "processing" a job takes, in ms (default 20).
    pub job_ms: u64,
    /// `false` starts only the HTTP side: jobs are accepted but never processed, the
    /// "workers never resume after failover" fault.
    pub workers_enabled: bool,
    /// The BullMQ service only: its health and queue connections connect this long after
    /// start (a remote Redis behind slow DNS or TLS), so requests that arrive first
    /// meet a client that is not ready, as a freshly deployed real service does.
    pub connect_delay_ms: u64,
}

impl ServiceConfig {
    /// Defaults: 2 workers per queue, 20 ms jobs, workers enabled.
    pub fn new(redis_url: impl Into<String>, api_key: impl Into<String>) -> ServiceConfig {
        ServiceConfig {
            redis_url: redis_url.into(),
            api_key: api_key.into(),
            workers_per_queue: 2,
            job_ms: 20,
            workers_enabled: true,
            connect_delay_ms: 0,
        }
    }
}

impl std::fmt::Debug for ServiceConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        // Secrets stay out of debug output.
        f.debug_struct("ServiceConfig")
            .field("redis_url", &crate::redis_link::mask_url(&self.redis_url))
            .field("api_key", &"***")
            .field("workers_per_queue", &self.workers_per_queue)
            .field("job_ms", &self.job_ms)
            .field("workers_enabled", &self.workers_enabled)
            .finish()
    }
}

/// One incarnation of the service: its Redis connection and workers.
struct Runtime {
    config: ServiceConfig,
    /// Shared by the request handlers (they never block on Redis).
    link: RedisLink,
    stop: watch::Sender<bool>,
    workers: std::sync::Mutex<Vec<JoinHandle<()>>>,
}

impl Runtime {
    fn start(config: ServiceConfig, logs: &LogBuffer) -> Arc<Runtime> {
        crate::install_crypto_provider();
        let target = RedisTarget::new(&config.redis_url);
        let link = RedisLink::new(target.clone(), TIMEOUT);
        let (stop, stop_rx) = watch::channel(false);
        let mut workers = Vec::new();
        if config.workers_enabled {
            for q in QUEUES {
                for index in 0..config.workers_per_queue {
                    workers.push(tokio::spawn(worker::run(WorkerSpec {
                        queue: q,
                        index,
                        job_ms: config.job_ms,
                        target: target.clone(),
                        logs: logs.clone(),
                        stop: stop_rx.clone(),
                    })));
                }
            }
        }
        let n = workers.len();
        logs.info("ServiceBootstrap", &format!("Service started with Redis {} ({} workers)", target.display(), n));
        Arc::new(Runtime { config, link, stop, workers: std::sync::Mutex::new(workers) })
    }

    /// Asks the workers to stop and waits for them (each finishes its current job).
    async fn stop_workers(&self) {
        let _ = self.stop.send(true);
        let handles: Vec<JoinHandle<()>> = std::mem::take(&mut *self.workers.lock().unwrap());
        for h in handles {
            // A worker stuck on a frozen Redis is abandoned after its grace; abort is
            // the backstop if that ever fails.
            let abort = h.abort_handle();
            if tokio::time::timeout(std::time::Duration::from_secs(3), h).await.is_err() {
                abort.abort();
            }
        }
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let _ = self.stop.send(true);
        for h in self.workers.get_mut().unwrap().drain(..) {
            h.abort();
        }
    }
}

/// A handle on the running service (cheap to clone). The HTTP router reads the
/// current runtime per request, so a restart swaps Redis and workers under a listener
/// that stays up.
#[derive(Clone)]
pub struct Service {
    inner: Arc<Inner>,
}

struct Inner {
    current: RwLock<Option<Arc<Runtime>>>,
    logs: LogBuffer,
    /// Serializes restarts (two deploys going live at once).
    restarting: tokio::sync::Mutex<()>,
}

impl Service {
    /// Starts workers (when enabled) against `config.redis_url`. Never fails: an
    /// unreachable Redis shows up in health, metrics and logs, as in a real service.
    /// Must be called within a Tokio runtime.
    pub fn start(config: ServiceConfig) -> Service {
        let logs = LogBuffer::new();
        let rt = Runtime::start(config, &logs);
        Service { inner: Arc::new(Inner { current: RwLock::new(Some(rt)), logs, restarting: tokio::sync::Mutex::new(()) }) }
    }

    /// The axum app with the runbook's endpoints under `/api/v1`.
    pub fn router(&self) -> Router {
        Router::new()
            .route("/api/v1/health", get(health))
            .route("/api/v1/health/liveness", get(liveness))
            .route("/api/v1/queue/metrics", get(metrics))
            .route("/api/v1/logs", get(logs))
            .route("/api/v1/triggers/{key}", post(trigger))
            .route("/api/v1/jobs/{queue}/{id}", get(job))
            .with_state(self.clone())
    }

    /// Replaces the running incarnation: the old workers stop (finishing their current
    /// job) while the old one keeps answering HTTP, then the new one takes over.
    pub async fn restart(&self, config: ServiceConfig) {
        let _guard = self.inner.restarting.lock().await;
        let old = self.inner.current.read().unwrap().clone();
        if let Some(old) = &old {
            old.stop_workers().await;
        }
        let new = Runtime::start(config, &self.inner.logs);
        *self.inner.current.write().unwrap() = Some(new);
        self.inner.logs.info("ServiceBootstrap", "Service restarted");
    }

    /// Stops the workers and drops the Redis connections; HTTP then answers 503.
    pub async fn shutdown(&self) {
        let _guard = self.inner.restarting.lock().await;
        let old = self.inner.current.write().unwrap().take();
        if let Some(old) = old {
            old.stop_workers().await;
        }
    }

    /// The configuration of the running incarnation (None after shutdown).
    pub fn config(&self) -> Option<ServiceConfig> {
        self.inner.current.read().unwrap().as_ref().map(|r| r.config.clone())
    }

    /// The service's application log.
    pub fn logs(&self) -> &LogBuffer {
        &self.inner.logs
    }

    fn runtime(&self) -> Result<Arc<Runtime>, Reject> {
        self.inner.current.read().unwrap().clone().ok_or(Reject::Stopped)
    }

    /// The running incarnation, if the request carries its API key.
    fn authorized(&self, headers: &HeaderMap) -> Result<Arc<Runtime>, Reject> {
        let rt = self.runtime()?;
        match headers.get("x-api-key").and_then(|v| v.to_str().ok()) {
            Some(k) if k == rt.config.api_key => Ok(rt),
            Some(_) => Err(Reject::BadKey),
            None => Err(Reject::NoKey),
        }
    }
}

/// Why a request is turned away before it reaches Redis.
enum Reject {
    Stopped,
    BadKey,
    NoKey,
}

impl IntoResponse for Reject {
    fn into_response(self) -> Response {
        match self {
            Reject::Stopped => error(StatusCode::SERVICE_UNAVAILABLE, "Service is stopped"),
            Reject::BadKey => error(StatusCode::UNAUTHORIZED, "Invalid API key"),
            Reject::NoKey => error(StatusCode::UNAUTHORIZED, "Missing API key (X-API-Key header)"),
        }
    }
}

/// A NestJS-style JSON error.
fn error(status: StatusCode, message: &str) -> Response {
    let body = json!({
        "statusCode": status.as_u16(),
        "message": message,
        "error": status.canonical_reason().unwrap_or("Error"),
    });
    (status, Json(body)).into_response()
}

fn now_rfc3339() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

async fn health(State(svc): State<Service>) -> Response {
    let rt = match svc.runtime() {
        Ok(rt) => rt,
        Err(r) => return r.into_response(),
    };
    let database = json!({"status": "up", "message": "Database is accessible and responsive"});
    match rt.link.ping().await {
        Ok(()) => {
            let info = json!({
                "database": database,
                "redis": {"status": "up", "message": "Redis is accessible and responsive"},
            });
            Json(json!({"status": "ok", "info": info, "error": {}, "details": info})).into_response()
        }
        Err(f) => {
            svc.logs().error("HealthService", &f.message);
            let down = json!({"status": "down", "message": f.message});
            let body = json!({
                "status": "error",
                "info": {"database": database},
                "error": {"redis": down},
                "details": {"database": database, "redis": down},
            });
            (StatusCode::SERVICE_UNAVAILABLE, Json(body)).into_response()
        }
    }
}

async fn liveness() -> Json<Value> {
    Json(json!({"status": "ok", "timestamp": now_rfc3339()}))
}

async fn metrics(State(svc): State<Service>, headers: HeaderMap) -> Response {
    let rt = match svc.authorized(&headers) {
        Ok(rt) => rt,
        Err(r) => return r.into_response(),
    };
    match queue::counts(&rt.link).await {
        Ok(per_queue) => {
            let mut queues = serde_json::Map::new();
            let mut total = queue::QueueCounts::default();
            for (q, c) in per_queue {
                total.waiting += c.waiting;
                total.active += c.active;
                total.completed += c.completed;
                total.failed += c.failed;
                queues.insert(q.to_string(), json!(c));
            }
            Json(json!({
                "connection_status": "connected",
                "total_jobs": total.waiting + total.active + total.completed + total.failed,
                "active_jobs": total.active,
                "waiting_jobs": total.waiting,
                "completed_jobs": total.completed,
                "failed_jobs": total.failed,
                "queues": queues,
            }))
            .into_response()
        }
        Err(f) => {
            svc.logs().error("QueueService", &format!("Failed to get queue metrics: {}", f.message));
            let queues: serde_json::Map<String, Value> =
                QUEUES.iter().map(|q| (q.to_string(), json!(queue::QueueCounts::default()))).collect();
            Json(json!({
                "connection_status": "disconnected",
                "total_jobs": 0,
                "active_jobs": 0,
                "waiting_jobs": 0,
                "completed_jobs": 0,
                "failed_jobs": 0,
                "queues": queues,
                "error": f.message,
            }))
            .into_response()
        }
    }
}

async fn logs(State(svc): State<Service>, headers: HeaderMap, RawQuery(raw): RawQuery) -> Response {
    if let Err(r) = svc.authorized(&headers) {
        return r.into_response();
    }
    // Pairs, not a struct: `search` may repeat and every occurrence must match.
    let pairs: Vec<(String, String)> = match serde_urlencoded::from_str(raw.as_deref().unwrap_or("")) {
        Ok(p) => p,
        Err(_) => return error(StatusCode::BAD_REQUEST, "Malformed query string"),
    };
    let mut q = LogQuery { limit: 100, ..Default::default() };
    for (k, v) in pairs {
        match k.as_str() {
            "level" if !v.is_empty() => q.level = Some(v.to_lowercase()),
            "search" if !v.is_empty() => q.search.push(v),
            "limit" => match v.parse::<usize>() {
                Ok(n) => q.limit = n.clamp(1, LogBuffer::CAPACITY),
                Err(_) => return error(StatusCode::BAD_REQUEST, "limit must be a positive integer"),
            },
            "since" => match DateTime::parse_from_rfc3339(&v) {
                Ok(t) => q.since = Some(t.with_timezone(&Utc)),
                Err(_) => return error(StatusCode::BAD_REQUEST, "since must be an RFC 3339 timestamp"),
            },
            _ => {} // e.g. `follow=true` from the runbook: accepted, not streamed.
        }
    }
    let (data, total) = svc.logs().query(&q);
    Json(json!({"data": data, "total": total})).into_response()
}

#[derive(Deserialize)]
struct TriggerQuery {
    queue: Option<String>,
}

async fn trigger(
    State(svc): State<Service>,
    Path(key): Path<String>,
    Query(tq): Query<TriggerQuery>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let rt = match svc.authorized(&headers) {
        Ok(rt) => rt,
        Err(r) => return r.into_response(),
    };
    let q = tq.queue.unwrap_or_else(|| "default".to_string());
    let Some(q) = QUEUES.iter().find(|x| **x == q) else {
        return error(StatusCode::BAD_REQUEST, "queue must be one of critical, default, bulk");
    };
    // Any JSON body (an empty one counts as {}); Content-Type is not required, since
    // the runbook's own curl examples do not always send it.
    let data: Value = if body.iter().all(|b| b.is_ascii_whitespace()) {
        json!({})
    } else {
        match serde_json::from_slice(&body) {
            Ok(v) => v,
            Err(e) => return error(StatusCode::BAD_REQUEST, &format!("Body is not valid JSON: {e}")),
        }
    };
    match queue::enqueue(&rt.link, q, &key, &data.to_string()).await {
        Ok(id) => (StatusCode::CREATED, Json(json!({"jobId": id, "queue": q, "status": "queued"}))).into_response(),
        Err(f) => {
            svc.logs().error("TriggersController", &format!("Failed to enqueue job {key}: {}", f.message));
            error(StatusCode::SERVICE_UNAVAILABLE, &format!("Queue unavailable: {}", f.message))
        }
    }
}

async fn job(State(svc): State<Service>, Path((q, id)): Path<(String, String)>, headers: HeaderMap) -> Response {
    let rt = match svc.authorized(&headers) {
        Ok(rt) => rt,
        Err(r) => return r.into_response(),
    };
    let Some(q) = QUEUES.iter().find(|x| **x == q) else {
        return error(StatusCode::NOT_FOUND, "Unknown queue (critical, default, bulk)");
    };
    match queue::job_info(&rt.link, q, &id).await {
        Ok(info) => Json(info).into_response(),
        Err(f) => {
            svc.logs().error("JobsController", &format!("Failed to read job {id}: {}", f.message));
            error(StatusCode::SERVICE_UNAVAILABLE, &format!("Queue unavailable: {}", f.message))
        }
    }
}
