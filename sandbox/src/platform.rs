//! A Render-compatible platform API for one service: env vars, deploys that restart
//! the hosted service (in-process or the BullMQ process, see [`Host`]) with the
//! `REDIS_URL` they were created with, and fault
//! injection (failed deploys, 429/500 answers, slow answers) for the orchestrator's
//! tests and drills.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use axum::body::Bytes;
use axum::extract::{Path, Query, Request, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use chrono::{SecondsFormat, Utc};
use rand::Rng;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use tokio::task::AbortHandle;

use crate::host::Host;
use crate::service::{Service, ServiceConfig};

/// The platform's settings.
#[derive(Clone)]
pub struct PlatformConfig {
    /// Bearer token every request must carry.
    pub api_key: String,
    /// The one service it hosts (default `srv-sandbox`).
    pub service_id: String,
    /// Delay of each deploy step in ms: build_in_progress → update_in_progress → live
    /// (default 150, so about 300 ms in all plus the restart).
    pub deploy_steps_ms: u64,
}

impl PlatformConfig {
    pub fn new(api_key: impl Into<String>) -> PlatformConfig {
        PlatformConfig { api_key: api_key.into(), service_id: "srv-sandbox".into(), deploy_steps_ms: 150 }
    }
}

impl std::fmt::Debug for PlatformConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PlatformConfig")
            .field("api_key", &"***")
            .field("service_id", &self.service_id)
            .field("deploy_steps_ms", &self.deploy_steps_ms)
            .finish()
    }
}

/// A deploy as Render's API shows it.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Deploy {
    pub id: String,
    /// `build_in_progress`, `update_in_progress`, `live`, `deactivated`,
    /// `build_failed`, `update_failed`, `pre_deploy_failed` or `canceled`.
    pub status: String,
    pub trigger: String,
    pub created_at: String,
    pub updated_at: String,
    pub finished_at: Option<String>,
    /// The `REDIS_URL` captured when the deploy was created (never serialized).
    #[serde(skip)]
    redis_url: String,
}

/// Injected faults; `POST /admin/faults` changes any subset.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Faults {
    /// The next N deploys end in `fail_status` instead of `live`.
    pub fail_next_deploys: u32,
    /// `build_failed` (default), `update_failed`, `pre_deploy_failed` or `canceled`.
    pub fail_status: String,
    /// Whether the service started by the next deploys runs workers (sticky until
    /// changed). `false` reproduces workers that never resume after a failover.
    pub workers_enabled: bool,
    /// The next N API requests (not /admin) answer 429 with `Retry-After`.
    pub respond_429: u32,
    /// The next N API requests (not /admin) answer 500.
    pub respond_500: u32,
    /// `Retry-After` seconds on injected 429s (default 1).
    pub retry_after_secs: u64,
    /// Every API answer is delayed this long (sticky; 0 turns it off).
    pub delay_ms: u64,
}

/// The body of `POST /admin/faults`: every field optional.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct FaultsPatch {
    pub fail_next_deploys: Option<u32>,
    pub fail_status: Option<String>,
    pub workers_enabled: Option<bool>,
    pub respond_429: Option<u32>,
    pub respond_500: Option<u32>,
    pub retry_after_secs: Option<u64>,
    pub delay_ms: Option<u64>,
}

const FAIL_STATUSES: [&str; 4] = ["build_failed", "update_failed", "pre_deploy_failed", "canceled"];

#[derive(Debug, Clone, Serialize)]
pub struct EnvWrite {
    pub key: String,
    pub value: String,
    pub at: String,
}

/// What the platform has seen, for tests that assert "written once, deployed once".
#[derive(Debug, Clone, Serialize)]
pub struct Stats {
    pub env_writes: Vec<EnvWrite>,
    /// `"KEY=value"` → number of PUTs that wrote exactly that.
    pub env_write_counts: BTreeMap<String, u64>,
    /// Oldest first.
    pub deploys: Vec<Deploy>,
    pub deploy_count: usize,
    /// API requests (not /admin), including rejected ones.
    pub requests: u64,
    pub faults: Faults,
}

struct Books {
    env: BTreeMap<String, String>,
    env_writes: Vec<EnvWrite>,
    env_write_counts: BTreeMap<String, u64>,
    deploys: Vec<Deploy>,
    requests: u64,
    faults: Faults,
}

/// The platform (cheap to clone).
#[derive(Clone)]
pub struct Platform {
    inner: Arc<Inner>,
}

struct Inner {
    config: PlatformConfig,
    host: Host,
    /// Settings of the service other than `REDIS_URL` and `workers_enabled`.
    template: ServiceConfig,
    state: Mutex<Books>,
    tasks: Mutex<Vec<AbortHandle>>,
}

fn now() -> String {
    Utc::now().to_rfc3339_opts(SecondsFormat::Millis, true)
}

