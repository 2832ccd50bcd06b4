-- The change feed: every committed change of a read-model row, in commit order, with the row
-- before and after (as JSON), the event that caused it and why.
--
-- Capture is generic: a read-model table joins the feed with one statement,
--     SELECT capture_changes('invoices', 'id');
-- which attaches AFTER statement triggers (capture_change) staging each row change, and the
-- transaction's commit nets them (flush_changes, a deferred constraint trigger that fires once
-- per transaction): per row, the
-- state before the transaction's first write and after its last; rows written back unchanged
-- (a rebuild's delete-all and insert-all, an upsert of the same values) emit nothing. So the
-- feed holds exactly the changes that committed, in the transaction that made them.
--
-- IDs (the feed's cursors) are dense and commit in order: the flush takes the single row of
-- `change_head` FOR UPDATE at commit, numbers the transaction's changes from it and advances
-- it, as `log_head` does for the log. A reader tailing `id > cursor` never skips a change
-- committed late. The transaction may say why it writes in the local setting
-- `ledger.change_cause` (`event` when unset; `rebuild`, `plans_reload`, `grace_expired`).

CREATE TABLE change_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    id bigint NOT NULL CHECK (id >= 0)
);
INSERT INTO change_head (id) VALUES (0);

CREATE TABLE changes (
    id bigint PRIMARY KEY CHECK (id > 0),
    read_model text NOT NULL,
    key text NOT NULL,
    tenant_id text,
    -- `event`, `rebuild`, `plans_reload`, `grace_expired`.
    cause text NOT NULL,
    -- The row's `last_event_id` after the change (before it, for a deletion), when it has one.
    event_id text,
    -- That event's log position.
    position bigint,
    before jsonb,
    after jsonb,
    recorded_at timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX changes_tenant ON changes (tenant_id, id);
CREATE INDEX changes_read_model ON changes (read_model, id);

-- Row changes of transactions not committed yet. Unlogged: its rows never outlive their
-- transaction (the flush deletes them before commit; a rolled-back transaction's rows are
-- invisible and vacuumed), so a crash loses nothing of value.
CREATE UNLOGGED TABLE change_staging (
    seq bigint GENERATED ALWAYS AS IDENTITY,
    xact xid8 NOT NULL DEFAULT pg_current_xact_id(),
    read_model text NOT NULL,
    key text NOT NULL,
    before jsonb,
    after jsonb
);
CREATE INDEX change_staging_xact ON change_staging (xact, seq);

-- Transactions that staged changes and must flush them at commit: one row each, whose
-- deferred constraint trigger runs the flush once per transaction (not once per row).
CREATE UNLOGGED TABLE change_flush_requests (
    xact xid8 NOT NULL DEFAULT pg_current_xact_id()
);

-- Asks for the commit-time flush, once per transaction, when `staged` rows were staged.
CREATE FUNCTION request_flush(staged bigint) RETURNS void LANGUAGE plpgsql AS $$
BEGIN
    IF staged > 0 AND current_setting('ledger.flush_requested', true) IS DISTINCT FROM 'yes' THEN
        INSERT INTO change_flush_requests DEFAULT VALUES;
        PERFORM set_config('ledger.flush_requested', 'yes', true);
    END IF;
END
$$;

-- AFTER statement triggers (one per operation: PostgreSQL allows transition tables on triggers
-- of a single event) with the statement's old and new rows as transition tables; TG_ARGV[0]
-- names the key column. Set-based: one INSERT per statement, not a function call per row.
-- Times in the JSON are rendered in UTC (RFC 3339), whatever the session's time zone. The
-- transaction's first staged change also requests the flush (the transaction-local setting
-- `ledger.flush_requested` remembers it; a rolled-back savepoint undoes both together).
CREATE FUNCTION capture_change() RETURNS trigger LANGUAGE plpgsql
    SET timezone = 'UTC' SET work_mem = '64MB' AS $$
DECLARE
    staged bigint;
BEGIN
    IF current_setting('ledger.capture_suspended', true) = 'on' THEN
        RETURN NULL; -- a bulk rewrite: capture_resume() stages the difference at once
    END IF;
    IF TG_OP = 'INSERT' THEN
        INSERT INTO change_staging (read_model, key, before, after)
        SELECT TG_TABLE_NAME, n.row ->> TG_ARGV[0], NULL, n.row
        FROM (SELECT to_jsonb(t) AS row FROM new_rows t) n;
    ELSIF TG_OP = 'DELETE' THEN
        INSERT INTO change_staging (read_model, key, before, after)
        SELECT TG_TABLE_NAME, o.row ->> TG_ARGV[0], o.row, NULL
        FROM (SELECT to_jsonb(t) AS row FROM old_rows t) o;
    ELSE
        -- Rows are joined and compared natively, and only those that differ are rendered.
        EXECUTE format(
            'INSERT INTO change_staging (read_model, key, before, after)
             SELECT %L, coalesce(n.%2$I, o.%2$I)::text,
                    CASE WHEN o IS NULL THEN NULL ELSE to_jsonb(o) END,
                    CASE WHEN n IS NULL THEN NULL ELSE to_jsonb(n) END
             FROM old_rows o FULL JOIN new_rows n ON o.%2$I = n.%2$I
             WHERE o IS DISTINCT FROM n', TG_TABLE_NAME, TG_ARGV[0]);
    END IF;
    GET DIAGNOSTICS staged = ROW_COUNT;
    PERFORM request_flush(staged);
    RETURN NULL;
END
$$;

-- Deferred to commit: nets the transaction's staged changes into `changes` and notifies
-- `ledger_changes` with the new head.
CREATE FUNCTION flush_changes() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    head bigint;
    added bigint;
BEGIN
    DELETE FROM change_flush_requests WHERE xact = pg_current_xact_id();
    PERFORM set_config('ledger.flush_requested', '', true);
    SELECT id INTO head FROM change_head FOR UPDATE;
    WITH staged AS (
        DELETE FROM change_staging WHERE xact = pg_current_xact_id() RETURNING *
    ), net AS (
        SELECT read_model, key,
               (array_agg(before ORDER BY seq))[1] AS before,
               (array_agg(after ORDER BY seq DESC))[1] AS after
        FROM staged GROUP BY read_model, key
    ), effective AS (
        SELECT n.*, coalesce(n.after, n.before) ->> 'last_event_id' AS event_id
        FROM net n WHERE n.before IS DISTINCT FROM n.after
    )
    INSERT INTO changes (id, read_model, key, tenant_id, cause, event_id, position, before, after)
    SELECT head + row_number() OVER (ORDER BY e.position NULLS LAST, f.read_model, f.key),
           f.read_model, f.key,
           coalesce(f.after ->> 'tenant_id', f.before ->> 'tenant_id'),
           coalesce(nullif(current_setting('ledger.change_cause', true), ''), 'event'),
           f.event_id, e.position, f.before, f.after
    FROM effective f LEFT JOIN events e ON e.event_id = f.event_id;
    GET DIAGNOSTICS added = ROW_COUNT;
    IF added > 0 THEN
        UPDATE change_head SET id = head + added;
        PERFORM pg_notify('ledger_changes', (head + added)::text);
    END IF;
    RETURN NULL;
END
$$;

CREATE CONSTRAINT TRIGGER change_flush AFTER INSERT ON change_flush_requests
    DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION flush_changes();

-- The tables in the feed, with their key columns.
CREATE TABLE captured_tables (
    read_model regclass PRIMARY KEY,
    key_column text NOT NULL
);

-- For a transaction that rewrites whole tables (a rebuild deletes and re-inserts every row):
-- snapshots every captured table and suspends the row capture; capture_resume() then stages
-- only the rows that differ, with one join per table instead of two staged rows per row.
CREATE FUNCTION capture_suspend() RETURNS void LANGUAGE plpgsql AS $$
DECLARE
    captured record;
BEGIN
    FOR captured IN SELECT read_model FROM captured_tables LOOP
        EXECUTE format('CREATE TEMP TABLE %I ON COMMIT DROP AS SELECT * FROM %s',
            'capture_before_' || captured.read_model::text, captured.read_model);
    END LOOP;
    PERFORM set_config('ledger.capture_suspended', 'on', true);
END
$$;

CREATE FUNCTION capture_resume() RETURNS void LANGUAGE plpgsql
    SET timezone = 'UTC' SET work_mem = '64MB' AS $$
DECLARE
    captured record;
    staged bigint;
BEGIN
    PERFORM set_config('ledger.capture_suspended', '', true);
    FOR captured IN SELECT read_model, key_column FROM captured_tables LOOP
        EXECUTE format(
            'INSERT INTO change_staging (read_model, key, before, after)
             SELECT %L, coalesce(n.%2$I, o.%2$I)::text,
                    CASE WHEN o IS NULL THEN NULL ELSE to_jsonb(o) END,
                    CASE WHEN n IS NULL THEN NULL ELSE to_jsonb(n) END
             FROM %3$I o FULL JOIN %4$s n ON o.%2$I = n.%2$I
             WHERE o IS DISTINCT FROM n',
            captured.read_model::text, captured.key_column,
            'capture_before_' || captured.read_model::text, captured.read_model);
        GET DIAGNOSTICS staged = ROW_COUNT;
        PERFORM request_flush(staged);
        EXECUTE format('DROP TABLE %I', 'capture_before_' || captured.read_model::text);
    END LOOP;
END
$$;

-- Attaches the feed to a read-model table whose rows are identified by `key_column`.
CREATE FUNCTION capture_changes(read_model regclass, key_column text) RETURNS void
LANGUAGE plpgsql AS $$
BEGIN
    INSERT INTO captured_tables (read_model, key_column) VALUES (read_model, key_column);
    EXECUTE format(
        'CREATE TRIGGER %I AFTER INSERT ON %s REFERENCING NEW TABLE AS new_rows
         FOR EACH STATEMENT EXECUTE FUNCTION capture_change(%L)',
        read_model::text || '_insert_changes', read_model, key_column);
    EXECUTE format(
        'CREATE TRIGGER %I AFTER UPDATE ON %s REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
         FOR EACH STATEMENT EXECUTE FUNCTION capture_change(%L)',
        read_model::text || '_update_changes', read_model, key_column);
    EXECUTE format(
        'CREATE TRIGGER %I AFTER DELETE ON %s REFERENCING OLD TABLE AS old_rows
         FOR EACH STATEMENT EXECUTE FUNCTION capture_change(%L)',
        read_model::text || '_delete_changes', read_model, key_column);
END
$$;

SELECT capture_changes('tenant_pricing', 'tenant_id');
SELECT capture_changes('checkout_sessions', 'id');
SELECT capture_changes('customers', 'id');
