//! The real client of the service's HTTP API (the runbook's endpoints): health, queue
//! metrics, error logs, and the trigger endpoint for synthetic jobs.

use crate::playbook::ServiceSection;
use crate::ports::{Health, LogEntry, QueueMetrics, ServiceApi, ServiceError, SubmittedJob};
use crate::secret::{scrub, Secret};
use async_trait::async_trait;
use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::Value;

/// Bodies larger than this are cut before parsing or quoting in an error.
const MAX_BODY: usize = 1 << 20;

pub struct HttpService {
    client: reqwest::Client,
    base: url::Url,
    api_key: Secret,
    cfg: ServiceSection,
}

impl HttpService {
    pub fn new(cfg: &ServiceSection) -> Self {
        // Shared by every target; it never follows a redirect (another origin would get
        // X-API-Key). The request timeout is set on each request.
        let client = crate::http::shared().expect("the HTTP client builds");
        HttpService { client, base: cfg.base_url.clone(), api_key: cfg.api_key.clone(), cfg: cfg.clone() }
    }

    fn url(&self, path: &str) -> String {
        format!("{}{}", self.base.as_str().trim_end_matches('/'), path)
    }

    fn map_err(&self, e: reqwest::Error) -> ServiceError {
        if e.is_timeout() {
            ServiceError::Timeout(self.cfg.request_timeout)
        } else {
            // The whole chain: "error sending request" alone does not say why.
            ServiceError::Unreachable(scrub(&crate::platform::retry::error_chain(e), &[self.api_key.expose()]))
        }
    }

    /// GET returning (status, JSON body). Non-JSON bodies are an error.
    async fn get_json(&self, path: &str, query: &[(&str, String)], auth: bool) -> Result<(u16, Value), ServiceError> {
        let mut req = self.client.get(self.url(path)).query(query).timeout(self.cfg.request_timeout);
        if auth {
            req = req.header("X-API-Key", self.api_key.expose());
        }
        let resp = req.send().await.map_err(|e| self.map_err(e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.map_err(e))?;
        let bytes = &bytes[..bytes.len().min(MAX_BODY)];
        match serde_json::from_slice::<Value>(bytes) {
            Ok(v) => Ok((status, v)),
            Err(_) => Err(ServiceError::Status { status, body: self.snippet(bytes) }),
        }
    }

    fn snippet(&self, bytes: &[u8]) -> String {
        let text = String::from_utf8_lossy(&bytes[..bytes.len().min(300)]).to_string();
        scrub(&text, &[self.api_key.expose()])
    }
}

fn u(v: &Value, key: &str) -> u64 {
    v.get(key).and_then(Value::as_u64).unwrap_or(0)
}

/// Reads the runbook's health JSON: `info.redis` when up, `error.redis` when down.
pub fn parse_health(http_status: u16, v: &Value) -> Health {
    let status = v.get("status").and_then(Value::as_str).unwrap_or("unknown").to_string();
    let redis = v.pointer("/error/redis").or_else(|| v.pointer("/info/redis")).or_else(|| v.pointer("/details/redis"));
    let (redis_status, redis_message) = match redis {
        Some(r) => (
            r.get("status").and_then(Value::as_str).unwrap_or("missing").to_string(),
            r.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
        ),
        None => ("missing".to_string(), String::new()),
    };
    Health { http_status, status, redis_status, redis_message }
}

pub fn parse_metrics(v: &Value) -> QueueMetrics {
    let mut queues: Vec<(String, u64, u64)> = v
        .get("queues")
        .and_then(Value::as_object)
        .map(|m| m.iter().map(|(k, q)| (k.clone(), u(q, "waiting"), u(q, "active"))).collect())
        .unwrap_or_default();
    queues.sort();
    QueueMetrics {
        connection_status: v.get("connection_status").and_then(Value::as_str).unwrap_or("unknown").to_string(),
        total_jobs: u(v, "total_jobs"),
        active_jobs: u(v, "active_jobs"),
        waiting_jobs: u(v, "waiting_jobs"),
        completed_jobs: u(v, "completed_jobs"),
        failed_jobs: u(v, "failed_jobs"),
        queues,
    }
}

#[async_trait]
impl ServiceApi for HttpService {
    async fn health(&self) -> Result<Health, ServiceError> {
        // A 503 with the runbook's error body is an answer, not a failure of the probe.
        let (status, v) = self.get_json(&self.cfg.health_path, &[], false).await?;
        Ok(parse_health(status, &v))
    }

