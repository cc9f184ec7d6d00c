//! The one retry loop of the platform's HTTP calls: 429 (honouring `Retry-After`), 5xx,
//! connect errors and timeouts are tried again with exponential backoff and jitter
//! until a deadline; any other 4xx is refused at once.
//!
//! All waiting goes through `tokio::time`, so tests can pause time and still see the
//! exact delays. Every message that leaves this module has been through [`redact`]:
//! bodies and library errors may echo a secret or a Redis URL back.

use crate::ports::PlatformError;
use crate::secret::scrub;
use chrono::{DateTime, Utc};
use rand::Rng;
use reqwest::header::RETRY_AFTER;
use reqwest::{RequestBuilder, StatusCode};
use std::time::Duration;
use tokio::time::Instant;

/// The first backoff; each further one doubles, up to [`MAX_BACKOFF`].
pub const FIRST_BACKOFF: Duration = Duration::from_millis(200);
pub const MAX_BACKOFF: Duration = Duration::from_secs(10);
/// How much of an error body goes into a message.
const BODY_CHARS: usize = 200;

/// An answer worth reading: a 2xx, or a status the caller asked to see (say a 404
/// that means "not set"). The body has been read in full.
#[derive(Debug, Clone)]
pub struct Answer {
    pub status: StatusCode,
    pub body: Vec<u8>,
}

/// Why one attempt did not produce an [`Answer`].
#[derive(Debug, Clone)]
pub enum Failure {
    /// Another try may help: 429, 5xx, connect errors, timeouts.
    Transient {
        message: String,
        /// What a 429's (or 503's) `Retry-After` asked for.
        retry_after: Option<Duration>,
        /// The request may have been carried out although no answer says so (a
        /// timeout or 5xx after it was sent). Requests that are not idempotent must
        /// look at the world before trying again.
        ambiguous: bool,
    },
    /// A 4xx other than 408/429: retrying cannot help.
    Refused(String),
}

/// Sends one request and classifies the outcome. `accept` lists non-2xx statuses the
/// caller wants back as answers.
pub async fn attempt(req: RequestBuilder, accept: &[StatusCode], secrets: &[&str]) -> Result<Answer, Failure> {
    let resp = match req.send().await {
        Ok(r) => r,
        Err(e) => return Err(transport_failure(e, secrets)),
    };
    let status = resp.status();
    let retry_after = resp.headers().get(RETRY_AFTER).and_then(|v| v.to_str().ok()).and_then(|v| parse_retry_after(v, Utc::now()));
    let body = match resp.bytes().await {
        Ok(b) => b.to_vec(),
        // The answer started but its body did not arrive: as ambiguous as a timeout.
        Err(e) => return Err(transport_failure(e, secrets)),
    };
    if status.is_success() || accept.contains(&status) {
        return Ok(Answer { status, body });
    }
    let message = format!("HTTP {}: {}", status.as_u16(), short_body(&body, secrets));
    if status == StatusCode::TOO_MANY_REQUESTS || status == StatusCode::REQUEST_TIMEOUT {
        Err(Failure::Transient { message, retry_after, ambiguous: false })
    } else if status.is_server_error() {
        Err(Failure::Transient { message, retry_after, ambiguous: true })
    } else {
        Err(Failure::Refused(message))
    }
}

fn transport_failure(e: reqwest::Error, secrets: &[&str]) -> Failure {
    // A refused connection never reached the server; anything later might have.
    let ambiguous = !e.is_connect();
    let kind = if e.is_timeout() {
        "timed out"
    } else if e.is_connect() {
        "cannot connect"
    } else {
        "request failed"
    };
    Failure::Transient { message: format!("{kind}: {}", redact(&error_chain(e), secrets)), retry_after: None, ambiguous }
}

/// The error and its sources on one line, without the request URL.
pub fn error_chain(e: reqwest::Error) -> String {
    let e = e.without_url();
    let mut text = e.to_string();
    let mut source = std::error::Error::source(&e);
    while let Some(s) = source {
        let s_text = s.to_string();
        if !text.contains(&s_text) {
            text.push_str(": ");
            text.push_str(&s_text);
        }
        source = s.source();
    }
    text
}

