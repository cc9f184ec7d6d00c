//! The HTTP side of `serve` (axum): webhooks, incidents, approvals, health, metrics.
//! [`router`] is a plain function so tests can call it; [`serve`] takes its listener
//! and shutdown future from the caller.

pub mod alerts;
pub mod auth;
pub mod console;
pub mod listen;

use crate::daemon::Daemon;
use crate::journal::prelude::*;
use crate::journal::{CommandKind, JournalError};
use axum::body::Bytes;
use axum::extract::{DefaultBodyLimit, Path, State};
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::{Json, Router};
use serde_json::json;
use std::sync::Arc;
use std::time::Duration;

/// Webhook bodies above this are refused with 413.
pub const MAX_BODY: usize = 256 * 1024;

/// What the HTTP side holds: the daemon, and its own auth (tokens, replay memory).
pub struct App {
    pub daemon: Arc<Daemon>,
    pub auth: auth::AuthConfig,
    /// HMAC signatures already accepted (a signature is accepted once).
    pub replays: auth::ReplayGuard,
    /// Off loopback, an HMAC signature without a timestamp is refused: nothing would
    /// stop its replay once forgotten.
    pub require_signed_timestamp: std::sync::atomic::AtomicBool,
}

impl App {
    pub fn new(daemon: Arc<Daemon>, auth: auth::AuthConfig) -> Arc<App> {
        Arc::new(App { daemon, auth, replays: Default::default(), require_signed_timestamp: Default::default() })
    }
}

type AppState = Arc<App>;

pub fn router(app: Arc<App>) -> Router {
    router_with(app, console::ConsoleOptions::default())
}

/// [`router`] with the web console's options (`serve --console-*`).
pub fn router_with(app: Arc<App>, console: console::ConsoleOptions) -> Router {
    Router::new()
        .route("/webhooks/{source}", post(webhook_any))
        .route("/webhooks/{source}/{target}", post(webhook_for))
        .route("/incidents", get(list_incidents))
        .route("/incidents/{id}", get(get_incident))
        .route("/incidents/{id}/approve", post(approve))
        .route("/incidents/{id}/reject", post(reject))
        .route("/incidents/{id}/abort", post(abort))
        .route("/status", get(status))
        .route("/healthz", get(healthz))
        .route("/leader", get(leader))
        .route("/metrics", get(metrics_text))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(app.clone())
        .merge(console::routes(app.daemon.clone(), app.auth.clone(), console))
}

/// Serves with the default [`listen::Limits`] (header and body timeouts, a connection
/// limit below the descriptor limit, a bounded graceful shutdown).
pub async fn serve(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_with(listener, app, listen::Limits::default(), shutdown).await
}

pub async fn serve_with(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    limits: listen::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    serve_console(listener, app, console::ConsoleOptions::default(), limits, shutdown).await
}

/// [`serve_with`] with the web console's options.
pub async fn serve_console(
    listener: tokio::net::TcpListener,
    app: Arc<App>,
    console: console::ConsoleOptions,
    limits: listen::Limits,
    shutdown: impl std::future::Future<Output = ()> + Send + 'static,
) -> std::io::Result<()> {
    listen::serve(listener, router_with(app, console), limits, shutdown).await
}

fn error(status: StatusCode, message: impl Into<String>) -> Response {
    // Error text may quote what a client sent or what a library said: redacted.
    (status, Json(json!({ "error": crate::redact::redact(&message.into()) }))).into_response()
}

fn journal_error(e: JournalError) -> Response {
    match e {
        JournalError::UnknownIncident(id) => error(StatusCode::NOT_FOUND, format!("no incident with id {id:?}")),
        // Not recorded: the sender must retry.
        other => {
            tracing::error!(error = %other, "journal write failed; answering 503");
            error(StatusCode::SERVICE_UNAVAILABLE, format!("not journaled, retry: {other}"))
        }
    }
}

