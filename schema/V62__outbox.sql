-- Outgoing webhooks (Standard Webhooks): endpoints and every delivery attempt.
--
-- The change feed is the outbox: each endpoint keeps a cursor into `changes` (the last change
-- delivered to it, or skipped by its filter), and the dispatcher sends what follows, in feed
-- order, one message at a time per endpoint. A change committed is therefore delivered even
-- if the service dies right after: nothing is queued outside the database.

CREATE TABLE webhook_endpoints (
    endpoint_id uuid PRIMARY KEY,
    url text NOT NULL,
    -- `whsec_` + base64 of the key: the dispatcher needs it to sign. Shown once, at creation.
    secret text NOT NULL,
    -- Read models whose changes this endpoint receives; null: all.
    read_models text[],
    -- `api` (POST /api/billing/admin/endpoints) or `config` (LEDGER_WEBHOOK_ENDPOINTS).
    source text NOT NULL CHECK (source IN ('api', 'config')),
    -- Last change ID delivered (or skipped by the filter).
    cursor bigint NOT NULL CHECK (cursor >= 0),
    -- Failed attempts of the message after `cursor`, and when to try it next.
    failed_attempts integer NOT NULL DEFAULT 0,
    next_attempt_at timestamptz,
    disabled_at timestamptz,
    disabled_reason text,
    created_at timestamptz NOT NULL DEFAULT now()
);
CREATE UNIQUE INDEX webhook_endpoints_config_url ON webhook_endpoints (url) WHERE source = 'config';

CREATE TABLE webhook_attempts (
    attempt_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    endpoint_id uuid NOT NULL REFERENCES webhook_endpoints (endpoint_id) ON DELETE CASCADE,
    change_id bigint NOT NULL,
    -- The `webhook-id` header: the same for every attempt of one message.
    message_id text NOT NULL,
    attempted_at timestamptz NOT NULL DEFAULT now(),
    -- The receiver's HTTP status; null when no answer came (timeout, refused connection).
    status_code integer,
    duration_ms integer NOT NULL,
    error text,
    -- The dispatcher's instance ID.
    instance text NOT NULL
);
CREATE INDEX webhook_attempts_endpoint ON webhook_attempts (endpoint_id, attempt_id);
