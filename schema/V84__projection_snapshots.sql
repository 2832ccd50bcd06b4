-- The projector's fold state, kept so that a newly elected projector resumes from it instead of
-- re-folding the whole log (src/projector/snapshot.rs owns both tables). Only ever a cache: a
-- missing, unreadable or other-version snapshot means a full fold of the log, never wrong rows.

CREATE TABLE projection_snapshots (
    projection text PRIMARY KEY,
    -- PROJECTION_VERSION of the fold that wrote it; another version's snapshot is never loaded.
    version integer NOT NULL,
    -- SNAPSHOT_FORMAT (projections/src/ledger/snapshot.rs): the shape of `state`.
    format integer NOT NULL,
    livemode boolean NOT NULL,
    -- The state after folding every event up to and including this log position; the rows and
    -- the checkpoint were at this position (or later) when it was written.
    position bigint NOT NULL,
    state bytea NOT NULL,
    written_at timestamptz NOT NULL DEFAULT now()
);
-- PostgreSQL would compress the state (86 MiB at the benchmark's 1,000,000 events) on every
-- write and decompress it on every read; keep it out of line and uncompressed, so both cost a
-- copy only.
ALTER TABLE projection_snapshots ALTER COLUMN state SET STORAGE EXTERNAL;

-- One row per election: how the new leader got its fold state, for operators and tests.
CREATE TABLE projector_elections (
    elected_at timestamptz NOT NULL DEFAULT now(),
    projection text NOT NULL,
    instance_id text NOT NULL,
    -- Position of the snapshot loaded; NULL when the log was folded from its start.
    snapshot_position bigint,
    -- Why no snapshot was loaded (none, another version, unreadable ...); NULL when one was.
    fallback_reason text,
    -- The checkpoint resumed at, and the events folded to reach it after the snapshot.
    checkpoint bigint NOT NULL,
    events_folded bigint NOT NULL,
    duration_ms bigint NOT NULL
);
CREATE INDEX projector_elections_elected_at ON projector_elections (elected_at);
