-- One PostgreSQL role per service, each owning its own schema (SPEC §4.7), and the
-- reads across schemas the services make through the owners' views. Run it as the
-- database's superuser (CloudNativePG: `kubectl cnpg psql`; a managed server: its
-- admin role) BEFORE the first migration Job, and again whenever a role is added or
-- its password changes; it is idempotent:
--
--   psql "postgres://postgres@HOST:5432/meter" -v validator_password="$VALIDATOR_PW" \
--        -v notifier_password="$NOTIFIER_PW" -v billing_export_password="$BILLING_PW" \
--        -v console_password="$CONSOLE_PW" -f deploy/sql/roles.sql
--
-- Put each password into that service's DATABASE_URL (Secret meter-<service>-secrets).
-- ingest has no role: it never opens the database. Tested by e2e/tests/roles.rs,
-- where each service migrates and runs under its own role.
\set ON_ERROR_STOP on

-- 1. The login roles (passwords set below, every run).
SELECT format('CREATE ROLE %I LOGIN', r)
FROM unnest(ARRAY['validator', 'notifier', 'billing_export', 'console']) AS r
WHERE NOT EXISTS (SELECT FROM pg_roles WHERE rolname = r)
\gexec
ALTER ROLE validator LOGIN PASSWORD :'validator_password';
ALTER ROLE notifier LOGIN PASSWORD :'notifier_password';
ALTER ROLE billing_export LOGIN PASSWORD :'billing_export_password';
ALTER ROLE console LOGIN PASSWORD :'console_password';

-- 2. The database: the services connect; nobody else does, and none of them may make
--    a schema of its own (each gets its one schema below).
SELECT format('REVOKE ALL ON DATABASE %I FROM PUBLIC', current_database()) \gexec
SELECT format('GRANT CONNECT, TEMPORARY ON DATABASE %I TO validator, notifier, billing_export, console',
              current_database()) \gexec
REVOKE CREATE ON SCHEMA public FROM PUBLIC;

-- 3. Each service's schema, owned by its role: its migrations create its tables there
--    (the service finds the schema and does not try to create it). billing-export's
--    schema is `billing`.
CREATE SCHEMA IF NOT EXISTS validator AUTHORIZATION validator;
CREATE SCHEMA IF NOT EXISTS notifier AUTHORIZATION notifier;
CREATE SCHEMA IF NOT EXISTS billing AUTHORIZATION billing_export;
CREATE SCHEMA IF NOT EXISTS console AUTHORIZATION console;
-- (An install whose schemas were made by one shared role, as the dev overlay's are, keeps
-- that owner: this file does not move tables between roles.)

-- 4. Reads across schemas, through the owners' published views only (a view reads its
--    tables with its owner's rights, so nothing else is granted). The owners'
--    migrations grant these when they create a view and the role exists; here they
--    are granted again for views that existed before a role did.
GRANT USAGE ON SCHEMA validator, notifier, billing TO console;
GRANT USAGE ON SCHEMA validator TO billing_export;
SELECT format('GRANT SELECT ON %I.%I TO console', schemaname, viewname)
FROM pg_views
WHERE schemaname IN ('validator', 'notifier', 'billing') AND viewname LIKE 'console\_%'
\gexec
SELECT 'GRANT SELECT ON validator.registry_meters TO billing_export'
WHERE EXISTS (SELECT FROM pg_views WHERE schemaname = 'validator' AND viewname = 'registry_meters')
\gexec
