//! The service's connection to Redis: short timeouts so a dead or frozen Redis is
//! noticed within about a second, transparent reconnects, and errors phrased the way a
//! Node service using ioredis would log them (which is what the runbook greps for).

use std::future::Future;
use std::sync::Arc;
use std::time::Duration;

use redis::aio::MultiplexedConnection;
use redis::{AsyncConnectionConfig, ErrorKind, RedisError};

/// Connect and per-command reply deadline for request handlers (the runbook's 1 s).
pub const TIMEOUT: Duration = Duration::from_secs(1);

/// Where the service's Redis is, parsed once; knows the secret so it can keep it out
/// of every message.
pub struct RedisTarget {
    client: Result<redis::Client, String>,
    /// `host:port`, for messages like `connect ECONNREFUSED 127.0.0.1:6380`.
    host_port: String,
    /// The URL with its password masked, safe to log.
    display: String,
    secret: Option<String>,
}

impl RedisTarget {
    pub fn new(url: &str) -> Arc<RedisTarget> {
        let parsed = url::Url::parse(url).ok();
        let secret = parsed.as_ref().and_then(|u| u.password().map(str::to_string)).filter(|p| !p.is_empty());
        let host_port = parsed
            .as_ref()
            .map(|u| format!("{}:{}", u.host_str().unwrap_or("localhost"), u.port().unwrap_or(6379)))
            .unwrap_or_else(|| "unknown".to_string());
        let display = mask_url(url);
        let client = redis::Client::open(url).map_err(|e| {
            // The URL may hold the password: describe the error without echoing it.
            let text = redact(&e.to_string(), secret.as_deref());
            format!("Redis configuration invalid: {text}")
        });
        Arc::new(RedisTarget { client, host_port, display, secret })
    }

    /// The URL with the password replaced by `***`.
    pub fn display(&self) -> &str {
        &self.display
    }

    /// Classifies a redis-rs error as the failure an operator would read.
    pub fn failure(&self, err: &RedisError, during: Op) -> RedisFailure {
        let text = redact(&err.to_string(), self.secret.as_deref());
        let lower = text.to_lowercase();
        let (kind, message) = if err.is_connection_refusal() {
            (FailureKind::Refused, format!("Redis connection failed: connect ECONNREFUSED {}", self.host_port))
        } else if err.is_timeout() {
            return self.timeout(during);
        } else if lower.contains("lookup address") || lower.contains("name or service not known") {
            let host = self.host_port.rsplit_once(':').map(|(h, _)| h).unwrap_or(&self.host_port);
            (FailureKind::Refused, format!("Redis connection failed: getaddrinfo ENOTFOUND {host}"))
        } else if let Some(code) = err.code() {
            let detail = redact(err.detail().unwrap_or(""), self.secret.as_deref());
            let line = format!("{code} {detail}").trim().to_string();
            if matches!(code, "NOAUTH" | "WRONGPASS") || err.kind() == ErrorKind::AuthenticationFailed {
                (FailureKind::Auth, format!("Redis authentication failed: {line}"))
            } else {
                (FailureKind::Server, format!("Redis command failed: {line}"))
            }
        } else if err.kind() == ErrorKind::AuthenticationFailed {
            (FailureKind::Auth, format!("Redis authentication failed: {text}"))
        } else if err.is_connection_dropped() || err.is_io_error() {
            if during == Op::Connect {
                (FailureKind::Closed, format!("Redis connection failed: {text}"))
            } else {
                (FailureKind::Closed, format!("Redis connection lost: Connection is closed. ({text})"))
            }
        } else {
            (FailureKind::Other, format!("Redis error: {text}"))
        };
        RedisFailure { kind, message }
    }

    /// The failure for an operation that got no answer in time.
    pub fn timeout(&self, during: Op) -> RedisFailure {
        let message = match during {
            Op::Ping => format!("Redis ping exceeded timeout ({}s)", TIMEOUT.as_secs()),
            Op::Connect => format!("Redis connection failed: Connection timeout (connect ETIMEDOUT {})", self.host_port),
            Op::Command => "Redis command failed: Connection timeout (no reply)".to_string(),
        };
        RedisFailure { kind: FailureKind::Timeout, message }
    }
}

/// What was being attempted when Redis failed; it shapes the message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Connect,
    Ping,
    Command,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    Refused,
    Timeout,
    Closed,
    Auth,
    Server,
    Config,
    Other,
}

/// A Redis failure with a message fit for logs and health output: it always names
/// Redis, carries the underlying reason, and never contains the password.
#[derive(Debug, Clone)]
pub struct RedisFailure {
    pub kind: FailureKind,
    pub message: String,
}

impl std::fmt::Display for RedisFailure {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.message)
    }
}