async fn webhook(app: AppState, source: String, target: Option<String>, headers: HeaderMap, body: Bytes) -> Response {
    type Parser = fn(&[u8]) -> Result<Vec<alerts::IncomingAlert>, alerts::AlertError>;
    let (source, parse): (&'static str, Parser) = match source.as_str() {
        "grafana" => ("grafana", alerts::parse_group),
        "alertmanager" => ("alertmanager", alerts::parse_group),
        "generic" => ("generic", alerts::parse_generic),
        _ => return error(StatusCode::NOT_FOUND, "unknown webhook source; use grafana, alertmanager or generic"),
    };
    let d = &app.daemon;
    let signature = match app.auth.webhook_auth(&headers, &body) {
        auth::WebhookAuth::Denied => {
            d.metrics.webhook(source, "unauthorized");
            return error(StatusCode::UNAUTHORIZED, "missing or wrong bearer token or signature");
        }
        auth::WebhookAuth::Signed { timestamped: false, .. } if app.require_signed_timestamp.load(std::sync::atomic::Ordering::Relaxed) => {
            d.metrics.webhook(source, "unauthorized");
            return error(
                StatusCode::UNAUTHORIZED,
                "a signature without X-Grafana-Alerting-Signature-Timestamp is replayable; refused off loopback",
            );
        }
        auth::WebhookAuth::Signed { signature, timestamped } => {
            if !app.replays.reserve(&signature, timestamped, chrono::Utc::now().timestamp()) {
                d.metrics.webhook(source, "replayed");
                return error(StatusCode::CONFLICT, "this signature was already accepted (a replay)");
            }
            Some(signature)
        }
        auth::WebhookAuth::Open | auth::WebhookAuth::Bearer => None,
    };
    // Any answer but 2xx gives the signature back: the sender retries that delivery.
    let release = |app: &App| {
        if let Some(s) = &signature {
            app.replays.release(s);
        }
    };
    let parsed = match parse(&body) {
        Ok(a) => a,
        Err(alerts::AlertError::TooMany(n)) => {
            release(&app);
            d.metrics.webhook(source, "too_many");
            return error(StatusCode::PAYLOAD_TOO_LARGE, format!("{n} alerts in one body; at most {}", alerts::MAX_ALERTS));
        }
        Err(e) => {
            release(&app);
            d.metrics.webhook(source, "bad_request");
            return error(StatusCode::BAD_REQUEST, e.to_string());
        }
    };
    match d.intake(source, target.as_deref(), parsed).await {
        Ok(dispositions) => {
            d.metrics.webhook(source, "accepted");
            (StatusCode::ACCEPTED, Json(json!({ "alerts": dispositions }))).into_response()
        }
        Err(e) => {
            release(&app);
            d.metrics.webhook(source, "journal_error");
            journal_error(e)
        }
    }
}

async fn webhook_any(State(app): State<AppState>, Path(source): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    webhook(app, source, None, headers, body).await
}

