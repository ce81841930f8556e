// The trigger SQL that rowcast 0.1 installed (row-level triggers, rows in the NOTIFY
// payload), kept verbatim so the upgrade test starts from what users have.
let previousTriggerScript = #"""
-- rowcast trigger mode: the schema `rowcast`, its overflow table and the trigger
-- function. Idempotent: `rowcast setup --mode trigger` runs it, and so can
-- `psql -v ON_ERROR_STOP=1 -f sql/rowcast_trigger.sql`.
--
-- Attach it to a table (what `rowcast setup --mode trigger --table T` does):
--
--   CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON T
--       FOR EACH ROW EXECUTE FUNCTION rowcast.capture();
--   CREATE TRIGGER rowcast_capture_truncate AFTER TRUNCATE ON T
--       FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture();
--
-- Every change becomes one NOTIFY on channel `rowcast` whose payload is JSON:
--   {"op":..,"schema":..,"table":..,"xid":..,"i":..,"row":to_json(NEW),"old":to_json(OLD)}
-- A payload that would not fit a NOTIFY (8000 bytes) is stored in rowcast.overflow
-- in the same transaction and the NOTIFY carries only {"overflow":ID}; every
-- listening rowcast reads it from there, and rows older than the retention window
-- are purged by rowcast.purge_overflow().

-- Two set-ups at once (two rowcast processes, or this script under psql beside
-- `rowcast setup`) would deadlock on the catalog: take the set-up lock first. A
-- session that already holds it (rowcast setup does) takes it again at once.
DO $lock$ BEGIN PERFORM pg_advisory_lock(32210705904137076); END $lock$;

CREATE SCHEMA IF NOT EXISTS rowcast;

COMMENT ON SCHEMA rowcast IS 'rowcast: change capture for streaming rows to browsers';

CREATE TABLE IF NOT EXISTS rowcast.overflow (
    id         bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    created_at timestamptz NOT NULL DEFAULT clock_timestamp(),
    payload    text NOT NULL
);

CREATE INDEX IF NOT EXISTS overflow_created_at ON rowcast.overflow (created_at);

-- SECURITY DEFINER: a writer needs no privilege on rowcast.overflow, so a large
-- row never fails for lack of one. The SET clauses pin every setting that shapes
-- to_jsonb's output, so the writer's own TimeZone or DateStyle change nothing.
CREATE OR REPLACE FUNCTION rowcast.capture() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET bytea_output = 'hex'
SET extra_float_digits = 1
AS $function$
DECLARE
    change_index bigint;
    head text;
    payload text;
    overflow_id bigint;
BEGIN
    -- A per-transaction counter: it orders changes within the transaction and keeps
    -- NOTIFY from folding two identical payloads of one transaction into one.
    change_index := coalesce(nullif(current_setting('rowcast.change_index', true), ''), '0')::bigint + 1;
    PERFORM set_config('rowcast.change_index', change_index::text, true);

    head := '{"op":"' || lower(TG_OP)
        || '","schema":' || to_json(TG_TABLE_SCHEMA::text)::text
        || ',"table":' || to_json(TG_TABLE_NAME::text)::text
        || ',"xid":' || (txid_current() % 4294967296)::text
        || ',"i":' || change_index::text;
    -- to_json, not to_jsonb: the same JSON value as to_jsonb(row) (the contract),
    -- but a json column is embedded as written, so a value jsonb rejects (such as
    -- "\u0000") cannot fail the writer; it is also cheaper, and its text is the one
    -- replication mode produces from pgoutput (no spaces after ':' and ',').
    IF TG_OP = 'INSERT' THEN
        payload := head || ',"row":' || to_json(NEW)::text || '}';
    ELSIF TG_OP = 'UPDATE' THEN
        payload := head || ',"row":' || to_json(NEW)::text || ',"old":' || to_json(OLD)::text || '}';
    ELSIF TG_OP = 'DELETE' THEN
        payload := head || ',"old":' || to_json(OLD)::text || '}';
    ELSE
        payload := head || '}';
    END IF;

    IF octet_length(payload) < 8000 THEN
        PERFORM pg_notify('rowcast', payload);
    ELSE
        BEGIN
            INSERT INTO rowcast.overflow (payload) VALUES (payload) RETURNING id INTO overflow_id;
            PERFORM pg_notify('rowcast', '{"overflow":' || overflow_id::text || '}');
        EXCEPTION WHEN OTHERS THEN
            -- Never fail the user's write because of rowcast: report the loss instead.
            RAISE WARNING 'rowcast: could not store a change of % bytes to %.%: %',
                octet_length(payload), TG_TABLE_SCHEMA, TG_TABLE_NAME, SQLERRM;
            PERFORM pg_notify('rowcast', head || ',"lost":' || to_json(SQLERRM)::text || '}');
        END;
    END IF;
    RETURN NULL;
END
$function$;

-- Deletes overflow rows older than `keep`. Rows are not deleted on read because
-- several rowcast processes may listen to the same database; each gets the
-- notification and reads the row within moments of the commit.
CREATE OR REPLACE FUNCTION rowcast.purge_overflow(keep interval) RETURNS bigint
LANGUAGE sql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
    WITH purged AS (
        DELETE FROM rowcast.overflow WHERE created_at < clock_timestamp() - keep RETURNING 1
    )
    SELECT count(*) FROM purged;
$function$;

DO $lock$ BEGIN PERFORM pg_advisory_unlock(32210705904137076); END $lock$;
"""#
