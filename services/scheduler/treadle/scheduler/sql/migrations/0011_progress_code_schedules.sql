-- A handler's progress (TaskContext.heartbeat), and schedules declared in code.
--
-- progress: 0..1, null until a handler reports one; progress_message: its
-- short message; progress_at: when it was reported. Written by the replica
-- running the attempt, under the attempt's lease (task_progress); shown as
-- Task.progress / progressMessage / progressAt. Kept when the attempt ends,
-- so a failed task shows how far it got.
ALTER TABLE tasks
    ADD COLUMN progress double precision CHECK (progress >= 0 AND progress <= 1),
    ADD COLUMN progress_message text,
    ADD COLUMN progress_at timestamptz;

-- code_owned: the schedule was declared in an app's code (treadle.tasks.schedule,
-- @task(cron=...)) and is kept in step with it when replicas start; schedules
-- made through the API are false and never touched by that sync.
ALTER TABLE schedules ADD COLUMN code_owned boolean NOT NULL DEFAULT false;
