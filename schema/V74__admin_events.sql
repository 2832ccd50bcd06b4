-- Events of the ledger's own: an admin's tenant link (`ledger.tenant_link.created`, IDs
-- `evt_ledger_...`) is appended through `ledger_append` like any Stripe event, hash-chained, with
-- `source` 'admin'.
ALTER TABLE events DROP CONSTRAINT events_source_check;
ALTER TABLE events ADD CONSTRAINT events_source_check
    CHECK (source IN ('webhook', 'import', 'reconcile', 'admin'));
ALTER TABLE deliveries DROP CONSTRAINT deliveries_source_check;
ALTER TABLE deliveries ADD CONSTRAINT deliveries_source_check
    CHECK (source IN ('webhook', 'import', 'reconcile', 'admin'));
