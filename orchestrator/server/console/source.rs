//! What the web console reads and does, as one narrow trait ([`ConsoleSource`]), and its
//! implementation for `serve`'s fleet ([`FleetSource`]: every target of the daemon,
//! its topology from the journal). The console's handlers see only the trait.

use crate::daemon::Daemon;
use crate::journal::prelude::*;
use crate::journal::{CommandKind, IncidentRow, Journal, JournalError};
use crate::model::{FlushMode, Step};
use crate::playbook::{PlatformConfig, Playbook};
use crate::ports::FlushPlan;
use crate::redact::Redactor;
use crate::server::auth::AuthConfig;
use async_trait::async_trait;
use serde::Serialize;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// One target (a playbook): where production's Redis is, whether failover is armed.
#[derive(Debug, Clone, Serialize)]
pub struct TargetView {
    /// The playbook's name.
    pub name: String,
    /// What incidents and alerts are grouped by (`host:port/db`, never a password).
    pub endpoint: String,
    /// `primary` or `backup`: which of the playbook's Redis servers production uses.
    pub active_role: &'static str,
    /// The Redis in use and the one standing by, as masked URLs.
    pub active: String,
    pub standby: String,
    /// Whether an alert (or the watch loop) starts a failover now.
    pub armed: bool,
    /// Why, or why not, in one sentence.
    pub armed_reason: String,
    pub paused: bool,
    /// The pause in force for this target (its own, else everyone's), with its
    /// window's end when timed.
    pub pause: Option<crate::journal::Pause>,
    pub watch_loop: bool,
    pub open_incident: Option<IncidentBrief>,
    pub last_closed: Option<IncidentBrief>,
    /// Steps behind an approval gate, and who may approve them.
    pub gated_steps: Vec<&'static str>,
    pub approvers: Vec<String>,
}

#[derive(Debug, Clone, Serialize)]
pub struct IncidentBrief {
    pub id: String,
    pub state: String,
    pub outcome: Option<String>,
    pub opened_at: String,
    pub closed_at: Option<String>,
}

impl From<&IncidentRow> for IncidentBrief {
    fn from(i: &IncidentRow) -> Self {
        IncidentBrief {
            id: i.id.clone(),
            state: i.state.clone(),
            outcome: i.outcome.clone(),
            opened_at: i.opened_at.clone(),
            closed_at: i.closed_at.clone(),
        }
    }
}

/// What an approval gate will let happen: the steps from the gated one on.
#[derive(Debug, Clone, Serialize)]
pub struct GatePlan {
    pub ttl_ms: u64,
    pub steps: Vec<PlannedStep>,
}

#[derive(Debug, Clone, Serialize)]
pub struct PlannedStep {
    pub step: &'static str,
    /// Behind its own gate too (approved separately).
    pub gated: bool,
    /// One sentence: what it does, to what.
    pub what: String,
    pub flush: Option<FlushPreview>,
}

#[derive(Debug, Clone, Serialize)]
pub struct FlushPreview {
    pub mode: &'static str,
    pub patterns: Vec<String>,
    /// The Redis it deletes from, masked.
    pub endpoint: String,
    /// Keys matching the patterns now (a dry run: SCAN, count, delete nothing), or
    /// `None` when the count did not finish in time or failed (`note` says why).
    pub estimate: Option<u64>,
    pub per_pattern: Vec<(String, u64)>,
    pub note: String,
}

/// A command's verdict as the machine gave it (or not yet).
#[derive(Debug, Clone, Serialize)]
pub struct CommandVerdict {
    pub command: i64,
    /// `None`: journaled, not applied yet (the runner applies it at its next poll).
    pub accepted: Option<bool>,
    pub result: String,
    pub by: String,
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("no incident with id {0:?}")]
    NotFound(String),
    /// The command cannot apply (the incident ended; another target's incident).
    #[error("{0}")]
    Conflict(String),
    #[error(transparent)]
    Journal(#[from] JournalError),
}

impl SourceError {
    fn from_journal(e: JournalError) -> Self {
        match e {
            JournalError::UnknownIncident(id) => SourceError::NotFound(id),
            other => SourceError::Journal(other),
        }
    }
}

