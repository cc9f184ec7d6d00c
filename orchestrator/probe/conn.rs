//! Connections to Redis bounded by our own deadlines, and a timed PING: what the probe
//! ([`super::redis`]) and the flush ([`super::flush`]) both build on, so neither
//! imports the other.

use super::classify;
use crate::model::FailureClass;
use crate::ports::RedisFailure;
use crate::secret::RedisUrl;
use redis::aio::MultiplexedConnection;
use redis::AsyncConnectionConfig;
use std::future::Future;
use std::time::{Duration, Instant};

/// Opens a connection whose every request is bounded by `timeout`.
pub(crate) async fn connect(url: &RedisUrl, timeout: Duration) -> Result<MultiplexedConnection, RedisFailure> {
    let client = redis::Client::open(url.expose()).map_err(|e| classify::from_redis(url, "open", &e))?;
    let config = AsyncConnectionConfig::new().set_connection_timeout(Some(timeout)).set_response_timeout(Some(timeout));
    match bounded(url, "connect", timeout, client.get_multiplexed_async_connection_with_config(&config)).await {
        Err(f) if f.class == FailureClass::Network && !url.is_tls() => Err(sniff_greeting(url, timeout).await.unwrap_or(f)),
        other => other,
    }
}

/// A server at `maxclients` accepts the TCP connection, writes `-ERR max number of
/// clients reached` and closes; the client, which writes first (CLIENT SETINFO), then
/// usually sees only a broken pipe or a reset. So when connecting fails that way, read
/// what a fresh connection is greeted with before we say anything: a healthy server
/// says nothing first, a refusing one names the reason. Plain TCP only; bounded by
/// `timeout` and a short read.
async fn sniff_greeting(url: &RedisUrl, timeout: Duration) -> Option<RedisFailure> {
    use tokio::io::AsyncReadExt;
    let parsed = url::Url::parse(url.expose()).ok()?;
    let host = parsed.host_str()?.trim_start_matches('[').trim_end_matches(']').to_string();
    let port = parsed.port().unwrap_or(6379);
    let read = async {
        let mut sock = tokio::net::TcpStream::connect((host.as_str(), port)).await.ok()?;
        let mut buf = [0u8; 256];
        let n = sock.read(&mut buf).await.ok()?;
        Some(String::from_utf8_lossy(&buf[..n]).into_owned())
    };
    let greeting = tokio::time::timeout(timeout.min(Duration::from_millis(250)), read).await.ok()??;
    let line = greeting.strip_prefix('-')?.lines().next()?.trim().to_string();
    let class = classify::classify_parts(classify::ErrorShape::default(), &line);
    Some(classify::other(url, class, "connect", &format!("server refused the connection: {line}")))
}

/// Runs one redis future under our own deadline and classifies whatever goes wrong.
pub(crate) async fn bounded<T>(
    url: &RedisUrl,
    what: &str,
    timeout: Duration,
    fut: impl Future<Output = redis::RedisResult<T>>,
) -> Result<T, RedisFailure> {
    match tokio::time::timeout(timeout, fut).await {
        Ok(Ok(v)) => Ok(v),
        Ok(Err(e)) => Err(classify::from_redis(url, what, &e)),
        Err(_) => Err(classify::timed_out(url, what, timeout)),
    }
}

/// One PING, timed.
pub(crate) async fn ping(url: &RedisUrl, con: &mut MultiplexedConnection, timeout: Duration) -> Result<Duration, RedisFailure> {
    let start = Instant::now();
    let reply: String = bounded(url, "PING", timeout, redis::cmd("PING").query_async(con)).await?;
    let rtt = start.elapsed();
    if reply != "PONG" {
        return Err(classify::other(url, FailureClass::Unknown, "PING", &format!("unexpected reply {reply:?}")));
    }
    Ok(rtt)
}
