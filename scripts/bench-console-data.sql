-- Synthetic history for scripts/bench-console.sh, loaded straight into the owners'
-- tables (validator, notifier, billing) with generate_series. Run by psql in ONE
-- session (temporary tables), after every service's `migrate`, with
--   -v accounts=1000000 -v messages=5000000
--
-- Shape (see docs/performance.md, "Console at 1,000,000 accounts ..."):
--   registry   :accounts accounts, 2 % with a second meter, 3 % closed; 1/2/3 zones
--              in about 60/35/5 %; account numbers 12 digits as scripts/bench-registry.sh
--   messages   :messages over 36 monthly windows (days 15-25, Asia/Yekaterinburg)
--              ending with the start page's current window, in arrival order (as the table is in production);
--              each month 100,000 "regular" phones send once (36 messages each over
--              the three years) and the rest of the month's messages come from 280,000
--              "occasional" phones (about 5 each): a phone has 36 messages at most.
--              One account per phone (a closed account's phone texts the next
--              account: a few accounts have two phones).
--   decisions  85 % accepted, 15 % refused by reason in the proportions below;
--              10 % of the accepted give an e-mail address
--   readings   one per accepted message (validator.readings and billing.readings),
--              billing: delivered, the last 300 pending
--   deliveries a reply per refusal (sent 95 %, suppressed 4 %, failed 1 %; 90 % of
--              the sent reported delivered), an e-mail per reading with an address
\set ON_ERROR_STOP 1
SET synchronous_commit = off;
SET maintenance_work_mem = '512MB';
SET work_mem = '64MB';
SELECT setseed(0.18);
-- The last month of history is the start page's current window (console/src/glance.rs:
-- this month's once its 15th has come, else the last month's); 36 months back from it.
SELECT to_char(CASE WHEN now() >= (date_trunc('month', now() AT TIME ZONE 'Asia/Yekaterinburg') + interval '14 days') AT TIME ZONE 'Asia/Yekaterinburg'
                    THEN date_trunc('month', now() AT TIME ZONE 'Asia/Yekaterinburg')
                    ELSE date_trunc('month', now() AT TIME ZONE 'Asia/Yekaterinburg') - interval '1 month' END
               - interval '35 months', 'YYYY-MM-DD') AS first_month \gset

-- Bulk load without the indexes, then build them once (sorted builds instead of
-- millions of random B-tree inserts). The definitions are read from the catalogue
-- and re-created as they were: the schema afterwards is the migrations' own.
CREATE TEMP TABLE saved_indexes AS
SELECT n.nspname AS schema, t.relname AS tab, i.relname AS idx,
       pg_get_indexdef(i.oid) AS def, c.conname, pg_get_constraintdef(c.oid) AS condef
FROM pg_index x
JOIN pg_class i ON i.oid = x.indexrelid
JOIN pg_class t ON t.oid = x.indrelid
JOIN pg_namespace n ON n.oid = t.relnamespace
LEFT JOIN pg_constraint c ON c.conindid = i.oid AND c.contype IN ('p', 'u')
WHERE (n.nspname, t.relname) IN (('validator', 'meters'), ('validator', 'messages'),
                                 ('validator', 'readings'), ('notifier', 'deliveries'),
                                 ('billing', 'readings'));
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM saved_indexes LOOP
        IF r.conname IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I.%I DROP CONSTRAINT %I', r.schema, r.tab, r.conname);
        ELSE
            EXECUTE format('DROP INDEX %I.%I', r.schema, r.idx);
        END IF;
    END LOOP;
END
$$;
TRUNCATE validator.meters, validator.messages, validator.readings, notifier.deliveries,
         billing.readings;

\echo registry
\timing on
INSERT INTO validator.meters (account, meter, zones, digits, status, normative_kwh,
                              baseline_period, baseline_values, average_kwh, imported_at)
SELECT lpad((10000000 + a)::text, 12, '0'),
       'EM-' || (10000000 + a) || '-' || n,
       z, CASE WHEN a % 4 = 0 THEN 5 WHEN a % 4 = 3 THEN 7 ELSE 6 END,
       CASE WHEN a % 33 = 0 THEN 'closed' ELSE 'active' END,
       80 + a % 220, to_char(:'first_month'::date - interval '1 month', 'YYYY-MM'),
       (ARRAY[a % 40000, a % 9000, a % 3000])[1:z],
       CASE WHEN a % 5 = 0 THEN NULL ELSE 100 + a % 250 END,
       now() - interval '3 years'
