//! Classifies Redis errors into the spec's failure classes, with messages that never
//! contain a password.
//!
//! The mapping itself ([`classify_parts`]) is pure: it looks at the error's shape (an
//! I/O error kind, the redis crate's error kind, the server's error code) and at its
//! text, so it can be unit-tested on strings without a socket. The adapters around it
//! ([`from_redis`], [`from_io`], [`timed_out`]) pull those parts out of real errors and
//! build the masked [`RedisFailure`].

use crate::model::FailureClass;
use crate::ports::RedisFailure;
use crate::secret::{mask_url, scrub, RedisUrl};
use redis::{ErrorKind, RedisError, ServerErrorKind};
use std::error::Error as StdError;
use std::io;
use std::time::Duration;

/// What [`classify_parts`] looks at, pulled out of whatever error we got.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ErrorShape<'a> {
    /// The kind of the innermost `std::io::Error` in the error's source chain.
    pub io_kind: Option<io::ErrorKind>,
    /// The redis crate's own kind, when the error came from it.
    pub redis_kind: Option<ErrorKind>,
    /// The server's error code (`OOM`, `NOAUTH`, `READONLY` ...), when the server
    /// answered with an error.
    pub code: Option<&'a str>,
    /// A rustls error was found in the source chain.
    pub tls: bool,
    /// The OS error number of the innermost `std::io::Error`, when it has one.
    pub os_error: Option<i32>,
}

/// OS errors that describe the orchestrator's own host, not the Redis it talks to: out
/// of file descriptors (process or system), out of memory or socket buffers, no local
/// address to bind, its own network interface down. Never evidence that Redis failed.
/// Not ENETUNREACH: a router on the path answers "net unreachable" when the primary's
/// network is cut off, and that is exactly the failure to fail over from.
const LOCAL_OS_ERRORS: &[i32] = &[libc::EMFILE, libc::ENFILE, libc::ENOMEM, libc::ENOBUFS, libc::EADDRNOTAVAIL, libc::ENETDOWN];

/// Whether an error of this shape and text is the orchestrator's own trouble.
pub fn is_local(shape: ErrorShape<'_>, text: &str) -> bool {
    if shape.os_error.is_some_and(|e| LOCAL_OS_ERRORS.contains(&e)) {
        return true;
    }
    if matches!(shape.io_kind, Some(io::ErrorKind::OutOfMemory | io::ErrorKind::NetworkDown)) {
        return true;
    }
    let lower = text.to_ascii_lowercase();
    ["too many open files", "cannot allocate memory", "no buffer space available", "cannot assign requested address", "network is down"]
        .iter()
        .any(|needle| lower.contains(needle))
}

