-- A paused queue costs nothing: its waiting tasks carry queue_paused, the
-- claim's index leaves them out, and submitting to a paused queue wakes no
-- dispatcher. Pausing or resuming a queue sets the flag on its unfinished
-- tasks (update_queue_tasks, after lock_queue_row); an insert reads it from
-- its queue under FOR KEY SHARE, so a pause or resume waits for inserts in
-- flight and inserts wait for it (see insert_tasks).
ALTER TABLE tasks ADD COLUMN queue_paused boolean NOT NULL DEFAULT false;
UPDATE tasks t SET queue_paused = true
FROM queues q
WHERE q.name = t.queue AND q.paused
  AND t.state IN ('QUEUED', 'SCHEDULED', 'RETRYING', 'RUNNING');

-- The claim walks this: ready tasks of queues not paused, highest priority first, then FIFO.
DROP INDEX tasks_ready;
CREATE INDEX tasks_ready ON tasks (priority DESC, run_at, seq)
    WHERE state = 'QUEUED' AND NOT queue_paused;

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
