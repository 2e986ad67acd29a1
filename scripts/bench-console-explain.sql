-- EXPLAIN (ANALYZE, BUFFERS) of every query of the console's search, timeline,
-- account and start page (console/src/records.rs, glance.rs), as prepared statements
-- executed five times first: the plan shown is the one kept for the console's own
-- prepared statements (custom or generic). Generated for scripts/bench-console.sh;
-- psql variables phone, account, rejected, accepted, reading come from the script.
\set ON_ERROR_STOP 1
\pset pager off
SET search_path = console;
-- The windows as console/src/glance.rs computes them (window days 15-25, zone
-- Asia/Yekaterinburg): the current month's once its 15th has come, else the last.
SELECT to_char(m, 'YYYY-MM') AS this_period,
       (m + interval '14 days') AT TIME ZONE 'Asia/Yekaterinburg' AS this_opens,
       (m + interval '25 days') AT TIME ZONE 'Asia/Yekaterinburg' AS this_closes,
       (m - interval '1 month' + interval '14 days') AT TIME ZONE 'Asia/Yekaterinburg' AS last_opens,
       (m - interval '1 month' + interval '25 days') AT TIME ZONE 'Asia/Yekaterinburg' AS last_closes,
       date_trunc('day', now() AT TIME ZONE 'Asia/Yekaterinburg') AT TIME ZONE 'Asia/Yekaterinburg' AS today,
       -- the account page: 12 closed periods back, from a month before the first
       to_char(c - interval '12 months', 'YYYY-MM') AS since_period,
       (c - interval '11 months' + interval '14 days') AT TIME ZONE 'Asia/Yekaterinburg' - interval '31 days' AS since
FROM (SELECT CASE WHEN now() >= (date_trunc('month', now() AT TIME ZONE 'Asia/Yekaterinburg') + interval '14 days') AT TIME ZONE 'Asia/Yekaterinburg'
                 THEN date_trunc('month', now() AT TIME ZONE 'Asia/Yekaterinburg')
                 ELSE date_trunc('month', now() AT TIME ZONE 'Asia/Yekaterinburg') - interval '1 month' END AS m,
             CASE WHEN now() >= (date_trunc('month', now() AT TIME ZONE 'Asia/Yekaterinburg') + interval '25 days') AT TIME ZONE 'Asia/Yekaterinburg'
                 THEN date_trunc('month', now() AT TIME ZONE 'Asia/Yekaterinburg')
                 ELSE date_trunc('month', now() AT TIME ZONE 'Asia/Yekaterinburg') - interval '1 month' END AS c) w \gset
\echo parameters: phone :phone account :account rejected :rejected accepted :accepted reading :reading
\echo this window :this_period :this_opens … :this_closes, last :last_opens … :last_closes, today :today, account since :since_period / :since

\echo '### 1. search by phone: the phone messages (records::search, Query::Phone)'
PREPARE q1(text, bigint) AS SELECT message_id, sender, recipient, body, received_at, channel, processed_at, outcome, reason, account, reading_id, reply FROM validator.console_messages WHERE sender = $1 ORDER BY received_at DESC LIMIT $2;
\o /dev/null
EXECUTE q1(:'phone', 100); EXECUTE q1(:'phone', 100); EXECUTE q1(:'phone', 100); EXECUTE q1(:'phone', 100); EXECUTE q1(:'phone', 100);
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q1(:'phone', 100);

\echo '### 2. any search: the text as a message id (records::message; also the timeline first query)'
PREPARE q2(text) AS SELECT message_id, sender, recipient, body, received_at, channel, processed_at, outcome, reason, account, reading_id, reply FROM validator.console_messages WHERE message_id = $1;
\o /dev/null
EXECUTE q2(:'rejected'); EXECUTE q2(:'rejected'); EXECUTE q2(:'rejected'); EXECUTE q2(:'rejected'); EXECUTE q2(:'rejected');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q2(:'rejected');

\echo '### 3. search by account: is it in the registry (records::search, Query::Account)'
PREPARE q3(text) AS SELECT account FROM validator.console_registry WHERE account = $1 LIMIT 1;
\o /dev/null
EXECUTE q3(:'account'); EXECUTE q3(:'account'); EXECUTE q3(:'account'); EXECUTE q3(:'account'); EXECUTE q3(:'account');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q3(:'account');

