-- Reconciliation runs that listed events they could not take (unreadable, or outside what was
-- asked for: another window, mode or account) finish `succeeded_with_problems`: the window was
-- listed to its end, but someone should look. Both kinds are counted in full; the reports keep
-- the first 1,000 of each.
ALTER TABLE reconcile_runs DROP CONSTRAINT reconcile_runs_status_check;
ALTER TABLE reconcile_runs ADD CONSTRAINT reconcile_runs_status_check
    CHECK (status IN ('running', 'succeeded', 'succeeded_with_problems', 'failed'));
ALTER TABLE reconcile_runs
    ADD COLUMN unreadable_events bigint NOT NULL DEFAULT 0,
    -- [{"event_id", "problem"}, ...]: listed by Stripe but not asked for; not stored.
    ADD COLUMN out_of_scope jsonb NOT NULL DEFAULT '[]',
    ADD COLUMN out_of_scope_events bigint NOT NULL DEFAULT 0;