impl Platform {
    /// A platform hosting the in-process `service`, whose env var `REDIS_URL` starts as
    /// `template.redis_url`. Deploys restart `service` with `template` plus the env.
    pub fn new(config: PlatformConfig, service: Service, template: ServiceConfig) -> Platform {
        Platform::hosting(config, Host::InProcess(service), template)
    }

    /// A platform hosting `host` (either kind of service); otherwise as [`Platform::new`].
    pub fn hosting(config: PlatformConfig, host: Host, template: ServiceConfig) -> Platform {
        let mut env = BTreeMap::new();
        env.insert("REDIS_URL".to_string(), template.redis_url.clone());
        let faults = Faults {
            fail_next_deploys: 0,
            fail_status: "build_failed".into(),
            workers_enabled: template.workers_enabled,
            respond_429: 0,
            respond_500: 0,
            retry_after_secs: 1,
            delay_ms: 0,
        };
        Platform {
            inner: Arc::new(Inner {
                config,
                host,
                template,
                state: Mutex::new(Books {
                    env,
                    env_writes: Vec::new(),
                    env_write_counts: BTreeMap::new(),
                    deploys: Vec::new(),
                    requests: 0,
                    faults,
                }),
                tasks: Mutex::new(Vec::new()),
            }),
        }
    }

    /// Render's routes under `/v1` plus `/admin/faults` and `/admin/stats`.
    pub fn router(&self) -> Router {
        let api = Router::new()
            .route("/v1/services/{id}/env-vars", get(list_env))
            .route("/v1/services/{id}/env-vars/{key}", get(get_env).put(put_env))
            .route("/v1/services/{id}/deploys", get(list_deploys).post(create_deploy))
            .route("/v1/services/{id}/deploys/{deploy_id}", get(get_deploy))
            .route_layer(middleware::from_fn_with_state(self.clone(), api_gate));
        let admin = Router::new()
            .route("/admin/faults", post(set_faults).get(get_faults))
            .route("/admin/stats", get(get_stats))
            .route_layer(middleware::from_fn_with_state(self.clone(), admin_gate));
        api.merge(admin).with_state(self.clone())
    }

    pub fn service_id(&self) -> &str {
        &self.inner.config.service_id
    }

    /// The current value of an env var.
    pub fn env_var(&self, key: &str) -> Option<String> {
        self.inner.state.lock().unwrap().env.get(key).cloned()
    }

    pub fn stats(&self) -> Stats {
        let s = self.inner.state.lock().unwrap();
        Stats {
            env_writes: s.env_writes.clone(),
            env_write_counts: s.env_write_counts.clone(),
            deploys: s.deploys.clone(),
            deploy_count: s.deploys.len(),
            requests: s.requests,
            faults: s.faults.clone(),
        }
    }

    pub fn deploy(&self, id: &str) -> Option<Deploy> {
        self.inner.state.lock().unwrap().deploys.iter().find(|d| d.id == id).cloned()
    }

    /// Applies a fault patch (as `POST /admin/faults` does).
    pub fn set_faults(&self, patch: FaultsPatch) -> Result<Faults, String> {
        if let Some(s) = &patch.fail_status {
            if !FAIL_STATUSES.contains(&s.as_str()) {
                return Err(format!("fail_status must be one of {}", FAIL_STATUSES.join(", ")));
            }
        }
        let mut st = self.inner.state.lock().unwrap();
        let f = &mut st.faults;
        if let Some(v) = patch.fail_next_deploys {
            f.fail_next_deploys = v;
        }
        if let Some(v) = patch.fail_status {
            f.fail_status = v;
        }
        if let Some(v) = patch.workers_enabled {
            f.workers_enabled = v;
        }
        if let Some(v) = patch.respond_429 {
            f.respond_429 = v;
        }
        if let Some(v) = patch.respond_500 {
            f.respond_500 = v;
        }
        if let Some(v) = patch.retry_after_secs {
            f.retry_after_secs = v;
        }
        if let Some(v) = patch.delay_ms {
            f.delay_ms = v;
        }
        Ok(f.clone())
    }

    /// Stops deploys in flight (the service itself is the caller's to stop).
    pub fn shutdown(&self) {
        for t in self.inner.tasks.lock().unwrap().drain(..) {
            t.abort();
        }
    }

