-- `ledger_append` without its NOTIFY: the service announces appends after their commit.
--
-- The function is V50's, unchanged but for the `pg_notify('ledger_events', ...)` it ran last.
-- PostgreSQL serializes the commits of notifying transactions: PreCommit_Notify takes a lock on
-- the notification queue that is held until the commit, WAL flush included, has finished. An
-- append therefore waited, holding the `log_head` row lock, for any other notifying commit
-- (the projector's, which signals `ledger_changes`) to flush, and the projector's commit
-- waited for the append's. Sampled while ingest ran (pg_stat_activity every 20 ms; README,
-- Performance, ingest): 10 of 94 samples of `ledger_append` were `Lock: object` waits on that
-- queue, behind 69 `WALSync` waits for its own flush. `src/event_log.rs` now sends `pg_notify('ledger_events', head)` in a
-- transaction of its own once an append has committed (so a woken projector still finds the
-- rows visible), at most one at a time, coalescing the heads that arrive meanwhile.
--
-- Arguments and answer are V50's: parallel arrays, one element per delivery, in the batch's
-- order; one row per delivery in the same order, (position, already stored).
CREATE OR REPLACE FUNCTION ledger_append(
    p_event_id text[], p_type text[], p_created timestamptz[], p_api_version text[],
    p_livemode boolean[], p_account text[], p_object_id text[], p_object_type text[],
    p_body bytea[], p_body_sha256 bytea[], p_received_at timestamptz[], p_source text[],
    p_signature_timestamp timestamptz[], p_secret_index smallint[], p_signature text[])
RETURNS TABLE (appended_position bigint, appended_duplicate boolean)
LANGUAGE plpgsql VOLATILE AS $$
DECLARE
    v_count integer := coalesce(cardinality(p_event_id), 0);
    v_head bigint;
    v_next bigint;
    v_chain bytea;
    v_id bytea;
    v_found integer;
    v_known_id text[];
    v_known_position bigint[];
    v_known_sha256 bytea[];
    v_new_position bigint[] := array_fill(NULL::bigint, ARRAY[v_count]);
    v_new_chain bytea[] := array_fill(NULL::bytea, ARRAY[v_count]);
    v_position bigint[] := array_fill(NULL::bigint, ARRAY[v_count]);
    v_duplicate boolean[] := array_fill(false, ARRAY[v_count]);
    v_differs boolean[] := array_fill(false, ARRAY[v_count]);
BEGIN
    SELECT h.position, h.chain_hash INTO v_head, v_chain FROM log_head h FOR UPDATE;
    IF NOT FOUND THEN
        RAISE EXCEPTION 'log_head has no row';
    END IF;
    SELECT coalesce(array_agg(e.event_id), '{}'), coalesce(array_agg(e.position), '{}'),
           coalesce(array_agg(e.body_sha256), '{}')
      INTO v_known_id, v_known_position, v_known_sha256
      FROM events e WHERE e.event_id = ANY (p_event_id);
    v_next := v_head;
    FOR i IN 1 .. v_count LOOP
        v_found := array_position(v_known_id, p_event_id[i]);
        IF v_found IS NULL THEN
            v_next := v_next + 1;
            v_id := convert_to(p_event_id[i], 'UTF8');
            v_chain := sha256(v_chain || int8send(v_next) || int4send(octet_length(v_id))
                || v_id || p_body_sha256[i]);
            v_new_position[i] := v_next;
            v_new_chain[i] := v_chain;
            v_position[i] := v_next;
            v_known_id := v_known_id || p_event_id[i];
            v_known_position := v_known_position || v_next;
            v_known_sha256 := v_known_sha256 || p_body_sha256[i];
        ELSE
            v_position[i] := v_known_position[v_found];
            v_duplicate[i] := true;
            v_differs[i] := v_known_sha256[v_found] IS DISTINCT FROM p_body_sha256[i];
        END IF;
    END LOOP;

    INSERT INTO events (position, event_id, type, created, api_version, livemode, account,
        object_id, object_type, body, body_sha256, received_at, source, signature_timestamp,
        secret_index, signature, chain_hash)
    SELECT u.position, u.event_id, u.type, u.created, u.api_version, u.livemode, u.account,
           u.object_id, u.object_type, u.body, u.body_sha256, u.received_at, u.source,
           u.signature_timestamp, u.secret_index, u.signature, u.chain_hash
      FROM unnest(v_new_position, p_event_id, p_type, p_created, p_api_version, p_livemode,
               p_account, p_object_id, p_object_type, p_body, p_body_sha256, p_received_at,
               p_source, p_signature_timestamp, p_secret_index, p_signature, v_new_chain)
           AS u(position, event_id, type, created, api_version, livemode, account, object_id,
               object_type, body, body_sha256, received_at, source, signature_timestamp,
               secret_index, signature, chain_hash)
     WHERE u.position IS NOT NULL;

    INSERT INTO deliveries (event_id, received_at, duplicate, source, signature_timestamp,
        secret_index, signature, body_sha256, body)
    SELECT u.event_id, u.received_at, u.duplicate, u.source, u.signature_timestamp,
           u.secret_index, u.signature, u.body_sha256, CASE WHEN u.differs THEN u.body END
      FROM unnest(p_event_id, p_received_at, v_duplicate, p_source, p_signature_timestamp,
               p_secret_index, p_signature, p_body_sha256, v_differs, p_body)
           WITH ORDINALITY
           AS u(event_id, received_at, duplicate, source, signature_timestamp, secret_index,
               signature, body_sha256, differs, body, ordinal)
     WHERE NOT u.duplicate OR u.source = 'webhook'
     ORDER BY u.ordinal;

    IF v_next > v_head THEN
        UPDATE log_head SET position = v_next, chain_hash = v_chain;
    END IF;

    RETURN QUERY
        SELECT a.position, a.duplicate
          FROM unnest(v_position, v_duplicate) WITH ORDINALITY AS a(position, duplicate, ordinal)
         ORDER BY a.ordinal;
END
$$;
