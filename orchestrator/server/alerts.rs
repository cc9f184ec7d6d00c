//! Alert payloads: Grafana alerting, Prometheus Alertmanager and a generic JSON body,
//! parsed into one shape. Hostile bodies get a clear error, never a panic.

use serde::Deserialize;
use serde_json::Value;
use std::collections::BTreeMap;

/// At most this many alerts in one body; more is refused (a storm is not a reason to
/// journal an unbounded batch in one request).
pub const MAX_ALERTS: usize = 1000;

pub use crate::model::IncomingAlert;

/// Labels kept per alert (for routing): at most this many, each name and value cut.
const MAX_LABELS: usize = 64;

fn labels_of(map: &BTreeMap<String, Value>) -> BTreeMap<String, String> {
    map.iter().filter_map(|(k, v)| Some((truncate(k, 100), truncate(v.as_str()?, 200)))).take(MAX_LABELS).collect()
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum AlertError {
    #[error("body is not valid JSON: {0}")]
    Json(String),
    #[error("body has {0} alerts; at most {MAX_ALERTS} are accepted per request")]
    TooMany(usize),
    #[error("{0}")]
    Shape(String),
}

#[derive(Deserialize)]
struct Group {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    alerts: Vec<Value>,
    #[serde(rename = "groupKey", default)]
    group_key: Option<String>,
}

#[derive(Deserialize)]
struct OneAlert {
    #[serde(default)]
    status: Option<String>,
    #[serde(default)]
    labels: BTreeMap<String, Value>,
    #[serde(default)]
    annotations: BTreeMap<String, Value>,
    #[serde(default)]
    fingerprint: Option<String>,
    #[serde(rename = "startsAt", default)]
    starts_at: Option<String>,
}

fn parse_value(body: &[u8]) -> Result<Value, AlertError> {
    // serde_json refuses nesting deeper than 128 levels, so deep bodies error out here.
    serde_json::from_slice(body).map_err(|e| AlertError::Json(e.to_string()))
}

fn text(v: Option<&Value>) -> Option<String> {
    v.and_then(|v| v.as_str().map(str::to_string))
}

/// Grafana's and Alertmanager's webhook bodies share the Alertmanager shape: a group
/// with `status` and `alerts[]` (`labels`, `annotations`, `startsAt`, `fingerprint`).
pub fn parse_group(body: &[u8]) -> Result<Vec<IncomingAlert>, AlertError> {
    let v = parse_value(body)?;
    let group: Group = serde_json::from_value(v).map_err(|e| AlertError::Shape(format!("not an alert group: {e}")))?;
    if group.alerts.len() > MAX_ALERTS {
        return Err(AlertError::TooMany(group.alerts.len()));
    }
    if group.alerts.is_empty() {
        return Err(AlertError::Shape("alert group has no alerts".into()));
    }
    let mut out = Vec::with_capacity(group.alerts.len());
    for (i, raw) in group.alerts.into_iter().enumerate() {
        let a: OneAlert = serde_json::from_value(raw).map_err(|e| AlertError::Shape(format!("alerts[{i}]: {e}")))?;
        let status = a.status.or_else(|| group.status.clone()).unwrap_or_else(|| "firing".into());
        let name = text(a.labels.get("alertname")).unwrap_or_else(|| "alert".into());
        let summary = text(a.annotations.get("summary")).or_else(|| text(a.annotations.get("description"))).unwrap_or_default();
        let fingerprint =
            a.fingerprint.or_else(|| group.group_key.clone()).unwrap_or_else(|| format!("{name}@{}", a.starts_at.unwrap_or_default()));
        out.push(IncomingAlert {
            firing: status != "resolved",
            fingerprint: truncate(&fingerprint, 200),
            summary: truncate(&if summary.is_empty() { name } else { format!("{name}: {summary}") }, 500),
            labels: labels_of(&a.labels),
        });
    }
    Ok(out)
}

/// `{"status": "firing"|"resolved", "summary": "...", "fingerprint": "...", "target":
/// "...", "labels": {...}}`; only `summary` is required (`target` is the label of that name).
pub fn parse_generic(body: &[u8]) -> Result<Vec<IncomingAlert>, AlertError> {
    let v = parse_value(body)?;
    let obj = v.as_object().ok_or_else(|| AlertError::Shape("generic alert must be a JSON object".into()))?;
    let summary = text(obj.get("summary")).ok_or_else(|| AlertError::Shape("generic alert needs a string `summary`".into()))?;
    let status = text(obj.get("status")).unwrap_or_else(|| "firing".into());
    if status != "firing" && status != "resolved" {
        return Err(AlertError::Shape(format!("`status` must be firing or resolved, not {status:?}")));
    }
    let fingerprint = text(obj.get("fingerprint")).unwrap_or_else(|| format!("generic:{summary}"));
    let mut labels = match obj.get("labels") {
        None | Some(Value::Null) => BTreeMap::new(),
        Some(Value::Object(m)) => labels_of(&m.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
        Some(_) => return Err(AlertError::Shape("`labels` must be an object of strings".into())),
    };
    if let Some(t) = text(obj.get("target")) {
        labels.insert("target".into(), truncate(&t, 200));
    }
    Ok(vec![IncomingAlert {
        firing: status == "firing",
        fingerprint: truncate(&fingerprint, 200),
        summary: truncate(&summary, 500),
        labels,
    }])
}

fn truncate(s: &str, max: usize) -> String {
    if s.len() <= max {
        return s.to_string();
    }
    let mut end = max;
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    format!("{}…", &s[..end])
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn alertmanager_body() {
        let body = br#"{"version":"4","groupKey":"{}:{alertname=\"RedisDown\"}","status":"firing","receiver":"orch",
            "alerts":[{"status":"firing","labels":{"alertname":"RedisDown"},"annotations":{"summary":"ping fails"},
            "startsAt":"2026-11-26T10:00:00Z","fingerprint":"abc123"}]}"#;
        let a = parse_group(body).unwrap();
        let labels = [("alertname".to_string(), "RedisDown".to_string())].into();
        assert_eq!(a, vec![IncomingAlert { firing: true, fingerprint: "abc123".into(), summary: "RedisDown: ping fails".into(), labels }]);
    }

    #[test]
    fn resolved_and_missing_fingerprint() {
        let body = br#"{"status":"resolved","alerts":[{"labels":{"alertname":"X"},"startsAt":"t"}]}"#;
        let a = parse_group(body).unwrap();
        assert!(!a[0].firing);
        assert_eq!(a[0].fingerprint, "X@t");
    }

    #[test]
    fn hostile_bodies_are_errors() {
        assert!(matches!(parse_group(b"{not json"), Err(AlertError::Json(_))));
        assert!(matches!(parse_group(&[0xff, 0xfe]), Err(AlertError::Json(_))));
        let deep = "[".repeat(10_000);
        assert!(matches!(parse_group(deep.as_bytes()), Err(AlertError::Json(_))));
        let many = format!("{{\"alerts\":[{}]}}", vec!["{}"; MAX_ALERTS + 1].join(","));
        assert_eq!(parse_group(many.as_bytes()), Err(AlertError::TooMany(MAX_ALERTS + 1)));
        assert!(matches!(parse_group(b"{\"alerts\":[]}"), Err(AlertError::Shape(_))));
        assert!(matches!(parse_generic(b"[1,2]"), Err(AlertError::Shape(_))));
        assert!(matches!(parse_generic(b"{\"summary\":\"x\",\"status\":\"maybe\"}"), Err(AlertError::Shape(_))));
    }
}
