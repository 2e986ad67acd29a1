-- The console's schema (search_path = console): staff, their sessions, login
-- throttling, the audit of every staff action, and the re-queue keys of dead letters.
-- Everything else the console shows it reads from the owners' published views
-- (validator.console_*, notifier.console_*, billing.console_*; SPEC §4.7).

CREATE TABLE users (
    login         text        PRIMARY KEY,
    role          text        NOT NULL CHECK (role IN ('operator', 'supervisor')),
    -- Argon2id, PHC string form (parameters and salt inside).
    password_hash text        NOT NULL,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);

-- Server-side sessions. The cookie carries a random 256-bit id; only its SHA-256 is
-- stored, so a copy of this table does not let anyone in.
CREATE TABLE sessions (
    id_hash    text        PRIMARY KEY,
    login      text        NOT NULL REFERENCES users (login) ON DELETE CASCADE,
    -- The CSRF token of every form of this session (random, per session).
    csrf       text        NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now(),
    expires_at timestamptz NOT NULL
);
CREATE INDEX sessions_expires ON sessions (expires_at);

-- Failed logins, per login name and per client address, so that every replica
-- counts the same failures (`login:<name>`, `ip:<address>`).
CREATE TABLE login_failures (
    key text        NOT NULL,
    at  timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX login_failures_key_at ON login_failures (key, at);

-- Every staff action: who looked up which phone, account or message, who entered a
-- paper slip, who re-queued what.
CREATE TABLE audit (
    id      bigint      GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    at      timestamptz NOT NULL DEFAULT now(),
    login   text        NOT NULL,
    action  text        NOT NULL,
    subject text        NOT NULL,
    detail  jsonb
);
CREATE INDEX audit_at ON audit (at);
CREATE INDEX audit_login_at ON audit (login, at);
-- "Who entered this paper slip?", on the slip's timeline.
CREATE INDEX audit_subject ON audit (subject, action);

-- Dead letters re-queued, one row per letter (queue + its message id + when it
-- died): a second click, another tab or another replica finds the row and does
-- nothing, so no letter goes back twice.
CREATE TABLE requeued (
    key        text        PRIMARY KEY,
    queue      text        NOT NULL,
    message_id text        NOT NULL,
    login      text        NOT NULL,
    at         timestamptz NOT NULL DEFAULT now()
);
