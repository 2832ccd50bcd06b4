-- Warm standbys (src/projector/standby.rs): a follower keeps the fold state in memory at the
-- leader's checkpoint, so that once elected it folds only the last second's events.

-- Where each follower's standby stands, written by the follower about once a second; a row
-- not updated for a day is removed when a follower is elected (its instance is gone), and a
-- follower's own row is removed when it is elected.
CREATE TABLE projector_standbys (
    projection text NOT NULL,
    instance_id text NOT NULL,
    -- Every event through this position is folded into the standby's state.
    position bigint NOT NULL,
    updated_at timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (projection, instance_id)
);

-- The position the elected follower's standby stood at when the lock was granted; NULL when
-- the new leader resumed cold (a snapshot plus the events after it, or the whole log).
ALTER TABLE projector_elections ADD COLUMN standby_position bigint;
