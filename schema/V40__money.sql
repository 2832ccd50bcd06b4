-- Money read models folded from the log by projections/src/money (DESIGN.md "Money").
-- Amounts are bigint counts of the currency's minor unit, beside a lowercase ISO currency.
-- Everything here can be rebuilt from `events`; src/money_store.rs is the only writer.

CREATE TABLE invoices (
    id text PRIMARY KEY,
    tenant_id text,
    customer_id text,
    number text,
    status text NOT NULL,
    currency text,
    amount_due bigint,
    amount_paid bigint,
    amount_remaining bigint,
    subtotal bigint,
    total bigint,
    tax bigint,
    discount bigint,
    billing_reason text,
    subscription_id text,
    period_start timestamptz,
    period_end timestamptz,
    created_at timestamptz,
    finalized_at timestamptz,
    paid_at timestamptz,
    voided_at timestamptz,
    attempt_count bigint,
    hosted_invoice_url text,
    last_event_id text NOT NULL
);
CREATE INDEX invoices_created ON invoices (created_at, id);
CREATE INDEX invoices_tenant ON invoices (tenant_id, created_at, id);
CREATE INDEX invoices_customer ON invoices (customer_id);
CREATE INDEX invoices_subscription ON invoices (subscription_id);

CREATE TABLE payments (
    id text PRIMARY KEY,
    kind text NOT NULL,
    tenant_id text,
    customer_id text,
    status text NOT NULL,
    amount bigint,
    amount_captured bigint,
    amount_refunded bigint,
    currency text,
    invoice_id text,
    failure_code text,
    failure_message text,
    paid_at timestamptz,
    created_at timestamptz,
    last_event_id text NOT NULL
);
CREATE INDEX payments_created ON payments (created_at, id);
CREATE INDEX payments_tenant ON payments (tenant_id, created_at, id);
CREATE INDEX payments_invoice ON payments (invoice_id);

CREATE TABLE refunds (
    id text PRIMARY KEY,
    tenant_id text,
    customer_id text,
    payment_id text,
    status text NOT NULL,
    amount bigint,
    currency text,
    reason text,
    created_at timestamptz,
    last_event_id text NOT NULL
);
CREATE INDEX refunds_created ON refunds (created_at, id);
CREATE INDEX refunds_tenant ON refunds (tenant_id, created_at, id);
CREATE INDEX refunds_payment ON refunds (payment_id);

CREATE TABLE disputes (
    id text PRIMARY KEY,
    tenant_id text,
    customer_id text,
    payment_id text,
    status text NOT NULL,
    amount bigint,
    currency text,
    reason text,
    created_at timestamptz,
    last_event_id text NOT NULL
);
CREATE INDEX disputes_created ON disputes (created_at, id);
CREATE INDEX disputes_tenant ON disputes (tenant_id, created_at, id);
CREATE INDEX disputes_payment ON disputes (payment_id);

CREATE TABLE credit_notes (
    id text PRIMARY KEY,
    tenant_id text,
    customer_id text,
    invoice_id text,
    status text NOT NULL,
    type text,
    amount bigint,
    currency text,
    refund_ids text[] NOT NULL,
    created_at timestamptz,
    voided_at timestamptz,
    last_event_id text NOT NULL
);
CREATE INDEX credit_notes_created ON credit_notes (created_at, id);
CREATE INDEX credit_notes_tenant ON credit_notes (tenant_id, created_at, id);
CREATE INDEX credit_notes_invoice ON credit_notes (invoice_id);
