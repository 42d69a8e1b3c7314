-- Every cron schedule statement the scheduler runs, one named block each.
-- Tables are unqualified: each connection's search_path is the installation's schema.

-- name: schedule_insert
-- A taken name inserts nothing and returns no row.
INSERT INTO schedules (name, cron, timezone, task, next_fire_at)
VALUES ($1, $2, $3, $4::jsonb, $5)
ON CONFLICT (name) DO NOTHING
RETURNING *;

-- name: schedule_list
SELECT * FROM schedules ORDER BY name;

-- name: schedule_get
SELECT * FROM schedules WHERE name = $1;

-- name: schedule_pause
UPDATE schedules SET paused = true, updated_at = now()
WHERE name = $1
RETURNING *;

-- name: schedule_resume
-- $2 is the first tick after now; a schedule that is not paused is left alone.
UPDATE schedules SET paused = false, next_fire_at = $2, updated_at = now()
WHERE name = $1 AND paused
RETURNING *;

-- name: schedule_delete
DELETE FROM schedules WHERE name = $1 RETURNING name;

-- name: schedule_lock_due
-- The due schedules no other replica is firing, locked until this transaction
-- ends, with the transaction's clock. The batch size is a literal (a bind
-- parameter in LIMIT makes PostgreSQL re-plan every call); it is FIRE_BATCH in
-- schedule_store.py. The WHERE and ORDER BY match the partial index schedules_due.
SELECT s.*, now() AS now FROM schedules s
WHERE NOT s.paused AND s.next_fire_at <= now()
ORDER BY s.next_fire_at
LIMIT 100
FOR UPDATE SKIP LOCKED;

-- name: schedule_ensure_queues
-- Queues are created on first use. Sorted, so two replicas creating the same
-- queues take their locks in the same order.
INSERT INTO queues (name)
SELECT DISTINCT name FROM unnest($1::text[]) AS q(name) ORDER BY name
ON CONFLICT DO NOTHING;

-- name: schedule_insert_tasks
-- One task per fired tick; what the template leaves unset comes from the
-- queue's settings. A tick whose idempotency key is taken already (it fired
-- before) inserts nothing. Returns the ids inserted.
INSERT INTO tasks (id, name, queue, state, payload, max_attempts, priority, run_at,
                   idempotency_key, timeout_seconds, backoff_base, backoff_factor, backoff_max)
SELECT f.id, f.name, f.queue, 'QUEUED', f.payload::jsonb,
       coalesce(f.max_attempts, q.max_attempts), f.priority, f.run_at, f.idempotency_key,
       coalesce(f.timeout_seconds, q.timeout_seconds),
       coalesce(f.backoff_base, q.backoff_base),
       coalesce(f.backoff_factor, q.backoff_factor),
       coalesce(f.backoff_max, q.backoff_max)
FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[],
            $7::timestamptz[], $8::text[], $9::float8[], $10::float8[], $11::float8[],
            $12::float8[])
     AS f(id, name, queue, payload, max_attempts, priority, run_at, idempotency_key,
          timeout_seconds, backoff_base, backoff_factor, backoff_max)
JOIN queues q ON q.name = f.queue
ON CONFLICT (queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id;

-- name: schedule_advance
-- Record the fired ticks and move each schedule to its next tick; a schedule
-- with no next tick ($3 null) is paused where it is.
UPDATE schedules s
SET last_fired_at = f.fired_at,
    next_fire_at = coalesce(f.next_fire_at, s.next_fire_at),
    paused = s.paused OR f.next_fire_at IS NULL,
    updated_at = now()
FROM unnest($1::text[], $2::timestamptz[], $3::timestamptz[])
     AS f(name, fired_at, next_fire_at)
WHERE s.name = f.name;

-- name: schedule_next_due
-- Seconds until the next tick of any running schedule (negative when one is
-- overdue), by the database's clock; null when none runs.
SELECT extract(epoch FROM min(next_fire_at) - clock_timestamp())::float8
FROM schedules WHERE NOT paused;