\echo '### 4. search by account / account page: the account messages (records::messages_of_account)'
PREPARE q4(text, timestamptz, bigint) AS SELECT message_id, sender, recipient, body, received_at, channel, processed_at, outcome, reason, account, reading_id, reply FROM validator.console_messages WHERE account = $1 AND received_at >= $2 ORDER BY received_at DESC LIMIT $3;
\o /dev/null
EXECUTE q4(:'account', '1970-01-01', 100); EXECUTE q4(:'account', '1970-01-01', 100); EXECUTE q4(:'account', '1970-01-01', 100); EXECUTE q4(:'account', '1970-01-01', 100); EXECUTE q4(:'account', '1970-01-01', 100);
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q4(:'account', '1970-01-01', 100);

\echo '### 5. timeline: the reading (records::reading)'
PREPARE q5(uuid) AS SELECT reading_id, message_id, account, meter, period, vals, received_at, with_email, supersedes, superseded_by, accepted_at FROM validator.console_readings WHERE reading_id = $1;
\o /dev/null
EXECUTE q5(:'reading'); EXECUTE q5(:'reading'); EXECUTE q5(:'reading'); EXECUTE q5(:'reading'); EXECUTE q5(:'reading');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q5(:'reading');

\echo '### 6. timeline: the reply / the e-mail (records::delivery)'
PREPARE q6(text) AS SELECT key, channel, recipient, state, attempts, detail, created_at, updated_at, sent_at, report, report_detail, reported_at FROM notifier.console_deliveries WHERE key = $1;
\o /dev/null
EXECUTE q6('reply:' || :'rejected'); EXECUTE q6('reply:' || :'rejected'); EXECUTE q6('reply:' || :'rejected'); EXECUTE q6('reply:' || :'rejected'); EXECUTE q6('reply:' || :'rejected');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q6('reply:' || :'rejected');

\echo '### 7. timeline: billing answer (records::timeline)'
PREPARE q7(uuid) AS SELECT reading_id, delivery, attempts, last_status, last_error, stored_at, delivered_at FROM billing.console_deliveries WHERE reading_id = $1;
\o /dev/null
EXECUTE q7(:'reading'); EXECUTE q7(:'reading'); EXECUTE q7(:'reading'); EXECUTE q7(:'reading'); EXECUTE q7(:'reading');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q7(:'reading');

\echo '### 8. timeline: who typed a paper slip (console.audit)'
PREPARE q8(text) AS SELECT login FROM console.audit WHERE subject = $1 AND action = 'paper_slip' LIMIT 1;
\o /dev/null
EXECUTE q8(:'accepted'); EXECUTE q8(:'accepted'); EXECUTE q8(:'accepted'); EXECUTE q8(:'accepted'); EXECUTE q8(:'accepted');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q8(:'accepted');

\echo '### 9. account page: meters (records::meters)'
PREPARE q9(text) AS SELECT account, meter, zones, digits, status, baseline_period, baseline_values FROM validator.console_registry WHERE account = $1 ORDER BY meter;
\o /dev/null
EXECUTE q9(:'account'); EXECUTE q9(:'account'); EXECUTE q9(:'account'); EXECUTE q9(:'account'); EXECUTE q9(:'account');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q9(:'account');

\echo '### 10. account page: current reading per meter (records::current_readings)'
PREPARE q10(text) AS SELECT DISTINCT ON (meter) reading_id, message_id, account, meter, period, vals, received_at, with_email, supersedes, superseded_by, accepted_at FROM validator.console_readings WHERE account = $1 AND superseded_by IS NULL ORDER BY meter, period DESC, received_at DESC;
\o /dev/null
EXECUTE q10(:'account'); EXECUTE q10(:'account'); EXECUTE q10(:'account'); EXECUTE q10(:'account'); EXECUTE q10(:'account');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q10(:'account');

\echo '### 11. account page: readings of the last months (records::readings_of_account)'
PREPARE q11(text, text, bigint) AS SELECT reading_id, message_id, account, meter, period, vals, received_at, with_email, supersedes, superseded_by, accepted_at FROM validator.console_readings WHERE account = $1 AND period >= $2 ORDER BY period DESC, received_at DESC LIMIT $3;
\o /dev/null
EXECUTE q11(:'account', :'since_period', 100); EXECUTE q11(:'account', :'since_period', 100); EXECUTE q11(:'account', :'since_period', 100); EXECUTE q11(:'account', :'since_period', 100); EXECUTE q11(:'account', :'since_period', 100);
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q11(:'account', :'since_period', 100);

