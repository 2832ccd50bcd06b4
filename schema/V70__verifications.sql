-- Each run of the integrity check (`billing-ledger verify`, the admin API's verify route, the
-- console's "verify now"), so the console can show the last verification and its verdict.
-- Append-only by convention; losing these rows loses no truth (the chain is in `events`).

CREATE TABLE verifications (
    verification_id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    verified_at timestamptz NOT NULL DEFAULT now(),
    -- Who ran it: `cli`, `api` or `console`.
    ran_by text NOT NULL,
    intact boolean NOT NULL,
    events_verified bigint NOT NULL,
    -- Hex chain hash of the last event, when intact.
    head_hash text,
    broken_position bigint,
    broken_event_id text,
    problem text
);
