-- The daily retention purge (shared::retention, SPEC 4.7) looks for the rows older
-- than RETENTION_DAYS by received_at. Rows arrive in roughly that order, so a BRIN
-- index (a few pages for millions of rows, next to nothing per insert) finds the old
-- ones without reading the whole table; a B-tree would cost an index insert and its
-- WAL per message.
CREATE INDEX IF NOT EXISTS messages_received_brin ON messages USING brin (received_at);
CREATE INDEX IF NOT EXISTS readings_received_brin ON readings USING brin (received_at);
