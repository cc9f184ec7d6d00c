-- A tamper-evident journal: every history row (an incident's open and close, its
-- transitions, checks, effect intents and outcomes, commands and their application;
-- every alert; every setting) is entered in a hash chain: one chain per incident, one
-- for alerts (`alerts`), one for settings (`settings`). Each entry carries the SHA-256
-- of its row's content and of the entry before it, so `orchestrator journal verify`
-- names the first row that differs, a missing row, a row that is not in its chain, or
-- a dropped trigger. The head hash of an incident is printed by `audit`, `report` and
-- the closing Slack message: a copy kept elsewhere proves what the journal said.
CREATE TABLE ledger (
    id        INTEGER PRIMARY KEY AUTOINCREMENT,
    chain     TEXT NOT NULL,                -- incident id, 'alerts' or 'settings'
    pos       INTEGER NOT NULL,             -- 1, 2, 3 ... per chain
    kind      TEXT NOT NULL,                -- open | transition | check | intent | outcome | command | applied | close | alert | setting
    row_table TEXT NOT NULL,                -- the history table the entry covers
    row_id    INTEGER NOT NULL,             -- that row's rowid
    content   TEXT NOT NULL,                -- sha256 of the row's content (see journal/chain.rs)
    prev      TEXT NOT NULL,                -- the previous entry's hash ('' for the first)
    hash      TEXT NOT NULL,                -- sha256 over prev, chain, pos, kind, row_table, row_id, content
    UNIQUE (chain, pos)
);
CREATE INDEX ledger_row ON ledger (row_table, row_id);

-- Rows written before this migration are not in any chain: verify reports them as
-- predating the chain rather than as inserted.
CREATE TABLE ledger_epoch (
    row_table TEXT PRIMARY KEY,
    max_rowid INTEGER NOT NULL
);
INSERT INTO ledger_epoch SELECT 'incidents', COALESCE(MAX(rowid), 0) FROM incidents;
INSERT INTO ledger_epoch SELECT 'transitions', COALESCE(MAX(rowid), 0) FROM transitions;
INSERT INTO ledger_epoch SELECT 'checks', COALESCE(MAX(rowid), 0) FROM checks;
INSERT INTO ledger_epoch SELECT 'effects', COALESCE(MAX(rowid), 0) FROM effects;
INSERT INTO ledger_epoch SELECT 'commands', COALESCE(MAX(rowid), 0) FROM commands;
INSERT INTO ledger_epoch SELECT 'alerts', COALESCE(MAX(rowid), 0) FROM alerts;

-- Append-only, in the database itself. SQLite's REPLACE deletes the conflicting row
-- without firing delete triggers (unless recursive_triggers is on, a per-connection
-- setting), but it does fire BEFORE INSERT: an insert that would meet an existing row
-- is refused before any conflict resolution can delete it.
CREATE TRIGGER ledger_no_update BEFORE UPDATE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER ledger_no_delete BEFORE DELETE ON ledger BEGIN SELECT RAISE(ABORT, 'the ledger is append-only'); END;
CREATE TRIGGER ledger_no_replace BEFORE INSERT ON ledger
WHEN EXISTS (SELECT 1 FROM ledger WHERE id = NEW.id OR (chain = NEW.chain AND pos = NEW.pos))
BEGIN SELECT RAISE(ABORT, 'the ledger is append-only: REPLACE refused'); END;
CREATE TRIGGER ledger_epoch_no_update BEFORE UPDATE ON ledger_epoch BEGIN SELECT RAISE(ABORT, 'ledger_epoch is fixed'); END;
CREATE TRIGGER ledger_epoch_no_delete BEFORE DELETE ON ledger_epoch BEGIN SELECT RAISE(ABORT, 'ledger_epoch is fixed'); END;
CREATE TRIGGER ledger_epoch_no_insert BEFORE INSERT ON ledger_epoch BEGIN SELECT RAISE(ABORT, 'ledger_epoch is fixed'); END;

CREATE TRIGGER transitions_no_replace BEFORE INSERT ON transitions
WHEN EXISTS (SELECT 1 FROM transitions WHERE id = NEW.id OR (incident_id = NEW.incident_id AND seq = NEW.seq))
BEGIN SELECT RAISE(ABORT, 'transitions are append-only: REPLACE refused'); END;

CREATE TRIGGER checks_no_update BEFORE UPDATE ON checks BEGIN SELECT RAISE(ABORT, 'checks are append-only'); END;
CREATE TRIGGER checks_no_delete BEFORE DELETE ON checks BEGIN SELECT RAISE(ABORT, 'checks are append-only'); END;
CREATE TRIGGER checks_no_replace BEFORE INSERT ON checks
WHEN EXISTS (SELECT 1 FROM checks WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'checks are append-only: REPLACE refused'); END;

