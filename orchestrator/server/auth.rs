//! Who may call the daemon: webhook senders (bearer token or HMAC signature) and
//! approvers (one token per person, so the token says who approved). Every comparison
//! is constant-time.

use crate::secret::Secret;
use axum::http::HeaderMap;
use hmac::{Hmac, Mac};
use sha2::Sha256;
use subtle::ConstantTimeEq;

/// How far a signed timestamp may be from now, either way.
pub const MAX_SIGNATURE_AGE_SECS: i64 = 300;
/// Off loopback, every token and secret is at least this long.
pub const MIN_CREDENTIAL: usize = 16;
/// Signatures without a timestamp remembered at most (loopback only; beyond it the
/// oldest are forgotten and could be replayed once more).
pub const MAX_REMEMBERED_SIGNATURES: usize = 100_000;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WebhookAuth {
    Denied,
    /// No webhook credential configured (loopback only).
    Open,
    Bearer,
    Signed {
        signature: String,
        timestamped: bool,
    },
}

/// Signatures already accepted: a signature is accepted once. A timestamped one is
/// remembered until its timestamp is stale anyway (twice the freshness window); one
/// without a timestamp (accepted on loopback only) as long as room allows.
#[derive(Default)]
pub struct ReplayGuard {
    seen: std::sync::Mutex<std::collections::HashMap<String, i64>>,
}

impl ReplayGuard {
    /// Claims a signature for one request; `false` when it was seen before (a replay,
    /// or the same delivery in flight twice).
    pub fn reserve(&self, signature: &str, timestamped: bool, now: i64) -> bool {
        let mut seen = self.seen.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(until) = seen.get(signature) {
            if *until > now {
                return false;
            }
        }
        if seen.len() >= MAX_REMEMBERED_SIGNATURES {
            seen.retain(|_, until| *until > now);
            if seen.len() >= MAX_REMEMBERED_SIGNATURES {
                // Only untimestamped ones can be left: forget the one that expires first.
                if let Some(k) = seen.iter().min_by_key(|(_, u)| **u).map(|(k, _)| k.clone()) {
                    seen.remove(&k);
                }
            }
        }
        let until = if timestamped { now + 2 * MAX_SIGNATURE_AGE_SECS } else { i64::MAX };
        seen.insert(signature.to_string(), until);
        true
    }

    /// Gives a signature back when its request was not journaled: the sender retries
    /// the same delivery, and that retry must be accepted.
    pub fn release(&self, signature: &str) {
        self.seen.lock().unwrap_or_else(|e| e.into_inner()).remove(signature);
    }
}

#[derive(Clone, Default)]
pub struct AuthConfig {
    pub webhook_token: Option<Secret>,
    /// Grafana's HMAC-SHA256 signature secret (header `X-Grafana-Alerting-Signature`).
    pub hmac_secret: Option<Secret>,
    /// (person, token) pairs.
    pub approvers: Vec<(String, Secret)>,
    /// (person, token) pairs of read-only viewers of the web console
    /// (`ORCH_VIEWER_TOKENS`): they sign in and read, and cannot act.
    pub viewers: Vec<(String, Secret)>,
}

/// What a console sign-in token says about its holder.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "snake_case")]
pub enum Role {
    /// Holds an approver token: may approve, reject, abort and pause (the machine still
    /// refuses an approval from a name not on the playbook's approver list).
    Approver,
    /// Reads only.
    Viewer,
}

fn ct_eq(a: &str, b: &str) -> bool {
    a.len() == b.len() && bool::from(a.as_bytes().ct_eq(b.as_bytes()))
}

fn bearer(headers: &HeaderMap) -> Option<&str> {
    headers.get("authorization")?.to_str().ok()?.strip_prefix("Bearer ").map(str::trim)
}

