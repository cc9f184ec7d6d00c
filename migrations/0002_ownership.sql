-- Which process drives an open incident, so two processes (serve and a manual
-- `resume`, or two serves) never drive the same incident at once.

-- host:pid of the process driving the incident, NULL when nobody does.
ALTER TABLE incidents ADD COLUMN owner TEXT;
-- The owner's claim lapses at this time unless renewed (it renews every few seconds
-- while it runs); a dead owner on the same host is replaced at once.
ALTER TABLE incidents ADD COLUMN lease_until TEXT;

-- A journal written before this migration may hold two open incidents for a target
-- (nothing stopped it then): all but the newest are closed as escalated, so the index
-- below can be created and no command is locked out of the journal.
UPDATE incidents
SET state = 'escalated', outcome = 'escalated', closed_at = strftime('%Y-%m-%dT%H:%M:%fZ', 'now')
WHERE closed_at IS NULL
  AND EXISTS (SELECT 1 FROM incidents AS newer
              WHERE newer.target = incidents.target AND newer.closed_at IS NULL AND newer.opened_at > incidents.opened_at);

-- At most one open incident per target, enforced by the database itself.
CREATE UNIQUE INDEX incidents_one_open_per_target ON incidents (target) WHERE closed_at IS NULL;
