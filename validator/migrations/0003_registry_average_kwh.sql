-- Billing's average monthly consumption of a meter (SPEC §4.6: an optional last
-- column of the registry file). The missing-readings report uses it where the
-- system holds fewer than two readings of the meter (SPEC §4.5).
ALTER TABLE meters ADD COLUMN average_kwh numeric(12, 3);

-- The read-only view for billing-export gains the column at its end: the view is a
-- contract, columns are added, never changed or dropped.
CREATE OR REPLACE VIEW registry_meters AS
SELECT account, meter, zones, status, normative_kwh, baseline_period, baseline_values, average_kwh
FROM meters;