/// One cached multiplexed connection, reopened after it breaks.
///
/// Blocking commands (BLMOVE) hold a connection, so each worker owns its own link and
/// the request handlers share another.
pub struct RedisLink {
    target: Arc<RedisTarget>,
    conn: tokio::sync::Mutex<Option<MultiplexedConnection>>,
    response_timeout: Duration,
}

impl RedisLink {
    pub fn new(target: Arc<RedisTarget>, response_timeout: Duration) -> RedisLink {
        RedisLink { target, conn: tokio::sync::Mutex::new(None), response_timeout }
    }

    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Drops the cached connection so the next call reconnects.
    pub async fn reset(&self) {
        self.conn.lock().await.take();
    }

    async fn connection(&self) -> Result<(MultiplexedConnection, bool), RedisFailure> {
        let mut guard = self.conn.lock().await;
        if let Some(c) = guard.as_ref() {
            return Ok((c.clone(), false));
        }
        let client = self.target.client.as_ref().map_err(|m| RedisFailure { kind: FailureKind::Config, message: m.clone() })?;
        let config = AsyncConnectionConfig::new().set_connection_timeout(Some(TIMEOUT)).set_response_timeout(Some(self.response_timeout));
        // The outer timeout is a backstop in case setup hangs past the client's own.
        let conn =
            match tokio::time::timeout(TIMEOUT + Duration::from_millis(200), client.get_multiplexed_async_connection_with_config(&config))
                .await
            {
                Err(_) => return Err(self.target.timeout(Op::Connect)),
                Ok(Err(e)) => return Err(self.target.failure(&e, Op::Connect)),
                Ok(Ok(c)) => c,
            };
        *guard = Some(conn.clone());
        Ok((conn, true))
    }

    /// Runs `f` on a connection with a deadline. A connection found broken is replaced
    /// and `f` tried once more on a fresh one (as ioredis reconnects), so callers see
    /// the current state of Redis (e.g. ECONNREFUSED) rather than a stale socket error.
    pub async fn run<T, F, Fut>(&self, op: Op, f: F) -> Result<T, RedisFailure>
    where
        F: Fn(MultiplexedConnection) -> Fut,
        Fut: Future<Output = redis::RedisResult<T>>,
    {
        let mut attempt = 0;
        loop {
            attempt += 1;
            let (conn, fresh) = self.connection().await?;
            let deadline = self.response_timeout + Duration::from_millis(100);
            let failure = match tokio::time::timeout(deadline, f(conn)).await {
                Ok(Ok(v)) => return Ok(v),
                Err(_) => self.target.timeout(op),
                Ok(Err(e)) => self.target.failure(&e, op),
            };
            // A timed-out or broken connection cannot be trusted with the next reply.
            if matches!(failure.kind, FailureKind::Timeout | FailureKind::Closed | FailureKind::Refused) {
                self.reset().await;
            }
            if failure.kind == FailureKind::Closed && !fresh && attempt == 1 {
                continue;
            }
            return Err(failure);
        }
    }

    /// PING within the response timeout.
    pub async fn ping(&self) -> Result<(), RedisFailure> {
        self.run(Op::Ping, |mut c| async move { redis::cmd("PING").query_async::<String>(&mut c).await }).await.map(|_| ())
    }
}

/// Replaces the password of a `redis://user:pass@host` URL with `***`.
pub fn mask_url(url: &str) -> String {
    match url::Url::parse(url) {
        Ok(mut u) => {
            if u.password().is_some_and(|p| !p.is_empty()) {
                let _ = u.set_password(Some("***"));
            }
            u.to_string()
        }
        Err(_) => "<invalid url>".to_string(),
    }
}

/// Removes a secret from text (both raw and percent-encoded forms).
pub fn redact(text: &str, secret: Option<&str>) -> String {
    let Some(secret) = secret.filter(|s| !s.is_empty()) else {
        return text.to_string();
    };
    let mut out = text.replace(secret, "***");
    if let Ok(decoded) = urlencoding_decode(secret) {
        if !decoded.is_empty() {
            out = out.replace(&decoded, "***");
        }
    }
    out
}

fn urlencoding_decode(s: &str) -> Result<String, ()> {
    let bytes: Vec<u8> =
        url::form_urlencoded::parse(format!("x={s}").as_bytes()).next().map(|(_, v)| v.into_owned().into_bytes()).ok_or(())?;
    String::from_utf8(bytes).map_err(|_| ())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_and_redacts() {
        assert_eq!(mask_url("rediss://default:s3cr%40t@host:6380"), "rediss://default:***@host:6380");
        assert_eq!(mask_url("redis://127.0.0.1:6379"), "redis://127.0.0.1:6379");
        assert_eq!(redact("bad s3cr@t and s3cr%40t", Some("s3cr%40t")), "bad *** and ***");
        let t = RedisTarget::new("redis://:hunter2@127.0.0.1:7000/0");
        assert_eq!(t.display(), "redis://:***@127.0.0.1:7000/0");
        assert_eq!(t.host_port, "127.0.0.1:7000");
    }
}
