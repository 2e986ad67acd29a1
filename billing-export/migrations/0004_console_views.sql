-- Read-only view the console reads (SPEC §4.7, §4.8): billing's answer to each
-- reading. A contract: columns are added, never changed or dropped.
CREATE VIEW console_deliveries AS
SELECT reading_id, message_id, account, meter, period, delivery, attempts,
       last_status, last_error, stored_at, delivered_at
FROM readings;

-- The start page's billing backlog: readings not yet delivered.
CREATE INDEX readings_pending ON readings (stored_at) WHERE delivery = 'pending';

-- Where the console connects as its own role `console` (deploy/: one role per
-- service), it may read these views and nothing else of this schema. A role created
-- later gets the same grants by hand (docs/console.md).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'console') THEN
        GRANT USAGE ON SCHEMA billing TO console;
        GRANT SELECT ON console_deliveries TO console;
    END IF;
END
$$;
