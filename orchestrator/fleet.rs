//! The fleet: every target one `serve` runs (one playbook each, named by the playbook's
//! `name`), the executor for each incident oriented by the target's topology, and how
//! an alert finds its target.

use crate::executor::{ExecOptions, Executor};
use crate::journal::prelude::*;
use crate::journal::{Journal, JournalError};
use crate::model::{IncomingAlert, Side};
use crate::playbook::Playbook;
use crate::ports::Ports;
use std::collections::BTreeMap;
use std::sync::Arc;
use tokio::sync::watch;

#[derive(Debug, thiserror::Error)]
pub enum FleetError {
    #[error("two playbooks are named {name:?} ({first} and {second}): a target's name must be unique")]
    DuplicateName { name: String, first: String, second: String },
    #[error("no playbook: `serve` needs at least one (--playbook FILE or --playbooks DIR)")]
    Empty,
    #[error(
        "the routing labels of {first:?} and {second:?} overlap (an alert carrying {second:?}'s would match both): make them distinct"
    )]
    AmbiguousRouting { first: String, second: String },
}

/// One target: its playbook as written, the outside world it acts on, and the options
/// its incidents run with.
pub struct Target {
    pub name: String,
    pub playbook: Arc<Playbook>,
    pub ports: Ports,
    journal: Journal,
    opts: ExecOptions,
    shutdown: watch::Receiver<bool>,
    /// Set when several instances share the journal: executors are then fenced on this
    /// instance's leadership term (see `leadership.rs`).
    leadership: std::sync::OnceLock<Arc<crate::leadership::Leadership>>,
}

impl Target {
    pub fn new(journal: Journal, ports: Ports, playbook: Arc<Playbook>, opts: ExecOptions, shutdown: watch::Receiver<bool>) -> Target {
        Target { name: playbook.name.clone(), playbook, ports, journal, opts, shutdown, leadership: Default::default() }
    }

    /// Fences this target's executors on `l`'s term from now on (set once, at start).
    pub fn set_leadership(&self, l: Arc<crate::leadership::Leadership>) {
        let _ = self.leadership.set(l);
    }

    /// The journal an executor drives with: fenced on the current term when instances
    /// share the journal (not leading: on a term that is never valid, so nothing it
    /// decides is written).
    fn driving_journal(&self) -> Journal {
        self.leadership.get().map_or_else(|| self.journal.clone(), |l| l.fenced(&self.journal))
    }

    /// An executor that only opens incidents for the leader to drive (a follower's
    /// intake): not fenced, because it decides nothing but the trigger.
    pub async fn opener_now(&self) -> Result<Executor, JournalError> {
        let active = self.journal.topology(&self.name).await?.active;
        Ok(Executor::new(self.journal.clone(), self.ports.clone(), self.playbook.clone(), self.opts.clone(), self.shutdown.clone())
            .with_active(active))
    }

    pub fn journal(&self) -> &Journal {
        &self.journal
    }

    /// An executor driving with `active` as the endpoint the service is on.
    pub fn executor(&self, active: Side) -> Executor {
        Executor::new(self.driving_journal(), self.ports.clone(), self.playbook.clone(), self.opts.clone(), self.shutdown.clone())
            .with_active(active)
    }

    /// An executor for a new incident: oriented by the topology the journal holds now.
    pub async fn executor_now(&self) -> Result<Executor, JournalError> {
        Ok(self.executor(self.journal.topology(&self.name).await?.active))
    }

    /// An executor for an existing incident: oriented as the incident recorded when it
    /// opened (the topology may have moved since; the incident's own record decides).
    pub async fn executor_for(&self, id: &str) -> Result<Executor, JournalError> {
        let machine = self.journal.machine(id).await?;
        if machine.state().name() == "detect" {
            // Its trigger (which records the side) was never journaled.
            return self.executor_now().await;
        }
        Ok(self.executor(machine.incident().from))
    }

    /// The playbook oriented to `active` (its `redis.primary` is the active).
    pub fn oriented(&self, active: Side) -> Playbook {
        self.playbook.oriented(active)
    }
}

/// Where an alert goes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Route {
    Target(String),
    /// No target matched: journaled as `unrouted`. `asked` is the target the alert named,
    /// if it named one.
    Unrouted {
        asked: Option<String>,
        why: String,
    },
}

