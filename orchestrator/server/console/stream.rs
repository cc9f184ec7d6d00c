//! The one live channel of a console page: server-sent events. `status` (pause, the
//! targets) on every page, and `timeline` (the whole incident view) on an incident's
//! page whenever its journal changes. The page never polls; this task looks at the
//! journal every tick (two cheap reads: the incident's ledger head and its alert
//! count) and sends only what changed. `expired` ends a stream whose session ended.

use super::handlers::{incident_view, signed_in, status_json};
use super::{redact_json, ConsoleState};
use crate::journal::prelude::*;
use axum::extract::{Query, State};
use axum::http::HeaderMap;
use axum::response::sse::{Event, KeepAlive, Sse};
use axum::response::{IntoResponse, Response};
use serde::Deserialize;
use std::convert::Infallible;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Deserialize)]
pub(super) struct StreamQuery {
    incident: Option<String>,
}

pub(super) async fn stream(State(st): State<ConsoleState>, headers: HeaderMap, Query(q): Query<StreamQuery>) -> Response {
    let (sid, _) = match signed_in(&st, &headers) {
        Ok(s) => s,
        Err(r) => return r,
    };
    let (tx, rx) = mpsc::channel::<Event>(8);
    tokio::spawn(watch(st, sid, q.incident.filter(|i| !i.is_empty()), tx));
    let events = futures_util::stream::unfold(rx, |mut rx| async move { rx.recv().await.map(|e| (Ok::<_, Infallible>(e), rx)) });
    Sse::new(events).keep_alive(KeepAlive::new().interval(Duration::from_secs(15))).into_response()
}

fn json_event(name: &str, mut v: serde_json::Value, st: &ConsoleState) -> (String, Event) {
    redact_json(&mut v, st.source.redactor());
    let text = v.to_string();
    (text.clone(), Event::default().event(name).data(text))
}

/// Ends when the page goes away (the channel closes), the session ends, or the daemon
/// shuts down.
async fn watch(st: ConsoleState, sid: String, incident: Option<String>, tx: mpsc::Sender<Event>) {
    let mut shutdown = st.opts.shutdown.clone();
    let (mut last_status, mut last_version) = (String::new(), None::<(Option<String>, i64)>);
    loop {
        if st.sessions.get(&sid).is_none() {
            let _ = tx.send(Event::default().event("expired").data("{}")).await;
            return;
        }
        if shutdown.as_ref().is_some_and(|s| *s.borrow()) {
            return;
        }
        match status_json(&st).await {
            Ok(v) => {
                let (text, ev) = json_event("status", v, &st);
                if text != last_status {
                    if tx.send(ev).await.is_err() {
                        return;
                    }
                    last_status = text;
                }
            }
            Err(e) => tracing::warn!(error = %e, "console stream: journal unavailable; retrying"),
        }
        if let Some(id) = &incident {
            let j = st.source.journal();
            let version = match (j.head(id).await, j.alert_count(id).await) {
                (Ok(h), Ok(n)) => Some((h, n)),
                _ => None,
            };
            if version.is_some() && version != last_version {
                match incident_view(&st, id).await {
                    Ok(v) => {
                        let (_, ev) = json_event("timeline", v, &st);
                        if tx.send(ev).await.is_err() {
                            return;
                        }
                        last_version = version;
                    }
                    Err(e) => tracing::warn!(incident = %id, error = %e, "console stream: cannot load the timeline; retrying"),
                }
            }
        }
        let tick = tokio::time::sleep(st.opts.tick);
        match &mut shutdown {
            Some(s) => tokio::select! {
                _ = tx.closed() => return,
                _ = s.changed() => {}
                _ = tick => {}
            },
            None => tokio::select! {
                _ = tx.closed() => return,
                _ = tick => {}
            },
        }
    }
}
