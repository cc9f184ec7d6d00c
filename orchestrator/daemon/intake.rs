//! Alert intake with group commit: the alerts of every webhook waiting at a moment are
//! decided and journaled together, in one transaction and one fsync.
//!
//! One fsync per alert under one lock capped a storm at about 1.7k requests/s and let
//! a 1,000-alert body hold up a single alert for a second. Here requests queue; one
//! task takes everything queued, decides each alert's disposition in arrival order
//! (the first firing alert with no open incident opens it; the rest attach), writes all
//! of them in one transaction, and only then answers each request: 2xx means its
//! alerts are on disk, 5xx that they are not (the whole batch, since it is one
//! transaction). A body's alerts are never split across transactions. The incident's
//! own writes keep their place in the journal's FIFO between batches.

use super::{Daemon, Disposition};
use crate::journal::{JournalError, NewAlert};
use crate::server::alerts::IncomingAlert;
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
    reply: Reply,
}

/// The queue in front of the batcher, started with the first request.
#[derive(Default)]
pub struct Queue(std::sync::OnceLock<mpsc::UnboundedSender<Job>>);

impl Daemon {
    /// Journals each alert and decides what it means. Returns only after every alert
    /// is journaled, so a 2xx answer means "recorded".
    pub(super) async fn enqueue(self: &Arc<Self>, source: &str, alerts: Vec<IncomingAlert>) -> Result<Vec<Disposition>, JournalError> {
        let tx = self.intake_queue.0.get_or_init(|| {
            let (tx, rx) = mpsc::unbounded_channel();
            tokio::spawn(batcher(Arc::downgrade(self), rx));
            tx
        });
        let (reply, answer) = oneshot::channel();
        tx.send(Job { source: source.to_string(), alerts, reply }).map_err(|_| JournalError::Corrupt("alert intake has stopped".into()))?;
        answer.await.map_err(|_| JournalError::Corrupt("alert intake dropped the request".into()))?
    }

    async fn journal_batch(self: &Arc<Self>, jobs: Vec<Job>) {
        // Under the intake lock: adoption must not see an incident this batch is
        // opening as "nobody's".
        let _guard = self.intake.lock().await;
        match self.decide(&jobs).await {
            Ok((rows, answers)) => {
                let at = Utc::now();
                match self.exec.journal.record_alerts(&rows, at).await {
                    Ok(()) => {
                        for (job, answer) in jobs.into_iter().zip(answers) {
                            let _ = job.reply.send(Ok(answer));
                        }
                    }
                    Err(e) => fail_all(jobs, &e),
                }
            }
            Err(e) => fail_all(jobs, &e),
        }
    }

    /// Each alert's disposition, in arrival order. Reads the journal once per batch,
    /// not once per alert.
    #[allow(clippy::type_complexity)]
    async fn decide(
        self: &Arc<Self>,
        jobs: &[Job],
    ) -> Result<(Vec<(NewAlert, Option<String>, &'static str)>, Vec<Vec<Disposition>>), JournalError> {
        let journal = &self.exec.journal;
        let target = self.exec.target();
        let mut incident = journal.open_incident_for(&target).await?.map(|i| i.id);
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
                        held = Some(self.held_back(&target).await?);
                    }
                    match held.flatten() {
                        Some(why) => (why, None),
                        None => {
                            let (d, id) = self.open_and_spawn(&job.source, &summary).await?;
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
                answer.push(Disposition { fingerprint, disposition: disposition.into(), incident: inc });
            }
            answers.push(answer);
        }
        Ok((rows, answers))
    }

    /// Why a firing alert with no open incident must not start one: paused, the
    /// playbook's backup already live after a recovery, or the cooldown.
    async fn held_back(&self, target: &str) -> Result<Option<&'static str>, JournalError> {
        let journal = &self.exec.journal;
        if journal.paused().await? {
            return Ok(Some("paused"));
        }
        if let Some((closed, outcome, hash)) = journal.last_closed_for(target).await? {
            let cooldown = chrono::Duration::from_std(self.exec.playbook.cooldown).unwrap_or_default();
            if outcome == "recovered" && hash == self.exec.playbook.hash && self.platform_holds_backup().await {
                // The playbook's primary is no longer what the service uses: a second
                // failover under the same playbook would flush the live Redis.
                tracing::warn!(target = %target, "alert after a completed failover: update the playbook (swap primary and backup); no automatic failover until then");
                return Ok(Some("failed_over"));
            }
            if Utc::now() - closed < cooldown {
                tracing::info!(closed = %closed, "alert during the cooldown: journaled, no automatic failover");
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
async fn batcher(daemon: Weak<Daemon>, mut rx: mpsc::UnboundedReceiver<Job>) {
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
        d.journal_batch(batch).await;
    }
}
