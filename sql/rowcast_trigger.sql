-- rowcast trigger mode: the schema `rowcast`, its changes table and the trigger
-- functions. Idempotent, and upgrades a database set up by an earlier rowcast in
-- place: `rowcast setup --mode trigger` runs it, and so can
-- `psql -v ON_ERROR_STOP=1 -f sql/rowcast_trigger.sql`.
--
-- Attach it to a table (what `rowcast setup --mode trigger --table T` does):
--
--   SELECT rowcast.attach('T');
--
-- How a change travels. The statement's changes are written, as JSON, to
-- rowcast.changes, a table only its owner (and the roles it grants) can read; the
-- NOTIFY on channel `rowcast` carries nothing but the transaction's id, the key of
-- those rows. So a role that may not read a table cannot read its changes by
-- LISTENing, and a NOTIFY from anyone else can only name rows the trigger wrote
-- (rowcast delivers each transaction once). One notification per transaction:
-- PostgreSQL folds identical payloads of one transaction into one.
--
-- Ordinary tables get statement-level triggers with transition tables: one INSERT
-- into rowcast.changes per statement, however many rows it touched. Partitioned
-- tables get row-level triggers instead, which PostgreSQL clones onto every
-- partition, present and future, so a write straight into a partition is seen too.

-- Two set-ups at once (two rowcast processes, or this script under psql beside
-- `rowcast setup`) would deadlock on the catalog: take the set-up lock first. A
-- session that already holds it (rowcast setup does) takes it again at once.
DO $lock$ BEGIN PERFORM pg_advisory_lock(32210705904137076); END $lock$;

CREATE SCHEMA IF NOT EXISTS rowcast;

COMMENT ON SCHEMA rowcast IS 'rowcast: change capture for streaming rows to browsers';

-- One row per change, keyed by the writing transaction's id (`batch`, the 64-bit
-- txid_current()), its statement (`seq`) and the change's number within the
-- statement (`n`). `seq` is the statement's place in the order statements ended (a
-- sequence, so a statement that waited for another transaction's row ends after that
-- transaction committed: ordering transactions by their last `seq` keeps every row's
-- history in commit order), and it orders a transaction's statements.
-- UNLOGGED: no WAL for a copy kept until every listener read it; after a crash it is
-- empty, and so is rowcast.listeners, so a listener knows it may have missed changes.
-- Only its owner may read it.
CREATE UNLOGGED TABLE IF NOT EXISTS rowcast.changes (
    batch       bigint NOT NULL,
    n           bigint NOT NULL,
    op          text   NOT NULL,
    schema_name text   NOT NULL,
    table_name  text   NOT NULL,
    row_json    json,
    old_json    json,
    seq         bigint,
    pid         int
);

CREATE SEQUENCE IF NOT EXISTS rowcast.statement_seq;
REVOKE ALL ON SEQUENCE rowcast.statement_seq FROM PUBLIC;

-- Only when missing: CREATE INDEX and ALTER TABLE lock the table even when there is
-- nothing to do, and a set-up run again must not lock rowcast.changes, which every
-- writer's trigger writes.
-- (Changes written before `seq` numbered statements count as statement 0: `n` then
-- ran through the transaction.)
--
-- `pid` is the writing session's (pg_backend_pid()): the NOTIFY it sends at commit
-- comes from that pid, and a notification from any other session, which anyone can
-- send, is not taken as the transaction's place in commit order.
DO $index$ BEGIN
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'rowcast.changes'::regclass AND attname = 'pid' AND NOT attisdropped) THEN
        ALTER TABLE rowcast.changes ADD COLUMN pid int;
    END IF;
    IF NOT EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'rowcast.changes'::regclass AND attname = 'seq' AND NOT attisdropped) THEN
        ALTER TABLE rowcast.changes ADD COLUMN seq bigint;
    END IF;
    IF to_regclass('rowcast.changes_batch_seq_n') IS NULL THEN
        UPDATE rowcast.changes SET seq = 0 WHERE seq IS NULL;
        CREATE INDEX changes_batch_seq_n ON rowcast.changes (batch, seq, n);
        DROP INDEX IF EXISTS rowcast.changes_batch_n;
    END IF;