\echo '### 12. account page: messages of the last months (records::messages_of_account)'
PREPARE q12(text, timestamptz, bigint) AS SELECT message_id, sender, recipient, body, received_at, channel, processed_at, outcome, reason, account, reading_id, reply FROM validator.console_messages WHERE account = $1 AND received_at >= $2 ORDER BY received_at DESC LIMIT $3;
\o /dev/null
EXECUTE q12(:'account', :'since', 100); EXECUTE q12(:'account', :'since', 100); EXECUTE q12(:'account', :'since', 100); EXECUTE q12(:'account', :'since', 100); EXECUTE q12(:'account', :'since', 100);
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q12(:'account', :'since', 100);

\echo '### 13. start page: messages per day and decisions of this window, one pass (glance::decisions_per_day)'
PREPARE q13(timestamptz, timestamptz, text) AS SELECT (received_at AT TIME ZONE $3)::date AS day, outcome, reason, count(*) FROM validator.console_messages WHERE received_at >= $1 AND received_at < $2 GROUP BY day, outcome, reason;
\o /dev/null
EXECUTE q13(:'this_opens', :'this_closes', 'Asia/Yekaterinburg'); EXECUTE q13(:'this_opens', :'this_closes', 'Asia/Yekaterinburg'); EXECUTE q13(:'this_opens', :'this_closes', 'Asia/Yekaterinburg'); EXECUTE q13(:'this_opens', :'this_closes', 'Asia/Yekaterinburg'); EXECUTE q13(:'this_opens', :'this_closes', 'Asia/Yekaterinburg');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q13(:'this_opens', :'this_closes', 'Asia/Yekaterinburg');

\echo '### 14. start page: messages per day of the last window (glance::per_day)'
PREPARE q14(timestamptz, timestamptz, text) AS SELECT (received_at AT TIME ZONE $3)::date AS day, count(*) FROM validator.console_messages WHERE received_at >= $1 AND received_at < $2 GROUP BY day;
\o /dev/null
EXECUTE q14(:'last_opens', :'last_closes', 'Asia/Yekaterinburg'); EXECUTE q14(:'last_opens', :'last_closes', 'Asia/Yekaterinburg'); EXECUTE q14(:'last_opens', :'last_closes', 'Asia/Yekaterinburg'); EXECUTE q14(:'last_opens', :'last_closes', 'Asia/Yekaterinburg'); EXECUTE q14(:'last_opens', :'last_closes', 'Asia/Yekaterinburg');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q14(:'last_opens', :'last_closes', 'Asia/Yekaterinburg');

\echo '### 16. start page: active meters and those with a reading this period (glance::load)'
PREPARE q16(text) AS SELECT (SELECT count(*) FROM validator.console_registry WHERE status = 'active'), (SELECT count(*) FROM (SELECT DISTINCT b.account, b.meter FROM billing.console_deliveries b JOIN validator.console_registry m USING (account, meter) WHERE b.period = $1 AND m.status = 'active') d);
\o /dev/null
EXECUTE q16(:'this_period'); EXECUTE q16(:'this_period'); EXECUTE q16(:'this_period'); EXECUTE q16(:'this_period'); EXECUTE q16(:'this_period');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q16(:'this_period');

\echo '### 17. start page: billing backlog (glance::load)'
PREPARE q17 AS SELECT count(*) FROM billing.console_deliveries WHERE delivery = 'pending';
\o /dev/null
EXECUTE q17; EXECUTE q17; EXECUTE q17; EXECUTE q17; EXECUTE q17;
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q17;

\echo '### 18. start page: replies sent today (glance::load)'
PREPARE q18(timestamptz) AS SELECT count(*) FROM notifier.console_deliveries WHERE channel = 'sms' AND state = 'sent' AND sent_at >= $1;
\o /dev/null
EXECUTE q18(:'today'); EXECUTE q18(:'today'); EXECUTE q18(:'today'); EXECUTE q18(:'today'); EXECUTE q18(:'today');
\o
EXPLAIN (ANALYZE, BUFFERS) EXECUTE q18(:'today');
