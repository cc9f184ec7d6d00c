//! Alert intake with group commit, one queue per target (and one for unrouted alerts):
//! the alerts of every webhook waiting at a moment for a target are decided and
//! journaled together, in one transaction and one fsync.
//!
//! One fsync per alert under one lock capped a storm at about 1.7k requests/s and let
//! a 1,000-alert body hold up a single alert for a second. Here requests queue; one
//! task per target takes everything queued, decides each alert's disposition in
//! arrival order (the first firing alert with no open incident opens it; the rest
//! attach), writes all of them in one transaction, and only then answers each request:
//! 2xx means its alerts are on disk, 5xx that they are not (the whole batch, since it
//! is one transaction). A body's alerts for one target are never split across
//! transactions. Queues per target: a storm for one target waits behind its own
//! batches, never in front of another target's first alert.

use super::{Daemon, Disposition, Lane};
use crate::journal::prelude::*;
use crate::journal::{JournalError, NewAlert};
use crate::model::IncomingAlert;
use chrono::Utc;
use std::sync::{Arc, Weak};
use tokio::sync::{mpsc, oneshot};

/// A batch stops growing at this many alerts (ten bodies of the largest size): the
/// transaction, and so every waiting request's latency, stays bounded.
pub const MAX_BATCH_ALERTS: usize = 10_000;

type Reply = oneshot::Sender<Result<Vec<Disposition>, JournalError>>;

pub(super) struct Job {
    source: String,
    alerts: Vec<IncomingAlert>,
    /// Per alert, for unrouted ones: the target it named.
    asked: Vec<Option<String>>,
    reply: Reply,
}

/// The queue in front of a batcher, started with the first request.
#[derive(Default)]
pub struct Queue(std::sync::OnceLock<mpsc::UnboundedSender<Job>>);

