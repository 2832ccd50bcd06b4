-- Reconciliation with Stripe's Events API (src/reconcile/).
--
-- Events fetched from `GET /v1/events` with the account's secret key are appended like any
-- other, under their own source: `reconcile` (not signature-verified; Stripe's API rendered
-- their JSON, so their bytes differ from the webhook's). Only the CHECKs widen; no log row
-- changes.
ALTER TABLE events DROP CONSTRAINT events_source_check;
ALTER TABLE events ADD CONSTRAINT events_source_check
    CHECK (source IN ('webhook', 'import', 'reconcile'));
ALTER TABLE deliveries DROP CONSTRAINT deliveries_source_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_source_check
    CHECK (source IN ('webhook', 'import', 'reconcile'));

-- One row per reconciliation run (the `reconcile` command's and the service's), kept as the
-- history behind `GET /api/billing/admin/reconcile`. A run is inserted `running` and finished
-- once (`succeeded` or `failed`); the counts describe what Stripe listed in the window.
CREATE TABLE reconcile_runs (
    run_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    -- `interval` (the service's timer) or `command` (billing-ledger reconcile).
    trigger text NOT NULL CHECK (trigger IN ('interval', 'command')),
    instance_id text NOT NULL,
    started_at timestamptz NOT NULL,
    finished_at timestamptz,
    status text NOT NULL CHECK (status IN ('running', 'succeeded', 'failed')),
    -- The window of Stripe's `created` listed: since inclusive, until inclusive.
    window_since timestamptz NOT NULL,
    window_until timestamptz NOT NULL,
    listed_events bigint NOT NULL DEFAULT 0,
    present_events bigint NOT NULL DEFAULT 0,
    appended_events bigint NOT NULL DEFAULT 0,
    -- {"<event type>": <events appended>, ...}
    appended_by_type jsonb NOT NULL DEFAULT '{}',
    -- [{"event_id", "field", "log", "stripe"}, ...]: the log and Stripe disagree; nothing changed.
    differences jsonb NOT NULL DEFAULT '[]',
    -- [{"event_id", "problem"}, ...]: listed by Stripe but not a readable event; not stored.
    unreadable jsonb NOT NULL DEFAULT '[]',
    error text,
    CHECK ((status = 'running') = (finished_at IS NULL))
);
CREATE INDEX reconcile_runs_started ON reconcile_runs (started_at DESC);