    /// Creates a deploy and runs it in the background.
    fn start_deploy(&self) -> Deploy {
        let (deploy, fail_with, workers_enabled) = {
            let mut st = self.inner.state.lock().unwrap();
            let fail_with = if st.faults.fail_next_deploys > 0 {
                st.faults.fail_next_deploys -= 1;
                Some(st.faults.fail_status.clone())
            } else {
                None
            };
            let t = now();
            let deploy = Deploy {
                id: format!("dep-{}", random_id()),
                status: "build_in_progress".into(),
                trigger: "api".into(),
                created_at: t.clone(),
                updated_at: t,
                finished_at: None,
                redis_url: st.env.get("REDIS_URL").cloned().unwrap_or_else(|| self.inner.template.redis_url.clone()),
            };
            st.deploys.push(deploy.clone());
            (deploy, fail_with, st.faults.workers_enabled)
        };
        let this = self.clone();
        let id = deploy.id.clone();
        let url = deploy.redis_url.clone();
        let task = tokio::spawn(async move { this.run_deploy(id, url, fail_with, workers_enabled).await });
        let mut tasks = self.inner.tasks.lock().unwrap();
        tasks.retain(|t| !t.is_finished());
        tasks.push(task.abort_handle());
        deploy
    }

    async fn run_deploy(&self, id: String, redis_url: String, fail_with: Option<String>, workers_enabled: bool) {
        let step = Duration::from_millis(self.inner.config.deploy_steps_ms);
        tokio::time::sleep(step).await;
        match fail_with.as_deref() {
            Some(s @ ("build_failed" | "canceled")) => return self.set_status(&id, s, true),
            _ => self.set_status(&id, "update_in_progress", false),
        }
        tokio::time::sleep(step).await;
        if let Some(s) = fail_with.as_deref() {
            // The failed deploy never replaces the running instance.
            return self.set_status(&id, s, true);
        }
        // Live only once the new instance runs, as Render marks a deploy live after
        // the new instance is up: whoever sees `live` talks to the new Redis.
        let mut config = self.inner.template.clone();
        config.redis_url = redis_url;
        config.workers_enabled = workers_enabled;
        if let Err(e) = self.inner.host.restart(config).await {
            // As on Render when the new instance never passes its health check.
            tracing::warn!(deploy = %id, "deploy failed: {e}");
            return self.set_status(&id, "update_failed", true);
        }
        let t = now();
        let mut st = self.inner.state.lock().unwrap();
        for d in st.deploys.iter_mut() {
            if d.status == "live" {
                d.status = "deactivated".into();
                d.updated_at = t.clone();
            }
        }
        if let Some(d) = st.deploys.iter_mut().find(|d| d.id == id) {
            d.status = "live".into();
            d.updated_at = t.clone();
            d.finished_at = Some(t);
        }
    }

    fn set_status(&self, id: &str, status: &str, finished: bool) {
        let t = now();
        let mut st = self.inner.state.lock().unwrap();
        if let Some(d) = st.deploys.iter_mut().find(|d| d.id == id) {
            d.status = status.to_string();
            d.updated_at = t.clone();
            if finished {
                d.finished_at = Some(t);
            }
        }
    }

    fn authorized(&self, headers: &HeaderMap) -> bool {
        headers
            .get(header::AUTHORIZATION)
            .and_then(|v| v.to_str().ok())
            .and_then(|v| v.strip_prefix("Bearer "))
            .is_some_and(|t| t.trim() == self.inner.config.api_key)
    }
}

fn random_id() -> String {
    const ALPHABET: &[u8] = b"abcdefghijklmnopqrstuvwxyz0123456789";
    let mut rng = rand::rng();
    (0..20).map(|_| ALPHABET[rng.random_range(0..ALPHABET.len())] as char).collect()
}

/// A Render-style error body.
fn error(status: StatusCode, message: &str) -> Response {
    let id = status.canonical_reason().unwrap_or("error").to_lowercase().replace(' ', "-");
    (status, Json(json!({"id": id, "message": message}))).into_response()
}

/// Auth, request counting and injected faults for the Render API routes.
async fn api_gate(State(p): State<Platform>, req: Request, next: Next) -> Response {
    let delay = {
        let mut st = p.inner.state.lock().unwrap();
        st.requests += 1;
        st.faults.delay_ms
    };
    if !p.authorized(req.headers()) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    if delay > 0 {
        tokio::time::sleep(Duration::from_millis(delay)).await;
    }
    let injected = {
        let mut st = p.inner.state.lock().unwrap();
        let f = &mut st.faults;
        if f.respond_429 > 0 {
            f.respond_429 -= 1;
            Some((StatusCode::TOO_MANY_REQUESTS, f.retry_after_secs))
        } else if f.respond_500 > 0 {
            f.respond_500 -= 1;
            Some((StatusCode::INTERNAL_SERVER_ERROR, 0))
        } else {
            None
        }
    };
    match injected {
        Some((StatusCode::TOO_MANY_REQUESTS, secs)) => {
            let mut r = error(StatusCode::TOO_MANY_REQUESTS, "Rate limit exceeded");
            r.headers_mut().insert(header::RETRY_AFTER, secs.to_string().parse().unwrap());
            r
        }
        Some((status, _)) => error(status, "Internal server error (injected)"),
        None => next.run(req).await,
    }
}

