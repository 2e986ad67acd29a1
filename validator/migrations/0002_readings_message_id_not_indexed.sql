-- A reading's id is the UUIDv5 of its message's id, so the primary key already keeps
-- a message to one reading; nothing looks readings up by message_id. The unique
-- index cost an index insert (and its WAL) per accepted reading.
ALTER TABLE readings DROP CONSTRAINT IF EXISTS readings_message_id_key;
