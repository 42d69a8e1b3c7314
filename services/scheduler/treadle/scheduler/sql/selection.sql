-- Tasks chosen by filters: listings with filters (both ways), counts, and the
-- bulk actions (retry, cancel, purge), each one batch in one statement.
-- Every statement names the caller's tenant. A filter left NULL matches every
-- task. The bulk statements take the states they may act on in $4 (the
-- caller's states filter, narrowed to those), so a task the action does not
-- apply to is never touched; rows another statement holds are skipped
-- (SKIP LOCKED), never waited for: `bulk_remaining` says whether any remain.

-- name: list_tasks_filtered
-- params: tenant, submitted_by, queue, states, name, created_after, created_before,
-- params: idempotency_key, before_seq, limit
-- Newest first, older than $9.
SELECT * FROM tasks
WHERE tenant = $1 AND ($2::text IS NULL OR submitted_by = $2)
  AND ($3::text IS NULL OR queue = $3)
  AND ($4::text[] IS NULL OR state = ANY($4))
  AND ($5::text IS NULL OR name = $5)
  AND ($6::timestamptz IS NULL OR created_at >= $6)
  AND ($7::timestamptz IS NULL OR created_at < $7)
  AND ($8::text IS NULL OR idempotency_key = $8)
  AND ($9::bigint IS NULL OR seq < $9)
ORDER BY tenant, seq DESC LIMIT $10;

-- name: list_tasks_backward
-- params: tenant, submitted_by, queue, states, name, created_after, created_before,
-- params: idempotency_key, after_seq, limit
-- Oldest first, newer than $9 (the caller turns the page round).
SELECT * FROM tasks
WHERE tenant = $1 AND ($2::text IS NULL OR submitted_by = $2)
  AND ($3::text IS NULL OR queue = $3)
  AND ($4::text[] IS NULL OR state = ANY($4))
  AND ($5::text IS NULL OR name = $5)
  AND ($6::timestamptz IS NULL OR created_at >= $6)
  AND ($7::timestamptz IS NULL OR created_at < $7)
  AND ($8::text IS NULL OR idempotency_key = $8)
  AND seq > $9
ORDER BY tenant, seq LIMIT $10;

-- name: count_tasks
-- params: tenant, submitted_by, ids, queue, states, name, created_after, created_before,
-- params: finished_before
SELECT count(*) FROM tasks
WHERE tenant = $1 AND ($2::text IS NULL OR submitted_by = $2)
  AND ($3::uuid[] IS NULL OR id = ANY($3))
  AND ($4::text IS NULL OR queue = $4)
  AND ($5::text[] IS NULL OR state = ANY($5))
  AND ($6::text IS NULL OR name = $6)
  AND ($7::timestamptz IS NULL OR created_at >= $7)
  AND ($8::timestamptz IS NULL OR created_at < $8)
  AND ($9::timestamptz IS NULL OR finished_at < $9);

-- name: bulk_remaining
-- params: tenant, ids, queue, states, name, created_after, created_before, finished_before
-- Whether a task remains that the action acting on $4 would change (a RUNNING
-- task already asked to cancel would not be).
SELECT EXISTS (
    SELECT 1 FROM tasks
    WHERE tenant = $1
      AND ($2::uuid[] IS NULL OR id = ANY($2))
      AND ($3::text IS NULL OR queue = $3)
      AND state = ANY($4::text[])
      AND ($5::text IS NULL OR name = $5)
      AND ($6::timestamptz IS NULL OR created_at >= $6)
      AND ($7::timestamptz IS NULL OR created_at < $7)
      AND ($8::timestamptz IS NULL OR finished_at < $8)
      AND NOT (state = 'RUNNING' AND cancel_requested)
);

-- name: retry_tasks
-- params: tenant, ids, queue, states, name, created_after, created_before, finished_before,
-- params: limit
-- As retry_task, for up to $9 dead or cancelled tasks ($4), oldest first.
UPDATE tasks
SET state = 'QUEUED', attempts = 0, reclaims = 0, run_at = now(), result = NULL, error = NULL,
    started_at = NULL, finished_at = NULL, cancel_requested = false,
    lease_owner = NULL, lease_expires_at = NULL,
    queue_paused = coalesce(
        (SELECT paused FROM queues WHERE tenant = tasks.tenant AND name = tasks.queue), false)
WHERE tenant = $1 AND state IN ('DEAD', 'CANCELLED') AND id IN (
    SELECT id FROM tasks
    WHERE tenant = $1
      AND ($2::uuid[] IS NULL OR id = ANY($2))
      AND ($3::text IS NULL OR queue = $3)
      AND state = ANY($4::text[])
      AND ($5::text IS NULL OR name = $5)
      AND ($6::timestamptz IS NULL OR created_at >= $6)
      AND ($7::timestamptz IS NULL OR created_at < $7)
      AND ($8::timestamptz IS NULL OR finished_at < $8)
    ORDER BY seq LIMIT $9
    FOR UPDATE SKIP LOCKED
)
RETURNING id, queue, state;

-- name: cancel_tasks
-- params: tenant, ids, queue, states, name, created_after, created_before, finished_before,
-- params: limit, channel
-- As cancel_task, for up to $9 tasks of the states $4, oldest first: waiting
-- ones are cancelled at once; running ones are marked, and the replicas
-- holding them told on $10.
WITH picked AS (
    SELECT id FROM tasks
    WHERE tenant = $1
      AND ($2::uuid[] IS NULL OR id = ANY($2))
      AND ($3::text IS NULL OR queue = $3)
      AND state = ANY($4::text[])
      AND ($5::text IS NULL OR name = $5)
      AND ($6::timestamptz IS NULL OR created_at >= $6)
      AND ($7::timestamptz IS NULL OR created_at < $7)
      AND ($8::timestamptz IS NULL OR finished_at < $8)
      AND NOT (state = 'RUNNING' AND cancel_requested)
    ORDER BY seq LIMIT $9
    FOR UPDATE SKIP LOCKED
), cancelled AS (
    UPDATE tasks SET state = 'CANCELLED', finished_at = now()
    WHERE tenant = $1 AND id IN (SELECT id FROM picked)
      AND state IN ('QUEUED', 'SCHEDULED', 'RETRYING')
    RETURNING id, queue, state
), requested AS (
    UPDATE tasks SET cancel_requested = true
    WHERE tenant = $1 AND id IN (SELECT id FROM picked) AND state = 'RUNNING'
    RETURNING id, queue, state
), told AS (
    SELECT count(pg_notify($10, id::text)) AS told FROM requested
)
SELECT * FROM cancelled
UNION ALL
SELECT requested.* FROM requested CROSS JOIN told;

-- name: purge_tasks
-- params: tenant, ids, queue, states, name, created_after, created_before, finished_before,
-- params: limit
-- Delete up to $9 finished tasks (of the states $4), oldest first.
DELETE FROM tasks
WHERE tenant = $1 AND state IN ('SUCCEEDED', 'DEAD', 'CANCELLED') AND id IN (
    SELECT id FROM tasks
    WHERE tenant = $1
      AND ($2::uuid[] IS NULL OR id = ANY($2))
      AND ($3::text IS NULL OR queue = $3)
      AND state = ANY($4::text[])
      AND ($5::text IS NULL OR name = $5)
      AND ($6::timestamptz IS NULL OR created_at >= $6)
      AND ($7::timestamptz IS NULL OR created_at < $7)
      AND ($8::timestamptz IS NULL OR finished_at < $8)
    ORDER BY seq LIMIT $9
    FOR UPDATE SKIP LOCKED
)
RETURNING id, queue, state;
