//! Which of the `serve` instances sharing a PostgreSQL journal acts: the lease loop
//! (take the lease when it is free, renew it while leading, step down before it can
//! have expired on the database's clock), and the term every fenced write and every
//! side effect is checked against.
//!
//! Timing (the relation Patroni documents for `ttl`, `loop_wait`, `retry_timeout`):
//! - `ttl`: how long a lease lives on the database's clock without renewal; a
//!   follower takes over at most `ttl` after the leader's last renewal.
//! - `renew_every`: how often the leader renews (and a follower tries to take over).
//! - `retry_timeout`: how long one renewal (or takeover) attempt may take.
//! - the leader's local deadline is the start of its last successful renewal plus
//!   `ttl − margin` (margin = max(ttl/10, 200 ms)): it stops acting then, before its
//!   lease can have expired on the database's clock (the renewal was executed after
//!   it was sent, so the database's expiry is later still).
//! - `renew_every + 2 × retry_timeout + margin ≤ ttl`: one failed renewal never costs
//!   the leadership.

use crate::journal::leader::{LeaderStore, Term};
use crate::journal::Journal;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;
use tokio::sync::watch;
use tokio::time::Instant;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct LeaseSettings {
    pub ttl: Duration,
    pub renew_every: Duration,
    pub retry_timeout: Duration,
    /// How long a new leader waits before reconciling an effect that was in flight
    /// under an earlier leadership: that leadership's last request, sent just before
    /// its deadline, may still be landing on the platform. At least the platform's
    /// request timeout.
    pub takeover_grace: Duration,
}

impl Default for LeaseSettings {
    fn default() -> Self {
        LeaseSettings {
            ttl: Duration::from_secs(15),
            renew_every: Duration::from_secs(3),
            retry_timeout: Duration::from_secs(4),
            takeover_grace: Duration::from_secs(10),
        }
    }
}

impl LeaseSettings {
    pub fn margin(&self) -> Duration {
        (self.ttl / 10).max(Duration::from_millis(200))
    }

    /// Refuses settings under which one slow renewal would cost the leadership, or the
    /// local deadline would not come before the lease's expiry.
    pub fn validate(&self) -> Result<(), String> {
        let need = self.renew_every + self.retry_timeout * 2 + self.margin();
        if self.ttl.is_zero() || self.renew_every.is_zero() || self.retry_timeout.is_zero() {
            return Err("--leader-ttl, --leader-renew and --leader-retry-timeout must be above zero".into());
        }
        if need > self.ttl {
            return Err(format!(
                "--leader-ttl {:?} is too short: it must be at least --leader-renew ({:?}) + 2 × --leader-retry-timeout ({:?}) + margin ({:?}) = {:?}",
                self.ttl,
                self.renew_every,
                self.retry_timeout,
                self.margin(),
                need
            ));
        }
        Ok(())
    }
}

/// What this instance is, for `/leader`, `/healthz`, `/metrics` and `status`.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct RoleView {
    pub leader: bool,
    pub term: Option<i64>,
    /// Why this instance is not acting, or what it last stepped down for.
    pub note: String,
}

pub struct Leadership {
    journal: Journal,
    pub settings: LeaseSettings,
    pub holder: String,
    address: String,
    current: RwLock<Option<Arc<Term>>>,
    changed: watch::Sender<Option<i64>>,
    note: Mutex<String>,
    /// Terms led and step-downs, for `/metrics`.
    pub stepped_down: std::sync::atomic::AtomicU64,
    /// Take the lease at once from a holder that was a process of this host and is
    /// gone (the CLI after a crashed `run`), rather than after its lease expires.
    /// `serve` leaves it off: its peers run on other hosts, where only the lease tells.
    take_from_dead_here: std::sync::atomic::AtomicBool,
    /// Set by [`Leadership::resign_and_stop`]: the lease loop ends, taking nothing more.
    stopped: std::sync::atomic::AtomicBool,
    stop: tokio::sync::Notify,
}

