-- The console's view (0003) gains what the network reported about each reply (0004):
-- the timeline shows "delivered" or "failed" beside "sent" (SPEC §4.3, §4.8). Columns
-- are only appended, as the view's contract says; the grants of 0003 stay.
CREATE OR REPLACE VIEW console_deliveries AS
SELECT key, channel,
       CASE WHEN channel = 'email'
            THEN regexp_replace(recipient, '^(.)[^@]*(@.*)$', '\1***\2')
            ELSE recipient END AS recipient,
       state, attempts, detail, created_at, updated_at, sent_at,
       report, report_detail, reported_at
FROM deliveries;
