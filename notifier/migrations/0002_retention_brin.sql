-- The daily retention purge (shared::retention, SPEC 4.7) looks for deliveries older
-- than RETENTION_DAYS by created_at (insertion order): a BRIN index finds them without
-- reading the whole table, at next to no cost per insert.
CREATE INDEX IF NOT EXISTS deliveries_created_brin ON deliveries USING brin (created_at);