impl Daemon {
    /// Queues the alerts of `lane`'s target (or, with `None`, unrouted alerts) for the
    /// next batch; the receiver answers once they are journaled.
    pub(super) fn submit(
        self: &Arc<Self>,
        lane: Option<Arc<Lane>>,
        source: &str,
        alerts: Vec<IncomingAlert>,
        asked: Vec<Option<String>>,
    ) -> Result<oneshot::Receiver<Result<Vec<Disposition>, JournalError>>, JournalError> {
        let queue = match &lane {
            Some(l) => &l.queue,
            None => &self.unrouted,
        };
        let tx = queue.0.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(batcher(Arc::downgrade(self), lane.as_ref().map(Arc::downgrade), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send(Job { source: source.to_string(), alerts, asked, reply })
            .map_err(|_| JournalError::Corrupt("alert intake has stopped".into()))?;
        Ok(answer)
    }

    async fn journal_batch(self: &Arc<Self>, lane: Option<&Arc<Lane>>, jobs: Vec<Job>) {
        let decided = match lane {
            Some(lane) => {
                // Under the target's intake lock: adoption must not see an incident this
                // batch is opening as "nobody's".
                let _guard = lane.intake.lock().await;
                let decided = self.decide(lane, &jobs).await;
                self.write(jobs, decided).await;
                return;
            }
            None => Ok(self.unrouted_rows(&jobs)),
        };
        self.write(jobs, decided).await;
    }

    #[allow(clippy::type_complexity)]
    async fn write(
        &self,
        jobs: Vec<Job>,
        decided: Result<(Vec<(NewAlert, Option<String>, &'static str)>, Vec<Vec<Disposition>>), JournalError>,
    ) {
        match decided {
            Ok((rows, answers)) => match self.journal.record_alerts(&rows, Utc::now()).await {
                Ok(()) => {
                    for (job, answer) in jobs.into_iter().zip(answers) {
                        let _ = job.reply.send(Ok(answer));
                    }
                }
                Err(e) => fail_all(jobs, &e),
            },
            Err(e) => fail_all(jobs, &e),
        }
    }

    /// Unrouted alerts: journaled with the target they named (or none), attached to
    /// nothing.
    #[allow(clippy::type_complexity)]
    fn unrouted_rows(&self, jobs: &[Job]) -> (Vec<(NewAlert, Option<String>, &'static str)>, Vec<Vec<Disposition>>) {
        let mut rows = Vec::new();
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut answer = Vec::with_capacity(job.alerts.len());
            for (a, asked) in job.alerts.iter().zip(&job.asked) {
                let fingerprint = self.redactor.redact(&a.fingerprint);
                // Redacted whole, then cut: a cut first could leave part of a secret.
                let target = asked.as_deref().map(|t| crate::redact::truncate(&self.redactor.redact(t), 200)).unwrap_or_default();
                rows.push((
                    NewAlert {
                        source: job.source.clone(),
                        fingerprint: fingerprint.clone(),
                        status: if a.firing { "firing" } else { "resolved" }.into(),
                        target,
                        summary: self.redactor.redact(&a.summary),
                    },
                    None,
                    "unrouted",
                ));
                answer.push(Disposition { fingerprint, disposition: "unrouted".into(), target: None, incident: None });
            }
            answers.push(answer);
        }
        (rows, answers)
    }

    /// Each alert's disposition, in arrival order. Reads the journal once per batch,
    /// not once per alert.
    #[allow(clippy::type_complexity)]
    async fn decide(
        self: &Arc<Self>,
        lane: &Arc<Lane>,
        jobs: &[Job],
    ) -> Result<(Vec<(NewAlert, Option<String>, &'static str)>, Vec<Vec<Disposition>>), JournalError> {
        let target = lane.target.name.clone();
        let mut incident = self.journal.open_incident_for(&target).await?.map(|i| i.id);
        // Why a firing alert with no open incident starts nothing, decided once.
        let mut held: Option<Option<&'static str>> = None;
        let mut rows = Vec::new();
        let mut answers = Vec::with_capacity(jobs.len());
        for job in jobs {
            let mut answer = Vec::with_capacity(job.alerts.len());
            for a in &job.alerts {
                // Alert text comes from outside; it may quote a connection string.
                let summary = self.redactor.redact(&a.summary);
                let fingerprint = self.redactor.redact(&a.fingerprint);
                let (disposition, inc): (&'static str, Option<String>) = if !a.firing {
                    ("resolved", incident.clone())
                } else if incident.is_some() {
                    ("attached", incident.clone())
                } else {
                    if held.is_none() {
                        held = Some(self.held_back(lane).await?);
                    }
                    match held.flatten() {
                        Some(why) => (why, None),
                        None => {
                            let (d, id) = self.open_and_spawn(lane, &job.source, &summary).await?;
                            incident = id.clone();
                            (d, id)
                        }
                    }
                };
                let status = if a.firing { "firing" } else { "resolved" };
                rows.push((
                    NewAlert {
                        source: job.source.clone(),
                        fingerprint: fingerprint.clone(),
                        status: status.into(),
                        target: target.clone(),
                        summary,
                    },
                    inc.clone(),
                    disposition,
                ));
                answer.push(Disposition { fingerprint, disposition: disposition.into(), target: Some(target.clone()), incident: inc });
            }
            answers.push(answer);
        }
        Ok((rows, answers))
    }

    /// Why a firing alert with no open incident must not start one: paused, automatic
    /// failover disarmed after a failover (or the platform not where the topology
    /// says), or the cooldown.
    async fn held_back(&self, lane: &Lane) -> Result<Option<&'static str>, JournalError> {
        let target = &lane.target.name;
        if self.journal.paused_for(target).await? {
            return Ok(Some("paused"));
        }
        let topology = self.journal.topology(target).await?;
        if !topology.armed {
            tracing::warn!(target = %target, reason = %topology.reason, "alert while automatic failover is disarmed: journaled, no failover");
            return Ok(Some("failed_over"));
        }
        if self.platform_holds_standby(lane, &topology).await {
            // The service is not where the topology says (moved by hand?): a switch to
            // the "standby" would flush the Redis production uses. Disarm, journaled,
            // so `status` and the metrics say so, until a person checks and arms.
            tracing::warn!(target = %target, active = %topology.active, "alert while the platform holds the standby's URL: no automatic failover; check `orchestrator status`");
            let change = crate::topology::Change {
                kind: crate::topology::ChangeKind::Disarmed,
                active: topology.active,
                moved: false,
                incident: topology.incident.clone(),
                armed: false,
                needs_person: true,
                standby_ok_since: None,
                reason: format!(
                    "disarmed: the platform holds the {}'s URL although the journal says the {} is active (moved outside the orchestrator?); check, then `orchestrator arm {target} --active SIDE`",
                    topology.standby(),
                    topology.active
                ),
                actor: "orchestrator".into(),
            };
            if let Err(e) = self.journal.change_topology(target, &topology, &change, false, Utc::now()).await {
                tracing::warn!(target = %target, error = %e, "could not journal the disarm");
            }
            return Ok(Some("failed_over"));
        }
        // A shadow incident changed nothing: it holds back only other shadow incidents
        // (an alert storm in observe mode opens one, not one per alert), never a real one.
        let observing = lane.target.playbook.mode == crate::model::Mode::Observe;
        let last = if observing { self.journal.last_closed_for(target).await? } else { self.journal.last_real_closed_for(target).await? };
        if let Some((closed, _, _)) = last {
            let cooldown = chrono::Duration::from_std(lane.target.playbook.cooldown).unwrap_or_default();
            if Utc::now() - closed < cooldown {
                tracing::info!(target = %target, closed = %closed, "alert during the cooldown: journaled, no automatic failover");
                return Ok(Some("cooldown"));
            }
        }
        Ok(None)
    }
}

fn fail_all(jobs: Vec<Job>, e: &JournalError) {
    for job in jobs {
        let copy = if e.is_retryable() { JournalError::Busy } else { JournalError::Corrupt(e.to_string()) };
        let _ = job.reply.send(Err(copy));
    }
}

/// Takes everything queued, journals it as one batch, repeats. Ends with the daemon.
/// Weak references both: the lane holds this batcher's sender, and the batcher must
/// end when the daemon (and so the lane) is gone.
async fn batcher(daemon: Weak<Daemon>, lane: Option<Weak<Lane>>, mut rx: mpsc::UnboundedReceiver<Job>) {
    while let Some(first) = rx.recv().await {
        let mut n = first.alerts.len();
        let mut batch = vec![first];
        while n < MAX_BATCH_ALERTS {
            match rx.try_recv() {
                Ok(job) => {
                    n += job.alerts.len();
                    batch.push(job);
                }
                Err(_) => break,
            }
        }
        let Some(d) = daemon.upgrade() else { return };
        let lane = match &lane {
            Some(weak) => match weak.upgrade() {
                Some(l) => Some(l),
                None => return,
            },
            None => None,
        };
        d.journal_batch(lane.as_ref(), batch).await;
    }
}
