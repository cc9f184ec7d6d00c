-- Topology as state: per target (a playbook's name), which of its two endpoints the
-- service is on (`active`: the playbook's name for it, primary or backup), since when,
-- through which incident, and whether automatic failover is armed. After a recovered
-- failover the old backup is active and the old primary the standby, without editing
-- the playbook; failover re-arms once the standby has passed its preflight for the
-- playbook's `topology.rearm_after`.
--
-- `topology` is the current row per target (updated in place, like incidents.state);
-- `topology_changes` is its history, append-only and in the ledger (chain `topology`).
CREATE TABLE topology (
    target        TEXT PRIMARY KEY,
    active        TEXT NOT NULL,                -- primary | backup
    since         TEXT NOT NULL,                -- when the service moved to it
    incident_id   TEXT,                         -- the incident that moved it (NULL: as written, or set by a person)
    armed         INTEGER NOT NULL,             -- 1: an alert may start an automatic failover
    reason        TEXT NOT NULL,                -- why it is armed or not, in words
    needs_person  INTEGER NOT NULL DEFAULT 0,   -- 1: only `orchestrator arm` re-arms it (held, escalated after a switch)
    standby_ok_since TEXT,                      -- the standby has passed preflight continuously since then
    updated_at    TEXT NOT NULL
);

CREATE TABLE topology_changes (
    id            INTEGER PRIMARY KEY AUTOINCREMENT,
    target        TEXT NOT NULL,
    at            TEXT NOT NULL,
    change        TEXT NOT NULL,                -- moved | armed | disarmed | standby_ok | standby_failing | set
    active        TEXT NOT NULL,
    armed         INTEGER NOT NULL,
    reason        TEXT NOT NULL,
    incident_id   TEXT,
    actor         TEXT NOT NULL,                -- orchestrator, or the person (`arm --as`)
    -- The rest of the row as it was after the change: `journal verify` checks that the
    -- current `topology` row is exactly its latest change (an edited row is named).
    since         TEXT NOT NULL,
    needs_person  INTEGER NOT NULL,
    standby_ok_since TEXT
);
CREATE INDEX topology_changes_target ON topology_changes (target, id);

CREATE TRIGGER topology_changes_no_update BEFORE UPDATE ON topology_changes BEGIN SELECT RAISE(ABORT, 'topology_changes are append-only'); END;
CREATE TRIGGER topology_changes_no_delete BEFORE DELETE ON topology_changes BEGIN SELECT RAISE(ABORT, 'topology_changes are append-only'); END;
CREATE TRIGGER topology_changes_no_replace BEFORE INSERT ON topology_changes
WHEN EXISTS (SELECT 1 FROM topology_changes WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'topology_changes are append-only: REPLACE refused'); END;

-- Unrouted alerts (no target matched) are listed by `incidents --unrouted`.
CREATE INDEX alerts_disposition ON alerts (disposition, id);
CREATE INDEX alerts_incident ON alerts (incident_id, id);
