-- pgbench script: one durable single-row insert of a ~3 KB body per transaction (autocommit),
-- the same work a webhook append must make durable. Used by `cargo bench --bench ledger -- ingest`.
INSERT INTO pgbench_events (event_id, body)
VALUES (gen_random_uuid()::text, convert_to(repeat('x', 3000), 'UTF8'));
