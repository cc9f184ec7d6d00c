//! The one redaction path: every text that leaves the process (journal rows, logs, CLI
//! output, HTTP answers, Slack) goes through a [`Redactor`].
//!
//! A redactor knows the secrets of a playbook: its secret fields, the passwords of its
//! URLs, and the values of every environment variable the playbook or one of its
//! command scripts references. It replaces each of them with `***` and then masks the
//! password of any URL-looking word (so a connection string it never saw, quoted in an
//! alert, is masked too).
//!
//! The process also keeps one global redactor (the union of every playbook loaded),
//! used where no playbook is at hand: the log writer and the CLI's error line.

use crate::secret::mask_url;
use std::io::Write;
use std::sync::{Arc, RwLock};

/// Whole secret values shorter than this are not scrubbed from free text: replacing
/// every `abc` in every message would destroy output without protecting anything (a
/// secret that short is guessable anyway).
pub const MIN_SECRET: usize = 4;
/// Environment values the playbook references outside its secret fields (a service
/// id, a host name) are scrubbed from this length up: shorter ones are ports and flags.
pub const MIN_ENV_VALUE: usize = 6;

/// Environment variables that are never secrets, even when a script references them:
/// scrubbing `$HOME` or `$PATH` would mangle every path in every message.
const NOT_SECRET: &[&str] =
    &["PATH", "HOME", "PWD", "OLDPWD", "USER", "LOGNAME", "SHELL", "TMPDIR", "TERM", "LANG", "HOSTNAME", "IFS", "PS1", "PS4", "SHLVL"];

#[derive(Clone, Default, PartialEq, Eq)]
pub struct Redactor {
    /// Longest first, so a secret that contains another is replaced whole.
    secrets: Vec<String>,
}

impl std::fmt::Debug for Redactor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Redactor({} secrets)", self.secrets.len())
    }
}

impl Redactor {
    pub fn new() -> Self {
        Redactor::default()
    }

    fn push(&mut self, s: &str, min: usize) {
        if s.chars().count() >= min && !self.secrets.iter().any(|e| e == s) {
            self.secrets.push(s.to_string());
            self.secrets.sort_by_key(|s| std::cmp::Reverse(s.len()));
        }
    }

    /// A whole value that is secret (an API key, a token, a webhook URL).
    pub fn add_secret(&mut self, s: &str) {
        self.push(s, MIN_SECRET);
    }

    /// The password of a URL (raw as written, percent-decoded and percent-encoded: error
    /// text may echo any of them), or its user part when it has no password (the redis
    /// crate takes a lone user part for the password). Not the whole URL: it appears,
    /// masked, where it belongs.
    pub fn add_url(&mut self, url: &str) {
        for p in url_passwords(url) {
            self.push(&p, MIN_SECRET);
        }
    }

    /// The value of an environment variable the playbook or a script references.
    pub fn add_env_value(&mut self, name: &str, value: &str) {
        if NOT_SECRET.contains(&name) || name.starts_with("LC_") || name.starts_with("ORCH_") {
            return;
        }
        if value.contains("://") {
            self.add_url(value);
            // A query string often carries a token (`?access_token=`).
            if let Some((_, query)) = value.split_once('?') {
                self.push(query, MIN_ENV_VALUE);
            }
        } else {
            self.push(value, MIN_ENV_VALUE);
        }
    }

    pub fn merge(&mut self, other: &Redactor) {
        for s in &other.secrets {
            self.push(s, 0);
        }
    }

    pub fn is_empty(&self) -> bool {
        self.secrets.is_empty()
    }

    /// `text` with every known secret replaced by `***` and every URL's password masked.
    pub fn redact(&self, text: &str) -> String {
        let mut out = std::borrow::Cow::Borrowed(text);
        for s in &self.secrets {
            if out.contains(s.as_str()) {
                out = std::borrow::Cow::Owned(out.replace(s.as_str(), "***"));
            }
        }
        mask_urls(&out)
    }

    /// Every string leaf of a JSON value redacted (keys are the program's own words).
    pub fn redact_json(&self, v: &mut serde_json::Value) {
        match v {
            serde_json::Value::String(s) => {
                let r = self.redact(s);
                if r != *s {
                    *s = r;
                }
            }
            serde_json::Value::Array(items) => items.iter_mut().for_each(|i| self.redact_json(i)),
            serde_json::Value::Object(map) => map.values_mut().for_each(|i| self.redact_json(i)),
            _ => {}
        }
    }

    /// A JSON text redacted leaf by leaf (a secret with a `"` in it is escaped in the
    /// text, so plain text replacement would miss it). Non-JSON is redacted as text.
    pub fn redact_json_text(&self, text: &str) -> String {
        match serde_json::from_str::<serde_json::Value>(text) {
            Ok(mut v) => {
                self.redact_json(&mut v);
                v.to_string()
            }
            Err(_) => self.redact(text),
        }
    }
}

