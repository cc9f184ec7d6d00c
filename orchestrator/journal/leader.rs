//! The journal's leadership concern: among the instances sharing one PostgreSQL
//! journal, which one leads (runs the watch loops and drives incidents), for how long,
//! and under which term.
//!
//! The lease is a row (`leader`), judged by the database's clock (`clock_timestamp()`,
//! never a host's): taken when it has expired, renewed while it lives, and each new
//! leadership takes `term + 1`. Not an advisory lock: a pooled connection can be
//! recycled under a held session lock, PgBouncer strands them, and a partitioned
//! holder keeps one until TCP keepalive fires.
//!
//! Fencing: every fenced write ([`check_in`], called inside the write transaction
//! after the journal's write lock) reads the row and refuses unless this instance's
//! term is current and unexpired. Taking the lease also takes the write lock, so a
//! takeover and a fenced write are ordered: a write either commits before the new term
//! exists or sees it and is refused.

use super::{Backend, Journal, JournalError, Result};
use async_trait::async_trait;
use sqlx::Row;
use std::time::Duration;
use tokio::time::Instant;

/// One leadership of this instance: its term, and the local deadline after which it
/// must stop acting whatever the database says (its lease may have expired on the
/// database's clock by then; see `daemon/leadership.rs` for how it is set).
#[derive(Debug)]
pub struct Term {
    pub term: i64,
    pub holder: String,
    deadline: std::sync::Mutex<Instant>,
}

impl Term {
    pub fn new(term: i64, holder: &str, deadline: Instant) -> Term {
        Term { term, holder: holder.to_string(), deadline: std::sync::Mutex::new(deadline) }
    }

    /// Moves the local deadline (after a successful renewal). Never moves it back.
    pub fn extend_to(&self, deadline: Instant) {
        let mut d = self.deadline.lock().unwrap_or_else(|e| e.into_inner());
        if deadline > *d {
            *d = deadline;
        }
    }

    /// Ends this leadership locally at once (stepping down).
    pub fn revoke(&self) {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner()) = Instant::now() - Duration::from_millis(1);
    }

    pub fn deadline(&self) -> Instant {
        *self.deadline.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Whether the local deadline has not passed.
    pub fn locally_valid(&self) -> bool {
        Instant::now() < self.deadline()
    }
}

impl Term {
    /// Resolves once the local deadline has passed (or the term was revoked). Every
    /// poll reads the clock itself rather than trusting a timer to have fired: after
    /// a SIGSTOP or a VM pause, the first poll after waking sees the deadline gone.
    pub fn lost(&self) -> Lost<'_> {
        Lost { term: self, sleep: Box::pin(tokio::time::sleep_until(self.deadline())) }
    }
}

/// See [`Term::lost`]. Race it (first, `biased`) against a side effect in flight.
pub struct Lost<'a> {
    term: &'a Term,
    sleep: std::pin::Pin<Box<tokio::time::Sleep>>,
}

impl std::future::Future for Lost<'_> {
    type Output = ();

    fn poll(mut self: std::pin::Pin<&mut Self>, cx: &mut std::task::Context<'_>) -> std::task::Poll<()> {
        use std::task::Poll;
        if !self.term.locally_valid() {
            return Poll::Ready(());
        }
        // A renewal moves the deadline: follow it.
        let deadline = self.term.deadline();
        if self.sleep.deadline() != deadline {
            self.sleep.as_mut().reset(deadline);
        }
        match self.sleep.as_mut().poll(cx) {
            Poll::Ready(()) if !self.term.locally_valid() => Poll::Ready(()),
            Poll::Ready(()) => {
                // Extended meanwhile: wait for the new deadline.
                cx.waker().wake_by_ref();
                Poll::Pending
            }
            Poll::Pending => Poll::Pending,
        }
    }
}

/// Inside a write transaction: refuses (`NotLeader`) unless `term` is still valid
/// locally and is the current, unexpired leadership on the database's clock.
pub(super) async fn check_in(tx: &mut sqlx::AnyConnection, term: &Term) -> Result<()> {
    if term.locally_valid() && current_on_db(tx, term).await? {
        Ok(())
    } else {
        Err(JournalError::NotLeader(term.term))
    }
}

/// Whether the lease row is still `term`'s, unexpired on the database's clock.
async fn current_on_db(conn: &mut sqlx::AnyConnection, term: &Term) -> Result<bool> {
    Ok(sqlx::query("SELECT 1 FROM leader WHERE term = $1 AND holder = $2 AND expires_at > clock_timestamp()")
        .bind(term.term)
        .bind(&term.holder)
        .fetch_optional(&mut *conn)
        .await?
        .is_some())
}

/// The lease row as the database sees it now.
#[derive(Debug, Clone, serde::Serialize)]
pub struct LeaderRow {
    pub term: i64,
    pub holder: String,
    /// Where the leader serves HTTP (what followers point people to).
    pub address: String,
    pub acquired_at: String,
    /// Milliseconds until the lease expires on the database's clock (negative: expired).
    pub expires_in_ms: i64,
}

/// Leadership among instances sharing a journal. Only PostgreSQL journals have it; on
/// SQLite (one machine) every method answers that there is nothing to lead.
///
/// A backend must guarantee:
/// - Time is the database's clock, never the caller's.
/// - [`acquire`](LeaderStore::acquire) succeeds only when no lease is valid, and then
///   with a term greater than every term before; it is ordered with fenced writes
///   (takes the journal's write lock).
/// - [`renew`](LeaderStore::renew) extends only a valid lease of the same term and
///   holder; an expired lease is never revived.
#[async_trait]
pub trait LeaderStore: Send + Sync {
    /// Takes the lease for `ttl` if it is free (expired or never taken): the new term.
    async fn acquire_lease(&self, holder: &str, address: &str, ttl: Duration) -> Result<Option<i64>>;

