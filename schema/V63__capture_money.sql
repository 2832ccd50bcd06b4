-- The money read models join the change feed (and so the outgoing webhooks): each row change of
-- an invoice, payment, refund, dispute or credit note is captured like any other read model's.
SELECT capture_changes('invoices', 'id');
SELECT capture_changes('payments', 'id');
SELECT capture_changes('refunds', 'id');
SELECT capture_changes('disputes', 'id');
SELECT capture_changes('credit_notes', 'id');
