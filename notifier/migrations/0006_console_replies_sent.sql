-- The console's start page counts the SMS replies sent today (console/src/glance.rs:
-- channel = 'sms' AND state = 'sent' AND sent_at >= the day's start). Without an
-- index on sent_at that was a sequential scan of every delivery of the retention
-- period (1.2 million rows for 5 million messages: 180 ms, docs/performance.md).
-- Partial: only sent SMS replies are in it. Its price: the update that marks a reply
-- sent (state, sent_at) can no longer be a HOT update, so it inserts into this index
-- and the table's other two B-trees — once per reply sent, and replies go only to
-- refused messages (SPEC §4.3), not to every message.
CREATE INDEX IF NOT EXISTS deliveries_sms_sent ON deliveries (sent_at)
    WHERE channel = 'sms' AND state = 'sent';