    /// Takes the lease from `dead`, a holder that is a process of this host's PID
    /// namespace that no longer exists (see [`super::holder_is_dead_here`]): it cannot
    /// write or act any more, so waiting out its lease would only delay the takeover.
    /// Compare-and-swap on the holder; the new term.
    async fn take_lease_from_dead(&self, holder: &str, address: &str, dead: &str, ttl: Duration) -> Result<Option<i64>>;

    /// Extends this holder's lease of `term` by `ttl` from now: false if it is not
    /// valid any more (expired, or taken by another).
    async fn renew_lease(&self, term: i64, holder: &str, ttl: Duration) -> Result<bool>;

    /// Gives the lease up at once (a clean shutdown), so a follower need not wait.
    async fn resign_lease(&self, term: i64, holder: &str) -> Result<()>;

    /// The current lease row, if any was ever taken.
    async fn leader(&self) -> Result<Option<LeaderRow>>;

    /// Outside a write: whether `term` is still this holder's valid lease (the check
    /// just before a side effect on the platform, which cannot reject a stale leader).
    async fn still_leader(&self, term: &Term) -> Result<bool>;
}

fn millis(d: Duration) -> i64 {
    d.as_millis().min(i64::MAX as u128) as i64
}

#[async_trait]
impl LeaderStore for Journal {
    async fn acquire_lease(&self, holder: &str, address: &str, ttl: Duration) -> Result<Option<i64>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "INSERT INTO leader (singleton, term, holder, address, acquired_at, renewed_at, expires_at)
             VALUES (TRUE, 1, $1, $2, clock_timestamp(), clock_timestamp(), clock_timestamp() + CAST($3 AS DOUBLE PRECISION) * INTERVAL '1 millisecond')
             ON CONFLICT (singleton) DO UPDATE SET term = leader.term + 1, holder = excluded.holder, address = excluded.address,
               acquired_at = clock_timestamp(), renewed_at = clock_timestamp(),
               expires_at = clock_timestamp() + CAST($3 AS DOUBLE PRECISION) * INTERVAL '1 millisecond'
             WHERE leader.expires_at <= clock_timestamp()
             RETURNING term",
        )
        .bind(holder)
        .bind(self.redactor.redact(address))
        .bind(millis(ttl))
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn take_lease_from_dead(&self, holder: &str, address: &str, dead: &str, ttl: Duration) -> Result<Option<i64>> {
        if self.backend != Backend::Postgres || !super::holder_is_dead_here(dead) {
            return Ok(None);
        }
        let mut tx = self.begin_write().await?;
        let row = sqlx::query(
            "UPDATE leader SET term = term + 1, holder = $1, address = $2, acquired_at = clock_timestamp(), renewed_at = clock_timestamp(),
               expires_at = clock_timestamp() + CAST($3 AS DOUBLE PRECISION) * INTERVAL '1 millisecond'
             WHERE holder = $4
             RETURNING term",
        )
        .bind(holder)
        .bind(self.redactor.redact(address))
        .bind(millis(ttl))
        .bind(dead)
        .fetch_optional(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(row.map(|r| r.get(0)))
    }

    async fn renew_lease(&self, term: i64, holder: &str, ttl: Duration) -> Result<bool> {
        if self.backend != Backend::Postgres {
            return Ok(false);
        }
        // No write lock: a renewal changes no term, and the row lock orders it with a
        // concurrent takeover (which re-reads the row once the renewal commits).
        let renewed = sqlx::query(
            "UPDATE leader SET renewed_at = clock_timestamp(),
               expires_at = clock_timestamp() + CAST($3 AS DOUBLE PRECISION) * INTERVAL '1 millisecond'
             WHERE term = $1 AND holder = $2 AND expires_at > clock_timestamp()",
        )
        .bind(term)
        .bind(holder)
        .bind(millis(ttl))
        .execute(&self.pool)
        .await?;
        Ok(renewed.rows_affected() == 1)
    }

    async fn resign_lease(&self, term: i64, holder: &str) -> Result<()> {
        if self.backend != Backend::Postgres {
            return Ok(());
        }
        sqlx::query("UPDATE leader SET expires_at = clock_timestamp() WHERE term = $1 AND holder = $2 AND expires_at > clock_timestamp()")
            .bind(term)
            .bind(holder)
            .execute(&self.pool)
            .await?;
        Ok(())
    }

    async fn leader(&self) -> Result<Option<LeaderRow>> {
        if self.backend != Backend::Postgres {
            return Ok(None);
        }
        let row = sqlx::query(
            "SELECT term, holder, address,
               to_char(acquired_at AT TIME ZONE 'UTC', 'YYYY-MM-DD\"T\"HH24:MI:SS.MS\"Z\"'),
               CAST(EXTRACT(EPOCH FROM (expires_at - clock_timestamp())) * 1000 AS BIGINT)
             FROM leader",
        )
        .fetch_optional(&self.pool)
        .await?;
        Ok(row.map(|r| LeaderRow { term: r.get(0), holder: r.get(1), address: r.get(2), acquired_at: r.get(3), expires_in_ms: r.get(4) }))
    }

    async fn still_leader(&self, term: &Term) -> Result<bool> {
        if !term.locally_valid() {
            return Ok(false);
        }
        let mut conn = self.pool.acquire().await?;
        Ok(current_on_db(&mut conn, term).await? && term.locally_valid())
    }
}