impl Leadership {
    pub fn new(journal: Journal, settings: LeaseSettings, holder: &str, address: &str) -> Arc<Leadership> {
        Arc::new(Leadership {
            journal,
            settings,
            holder: holder.to_string(),
            address: address.to_string(),
            current: RwLock::new(None),
            changed: watch::channel(None).0,
            note: Mutex::new("starting: has not taken the lease yet".into()),
            stepped_down: Default::default(),
            take_from_dead_here: Default::default(),
            stopped: Default::default(),
            stop: tokio::sync::Notify::new(),
        })
    }

    /// See the field: for the CLI, whose previous run on this host may have crashed.
    pub fn taking_from_dead_here(self: Arc<Self>) -> Arc<Self> {
        self.take_from_dead_here.store(true, std::sync::atomic::Ordering::Relaxed);
        self
    }

    /// This instance's term while it leads and its local deadline has not passed.
    pub fn term(&self) -> Option<Arc<Term>> {
        self.current.read().unwrap_or_else(|e| e.into_inner()).clone().filter(|t| t.locally_valid())
    }

    /// The term to fence writes with: the current one, or (not leading) one that is
    /// never valid, so that a write made while following is refused, not unfenced.
    pub fn fence(&self) -> Arc<Term> {
        self.term().unwrap_or_else(|| Arc::new(Term::new(0, &self.holder, Instant::now() - Duration::from_millis(1))))
    }

    /// `journal` as this instance may write with it what only the leader writes:
    /// fenced on [`Leadership::fence`].
    pub fn fenced(&self, journal: &Journal) -> Journal {
        journal.fenced_by(self.fence())
    }

    pub fn is_leader(&self) -> bool {
        self.term().is_some()
    }

    /// Changes of leadership: `Some(term)` on taking it, `None` on stepping down.
    pub fn subscribe(&self) -> watch::Receiver<Option<i64>> {
        self.changed.subscribe()
    }

    pub fn view(&self) -> RoleView {
        let term = self.term();
        RoleView { leader: term.is_some(), term: term.map(|t| t.term), note: self.note.lock().unwrap_or_else(|e| e.into_inner()).clone() }
    }

    fn set_note(&self, note: String) {
        *self.note.lock().unwrap_or_else(|e| e.into_inner()) = note;
    }

    fn step_down(&self, why: &str) {
        let was = self.current.write().unwrap_or_else(|e| e.into_inner()).take();
        if let Some(t) = was {
            t.revoke();
            self.stepped_down.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            tracing::error!(
                term = t.term,
                why,
                "stepping down: no longer acting as leader (no watch loop, no incident driven, no side effect)"
            );
            self.set_note(format!("stepped down from term {}: {why}", t.term));
            self.changed.send_replace(None);
        }
    }

    /// Takes the lease now if it is free: the term, or `None` when another holds it.
    pub async fn try_lead(&self) -> Result<Option<i64>, crate::journal::JournalError> {
        let s = self.settings;
        let started = Instant::now();
        let timed_out = |_| crate::journal::JournalError::Unavailable("taking the leader lease timed out".into());
        let mut got = tokio::time::timeout(s.retry_timeout, self.journal.acquire_lease(&self.holder, &self.address, s.ttl))
            .await
            .map_err(timed_out)??;
        if got.is_none() && self.take_from_dead_here.load(std::sync::atomic::Ordering::Relaxed) {
            // A holder that was a process of this host and is gone (SIGKILLed) cannot
            // act: take over now rather than after its lease.
            if let Some(row) = self.journal.leader().await? {
                if row.holder != self.holder && crate::journal::holder_is_dead_here(&row.holder) {
                    got = tokio::time::timeout(
                        s.retry_timeout,
                        self.journal.take_lease_from_dead(&self.holder, &self.address, &row.holder, s.ttl),
                    )
                    .await
                    .map_err(timed_out)??;
                    if let Some(term) = got {
                        tracing::info!(term, dead = %row.holder, "took the leader lease from a process of this host that is gone");
                    }
                }
            }
        }
        if let Some(term) = got {
            let t = Arc::new(Term::new(term, &self.holder, started + s.ttl - s.margin()));
            *self.current.write().unwrap_or_else(|e| e.into_inner()) = Some(t);
            tracing::info!(term, holder = %self.holder, "took the leader lease: acting (watch loops, incidents)");
            self.set_note(format!("leader since term {term}"));
            self.changed.send_replace(Some(term));
        }
        Ok(got)
    }

