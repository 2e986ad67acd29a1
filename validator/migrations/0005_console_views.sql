-- Read-only views the console reads (SPEC §4.7, §4.8). A contract like
-- registry_meters: columns are added, never changed or dropped.

-- Every inbound message and its decision.
CREATE VIEW console_messages AS
SELECT message_id, sender, recipient, body, received_at, channel, processed_at,
       outcome, reason, account, reading_id, reply
FROM messages;

-- Accepted readings. Whether the resident gave an e-mail address, never the address.
CREATE VIEW console_readings AS
SELECT reading_id, message_id, account, meter, period, readings AS vals, received_at,
       email IS NOT NULL AS with_email, supersedes, superseded_by, accepted_at
FROM readings;

-- The registry as the console shows it (registry_meters lacks the register's digits).
CREATE VIEW console_registry AS
SELECT account, meter, zones, digits, status, normative_kwh, baseline_period, baseline_values
FROM meters;

-- A search by account ("what did this account send?"). By phone:
-- messages_sender_received; by id: the primary key; the start page's messages per
-- day of a window: the BRIN index of 0004 on received_at.
CREATE INDEX messages_account_received ON messages (account, received_at)
    WHERE account IS NOT NULL;

-- Where the console connects as its own role `console` (deploy/: one role per
-- service), it may read these views and nothing else of this schema. A role created
-- later gets the same grants by hand (docs/console.md).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'console') THEN
        GRANT USAGE ON SCHEMA validator TO console;
        GRANT SELECT ON console_messages, console_readings, console_registry TO console;
    END IF;
END
$$;
