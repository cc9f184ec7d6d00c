//! The `render` platform: Render's REST API. One env var is read and written by its
//! own endpoint (never the bulk `PUT .../env-vars`, which replaces every variable),
//! deploys are triggered and polled, and recent deploys are listed for reconciliation.

use super::retry::{self, Answer, Backoff, Failure};
use crate::playbook::RenderConfig;
use crate::ports::{DeployInfo, DeployPhase, Platform, PlatformError};
use crate::secret::{mask_url, Secret};
use async_trait::async_trait;
use chrono::{DateTime, Utc};
use reqwest::header::ACCEPT;
use reqwest::{Method, RequestBuilder, StatusCode};
use serde::Deserialize;
use serde_json::{json, Value};
use std::collections::HashSet;
use std::fmt;
use std::time::Duration;

/// How many recent deploys one listing asks for.
const LIST_LIMIT: u32 = 20;

pub struct RenderPlatform {
    /// `Err` when the HTTP client could not be built (TLS setup); every call reports it.
    client: Result<reqwest::Client, String>,
    /// The API root, normalised to end before `/v1`.
    base: url::Url,
    api_key: Secret,
    service_id: String,
    env_key: String,
    request_timeout: Duration,
    retry_deadline: Duration,
}

impl fmt::Debug for RenderPlatform {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RenderPlatform")
            .field("base", &self.base.as_str())
            .field("api_key", &self.api_key)
            .field("service_id", &self.service_id)
            .field("env_key", &self.env_key)
            .finish()
    }
}

impl RenderPlatform {
    pub fn new(cfg: &RenderConfig) -> Self {
        let client = crate::http::shared();
        // Accept both `https://api.render.com` and `https://api.render.com/v1`.
        let mut base = cfg.base_url.clone();
        if let Ok(mut segs) = base.path_segments_mut() {
            segs.pop_if_empty();
        }
        if base.path_segments().and_then(|mut s| s.next_back()).is_some_and(|last| last == "v1") {
            if let Ok(mut segs) = base.path_segments_mut() {
                segs.pop();
            }
        }
        RenderPlatform {
            client,
            base,
            api_key: cfg.api_key.clone(),
            service_id: cfg.service_id.clone(),
            env_key: cfg.env_key.clone(),
            request_timeout: cfg.request_timeout,
            retry_deadline: cfg.retry_deadline,
        }
    }

    /// `{base}/v1/services/{id}/{rest...}`, each segment percent-encoded.
    fn url(&self, rest: &[&str]) -> url::Url {
        let mut u = self.base.clone();
        if let Ok(mut segs) = u.path_segments_mut() {
            segs.pop_if_empty().extend(["v1", "services", self.service_id.as_str()]).extend(rest);
        }
        u
    }

    fn client(&self) -> Result<&reqwest::Client, PlatformError> {
        self.client.as_ref().map_err(|e| PlatformError::Refused(format!("cannot build an HTTP client: {e}")))
    }

    fn request(&self, client: &reqwest::Client, method: Method, url: &url::Url) -> RequestBuilder {
        client
            .request(method, url.clone())
            .bearer_auth(self.api_key.expose())
            .header(ACCEPT, "application/json")
            .timeout(self.request_timeout)
    }

    async fn send(
        &self,
        backoff: &mut Backoff,
        what: &str,
        accept: &[StatusCode],
        secrets: &[&str],
        make: impl Fn(&reqwest::Client) -> RequestBuilder,
    ) -> Result<Answer, PlatformError> {
        let client = self.client()?;
        retry::send(backoff, what, accept, secrets, || make(client)).await
    }

