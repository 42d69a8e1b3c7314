-- Every cron schedule statement the scheduler runs, one named block each.
-- Tables are unqualified: each connection's search_path is the installation's schema.
-- Each block declares its parameters, in $1..$n order, on `-- params:` lines.
-- The tasks a firing submits go in through insert_tasks (queries.sql).
-- A schedule row comes back with its task template split in two: `template`
-- (the template without its payload) and `template_payload` (the payload's
-- JSON text, which the scheduler passes on as it is, never decoding it).
-- Schedule names are a tenant's own: every statement made for a caller names
-- the tenant; firing works across tenants (each row carries its own).

-- name: schedule_insert
-- params: tenant, name, cron, timezone, task, next_fire_at
-- A taken name inserts nothing and returns no row.
INSERT INTO schedules (tenant, name, cron, timezone, task, next_fire_at)
VALUES ($1, $2, $3, $4, $5::jsonb, $6)
ON CONFLICT (tenant, name) DO NOTHING
RETURNING *, task - 'payload' AS template, task -> 'payload' AS template_payload;

-- name: schedule_list
-- params: tenant
SELECT *, task - 'payload' AS template, task -> 'payload' AS template_payload
FROM schedules WHERE tenant = $1 ORDER BY name;

-- name: schedule_get
-- params: tenant, name
SELECT *, task - 'payload' AS template, task -> 'payload' AS template_payload
FROM schedules WHERE tenant = $1 AND name = $2;

-- name: schedule_pause
-- params: tenant, name
UPDATE schedules SET paused = true, updated_at = now()
WHERE tenant = $1 AND name = $2
RETURNING *, task - 'payload' AS template, task -> 'payload' AS template_payload;

-- name: schedule_resume
-- params: tenant, name, next_fire_at
-- $3 is the first tick after now; a schedule that is not paused is left alone.
UPDATE schedules SET paused = false, next_fire_at = $3, updated_at = now()
WHERE tenant = $1 AND name = $2 AND paused
RETURNING *, task - 'payload' AS template, task -> 'payload' AS template_payload;

-- name: schedule_delete
-- params: tenant, name
DELETE FROM schedules WHERE tenant = $1 AND name = $2 RETURNING name;

-- name: schedule_lock_due
-- tenant: firing works across tenants; each row carries its tenant
-- The due schedules no other replica is firing, locked until this transaction
-- ends, with the transaction's clock. The batch size is a literal (a bind
-- parameter in LIMIT makes PostgreSQL re-plan every call); it is FIRE_BATCH in
-- schedule_store.py. The WHERE and ORDER BY match the partial index schedules_due.
SELECT s.*, s.task - 'payload' AS template, s.task -> 'payload' AS template_payload,
       now() AS now
FROM schedules s
WHERE NOT s.paused AND s.next_fire_at <= now()
ORDER BY s.next_fire_at
LIMIT 100
FOR UPDATE SKIP LOCKED;

-- name: schedule_pause_poisoned
-- params: tenants, names
-- Pause the schedules whose stored row cannot be fired, so the cron loop goes
-- on with the others (resuming one only makes sense once its row is fixed).
UPDATE schedules s SET paused = true, updated_at = now()
FROM unnest($1::text[], $2::text[]) AS p(tenant, name)
WHERE s.tenant = p.tenant AND s.name = p.name;

-- name: schedule_advance
-- params: tenants, names, fired_ats, next_fire_ats
-- Record the fired ticks and move each schedule to its next tick; a schedule
-- with no next tick ($4 null) is paused where it is.
UPDATE schedules s
SET last_fired_at = f.fired_at,
    next_fire_at = coalesce(f.next_fire_at, s.next_fire_at),
    paused = s.paused OR f.next_fire_at IS NULL,
    updated_at = now()
FROM unnest($1::text[], $2::text[], $3::timestamptz[], $4::timestamptz[])
     AS f(tenant, name, fired_at, next_fire_at)
WHERE s.tenant = f.tenant AND s.name = f.name;

-- name: schedule_next_due
-- tenant: firing works across tenants
-- Seconds until the next tick of any running schedule (negative when one is
-- overdue), by the database's clock; null when none runs.
SELECT extract(epoch FROM min(next_fire_at) - clock_timestamp())::float8
FROM schedules WHERE NOT paused;

-- name: schedule_code_lock
-- params: tenant
-- tenant: touches no row; the lock's key names the tenant
-- Held until commit: replicas starting together sync the code's schedules of
-- a tenant one at a time (the second finds them in step).
SELECT pg_advisory_xact_lock(hashtext('treadle:code-schedules:' || $1));

-- name: schedule_insert_code
-- params: tenant, name, cron, timezone, task, next_fire_at
-- A schedule declared in code (code_owned); a taken name inserts nothing.
INSERT INTO schedules (tenant, name, cron, timezone, task, next_fire_at, code_owned)
VALUES ($1, $2, $3, $4, $5::jsonb, $6, true)
ON CONFLICT (tenant, name) DO NOTHING
RETURNING name;

-- name: schedule_update_code
-- params: tenant, name, cron, timezone, task, next_fire_at
-- Bring a code-owned schedule in step with its declaration; its paused state
-- is left as it is (an operator may have paused it).
UPDATE schedules SET cron = $3, timezone = $4, task = $5::jsonb, next_fire_at = $6,
    updated_at = now()
WHERE tenant = $1 AND name = $2 AND code_owned
RETURNING name;

-- name: schedule_delete_code
-- params: tenant, name
DELETE FROM schedules WHERE tenant = $1 AND name = $2 AND code_owned RETURNING name;