END $index$;

REVOKE ALL ON rowcast.changes FROM PUBLIC;

-- The rowcast processes reading rowcast.changes, each under a name of its own:
-- `position` is a snapshot (txid_current_snapshot()) whose visible transactions it
-- has delivered, and it is live until `expires`, which its heartbeat moves on. The
-- trigger writes nothing while no listener is live, and a change is deleted once
-- every live listener's position passed its transaction. A listener whose row is
-- gone when it comes back (expired and dropped, or lost in a crash) knows it missed
-- what was committed meanwhile, and says so.
CREATE UNLOGGED TABLE IF NOT EXISTS rowcast.listeners (
    name      text PRIMARY KEY,
    position  txid_snapshot NOT NULL,
    expires   timestamptz NOT NULL
);

REVOKE ALL ON rowcast.listeners FROM PUBLIC;

-- Every name that registered, and when it was last seen (at registration, then at
-- most hourly by its heartbeat): LOGGED, unlike the tables above, so a listener that
-- finds no registration under its name after a restart (its row dropped past its
-- timeout, or rowcast.listeners emptied by a crash) knows it was a listener before
-- and says that it may have missed changes. A name not seen for 30 days is forgotten.
CREATE TABLE IF NOT EXISTS rowcast.listener_names (
    name text PRIMARY KEY,
    seen timestamptz NOT NULL
);

-- (Its column was named `registered` for a while before it was released.)
DO $names$ BEGIN
    IF EXISTS (SELECT 1 FROM pg_attribute WHERE attrelid = 'rowcast.listener_names'::regclass AND attname = 'registered' AND NOT attisdropped) THEN
        ALTER TABLE rowcast.listener_names RENAME COLUMN registered TO seen;
    END IF;
END $names$;

REVOKE ALL ON rowcast.listener_names FROM PUBLIC;

-- The statement-level trigger function for ordinary tables.
--
-- SECURITY DEFINER: a writer needs no privilege on rowcast.changes. The SET clauses
-- pin every setting that shapes to_json's output (TimeZone for timestamptz,
-- DateStyle for values output as text such as ranges, IntervalStyle, bytea_output,
-- extra_float_digits), so the writer's own session
-- settings change nothing, and search_path so no object of the writer's can stand
-- in for one of PostgreSQL's.
--
-- to_json, not to_jsonb: the same JSON value as to_jsonb(row) (the contract), but a
-- json column is embedded as written, so a value jsonb rejects (such as "\u0000")
-- cannot fail the writer; it is also cheaper, and its text is the one replication
-- mode produces from pgoutput (no spaces after ':' and ',').
--
-- No EXCEPTION block: each would open a subtransaction per statement, and more than
-- 64 of them in one transaction slow every snapshot on the server. Nothing here can
-- fail where the writer's own statement would not (no privilege is needed, no value
-- is rejected, no size is limited below PostgreSQL's 1 GB per value).
--
-- No name of the captured table can capture one of the function's: the queries over
-- the transition tables name no column, take the row as `r.*` (a column named `r`
-- would stand for the row in `to_json(r)`), and `#variable_conflict use_variable`
-- makes every unqualified name that is one of the function's variables (`batch`,
-- `base`, TG_TABLE_NAME…) that variable, whatever columns the table has (the default
-- refused such a statement as ambiguous, failing the writer). Nothing the writer's
-- session sets is read.
--
-- Nothing is read from rowcast.changes either: a change is numbered by its statement
-- (`seq`) and its place in it. A SERIALIZABLE writer's reads are tracked, and two of
-- them each reading rowcast.changes where the other wrote failed one of the pair.
--
-- The NOTIFY is left out on a server that allows prepared transactions
-- (max_prepared_transactions > 0): PostgreSQL refuses to PREPARE a transaction that
-- sent one. A listener there reads new changes on its own, every 100 ms.
CREATE OR REPLACE FUNCTION rowcast.capture_statement() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET bytea_output = 'hex'
SET extra_float_digits = 1
AS $function$
#variable_conflict use_variable
DECLARE
    batch bigint;
    statement bigint;
    writer int;
    written bigint;