    async fn queue_metrics(&self) -> Result<QueueMetrics, ServiceError> {
        let (status, v) = self.get_json(&self.cfg.queue_metrics_path, &[], true).await?;
        if status >= 400 {
            return Err(ServiceError::Status { status, body: self.snippet(v.to_string().as_bytes()) });
        }
        Ok(parse_metrics(&v))
    }

    async fn error_logs(&self, since: DateTime<Utc>) -> Result<Vec<LogEntry>, ServiceError> {
        let query = [
            ("level", "error".to_string()),
            ("search", "redis".to_string()),
            ("limit", "50".to_string()),
            ("since", since.to_rfc3339_opts(SecondsFormat::Millis, true)),
        ];
        let (status, v) = self.get_json(&self.cfg.logs_path, &query, true).await?;
        if status >= 400 {
            return Err(ServiceError::Status { status, body: self.snippet(v.to_string().as_bytes()) });
        }
        let data = v.get("data").and_then(Value::as_array).ok_or_else(|| ServiceError::Body("logs without a `data` list".into()))?;
        let entries = data
            .iter()
            .map(|e| LogEntry {
                timestamp: e.get("timestamp").and_then(Value::as_str).unwrap_or("").to_string(),
                level: e.get("level").and_then(Value::as_str).unwrap_or("").to_string(),
                message: e.get("message").and_then(Value::as_str).unwrap_or("").to_string(),
            })
            // The service may ignore `since`; filter again here. Entries without a
            // parseable time are kept: better a false "errors present" than a miss.
            .filter(|e| crate::journal::parse_ts(&e.timestamp).map(|t| t >= since).unwrap_or(true))
            .collect();
        Ok(entries)
    }

    async fn submit_job(&self, payload: &Value) -> Result<SubmittedJob, ServiceError> {
        let resp = self
            .client
            .post(self.url(&self.cfg.trigger_path))
            .header("X-API-Key", self.api_key.expose())
            .json(payload)
            .send()
            .await
            .map_err(|e| self.map_err(e))?;
        let status = resp.status().as_u16();
        let bytes = resp.bytes().await.map_err(|e| self.map_err(e))?;
        if status >= 400 {
            return Err(ServiceError::Status { status, body: self.snippet(&bytes) });
        }
        let v: Value = serde_json::from_slice(&bytes[..bytes.len().min(MAX_BODY)]).unwrap_or(Value::Null);
        let id = v.get("jobId").or_else(|| v.get("job_id")).or_else(|| v.get("id"));
        let job_id = id.and_then(|i| i.as_str().map(str::to_string).or_else(|| i.as_u64().map(|n| n.to_string())));
        let queue = v.get("queue").and_then(Value::as_str).map(str::to_string);
        Ok(SubmittedJob { job_id, queue })
    }
}

/// Whether a log message is a Redis connection problem by the playbook's patterns.
pub fn is_redis_error(message: &str, patterns: &[String]) -> bool {
    let lower = message.to_ascii_lowercase();
    patterns.iter().any(|p| lower.contains(&p.to_ascii_lowercase()))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn reads_both_health_shapes() {
        let up = json!({"status":"ok","info":{"redis":{"status":"up","message":"Redis is accessible and responsive"}}});
        let h = parse_health(200, &up);
        assert_eq!((h.status.as_str(), h.redis_status.as_str()), ("ok", "up"));
        let down = json!({"status":"error","error":{"redis":{"status":"down","message":"Redis ping exceeded timeout (1s)"}}});
        let h = parse_health(503, &down);
        assert_eq!((h.status.as_str(), h.redis_status.as_str()), ("error", "down"));
        assert!(h.redis_message.contains("exceeded"));
    }

    #[test]
    fn reads_runbook_metrics() {
        let m = parse_metrics(&json!({"connection_status":"connected","total_jobs":1250,"active_jobs":3,"waiting_jobs":15,
            "completed_jobs":1200,"failed_jobs":2,"queues":{"critical":{"waiting":0,"active":1},"default":{"waiting":10,"active":2}}}));
        assert_eq!(m.active_jobs, 3);
        assert_eq!(m.queues[0], ("critical".into(), 0, 1));
    }
}
