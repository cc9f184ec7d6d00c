//! The `hooks:` section: commands run at named points of an incident, each an argv
//! (no shell), a bounded timeout and the variables the playbook maps in.

use super::decode::Decoder;
use super::model::HookConfig;
use super::yaml::{Kind, Node};
use crate::model::HookPoint;
use crate::secret::Secret;
use std::collections::BTreeMap;
use std::time::Duration;

/// A hook's timeout unless the playbook gives one.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);
/// The longest a hook may run: a step waits for its `pre_*` hook.
pub const MAX_TIMEOUT: Duration = Duration::from_secs(600);

/// Names the orchestrator sets itself in a hook's environment.
fn reserved(name: &str) -> bool {
    name == "PATH" || name.starts_with("ORCH_")
}

pub fn hooks(node: &Node, d: &mut Decoder<'_>) -> Option<BTreeMap<HookPoint, HookConfig>> {
    let names = HookPoint::names();
    let known: Vec<&str> = names.split(", ").collect();
    let f = d.map(node, "hooks", &known)?;
    let mut out = BTreeMap::new();
    let mut ok = true;
    for point in HookPoint::ALL {
        let Some(n) = f.get(point.as_str()) else { continue };
        match hook(n, &format!("hooks.{point}"), d) {
            Some(h) => {
                out.insert(*point, h);
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}

fn hook(node: &Node, path: &str, d: &mut Decoder<'_>) -> Option<HookConfig> {
    let f = d.map(node, path, &["command", "timeout", "env"])?;
    let command = d.required(&f, "command").and_then(|n| command(n, &format!("{path}.command"), d));
    let timeout = match f.get("timeout") {
        Some(n) => d.positive_duration(n, &format!("{path}.timeout")).and_then(|t| {
            if t > MAX_TIMEOUT {
                d.problem(
                    n.pos,
                    format!(
                        "`{path}.timeout` must be at most 10m (a step waits for its hook), found {}",
                        crate::duration::format_duration(t)
                    ),
                );
                None
            } else {
                Some(t)
            }
        }),
        None => Some(DEFAULT_TIMEOUT),
    };
    let env = match f.get("env") {
        Some(n) => env(n, &format!("{path}.env"), d),
        None => Some(BTreeMap::new()),
    };
    Some(HookConfig { command: command?, timeout: timeout?, env: env? })
}

/// An argv: a non-empty list of strings, the program first. A single string is refused:
/// there is no shell to split it (write `["sh", "-c", "…"]` for one).
fn command(node: &Node, path: &str, d: &mut Decoder<'_>) -> Option<Vec<String>> {
    if let Kind::Scalar(..) = node.kind {
        d.problem(
            node.pos,
            format!("`{path}` must be a list (the program and its arguments, no shell), e.g. [\"/usr/local/bin/check\", \"--strict\"]"),
        );
        return None;
    }
    let argv = d.strings(node, path)?;
    match argv.first() {
        None => {
            d.problem(node.pos, format!("`{path}` is empty: give the program to run"));
            None
        }
        Some(program) if program.trim().is_empty() => {
            d.problem(node.pos, format!("`{path}[0]` is empty: give the program to run"));
            None
        }
        _ if argv.iter().any(|a| a.contains('\0')) => {
            d.problem(node.pos, format!("`{path}` contains a NUL character"));
            None
        }
        _ => Some(argv),
    }
}

fn env(node: &Node, path: &str, d: &mut Decoder<'_>) -> Option<BTreeMap<String, Secret>> {
    let Kind::Map(entries) = &node.kind else {
        d.problem(node.pos, format!("`{path}` must be a mapping of variable name to value, e.g. `TOKEN: ${{FREEZE_TOKEN}}`"));
        return None;
    };
    let mut out = BTreeMap::new();
    let mut ok = true;
    for (name, pos, value) in entries {
        let valid = !name.is_empty()
            && !name.starts_with(|c: char| c.is_ascii_digit())
            && name.chars().all(|c| c.is_ascii_alphanumeric() || c == '_');
        if !valid {
            d.problem(*pos, format!("`{path}.{name}` is not a valid environment variable name (letters, digits and `_`)"));
            ok = false;
            continue;
        }
        if reserved(name) {
            d.problem(*pos, format!("`{path}.{name}`: `PATH` and `ORCH_*` are set by the orchestrator"));
            ok = false;
            continue;
        }
        let Kind::Scalar(raw, _) = &value.kind else {
            d.problem(value.pos, format!("`{path}.{name}` must be a string, found {}", value.type_name()));
            ok = false;
            continue;
        };
        let from_env = raw.contains("${");
        match d.string(value, &format!("{path}.{name}")) {
            Some(v) => {
                // Mapped in from the environment: a secret, whatever its length.
                if from_env {
                    d.redactor.add_secret(&v);
                }
                out.insert(name.clone(), Secret::new(v));
            }
            None => ok = false,
        }
    }
    ok.then_some(out)
}
