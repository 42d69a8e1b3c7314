-- Tasks: one row per task, the only source of truth.
CREATE TABLE tasks (
    id               uuid PRIMARY KEY,
    -- submission order, for FIFO within a priority and for stable paging
    seq              bigint GENERATED ALWAYS AS IDENTITY UNIQUE,
    name             text NOT NULL,
    queue            text NOT NULL,
    state            text NOT NULL CHECK (state IN
                         ('QUEUED', 'SCHEDULED', 'RUNNING', 'SUCCEEDED', 'RETRYING', 'DEAD', 'CANCELLED')),
    payload          jsonb NOT NULL,
    result           jsonb,
    error            jsonb,
    attempts         integer NOT NULL DEFAULT 0,
    max_attempts     integer NOT NULL CHECK (max_attempts >= 1),
    priority         smallint NOT NULL DEFAULT 0 CHECK (priority BETWEEN -100 AND 100),
    run_at           timestamptz NOT NULL,
    created_at       timestamptz NOT NULL DEFAULT now(),
    started_at       timestamptz,
    finished_at      timestamptz,
    idempotency_key  text,
    lease_owner      text,
    lease_expires_at timestamptz
);

-- The claim walks this: ready tasks, highest priority first, then FIFO.
CREATE INDEX tasks_ready ON tasks (priority DESC, run_at, seq) WHERE state = 'QUEUED';
-- Promotion of scheduled tasks walks this by due time.
CREATE INDEX tasks_scheduled ON tasks (run_at) WHERE state = 'SCHEDULED';
-- Listing by queue and/or state, newest first.
CREATE INDEX tasks_queue_seq ON tasks (queue, seq DESC);
CREATE INDEX tasks_state_seq ON tasks (state, seq DESC);
-- Idempotency keys are unique within a queue.
CREATE UNIQUE INDEX tasks_idempotency ON tasks (queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;

-- Wake idle dispatchers when a submission makes tasks ready (statements that
-- make existing rows ready notify explicitly). The channel is per schema, so
-- several installations can share one database.
CREATE FUNCTION tasks_notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ready_rows WHERE state = 'QUEUED') THEN
        PERFORM pg_notify('treadle_ready_' || TG_TABLE_SCHEMA, '');
    END IF;
    RETURN NULL;
END $$;

CREATE TRIGGER tasks_ready_on_insert AFTER INSERT ON tasks
    REFERENCING NEW TABLE AS ready_rows
    FOR EACH STATEMENT EXECUTE FUNCTION tasks_notify_ready();