impl AuthConfig {
    /// Reads tokens from the environment: `ORCH_WEBHOOK_TOKEN`, `ORCH_WEBHOOK_HMAC_SECRET`
    /// and `ORCH_APPROVER_TOKENS` (`name=token,name=token`).
    pub fn from_env() -> Result<AuthConfig, String> {
        let get = |k: &str| std::env::var(k).ok().filter(|v| !v.is_empty()).map(Secret::new);
        let pairs = |var: &str, what: &str| -> Result<Vec<(String, Secret)>, String> {
            let mut out = Vec::new();
            if let Ok(list) = std::env::var(var) {
                for pair in list.split(',').map(str::trim).filter(|p| !p.is_empty()) {
                    let (name, token) = pair.split_once('=').ok_or(format!("{var} must be name=token pairs separated by commas"))?;
                    if name.trim().is_empty() || token.trim().len() < 16 {
                        return Err(format!("{what} token for {:?} must be at least 16 characters", name.trim()));
                    }
                    out.push((name.trim().to_string(), Secret::new(token.trim())));
                }
            }
            Ok(out)
        };
        Ok(AuthConfig {
            webhook_token: get("ORCH_WEBHOOK_TOKEN"),
            hmac_secret: get("ORCH_WEBHOOK_HMAC_SECRET"),
            approvers: pairs("ORCH_APPROVER_TOKENS", "approver")?,
            viewers: pairs("ORCH_VIEWER_TOKENS", "viewer")?,
        })
    }

    /// Refuses configurations that would leave a non-loopback listener open, or let a
    /// webhook sender approve its own failover. Off loopback every credential must be
    /// at least [`MIN_CREDENTIAL`] characters and all of them distinct: one leaked
    /// secret must not open a second door.
    pub fn check_for(&self, loopback: bool) -> Result<(), String> {
        if self.webhook_token.is_none() && self.hmac_secret.is_none() && !loopback {
            return Err("serving on a non-loopback address needs ORCH_WEBHOOK_TOKEN or ORCH_WEBHOOK_HMAC_SECRET".into());
        }
        if self.approvers.is_empty() && !loopback {
            return Err("serving on a non-loopback address needs ORCH_APPROVER_TOKENS".into());
        }
        let mut named: Vec<(String, &str)> = Vec::new();
        if let Some(w) = &self.webhook_token {
            named.push(("ORCH_WEBHOOK_TOKEN".into(), w.expose()));
        }
        if let Some(h) = &self.hmac_secret {
            named.push(("ORCH_WEBHOOK_HMAC_SECRET".into(), h.expose()));
        }
        for (who, t) in &self.approvers {
            named.push((format!("the approver token of {who:?}"), t.expose()));
        }
        for (who, t) in &self.viewers {
            named.push((format!("the viewer token of {who:?}"), t.expose()));
        }
        for (i, (a, va)) in named.iter().enumerate() {
            if !loopback && va.chars().count() < MIN_CREDENTIAL {
                return Err(format!("{a} must be at least {MIN_CREDENTIAL} characters when serving off loopback"));
            }
            for (b, vb) in &named[i + 1..] {
                // On loopback too: a webhook sender must never approve its own failover,
                // and a token must say which one person holds it.
                if ct_eq(va, vb) {
                    return Err(format!("{a} and {b} must be different secrets"));
                }
            }
        }
        Ok(())
    }

    /// A webhook is accepted with the bearer token or a valid HMAC signature. With
    /// neither configured (loopback only) every webhook is accepted.
    pub fn webhook_ok(&self, headers: &HeaderMap, body: &[u8]) -> bool {
        !matches!(self.webhook_auth(headers, body), WebhookAuth::Denied)
    }

    /// How a webhook authenticated: the signature, when it did by HMAC, so the caller
    /// can refuse its replay.
    pub fn webhook_auth(&self, headers: &HeaderMap, body: &[u8]) -> WebhookAuth {
        if self.webhook_token.is_none() && self.hmac_secret.is_none() {
            return WebhookAuth::Open;
        }
        if let (Some(expected), Some(got)) = (&self.webhook_token, bearer(headers)) {
            if ct_eq(expected.expose(), got) {
                return WebhookAuth::Bearer;
            }
        }
        if let (Some(secret), Some(sig)) = (&self.hmac_secret, headers.get("x-grafana-alerting-signature").and_then(|v| v.to_str().ok())) {
            let ts = headers.get("x-grafana-alerting-signature-timestamp").and_then(|v| v.to_str().ok());
            // A signed timestamp must be fresh, or a captured body could be replayed
            // for ever.
            if let Some(t) = ts {
                let fresh =
                    t.trim().parse::<i64>().map(|t| (chrono::Utc::now().timestamp() - t).abs() <= MAX_SIGNATURE_AGE_SECS).unwrap_or(false);
                if !fresh {
                    return WebhookAuth::Denied;
                }
            }
            let expected = sign(secret.expose(), ts, body);
            let got = sig.trim().trim_start_matches("sha256=");
            if ct_eq(&expected, got) {
                return WebhookAuth::Signed { signature: expected, timestamped: ts.is_some() };
            }
        }
        WebhookAuth::Denied
    }