#[async_trait]
pub trait ConsoleSource: Send + Sync + 'static {
    /// The journal the console reads (timelines, incident lists, pause state).
    fn journal(&self) -> &Journal;
    /// Every text that reaches a page passes through it.
    fn redactor(&self) -> &Redactor;
    /// Who may sign in, with which role.
    fn auth(&self) -> &AuthConfig;
    /// The console's public address (a playbook's `console_url`), for links.
    fn public_url(&self) -> Option<String>;
    async fn targets(&self) -> Result<Vec<TargetView>, JournalError>;
    /// What approving `step` of `incident` will let happen.
    async fn gate_plan(&self, incident: &IncidentRow, step: Step) -> GatePlan;
    /// Journals a person's command (via `web`), hands it to the incident's runner and
    /// waits a little for the machine's verdict.
    async fn command(&self, id: &str, kind: CommandKind, who: &str, comment: &str) -> Result<CommandVerdict, SourceError>;
    /// Pauses (with an optional window's end and reason) or unpauses every target.
    async fn set_paused(
        &self,
        paused: bool,
        until: Option<chrono::DateTime<chrono::Utc>>,
        reason: Option<&str>,
        who: &str,
    ) -> Result<(), JournalError>;
}

/// `serve`'s fleet: the daemon's targets and the HTTP side's auth.
pub struct FleetSource {
    d: Arc<Daemon>,
    auth: AuthConfig,
    /// Flush estimates by incident, with when they were counted: a page refresh must
    /// not become a SCAN of the whole keyspace.
    estimates: Mutex<HashMap<String, (tokio::time::Instant, FlushPreview)>>,
}

/// A counted estimate is reused for this long.
const ESTIMATE_FRESH: Duration = Duration::from_secs(15);
/// Counting keys gives up after this (a large keyspace): the page says so.
const ESTIMATE_DEADLINE: Duration = Duration::from_secs(3);

impl FleetSource {
    pub fn new(d: Arc<Daemon>, auth: AuthConfig) -> Self {
        FleetSource { d, auth, estimates: Mutex::new(HashMap::new()) }
    }

    /// The incident's target and its playbook oriented as the incident runs (its
    /// `primary` is the endpoint it moves away from).
    async fn oriented(&self, incident: &IncidentRow) -> Option<(Arc<crate::fleet::Target>, Playbook)> {
        let target = self.d.target_of(incident)?;
        let from = self.d.journal.machine(&incident.id).await.map(|m| m.incident().from).unwrap_or_default();
        let pb = target.oriented(from);
        Some((target, pb))
    }

    async fn flush_preview(&self, incident: &str, target: &crate::fleet::Target, pb: &Playbook) -> FlushPreview {
        if let Some((at, p)) = self.estimates.lock().expect("estimates").get(incident) {
            if at.elapsed() < ESTIMATE_FRESH {
                return p.clone();
            }
        }
        let f = &pb.flush;
        let mut preview = FlushPreview {
            mode: f.mode.as_str(),
            patterns: if f.mode == FlushMode::Flushdb {
                vec!["* (every key of the database: FLUSHDB mode)".into()]
            } else {
                f.patterns.clone()
            },
            endpoint: pb.redis.backup.masked().to_string(),
            estimate: None,
            per_pattern: vec![],
            note: String::new(),
        };
        if f.mode == FlushMode::None {
            preview.estimate = Some(0);
            preview.note = "flush mode none: nothing is deleted".into();
            return preview;
        }
        let plan = FlushPlan {
            patterns: if f.mode == FlushMode::Flushdb { vec![] } else { f.patterns.clone() },
            flushdb: f.mode == FlushMode::Flushdb,
            batch: f.batch,
            max_latency: f.max_latency,
            dry_run: true,
        };
        match tokio::time::timeout(ESTIMATE_DEADLINE, target.ports.redis.flush(&pb.redis.backup, &plan, &|_| {})).await {
            Ok(Ok(report)) => {
                preview.estimate = Some(report.deleted);
                preview.per_pattern = report.per_pattern;
                preview.note = "counted now by a dry run (SCAN, nothing deleted); keys written meanwhile are deleted too".into();
            }
            Ok(Err(e)) => preview.note = format!("could not count: {e}"),
            Err(_) => preview.note = format!("counting took longer than {} s; the keyspace is large", ESTIMATE_DEADLINE.as_secs()),
        }
        let mut cache = self.estimates.lock().expect("estimates");
        cache.retain(|_, (at, _)| at.elapsed() < ESTIMATE_FRESH);
        cache.insert(incident.to_string(), (tokio::time::Instant::now(), preview.clone()));
        preview
    }