/// Retries `make()` until it yields an answer, a refusal, or the backoff's deadline.
/// `what` names the call in messages ("read env var REDIS_URL").
pub async fn send(
    backoff: &mut Backoff,
    what: &str,
    accept: &[StatusCode],
    secrets: &[&str],
    mut make: impl FnMut() -> RequestBuilder,
) -> Result<Answer, PlatformError> {
    loop {
        match attempt(make(), accept, secrets).await {
            Ok(answer) => return Ok(answer),
            Err(Failure::Refused(m)) => return Err(PlatformError::Refused(format!("{what}: {m}"))),
            Err(Failure::Transient { message, retry_after, .. }) => {
                let message = format!("{what}: {message}");
                tracing::warn!(error = %message, "platform call failed; retrying");
                backoff.wait(retry_after, &message).await?;
            }
        }
    }
}

/// The waiting half of a retry loop: one deadline for a whole platform operation
/// (a write and its read-back share it), and exponential backoff with jitter.
#[derive(Debug)]
pub struct Backoff {
    budget: Duration,
    deadline: Instant,
    next: Duration,
    waits: u32,
}

impl Backoff {
    pub fn new(budget: Duration) -> Self {
        Backoff { budget, deadline: Instant::now() + budget, next: FIRST_BACKOFF, waits: 0 }
    }

    pub fn remaining(&self) -> Duration {
        self.deadline.saturating_duration_since(Instant::now())
    }

    /// Waits before the next try, or fails with [`PlatformError::Unavailable`] (carrying
    /// `last`, already redacted) once the deadline has come. A `Retry-After` is a
    /// floor: the next try never comes earlier. One that reaches past the deadline
    /// ends the loop now: waiting for the deadline only to give up helps nobody.
    pub async fn wait(&mut self, retry_after: Option<Duration>, last: &str) -> Result<(), PlatformError> {
        let remaining = self.remaining();
        let gave_up =
            |why: String| PlatformError::Unavailable(format!("{last} ({why}; {} tries within {:?})", self.waits + 1, self.budget));
        if remaining.is_zero() {
            return Err(gave_up("deadline reached".into()));
        }
        let jittered = {
            let half = self.next / 2;
            half + rand::rng().random_range(Duration::ZERO..=half)
        };
        let delay = match retry_after {
            Some(ra) if ra > remaining => {
                return Err(gave_up(format!("Retry-After {ra:?} reaches past the deadline")));
            }
            // Never earlier than asked; never a hot loop on `Retry-After: 0`.
            Some(ra) => ra.max(jittered).min(remaining),
            None => jittered.min(remaining),
        };
        self.next = (self.next * 2).min(MAX_BACKOFF);
        self.waits += 1;
        tokio::time::sleep(delay).await;
        Ok(())
    }
}

/// `Retry-After` as delay-seconds or an HTTP-date (RFC 9110 §10.2.3).
pub fn parse_retry_after(value: &str, now: DateTime<Utc>) -> Option<Duration> {
    let v = value.trim();
    if let Ok(secs) = v.parse::<u64>() {
        return Some(Duration::from_secs(secs));
    }
    let when = DateTime::parse_from_rfc2822(v).ok()?.with_timezone(&Utc);
    Some((when - now).to_std().unwrap_or(Duration::ZERO))
}

/// Scrubs known secrets and masks the password of every URL in `text`.
pub fn redact(text: &str, secrets: &[&str]) -> String {
    let scrubbed = scrub(text, secrets);
    mask_urls(&scrubbed)
}

pub use crate::redact::mask_urls;

/// The start of an error body, redacted, on one line.
pub fn short_body(body: &[u8], secrets: &[&str]) -> String {
    let text = String::from_utf8_lossy(body);
    let one_line: String = text.split_whitespace().collect::<Vec<_>>().join(" ");
    let redacted = redact(&one_line, secrets);
    if redacted.is_empty() {
        return "(empty body)".into();
    }
    truncate(&redacted, BODY_CHARS)
}

/// At most `max` characters, marking the cut.
pub fn truncate(text: &str, max: usize) -> String {
    match text.char_indices().nth(max) {
        Some((i, _)) => format!("{}…", &text[..i]),
        None => text.to_string(),
    }
}

/// The last `max` characters, marking the cut: the end of a command's stderr is
/// where the reason usually is.
pub fn tail(text: &str, max: usize) -> String {
    let count = text.chars().count();
    if count <= max {
        return text.to_string();
    }
    let start = text.char_indices().nth(count - max).map(|(i, _)| i).unwrap_or(0);
    format!("…{}", &text[start..])
}

/// The strings to scrub for a Redis URL: the whole URL and its password (raw,
/// percent-decoded and encoded), since error text may echo any of them.
pub fn url_secrets(url: &str) -> Vec<String> {
    let mut out = vec![url.to_string()];
    out.extend(crate::redact::url_passwords(url));
    out
}