/// Every target one process runs, by name.
pub struct Registry {
    targets: BTreeMap<String, Arc<Target>>,
}

impl Registry {
    pub fn new(targets: Vec<Target>) -> Result<Registry, FleetError> {
        if targets.is_empty() {
            return Err(FleetError::Empty);
        }
        let mut map: BTreeMap<String, Arc<Target>> = BTreeMap::new();
        for t in targets {
            if let Some(first) = map.get(&t.name) {
                return Err(FleetError::DuplicateName {
                    name: t.name.clone(),
                    first: first.playbook.source.display().to_string(),
                    second: t.playbook.source.display().to_string(),
                });
            }
            map.insert(t.name.clone(), Arc::new(t));
        }
        // Routing labels that one alert could carry for two targets would leave every
        // such alert unrouted at the worst moment: refuse them at start.
        for (a, ta) in &map {
            for (b, tb) in &map {
                let (la, lb) = (&ta.playbook.routing.labels, &tb.playbook.routing.labels);
                if a < b && !la.is_empty() && !lb.is_empty() {
                    let (small, big, sn, bn) = if la.len() <= lb.len() { (la, lb, a, b) } else { (lb, la, b, a) };
                    if small.iter().all(|(k, v)| big.get(k) == Some(v)) {
                        return Err(FleetError::AmbiguousRouting { first: sn.clone(), second: bn.clone() });
                    }
                }
            }
        }
        Ok(Registry { targets: map })
    }

    pub fn get(&self, name: &str) -> Option<&Arc<Target>> {
        self.targets.get(name)
    }

    pub fn iter(&self) -> impl Iterator<Item = &Arc<Target>> {
        self.targets.values()
    }

    pub fn names(&self) -> Vec<String> {
        self.targets.keys().cloned().collect()
    }

    pub fn len(&self) -> usize {
        self.targets.len()
    }

    pub fn is_empty(&self) -> bool {
        self.targets.is_empty()
    }

    /// The alert's target: the one the URL names (`/webhooks/{source}/{target}`; a name
    /// not run here is unrouted); else its `target` label when that names a target run
    /// here; else the one target whose playbook's `routing.labels` it carries, every one
    /// with the value given; else, when this process runs a single target without
    /// routing labels, that one (a one-playbook `serve` takes every alert, as before
    /// fleets). Anything else is unrouted.
    pub fn route(&self, in_url: Option<&str>, alert: &IncomingAlert) -> Route {
        if let Some(name) = in_url {
            return match self.targets.contains_key(name) {
                true => Route::Target(name.to_string()),
                false => Route::Unrouted { asked: Some(name.to_string()), why: format!("no target named {name:?}") },
            };
        }
        // A `target` label may be another system's (blackbox exporters set one to the
        // probed address): one that names nothing here falls through to the labels.
        let label = alert.labels.get("target");
        if let Some(name) = label.filter(|n| self.targets.contains_key(n.as_str())) {
            return Route::Target(name.clone());
        }
        let matching: Vec<&String> = self
            .targets
            .iter()
            .filter(|(_, t)| {
                let wanted = &t.playbook.routing.labels;
                !wanted.is_empty() && wanted.iter().all(|(k, v)| alert.labels.get(k) == Some(v))
            })
            .map(|(name, _)| name)
            .collect();
        let only_unlabelled = || {
            let mut all = self.targets.values();
            match (all.next(), all.next()) {
                (Some(t), None) if t.playbook.routing.labels.is_empty() => Some(t.name.clone()),
                _ => None,
            }
        };
        match matching.as_slice() {
            [one] => Route::Target((*one).clone()),
            [] => match (label, only_unlabelled()) {
                (_, Some(name)) => Route::Target(name),
                (Some(name), None) => Route::Unrouted {
                    asked: Some(name.clone()),
                    why: format!("no target named {name:?}, and no target's routing labels match"),
                },
                (None, None) => Route::Unrouted { asked: None, why: "no `target` label and no target's routing labels match".into() },
            },
            many => Route::Unrouted {
                asked: None,
                why: format!(
                    "the labels match several targets ({}); add a `target` label",
                    many.iter().map(|s| s.as_str()).collect::<Vec<_>>().join(", ")
                ),
            },
        }
    }
}
