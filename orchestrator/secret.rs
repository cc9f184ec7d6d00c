//! Secret values and Redis URLs that can be carried around without ever being printed.
//!
//! Secrets reach the program only through `${NAME}` references in playbooks. From then
//! on they live in [`Secret`] or [`RedisUrl`], whose `Debug` and `Display` never show
//! the secret part, so a stray `{:?}` in a log line or a journal record cannot leak it.

use std::fmt;

/// A secret string (API key, token, webhook URL). Only [`Secret::expose`] reveals it,
/// and callers do so at the last moment: when building an HTTP header or a connection.
#[derive(Clone, PartialEq, Eq, Default)]
pub struct Secret(String);

impl Secret {
    pub fn new(value: impl Into<String>) -> Self {
        Secret(value.into())
    }

    /// The secret itself. Never pass the result to a logger, the journal or output.
    pub fn expose(&self) -> &str {
        &self.0
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }
}

impl fmt::Debug for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Secret(***)")
    }
}

impl fmt::Display for Secret {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("***")
    }
}

/// A Redis connection URL (`redis://` or `rediss://`). Displays with the password
/// masked; [`RedisUrl::expose`] gives the full URL for connecting.
#[derive(Clone, PartialEq, Eq)]
pub struct RedisUrl {
    full: String,
    masked: String,
}

impl RedisUrl {
    /// Parses and checks the scheme. The error message never contains the password.
    pub fn parse(s: &str) -> Result<Self, String> {
        // A password holding `/`, `?` or `#` unencoded ends the URL's authority early:
        // the URL would parse as something else (or not at all). Say so plainly.
        if let Some(rest) = s.split_once("://").map(|(_, r)| r) {
            let end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
            if rest[end..].contains('@') {
                return Err(format!(
                    "the password (or user) in {} contains `/`, `?` or `#`: percent-encode them (%2F, %3F, %23)",
                    mask_url(s)
                ));
            }
        }
        let parsed = url::Url::parse(s).map_err(|e| format!("not a valid URL ({e}): {}", mask_url(s)))?;
        match parsed.scheme() {
            "redis" | "rediss" => {}
            other => return Err(format!("scheme must be redis:// or rediss://, not {other}://")),
        }
        if parsed.host_str().map(str::is_empty).unwrap_or(true) {
            return Err(format!("URL has no host: {}", mask_url(s)));
        }
        Ok(RedisUrl { full: s.to_string(), masked: mask_url(s) })
    }

    pub fn expose(&self) -> &str {
        &self.full
    }

    pub fn masked(&self) -> &str {
        &self.masked
    }

    pub fn is_tls(&self) -> bool {
        self.full.starts_with("rediss://")
    }

    /// `host:port/db`, the identity of the endpoint: two URLs that differ only in
    /// credentials point at the same Redis.
    pub fn endpoint(&self) -> String {
        match url::Url::parse(&self.full) {
            Ok(u) => {
                let host = u.host_str().unwrap_or("").to_ascii_lowercase();
                let host = if host == "localhost" { "127.0.0.1".to_string() } else { host };
                let port = u.port().unwrap_or(6379);
                let db = u.path().trim_start_matches('/');
                let db = if db.is_empty() { "0" } else { db };
                format!("{host}:{port}/{db}")
            }
            Err(_) => self.masked.clone(),
        }
    }

    pub fn host(&self) -> String {
        url::Url::parse(&self.full).ok().and_then(|u| u.host_str().map(str::to_string)).unwrap_or_default()
    }
}

impl fmt::Debug for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "RedisUrl({})", self.masked)
    }
}

impl fmt::Display for RedisUrl {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.masked)
    }
}

/// Masks the password (and a lone username-as-password) of any URL-looking string.
/// Works on strings that do not parse as URLs too, because error messages from
/// libraries sometimes echo a malformed URL back.
///
/// The userinfo ends at the LAST `@` after the scheme, not at the first `/`, `?` or
/// `#`: a pasted password may contain any of them (`redis://default:Ab/Cd9@host`), and
/// masking too much of a URL that has an `@` in its path is the safe mistake.
pub fn mask_url(s: &str) -> String {
    if let Some(scheme_end) = s.find("://") {
        let rest = &s[scheme_end + 3..];
        if let Some(at) = rest.rfind('@') {
            let userinfo = &rest[..at];
            let masked_userinfo = match userinfo.find(':') {
                Some(colon) => format!("{}:***", &userinfo[..colon]),
                None => "***".to_string(),
            };
            return format!("{}://{}@{}", &s[..scheme_end], masked_userinfo, &rest[at + 1..]);
        }
    }
    s.to_string()
}

/// Replaces every occurrence of each known secret in `text` with `***`. The last line
/// of defence for text that came from outside (error messages of HTTP servers or
/// commands) and might echo a secret back.
pub fn scrub(text: &str, secrets: &[&str]) -> String {
    let mut out = text.to_string();
    for s in secrets {
        if s.len() >= 4 {
            out = out.replace(s, "***");
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn masks_password_in_url() {
        assert_eq!(mask_url("rediss://default:hunter2@h:6379/0"), "rediss://default:***@h:6379/0");
        assert_eq!(mask_url("redis://hunter2@h:6379"), "redis://***@h:6379");
        assert_eq!(mask_url("redis://h:6379"), "redis://h:6379");
        let u = RedisUrl::parse("redis://:pw1234@localhost:7000/2").unwrap();
        assert!(!format!("{u} {u:?}").contains("pw1234"));
        assert_eq!(u.endpoint(), "127.0.0.1:7000/2");
    }

    #[test]
    fn secret_never_displays() {
        let s = Secret::new("tok-123456");
        assert!(!format!("{s} {s:?}").contains("tok-123456"));
        assert_eq!(scrub("x tok-123456 y", &[s.expose()]), "x *** y");
    }
}
