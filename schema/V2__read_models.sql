-- Read models folded from the log by projections/, and the projector's bookkeeping.
-- Everything here can be rebuilt from `events` at any time.

CREATE TABLE projections (
    name text PRIMARY KEY,
    version integer NOT NULL,
    -- Last log position folded into the read models; written in the same transaction as them.
    position bigint NOT NULL DEFAULT 0,
    -- The instance whose projector wrote `position` (its instance ID); the checkpoint advances
    -- only by compare-and-set on (position, owner), so a deposed projector's write rolls back.
    owner text,
    -- Why the projector last stopped (cleared by its next successful batch).
    last_failure text,
    last_failure_at timestamptz,
    updated_at timestamptz NOT NULL DEFAULT now()
);

CREATE TABLE tenant_pricing (
    tenant_id text PRIMARY KEY,
    status text,
    stripe_customer_id text,
    stripe_subscription_id text NOT NULL,
    price_id text,
    quantity bigint,
    current_period_end timestamptz,
    cancel_at_period_end boolean NOT NULL,
    canceled_at timestamptz,
    last_payment_failed_at timestamptz,
    last_paid_at timestamptz,
    last_event_id text NOT NULL,
    updated_at timestamptz NOT NULL,
    resolved_by text NOT NULL
);

CREATE TABLE checkout_sessions (
    id text PRIMARY KEY,
    tenant_id text,
    resolved_by text,
    status text NOT NULL,
    payment_status text,
    mode text,
    customer_id text,
    subscription_id text,
    amount_total bigint,
    currency text,
    created_at timestamptz,
    completed_at timestamptz,
    expired_at timestamptz,
    last_event_id text NOT NULL
);
CREATE INDEX checkout_sessions_tenant ON checkout_sessions (tenant_id, id);

CREATE TABLE customers (
    id text PRIMARY KEY,
    tenant_id text,
    email text,
    name text,
    deleted boolean NOT NULL,
    last_event_id text NOT NULL
);

-- Events folded into an object whose tenant is not known yet.
CREATE TABLE unresolved_events (
    event_id text NOT NULL,
    object_id text NOT NULL,
    type text NOT NULL,
    created timestamptz NOT NULL,
    PRIMARY KEY (object_id, event_id)
);

-- Which tenant each event touched (filled as tenants are resolved), and by which rule.
CREATE TABLE event_tenants (
    tenant_id text NOT NULL,
    event_id text NOT NULL,
    resolved_by text NOT NULL,
    PRIMARY KEY (tenant_id, event_id)
);
CREATE INDEX event_tenants_event ON event_tenants (event_id);

-- Events the fold could not read: the event stays in the log, the error is kept here.
CREATE TABLE projection_errors (
    projection text NOT NULL,
    event_id text NOT NULL,
    position bigint NOT NULL,
    error text NOT NULL,
    recorded_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, event_id)
);

CREATE TABLE rebuilds (
    rebuild_id uuid PRIMARY KEY,
    projection text NOT NULL,
    status text NOT NULL CHECK (status IN ('pending', 'running', 'done', 'failed')),
    requested_at timestamptz NOT NULL DEFAULT now(),
    started_at timestamptz,
    finished_at timestamptz,
    position_done bigint NOT NULL DEFAULT 0,
    position_target bigint,
    error text
);
-- At most one rebuild waiting or running at a time.
CREATE UNIQUE INDEX rebuilds_one_active ON rebuilds ((true)) WHERE status IN ('pending', 'running');