BEGIN
    -- Nobody listens: nothing is written, nothing accumulates.
    PERFORM FROM rowcast.listeners l WHERE l.expires > now() LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    batch := txid_current();
    statement := nextval('rowcast.statement_seq');
    writer := pg_backend_pid();
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rowcast.changes (batch, seq, n, pid, op, schema_name, table_name, row_json)
        SELECT batch, statement, row_number() OVER (), writer, 'insert', TG_TABLE_SCHEMA, TG_TABLE_NAME, to_json(r.*)
        FROM rowcast_new r;
    ELSIF TG_OP = 'UPDATE' THEN
        -- The transition tables hold the old and new versions of each row in the
        -- same order: pair them by position (a key may have changed).
        INSERT INTO rowcast.changes (batch, seq, n, pid, op, schema_name, table_name, row_json, old_json)
        SELECT batch, statement, nw.k, writer, 'update', TG_TABLE_SCHEMA, TG_TABLE_NAME, nw.j, od.j
        FROM (SELECT row_number() OVER () AS k, to_json(r.*) AS j FROM rowcast_new r) nw
        JOIN (SELECT row_number() OVER () AS k, to_json(r.*) AS j FROM rowcast_old r) od ON od.k = nw.k;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO rowcast.changes (batch, seq, n, pid, op, schema_name, table_name, old_json)
        SELECT batch, statement, row_number() OVER (), writer, 'delete', TG_TABLE_SCHEMA, TG_TABLE_NAME, to_json(r.*)
        FROM rowcast_old r;
    ELSE
        INSERT INTO rowcast.changes (batch, seq, n, pid, op, schema_name, table_name)
        VALUES (batch, statement, 1, writer, 'truncate', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    END IF;
    GET DIAGNOSTICS written = ROW_COUNT;
    IF written > 0 AND current_setting('max_prepared_transactions') = '0' THEN
        PERFORM pg_notify('rowcast', batch::text);
    END IF;
    RETURN NULL;
END
$function$;

-- The row-level trigger function for partitioned tables (see the top of the file):
-- the same rows and the same notification, one INSERT per row. NEW and OLD are rows,
-- not queries over the table: no column is in scope here.
CREATE OR REPLACE FUNCTION rowcast.capture_row() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
SET TimeZone = 'UTC'
SET DateStyle = 'ISO, MDY'
SET IntervalStyle = 'postgres'
SET bytea_output = 'hex'
SET extra_float_digits = 1
AS $function$
#variable_conflict use_variable
DECLARE
    batch bigint;
    statement bigint;
BEGIN
    PERFORM FROM rowcast.listeners l WHERE l.expires > now() LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    batch := txid_current();
    -- Each row is a statement of its own here (the trigger fires once per row).
    statement := nextval('rowcast.statement_seq');
    IF TG_OP = 'INSERT' THEN
        INSERT INTO rowcast.changes (batch, seq, n, pid, op, schema_name, table_name, row_json)
        VALUES (batch, statement, 1, pg_backend_pid(), 'insert', TG_TABLE_SCHEMA, TG_TABLE_NAME, to_json(NEW));
    ELSIF TG_OP = 'UPDATE' THEN
        INSERT INTO rowcast.changes (batch, seq, n, pid, op, schema_name, table_name, row_json, old_json)
        VALUES (batch, statement, 1, pg_backend_pid(), 'update', TG_TABLE_SCHEMA, TG_TABLE_NAME, to_json(NEW), to_json(OLD));
    ELSE
        INSERT INTO rowcast.changes (batch, seq, n, pid, op, schema_name, table_name, old_json)
        VALUES (batch, statement, 1, pg_backend_pid(), 'delete', TG_TABLE_SCHEMA, TG_TABLE_NAME, to_json(OLD));
    END IF;
    IF current_setting('max_prepared_transactions') = '0' THEN
        PERFORM pg_notify('rowcast', batch::text);
    END IF;
    RETURN NULL;
END
$function$;

-- The commit-time mark for tables with a DEFERRABLE unique, primary key or exclusion
-- constraint. Transactions are ordered by their last statement because a statement
-- that writes a row another transaction wrote waits for that one to commit; a
-- deferrable key is checked at commit instead, so a transaction that inserts a key
-- another one deletes waits only there, after its statements. This constraint
-- trigger, deferred like the key and named after PostgreSQL's own checks (which fire
-- first for each row), numbers a statement-less change (`op` 'order', never
-- delivered) after each row's check, so the transaction's last number is taken after
-- every wait its checks made. One such row per inserted or updated row.
CREATE OR REPLACE FUNCTION rowcast.capture_order() RETURNS trigger
LANGUAGE plpgsql
SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $function$
#variable_conflict use_variable
BEGIN
    PERFORM FROM rowcast.listeners l WHERE l.expires > now() LIMIT 1;
    IF NOT FOUND THEN
        RETURN NULL;
    END IF;
    INSERT INTO rowcast.changes (batch, seq, n, pid, op, schema_name, table_name)
    VALUES (txid_current(), nextval('rowcast.statement_seq'), 0, pg_backend_pid(), 'order', TG_TABLE_SCHEMA, TG_TABLE_NAME);
    RETURN NULL;