    fn deploy_sentence(pb: &Playbook) -> String {
        match &pb.platform {
            PlatformConfig::Render(r) => {
                let n = pb.thresholds.deploy_retries;
                format!(
                    "start one deploy of Render service {} ({}), polled until live (a failed build is retried {})",
                    r.service_id,
                    r.base_url.host_str().unwrap_or(""),
                    match n {
                        0 => "never".to_string(),
                        1 => "once".to_string(),
                        n => format!("up to {n} times"),
                    }
                )
            }
            PlatformConfig::Command(c) => format!("run the playbook's deploy command: {}", c.deploy),
            PlatformConfig::EnvFile(e) => format!("run the restart command: {}", e.restart),
        }
    }

    fn switch_sentence(pb: &Playbook) -> String {
        let (what, key) = match &pb.platform {
            PlatformConfig::Render(r) => (format!("Render service {}", r.service_id), r.env_key.clone()),
            PlatformConfig::Command(_) => ("the platform (switch command)".to_string(), "the Redis URL".to_string()),
            PlatformConfig::EnvFile(e) => (e.path.display().to_string(), e.key.clone()),
        };
        format!("set {key} on {what} from {} to {}, read back and compared", pb.redis.primary.masked(), pb.redis.backup.masked())
    }
}

#[async_trait]
impl ConsoleSource for FleetSource {
    fn journal(&self) -> &Journal {
        &self.d.journal
    }

    fn redactor(&self) -> &Redactor {
        &self.d.redactor
    }

    fn auth(&self) -> &AuthConfig {
        &self.auth
    }

    fn public_url(&self) -> Option<String> {
        self.d.registry.iter().find_map(|t| t.playbook.console_url.as_ref()).map(|u| u.as_str().trim_end_matches('/').to_string())
    }

    async fn targets(&self) -> Result<Vec<TargetView>, JournalError> {
        let journal = self.journal();
        let paused = journal.pause_state().await?;
        let global = journal.paused_at(chrono::Utc::now()).await?;
        let mut out = Vec::new();
        for t in self.d.registry.iter() {
            let pb = &t.playbook;
            let st = crate::daemon::TargetStatus::read(journal, pb).await?;
            let open = journal.open_incident_for(&pb.name).await?;
            let (last, _) = journal
                .incident_page(&crate::journal::IncidentFilter {
                    target: Some(pb.name.clone()),
                    outcome: None,
                    limit: 5,
                    ..Default::default()
                })
                .await?;
            let last_closed = last.iter().find(|i| i.closed_at.is_some());
            let topo = journal.topology(&pb.name).await?;
            // Sentences without times: the page shows each time in the reader's zone.
            let (armed, armed_reason) = if st.paused {
                let by = if global { paused.clone().unwrap_or_default().1 } else { "a pause of this target".into() };
                let by = match st.pause.as_ref().and_then(|p| p.until) {
                    Some(u) => format!("{by}, a maintenance window until {}", crate::journal::ts(u)),
                    None => by,
                };
                (false, format!("automatic failover is paused ({by}): alerts are journaled and start nothing"))
            } else if !topo.armed {
                (false, topo.reason.clone())
            } else if let Some(o) = &open {
                (true, format!("incident {} is running ({})", o.id, o.state))
            } else if pb.watch.enabled {
                (true, "armed: the watch loop and alerts open an incident".into())
            } else {
                (true, "armed: alerts open an incident (watch loop off)".into())
            };
            out.push(TargetView {
                name: pb.name.clone(),
                endpoint: st.active_endpoint.clone(),
                active_role: topo.active.as_str(),
                active: pb.endpoint(topo.active).masked().to_string(),
                standby: pb.endpoint(topo.standby()).masked().to_string(),
                armed,
                armed_reason,
                paused: st.paused,
                pause: st.pause.clone(),
                watch_loop: pb.watch.enabled,
                open_incident: open.as_ref().map(IncidentBrief::from),
                last_closed: last_closed.map(IncidentBrief::from),
                gated_steps: pb.approvals.steps.iter().map(|s| s.as_str()).collect(),
                approvers: pb.approvals.approvers.clone(),
            });
        }
        Ok(out)
    }

