-- The validator's schema (search_path = validator). It owns the account registry,
-- the audit of every inbound message, the accepted readings and the outbox.

-- The account registry, one row per meter, loaded by `validator import-registry`.
CREATE TABLE meters (
    account         text        NOT NULL,
    meter           text        NOT NULL,
    zones           smallint    NOT NULL CHECK (zones BETWEEN 1 AND 3),
    digits          smallint    NOT NULL CHECK (digits BETWEEN 1 AND 18),
    status          text        NOT NULL CHECK (status IN ('active', 'closed')),
    normative_kwh   numeric(12, 3),
    -- The last reading billing knew when the registry was exported (last_* columns).
    baseline_period text,
    baseline_values bigint[],
    imported_at     timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (account, meter)
);

-- Audit: every inbound message once (by message_id) with its outcome.
CREATE TABLE messages (
    message_id   text        PRIMARY KEY,
    sender       text        NOT NULL,
    recipient    text        NOT NULL,
    body         text        NOT NULL,
    received_at  timestamptz NOT NULL,
    channel      text        NOT NULL,
    processed_at timestamptz NOT NULL DEFAULT now(),
    outcome      text        NOT NULL CHECK (outcome IN ('accepted', 'rejected')),
    reason       text,
    account      text,
    reading_id   uuid,
    reply        text
);
CREATE INDEX messages_sender_received ON messages (sender, received_at);

-- Accepted readings; the latest of a meter and period has superseded_by NULL.
CREATE TABLE readings (
    reading_id    uuid        PRIMARY KEY,
    message_id    text        NOT NULL UNIQUE,
    account       text        NOT NULL,
    meter         text        NOT NULL,
    period        text        NOT NULL,
    readings      bigint[]    NOT NULL,
    received_at   timestamptz NOT NULL,
    email         text,
    supersedes    uuid,
    superseded_by uuid,
    accepted_at   timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX readings_meter_period ON readings (account, meter, period);

-- Transactional outbox: events written with the business change, relayed to RabbitMQ.
CREATE TABLE outbox (
    id          bigserial   PRIMARY KEY,
    routing_key text        NOT NULL,
    message_id  text        NOT NULL,
    body        text        NOT NULL,
    traceparent text,
    created_at  timestamptz NOT NULL DEFAULT now()
);

-- The read-only registry view other services may read (billing-export's missing
-- readings report). A contract: add columns, never change or drop one.
CREATE VIEW registry_meters AS
SELECT account, meter, zones, status, normative_kwh, baseline_period, baseline_values
FROM meters;
