//! Slack notifications through an incoming webhook: a bounded number of attempts, each
//! bounded in time, so a failing Slack never blocks or fails a failover.
//!
//! The webhook URL is itself a secret (whoever has it can post): it never appears in
//! an error, a log line or `Debug` output.

use crate::platform::retry::{error_chain, mask_urls, truncate};
use crate::playbook::{Playbook, SlackConfig};
use crate::ports::{NoNotifier, Notification, Notifier, NotifyError};
use crate::secret::{scrub, Secret};
use async_trait::async_trait;
use reqwest::header::RETRY_AFTER;
use reqwest::StatusCode;
use serde_json::{json, Value};
use std::fmt;
use std::sync::Arc;
use std::time::Duration;

/// Backoff before the second attempt; doubled for each further one, up to
/// [`MAX_BACKOFF`].
const FIRST_BACKOFF: Duration = Duration::from_millis(250);
const MAX_BACKOFF: Duration = Duration::from_secs(2);
/// A 429's `Retry-After` is honoured up to this; beyond it the attempt is given up.
const MAX_RETRY_AFTER: Duration = Duration::from_secs(5);
const BODY_CHARS: usize = 200;

/// The notifier a playbook asks for: Slack when configured, otherwise none.
pub fn notifier_for(pb: &Playbook) -> Arc<dyn Notifier> {
    match &pb.notifications.slack {
        Some(cfg) => Arc::new(SlackNotifier::new(cfg).with_console(pb.console_url.as_ref())),
        None => Arc::new(NoNotifier),
    }
}

pub struct SlackNotifier {
    /// `Err` when the HTTP client could not be built (TLS setup); each notify reports it.
    client: Result<reqwest::Client, String>,
    webhook_url: Secret,
    channel: Option<String>,
    attempts: u32,
    timeout: Duration,
    /// The web console's public address: each message links its incident's page.
    console_url: Option<String>,
}

impl fmt::Debug for SlackNotifier {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("SlackNotifier")
            .field("webhook_url", &self.webhook_url)
            .field("channel", &self.channel)
            .field("attempts", &self.attempts)
            .field("timeout", &self.timeout)
            .finish()
    }
}

impl SlackNotifier {
    pub fn new(cfg: &SlackConfig) -> Self {
        let client = crate::http::shared();
        SlackNotifier {
            client,
            webhook_url: cfg.webhook_url.clone(),
            channel: cfg.channel.clone(),
            attempts: cfg.attempts.max(1),
            timeout: cfg.timeout,
            console_url: None,
        }
    }

    /// Links every message to its incident's page in the web console at `base`.
    pub fn with_console(mut self, base: Option<&url::Url>) -> Self {
        self.console_url = base.map(|u| u.as_str().trim_end_matches('/').to_string());
        self
    }

    /// The body posted for a notification: [`slack_body`], with the incident's console
    /// link when the playbook gives the console's address.
    pub fn body(&self, n: &Notification) -> Value {
        let mut body = slack_body(n, self.channel.as_deref());
        if let Some(base) = &self.console_url {
            let link = format!("\n<{base}/console/incidents/{}|Open {} in the console>", escape(&n.incident), escape(&n.incident));
            if let Some(Value::String(text)) = body.get_mut("text") {
                text.push_str(&crate::redact::redact(&link));
            }
        }
        body
    }

    /// Redacts the webhook URL, and its path and last segment on their own: the token
    /// is in the path, which servers and proxies echo without the host.
    fn clean(&self, text: &str) -> String {
        let full = self.webhook_url.expose();
        let mut secrets = vec![full.to_string()];
        if let Ok(u) = url::Url::parse(full) {
            secrets.push(u[url::Position::BeforePath..].to_string());
            secrets.push(u.path().to_string());
            if let Some(last) = u.path_segments().and_then(|mut s| s.next_back()) {
                secrets.push(last.to_string());
            }
        }
        let refs: Vec<&str> = secrets.iter().map(String::as_str).filter(|s| s.len() > 1).collect();
        mask_urls(&scrub(text, &refs))
    }