/// The pure mapping: error shape plus the error's full text (the whole source chain,
/// joined) to a failure class.
///
/// Server answers are judged first: a server that answers `-OOM` or `-READONLY` is up
/// and reachable, and that is the more specific truth. Then name resolution (its text
/// is specific, and a host name in it must not be mistaken for a TLS word), then TLS,
/// because rustls errors arrive wrapped in I/O errors of kind `InvalidData` that would
/// otherwise read as network trouble. Then the I/O kinds, and last the text of errors
/// without a kind.
pub fn classify_parts(shape: ErrorShape<'_>, text: &str) -> FailureClass {
    let lower = text.to_ascii_lowercase();
    let has = |needle: &str| lower.contains(needle);
    let code = shape.code.map(str::to_ascii_uppercase);
    let code = code.as_deref();

    // Our own trouble first: a server answer cannot arrive through an fd we never got.
    if shape.code.is_none() && is_local(shape, text) {
        return FailureClass::Local;
    }

    // Server answers.
    if matches!(shape.redis_kind, Some(ErrorKind::AuthenticationFailed))
        || matches!(code, Some("NOAUTH" | "WRONGPASS"))
        || has("noauth")
        || has("wrongpass")
        || has("invalid password")
        || has("invalid username-password")
        || has("authentication required")
        || has("authentication failed")
        // `AUTH pw` against a server with no password set: the URL is wrong, which is
        // an authentication problem for whoever wrote the URL.
        || has("called without any password configured")
    {
        return FailureClass::Auth;
    }
    if matches!(code, Some("OOM")) || has("oom command not allowed") || has("command not allowed when used memory") {
        return FailureClass::OutOfMemory;
    }
    if has("max number of clients reached") {
        return FailureClass::MaxClients;
    }
    // `-BUSY Redis is busy running a script`: a long EVAL or module command. The
    // server is alive and will answer once it is done.
    if matches!(code, Some("BUSY")) || has("busy redis is busy") || has("redis is busy running") {
        return FailureClass::Busy;
    }
    if matches!(shape.redis_kind, Some(ErrorKind::Server(ServerErrorKind::BusyLoading)))
        || matches!(code, Some("LOADING"))
        || has("loading redis is loading")
        || lower.starts_with("loading")
        || has("busyloading")
    {
        return FailureClass::Loading;
    }
    if matches!(shape.redis_kind, Some(ErrorKind::Server(ServerErrorKind::ReadOnly)))
        || matches!(code, Some("READONLY"))
        || has("readonly")
        || has("read only replica")
        || has("read-only replica")
    {
        return FailureClass::ReadOnly;
    }

    // A rustls error in the chain is certain; the words below are only evidence.
    if shape.tls {
        return FailureClass::Tls;
    }
    // Name resolution fails with an io::Error of a vague kind: recognise its text.
    if has("failed to lookup address")
        || has("name or service not known")
        || has("nodename nor servname")
        || has("no such host")
        || has("temporary failure in name resolution")
        || has("no address associated with hostname")
    {
        return FailureClass::Network;
    }

    // TLS, before the I/O kinds that wrap it.
    if has("certificate")
        || has("handshake")
        || has("tls")
        || has("ssl")
        || has("peer sent no certificates")
        || has("received corrupt message")
        || has("unknownissuer")
        || has("invalid peer")
    {
        return FailureClass::Tls;
    }

    match shape.io_kind {
        Some(io::ErrorKind::ConnectionRefused) => return FailureClass::ConnectionRefused,
        Some(io::ErrorKind::TimedOut | io::ErrorKind::WouldBlock) => return FailureClass::Timeout,
        Some(_) => return FailureClass::Network,
        None => {}
    }

    if has("connection refused") {
        return FailureClass::ConnectionRefused;
    }
    if has("timed out") || has("timeout") {
        return FailureClass::Timeout;
    }
    if has("max clients") {
        return FailureClass::MaxClients;
    }
    if matches!(shape.redis_kind, Some(ErrorKind::Io))
        || has("connection reset")
        || has("broken pipe")
        || has("unreachable")
        || has("connection aborted")
        || has("connection closed")
        || has("not connected")
    {
        return FailureClass::Network;
    }
    FailureClass::Unknown
}

/// Classifies an error from the redis crate. `what` says what we were doing
/// ("connect", "PING" ...); the message names the endpoint by its masked URL.
pub fn from_redis(url: &RedisUrl, what: &str, err: &RedisError) -> RedisFailure {
    let text = chain_text(err);
    let (io_kind, os_error) = io_in_chain(err);
    let shape = ErrorShape { io_kind, redis_kind: Some(err.kind()), code: err.code(), tls: rustls_in_chain(err), os_error };
    failure(url, classify_parts(shape, &text), what, &text)
}

/// Classifies a bare I/O error (not wrapped by the redis crate).
pub fn from_io(url: &RedisUrl, what: &str, err: &io::Error) -> RedisFailure {
    let text = chain_text(err);
    let shape = ErrorShape { io_kind: Some(err.kind()), tls: rustls_in_chain(err), os_error: err.raw_os_error(), ..ErrorShape::default() };
    failure(url, classify_parts(shape, &text), what, &text)
}

/// Our own deadline (`tokio::time::timeout`) ran out: the server accepted the
/// connection or the command but did not answer, the way a frozen Redis looks.
pub fn timed_out(url: &RedisUrl, what: &str, after: Duration) -> RedisFailure {
    RedisFailure { class: FailureClass::Timeout, message: format!("{what} {}: no answer within {} ms", url.masked(), after.as_millis()) }
}

/// A failure whose class we decide ourselves (e.g. an unexpected reply).
pub fn other(url: &RedisUrl, class: FailureClass, what: &str, detail: &str) -> RedisFailure {
    failure(url, class, what, detail)
}

fn failure(url: &RedisUrl, class: FailureClass, what: &str, text: &str) -> RedisFailure {
    RedisFailure { class, message: format!("{what} {}: {}", url.masked(), clean(url, text)) }
}

/// Error text from libraries may echo the URL, or even the password alone (an AUTH
/// error quoting its argument): mask URLs word by word, then scrub the password and
/// username-as-password themselves.
pub fn clean(url: &RedisUrl, text: &str) -> String {
    let masked: Vec<String> = text.split(' ').map(mask_url).collect();
    let masked = masked.join(" ");
    let mut secrets: Vec<String> = Vec::new();
    if let Ok(u) = url::Url::parse(url.expose()) {
        if let Some(p) = u.password() {
            secrets.push(p.to_string());
            // The URL holds it percent-encoded; the server (and its errors) see it decoded.
            let decoded = url::form_urlencoded::parse(format!("p={p}").as_bytes()).next().map(|(_, v)| v.into_owned());
            secrets.extend(decoded);
        } else if !u.username().is_empty() {
            // `redis://secret@host`: the redis crate treats a lone user part as the
            // password.
            secrets.push(u.username().to_string());
        }
    }
    let refs: Vec<&str> = secrets.iter().map(String::as_str).collect();
    scrub(&masked, &refs)
}

