//! The console's JSON API: sign-in and sessions, targets, incident lists, one
//! incident's view (timeline, gate), alerts a page at a time, commands and pause.
//! Errors map to HTTP codes here and only here.

// A handler's refusal is the Response itself (axum's `Result<Response, Response>`);
// boxing it would only add an allocation to every refusal.
#![allow(clippy::result_large_err)]

use super::session::{self, Session};
use super::source::SourceError;
use super::{error, redact_json, ConsoleState};
use crate::journal::prelude::*;
use crate::journal::{CommandKind, IncidentFilter, JournalError};
use crate::machine::{Machine, State as MState};
use crate::server::auth::Role;
use axum::body::Bytes;
use axum::extract::{Path, Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::Json;
use serde::Deserialize;
use serde_json::{json, Value};
use std::time::Duration;

/// Alerts shown with the timeline; more are fetched a page at a time on request.
pub const ALERTS_PAGE: i64 = 50;
/// A failed sign-in answers after this: guessing tokens is slow.
const FAILED_SIGN_IN_DELAY: Duration = Duration::from_millis(300);

type R = Result<Response, Response>;

fn journal_error(e: JournalError) -> Response {
    match e {
        JournalError::UnknownIncident(id) => error(StatusCode::NOT_FOUND, format!("no incident with id {id:?}")),
        other => {
            tracing::error!(error = %other, "console: journal unavailable");
            error(StatusCode::SERVICE_UNAVAILABLE, format!("journal unavailable, retry: {other}"))
        }
    }
}

/// A JSON answer with every string redacted.
pub(super) fn answer(st: &ConsoleState, mut v: Value) -> Response {
    redact_json(&mut v, st.source.redactor());
    Json(v).into_response()
}

/// The signed-in session, or 401.
pub(super) fn signed_in(st: &ConsoleState, headers: &HeaderMap) -> Result<(String, Session), Response> {
    st.sessions.from_headers(headers).ok_or_else(|| error(StatusCode::UNAUTHORIZED, "sign in first (or the session expired)"))
}

/// A state-changing request: signed in, from the console's own page, with the
/// session's CSRF token, by someone holding an approver token.
fn acting(st: &ConsoleState, headers: &HeaderMap) -> Result<Session, Response> {
    let (_, s) = signed_in(st, headers)?;
    if !session::same_origin(headers) {
        return Err(error(StatusCode::FORBIDDEN, "refused: the request did not come from the console's own page"));
    }
    if !session::csrf_ok(&s, headers) {
        return Err(error(StatusCode::FORBIDDEN, "refused: missing or wrong CSRF token (reload the page)"));
    }
    if s.role != Role::Approver {
        return Err(error(StatusCode::FORBIDDEN, format!("refused: {} signed in read-only (a viewer token)", s.who)));
    }
    Ok(s)
}

fn session_json(s: &Session) -> Value {
    json!({ "who": s.who, "role": s.role, "csrf": s.csrf, "expires_at": crate::journal::ts(s.expires_at) })
}

#[derive(Deserialize)]
pub(super) struct LoginBody {
    token: String,
}

pub(super) async fn login(State(st): State<ConsoleState>, headers: HeaderMap, body: Bytes) -> Response {
    // No session yet, so no CSRF token: a JSON body (which a cross-site form cannot
    // send without a preflight) from this origin.
    let json_body = headers.get(header::CONTENT_TYPE).and_then(|v| v.to_str().ok()).is_some_and(|v| v.starts_with("application/json"));
    if !json_body || !session::same_origin(&headers) {
        return error(StatusCode::FORBIDDEN, "refused: sign in from the console's own page");
    }
    let Ok(b) = serde_json::from_slice::<LoginBody>(&body) else {
        return error(StatusCode::BAD_REQUEST, "body must be {\"token\": \"...\"}");
    };
    let Some((who, role)) = st.source.auth().signer(b.token.trim()) else {
        tracing::warn!("console: sign-in with an unknown token refused");
        tokio::time::sleep(FAILED_SIGN_IN_DELAY).await;
        return error(StatusCode::UNAUTHORIZED, "unknown token");
    };
    let (id, s) = st.sessions.create(&who, role);
    tracing::info!(who = %who, role = ?role, "console: signed in");
    let secure = session::over_tls(&headers, st.opts.secure_cookies);
    let mut r = answer(&st, session_json(&s));
    if let Ok(v) = session::set_cookie(&id, st.sessions.ttl(), secure).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn logout(State(st): State<ConsoleState>, headers: HeaderMap) -> Response {
    let secure = session::over_tls(&headers, st.opts.secure_cookies);
    if let Some((id, s)) = st.sessions.from_headers(&headers) {
        if !session::csrf_ok(&s, &headers) {
            return error(StatusCode::FORBIDDEN, "refused: missing or wrong CSRF token");
        }
        st.sessions.remove(&id);
        tracing::info!(who = %s.who, "console: signed out");
    }
    let mut r = Json(json!({ "signed_out": true })).into_response();
    if let Ok(v) = session::clear_cookie(secure).parse() {
        r.headers_mut().insert(header::SET_COOKIE, v);
    }
    r
}

pub(super) async fn session_info(State(st): State<ConsoleState>, headers: HeaderMap) -> R {
    let (_, s) = signed_in(&st, &headers)?;
    let mut v = session_json(&s);
    v["public_url"] = json!(st.source.public_url());
    Ok(answer(&st, v))
}

/// The banner every page shows: whether automatic failover is paused, by whom.
pub(super) async fn status_json(st: &ConsoleState) -> Result<Value, JournalError> {
    let pause = st.source.journal().pause_state().await?;
    let targets = st.source.targets().await?;
    let (_, by, at) = pause.unwrap_or_default();
    // Judged by the window's end: an expired maintenance window is no pause.
    let window = st.source.journal().pause(None, chrono::Utc::now()).await?;
    Ok(json!({
        "paused": window.is_some(),
        "paused_by": by,
        "paused_at": at,
        "paused_until": window.as_ref().and_then(|p| p.until).map(crate::journal::ts),
        "pause_reason": window.as_ref().and_then(|p| p.reason.clone()),
        "targets": targets,
    }))
}

pub(super) async fn targets(State(st): State<ConsoleState>, headers: HeaderMap) -> R {
    signed_in(&st, &headers)?;
    let v = status_json(&st).await.map_err(journal_error)?;
    Ok(answer(&st, v))
}

#[derive(Deserialize, Default)]
pub(super) struct ListQuery {
    target: Option<String>,
    outcome: Option<String>,
    since: Option<String>,
    until: Option<String>,
    page: Option<i64>,
    per_page: Option<i64>,
}

fn non_empty(s: Option<String>) -> Option<String> {
    s.map(|s| s.trim().to_string()).filter(|s| !s.is_empty())
}

/// A time filter as the journal writes times (RFC 3339, UTC, milliseconds).
fn as_journal_time(s: Option<String>) -> Result<Option<String>, Response> {
    match non_empty(s) {
        None => Ok(None),
        Some(t) => crate::journal::parse_ts(&t)
            .map(|t| Some(crate::journal::ts(t)))
            .ok_or_else(|| error(StatusCode::BAD_REQUEST, format!("{t:?} is not an RFC 3339 time (2026-12-02T03:00:00Z)"))),
    }
}

pub(super) async fn incidents(State(st): State<ConsoleState>, headers: HeaderMap, Query(q): Query<ListQuery>) -> R {
    signed_in(&st, &headers)?;
    let per_page = q.per_page.unwrap_or(25).clamp(1, 200);
    let page = q.page.unwrap_or(1).max(1);
    let filter = IncidentFilter {
        target: non_empty(q.target),
        outcome: non_empty(q.outcome),
        since: as_journal_time(q.since)?,
        until: as_journal_time(q.until)?,
        offset: (page - 1) * per_page,
        limit: per_page,
    };
    let (rows, total) = st.source.journal().incident_page(&filter).await.map_err(journal_error)?;
    Ok(answer(&st, json!({ "incidents": rows, "total": total, "page": page, "per_page": per_page })))
}

/// One incident as its page shows it: the timeline (alerts paged), time per step,
/// the approval gate when it waits at one, and its links.
pub(super) async fn incident_view(st: &ConsoleState, id: &str) -> Result<Value, JournalError> {
    let tl = crate::timeline::load_page(st.source.journal(), id, crate::timeline::Alerts::Page { offset: 0, limit: ALERTS_PAGE }).await?;
    let mut v = serde_json::to_value(&tl).map_err(|e| JournalError::Corrupt(e.to_string()))?;
    v["time_per_step"] = json!(tl.time_per_step());
    v["gate"] = gate(st, &tl).await;
    let path = format!("/console/incidents/{}", tl.incident.id);
    v["links"] = json!({ "page": path, "public": st.source.public_url().map(|u| format!("{u}{path}")) });
    Ok(v)
}

/// The approval gate the incident waits at: the step, who may approve, approvals so
/// far (from the journaled machine), when it expires and what approving lets happen.
async fn gate(st: &ConsoleState, tl: &crate::timeline::Timeline) -> Value {
    if tl.incident.state != "awaiting_approval" || tl.incident.outcome.is_some() {
        return Value::Null;
    }
    let Ok(machine) = Machine::from_json(&tl.incident.machine) else { return Value::Null };
    let MState::AwaitingApproval { step, approvals } = machine.state() else { return Value::Null };
    let policy = &machine.incident().policy;
    let since = tl
        .transitions
        .iter()
        .rev()
        .find(|t| t.row.rejected.is_none() && t.row.to_state == "awaiting_approval" && t.row.from_state != "awaiting_approval")
        .map(|t| t.row.at.clone());
    let plan = st.source.gate_plan(&tl.incident, *step).await;
    let expires_at = since
        .as_deref()
        .and_then(crate::journal::parse_ts)
        .map(|s| crate::journal::ts(s + chrono::Duration::milliseconds(plan.ttl_ms as i64)));
    json!({
        "step": step.as_str(),
        "waiting_since": since,
        "expires_at": expires_at,
        "approvers": policy.approvers,
        "required": policy.approvals_required,
        "approvals": approvals,
        "plan": plan,
    })
}

pub(super) async fn incident(State(st): State<ConsoleState>, headers: HeaderMap, Path(id): Path<String>) -> R {
    signed_in(&st, &headers)?;
    let v = incident_view(&st, &id).await.map_err(journal_error)?;
    Ok(answer(&st, v))
}

#[derive(Deserialize)]
pub(super) struct AlertQuery {
    offset: Option<i64>,
    limit: Option<i64>,
}

pub(super) async fn alerts(State(st): State<ConsoleState>, headers: HeaderMap, Path(id): Path<String>, Query(q): Query<AlertQuery>) -> R {
    signed_in(&st, &headers)?;
    let j = st.source.journal();
    let offset = q.offset.unwrap_or(0).max(0);
    let limit = q.limit.unwrap_or(ALERTS_PAGE).clamp(1, 500);
    j.incident(&id).await.map_err(journal_error)?;
    let rows = j.alerts_page(&id, offset, limit).await.map_err(journal_error)?;
    let total = j.alert_count(&id).await.map_err(journal_error)?;
    Ok(answer(&st, json!({ "alerts": rows, "offset": offset, "total": total })))
}

#[derive(Deserialize, Default)]
struct CommandBody {
    #[serde(default)]
    comment: String,
}

pub(super) async fn command(
    State(st): State<ConsoleState>,
    headers: HeaderMap,
    Path((id, action)): Path<(String, String)>,
    body: Bytes,
) -> R {
    let s = acting(&st, &headers)?;
    let kind = match action.as_str() {
        "approve" => CommandKind::Approve,
        "reject" => CommandKind::Reject,
        "abort" => CommandKind::Abort,
        _ => return Err(error(StatusCode::NOT_FOUND, format!("no action {action:?} (approve, reject, abort)"))),
    };
    let b: CommandBody = if body.is_empty() {
        CommandBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| error(StatusCode::BAD_REQUEST, format!("body must be {{\"comment\": \"...\"}}: {e}")))?
    };
    let verdict = st.source.command(&id, kind, &s.who, b.comment.trim()).await.map_err(|e| match e {
        SourceError::NotFound(id) => error(StatusCode::NOT_FOUND, format!("no incident with id {id:?}")),
        SourceError::Conflict(m) => error(StatusCode::CONFLICT, m),
        SourceError::Journal(e) => journal_error(e),
    })?;
    tracing::info!(incident = %id, who = %s.who, action = kind.as_str(), accepted = ?verdict.accepted, "console: command");
    let status = match verdict.accepted {
        Some(true) => StatusCode::OK,
        Some(false) => StatusCode::FORBIDDEN,
        None => StatusCode::ACCEPTED,
    };
    let mut r = answer(&st, serde_json::to_value(&verdict).unwrap_or(Value::Null));
    *r.status_mut() = status;
    Ok(r)
}

#[derive(Deserialize)]
pub(super) struct PauseBody {
    paused: bool,
    /// A maintenance window: the pause lifts itself after this long (`2h`).
    #[serde(default, rename = "for")]
    for_: Option<String>,
    #[serde(default)]
    reason: Option<String>,
}

pub(super) async fn pause(State(st): State<ConsoleState>, headers: HeaderMap, body: Bytes) -> R {
    let s = acting(&st, &headers)?;
    let b: PauseBody = serde_json::from_slice(&body).map_err(|_| {
        error(StatusCode::BAD_REQUEST, "body must be {\"paused\": true|false, \"for\": \"2h\" (optional), \"reason\": \"…\" (optional)}")
    })?;
    let until = match b.for_.as_deref().filter(|f| !f.is_empty()) {
        None => None,
        Some(f) => match crate::duration::parse_duration(f) {
            Ok(d) if !d.is_zero() && d <= std::time::Duration::from_secs(366 * 86_400) && b.paused => {
                Some(chrono::Utc::now() + chrono::Duration::from_std(d).unwrap_or(chrono::Duration::MAX))
            }
            _ => {
                return Err(error(
                    StatusCode::BAD_REQUEST,
                    "`for` must be a duration above zero and at most a year (e.g. 2h), with paused: true",
                ))
            }
        },
    };
    st.source.set_paused(b.paused, until, b.reason.as_deref(), &s.who).await.map_err(journal_error)?;
    tracing::warn!(who = %s.who, paused = b.paused, "console: automatic failover {}", if b.paused { "paused" } else { "unpaused" });
    let v = status_json(&st).await.map_err(journal_error)?;
    Ok(answer(&st, v))
}