    /// One POST of the message.
    async fn attempt(&self, client: &reqwest::Client, body: &Value) -> Result<(), AttemptError> {
        post_json(client, self.webhook_url.expose(), body, self.timeout, &|t| self.clean(t)).await
    }
}

/// The incoming-webhook body: the title in bold on the first line, then the text.
pub fn slack_body(n: &Notification, channel: Option<&str>) -> Value {
    // The one redaction path: the process-wide redactor holds the playbook's secrets.
    let text = crate::redact::redact(&format!("*{}*\n{}", escape(&n.title), escape(&n.text)));
    let mut body = json!({ "text": text });
    if let Some(c) = channel {
        body["channel"] = json!(c);
    }
    body
}

/// Slack's three control characters (its docs ask for exactly these escapes).
fn escape(s: &str) -> String {
    s.replace('&', "&amp;").replace('<', "&lt;").replace('>', "&gt;")
}

#[async_trait]
impl Notifier for SlackNotifier {
    async fn notify(&self, n: &Notification) -> Result<(), NotifyError> {
        let client = match &self.client {
            Ok(c) => c,
            Err(e) => return Err(NotifyError(format!("slack: cannot build an HTTP client: {}", self.clean(e)))),
        };
        let body = self.body(n);
        deliver(self.attempts, &n.incident, "slack notification", || self.attempt(client, &body))
            .await
            .map_err(|(tries, last)| NotifyError(format!("slack webhook failed after {tries} attempt(s): {last}")))
    }
}

/// One JSON POST with a timeout: `Ok` on 2xx. Otherwise what happened (passed through
/// `clean`, which removes the destination's own secret, and cut), whether trying
/// again can help (connection errors, 408, 429 and 5xx; other 4xx — a bad token, an
/// invalid event — do not heal), and the `Retry-After` asked for. Slack and PagerDuty.
pub(crate) async fn post_json(
    client: &reqwest::Client,
    url: &str,
    body: &Value,
    timeout: Duration,
    clean: &(dyn Fn(&str) -> String + Sync),
) -> Result<(), AttemptError> {
    let resp = client.post(url).json(body).timeout(timeout).send().await.map_err(|e| (clean(&describe(e)), true, None))?;
    let status = resp.status();
    if status.is_success() {
        return Ok(());
    }
    let retry_after =
        resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| v.trim().parse::<u64>().ok()).map(Duration::from_secs);
    let text = resp.text().await.unwrap_or_default();
    let text: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let short = truncate(&clean(&text), BODY_CHARS);
    let retry_helps = status.is_server_error() || status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT;
    Err((format!("HTTP {}: {short}", status.as_u16()), retry_helps, retry_after))
}

/// One delivery attempt's failure: what happened, whether trying again can help, and
/// how long the other side asked us to wait (`Retry-After`).
pub(crate) type AttemptError = (String, bool, Option<Duration>);

/// Tries a delivery up to `attempts` times with backoff (250 ms doubling to 2 s),
/// honouring `Retry-After` up to 5 s (longer: give up now, the incident goes on).
/// `Err((tries, last error))` when every attempt failed. Slack and PagerDuty share it.
pub(crate) async fn deliver<F, Fut>(attempts: u32, incident: &str, what: &str, mut attempt: F) -> Result<(), (u32, String)>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<(), AttemptError>>,
{
    let mut backoff = FIRST_BACKOFF;
    let mut last = String::new();
    let mut tries = 0;
    while tries < attempts {
        tries += 1;
        match attempt().await {
            Ok(()) => return Ok(()),
            Err((message, retry_helps, retry_after)) => {
                tracing::warn!(incident = %incident, attempt = tries, of = attempts, error = %message, "{what} failed");
                last = message;
                if !retry_helps || tries == attempts {
                    break;
                }
                let wait = match retry_after {
                    Some(ra) if ra > MAX_RETRY_AFTER => break,
                    Some(ra) => ra.max(backoff),
                    None => backoff,
                };
                tokio::time::sleep(wait).await;
                backoff = (backoff * 2).min(MAX_BACKOFF);
            }
        }
    }
    Err((tries, last))
}

pub(crate) fn describe(e: reqwest::Error) -> String {
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    format!("{kind}: {}", error_chain(e))
}
