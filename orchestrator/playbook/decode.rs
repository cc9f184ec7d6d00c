//! Reading typed values out of the marked YAML tree while collecting every problem.
//!
//! Each reader returns `Option<T>`: `None` means "a problem was recorded here", so the
//! caller carries on and the user sees all problems of the file in one run.

use super::yaml::{Kind, Node, Pos};
use crate::duration::parse_duration;
use std::time::Duration;

/// One problem in a playbook, with its place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub pos: Pos,
    pub message: String,
}

/// Looks up environment variables; passed in so tests need not touch the process env.
pub type EnvLookup<'a> = &'a dyn Fn(&str) -> Option<String>;

pub struct Decoder<'a> {
    pub problems: Vec<Problem>,
    env: EnvLookup<'a>,
    /// What the playbook's text must never show: every environment value it (or one of
    /// its scripts) references, its secret fields, its URLs' passwords.
    pub redactor: crate::redact::Redactor,
}

/// The entries of one mapping, after unknown keys were reported.
pub struct Fields<'n> {
    pub path: String,
    pub pos: Pos,
    entries: &'n [(String, Pos, Node)],
}

impl<'n> Fields<'n> {
    pub fn get(&self, key: &str) -> Option<&'n Node> {
        self.entries.iter().find(|(k, _, _)| k == key).map(|(_, _, n)| n).filter(|n| !matches!(n.kind, Kind::Null))
    }

    pub fn child(&self, key: &str) -> String {
        if self.path.is_empty() {
            key.to_string()
        } else {
            format!("{}.{key}", self.path)
        }
    }
}

impl<'a> Decoder<'a> {
    pub fn new(env: EnvLookup<'a>) -> Self {
        Decoder { problems: Vec::new(), env, redactor: crate::redact::Redactor::new() }
    }

    pub fn problem(&mut self, pos: Pos, message: impl Into<String>) {
        self.problems.push(Problem { pos, message: message.into() });
    }

