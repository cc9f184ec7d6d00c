//! Paging a person through PagerDuty's Events API v2: `POST /v2/enqueue` with
//! `{routing_key, event_action: trigger|resolve, dedup_key, payload: {summary, source,
//! severity, custom_details}}`, answered 202. A bounded number of attempts, each
//! bounded in time (429 and 5xx retried, `Retry-After` honoured up to a cap), so a
//! pager that is down never blocks or fails an incident.
//!
//! The routing key is a secret: it is only in the body we send, never in an error, a
//! log line, `Debug` output or the journal; every text we send has been through the
//! playbook's redactor and the process-wide one.

use crate::platform::retry::{error_chain, truncate};
use crate::playbook::{PagerDutyConfig, Playbook};
use crate::ports::{NoPager, NotifyError, Page, PageAction, Pager};
use crate::secret::{scrub, Secret};
use async_trait::async_trait;
use serde_json::{json, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// The Events API truncates summaries at 1024 characters; we do it ourselves.
const SUMMARY_CHARS: usize = 1000;

/// The pager a playbook asks for: PagerDuty when configured, otherwise none.
pub fn pager_for(pb: &Playbook) -> Arc<dyn Pager> {
    match &pb.notifications.pagerduty {
        Some(cfg) => Arc::new(PagerDuty::new(cfg, pb.redactor.clone())),
        None => Arc::new(NoPager),
    }
}

pub struct PagerDuty {
    client: Result<reqwest::Client, String>,
    routing_key: Secret,
    url: url::Url,
    attempts: u32,
    timeout: Duration,
    redactor: Arc<crate::redact::Redactor>,
}

impl fmt::Debug for PagerDuty {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("PagerDuty")
            .field("routing_key", &self.routing_key)
            .field("url", &self.url.as_str())
            .field("attempts", &self.attempts)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl PagerDuty {
    pub fn new(cfg: &PagerDutyConfig, redactor: Arc<crate::redact::Redactor>) -> Self {
        let client = reqwest::Client::builder()
            .redirect(reqwest::redirect::Policy::none())
            .user_agent(concat!("orchestrator/", env!("CARGO_PKG_VERSION")))
            .build()
            .map_err(error_chain);
        PagerDuty {
            client,
            routing_key: cfg.routing_key.clone(),
            url: cfg.url.clone(),
            attempts: cfg.attempts.max(1),
            timeout: cfg.timeout,
            redactor,
        }
    }

    fn redact(&self, text: &str) -> String {
        crate::redact::redact(&self.redactor.redact(text))
    }

    /// The Events API v2 body. Only `routing_key` is secret, and it is the one field
    /// not redacted; everything else passes the redactor.
    pub fn body(&self, p: &Page) -> Value {
        let mut body = json!({
            "routing_key": self.routing_key.expose(),
            "dedup_key": self.redact(&p.dedup_key),
        });
        match p.action {
            PageAction::Trigger => {
                body["event_action"] = json!("trigger");
                let details: serde_json::Map<String, Value> =
                    p.details.iter().map(|(k, v)| (k.clone(), Value::String(self.redact(v)))).collect();
                body["payload"] = json!({
                    "summary": truncate(&self.redact(&p.summary), SUMMARY_CHARS),
                    "source": self.redact(&p.source),
                    "severity": p.severity,
                    "component": "redis",
                    "custom_details": details,
                });
            }
            PageAction::Resolve => body["event_action"] = json!("resolve"),
        }
        body
    }

    /// Anything PagerDuty or a proxy echoes is scrubbed of the routing key first.
    fn clean(&self, text: &str) -> String {
        self.redact(&scrub(text, &[self.routing_key.expose()]))
    }

    async fn attempt(&self, client: &reqwest::Client, body: &Value) -> Result<(), crate::notify::AttemptError> {
        crate::notify::post_json(client, self.url.as_str(), body, self.timeout, &|t| self.clean(t)).await
    }
}

#[async_trait]
impl Pager for PagerDuty {
    async fn page(&self, p: &Page) -> Result<(), NotifyError> {
        let client = match &self.client {
            Ok(c) => c,
            Err(e) => return Err(NotifyError(format!("pagerduty: cannot build an HTTP client: {}", self.clean(e)))),
        };
        let body = self.body(p);
        crate::notify::deliver(self.attempts, &p.dedup_key, "page", || self.attempt(client, &body))
            .await
            .map_err(|(tries, last)| NotifyError(format!("pagerduty events API failed after {tries} attempt(s): {last}")))
    }
}
