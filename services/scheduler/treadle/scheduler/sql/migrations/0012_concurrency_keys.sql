-- Concurrency per key (`@task(concurrency_key=..., max_concurrent=N)`, a
-- submission's concurrency_key and max_concurrent): at most `concurrency_limit`
-- tasks of a tenant with the same `concurrency_key` RUNNING at once, across
-- every replica. The key is computed by the producer and stored with the task;
-- both columns are null together for a task without a key.
--
-- Keyed tasks are claimed by their own statement (claim_keyed), one replica at
-- a time per tenant under an advisory lock, counting the key's running tasks
-- in the claim's own transaction: the mechanism of queues with max_concurrent
-- (lock_queue, claim_limited). The plain claim leaves them out through its
-- index, so tasks without a key are claimed exactly as before.
ALTER TABLE tasks
    ADD COLUMN concurrency_key   text,
    ADD COLUMN concurrency_limit integer CHECK (concurrency_limit >= 1),
    ADD CONSTRAINT tasks_concurrency_both
        CHECK ((concurrency_key IS NULL) = (concurrency_limit IS NULL));

-- The plain claim's index: ready tasks without a key, not marked paused.
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (priority DESC, run_at, seq)
    WHERE state = 'QUEUED' AND NOT queue_paused AND concurrency_key IS NULL;
-- The keyed claim's: a tenant's ready keyed tasks in claim order.
CREATE INDEX tasks_keyed_ready ON tasks (tenant, priority DESC, run_at, seq)
    WHERE state = 'QUEUED' AND concurrency_key IS NOT NULL;
-- A key's running tasks, counted by every keyed claim.
CREATE INDEX tasks_keyed_running ON tasks (tenant, concurrency_key)
    WHERE state = 'RUNNING' AND concurrency_key IS NOT NULL;

-- Keyed tasks made ready say so ('keyed'): a replica then looks for them at
-- its next claim (it otherwise looks every LIMITED_RECHECK seconds).
CREATE OR REPLACE FUNCTION tasks_notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ready_rows
               WHERE state = 'QUEUED' AND NOT queue_paused AND concurrency_key IS NULL) THEN
        PERFORM pg_notify('treadle_ready_' || TG_TABLE_SCHEMA, 'ready');
    END IF;
    IF EXISTS (SELECT 1 FROM ready_rows
               WHERE state = 'QUEUED' AND NOT queue_paused AND concurrency_key IS NOT NULL) THEN
        PERFORM pg_notify('treadle_ready_' || TG_TABLE_SCHEMA, 'keyed');
    END IF;
    IF EXISTS (SELECT 1 FROM ready_rows WHERE state = 'SCHEDULED') THEN
        PERFORM pg_notify('treadle_ready_' || TG_TABLE_SCHEMA, 'due');
    END IF;
    RETURN NULL;
END $$;