    /// Opens a mapping, reporting every key not in `known` (with a suggestion).
    pub fn map<'n>(&mut self, node: &'n Node, path: &str, known: &[&str]) -> Option<Fields<'n>> {
        match &node.kind {
            Kind::Map(entries) => {
                for (key, pos, _) in entries {
                    if !known.contains(&key.as_str()) {
                        let place = if path.is_empty() { "the top level".to_string() } else { format!("`{path}`") };
                        let hint = suggest(key, known).map(|s| format!("; did you mean `{s}`?")).unwrap_or_default();
                        self.problem(*pos, format!("unknown field `{key}` in {place}{hint} (expected one of: {})", known.join(", ")));
                    }
                }
                Some(Fields { path: path.to_string(), pos: node.pos, entries })
            }
            _ => {
                self.problem(node.pos, format!("`{}` must be a mapping, found {}", display_path(path), node.type_name()));
                None
            }
        }
    }

    /// A required field: reports its absence at the mapping's position.
    pub fn required<'n>(&mut self, fields: &Fields<'n>, key: &str) -> Option<&'n Node> {
        let found = fields.get(key);
        if found.is_none() {
            self.problem(fields.pos, format!("missing required field `{}`", fields.child(key)));
        }
        found
    }

    /// A scalar as written, without `${}` resolution.
    fn raw_scalar<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n str> {
        match &node.kind {
            Kind::Scalar(s, _) => Some(s.as_str()),
            _ => {
                self.problem(node.pos, format!("`{path}` must be a string, found {}", node.type_name()));
                None
            }
        }
    }

    /// A shell script, as written: `${NAME}` is left for the shell to expand from the
    /// environment it inherits, so a secret used by a script never passes through the
    /// orchestrator's own text (and so cannot reach the journal through an echo).
    pub fn script(&mut self, node: &Node, path: &str) -> Option<String> {
        let s = self.raw_scalar(node, path)?.to_string();
        if s.trim().is_empty() {
            self.problem(node.pos, format!("`{path}` is an empty command"));
            return None;
        }
        // The shell expands these, not us; their values are secrets all the same (a
        // script's `set -x` or error text would print them).
        for name in script_references(&s) {
            if let Some(v) = (self.env)(&name) {
                self.redactor.add_env_value(&name, &v);
            }
        }
        Some(s)
    }

    /// A string with every `${NAME}` (or `${NAME:-default}`) resolved.
    pub fn string(&mut self, node: &Node, path: &str) -> Option<String> {
        let raw = self.raw_scalar(node, path)?.to_string();
        self.interpolate(&raw, node.pos, path)
    }

    /// A secret: must come from the environment, never be written in the file.
    pub fn secret(&mut self, node: &Node, path: &str) -> Option<crate::secret::Secret> {
        let raw = self.raw_scalar(node, path)?.to_string();
        if !raw.contains("${") {
            self.problem(
                node.pos,
                format!("`{path}` is a secret and must come from an environment variable, e.g. \"${{{}}}\"", env_name_hint(path)),
            );
            return None;
        }
        let value = self.interpolate(&raw, node.pos, path)?;
        self.redactor.add_secret(&value);
        Some(crate::secret::Secret::new(value))
    }

    pub fn interpolate(&mut self, raw: &str, pos: Pos, path: &str) -> Option<String> {
        let mut out = String::new();
        let mut rest = raw;
        let mut ok = true;
        while let Some(start) = rest.find("${") {
            out.push_str(&rest[..start]);
            let after = &rest[start + 2..];
            let Some(end) = after.find('}') else {
                self.problem(pos, format!("`{path}`: unterminated `${{` (write ${{NAME}})"));
                return None;
            };
            let reference = &after[..end];
            let (name, default) = match reference.split_once(":-") {
                Some((n, d)) => (n, Some(d)),
                None => (reference, None),
            };
            if name.is_empty() || !name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_') {
                self.problem(pos, format!("`{path}`: `${{{reference}}}` is not a valid environment variable reference"));
                ok = false;
            } else {
                match ((self.env)(name), default) {
                    (Some(v), _) => {
                        self.redactor.add_env_value(name, &v);
                        out.push_str(&v)
                    }
                    (None, Some(d)) => out.push_str(d),
                    (None, None) => {
                        self.problem(pos, format!("environment variable `{name}` is not set (used in `{path}`)"));
                        ok = false;
                    }
                }
            }
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        ok.then_some(out)
    }

    pub fn duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let s = self.string(node, path)?;
        match parse_duration(&s) {
            Ok(d) => Some(d),
            Err(e) => {
                self.problem(node.pos, format!("`{path}`: {e}"));
                None
            }
        }
    }

    pub fn positive_duration(&mut self, node: &Node, path: &str) -> Option<Duration> {
        let d = self.duration(node, path)?;
        if d.is_zero() {
            self.problem(node.pos, format!("`{path}` must be greater than zero"));
            return None;
        }
        Some(d)
    }

    pub fn uint(&mut self, node: &Node, path: &str, min: u64, max: u64) -> Option<u64> {
        let s = self.string(node, path)?;
        match s.trim().parse::<u64>() {
            Ok(n) if n >= min && n <= max => Some(n),
            Ok(n) => {
                self.problem(node.pos, format!("`{path}` must be between {min} and {max}, found {n}"));
                None
            }
            Err(_) => {
                self.problem(node.pos, format!("`{path}` must be a whole number, found {s:?}"));
                None
            }
        }
    }

    pub fn boolean(&mut self, node: &Node, path: &str) -> Option<bool> {
        let s = self.string(node, path)?;
        match s.as_str() {
            "true" => Some(true),
            "false" => Some(false),
            _ => {
                self.problem(node.pos, format!("`{path}` must be true or false, found {s:?}"));
                None
            }
        }
    }

    pub fn list<'n>(&mut self, node: &'n Node, path: &str) -> Option<&'n [Node]> {
        match &node.kind {
            Kind::Seq(items) => Some(items),
            _ => {
                self.problem(node.pos, format!("`{path}` must be a list, found {}", node.type_name()));
                None
            }
        }
    }

    pub fn strings(&mut self, node: &Node, path: &str) -> Option<Vec<String>> {
        let items = self.list(node, path)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.string(item, &format!("{path}[{i}]")) {
                Some(s) => out.push(s),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    /// One of a fixed set of names (`parse` is the enum's parser, `names` its list).
    pub fn name<T>(&mut self, node: &Node, path: &str, parse: fn(&str) -> Option<T>, names: &str) -> Option<T> {
        let s = self.string(node, path)?;
        let v = parse(&s);
        if v.is_none() {
            let known: Vec<&str> = names.split(", ").collect();
            let hint = suggest(&s, &known).map(|h| format!("; did you mean `{h}`?")).unwrap_or_default();
            self.problem(node.pos, format!("`{path}`: unknown value `{s}`{hint} (expected one of: {names})"));
        }
        v
    }

    pub fn names<T>(&mut self, node: &Node, path: &str, parse: fn(&str) -> Option<T>, names: &str) -> Option<Vec<T>> {
        let items = self.list(node, path)?;
        let mut out = Vec::new();
        let mut ok = true;
        for (i, item) in items.iter().enumerate() {
            match self.name(item, &format!("{path}[{i}]"), parse, names) {
                Some(v) => out.push(v),
                None => ok = false,
            }
        }
        ok.then_some(out)
    }

    pub fn http_url(&mut self, node: &Node, path: &str) -> Option<url::Url> {
        let s = self.string(node, path)?;
        match url::Url::parse(&s) {
            Ok(u) if matches!(u.scheme(), "http" | "https") && u.host_str().is_some() => Some(u),
            Ok(u) => {
                self.problem(node.pos, format!("`{path}` must be an http:// or https:// URL, found scheme `{}`", u.scheme()));
                None
            }
            Err(e) => {
                self.problem(node.pos, format!("`{path}` is not a valid URL: {e}"));
                None
            }
        }
    }

    pub fn redis_url(&mut self, node: &Node, path: &str) -> Option<crate::secret::RedisUrl> {
        let raw = self.raw_scalar(node, path)?.to_string();
        // A password written into the file itself would end up in git: refuse it.
        if !raw.contains("${") && crate::secret::mask_url(&raw) != raw {
            self.problem(
                node.pos,
                format!("`{path}` contains a password; take the URL from an environment variable, e.g. \"${{{}}}\"", env_name_hint(path)),
            );
            return None;
        }
        let s = self.interpolate(&raw, node.pos, path)?;
        self.redactor.add_url(&s);
        match crate::secret::RedisUrl::parse(&s) {
            Ok(u) => Some(u),
            Err(e) => {
                self.problem(node.pos, format!("`{path}`: {e}"));
                None
            }
        }
    }
}

/// The environment variables a shell script references: `$NAME` and `${NAME...}`.
pub fn script_references(script: &str) -> Vec<String> {
    let bytes = script.as_bytes();
    let mut out = Vec::new();
    let mut i = 0;
    while i < bytes.len() {
        if bytes[i] == b'$' {
            let start = if bytes.get(i + 1) == Some(&b'{') { i + 2 } else { i + 1 };
            let mut end = start;
            while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
                end += 1;
            }
            if end > start && !bytes[start].is_ascii_digit() {
                let name = script[start..end].to_string();
                if !out.contains(&name) {
                    out.push(name);
                }
            }
            i = end.max(i + 1);
        } else {
            i += 1;
        }
    }
    out
}

fn display_path(path: &str) -> &str {
    if path.is_empty() {
        "the playbook"
    } else {
        path
    }
}

fn env_name_hint(path: &str) -> String {
    path.replace(['.', '[', ']'], "_").to_ascii_uppercase()
}

/// The closest known name, if it is close enough to be a likely typo.
pub fn suggest<'k>(word: &str, known: &[&'k str]) -> Option<&'k str> {
    known.iter().map(|k| (levenshtein(word, k), *k)).filter(|(d, k)| *d <= 2.max(k.len() / 3)).min_by_key(|(d, _)| *d).map(|(_, k)| k)
}

fn levenshtein(a: &str, b: &str) -> usize {
    let b: Vec<char> = b.chars().collect();
    let mut prev: Vec<usize> = (0..=b.len()).collect();
    for (i, ca) in a.chars().enumerate() {
        let mut cur = vec![i + 1];
        for (j, cb) in b.iter().enumerate() {
            let cost = usize::from(ca != *cb);
            cur.push((prev[j] + cost).min(prev[j + 1] + 1).min(cur[j] + 1));
        }
        prev = cur;
    }
    prev[b.len()]
}