async fn admin_gate(State(p): State<Platform>, req: Request, next: Next) -> Response {
    if !p.authorized(req.headers()) {
        return error(StatusCode::UNAUTHORIZED, "unauthorized");
    }
    next.run(req).await
}

fn check_service(p: &Platform, id: &str) -> Result<(), NoSuchService> {
    if id == p.inner.config.service_id {
        Ok(())
    } else {
        Err(NoSuchService)
    }
}

struct NoSuchService;

impl IntoResponse for NoSuchService {
    fn into_response(self) -> Response {
        error(StatusCode::NOT_FOUND, "service not found")
    }
}

async fn list_env(State(p): State<Platform>, Path(id): Path<String>) -> Response {
    if let Err(r) = check_service(&p, &id) {
        return r.into_response();
    }
    let st = p.inner.state.lock().unwrap();
    let items: Vec<Value> = st.env.iter().map(|(k, v)| json!({"envVar": {"key": k, "value": v}, "cursor": format!("cur-{k}")})).collect();
    Json(items).into_response()
}

async fn get_env(State(p): State<Platform>, Path((id, key)): Path<(String, String)>) -> Response {
    if let Err(r) = check_service(&p, &id) {
        return r.into_response();
    }
    match p.env_var(&key) {
        Some(value) => Json(json!({"key": key, "value": value})).into_response(),
        None => error(StatusCode::NOT_FOUND, "env var not found"),
    }
}

async fn put_env(State(p): State<Platform>, Path((id, key)): Path<(String, String)>, body: Bytes) -> Response {
    if let Err(r) = check_service(&p, &id) {
        return r.into_response();
    }
    let value = match serde_json::from_slice::<Value>(&body) {
        Ok(v) => match v.get("value").and_then(|v| v.as_str()) {
            Some(s) => s.to_string(),
            None => return error(StatusCode::BAD_REQUEST, "body must be {\"value\": \"...\"}"),
        },
        Err(_) => return error(StatusCode::BAD_REQUEST, "body must be JSON {\"value\": \"...\"}"),
    };
    // Stored only: like Render, the running service sees it after the next deploy.
    let mut st = p.inner.state.lock().unwrap();
    st.env.insert(key.clone(), value.clone());
    st.env_writes.push(EnvWrite { key: key.clone(), value: value.clone(), at: now() });
    *st.env_write_counts.entry(format!("{key}={value}")).or_insert(0) += 1;
    Json(json!({"key": key, "value": value})).into_response()
}

#[derive(Deserialize)]
struct ListQuery {
    limit: Option<usize>,
}

async fn list_deploys(State(p): State<Platform>, Path(id): Path<String>, Query(q): Query<ListQuery>) -> Response {
    if let Err(r) = check_service(&p, &id) {
        return r.into_response();
    }
    let limit = q.limit.unwrap_or(20).clamp(1, 100);
    let st = p.inner.state.lock().unwrap();
    let items: Vec<Value> = st.deploys.iter().rev().take(limit).map(|d| json!({"deploy": d, "cursor": d.id})).collect();
    Json(items).into_response()
}

async fn create_deploy(State(p): State<Platform>, Path(id): Path<String>, body: Bytes) -> Response {
    if let Err(r) = check_service(&p, &id) {
        return r.into_response();
    }
    // The body is optional (e.g. {"clearCache": "do_not_clear"}) but must be JSON.
    if !body.iter().all(|b| b.is_ascii_whitespace()) && serde_json::from_slice::<Value>(&body).is_err() {
        return error(StatusCode::BAD_REQUEST, "body must be JSON");
    }
    let deploy = p.start_deploy();
    (StatusCode::CREATED, Json(deploy)).into_response()
}

async fn get_deploy(State(p): State<Platform>, Path((id, deploy_id)): Path<(String, String)>) -> Response {
    if let Err(r) = check_service(&p, &id) {
        return r.into_response();
    }
    match p.deploy(&deploy_id) {
        Some(d) => Json(d).into_response(),
        None => error(StatusCode::NOT_FOUND, "deploy not found"),
    }
}

async fn set_faults(State(p): State<Platform>, body: Bytes) -> Response {
    let patch: FaultsPatch = match serde_json::from_slice(&body) {
        Ok(v) => v,
        Err(e) => return error(StatusCode::BAD_REQUEST, &format!("invalid faults: {e}")),
    };
    match p.set_faults(patch) {
        Ok(f) => Json(f).into_response(),
        Err(m) => error(StatusCode::BAD_REQUEST, &m),
    }
}

async fn get_faults(State(p): State<Platform>) -> Response {
    Json(p.stats().faults).into_response()
}

async fn get_stats(State(p): State<Platform>) -> Response {
    Json(p.stats()).into_response()
}
