-- Leases kept alive by heartbeats, reclaimed when they expire; the replica registry.

ALTER TABLE tasks
    -- times the task's replica was lost while it ran (lease expired)
    ADD COLUMN reclaims integer NOT NULL DEFAULT 0,
    -- times the task was claimed: the lease token. Outcomes, heartbeats and
    -- hand-backs must name the claim they hold; attempts alone can repeat
    -- (a lost or handed-back attempt is not charged).
    ADD COLUMN claims integer NOT NULL DEFAULT 0;

-- The reaper walks running tasks by lease expiry.
CREATE INDEX tasks_leases ON tasks (lease_expires_at) WHERE state = 'RUNNING';

CREATE TABLE replicas (
    id                text PRIMARY KEY,
    host              text NOT NULL,
    pid               integer NOT NULL,
    version           text NOT NULL,
    started_at        timestamptz NOT NULL DEFAULT now(),
    last_heartbeat_at timestamptz NOT NULL DEFAULT now(),
    stopped_at        timestamptz
);
