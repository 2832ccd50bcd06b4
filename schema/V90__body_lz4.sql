-- Bodies compressed with lz4 instead of pglz (PostgreSQL 14 and later, built with lz4).
--
-- Stripe's bodies are 1-5 KB of JSON, above the 2 KB TOAST threshold, so every append
-- compressed each body inside `ledger_append`, under the `log_head` lock, and every fold and
-- rebuild decompresses it. Measured on the development machine (README, Performance, ingest):
-- `ledger_append` used 58-85 us of backend CPU per event with pglz (median 65), 52-67 us with
-- lz4 (median 55); storing bodies uncompressed (STORAGE EXTERNAL) was no cheaper (the TOAST table's own insert
-- and index). The bytes stored and hashed are unchanged; rows written before this migration
-- keep pglz, and PostgreSQL reads both.
ALTER TABLE events ALTER COLUMN body SET COMPRESSION lz4;
ALTER TABLE deliveries ALTER COLUMN body SET COMPRESSION lz4;
