-- What the notifier sent, or decided not to send, once per event (SPEC §5: no resident
-- answered twice). One row per effect, keyed by the event:
--   reply:<message_id>   the SMS answer to a refused message
--   email:<reading_id>   the confirmation of an accepted reading
--
-- States:
--   pending     claimed, nothing known to have reached the peer: safe to send
--   sending     an attempt is in flight until lease_until; after that, a crashed or
--               timed-out attempt whose outcome nobody knows
--   sent        the peer accepted it (terminal)
--   suppressed  a guard said no: country, daily cap, hourly budget (terminal)
--   failed      the peer refused it (4xx / SMTP 5xx): dead-lettered; a replay tries again
--   unknown     sent without an answer on a channel that cannot deduplicate (Kannel):
--               not resent, so as never to answer twice (terminal)
CREATE TABLE deliveries (
    key         text PRIMARY KEY,
    channel     text NOT NULL CHECK (channel IN ('sms', 'email')),
    -- E.164 number or e-mail address, for the audit of who was contacted.
    recipient   text NOT NULL,
    state       text NOT NULL
                CHECK (state IN ('pending', 'sending', 'sent', 'suppressed', 'failed', 'unknown')),
    -- Attempts started; also the fencing token of the current lease.
    attempts    integer NOT NULL DEFAULT 0,
    lease_until timestamptz,
    -- Suppression reason or the last failure, for operators.
    detail      text,
    created_at  timestamptz NOT NULL DEFAULT now(),
    updated_at  timestamptz NOT NULL DEFAULT now(),
    sent_at     timestamptz
);

CREATE INDEX deliveries_recipient_created ON deliveries (recipient, created_at);

-- Reply quotas shared by every replica: one counter per bucket, incremented only while
-- below its cap (a conditional upsert, so two replicas cannot both take the last unit).
--   number:<E.164>:<YYYY-MM-DD>   replies to one number on one day (company time zone)
--   all:<YYYY-MM-DDTHH>           replies to everyone in one clock hour (UTC)
CREATE TABLE reply_quota (
    bucket     text PRIMARY KEY,
    used       integer NOT NULL CHECK (used >= 0),
    expires_at timestamptz NOT NULL
);

CREATE INDEX reply_quota_expires ON reply_quota (expires_at);
