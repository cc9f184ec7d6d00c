//! Side effects exactly once: journal the intent under an idempotency key, act, journal
//! the outcome. After a crash, an intent without an outcome is reconciled by reading
//! the world before anything is re-issued.

use super::{ExecError, Executor};
use crate::journal::prelude::*;
use serde::de::DeserializeOwned;
use serde::{Deserialize, Serialize};
use serde_json::{json, Value};
use std::future::Future;

/// What reading the world says about an effect whose intent was journaled without an
/// outcome.
pub enum Seen<T> {
    /// It happened (this is its result): do not act again.
    Done(T),
    /// It did not happen: act.
    NotDone,
    /// The world could not be read: acting might do it twice, so the effect fails
    /// instead (the state's failure path takes over).
    Unknown(String),
}

impl<T> From<Option<T>> for Seen<T> {
    fn from(v: Option<T>) -> Self {
        match v {
            Some(v) => Seen::Done(v),
            None => Seen::NotDone,
        }
    }
}

/// Why an effect failed, as journaled in its result.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failed {
    pub error: String,
    /// The outside system refused it outright (a 4xx): it certainly did not happen.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub refused: bool,
}

impl Failed {
    pub fn new(e: impl std::fmt::Display) -> Failed {
        Failed { error: e.to_string(), refused: false }
    }
}

/// What an effect ended with: its typed result, or why it failed. Read back from the
/// journal typed, never by string index into JSON.
#[derive(Debug, Clone)]
pub enum Done<T> {
    Ok(T),
    Failed(Failed),
}

impl Executor {
    /// Runs `act` at most once per `key`, across crashes.
    ///
    /// - outcome journaled: returns it; nothing runs.
    /// - intent journaled, no outcome (we crashed mid-effect): `reconcile` reads the
    ///   world; [`Seen::Done`] means the effect already happened and is recorded as
    ///   `reconciled`; [`Seen::NotDone`] means it did not, and `act` runs; with
    ///   [`Seen::Unknown`] the effect is recorded as failed rather than risk it twice.
    /// - nothing journaled: the intent is written first, then `act` runs.
    ///
    /// Futures are lazy, so the ones not needed are never polled.
    pub(super) async fn once<T: Serialize + DeserializeOwned>(
        &self,
        incident: &str,
        key: &str,
        kind: &str,
        intent: Value,
        reconcile: impl Future<Output = Seen<T>>,
        act: impl Future<Output = Result<T, Failed>>,
    ) -> Result<Done<T>, ExecError> {
        self.once_as(kind, incident, key, kind, intent, reconcile, act).await
    }

    /// [`Executor::once`] with its own crash-point name (`intent:<point>`,
    /// `outcome:<point>`), for effects of one kind that drills must tell apart (a
    /// deploy retry, the restart for stalled workers).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn once_as<T: Serialize + DeserializeOwned>(
        &self,
        point: &str,
        incident: &str,
        key: &str,
        kind: &str,
        intent: Value,
        reconcile: impl Future<Output = Seen<T>>,
        act: impl Future<Output = Result<T, Failed>>,
    ) -> Result<Done<T>, ExecError> {
        let existing = self.journal_retry(|| self.journal.effect_intent(incident, key, kind, &intent, self.now())).await?;
        if let Some(row) = existing {
            if let Some(outcome) = &row.outcome {
                return Ok(read_back(outcome, row.result_json()));
            }
            match reconcile.await {
                Seen::Done(result) => {
                    let value = to_value(&result);
                    self.journal_retry(|| self.journal.effect_outcome(key, "reconciled", &value, self.now())).await?;
                    tracing::info!(incident, key, "effect reconciled from the world; not re-issued");
                    return Ok(Done::Ok(result));
                }
                Seen::Unknown(why) => {
                    let failed =
                        Failed::new(format!("could not tell whether the interrupted attempt took effect ({why}); not repeating it"));
                    let value = to_value(&failed);
                    self.journal_retry(|| self.journal.effect_outcome(key, "failed", &value, self.now())).await?;
                    return Ok(Done::Failed(failed));
                }
                Seen::NotDone => tracing::info!(incident, key, "effect intent without outcome and not visible in the world; issuing it"),
            }
        }
        self.crash_point(&format!("intent:{point}"));
        // The platform and Redis cannot reject a stale leader: the term is checked once
        // more right before the effect (the intent's own write checked it too).
        self.still_leading(incident).await?;
        // A leadership that ends while the effect runs (a flush's batches, a deploy's
        // wait, a hook) ends the effect: its future is dropped at once, leaving the
        // intent without an outcome for the new leader to reconcile from the world.
        let result = match self.journal.term().cloned() {
            Some(term) => tokio::select! {
                biased;
                _ = term.lost() => {
                    tracing::error!(incident, key, term = term.term, "the leadership ended during the effect: stopped it; the new leader reconciles it");
                    return Err(ExecError::Journal(crate::journal::JournalError::NotLeader(term.term)));
                }
                r = act => r,
            },
            None => act.await,
        };
        self.crash_point(&format!("outcome:{point}"));
        let (outcome, value, done) = match result {
            Ok(v) => ("ok", to_value(&v), Done::Ok(v)),
            Err(f) => ("failed", to_value(&f), Done::Failed(f)),
        };
        self.journal_retry(|| self.journal.effect_outcome(key, outcome, &value, self.now())).await?;
        Ok(done)
    }
}

fn to_value(v: &impl Serialize) -> Value {
    serde_json::to_value(v).unwrap_or(Value::Null)
}

/// A journaled outcome, typed. A result that no longer reads as `T` (written by an
/// older version, or edited) is a failure that says so, never a guess.
fn read_back<T: DeserializeOwned>(outcome: &str, result: Value) -> Done<T> {
    if outcome == "failed" {
        return Done::Failed(serde_json::from_value(result).unwrap_or_else(|_| Failed::new("unknown (unreadable failure record)")));
    }
    match serde_json::from_value(result) {
        Ok(v) => Done::Ok(v),
        Err(e) => Done::Failed(Failed::new(format!("the journaled result of this effect is unreadable ({e}); not repeating it"))),
    }
}

/// A failure's journaled shape, for effects journaled outside [`Executor::once`].
pub fn error_value(e: impl std::fmt::Display) -> Value {
    json!({ "error": e.to_string() })
}