    async fn read_with(&self, backoff: &mut Backoff) -> Result<Option<String>, PlatformError> {
        let url = self.url(&["env-vars", &self.env_key]);
        let what = format!("read env var {}", self.env_key);
        let key = self.api_key.expose();
        let answer = self.send(backoff, &what, &[StatusCode::NOT_FOUND], &[key], |c| self.request(c, Method::GET, &url)).await?;
        if answer.status == StatusCode::NOT_FOUND {
            return Ok(None);
        }
        let v: Value = parse_json(&answer, &what, &[key])?;
        // The single-variable endpoint answers `{key, value}`; the list wraps each item in
        // `envVar`. Accept both rather than fail on a harmless shape change.
        let var = v.get("envVar").unwrap_or(&v);
        match var.get("value") {
            Some(Value::String(s)) => Ok(Some(s.clone())),
            Some(Value::Null) => Ok(None),
            _ => Err(PlatformError::Body(format!("{what}: no string `value` in {}", retry::short_body(&answer.body, &[key])))),
        }
    }

    /// The deploys Render lists now, newest first (no time filter).
    async fn list(&self, backoff: &mut Backoff) -> Result<Vec<DeployInfo>, PlatformError> {
        let mut url = self.url(&["deploys"]);
        url.query_pairs_mut().append_pair("limit", &LIST_LIMIT.to_string());
        let what = "list deploys";
        let key = self.api_key.expose();
        let answer = self.send(backoff, what, &[], &[key], |c| self.request(c, Method::GET, &url)).await?;
        let items: Vec<Value> = parse_json(&answer, what, &[key])?;
        let mut out = Vec::with_capacity(items.len());
        for item in items {
            let d = item.get("deploy").cloned().unwrap_or(item);
            out.push(deploy_info(d, what)?);
        }
        out.sort_by_key(|d| std::cmp::Reverse(d.created_at));
        Ok(out)
    }

    /// The newest listed deploy whose id is not in `known`.
    async fn new_deploy(&self, backoff: &mut Backoff, known: &HashSet<String>) -> Result<Option<DeployInfo>, PlatformError> {
        Ok(self.list(backoff).await?.into_iter().find(|d| !known.contains(&d.id)))
    }
}

