-- billing-export's missing-readings report reads registry_meters (SPEC §4.7). Where it
-- connects as its own role `billing_export` (deploy/sql/roles.sql: one role per
-- service, made before the first migration), it may read this view and nothing else
-- of this schema. A role made after this migration ran gets the grant from
-- deploy/sql/roles.sql, which grants it again whenever it is run.
DO $$
BEGIN
    IF EXISTS (SELECT FROM pg_roles WHERE rolname = 'billing_export') THEN
        GRANT USAGE ON SCHEMA validator TO billing_export;
        GRANT SELECT ON registry_meters TO billing_export;
    END IF;
END
$$;