FROM generate_series(1, :accounts) a,
     LATERAL (SELECT CASE WHEN a % 20 = 0 THEN 3 WHEN a % 20 < 8 THEN 2 ELSE 1 END AS z) zz,
     LATERAL generate_series(0, CASE WHEN a % 50 = 1 THEN 1 ELSE 0 END) n;

\echo staging: one row per message
CREATE UNLOGGED TABLE public.bench_staging AS
WITH g AS (
    SELECT i, i / per AS m, i % per AS k, per
    FROM (SELECT ceil(:messages / 36.0)::int AS per) c, generate_series(0, :messages - 1) i
), p AS (
    SELECT i, m, k, per,
           CASE WHEN k < 100000 THEN (k * 7 + m * 13) % 100000
                ELSE 100000 + (m * (per - 100000) + (k - 100000)) % 280000 END AS p
    FROM g
), a0 AS (
    SELECT *, ((p::bigint * 7919) % :accounts + 1) AS a0,
           random() AS r1, random() AS r2, random() AS r3
    FROM p
), a AS (
    -- A closed account's number is not texted any more: the next one (a shared
    -- account of two phones, as in a family).
    SELECT *, CASE WHEN a0 % 33 = 0 THEN a0 + 1 ELSE a0 END AS a FROM a0
)
SELECT i, m, a,
       md5('msg' || i)::uuid::text AS message_id,
       '+79' || lpad(((p::bigint * 104729) % 1000000000)::text, 9, '0') AS sender,
       lpad((10000000 + a)::text, 12, '0') AS account,
       'EM-' || (10000000 + a) || '-0' AS meter,
       to_char(:'first_month'::date + make_interval(months => m), 'YYYY-MM') AS period,
       (:'first_month'::date + interval '14 days' + make_interval(months => m))::timestamp AT TIME ZONE 'Asia/Yekaterinburg'
           + (k::double precision / per) * interval '11 days' AS received_at,
       CASE WHEN a % 20 = 0 THEN 3 WHEN a % 20 < 8 THEN 2 ELSE 1 END AS zones,
       CASE WHEN r1 < 0.85 THEN NULL
            WHEN r2 < 0.45 THEN 'format'
            WHEN r2 < 0.60 THEN 'outside_window'
            WHEN r2 < 0.72 THEN 'unknown_account'
            WHEN r2 < 0.80 THEN 'zone_mismatch'
            WHEN r2 < 0.87 THEN 'reading_decreased'
            WHEN r2 < 0.91 THEN 'too_many_digits'
            WHEN r2 < 0.94 THEN 'implausible'
            WHEN r2 < 0.96 THEN 'account_closed'
            WHEN r2 < 0.98 THEN 'multiple_meters'
            WHEN r2 < 0.99 THEN 'invalid_email'
            ELSE 'rate_limited' END AS reason,
       r3 < 0.10 AS email,
       r3
FROM a;
SELECT count(*) AS staged, count(DISTINCT sender) AS phones FROM public.bench_staging;

\echo messages
INSERT INTO validator.messages (message_id, sender, recipient, body, received_at, channel,
                                processed_at, outcome, reason, account, reading_id, reply)
SELECT message_id, sender, '7377',
       CASE WHEN reason = 'format' THEN 'показания ' || (a % 40000 + m * 150)
            ELSE ltrim(account, '0') || ' '
                 || array_to_string((ARRAY[a % 40000 + m * 150, a % 9000 + m * 60, a % 3000 + m * 20])[1:zones], ' ')
                 || CASE WHEN email THEN ' user' || a || '@mail.ru' ELSE '' END END,
       received_at, 'sms', received_at + interval '40 ms',
       CASE WHEN reason IS NULL THEN 'accepted' ELSE 'rejected' END,
       reason,
       CASE WHEN reason = 'format' THEN NULL ELSE account END,
       CASE WHEN reason IS NULL THEN md5('rd' || message_id)::uuid END,
       CASE WHEN reason IS NOT NULL THEN CASE reason
           WHEN 'format' THEN 'Не поняли сообщение. Пришлите: лицевой счёт и показания, например 1000001 04512'
           WHEN 'outside_window' THEN 'Показания принимаются с 15 по 25 число. Пришлите их в эти дни.'
           WHEN 'unknown_account' THEN 'Лицевой счёт не найден. Проверьте номер в квитанции.'
           WHEN 'zone_mismatch' THEN 'У счётчика другое число тарифов: пришлите показания каждого.'
           WHEN 'reading_decreased' THEN 'Показание меньше прежнего. Проверьте цифры.'
           WHEN 'too_many_digits' THEN 'В показании больше цифр, чем на счётчике.'
           WHEN 'implausible' THEN 'Показание слишком велико для месяца. Проверьте цифры.'
           WHEN 'account_closed' THEN 'Лицевой счёт закрыт.'
           WHEN 'multiple_meters' THEN 'На счёте несколько счётчиков: укажите номер счётчика.'
           WHEN 'invalid_email' THEN 'Адрес e-mail не распознан; показания не приняты.'
           ELSE 'Слишком много сообщений за час. Попробуйте позже.' END END
