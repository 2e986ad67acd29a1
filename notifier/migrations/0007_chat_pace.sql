-- Pacing of the answers in bot chats (SPEC 4.9), shared by every replica as the reply
-- quotas are (notifier/src/bots/pace.rs).
--
-- chat_pace: one row per lane.
--   <platform>          taken FOR UPDATE first by every reservation on the platform, so
--                       that they take turns; holds no time of its own
--   <platform>:<chat>   the earliest moment the chat's next answer may go
--                       (1 s after the last one on Telegram, 0.5 s on MAX)
-- chat_slots: the platform's sends, one per slot of 1/30 s (slot k starts k/30 s after
-- the Unix epoch), so that at most 30 go out in a second.
-- Rows whose time has long passed are pruned.
CREATE TABLE chat_pace (
    lane    text PRIMARY KEY,
    next_at timestamptz NOT NULL
);

CREATE INDEX chat_pace_next_at ON chat_pace (next_at);

CREATE TABLE chat_slots (
    platform text   NOT NULL,
    slot     bigint NOT NULL,
    PRIMARY KEY (platform, slot)
);