    async fn gate_plan(&self, incident: &IncidentRow, step: Step) -> GatePlan {
        let Some((target, pb)) = self.oriented(incident).await else {
            return GatePlan { ttl_ms: 0, steps: vec![] };
        };
        let order = [Step::Switch, Step::Flush, Step::Deploy];
        let from = order.iter().position(|s| *s == step).unwrap_or(0);
        let mut steps = Vec::new();
        for s in &order[from..] {
            let gated = *s != step && pb.approvals.steps.contains(s);
            let (what, flush) = match s {
                Step::Switch => (Self::switch_sentence(&pb), None),
                Step::Flush => {
                    let p = self.flush_preview(&incident.id, &target, &pb).await;
                    let n = p.estimate.map(|n| format!("about {n} keys")).unwrap_or_else(|| "an unknown number of keys".into());
                    (format!("delete {n} matching {} on {} (SCAN + UNLINK, never KEYS)", p.patterns.join(", "), p.endpoint), Some(p))
                }
                Step::Deploy => (Self::deploy_sentence(&pb), None),
            };
            steps.push(PlannedStep { step: s.as_str(), gated, what, flush });
        }
        GatePlan { ttl_ms: pb.approvals.ttl.as_millis() as u64, steps }
    }

    async fn command(&self, id: &str, kind: CommandKind, who: &str, comment: &str) -> Result<CommandVerdict, SourceError> {
        let journal = self.journal();
        let inc = journal.incident(id).await.map_err(SourceError::from_journal)?;
        if let Some(o) = &inc.outcome {
            return Err(SourceError::Conflict(format!("incident {id} has already ended ({o})")));
        }
        if self.d.target_of(&inc).is_none() {
            return Err(SourceError::Conflict(format!("incident {id} belongs to target {}, which this serve does not run", inc.target)));
        }
        // The same journaled-command path as the HTTP API and the CLI: the runner
        // driving the incident applies it, and the machine judges it.
        let cmd = journal.add_command(id, kind, who, comment, "web", chrono::Utc::now()).await?;
        if let Err(e) = self.d.spawn(id).await {
            tracing::warn!(incident = %id, error = %e, "could not start the incident's runner; the adopt loop retries");
        }
        let deadline = tokio::time::Instant::now() + Duration::from_secs(5);
        while tokio::time::Instant::now() < deadline {
            if let Ok(Some(row)) = journal.command(cmd).await {
                if let Some(accepted) = row.accepted {
                    return Ok(CommandVerdict {
                        command: cmd,
                        accepted: Some(accepted),
                        result: row.result.unwrap_or_default(),
                        by: who.into(),
                    });
                }
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
        Ok(CommandVerdict { command: cmd, accepted: None, result: "journaled; not applied yet".into(), by: who.into() })
    }

    async fn set_paused(
        &self,
        paused: bool,
        until: Option<chrono::DateTime<chrono::Utc>>,
        reason: Option<&str>,
        who: &str,
    ) -> Result<(), JournalError> {
        // The settings table has no `via` column: the channel is part of who set it.
        let by = format!("{who} via web");
        if paused {
            self.journal().set_pause(None, until, reason, &by, None, chrono::Utc::now()).await
        } else {
            self.journal().set_paused(None, false, &by, None, chrono::Utc::now()).await
        }
    }
}
