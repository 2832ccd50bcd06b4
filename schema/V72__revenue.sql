-- The revenue read model (DESIGN.md "Revenue"): every tenant's MRR movements, rendered by the
-- fold (projections/src/money/mrr.rs) and written by the projector like the other read models,
-- so the revenue routes aggregate rows instead of re-folding the log. src/revenue.rs is the
-- only SQL over these tables. Amounts are bigint counts of the currency's minor unit.

-- Each (tenant, currency) whose MRR ever changed, even when its changes merged into no
-- movement: the revenue months list a currency once some tenant had MRR in it.
CREATE TABLE revenue_streams (
    tenant_id text NOT NULL,
    currency text NOT NULL,
    PRIMARY KEY (tenant_id, currency)
);

-- One movement of a tenant's MRR in one currency: `at` is when it took effect (its first
-- change; changes within an hour merge), `event_id` the event of its last change.
CREATE TABLE revenue_movements (
    tenant_id text NOT NULL,
    currency text NOT NULL,
    at timestamptz NOT NULL,
    kind text NOT NULL
        CHECK (kind IN ('new', 'reactivation', 'expansion', 'contraction', 'churn')),
    mrr_before bigint NOT NULL,
    mrr_after bigint NOT NULL,
    event_id text NOT NULL,
    PRIMARY KEY (tenant_id, currency, at)
);

CREATE INDEX revenue_movements_at ON revenue_movements (at);