/// The password-like parts of a URL, in every form an error message might show.
pub fn url_passwords(url: &str) -> Vec<String> {
    let mut out = Vec::new();
    let Some(scheme_end) = url.find("://") else { return out };
    let rest = &url[scheme_end + 3..];
    // The userinfo ends at the LAST `@`: a pasted password may contain `/`, `?`, `#`
    // or `@` itself.
    if let Some(at) = rest.rfind('@') {
        let userinfo = &rest[..at];
        let raw = match userinfo.split_once(':') {
            Some((_, pw)) => pw,
            None => userinfo,
        };
        if !raw.is_empty() {
            out.push(raw.to_string());
            out.push(percent_decode(raw));
            out.push(url::form_urlencoded::byte_serialize(raw.as_bytes()).collect::<String>());
        }
    }
    if let Ok(u) = url::Url::parse(url) {
        if let Some(p) = u.password() {
            out.push(p.to_string());
            out.push(percent_decode(p));
        } else if !u.username().is_empty() {
            out.push(u.username().to_string());
            out.push(percent_decode(u.username()));
        }
    }
    out.retain(|s| !s.is_empty());
    out.dedup();
    out
}

/// Percent-decoding (lossy) with `+` kept literal.
fn percent_decode(s: &str) -> String {
    url::form_urlencoded::parse(format!("x={}", s.replace('+', "%2B")).as_bytes()).next().map(|(_, v)| v.into_owned()).unwrap_or_default()
}

/// [`mask_url`] applied to each word that looks like a URL, so a sentence with several
/// URLs is masked too.
pub fn mask_urls(text: &str) -> String {
    if !text.contains("://") {
        return text.to_string();
    }
    let mut out = String::with_capacity(text.len());
    let mut word = String::new();
    for c in text.chars() {
        if c.is_whitespace() || matches!(c, '"' | '\'' | '<' | '>' | '|' | '`' | ',' | '(' | ')' | '[' | ']' | '{' | '}') {
            push_masked(&mut out, &mut word);
            out.push(c);
        } else {
            word.push(c);
        }
    }
    push_masked(&mut out, &mut word);
    out
}

fn push_masked(out: &mut String, word: &mut String) {
    if word.contains("://") {
        out.push_str(&mask_url(word));
    } else {
        out.push_str(word);
    }
    word.clear();
}

static GLOBAL: RwLock<Option<Arc<Redactor>>> = RwLock::new(None);

/// Adds a redactor's secrets to the process-wide one (used by logs and the CLI).
pub fn install(r: &Redactor) {
    let mut g = GLOBAL.write().unwrap_or_else(|e| e.into_inner());
    let mut merged = g.as_deref().cloned().unwrap_or_default();
    merged.merge(r);
    *g = Some(Arc::new(merged));
}

/// The process-wide redactor (URL masking only until a playbook is loaded).
pub fn global() -> Arc<Redactor> {
    GLOBAL.read().unwrap_or_else(|e| e.into_inner()).clone().unwrap_or_default()
}

/// `text` through the process-wide redactor.
pub fn redact(text: &str) -> String {
    global().redact(text)
}

/// A `tracing` writer that redacts each formatted event before it reaches stderr: a
/// log line is output like any other.
#[derive(Clone, Copy, Default)]
pub struct RedactingStderr;

pub struct LineBuffer(Vec<u8>);

impl Write for LineBuffer {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Drop for LineBuffer {
    fn drop(&mut self) {
        if self.0.is_empty() {
            return;
        }
        let text = String::from_utf8_lossy(&self.0);
        let clean = redact(&text);
        let _ = std::io::stderr().lock().write_all(clean.as_bytes());
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for RedactingStderr {
    type Writer = LineBuffer;
    fn make_writer(&'a self) -> Self::Writer {
        LineBuffer(Vec::with_capacity(256))
    }
}

/// `s` cut to at most `max` bytes on a character boundary (for text from outside that
/// is stored or logged; redact first, then cut).
pub fn truncate(s: &str, max: usize) -> String {
    let mut end = s.len().min(max);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    s[..end].to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn passwords_with_url_delimiters_are_masked() {
        for url in ["redis://default:Ab/Cd9@host:6379", "redis://default:Ab#Cd9@host:6379", "redis://default:Ab?Cd9@h", "redis://u:a@b@c@h"]
        {
            let masked = mask_url(url);
            assert!(!masked.contains("Cd9") && !masked.contains("a@b"), "{url} → {masked}");
        }
        let mut r = Redactor::new();
        r.add_url("redis://default:Ab/Cd9@host:6379");
        assert_eq!(r.redact("login Ab/Cd9 failed"), "login *** failed");
    }

    #[test]
    fn env_values_are_secrets_but_not_home() {
        let mut r = Redactor::new();
        r.add_env_value("TOKEN", "tok-1234567");
        r.add_env_value("HOME", "/root/x");
        assert_eq!(r.redact("Bearer tok-1234567 in /root/x"), "Bearer *** in /root/x");
    }
}
