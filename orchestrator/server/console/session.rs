//! Console sessions: an approver's (or viewer's) token is exchanged once for a random
//! session id in an `HttpOnly; SameSite=Strict` cookie (`Secure` over TLS); the session
//! lives server-side, expires, and carries its own CSRF token that every POST must
//! send back in `X-CSRF-Token`.
//!
//! Invariants: the token itself is never stored in the session, the cookie or a page;
//! the store is keyed by the SHA-256 of the session id, so a lookup's timing says
//! nothing about the ids held; every comparison of a secret is constant-time.

use crate::server::auth::Role;
use axum::http::HeaderMap;
use chrono::{DateTime, Utc};
use rand::RngCore;
use sha2::{Digest, Sha256};
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;
use subtle::ConstantTimeEq;

pub const COOKIE: &str = "orch_session";
/// At most this many live sessions; beyond it the one expiring first is dropped.
const MAX_SESSIONS: usize = 10_000;

#[derive(Debug, Clone)]
pub struct Session {
    pub who: String,
    pub role: Role,
    pub csrf: String,
    pub expires: tokio::time::Instant,
    pub expires_at: DateTime<Utc>,
}

pub struct Sessions {
    ttl: Duration,
    map: Mutex<HashMap<[u8; 32], Session>>,
}

fn random_hex() -> String {
    let mut b = [0u8; 32];
    rand::rng().fill_bytes(&mut b);
    hex::encode(b)
}

fn key(id: &str) -> [u8; 32] {
    Sha256::digest(id.as_bytes()).into()
}

impl Sessions {
    pub fn new(ttl: Duration) -> Self {
        Sessions { ttl, map: Mutex::new(HashMap::new()) }
    }

    pub fn ttl(&self) -> Duration {
        self.ttl
    }

    /// A new session; returns its id (for the cookie only) and the session.
    pub fn create(&self, who: &str, role: Role) -> (String, Session) {
        let id = random_hex();
        let s = Session {
            who: who.to_string(),
            role,
            csrf: random_hex(),
            expires: tokio::time::Instant::now() + self.ttl,
            expires_at: Utc::now() + chrono::Duration::from_std(self.ttl).unwrap_or(chrono::Duration::MAX),
        };
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        let now = tokio::time::Instant::now();
        map.retain(|_, s| s.expires > now);
        if map.len() >= MAX_SESSIONS {
            if let Some(k) = map.iter().min_by_key(|(_, s)| s.expires).map(|(k, _)| *k) {
                map.remove(&k);
            }
        }
        map.insert(key(&id), s.clone());
        (id, s)
    }

    /// The live session behind an id; an expired one is forgotten.
    pub fn get(&self, id: &str) -> Option<Session> {
        let k = key(id);
        let mut map = self.map.lock().unwrap_or_else(|e| e.into_inner());
        match map.get(&k) {
            Some(s) if s.expires > tokio::time::Instant::now() => Some(s.clone()),
            Some(_) => {
                map.remove(&k);
                None
            }
            None => None,
        }
    }

    pub fn remove(&self, id: &str) {
        self.map.lock().unwrap_or_else(|e| e.into_inner()).remove(&key(id));
    }

    /// The session a request's cookie names.
    pub fn from_headers(&self, headers: &HeaderMap) -> Option<(String, Session)> {
        let id = cookie(headers, COOKIE)?;
        self.get(&id).map(|s| (id, s))
    }
}

/// The value of cookie `name` in a request.
pub fn cookie(headers: &HeaderMap, name: &str) -> Option<String> {
    headers.get_all("cookie").iter().filter_map(|v| v.to_str().ok()).flat_map(|v| v.split(';')).find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        (k == name).then(|| v.to_string())
    })
}

/// Whether the request came over TLS (directly or through a proxy that says so): the
/// cookie is then `Secure`. A forwarded header can only make the cookie stricter.
pub fn over_tls(headers: &HeaderMap, configured: bool) -> bool {
    configured
        || headers
            .get("x-forwarded-proto")
            .and_then(|v| v.to_str().ok())
            .is_some_and(|v| v.split(',').next().unwrap_or("").trim().eq_ignore_ascii_case("https"))
}

pub fn set_cookie(id: &str, ttl: Duration, secure: bool) -> String {
    format!("{COOKIE}={id}; Path=/; HttpOnly; SameSite=Strict; Max-Age={}{}", ttl.as_secs(), if secure { "; Secure" } else { "" })
}

pub fn clear_cookie(secure: bool) -> String {
    format!("{COOKIE}=; Path=/; HttpOnly; SameSite=Strict; Max-Age=0{}", if secure { "; Secure" } else { "" })
}

/// The POST carries the session's CSRF token in `X-CSRF-Token`.
pub fn csrf_ok(session: &Session, headers: &HeaderMap) -> bool {
    let Some(got) = headers.get("x-csrf-token").and_then(|v| v.to_str().ok()) else { return false };
    got.len() == session.csrf.len() && bool::from(got.as_bytes().ct_eq(session.csrf.as_bytes()))
}

/// A state-changing request must come from the console's own pages: a browser says
/// where a request comes from (`Sec-Fetch-Site`, `Origin`); when it says, it must be
/// this origin. (Defence in depth beside the CSRF token and `SameSite=Strict`.)
pub fn same_origin(headers: &HeaderMap) -> bool {
    if let Some(site) = headers.get("sec-fetch-site").and_then(|v| v.to_str().ok()) {
        if !matches!(site, "same-origin" | "none") {
            return false;
        }
    }
    match headers.get("origin").and_then(|v| v.to_str().ok()) {
        None => true,
        Some(origin) => {
            let host = headers.get("host").and_then(|v| v.to_str().ok()).unwrap_or("");
            let authority = origin.split_once("://").map(|(_, a)| a).unwrap_or("");
            !host.is_empty() && authority.eq_ignore_ascii_case(host)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn sessions_expire_and_csrf_must_match() {
        let s = Sessions::new(Duration::from_millis(200));
        let (id, sess) = s.create("oncall", Role::Approver);
        assert_eq!(s.get(&id).unwrap().who, "oncall");
        let mut h = HeaderMap::new();
        assert!(!csrf_ok(&sess, &h), "no token");
        h.insert("x-csrf-token", "nope".parse().unwrap());
        assert!(!csrf_ok(&sess, &h));
        h.insert("x-csrf-token", sess.csrf.parse().unwrap());
        assert!(csrf_ok(&sess, &h));
        tokio::time::sleep(Duration::from_millis(250)).await;
        assert!(s.get(&id).is_none(), "expired");
    }

    #[test]
    fn cookies_and_origins() {
        let mut h = HeaderMap::new();
        h.insert("cookie", "a=b; orch_session=abc; c=d".parse().unwrap());
        assert_eq!(cookie(&h, COOKIE).as_deref(), Some("abc"));
        assert!(set_cookie("x", Duration::from_secs(5), true).contains("HttpOnly; SameSite=Strict; Max-Age=5; Secure"));
        assert!(!set_cookie("x", Duration::from_secs(5), false).contains("Secure"));
        h.insert("host", "127.0.0.1:8080".parse().unwrap());
        h.insert("origin", "http://127.0.0.1:8080".parse().unwrap());
        assert!(same_origin(&h));
        h.insert("origin", "http://evil.example".parse().unwrap());
        assert!(!same_origin(&h));
        let mut h2 = HeaderMap::new();
        h2.insert("x-forwarded-proto", "https".parse().unwrap());
        assert!(over_tls(&h2, false));
    }
}
