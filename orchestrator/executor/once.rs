//! Side effects exactly once: journal the intent under an idempotency key, act, journal
//! the outcome. After a crash, an intent without an outcome is reconciled by reading
//! the world before anything is re-issued.

use super::{ExecError, Executor};
use serde_json::{json, Value};
use std::future::Future;

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
    ///   world; `Some(result)` means the effect already happened and is recorded as
    ///   `reconciled`; `None` means it did not, and `act` runs.
    /// - nothing journaled: the intent is written first, then `act` runs.
    ///
    /// Futures are lazy, so the ones not needed are never polled.
    pub(super) async fn once(
        &self,
        incident: &str,
        key: &str,
        kind: &str,
        intent: Value,
        reconcile: impl Future<Output = Option<Value>>,
        act: impl Future<Output = Result<Value, Value>>,
    ) -> Result<Done, ExecError> {
        let existing = self.journal_retry(|| self.journal.effect_intent(incident, key, kind, &intent, self.now())).await?;
        if let Some(row) = existing {
            if let Some(outcome) = &row.outcome {
                return Ok(Done { ok: outcome != "failed", result: row.result_json() });
            }
            if let Some(result) = reconcile.await {
                self.journal_retry(|| self.journal.effect_outcome(key, "reconciled", &result, self.now())).await?;
                tracing::info!(incident, key, "effect reconciled from the world; not re-issued");
                return Ok(Done { ok: true, result });
            }
            tracing::info!(incident, key, "effect intent without outcome and not visible in the world; issuing it");
        }
        self.crash_point(&format!("intent:{kind}"));
        let (ok, result) = match act.await {
            Ok(v) => (true, v),
            Err(v) => (false, v),
        };
        self.crash_point(&format!("outcome:{kind}"));
        let outcome = if ok { "ok" } else { "failed" };
        self.journal_retry(|| self.journal.effect_outcome(key, outcome, &result, self.now())).await?;
        Ok(Done { ok, result })
    }
}

pub fn error_value(e: impl std::fmt::Display) -> Value {
    json!({ "error": e.to_string() })
}