    /// The person a bearer token belongs to.
    pub fn approver(&self, headers: &HeaderMap) -> Option<String> {
        let got = bearer(headers)?;
        // Compare against every token so timing does not reveal which one matched.
        let mut who = None;
        for (name, token) in &self.approvers {
            if ct_eq(token.expose(), got) {
                who = Some(name.clone());
            }
        }
        who
    }

    /// The person a console sign-in token belongs to, and what they may do. Every
    /// token is compared (constant time each), so timing does not say which matched.
    pub fn signer(&self, token: &str) -> Option<(String, Role)> {
        let mut who = None;
        for (name, t) in &self.approvers {
            if ct_eq(t.expose(), token) {
                who = Some((name.clone(), Role::Approver));
            }
        }
        for (name, t) in &self.viewers {
            if ct_eq(t.expose(), token) && who.is_none() {
                who = Some((name.clone(), Role::Viewer));
            }
        }
        who
    }

    pub fn secrets(&self) -> Vec<String> {
        let mut s: Vec<String> = self.approvers.iter().chain(&self.viewers).map(|(_, t)| t.expose().to_string()).collect();
        s.extend(self.webhook_token.iter().map(|t| t.expose().to_string()));
        s.extend(self.hmac_secret.iter().map(|t| t.expose().to_string()));
        s
    }
}

/// Grafana's signature: hex HMAC-SHA256 of the body, or of `timestamp:body` when the
/// timestamp header is configured.
pub fn sign(secret: &str, timestamp: Option<&str>, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("HMAC takes any key length");
    if let Some(ts) = timestamp {
        mac.update(ts.as_bytes());
        mac.update(b":");
    }
    mac.update(body);
    hex::encode(mac.finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hmac_and_bearer() {
        let cfg = AuthConfig {
            webhook_token: Some(Secret::new("hook-token")),
            hmac_secret: Some(Secret::new("k")),
            approvers: vec![],
            viewers: vec![],
        };
        let mut h = HeaderMap::new();
        assert!(!cfg.webhook_ok(&h, b"{}"));
        h.insert("authorization", "Bearer hook-token".parse().unwrap());
        assert!(cfg.webhook_ok(&h, b"{}"));
        let mut h = HeaderMap::new();
        h.insert("x-grafana-alerting-signature", sign("k", None, b"{}").parse().unwrap());
        assert!(cfg.webhook_ok(&h, b"{}"));
        assert!(!cfg.webhook_ok(&h, b"{ }"), "signature covers the body");
        let now = chrono::Utc::now().timestamp().to_string();
        h.insert("x-grafana-alerting-signature-timestamp", now.parse().unwrap());
        assert!(!cfg.webhook_ok(&h, b"{}"), "timestamp is signed too");
        h.insert("x-grafana-alerting-signature", sign("k", Some(&now), b"{}").parse().unwrap());
        assert!(cfg.webhook_ok(&h, b"{}"));
        let old = (chrono::Utc::now().timestamp() - 3600).to_string();
        h.insert("x-grafana-alerting-signature-timestamp", old.parse().unwrap());
        h.insert("x-grafana-alerting-signature", sign("k", Some(&old), b"{}").parse().unwrap());
        assert!(!cfg.webhook_ok(&h, b"{}"), "an hour-old signature is a replay");
    }

    #[test]
    fn a_signature_is_accepted_once_unless_released() {
        let g = ReplayGuard::default();
        assert!(g.reserve("s", true, 1000));
        assert!(!g.reserve("s", true, 1100), "replay within the window");
        g.release("s");
        assert!(g.reserve("s", true, 1100), "a released signature (503) may be retried");
        assert!(g.reserve("s", true, 1000 + 3 * MAX_SIGNATURE_AGE_SECS), "forgotten once stale anyway");
    }

    #[test]
    fn tokens_must_differ_and_are_required_off_loopback() {
        let same = AuthConfig {
            webhook_token: Some(Secret::new("t".repeat(20))),
            hmac_secret: None,
            approvers: vec![("a".into(), Secret::new("t".repeat(20)))],
            viewers: vec![],
        };
        assert!(same.check_for(true).is_err());
        assert!(AuthConfig::default().check_for(false).is_err());
        assert!(AuthConfig::default().check_for(true).is_ok());
    }
}