END
$function$;

-- Attaches the capture triggers to a table, replacing any it had (so running it
-- again, or on a table set up by an earlier rowcast, leaves exactly these).
--
-- Every trigger fires ALWAYS: also in a session that writes as a replica
-- (session_replication_role = replica: a logical-replication subscriber's apply
-- worker, tools that load data), whose changes replication mode sees in the WAL.
--
-- TRUNCATE: PostgreSQL fires a statement-level trigger only on the table it is
-- created on, never a clone on partitions, and a TRUNCATE of a partitioned table
-- fires the truncate triggers of each partition it empties. So a partitioned table's
-- truncate trigger is on each of its leaf partitions, and none on the table itself:
-- a partition truncated alone is captured, and a TRUNCATE of the whole table is one
-- change per partition, as replication mode reports it (the partitions hold the
-- rows). A partition created later has the row trigger (PostgreSQL clones it) but
-- not this one until the table is set up again; `rowcast serve` warns of it.
CREATE OR REPLACE FUNCTION rowcast.attach(target regclass) RETURNS void
LANGUAGE plpgsql
SET search_path = pg_catalog, pg_temp
SET client_min_messages = warning
AS $function$
DECLARE
    trigger_name text;
    leaf regclass;
    cloned boolean;
BEGIN
    -- A partition of a table already set up has clones of that table's triggers, which
    -- PostgreSQL keeps (they can only be dropped with the parent's): it is captured
    -- already, by the row trigger, and only its own truncate trigger is made here.
    -- (A clone has tgparentid from PostgreSQL 13 on; before, it is tgisinternal.)
    cloned := EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = target AND t.tgname = 'rowcast_capture'
        AND (t.tgisinternal OR coalesce((to_jsonb(t) ->> 'tgparentid')::oid, 0) <> 0));
    FOREACH trigger_name IN ARRAY ARRAY['rowcast_capture', 'rowcast_capture_insert',
        'rowcast_capture_update', 'rowcast_capture_delete', 'rowcast_capture_truncate', 'rowcast_capture_order'] LOOP
        CONTINUE WHEN EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = target AND t.tgname = trigger_name
            AND (t.tgisinternal OR coalesce((to_jsonb(t) ->> 'tgparentid')::oid, 0) <> 0));
        EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', trigger_name, target);
    END LOOP;
    -- A partition set up before this table has row triggers of its own under the names
    -- this table's clones take, which PostgreSQL would refuse to clone over: they
    -- give way (their own clones, further down, go with them).
    IF (SELECT relkind FROM pg_class WHERE oid = target) = 'p' AND NOT cloned THEN
        FOR leaf IN
            WITH RECURSIVE tree (relid) AS (
                SELECT i.inhrelid FROM pg_inherits i WHERE i.inhparent = target
                UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid
            )
            SELECT relid::regclass FROM tree
        LOOP
            FOREACH trigger_name IN ARRAY ARRAY['rowcast_capture', 'rowcast_capture_order'] LOOP
                CONTINUE WHEN EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = leaf AND t.tgname = trigger_name
                    AND (t.tgisinternal OR coalesce((to_jsonb(t) ->> 'tgparentid')::oid, 0) <> 0));
                -- A partition's own mark (for a deferrable key of its own) stays unless
                -- this table makes one, whose clone takes its place.
                CONTINUE WHEN trigger_name = 'rowcast_capture_order' AND NOT EXISTS (SELECT 1 FROM pg_constraint
                    WHERE conrelid = target AND condeferrable AND contype IN ('p', 'u', 'x'));
                EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', trigger_name, leaf);
            END LOOP;
        END LOOP;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = target AND condeferrable AND contype IN ('p', 'u', 'x'))
        AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = target AND t.tgname = 'rowcast_capture_order') THEN
        EXECUTE format('CREATE CONSTRAINT TRIGGER rowcast_capture_order AFTER INSERT OR UPDATE ON %s '
            'DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rowcast.capture_order()', target);
        EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER rowcast_capture_order', target);
    END IF;
    IF cloned OR (SELECT relkind FROM pg_class WHERE oid = target) = 'p' THEN
        IF NOT cloned THEN
            EXECUTE format('CREATE TRIGGER rowcast_capture AFTER INSERT OR UPDATE OR DELETE ON %s '
                'FOR EACH ROW EXECUTE FUNCTION rowcast.capture_row()', target);
            -- Also on the clones PostgreSQL made on the partitions.
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER rowcast_capture', target);
        END IF;
        FOR leaf IN
            WITH RECURSIVE tree (relid) AS (
                SELECT target::oid
                UNION ALL SELECT i.inhrelid FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid
            )
            SELECT tree.relid::regclass FROM tree JOIN pg_class c ON c.oid = tree.relid WHERE c.relkind = 'r'
        LOOP
            -- A table set up on its own and attached as a partition later kept its
            -- statement triggers beside the clone: each change was written twice.
            FOREACH trigger_name IN ARRAY ARRAY['rowcast_capture_insert', 'rowcast_capture_update', 'rowcast_capture_delete'] LOOP
                EXECUTE format('DROP TRIGGER IF EXISTS %I ON %s', trigger_name, leaf);
            END LOOP;
            EXECUTE format('DROP TRIGGER IF EXISTS rowcast_capture_truncate ON %s', leaf);
            EXECUTE format('CREATE TRIGGER rowcast_capture_truncate AFTER TRUNCATE ON %s '
                'FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture_statement()', leaf);
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER rowcast_capture_truncate', leaf);
        END LOOP;
        -- A partition with a deferrable key of its own, which no clone marks, gets its
        -- own commit-time mark.
        -- Parents come first, and a mark made on one is cloned onto its partitions (whose
        -- copies of its key are not their own: conparentid), so each is looked at again.
        FOR leaf IN
            WITH RECURSIVE tree (relid, depth) AS (
                SELECT i.inhrelid, 1 FROM pg_inherits i WHERE i.inhparent = target
                UNION ALL SELECT i.inhrelid, tree.depth + 1 FROM pg_inherits i JOIN tree ON i.inhparent = tree.relid
            )
            SELECT relid::regclass FROM tree
            WHERE EXISTS (SELECT 1 FROM pg_constraint WHERE conrelid = tree.relid AND condeferrable AND contype IN ('p', 'u', 'x') AND conparentid = 0)
            ORDER BY depth
        LOOP
            CONTINUE WHEN EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgrelid = leaf AND t.tgname = 'rowcast_capture_order');
            EXECUTE format('CREATE CONSTRAINT TRIGGER rowcast_capture_order AFTER INSERT OR UPDATE ON %s '
                'DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION rowcast.capture_order()', leaf);
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER rowcast_capture_order', leaf);
        END LOOP;
    ELSE
        EXECUTE format('CREATE TRIGGER rowcast_capture_insert AFTER INSERT ON %s '
            'REFERENCING NEW TABLE AS rowcast_new FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture_statement()', target);
        EXECUTE format('CREATE TRIGGER rowcast_capture_update AFTER UPDATE ON %s '
            'REFERENCING OLD TABLE AS rowcast_old NEW TABLE AS rowcast_new FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture_statement()', target);
        EXECUTE format('CREATE TRIGGER rowcast_capture_delete AFTER DELETE ON %s '
            'REFERENCING OLD TABLE AS rowcast_old FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture_statement()', target);
        EXECUTE format('CREATE TRIGGER rowcast_capture_truncate AFTER TRUNCATE ON %s '
            'FOR EACH STATEMENT EXECUTE FUNCTION rowcast.capture_statement()', target);
        FOREACH trigger_name IN ARRAY ARRAY['rowcast_capture_insert', 'rowcast_capture_update',
            'rowcast_capture_delete', 'rowcast_capture_truncate'] LOOP
            EXECUTE format('ALTER TABLE %s ENABLE ALWAYS TRIGGER %I', target, trigger_name);
        END LOOP;
    END IF;