    /// Ends the lease loop and gives the lease up: call it once every runner has
    /// stopped (after `serve` drained, after the CLI's run), so no effect of ours is in
    /// flight when another instance takes over at once.
    pub async fn resign_and_stop(&self) {
        self.stopped.store(true, std::sync::atomic::Ordering::SeqCst);
        self.stop.notify_waiters();
        self.resign().await;
    }

    /// Gives the lease up now, so another instance need not wait out the ttl.
    async fn resign(&self) {
        let held = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
        if let Some(t) = held {
            let _ = tokio::time::timeout(self.settings.retry_timeout, self.journal.resign_lease(t.term, &self.holder)).await;
            self.step_down("finished (lease given up)");
        }
    }

    /// The lease loop, until [`Leadership::resign_and_stop`]. After shutdown was
    /// requested it keeps renewing a lease it holds (runners are still reaching a
    /// resumable point; giving the lease up now would let another instance reconcile
    /// an effect still in flight here) but takes none.
    pub async fn run(self: Arc<Self>, shutdown: watch::Receiver<bool>) {
        let s = self.settings;
        loop {
            if self.stopped.load(std::sync::atomic::Ordering::SeqCst) {
                return;
            }
            let held = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
            let started = Instant::now();
            match held {
                Some(t) => {
                    match tokio::time::timeout(s.retry_timeout, self.journal.renew_lease(t.term, &self.holder, s.ttl)).await {
                        Ok(Ok(true)) => t.extend_to(started + s.ttl - s.margin()),
                        Ok(Ok(false)) => self.step_down("the lease was no longer ours on the database (expired, or taken)"),
                        Ok(Err(e)) => tracing::warn!(term = t.term, error = %e, "could not renew the leader lease; retrying"),
                        Err(_) => tracing::warn!(term = t.term, "renewing the leader lease timed out; retrying"),
                    }
                    if !t.locally_valid() {
                        self.step_down("could not renew the lease before its local deadline (database unreachable or too slow)");
                    }
                }
                None if *shutdown.borrow() => {}
                None => match self.try_lead().await {
                    Ok(Some(_)) => {}
                    Ok(None) => {
                        let who = match self.journal.leader().await {
                            Ok(Some(l)) => format!("following: term {} is held by {} ({})", l.term, l.holder, l.address),
                            _ => "following: the lease is held by another instance".into(),
                        };
                        self.set_note(who);
                    }
                    Err(e) => self.set_note(format!("following: cannot reach the journal to take the lease ({e})")),
                },
            }
            // While leading, never sleep past the local deadline unchecked.
            let mut wait = s.renew_every;
            let held = self.current.read().unwrap_or_else(|e| e.into_inner()).clone();
            if let Some(t) = held {
                wait = wait.min(t.deadline().saturating_duration_since(Instant::now()));
            }
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                _ = self.stop.notified() => {}
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_hold_the_inequality_and_short_ttls_are_refused() {
        assert!(LeaseSettings::default().validate().is_ok());
        let s = LeaseSettings {
            ttl: Duration::from_secs(3),
            renew_every: Duration::from_millis(500),
            retry_timeout: Duration::from_secs(1),
            ..Default::default()
        };
        assert!(s.validate().is_ok());
        let bad = LeaseSettings {
            ttl: Duration::from_secs(5),
            renew_every: Duration::from_secs(3),
            retry_timeout: Duration::from_secs(2),
            ..Default::default()
        };
        let e = bad.validate().unwrap_err();
        assert!(e.contains("too short"), "{e}");
    }
}
