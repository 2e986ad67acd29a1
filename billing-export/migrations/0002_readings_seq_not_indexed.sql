-- `seq` is an identity column (GENERATED ALWAYS: no insert sets it), unique by
-- construction; it is only the last tie-break in the export's ORDER BY, served by
-- readings_period_meter. Its unique index cost an index insert (and its WAL) per
-- reading.
ALTER TABLE readings DROP CONSTRAINT IF EXISTS readings_seq_key;