END
$function$;

REVOKE ALL ON FUNCTION rowcast.attach(regclass) FROM PUBLIC;

-- Upgrade from rowcast 0.1, whose row-level rowcast.capture() put the row itself in
-- the NOTIFY payload (readable and forgeable by any role): move every table it
-- captured to the triggers above, in this transaction, then drop it. A writer
-- holding one of those tables waits for this transaction, and its changes are
-- either all before it (old payloads, which rowcast still reads) or all after.
DO $upgrade$
DECLARE
    target regclass;
BEGIN
    IF to_regprocedure('rowcast.capture()') IS NOT NULL THEN
        FOR target IN
            -- Not the copies PostgreSQL made on partitions (tgparentid, from 13 on;
            -- before 13 they are tgisinternal): dropping the parent's drops them.
            SELECT DISTINCT t.tgrelid::regclass FROM pg_trigger t
            WHERE t.tgfoid = 'rowcast.capture()'::regprocedure AND NOT t.tgisinternal
                AND coalesce((to_jsonb(t) ->> 'tgparentid')::oid, 0) = 0
        LOOP
            PERFORM rowcast.attach(target);
        END LOOP;
        DROP FUNCTION rowcast.capture();
        -- The new triggers write only while a listener is live, and a rowcast running
        -- now registers once it hears of this upgrade: this registration keeps what is
        -- committed meanwhile, and a listener registering for the first time starts
        -- from its position. It expires like any listener.
        INSERT INTO rowcast.listeners (name, position, expires)
        VALUES ('upgrade', txid_current_snapshot(), now() + interval '10 minutes')
        ON CONFLICT (name) DO UPDATE SET position = excluded.position, expires = excluded.expires;
        -- Tells a listening rowcast, in commit order, that no old payload follows.
        PERFORM pg_notify('rowcast', 'upgraded');
    END IF;
END
$upgrade$;

DO $lock$ BEGIN PERFORM pg_advisory_unlock(32210705904137076); END $lock$;
