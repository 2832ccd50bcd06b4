-- Rebuild previews and read models listed one by one (issue 10, points 7 and 8).

-- A preview folds the whole log like a rebuild but never swaps; it keeps what the swap would
-- have changed: per read model, counts of rows added, removed and changed and the first rows of
-- each kind with their before and after values (see src/projector/preview.rs for the shape).
-- `by_command`: run by `billing-ledger rebuild --preview` (which holds the advisory lock
-- PREVIEW_LOCK_KEY while it runs, src/projector/rebuild.rs) rather than by the projector.
ALTER TABLE rebuilds
    ADD COLUMN preview boolean NOT NULL DEFAULT false,
    ADD COLUMN diff jsonb,
    ADD COLUMN by_command boolean NOT NULL DEFAULT false;

-- The fold version that built each read model's rows: written by a rebuild's swap, in its
-- transaction; the live projector's batches keep the version (a changed fold writes new rows
-- over old ones, so the table stays stale until a rebuild).
CREATE TABLE read_model_versions (
    read_model text PRIMARY KEY,
    version integer NOT NULL,
    rebuilt_at timestamptz
);

-- Rows written before this migration were built by the projection's stored version.
INSERT INTO read_model_versions (read_model, version)
SELECT m.name, p.version
FROM projections p,
     unnest(ARRAY['tenant_pricing', 'checkout_sessions', 'customers', 'unresolved_events',
                  'event_tenants', 'entitlements', 'invoices', 'payments', 'refunds', 'disputes',
                  'credit_notes']) AS m(name)
WHERE p.name = 'billing';
