-- Which process drives an open incident, so two processes (serve and a manual
-- `resume`, or two serves) never drive the same incident at once.

-- host:pid of the process driving the incident, NULL when nobody does.
ALTER TABLE incidents ADD COLUMN owner TEXT;
-- The owner's claim lapses at this time unless renewed (it renews every few seconds
-- while it runs); a dead owner on the same host is replaced at once.
ALTER TABLE incidents ADD COLUMN lease_until TEXT;

-- At most one open incident per target, enforced by the database itself.
CREATE UNIQUE INDEX incidents_one_open_per_target ON incidents (target) WHERE closed_at IS NULL;