/// The error's text followed by each distinct source's text: the redis crate's
/// Display sometimes stops at its own description, and rustls's reason is in a source.
fn chain_text(err: &(dyn StdError + 'static)) -> String {
    let mut out = err.to_string();
    let mut cur = err.source();
    while let Some(e) = cur {
        let s = e.to_string();
        if !out.contains(&s) {
            out.push_str(": ");
            out.push_str(&s);
        }
        cur = e.source();
    }
    out
}

/// The kind and OS error number of the innermost `std::io::Error` in the chain.
fn io_in_chain(err: &(dyn StdError + 'static)) -> (Option<io::ErrorKind>, Option<i32>) {
    let mut found = (None, None);
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if let Some(io) = e.downcast_ref::<io::Error>() {
            found = (Some(io.kind()), io.raw_os_error().or(found.1));
        }
        cur = e.source();
    }
    found
}

fn rustls_in_chain(err: &(dyn StdError + 'static)) -> bool {
    let mut cur: Option<&(dyn StdError + 'static)> = Some(err);
    while let Some(e) = cur {
        if e.downcast_ref::<rustls::Error>().is_some() {
            return true;
        }
        // rustls errors travel inside io::Error, whose `source` is not always the
        // inner error: look at the payload too.
        if let Some(inner) = e.downcast_ref::<io::Error>().and_then(|io| io.get_ref()) {
            if inner.downcast_ref::<rustls::Error>().is_some() {
                return true;
            }
        }
        cur = e.source();
    }
    false
}

#[cfg(test)]
mod tests {
    use super::*;
    use FailureClass::*;

    fn text(t: &str) -> FailureClass {
        classify_parts(ErrorShape::default(), t)
    }

    fn io(kind: io::ErrorKind, t: &str) -> FailureClass {
        classify_parts(ErrorShape { io_kind: Some(kind), ..ErrorShape::default() }, t)
    }

    fn code(c: &str, t: &str) -> FailureClass {
        classify_parts(ErrorShape { code: Some(c), redis_kind: Some(ErrorKind::Extension), ..ErrorShape::default() }, t)
    }

    #[test]
    fn dns_failures_are_network() {
        assert_eq!(io(io::ErrorKind::Other, "failed to lookup address information: Name or service not known"), Network);
        assert_eq!(io(io::ErrorKind::Other, "Name or service not known"), Network);
        assert_eq!(text("Temporary failure in name resolution"), Network);
        // A host name with a TLS-ish word in it is still a DNS failure.
        assert_eq!(io(io::ErrorKind::Other, "failed to lookup address information for redis-tls.internal"), Network);
    }

    #[test]
    fn io_kinds() {
        assert_eq!(io(io::ErrorKind::ConnectionRefused, "Connection refused (os error 111)"), ConnectionRefused);
        assert_eq!(io(io::ErrorKind::TimedOut, "timed out"), Timeout);
        assert_eq!(io(io::ErrorKind::ConnectionReset, "Connection reset by peer"), Network);
        assert_eq!(io(io::ErrorKind::HostUnreachable, "No route to host"), Network);
        assert_eq!(io(io::ErrorKind::NetworkUnreachable, "Network is unreachable"), Network, "a router's answer about the path");
        assert_eq!(io(io::ErrorKind::NetworkDown, "Network is down"), Local, "our own interface");
        assert_eq!(io(io::ErrorKind::UnexpectedEof, "early eof"), Network);
        assert_eq!(text("Connection refused"), ConnectionRefused);
        assert_eq!(text("operation timed out"), Timeout);
    }

    #[test]
    fn auth() {
        assert_eq!(code("NOAUTH", "NOAUTH: Authentication required."), Auth);
        assert_eq!(code("WRONGPASS", "WRONGPASS: invalid username-password pair or user is disabled."), Auth);
        assert_eq!(text("ERR invalid password"), Auth);
        let shape = ErrorShape { redis_kind: Some(ErrorKind::AuthenticationFailed), ..ErrorShape::default() };
        assert_eq!(classify_parts(shape, "Password authentication failed"), Auth);
        assert_eq!(text("ERR AUTH <password> called without any password configured for the default user"), Auth);
    }

    #[test]
    fn tls() {
        assert_eq!(io(io::ErrorKind::InvalidData, "invalid peer certificate: UnknownIssuer"), Tls);
        assert_eq!(io(io::ErrorKind::InvalidData, "received corrupt message of type InvalidContentType"), Tls);
        assert_eq!(text("TLS handshake eof"), Tls);
        let shape = ErrorShape { tls: true, io_kind: Some(io::ErrorKind::InvalidData), ..ErrorShape::default() };
        assert_eq!(classify_parts(shape, "something"), Tls);
    }

    #[test]
    fn server_answers() {
        assert_eq!(code("OOM", "OOM: command not allowed when used memory > 'maxmemory'."), OutOfMemory);
        assert_eq!(text("OOM command not allowed when used memory > 'maxmemory'"), OutOfMemory);
        let resp =
            ErrorShape { redis_kind: Some(ErrorKind::Server(ServerErrorKind::ResponseError)), code: Some("ERR"), ..ErrorShape::default() };
        assert_eq!(classify_parts(resp, "ResponseError: max number of clients reached"), MaxClients);
        let loading = ErrorShape {
            redis_kind: Some(ErrorKind::Server(ServerErrorKind::BusyLoading)),
            code: Some("LOADING"),
            ..ErrorShape::default()
        };
        assert_eq!(classify_parts(loading, "BusyLoading: Redis is loading the dataset in memory"), Loading);
        assert_eq!(text("LOADING Redis is loading the dataset in memory"), Loading);
        let ro =
            ErrorShape { redis_kind: Some(ErrorKind::Server(ServerErrorKind::ReadOnly)), code: Some("READONLY"), ..ErrorShape::default() };
        assert_eq!(classify_parts(ro, "ReadOnly: You can't write against a read only replica."), ReadOnly);
        assert_eq!(text("READONLY You can't write against a read only replica."), ReadOnly);
    }

    #[test]
    fn our_own_trouble_is_local() {
        let emfile = io::Error::from_raw_os_error(libc::EMFILE);
        let url = RedisUrl::parse("redis://127.0.0.1:7001").unwrap();
        assert_eq!(from_io(&url, "connect", &emfile).class, Local);
        assert_eq!(from_redis(&url, "connect", &RedisError::from(emfile)).class, Local);
        assert_eq!(text("Too many open files (os error 24)"), Local);
        assert_eq!(from_io(&url, "connect", &io::Error::from_raw_os_error(libc::ENOMEM)).class, Local);
        // A remote host that is unreachable is the network's trouble, not ours.
        assert_eq!(io(io::ErrorKind::HostUnreachable, "No route to host"), Network);
    }

    #[test]
    fn busy_is_its_own_class() {
        assert_eq!(code("BUSY", "BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."), Busy);
        assert_eq!(text("BUSY Redis is busy running a script. You can only call SCRIPT KILL or SHUTDOWN NOSAVE."), Busy);
    }

    #[test]
    fn unknown_otherwise() {
        assert_eq!(text("ERR unknown command 'FOO'"), Unknown);
        assert_eq!(code("WRONGTYPE", "WRONGTYPE Operation against a key holding the wrong kind of value"), Unknown);
    }

    #[test]
    fn real_redis_errors() {
        let refused = RedisError::from(io::Error::from(io::ErrorKind::ConnectionRefused));
        let url = RedisUrl::parse("redis://:hunter22@127.0.0.1:7001").unwrap();
        assert_eq!(from_redis(&url, "connect", &refused).class, ConnectionRefused);
        let auth = RedisError::from((ErrorKind::AuthenticationFailed, "Password authentication failed"));
        assert_eq!(from_redis(&url, "connect", &auth).class, Auth);
        let timeout = RedisError::from(io::Error::from(io::ErrorKind::TimedOut));
        assert_eq!(from_redis(&url, "PING", &timeout).class, Timeout);
        assert_eq!(timed_out(&url, "PING", Duration::from_millis(250)).class, Timeout);
        let tls = io::Error::new(io::ErrorKind::InvalidData, rustls::Error::InvalidCertificate(rustls::CertificateError::UnknownIssuer));
        assert_eq!(from_io(&url, "connect", &tls).class, Tls);
        assert_eq!(from_redis(&url, "connect", &RedisError::from(tls)).class, Tls);
    }

    #[test]
    fn messages_never_hold_the_password() {
        let url = RedisUrl::parse("redis://default:hunter22@10.0.0.1:7001/0").unwrap();
        let err = RedisError::from(io::Error::other("cannot reach redis://default:hunter22@10.0.0.1:7001/0 (hunter22)"));
        let f = from_redis(&url, "connect", &err);
        assert!(!f.message.contains("hunter22"), "{}", f.message);
        assert!(f.message.contains("10.0.0.1:7001"), "{}", f.message);
        let lone = RedisUrl::parse("redis://s3cretpw@10.0.0.1:7001").unwrap();
        let f = other(&lone, Unknown, "INFO", "echo s3cretpw");
        assert!(!f.message.contains("s3cretpw"), "{}", f.message);
    }
}
