-- The daily retention purge (shared::retention, SPEC 4.7) looks for readings older
-- than RETENTION_DAYS by received_at: a BRIN index finds them without reading the
-- whole table, at next to no cost per insert (rows arrive in about that order).
CREATE INDEX IF NOT EXISTS readings_received_brin ON readings USING brin (received_at);
