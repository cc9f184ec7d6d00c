-- The incident journal. Documented in README.md ("Querying the journal").
-- Times are UTC RFC 3339 strings with milliseconds, so they sort and compare as text.

CREATE TABLE incidents (
    id             TEXT PRIMARY KEY,            -- e.g. inc-20261126T101500-3f9a
    playbook_name  TEXT NOT NULL,
    playbook_path  TEXT NOT NULL,
    playbook_hash  TEXT NOT NULL,               -- sha256 of the playbook file the incident pinned
    target         TEXT NOT NULL,               -- primary endpoint (host:port/db), never credentials
    state          TEXT NOT NULL,               -- current state (copy of the last transition's to_state)
    machine        TEXT NOT NULL,               -- current machine JSON (copy of the last transition's)
    outcome        TEXT,                        -- recovered | rolled_back | false_alarm | escalated | aborted
    opened_at      TEXT NOT NULL,
    closed_at      TEXT,
    trigger_source TEXT NOT NULL,
    trigger_detail TEXT NOT NULL DEFAULT ''
);
CREATE INDEX incidents_open ON incidents (target, closed_at);

-- Every event fed to an incident's machine, accepted or not. Append-only.
CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    seq         INTEGER NOT NULL,               -- 1, 2, 3 ... per incident
    at          TEXT NOT NULL,
    from_state  TEXT NOT NULL,
    to_state    TEXT NOT NULL,                  -- equal to from_state when rejected or handled in place
    event       TEXT NOT NULL,                  -- event name, e.g. confirm_checked
    observations TEXT NOT NULL,                 -- the event as JSON: what the guard judged
    note        TEXT,                           -- what the guard decided, in words
    rejected    TEXT,                           -- why the event was refused, if it was
    actor       TEXT NOT NULL,                  -- orchestrator, or the person who approved/aborted
    machine     TEXT NOT NULL,                  -- full machine state after the event (for resume)
    UNIQUE (incident_id, seq)
);

CREATE TRIGGER transitions_append_only_update BEFORE UPDATE ON transitions
BEGIN
    SELECT RAISE(ABORT, 'transitions are append-only');
END;
CREATE TRIGGER transitions_append_only_delete BEFORE DELETE ON transitions
BEGIN
    SELECT RAISE(ABORT, 'transitions are append-only');
END;

-- One row per checklist item measured (confirm, preflight, flush guard, verify).
CREATE TABLE checks (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    transition_seq INTEGER NOT NULL,
    at          TEXT NOT NULL,
    phase       TEXT NOT NULL,                  -- confirm | preflight | flush_guard | verify
    item        TEXT NOT NULL,
    holds       INTEGER NOT NULL,               -- 1 or 0
    observed    TEXT NOT NULL
);
CREATE INDEX checks_incident ON checks (incident_id, transition_seq);

-- Side effects: journaled as an intent before they run, and their outcome after.
CREATE TABLE effects (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    key         TEXT NOT NULL UNIQUE,           -- idempotency key
    kind        TEXT NOT NULL,                  -- set_env | deploy | flush | notify | restore_env
    intent      TEXT NOT NULL,                  -- JSON, secrets masked
    intent_at   TEXT NOT NULL,
    outcome     TEXT,                           -- NULL while in flight: ok | failed | reconciled
    result      TEXT,                           -- JSON
    done_at     TEXT
);

-- Commands from people (approve, reject, abort), from the CLI or HTTP. The executor
-- applies each to the machine and records whether it was accepted.
CREATE TABLE commands (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    incident_id TEXT NOT NULL REFERENCES incidents (id),
    kind        TEXT NOT NULL,                  -- approve | reject | abort
    actor       TEXT NOT NULL,
    comment     TEXT NOT NULL DEFAULT '',
    via         TEXT NOT NULL,                  -- cli | http
    at          TEXT NOT NULL,
    applied_at  TEXT,
    accepted    INTEGER,                        -- 1 accepted, 0 refused
    result      TEXT                            -- what happened, in words
);

CREATE VIEW approvals AS
    SELECT id, incident_id, actor AS approver, kind AS decision, comment, at, accepted, result
    FROM commands WHERE kind IN ('approve', 'reject');

-- Every alert received, whatever became of it.
CREATE TABLE alerts (
    id          INTEGER PRIMARY KEY AUTOINCREMENT,
    received_at TEXT NOT NULL,
    source      TEXT NOT NULL,                  -- grafana | alertmanager | generic | watch
    fingerprint TEXT NOT NULL,
    status      TEXT NOT NULL,                  -- firing | resolved
    target      TEXT NOT NULL,
    summary     TEXT NOT NULL,
    incident_id TEXT REFERENCES incidents (id),
    disposition TEXT NOT NULL                   -- opened | attached | cooldown | paused | resolved | ignored
);

-- Global switches (e.g. paused = 1 turns automatic failover off).
CREATE TABLE settings (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL,
    set_by TEXT NOT NULL,
    at    TEXT NOT NULL
);
