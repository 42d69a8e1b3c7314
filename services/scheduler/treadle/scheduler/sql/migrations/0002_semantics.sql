-- Retries, timeouts, cancellation of running tasks, queues, schedules.

ALTER TABLE tasks
    ADD COLUMN timeout_seconds  double precision CHECK (timeout_seconds > 0),
    ADD COLUMN backoff_base     double precision NOT NULL DEFAULT 1 CHECK (backoff_base >= 0),
    ADD COLUMN backoff_factor   double precision NOT NULL DEFAULT 2 CHECK (backoff_factor >= 1),
    ADD COLUMN backoff_max      double precision NOT NULL DEFAULT 300 CHECK (backoff_max >= 0),
    ADD COLUMN cancel_requested boolean NOT NULL DEFAULT false,
    -- every failed attempt's error, oldest first
    ADD COLUMN errors           jsonb NOT NULL DEFAULT '[]';

-- Scheduled and retrying tasks wait here for their time.
DROP INDEX tasks_scheduled;
CREATE INDEX tasks_due ON tasks (run_at) WHERE state IN ('SCHEDULED', 'RETRYING');
-- Ready tasks of one queue in claim order, for queues with max_concurrent.
CREATE INDEX tasks_ready_by_queue ON tasks (queue, priority DESC, run_at, seq)
    WHERE state = 'QUEUED';
-- One index serves listing a queue (or one state of it, e.g. its dead letters)
-- newest first, and counting a queue's running tasks. Every index on this
-- table costs each claim and each outcome (state changes are never HOT
-- updates), so the hot path keeps as few as it can.
CREATE INDEX tasks_queue_state_seq ON tasks (queue, state, seq DESC);
DROP INDEX tasks_queue_seq;
DROP INDEX tasks_state_seq;
-- Idempotency keys expire after the retention window.
CREATE INDEX tasks_idempotency_age ON tasks (created_at) WHERE idempotency_key IS NOT NULL;

CREATE TABLE queues (
    name            text PRIMARY KEY,
    max_concurrent  integer CHECK (max_concurrent >= 1),
    paused          boolean NOT NULL DEFAULT false,
    max_attempts    integer NOT NULL DEFAULT 1 CHECK (max_attempts >= 1),
    timeout_seconds double precision CHECK (timeout_seconds > 0),
    backoff_base    double precision NOT NULL DEFAULT 1 CHECK (backoff_base >= 0),
    backoff_factor  double precision NOT NULL DEFAULT 2 CHECK (backoff_factor >= 1),
    backoff_max     double precision NOT NULL DEFAULT 300 CHECK (backoff_max >= 0),
    created_at      timestamptz NOT NULL DEFAULT now(),
    updated_at      timestamptz NOT NULL DEFAULT now()
);
INSERT INTO queues (name) SELECT DISTINCT queue FROM tasks ON CONFLICT DO NOTHING;

CREATE TABLE schedules (
    name          text PRIMARY KEY,
    cron          text NOT NULL,
    timezone      text NOT NULL,
    -- the task template: TaskSpec fields as JSON
    task          jsonb NOT NULL,
    paused        boolean NOT NULL DEFAULT false,
    next_fire_at  timestamptz NOT NULL,
    last_fired_at timestamptz,
    created_at    timestamptz NOT NULL DEFAULT now(),
    updated_at    timestamptz NOT NULL DEFAULT now()
);
CREATE INDEX schedules_due ON schedules (next_fire_at) WHERE NOT paused;

-- Wake dispatchers when tasks become ready and promoters when tasks are
-- scheduled: one NOTIFY per statement, payload 'ready' or 'due'.
CREATE OR REPLACE FUNCTION tasks_notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ready_rows WHERE state = 'QUEUED') THEN
        PERFORM pg_notify('treadle_ready_' || TG_TABLE_SCHEMA, 'ready');
    END IF;
    IF EXISTS (SELECT 1 FROM ready_rows WHERE state = 'SCHEDULED') THEN
        PERFORM pg_notify('treadle_ready_' || TG_TABLE_SCHEMA, 'due');
    END IF;
    RETURN NULL;
END $$;

-- Tell watchers which tasks changed state: one NOTIFY per statement (and per
-- 200 ids), payload the ids separated by commas, on treadle_tasks_<schema>.
CREATE FUNCTION tasks_notify_changed() RETURNS trigger LANGUAGE plpgsql AS $$
DECLARE
    chunk text;
BEGIN
    FOR chunk IN
        SELECT string_agg(id::text, ',')
        FROM (
            SELECT n.id, (row_number() OVER () - 1) / 200 AS grp
            FROM new_rows n JOIN old_rows o USING (id)
            WHERE n.state IS DISTINCT FROM o.state
        ) changed
        GROUP BY grp
    LOOP
        PERFORM pg_notify('treadle_tasks_' || TG_TABLE_SCHEMA, chunk);
    END LOOP;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_changed AFTER UPDATE ON tasks
    REFERENCING OLD TABLE AS old_rows NEW TABLE AS new_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_changed();
