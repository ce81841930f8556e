-- rowcast trigger mode teardown: removes the schema `rowcast`, the trigger
-- function, every trigger that uses it (CASCADE) and the overflow table.
-- Idempotent: `rowcast teardown --mode trigger` runs it, and so can
-- `psql -v ON_ERROR_STOP=1 -f sql/rowcast_trigger_teardown.sql`.
DROP SCHEMA IF EXISTS rowcast CASCADE;
