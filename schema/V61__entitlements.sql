-- Entitlements: what each tenant may use, derived from `tenant_pricing` and the plans file
-- (`LEDGER_PLANS_FILE`, see src/entitlements/). Rewritten by the projector in the transaction
-- that changes the tenant's pricing, by a plans reload, and when a grace period expires; every
-- change appears in the feed like any read model's.

-- The plans file in force, as loaded (one row): every instance and the projector read the same.
CREATE TABLE plans (
    singleton boolean PRIMARY KEY DEFAULT true CHECK (singleton),
    document jsonb NOT NULL,
    -- SHA-256 of the file's bytes, hex, to tell whether a reload changed anything.
    source_sha256 text NOT NULL,
    loaded_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE entitlements (
    tenant_id text PRIMARY KEY,
    -- The plan the tenant's price maps to; null when the price is in no plan.
    plan text,
    features jsonb NOT NULL,
    -- `full`, `grace` or `none`.
    access text NOT NULL CHECK (access IN ('full', 'grace', 'none')),
    reason text NOT NULL,
    grace_until timestamptz,
    price_id text,
    status text,
    last_event_id text NOT NULL
);
CREATE INDEX entitlements_plan ON entitlements (plan, tenant_id);
CREATE INDEX entitlements_grace ON entitlements (grace_until) WHERE access = 'grace';

SELECT capture_changes('entitlements', 'tenant_id');
