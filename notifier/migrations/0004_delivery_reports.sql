-- What the network reported about each SMS reply (SPEC §4.3): `sent` (the `state`
-- column) says the gateway took it; `report` says what became of it afterwards.
-- Kept beside the sending state, not in it, so that the once-only claim machinery
-- (0001) is unchanged: a report never makes a reply sendable again, and a reply is
-- never re-sent because it failed (it costs money).
--   report       NULL (nothing reported yet), 'delivered' or 'failed' (final)
--   report_detail what the gateway said (Kannel status code and its text), for operators
--   reported_at  when the first final report arrived
-- A later report that contradicts the first (failed after delivered) is counted and
-- logged, never written over it.
ALTER TABLE deliveries
    ADD COLUMN report        text CHECK (report IN ('delivered', 'failed')),
    ADD COLUMN report_detail text,
    ADD COLUMN reported_at   timestamptz;