async fn webhook_for(
    State(app): State<AppState>,
    Path((source, target)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    webhook(app, source, Some(target), headers, body).await
}

fn approver_or_401(app: &App, headers: &HeaderMap) -> Result<String, Box<Response>> {
    app.auth.approver(headers).ok_or_else(|| Box::new(error(StatusCode::UNAUTHORIZED, "an approver token is required")))
}

#[derive(serde::Deserialize, Default)]
struct IncidentsQuery {
    target: Option<String>,
}

async fn list_incidents(
    State(app): State<AppState>,
    axum::extract::Query(q): axum::extract::Query<IncidentsQuery>,
    headers: HeaderMap,
) -> Response {
    if let Err(r) = approver_or_401(&app, &headers) {
        return *r;
    }
    match app.daemon.journal.incidents(200).await {
        Ok(rows) => Json(rows.into_iter().filter(|i| q.target.as_ref().is_none_or(|t| &i.target == t)).collect::<Vec<_>>()).into_response(),
        Err(e) => journal_error(e),
    }
}

async fn status(State(app): State<AppState>, headers: HeaderMap) -> Response {
    if let Err(r) = approver_or_401(&app, &headers) {
        return *r;
    }
    match app.daemon.status().await {
        Ok(rows) => Json(rows).into_response(),
        Err(e) => journal_error(e),
    }
}

async fn get_incident(State(app): State<AppState>, Path(id): Path<String>, headers: HeaderMap) -> Response {
    if let Err(r) = approver_or_401(&app, &headers) {
        return *r;
    }
    match crate::timeline::load(&app.daemon.journal, &id).await {
        Ok(a) => Json(a).into_response(),
        Err(e) => journal_error(e),
    }
}

#[derive(serde::Deserialize, Default)]
struct CommandBody {
    #[serde(default)]
    comment: String,
}

async fn command(app: AppState, id: String, kind: CommandKind, headers: HeaderMap, body: Bytes) -> Response {
    let d = &app.daemon;
    let who = match approver_or_401(&app, &headers) {
        Ok(w) => w,
        Err(r) => return *r,
    };
    let body: CommandBody = if body.is_empty() {
        CommandBody::default()
    } else {
        match serde_json::from_slice(&body) {
            Ok(b) => b,
            Err(e) => return error(StatusCode::BAD_REQUEST, format!("body must be {{\"comment\": \"...\"}}: {e}")),
        }
    };
    let journal = &d.journal;
    match journal.incident(&id).await {
        Ok(i) if i.outcome.is_some() => {
            return error(StatusCode::CONFLICT, format!("incident {id} has already ended ({})", i.outcome.unwrap_or_default()))
        }
        // Another process's target: no playbook here can drive it.
        Ok(i) if d.target_of(&i).is_none() => {
            return error(StatusCode::CONFLICT, format!("incident {id} belongs to target {}, which this serve does not run", i.target))
        }
        Ok(_) => {}
        Err(e) => return journal_error(e),
    }
    let cmd = match journal.add_command(&id, kind, &who, &body.comment, "http", chrono::Utc::now()).await {
        Ok(c) => c,
        Err(e) => return journal_error(e),
    };
    if let Err(e) = d.spawn(&id).await {
        tracing::warn!(incident = %id, error = %e, "could not start the incident's runner; the adopt loop retries");
    }
    // The runner applies it within its command poll; wait a little for the verdict.
    let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
    while tokio::time::Instant::now() < deadline {
        if let Ok(Some(row)) = journal.command(cmd).await {
            if let Some(accepted) = row.accepted {
                let status = if accepted { StatusCode::OK } else { StatusCode::FORBIDDEN };
                return (status, Json(json!({ "command": cmd, "accepted": accepted, "result": row.result, "by": who }))).into_response();
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    (StatusCode::ACCEPTED, Json(json!({ "command": cmd, "accepted": null, "result": "journaled; not applied yet", "by": who })))
        .into_response()
}

async fn approve(State(d): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    command(d, id, CommandKind::Approve, headers, body).await
}

async fn reject(State(d): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    command(d, id, CommandKind::Reject, headers, body).await
}

async fn abort(State(d): State<AppState>, Path(id): Path<String>, headers: HeaderMap, body: Bytes) -> Response {
    command(d, id, CommandKind::Abort, headers, body).await
}

/// This instance's role among the instances sharing the journal, and the lease as the
/// database sees it: 200 on the leader (what a load balancer routes to), 503 elsewhere.
async fn leader(State(app): State<AppState>) -> Response {
    use crate::journal::leader::LeaderStore;
    let d = &app.daemon;
    let Some(l) = d.leadership() else {
        return Json(json!({ "leader": true, "shared": false, "note": "journal of its own (SQLite): this instance always acts" }))
            .into_response();
    };
    let view = l.view();
    // The role is this instance's own knowledge and answers at once; the database's
    // view is added when it comes quickly (a partition makes the journal hang, and a
    // load balancer's check must not).
    let lease = match tokio::time::timeout(READ_BUDGET, d.journal.leader()).await {
        Ok(Ok(row)) => json!(row),
        Ok(Err(e)) => json!({ "error": format!("journal unavailable: {e}") }),
        Err(_) => json!({ "error": format!("journal did not answer within {READ_BUDGET:?}") }),
    };
    let body = json!({ "leader": view.leader, "shared": true, "term": view.term, "holder": l.holder, "note": view.note, "lease": lease,
        "ttl_ms": l.settings.ttl.as_millis() as u64, "renew_ms": l.settings.renew_every.as_millis() as u64 });
    let code = if view.leader { StatusCode::OK } else { StatusCode::SERVICE_UNAVAILABLE };
    (code, Json(body)).into_response()
}

/// The role part of `/healthz`: a follower is healthy (it journals alerts and takes
/// approvals); a leader that stepped down says why.
fn role_json(app: &AppState) -> serde_json::Value {
    match app.daemon.leadership() {
        None => json!("standalone"),
        Some(l) => {
            let v = l.view();
            json!({ "leader": v.leader, "term": v.term, "note": v.note })
        }
    }
}

/// How long `/healthz` and `/leader` wait for the journal before answering without it.
const READ_BUDGET: std::time::Duration = std::time::Duration::from_secs(1);

async fn healthz(State(app): State<AppState>) -> Response {
    let journal = &app.daemon.journal;
    let role = role_json(&app);
    let reads = tokio::time::timeout(READ_BUDGET, async { (journal.paused().await, journal.open_incidents().await) }).await;
    let Ok(reads) = reads else {
        return (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({ "status": "unhealthy", "reason": format!("the journal did not answer within {READ_BUDGET:?}"), "role": role })),
        )
            .into_response();
    };
    match reads {
        // The orchestrator's own host in trouble (out of descriptors, memory, its own
        // network): it cannot be trusted to judge Redis now, and says so.
        (Ok(paused), Ok(open)) if crate::selfcheck::unhealthy().is_some() => (
            StatusCode::SERVICE_UNAVAILABLE,
            Json(json!({
                "status": "unhealthy",
                "reason": format!("the orchestrator's own host: {}", crate::selfcheck::unhealthy().unwrap_or_default()),
                "paused": paused,
                "open_incidents": open.len(),
                "role": role,
            })),
        )
            .into_response(),
        (Ok(paused), Ok(open)) => {
            Json(json!({ "status": "ok", "paused": paused, "open_incidents": open.len(), "role": role })).into_response()
        }
        (Err(e), _) | (_, Err(e)) => error(StatusCode::SERVICE_UNAVAILABLE, format!("journal unavailable: {e}")),
    }
}

async fn metrics_text(State(app): State<AppState>) -> Response {
    let d = &app.daemon;
    match d.metrics.render(&d.journal, &d.target_names()).await {
        Ok(text) => ([("content-type", crate::metrics::Metrics::CONTENT_TYPE)], text).into_response(),
        Err(e) => journal_error(e),
    }
}