FROM public.bench_staging ORDER BY i;

\echo validator readings
INSERT INTO validator.readings (reading_id, message_id, account, meter, period, readings,
                                received_at, email, accepted_at)
SELECT md5('rd' || message_id)::uuid, message_id, account, meter, period,
       (ARRAY[a % 40000 + m * 150, a % 9000 + m * 60, a % 3000 + m * 20])[1:zones],
       received_at, CASE WHEN email THEN 'user' || a || '@mail.ru' END,
       received_at + interval '40 ms'
FROM public.bench_staging WHERE reason IS NULL ORDER BY i;

\echo billing readings
INSERT INTO billing.readings (reading_id, message_id, account, meter, period, vals,
                              received_at, channel, stored_at, delivery, attempts,
                              last_status, delivered_at)
SELECT md5('rd' || message_id)::uuid, message_id, account, meter, period,
       (ARRAY[a % 40000 + m * 150, a % 9000 + m * 60, a % 3000 + m * 20])[1:zones],
       received_at, 'sms', received_at + interval '60 ms', 'delivered', 1, 201,
       received_at + interval '200 ms'
FROM public.bench_staging WHERE reason IS NULL ORDER BY i;
-- The backlog: the last 300 readings not yet delivered.
UPDATE billing.readings SET delivery = 'pending', last_status = 503, attempts = 3,
       last_error = 'billing answered 503', delivered_at = NULL
WHERE seq > (SELECT max(seq) - 300 FROM billing.readings);

\echo notifier deliveries
INSERT INTO notifier.deliveries (key, channel, recipient, state, attempts, detail,
                                 created_at, updated_at, sent_at, report, report_detail,
                                 reported_at)
SELECT key, channel, recipient, state, CASE WHEN state = 'suppressed' THEN 0 ELSE 1 END,
       CASE state WHEN 'suppressed' THEN 'daily cap of replies to this number'
                  WHEN 'failed' THEN 'gateway answered 400' END,
       t, t + interval '300 ms', CASE WHEN state = 'sent' THEN t + interval '300 ms' END,
       CASE WHEN state = 'sent' AND channel = 'sms' AND r3 < 0.90 THEN 'delivered'
            WHEN state = 'sent' AND channel = 'sms' AND r3 < 0.93 THEN 'failed' END,
       CASE WHEN state = 'sent' AND channel = 'sms' AND r3 < 0.93 THEN 'stat:DELIVRD' END,
       CASE WHEN state = 'sent' AND channel = 'sms' AND r3 < 0.93 THEN t + interval '5 s' END
FROM (
    SELECT i, 'reply:' || message_id AS key, 'sms' AS channel, sender AS recipient,
           CASE WHEN r3 < 0.95 THEN 'sent' WHEN r3 < 0.99 THEN 'suppressed' ELSE 'failed' END AS state,
           received_at + interval '50 ms' AS t, r3
    FROM public.bench_staging WHERE reason IS NOT NULL
    UNION ALL
    SELECT i, 'email:' || md5('rd' || message_id)::uuid, 'email', 'user' || a || '@mail.ru',
           'sent', received_at + interval '70 ms', r3
    FROM public.bench_staging WHERE reason IS NULL AND email
) d ORDER BY i;

DROP TABLE public.bench_staging;

\echo indexes
DO $$
DECLARE r record;
BEGIN
    FOR r IN SELECT * FROM saved_indexes ORDER BY schema, tab, idx LOOP
        RAISE NOTICE 'building %.%', r.schema, r.idx;
        IF r.conname IS NOT NULL THEN
            EXECUTE format('ALTER TABLE %I.%I ADD CONSTRAINT %I %s', r.schema, r.tab, r.conname, r.condef);
        ELSE
            EXECUTE r.def;
        END IF;
    END LOOP;
END
$$;

\echo analyze
VACUUM (ANALYZE) validator.meters, validator.messages, validator.readings,
                 notifier.deliveries, billing.readings;
