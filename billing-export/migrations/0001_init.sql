-- billing-export's schema (search_path = billing): every accepted reading it has
-- seen, with the state of its push to billing, and the periods whose files were
-- written to EXPORT_DIR.

-- One row per reading_id: a redelivered or duplicated event changes nothing here.
CREATE TABLE readings (
    reading_id   uuid        PRIMARY KEY,
    -- Arrival order; the last tie-break when choosing a period's latest reading.
    seq          bigint      GENERATED ALWAYS AS IDENTITY UNIQUE,
    message_id   text        NOT NULL,
    account      text        NOT NULL,
    meter        text        NOT NULL,
    period       text        NOT NULL CHECK (period ~ '^[0-9]{4}-(0[1-9]|1[0-2])$'),
    -- One value per tariff zone: T1, T2, T3.
    vals         bigint[]    NOT NULL CHECK (cardinality(vals) BETWEEN 1 AND 3),
    received_at  timestamptz NOT NULL,
    channel      text        NOT NULL,
    supersedes   uuid,
    stored_at    timestamptz NOT NULL DEFAULT now(),
    -- pending: not yet delivered (first try or retrying); delivered: 2xx;
    -- conflict: 409, billing already had it (delivered too); rejected: another
    -- 4xx, dead-lettered; not_pushed: BILLING_URL was not set when it arrived.
    delivery     text        NOT NULL CHECK (delivery IN ('pending', 'delivered', 'conflict', 'rejected', 'not_pushed')),
    attempts     integer     NOT NULL DEFAULT 0,
    last_status  smallint,
    last_error   text,
    delivered_at timestamptz
);

-- The period export: finds a period's readings in the order DISTINCT ON needs; it
-- also answers "does this meter have a reading in P" for the missing report.
CREATE INDEX readings_period_meter ON readings (period, account, meter, received_at DESC, seq DESC);
-- The supersession chain, looked up backwards ("is this reading superseded?").
CREATE INDEX readings_supersedes ON readings (supersedes) WHERE supersedes IS NOT NULL;

-- Periods whose files were written to EXPORT_DIR: once per period, across restarts
-- and replicas.
CREATE TABLE period_exports (
    period        text        PRIMARY KEY,
    written_at    timestamptz NOT NULL DEFAULT now(),
    readings_rows bigint      NOT NULL,
    missing_rows  bigint      NOT NULL
);
