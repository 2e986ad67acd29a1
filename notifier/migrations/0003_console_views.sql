-- Read-only view the console reads (SPEC §4.7, §4.8): what became of each reply and
-- confirmation. A contract: columns are added, never changed or dropped.
-- `key` is `reply:<message_id>` or `email:<reading_id>` (the primary key, which is
-- what the console looks them up by). E-mail addresses are shown masked.
CREATE VIEW console_deliveries AS
SELECT key, channel,
       CASE WHEN channel = 'email'
            THEN regexp_replace(recipient, '^(.)[^@]*(@.*)$', '\1***\2')
            ELSE recipient END AS recipient,
       state, attempts, detail, created_at, updated_at, sent_at
FROM deliveries;

-- Where the console connects as its own role `console` (deploy/: one role per
-- service), it may read these views and nothing else of this schema. A role created
-- later gets the same grants by hand (docs/console.md).
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'console') THEN
        GRANT USAGE ON SCHEMA notifier TO console;
        GRANT SELECT ON console_deliveries TO console;
    END IF;
END
$$;
