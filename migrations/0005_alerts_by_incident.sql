-- The console reads an incident's alerts a page at a time (an alert storm attaches
-- thousands to one incident): find them by incident without scanning every alert.
CREATE INDEX IF NOT EXISTS alerts_incident ON alerts (incident_id, id);
