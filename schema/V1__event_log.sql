-- The event log: one row per Stripe event ID, never updated or deleted.
--
-- Positions are dense and assigned in commit order: every append takes the single row of
-- `log_head` FOR UPDATE, numbers its events from it and advances it in the same transaction, so
-- a later position can only commit after every earlier one. A reader that tails
-- `position > checkpoint` therefore never skips an event committed late (the gap problem of
-- identity columns, whose values are taken at insert time but become visible at commit time).

-- Tamper evidence: each event's `chain_hash` is SHA-256 over the previous event's chain hash,
-- its position, its event ID and the SHA-256 of its stored body (see src/chain.rs). The head
-- row keeps the latest, so `billing-ledger verify` can recompute the whole chain.
CREATE TABLE log_head (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    position bigint NOT NULL CHECK (position >= 0),
    chain_hash bytea NOT NULL
);
INSERT INTO log_head (position, chain_hash) VALUES (0, '\x0000000000000000000000000000000000000000000000000000000000000000');

CREATE TABLE events (
    position bigint PRIMARY KEY CHECK (position > 0),
    event_id text NOT NULL UNIQUE,
    type text NOT NULL,
    created timestamptz NOT NULL,
    api_version text,
    livemode boolean NOT NULL,
    account text,
    object_id text,
    object_type text,
    -- The request body exactly as received (webhook) or the line as read (import).
    body bytea NOT NULL,
    body_sha256 bytea NOT NULL,
    received_at timestamptz NOT NULL,
    source text NOT NULL CHECK (source IN ('webhook', 'import')),
    -- From the Stripe-Signature header that verified the first delivery (null when imported).
    signature_timestamp timestamptz,
    -- Position (0-based) in STRIPE_WEBHOOK_SECRET of the secret that matched; never the secret.
    secret_index smallint,
    signature text,
    chain_hash bytea NOT NULL
);
CREATE INDEX events_type_position ON events (type, position);
CREATE INDEX events_object_position ON events (object_id, position);
CREATE INDEX events_created ON events (created, position);

-- Every verified delivery, duplicates included.
CREATE TABLE deliveries (
    delivery_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    event_id text NOT NULL REFERENCES events (event_id),
    received_at timestamptz NOT NULL,
    duplicate boolean NOT NULL,
    source text NOT NULL CHECK (source IN ('webhook', 'import')),
    signature_timestamp timestamptz,
    secret_index smallint,
    signature text,
    body_sha256 bytea NOT NULL,
    -- The body, only when it differs from events.body (another endpoint's API version, say).
    body bytea
);
CREATE INDEX deliveries_event ON deliveries (event_id, delivery_id);

-- The database itself refuses to change the log. ENABLE ALWAYS keeps the triggers firing under
-- session_replication_role = replica, which otherwise skips ordinary triggers.
CREATE FUNCTION refuse_log_change() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'the % table is append-only: % refused', TG_TABLE_NAME, TG_OP
        USING ERRCODE = 'insufficient_privilege';
END
$$;

CREATE TRIGGER events_append_only BEFORE UPDATE OR DELETE ON events
    FOR EACH ROW EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER events_no_truncate BEFORE TRUNCATE ON events
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER deliveries_append_only BEFORE UPDATE OR DELETE ON deliveries
    FOR EACH ROW EXECUTE FUNCTION refuse_log_change();
CREATE TRIGGER deliveries_no_truncate BEFORE TRUNCATE ON deliveries
    FOR EACH STATEMENT EXECUTE FUNCTION refuse_log_change();
ALTER TABLE events ENABLE ALWAYS TRIGGER events_append_only;
ALTER TABLE events ENABLE ALWAYS TRIGGER events_no_truncate;
ALTER TABLE deliveries ENABLE ALWAYS TRIGGER deliveries_append_only;
ALTER TABLE deliveries ENABLE ALWAYS TRIGGER deliveries_no_truncate;
