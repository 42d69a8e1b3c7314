-- Tenants: every task, queue, schedule and statistic belongs to one. Queue and
-- schedule names are a tenant's own (two tenants may each have a queue
-- "default"); idempotency keys are unique within a tenant's queue. Rows written
-- before tenants, and rows written by hand without one, belong to the default
-- tenant (the statements name the tenant always). Replicas are shared: a tenant
-- sees them, with the running count of its own tasks only.
--
-- Every statement made on a caller's behalf names the tenant
-- (tests/scheduler/test_queries.py checks that each named query does, or says
-- on a `-- tenant:` line why it works across tenants: claims, leases, pruning).

ALTER TABLE tasks
    ADD COLUMN tenant text NOT NULL DEFAULT 'default',
    -- the API key that submitted the task (null: none, or auth off); a key
    -- that may only submit reads only what it submitted
    ADD COLUMN submitted_by text;

-- Per-queue walks now go per tenant's queue.
DROP INDEX tasks_queue_state_seq;
CREATE INDEX tasks_queue_state_seq ON tasks (tenant, queue, state, seq DESC);
DROP INDEX tasks_ready_by_queue;
CREATE INDEX tasks_ready_by_queue ON tasks (tenant, queue, priority DESC, run_at, seq)
    WHERE state = 'QUEUED';
DROP INDEX tasks_paused_ready;
CREATE INDEX tasks_paused_ready ON tasks (tenant, queue, priority DESC, run_at, seq)
    WHERE state = 'QUEUED' AND queue_paused;
DROP INDEX tasks_idempotency;
CREATE UNIQUE INDEX tasks_idempotency ON tasks (tenant, queue, idempotency_key)
    WHERE idempotency_key IS NOT NULL;
-- A tenant's tasks, newest first (listing without a queue).
CREATE INDEX tasks_tenant_seq ON tasks (tenant, seq DESC);

ALTER TABLE queues ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE queues DROP CONSTRAINT queues_pkey;
ALTER TABLE queues ADD PRIMARY KEY (tenant, name);

ALTER TABLE schedules ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE schedules DROP CONSTRAINT schedules_pkey;
ALTER TABLE schedules ADD PRIMARY KEY (tenant, name);

ALTER TABLE task_stats_totals ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE task_stats_totals DROP CONSTRAINT task_stats_totals_pkey;
ALTER TABLE task_stats_totals ADD PRIMARY KEY (tenant, queue);

ALTER TABLE task_stats_hourly ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE task_stats_hourly DROP CONSTRAINT task_stats_hourly_pkey;
ALTER TABLE task_stats_hourly ADD PRIMARY KEY (tenant, queue, hour);

ALTER TABLE task_stats_recent ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE task_stats_recent DROP CONSTRAINT task_stats_recent_pkey;
ALTER TABLE task_stats_recent ADD PRIMARY KEY (width, at, tenant, queue);

ALTER TABLE task_error_stats ADD COLUMN tenant text NOT NULL DEFAULT 'default';
ALTER TABLE task_error_stats DROP CONSTRAINT task_error_stats_pkey;
ALTER TABLE task_error_stats ADD PRIMARY KEY (hour, tenant, queue, type, message);