CREATE TRIGGER alerts_no_update BEFORE UPDATE ON alerts BEGIN SELECT RAISE(ABORT, 'alerts are append-only'); END;
CREATE TRIGGER alerts_no_delete BEFORE DELETE ON alerts BEGIN SELECT RAISE(ABORT, 'alerts are append-only'); END;
CREATE TRIGGER alerts_no_replace BEFORE INSERT ON alerts
WHEN EXISTS (SELECT 1 FROM alerts WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'alerts are append-only: REPLACE refused'); END;

-- An effect gets its outcome once; nothing else of it ever changes.
CREATE TRIGGER effects_outcome_once BEFORE UPDATE ON effects
WHEN OLD.outcome IS NOT NULL OR NEW.id IS NOT OLD.id OR NEW.incident_id IS NOT OLD.incident_id OR NEW.key IS NOT OLD.key
  OR NEW.kind IS NOT OLD.kind OR NEW.intent IS NOT OLD.intent OR NEW.intent_at IS NOT OLD.intent_at
BEGIN SELECT RAISE(ABORT, 'an effect''s intent is fixed and its outcome is written once'); END;
CREATE TRIGGER effects_no_delete BEFORE DELETE ON effects BEGIN SELECT RAISE(ABORT, 'effects are append-only'); END;
CREATE TRIGGER effects_no_replace BEFORE INSERT ON effects
WHEN EXISTS (SELECT 1 FROM effects WHERE id = NEW.id OR key = NEW.key)
BEGIN SELECT RAISE(ABORT, 'effects are append-only: REPLACE refused'); END;

-- A command is applied once; what was asked never changes.
CREATE TRIGGER commands_applied_once BEFORE UPDATE ON commands
WHEN OLD.applied_at IS NOT NULL OR NEW.id IS NOT OLD.id OR NEW.incident_id IS NOT OLD.incident_id OR NEW.kind IS NOT OLD.kind
  OR NEW.actor IS NOT OLD.actor OR NEW.comment IS NOT OLD.comment OR NEW.via IS NOT OLD.via OR NEW.at IS NOT OLD.at
  OR NEW.os_user IS NOT OLD.os_user
BEGIN SELECT RAISE(ABORT, 'a command is fixed once journaled and applied once'); END;
CREATE TRIGGER commands_no_delete BEFORE DELETE ON commands BEGIN SELECT RAISE(ABORT, 'commands are append-only'); END;
CREATE TRIGGER commands_no_replace BEFORE INSERT ON commands
WHEN EXISTS (SELECT 1 FROM commands WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'commands are append-only: REPLACE refused'); END;

-- An incident's identity is fixed; its close is written once. (state, machine, owner and
-- lease change while it runs: they are not history.)
CREATE TRIGGER incidents_fixed BEFORE UPDATE ON incidents
WHEN NEW.id IS NOT OLD.id OR NEW.playbook_name IS NOT OLD.playbook_name OR NEW.playbook_path IS NOT OLD.playbook_path
  OR NEW.playbook_hash IS NOT OLD.playbook_hash OR NEW.target IS NOT OLD.target OR NEW.opened_at IS NOT OLD.opened_at
  OR NEW.trigger_source IS NOT OLD.trigger_source OR NEW.trigger_detail IS NOT OLD.trigger_detail
  OR NEW.os_user IS NOT OLD.os_user OR NEW.approver_os_users IS NOT OLD.approver_os_users
  OR (OLD.closed_at IS NOT NULL AND (NEW.closed_at IS NOT OLD.closed_at OR NEW.outcome IS NOT OLD.outcome))
BEGIN SELECT RAISE(ABORT, 'an incident''s identity is fixed and its close is written once'); END;
CREATE TRIGGER incidents_no_delete BEFORE DELETE ON incidents BEGIN SELECT RAISE(ABORT, 'incidents are append-only'); END;
CREATE TRIGGER incidents_no_replace BEFORE INSERT ON incidents
WHEN EXISTS (SELECT 1 FROM incidents WHERE id = NEW.id)
BEGIN SELECT RAISE(ABORT, 'incidents are append-only: REPLACE refused'); END;
-- REPLACE would delete the other open incident of the target (the partial unique index
-- of 0002): refused the same way, worded like the index's own error.
CREATE TRIGGER incidents_no_replace_open BEFORE INSERT ON incidents
WHEN NEW.closed_at IS NULL AND EXISTS (SELECT 1 FROM incidents WHERE closed_at IS NULL AND target = NEW.target)
BEGIN SELECT RAISE(ABORT, 'UNIQUE constraint failed: incidents.target (an incident is already open for this target)'); END;
