//! The web console `serve` serves at `/`: targets, incidents, one incident's live
//! timeline, approval gates, abort and pause, for a person at a phone or a laptop.
//!
//! Plain HTML, CSS and JavaScript embedded in the binary (no build step, no CDN, no
//! external font); a JSON API under `/console/api/` that the page calls; one
//! server-sent-event stream per page for everything live (the page never polls).
//! Sign-in exchanges an approver or viewer token for a session cookie ([`session`]);
//! every action goes through the journal's command and pause paths, `via: web`, and
//! every text that reaches a page passes through the redactor. The console reads and
//! acts only through [`source::ConsoleSource`].

mod handlers;
pub mod session;
pub mod source;
mod stream;

use crate::daemon::Daemon;
use axum::extract::DefaultBodyLimit;
use axum::http::{header, HeaderValue, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::watch;

/// How the console runs (`serve --console-*`).
#[derive(Clone, Debug)]
pub struct ConsoleOptions {
    /// A session ends this long after sign-in.
    pub session_ttl: Duration,
    /// Always mark the session cookie `Secure` (the console is reached over TLS through
    /// a proxy that does not send `X-Forwarded-Proto: https`).
    pub secure_cookies: bool,
    /// How often a live page's stream looks at the journal for news.
    pub tick: Duration,
    /// Streams end when this turns true (the daemon's shutdown), so an open page does
    /// not hold `serve`'s shutdown for its grace period.
    pub shutdown: Option<watch::Receiver<bool>>,
}

impl Default for ConsoleOptions {
    fn default() -> Self {
        ConsoleOptions {
            session_ttl: Duration::from_secs(12 * 3600),
            secure_cookies: false,
            tick: Duration::from_millis(250),
            shutdown: None,
        }
    }
}

#[derive(Clone)]
pub struct ConsoleState {
    pub source: Arc<dyn source::ConsoleSource>,
    pub sessions: Arc<session::Sessions>,
    pub opts: ConsoleOptions,
}

/// Console bodies are a comment or a token: small.
const MAX_BODY: usize = 16 * 1024;

/// The console's routes for `serve`'s fleet, ready to merge into its router.
pub fn routes(daemon: Arc<Daemon>, auth: crate::server::auth::AuthConfig, opts: ConsoleOptions) -> Router {
    let state = ConsoleState {
        source: Arc::new(source::FleetSource::new(daemon, auth)),
        sessions: Arc::new(session::Sessions::new(opts.session_ttl)),
        opts,
    };
    routes_for(state)
}

pub fn routes_for(state: ConsoleState) -> Router {
    Router::new()
        .route("/", get(shell))
        .route("/console", get(shell))
        .route("/console/", get(shell))
        .route("/console/incidents", get(shell))
        .route("/console/incidents/{id}", get(shell))
        .route("/console/assets/app.js", get(|| asset("text/javascript; charset=utf-8", APP_JS)))
        .route("/console/assets/app.css", get(|| asset("text/css; charset=utf-8", APP_CSS)))
        .route("/console/assets/icon.svg", get(|| asset("image/svg+xml", ICON_SVG)))
        .route("/console/api/login", post(handlers::login))
        .route("/console/api/logout", post(handlers::logout))
        .route("/console/api/session", get(handlers::session_info))
        .route("/console/api/targets", get(handlers::targets))
        .route("/console/api/incidents", get(handlers::incidents))
        .route("/console/api/incidents/{id}", get(handlers::incident))
        .route("/console/api/incidents/{id}/alerts", get(handlers::alerts))
        .route("/console/api/incidents/{id}/{action}", post(handlers::command))
        .route("/console/api/pause", post(handlers::pause))
        .route("/console/api/stream", get(stream::stream))
        .layer(axum::middleware::map_response(security_headers))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(state)
}

const INDEX_HTML: &str = include_str!("assets/index.html");
const APP_JS: &str = include_str!("assets/app.js");
const APP_CSS: &str = include_str!("assets/app.css");
const ICON_SVG: &str = include_str!("assets/icon.svg");

/// Every page is the same shell; the script renders the page its path names, so an
/// incident's address can be pasted into Slack and opened as it is.
async fn shell() -> Response {
    ([(header::CONTENT_TYPE, "text/html; charset=utf-8"), (header::CACHE_CONTROL, "no-cache")], INDEX_HTML).into_response()
}

async fn asset(content_type: &'static str, body: &'static str) -> Response {
    ([(header::CONTENT_TYPE, content_type), (header::CACHE_CONTROL, "no-cache")], body).into_response()
}

/// Nothing from elsewhere runs or loads on a console page, and no other site frames it.
async fn security_headers(mut r: Response) -> Response {
    let h = r.headers_mut();
    h.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(
            "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self'; connect-src 'self'; base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
        ),
    );
    h.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    h.insert(header::X_CONTENT_TYPE_OPTIONS, HeaderValue::from_static("nosniff"));
    h.insert(header::REFERRER_POLICY, HeaderValue::from_static("no-referrer"));
    if !h.contains_key(header::CACHE_CONTROL) {
        h.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    }
    r
}

/// Every string in a JSON answer through the redactor: whatever the journal holds, no
/// secret the daemon knows reaches a page.
pub(crate) fn redact_json(v: &mut serde_json::Value, r: &crate::redact::Redactor) {
    match v {
        serde_json::Value::String(s) => {
            let clean = r.redact(s);
            if clean != *s {
                *s = clean;
            }
        }
        serde_json::Value::Array(items) => items.iter_mut().for_each(|i| redact_json(i, r)),
        serde_json::Value::Object(map) => map.values_mut().for_each(|i| redact_json(i, r)),
        _ => {}
    }
}

pub(crate) fn error(status: StatusCode, message: impl Into<String>) -> Response {
    (status, axum::Json(serde_json::json!({ "error": crate::redact::redact(&message.into()) }))).into_response()
}