#[async_trait]
impl Platform for RenderPlatform {
    fn kind(&self) -> &'static str {
        "render"
    }

    async fn read_url(&self) -> Result<Option<String>, PlatformError> {
        self.read_with(&mut Backoff::new(self.retry_deadline)).await
    }

    /// PUT of the one variable, then a read-back: the write counts only when the
    /// platform holds the value afterwards. The PUT is idempotent, so retrying it is
    /// safe; the write and the read-back share one deadline.
    async fn write_url(&self, value: &str) -> Result<(), PlatformError> {
        let mut backoff = Backoff::new(self.retry_deadline);
        let url = self.url(&["env-vars", &self.env_key]);
        let what = format!("write env var {}", self.env_key);
        let owned = retry::url_secrets(value);
        let mut secrets: Vec<&str> = owned.iter().map(String::as_str).collect();
        secrets.push(self.api_key.expose());
        let body = json!({ "value": value });
        self.send(&mut backoff, &what, &[], &secrets, |c| self.request(c, Method::PUT, &url).json(&body)).await?;
        let back = self.read_with(&mut backoff).await?;
        if back.as_deref() != Some(value) {
            return Err(PlatformError::Body(format!(
                "{what}: read-back differs from the value written ({}): the platform holds {}",
                mask_url(value),
                back.as_deref().map(|b| retry::redact(&mask_url(b), &secrets)).unwrap_or_else(|| "nothing".into())
            )));
        }
        tracing::info!(key = %self.env_key, value = %mask_url(value), "render env var written and read back");
        Ok(())
    }

    /// Triggers one deploy. A POST is not idempotent: after an answer that leaves it
    /// open whether Render created the deploy (timeout, 5xx), the deploy list is
    /// compared with the one taken before the POST, and a new deploy found there is
    /// taken as ours instead of POSTing again.
    async fn deploy(&self) -> Result<DeployInfo, PlatformError> {
        let mut backoff = Backoff::new(self.retry_deadline);
        let known: HashSet<String> = self.list(&mut backoff).await?.into_iter().map(|d| d.id).collect();
        let url = self.url(&["deploys"]);
        let what = "trigger deploy";
        let key = self.api_key.expose();
        let body = json!({ "clearCache": "do_not_clear" });
        let client = self.client()?;
        loop {
            let req = self.request(client, Method::POST, &url).json(&body);
            match retry::attempt(req, &[], &[key]).await {
                Ok(answer) => {
                    let parsed = serde_json::from_slice::<Value>(&answer.body).ok().filter(|v| v.get("id").is_some());
                    if let Some(v) = parsed {
                        let d = deploy_info(v, what)?;
                        tracing::info!(deploy = %d.id, status = %d.status, "render deploy triggered");
                        return Ok(d);
                    }
                    // `202 Queued` may come without the deploy: find it in the list.
                    return match self.new_deploy(&mut backoff, &known).await? {
                        Some(d) => Ok(d),
                        None => Err(PlatformError::Body(format!(
                            "{what}: HTTP {} without a deploy, and no new deploy is listed",
                            answer.status.as_u16()
                        ))),
                    };
                }
                Err(Failure::Refused(m)) => return Err(PlatformError::Refused(format!("{what}: {m}"))),
                Err(Failure::Transient { message, retry_after, ambiguous }) => {
                    let message = format!("{what}: {message}");
                    if ambiguous {
                        if let Some(d) = self.new_deploy(&mut backoff, &known).await? {
                            tracing::warn!(error = %message, deploy = %d.id, "deploy answer lost, but the deploy exists");
                            return Ok(d);
                        }
                    }
                    tracing::warn!(error = %message, "render deploy failed; retrying");
                    backoff.wait(retry_after, &message).await?;
                }
            }
        }
    }

    async fn deploy_status(&self, id: &str) -> Result<DeployInfo, PlatformError> {
        let mut backoff = Backoff::new(self.retry_deadline);
        let url = self.url(&["deploys", id]);
        let what = format!("read deploy {id}");
        let key = self.api_key.expose();
        let answer = self.send(&mut backoff, &what, &[], &[key], |c| self.request(c, Method::GET, &url)).await?;
        let v: Value = parse_json(&answer, &what, &[key])?;
        deploy_info(v, &what)
    }

    async fn deploys_since(&self, since: DateTime<Utc>) -> Result<Vec<DeployInfo>, PlatformError> {
        let all = self.list(&mut Backoff::new(self.retry_deadline)).await?;
        // A deploy without a creation time cannot be shown to be recent: left out.
        Ok(all.into_iter().filter(|d| d.created_at.is_some_and(|t| t >= since)).collect())
    }
}

/// Render's deploy status in the orchestrator's terms. `deactivated` means a later
/// deploy replaced this one: not a failure, the executor follows the replacement (it
/// carries the env var as it is now). Unknown words are taken as still in progress, so
/// the deploy timeout decides.
pub fn render_phase(status: &str) -> DeployPhase {
    match status {
        "live" => DeployPhase::Live,
        "build_failed" | "update_failed" | "pre_deploy_failed" => DeployPhase::Failed,
        "canceled" => DeployPhase::Canceled,
        "deactivated" => DeployPhase::Superseded,
        _ => DeployPhase::InProgress,
    }
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RawDeploy {
    id: String,
    status: String,
    created_at: Option<String>,
}

fn deploy_info(v: Value, what: &str) -> Result<DeployInfo, PlatformError> {
    let raw: RawDeploy = serde_json::from_value(v)
        .map_err(|e| PlatformError::Body(format!("{what}: not a deploy ({})", retry::redact(&e.to_string(), &[]))))?;
    let created_at = raw.created_at.as_deref().and_then(|t| DateTime::parse_from_rfc3339(t).ok()).map(|t| t.with_timezone(&Utc));
    Ok(DeployInfo { phase: render_phase(&raw.status), id: raw.id, status: raw.status, created_at })
}

fn parse_json<T: serde::de::DeserializeOwned>(answer: &Answer, what: &str, secrets: &[&str]) -> Result<T, PlatformError> {
    serde_json::from_slice(&answer.body).map_err(|e| {
        let e = retry::redact(&e.to_string(), secrets);
        PlatformError::Body(format!("{what}: cannot parse the answer ({e}): {}", retry::short_body(&answer.body, secrets)))
    })
}
