-- A paused queue costs nothing. Pausing a queue marks its unfinished tasks
-- queue_paused (mark_paused_tasks), and a task submitted to a paused queue is
-- stored so; the claim's main index leaves them out, so a paused backlog is
-- never walked, and their insert wakes no dispatcher. Resuming touches no
-- task: the claim also reads, queue by queue, the marked ready tasks of
-- queues no longer paused (tasks_paused_ready), and clears the mark of what
-- it claims.
ALTER TABLE tasks ADD COLUMN queue_paused boolean NOT NULL DEFAULT false;
UPDATE tasks t SET queue_paused = true
FROM queues q
WHERE q.name = t.queue AND q.paused
  AND t.state IN ('QUEUED', 'SCHEDULED', 'RETRYING', 'RUNNING');

-- The claim walks this: ready tasks not marked paused, highest priority first, then FIFO.
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (priority DESC, run_at, seq)
    WHERE state = 'QUEUED' AND NOT queue_paused;
-- Marked ready tasks, per queue in claim order: read for queues since resumed.
CREATE INDEX tasks_paused_ready ON tasks (queue, priority DESC, run_at, seq)
    WHERE state = 'QUEUED' AND queue_paused;

-- Wake dispatchers only for tasks they may claim; promoters for scheduled tasks.
CREATE OR REPLACE FUNCTION tasks_notify_ready() RETURNS trigger LANGUAGE plpgsql AS $$
BEGIN
    IF EXISTS (SELECT 1 FROM ready_rows WHERE state = 'QUEUED' AND NOT queue_paused) THEN
        PERFORM pg_notify('treadle_ready_' || TG_TABLE_SCHEMA, 'ready');
    END IF;
    IF EXISTS (SELECT 1 FROM ready_rows WHERE state = 'SCHEDULED') THEN
        PERFORM pg_notify('treadle_ready_' || TG_TABLE_SCHEMA, 'due');
    END IF;
    RETURN NULL;
END $$;
