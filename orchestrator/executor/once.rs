//! Side effects exactly once: journal the intent under an idempotency key, act, journal
//! the outcome. After a crash, an intent without an outcome is reconciled by reading
//! the world before anything is re-issued.

use super::{ExecError, Executor};
use serde_json::{json, Value};
use std::future::Future;

/// What reading the world says about an effect whose intent was journaled without an
/// outcome.
pub enum Seen {
    /// It happened (this is its result): do not act again.
    Done(Value),
    /// It did not happen: act.
    NotDone,
    /// The world could not be read: acting might do it twice, so the effect fails
    /// instead (the state's failure path takes over).
    Unknown(String),
}

impl From<Option<Value>> for Seen {
    fn from(v: Option<Value>) -> Self {
        match v {
            Some(v) => Seen::Done(v),
            None => Seen::NotDone,
        }
    }
}

/// What an effect ended with: `ok` and its result as journaled.
#[derive(Debug, Clone)]
pub struct Done {
    pub ok: bool,
    pub result: Value,
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
    pub(super) async fn once(
        &self,
        incident: &str,
        key: &str,
        kind: &str,
        intent: Value,
        reconcile: impl Future<Output = Seen>,
        act: impl Future<Output = Result<Value, Value>>,
    ) -> Result<Done, ExecError> {
        self.once_as(kind, incident, key, kind, intent, reconcile, act).await
    }

    /// [`Executor::once`] with its own crash-point name (`intent:<point>`,
    /// `outcome:<point>`), for effects of one kind that drills must tell apart (a
    /// deploy retry, the restart for stalled workers).
    #[allow(clippy::too_many_arguments)]
    pub(super) async fn once_as(
        &self,
        point: &str,
        incident: &str,
        key: &str,
        kind: &str,
        intent: Value,
        reconcile: impl Future<Output = Seen>,
        act: impl Future<Output = Result<Value, Value>>,
    ) -> Result<Done, ExecError> {
        let existing = self.journal_retry(|| self.journal.effect_intent(incident, key, kind, &intent, self.now())).await?;
        if let Some(row) = existing {
            if let Some(outcome) = &row.outcome {
                return Ok(Done { ok: outcome != "failed", result: row.result_json() });
            }
            match reconcile.await {
                Seen::Done(result) => {
                    self.journal_retry(|| self.journal.effect_outcome(key, "reconciled", &result, self.now())).await?;
                    tracing::info!(incident, key, "effect reconciled from the world; not re-issued");
                    return Ok(Done { ok: true, result });
                }
                Seen::Unknown(why) => {
                    let result =
                        error_value(format!("could not tell whether the interrupted attempt took effect ({why}); not repeating it"));
                    self.journal_retry(|| self.journal.effect_outcome(key, "failed", &result, self.now())).await?;
                    return Ok(Done { ok: false, result });
                }
                Seen::NotDone => tracing::info!(incident, key, "effect intent without outcome and not visible in the world; issuing it"),
            }
        }
        self.crash_point(&format!("intent:{point}"));
        let (ok, result) = match act.await {
            Ok(v) => (true, v),
            Err(v) => (false, v),
        };
        self.crash_point(&format!("outcome:{point}"));
        let outcome = if ok { "ok" } else { "failed" };
        self.journal_retry(|| self.journal.effect_outcome(key, outcome, &result, self.now())).await?;
        Ok(Done { ok, result })
    }
}

pub fn error_value(e: impl std::fmt::Display) -> Value {
    json!({ "error": e.to_string() })
}
