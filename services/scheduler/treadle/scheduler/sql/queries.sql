-- Every task and queue statement the scheduler runs, one named block each.
-- Tables are unqualified: each connection's search_path is the installation's schema.
-- Each block declares its parameters, in $1..$n order, on `-- params:` lines;
-- callers bind them by name (postgres.Query).
-- Every statement made for a caller names the caller's tenant (0008_tenants.sql);
-- a statement that works across tenants (claims, leases, upkeep) says why on a
-- `-- tenant:` line. Reads take `submitted_by`: null reads every task of the
-- tenant, a key id only the tasks that key submitted.

-- name: insert_tasks
-- params: ids, names, queues, payloads, max_attempts, priorities, run_ats, idempotency_keys
-- params: timeouts, backoff_bases, backoff_factors, backoff_maxes, trace_contexts, tenants
-- params: submitters, concurrency_keys, concurrency_limits
-- One statement for a whole batch (API submissions, and cron firings inside
-- their transaction), each row in its own tenant ($14) and with its submitter ($15). Unset max_attempts, timeout and backoff come from the
-- queue's settings; queues are created on first use, sorted, so two replicas
-- creating the same queues take their locks in the same order. Rows whose
-- idempotency key is taken are skipped here and read back by select_by_idempotency.
-- A task of a paused queue is stored queue_paused: out of the claim's main
-- index, and waking no dispatcher.
-- Returns only the columns the database decides; the rest the caller sent.
WITH s AS (
    SELECT * FROM unnest($1::uuid[], $2::text[], $3::text[], $4::text[], $5::int[], $6::int[],
                         $7::timestamptz[], $8::text[], $9::float8[], $10::float8[],
                         $11::float8[], $12::float8[], $13::text[], $14::text[],
                         $15::text[], $16::text[], $17::int[]) WITH ORDINALITY
        AS s(id, name, queue, payload, max_attempts, priority, run_at, idempotency_key,
             timeout_seconds, backoff_base, backoff_factor, backoff_max, trace_context,
             tenant, submitted_by, concurrency_key, concurrency_limit, ord)
), new_queues AS (
    INSERT INTO queues (tenant, name) SELECT DISTINCT tenant, queue FROM s ORDER BY tenant, queue
    ON CONFLICT DO NOTHING
)
INSERT INTO tasks (id, name, queue, state, payload, max_attempts, priority, run_at,
                   idempotency_key, timeout_seconds, backoff_base, backoff_factor, backoff_max,
                   trace_context, queue_paused, tenant, submitted_by, concurrency_key,
                   concurrency_limit)
SELECT s.id, s.name, s.queue,
       CASE WHEN s.run_at > now() THEN 'SCHEDULED' ELSE 'QUEUED' END,
       s.payload::jsonb,
       coalesce(s.max_attempts, q.max_attempts, 1),
       s.priority,
       coalesce(s.run_at, now()),
       s.idempotency_key,
       coalesce(s.timeout_seconds, q.timeout_seconds),
       coalesce(s.backoff_base, q.backoff_base, 1),
       coalesce(s.backoff_factor, q.backoff_factor, 2),
       coalesce(s.backoff_max, q.backoff_max, 300),
       s.trace_context::jsonb,
       coalesce(q.paused, false),
       s.tenant,
       s.submitted_by,
       s.concurrency_key,
       s.concurrency_limit
FROM s LEFT JOIN queues q ON q.tenant = s.tenant AND q.name = s.queue
ORDER BY s.ord
ON CONFLICT (tenant, queue, idempotency_key) WHERE idempotency_key IS NOT NULL DO NOTHING
RETURNING id, state, max_attempts, run_at, created_at, timeout_seconds,
          backoff_base, backoff_factor, backoff_max;

-- name: select_by_idempotency
-- params: tenants, queues, keys
SELECT t.* FROM tasks t
JOIN unnest($1::text[], $2::text[], $3::text[]) AS k(tenant, queue, idempotency_key)
  ON t.tenant = k.tenant AND t.queue = k.queue AND t.idempotency_key = k.idempotency_key;

-- name: get_task
-- params: tenant, submitted_by, id
SELECT * FROM tasks WHERE tenant = $1 AND ($2::text IS NULL OR submitted_by = $2) AND id = $3;

-- name: get_tasks
-- params: tenant, submitted_by, ids
SELECT * FROM tasks
WHERE tenant = $1 AND ($2::text IS NULL OR submitted_by = $2) AND id = ANY($3::uuid[]);

-- Listing: newest first; the cursor is the seq of the last row of the
-- previous page. One statement per filter combination, so each has its index.

-- name: list_tasks
-- params: tenant, submitted_by, before_seq, limit
SELECT * FROM tasks
WHERE tenant = $1 AND ($2::text IS NULL OR submitted_by = $2) AND ($3::bigint IS NULL OR seq < $3)
ORDER BY tenant, seq DESC LIMIT $4;

-- name: list_tasks_by_queue
-- params: tenant, submitted_by, queue, before_seq, limit
-- Walks (tenant, queue, state, seq): a merge over the states of the queue.
SELECT * FROM tasks
WHERE tenant = $1 AND ($2::text IS NULL OR submitted_by = $2) AND queue = $3
  AND ($4::bigint IS NULL OR seq < $4)
ORDER BY seq DESC LIMIT $5;

-- name: list_tasks_by_state
-- params: tenant, submitted_by, state, before_seq, limit
SELECT * FROM tasks
WHERE tenant = $1 AND ($2::text IS NULL OR submitted_by = $2) AND state = $3
  AND ($4::bigint IS NULL OR seq < $4)
ORDER BY tenant, seq DESC LIMIT $5;

-- name: list_tasks_by_queue_state
-- params: tenant, submitted_by, queue, state, before_seq, limit
SELECT * FROM tasks
WHERE tenant = $1 AND ($2::text IS NULL OR submitted_by = $2) AND queue = $3 AND state = $4
  AND ($5::bigint IS NULL OR seq < $5)
ORDER BY tenant, queue, state, seq DESC LIMIT $6;

-- name: cancel_task
-- params: tenant, id, channel
-- Waiting tasks are cancelled at once; a running one is marked, and the
-- replica holding it is told on treadle_cancel_<schema>.
WITH cancelled AS (
    UPDATE tasks SET state = 'CANCELLED', finished_at = now()
    WHERE tenant = $1 AND id = $2 AND state IN ('QUEUED', 'SCHEDULED', 'RETRYING')
    RETURNING *
), requested AS (
    UPDATE tasks SET cancel_requested = true
    WHERE tenant = $1 AND id = $2 AND state = 'RUNNING'
    RETURNING *
), told AS (
    SELECT pg_notify($3, id::text) FROM requested
)
SELECT * FROM cancelled
UNION ALL
SELECT requested.* FROM requested LEFT JOIN told ON true;

-- name: retry_task
-- params: tenant, id
-- A dead or cancelled task goes back to the queue with fresh attempts (and a
-- fresh count of lost replicas); its error history is kept. It is marked
-- queue_paused when its queue is paused.
UPDATE tasks
SET state = 'QUEUED', attempts = 0, reclaims = 0, run_at = now(), result = NULL, error = NULL,
    started_at = NULL, finished_at = NULL, cancel_requested = false,
    lease_owner = NULL, lease_expires_at = NULL,
    queue_paused = coalesce(
        (SELECT paused FROM queues WHERE tenant = tasks.tenant AND name = tasks.queue), false)
WHERE tenant = $1 AND id = $2 AND state IN ('DEAD', 'CANCELLED')
RETURNING *;

-- name: promote_due
-- tenant: upkeep of every tenant's waiting tasks
-- Scheduled and retrying tasks whose time has come become ready.
WITH due AS (
    SELECT id FROM tasks
    WHERE state IN ('SCHEDULED', 'RETRYING') AND run_at <= now()
    ORDER BY run_at
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t SET state = 'QUEUED' FROM due WHERE t.id = due.id;

-- name: next_due
-- tenant: upkeep of every tenant's waiting tasks
-- The earliest and the latest run time of the waiting tasks (both ends of
-- the tasks_due index); either may be 'infinity' or '-infinity' in a row
-- written by hand, which bury_unschedulable then ends.
SELECT min(run_at) AS first, max(run_at) AS last
FROM tasks WHERE state IN ('SCHEDULED', 'RETRYING');

-- name: bury_unschedulable
-- tenant: upkeep of every tenant's waiting tasks
-- Scheduled or retrying tasks whose run time is not finite (a row written by
-- hand, or by older code) can never be due as they are: each ends DEAD, with
-- an error saying why. Returns each, its queue, and that reason.
WITH bad AS (
    SELECT id, jsonb_build_object(
               'type', 'PoisonTask',
               'message', format('run_at is %s, not a finite time: it can never be due', run_at),
               'traceback', '', 'attempt', attempts, 'failed_at', now()) AS error
    FROM tasks
    WHERE state IN ('SCHEDULED', 'RETRYING') AND run_at IN ('infinity', '-infinity')
    LIMIT 1000
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t
SET state = 'DEAD', error = bad.error, finished_at = now(),
    errors = CASE WHEN jsonb_typeof(t.errors) = 'array' THEN t.errors ELSE '[]' END || bad.error
FROM bad WHERE t.id = bad.id
RETURNING t.id, t.tenant, t.queue, bad.error->>'message' AS reason;

-- name: claim
-- params: limit, owner, lease_seconds, names
-- tenant: a replica runs every tenant's tasks
-- Claim up to $1 ready tasks named in $4 (this replica's handlers) of queues
-- neither paused nor limited (those: claim_limited, claim_start_limited),
-- without a concurrency key (those: claim_keyed),
-- highest priority first, then by run time, then submission order; skip rows
-- other replicas locked. Two ordered index scans, each stopping after $1 rows:
-- the unmarked ready tasks (tasks_ready, where a paused queue's are not: see
-- 0006_paused_queues.sql) and, per queue not paused, those still marked from
-- a pause (tasks_paused_ready); the name filters them (others' tasks ahead
-- are read past: docs/operations.md). Returns what running a task needs.
-- (SET within the first 1 kB: tests find it in pg_stat_activity's text.)
UPDATE tasks t
SET state = 'RUNNING', attempts = t.attempts + 1, claims = t.claims + 1, started_at = now(),
    lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3), queue_paused = false
FROM (
    SELECT id FROM (
        SELECT id, priority, run_at, seq FROM (
            SELECT id, priority, run_at, seq FROM tasks
            WHERE state = 'QUEUED' AND NOT queue_paused AND concurrency_key IS NULL
              AND name = ANY($4::text[])
              AND (tenant, queue) NOT IN (
                  SELECT tenant, name FROM queues
                  WHERE paused OR max_concurrent IS NOT NULL OR start_limit IS NOT NULL)
            ORDER BY priority DESC, run_at, seq
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ) unmarked
        UNION ALL
        SELECT c.id, c.priority, c.run_at, c.seq FROM queues q
        CROSS JOIN LATERAL (
            SELECT id, priority, run_at, seq FROM tasks
            WHERE state = 'QUEUED' AND queue_paused AND tenant = q.tenant AND queue = q.name
              AND name = ANY($4::text[]) AND concurrency_key IS NULL
            ORDER BY tenant, queue, priority DESC, run_at, seq
            LIMIT $1
            FOR UPDATE SKIP LOCKED
        ) c
        WHERE NOT q.paused AND q.max_concurrent IS NULL AND q.start_limit IS NULL
    ) candidates
    ORDER BY priority DESC, run_at, seq
    LIMIT $1
) ready
WHERE t.id = ready.id
RETURNING t.id, t.claims, t.tenant, t.name, t.queue, t.payload, t.attempts, t.max_attempts, t.priority,
          t.run_at, t.seq, t.started_at, t.timeout_seconds, t.backoff_base, t.backoff_factor,
          t.backoff_max, t.cancel_requested, t.trace_context;

-- name: claim_queues
-- params: limit, owner, lease_seconds, names, queues
-- tenant: a replica runs every tenant's tasks
-- claim, for a replica that claims only the queues named in $5 (`--queues`):
-- per queue of those names in each tenant, neither paused nor limited, one
-- ordered scan of tasks_ready_by_queue (tasks still marked from a pause too)
-- stopping after $1 rows of the names in $4 without a concurrency key; then the first $1 of them all in
-- claim order. Other queues' backlogs are never read.
UPDATE tasks t
SET state = 'RUNNING', attempts = t.attempts + 1, claims = t.claims + 1, started_at = now(),
    lease_owner = $2, lease_expires_at = now() + make_interval(secs => $3), queue_paused = false
FROM (
    SELECT c.id FROM queues q
    CROSS JOIN LATERAL (
        SELECT id, priority, run_at, seq FROM tasks
        WHERE state = 'QUEUED' AND tenant = q.tenant AND queue = q.name
          AND name = ANY($4::text[]) AND concurrency_key IS NULL
        ORDER BY tenant, queue, priority DESC, run_at, seq
        LIMIT $1
        FOR UPDATE SKIP LOCKED
    ) c
    WHERE q.name = ANY($5::text[])
      AND NOT q.paused AND q.max_concurrent IS NULL AND q.start_limit IS NULL
    ORDER BY c.priority DESC, c.run_at, c.seq
    LIMIT $1
) ready
WHERE t.id = ready.id
RETURNING t.id, t.claims, t.tenant, t.name, t.queue, t.payload, t.attempts, t.max_attempts, t.priority,
          t.run_at, t.seq, t.started_at, t.timeout_seconds, t.backoff_base, t.backoff_factor,
          t.backoff_max, t.cancel_requested, t.trace_context;

-- name: limited_queues_ready
-- params: queues, names
-- tenant: a replica runs every tenant's tasks
-- Queues with a max_concurrent limit or a start limit, not paused, with ready
-- tasks of the names in $2; and which limits each has. Only queues named in $1
-- when it is not null (`--queues`). The scalar subquery probes each (few)
-- limited queue; an EXISTS here let the planner scan the whole backlog instead.
SELECT tenant, name, max_concurrent IS NOT NULL AS concurrent,
       start_limit IS NOT NULL AS start_limited, start_limit_key IS NOT NULL AS keyed
FROM queues q
WHERE (max_concurrent IS NOT NULL OR start_limit IS NOT NULL) AND NOT paused
  AND ($1::text[] IS NULL OR name = ANY($1::text[]))
  AND (SELECT true FROM tasks t
       WHERE t.state = 'QUEUED' AND t.tenant = q.tenant AND t.queue = q.name
         AND t.name = ANY($2::text[])
       LIMIT 1);

-- name: lock_queue
-- params: key
-- tenant: the key names the tenant's queue
-- Held until commit: claims in a limited queue are serialised across replicas.
SELECT pg_advisory_xact_lock(hashtext($1));

-- name: claim_limited
-- params: tenant, queue, limit, owner, lease_seconds, names
-- Claim from one limited queue of tenant $1 no more than its free slots
-- (max_concurrent minus tasks RUNNING anywhere) and $3, of the names in $6.
-- Run under lock_queue.
WITH q AS (
    SELECT greatest(0, max_concurrent - (
        SELECT count(*) FROM tasks
        WHERE state = 'RUNNING' AND tenant = $1 AND queue = $2)) AS free
    FROM queues WHERE tenant = $1 AND name = $2 AND NOT paused AND max_concurrent IS NOT NULL
), ready AS (
    SELECT id FROM tasks
    WHERE state = 'QUEUED' AND tenant = $1 AND queue = $2 AND name = ANY($6::text[])
      AND concurrency_key IS NULL
    ORDER BY tenant, queue, priority DESC, run_at, seq
    LIMIT least($3, coalesce((SELECT free FROM q), 0))
    FOR UPDATE SKIP LOCKED
)
UPDATE tasks t
SET state = 'RUNNING', attempts = t.attempts + 1, claims = t.claims + 1, started_at = now(),
    lease_owner = $4, lease_expires_at = now() + make_interval(secs => $5)
FROM ready WHERE t.id = ready.id AND t.tenant = $1
RETURNING t.id, t.claims, t.tenant, t.name, t.queue, t.payload, t.attempts, t.max_attempts, t.priority,
          t.run_at, t.seq, t.started_at, t.timeout_seconds, t.backoff_base, t.backoff_factor,
          t.backoff_max, t.cancel_requested, t.trace_context;

-- name: claim_start_limited
-- params: tenant, queue, limit, owner, lease_seconds, scan, names, with_keys
-- Claim from one start-limited queue of tenant $1 (run under lock_queue), of
-- the tasks named in $7 (the others are not candidates), at
-- most $3 tasks, no more than its free slots when it also has max_concurrent,
-- never more RUNNING per concurrency key than a task's concurrency_limit
-- (with $8, when the tenant has ready keyed tasks: run under the tenant's
-- keyed lock too, taken first, so the running tasks counted per key are every
-- claim committed before, as in claim_keyed; without $8 keyed tasks are not
-- candidates), and no more starts in the current window than start_limit: per distinct
-- value of the payload's top-level field start_limit_key when it has one
-- (tasks without that field share the key ''; a value longer than 200
-- characters counts by its md5). Windows are fixed: [k*W, (k+1)*W) seconds
-- since the epoch on the database's clock, read once the queue's lock is
-- held (clock_timestamp()); that time is also each task's started_at, so the
-- window a start is counted in is the one its started_at falls in. The
-- starts are counted in queue_starts in the same statement. The candidates
-- are the first ready tasks in claim order: one more than may start, for a
-- static limit; the first $6 for a keyed one, or with $8 (so keys further
-- back wait while the first $6 belong to keys whose window, or concurrency
-- keys whose limit, is full); a task whose concurrency key is at its limit
-- takes no start of the window. They are not
-- locked: every claim of this queue holds its lock, and the UPDATE skips a
-- task that changed meanwhile (a cancel).
-- Returns the claimed tasks, then one row whose id is null: `held_seconds`,
-- the seconds until the window ends when the window is what holds back the
-- queue's remaining candidates (none of them may start in this window), else
-- null (nothing left, or only this call's limit or max_concurrent held them).
WITH q AS (
    SELECT max_concurrent, start_limit, start_limit_key, at,
           to_timestamp(floor(extract(epoch FROM at) / w) * w) AS window_start,
           to_timestamp((floor(extract(epoch FROM at) / w) + 1) * w) AS window_end
    FROM queues CROSS JOIN clock_timestamp() AS at
    CROSS JOIN LATERAL (SELECT coalesce(start_window_seconds, 1) AS w) window_
    WHERE tenant = $1 AND name = $2 AND NOT paused AND start_limit IS NOT NULL
), free AS (
    SELECT CASE WHEN q.max_concurrent IS NULL THEN $3::int
                ELSE least($3::int, greatest(0, q.max_concurrent - (
                    SELECT count(*) FROM tasks
                    WHERE state = 'RUNNING' AND tenant = $1 AND queue = $2))::int) END AS n
    FROM q
), used AS (
    SELECT s.key, s.count FROM queue_starts s CROSS JOIN q
    WHERE s.tenant = $1 AND s.queue = $2 AND s.window_start = q.window_start
), candidates AS (
    SELECT t.id, t.priority, t.run_at, t.seq, t.concurrency_key, t.concurrency_limit,
           CASE WHEN length(t.payload ->> q.start_limit_key) > 200
                THEN md5(t.payload ->> q.start_limit_key)
                ELSE coalesce(t.payload ->> q.start_limit_key, '') END AS key
    FROM q CROSS JOIN tasks t
    WHERE t.state = 'QUEUED' AND t.tenant = $1 AND t.queue = $2 AND t.name = ANY($7::text[])
      AND ($8::boolean OR t.concurrency_key IS NULL)
    ORDER BY t.tenant, t.queue, t.priority DESC, t.run_at, t.seq
    LIMIT (SELECT CASE WHEN start_limit_key IS NULL AND NOT $8::boolean
                       THEN least($3::int, start_limit) + 1 ELSE $6 END
           FROM q)
), key_running AS (
    SELECT r.concurrency_key, count(*) AS n FROM tasks r
    WHERE r.state = 'RUNNING' AND r.tenant = $1 AND r.concurrency_key IS NOT NULL
      AND r.concurrency_key IN (SELECT concurrency_key FROM candidates)
    GROUP BY r.concurrency_key
), startable AS (
    SELECT c.id, c.priority, c.run_at, c.seq, c.key
    FROM (
        SELECT c.*, row_number() OVER (PARTITION BY c.concurrency_key
                                       ORDER BY c.priority DESC, c.run_at, c.seq) AS key_rank
        FROM candidates c
    ) c LEFT JOIN key_running r ON r.concurrency_key = c.concurrency_key
    WHERE c.concurrency_key IS NULL OR c.key_rank + coalesce(r.n, 0) <= c.concurrency_limit
), ranked AS (
    SELECT c.id, c.priority, c.run_at, c.seq, c.key,
           row_number() OVER (PARTITION BY c.key ORDER BY c.priority DESC, c.run_at, c.seq)
               <= (SELECT start_limit FROM q) - coalesce(u.count, 0) AS may_start
    FROM startable c LEFT JOIN used u ON u.key = c.key
), allowed AS (
    SELECT id, key FROM ranked WHERE may_start
    ORDER BY priority DESC, run_at, seq
    LIMIT coalesce((SELECT n FROM free), 0)
), claimed AS (
    UPDATE tasks t
    SET state = 'RUNNING', attempts = t.attempts + 1, claims = t.claims + 1,
        started_at = (SELECT at FROM q), lease_owner = $4,
        lease_expires_at = now() + make_interval(secs => $5), queue_paused = false
    FROM allowed
    WHERE t.id = allowed.id AND t.tenant = $1 AND t.state = 'QUEUED'
    RETURNING t.id, t.claims, t.tenant, t.name, t.queue, t.payload, t.attempts, t.max_attempts,
              t.priority, t.run_at, t.seq, t.started_at, t.timeout_seconds, t.backoff_base,
              t.backoff_factor, t.backoff_max, t.cancel_requested, t.trace_context, allowed.key
), counted AS (
    INSERT INTO queue_starts AS s (tenant, queue, key, window_start, window_end, count)
    SELECT $1, $2, c.key, q.window_start, q.window_end, count(*)
    FROM claimed c CROSS JOIN q
    GROUP BY c.key, q.window_start, q.window_end
    ORDER BY c.key
    ON CONFLICT (tenant, queue, key) DO UPDATE SET
        count = CASE WHEN s.window_start = excluded.window_start THEN s.count + excluded.count
                     ELSE excluded.count END,
        window_start = excluded.window_start, window_end = excluded.window_end
    WHERE s.tenant = $1
)
SELECT id, claims, tenant, name, queue, payload, attempts, max_attempts, priority, run_at, seq,
       started_at, timeout_seconds, backoff_base, backoff_factor, backoff_max, cancel_requested,
       trace_context, NULL::float8 AS held_seconds
FROM claimed
UNION ALL
SELECT NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL, NULL,
       NULL, NULL, NULL,
       CASE WHEN EXISTS (SELECT 1 FROM ranked WHERE NOT may_start)
                 AND (SELECT count(*) FROM ranked WHERE may_start)
                     <= (SELECT count(*) FROM claimed)
            THEN extract(epoch FROM q.window_end - q.at)::float8 END
FROM q;

-- name: keyed_tenants_ready
-- params: queues, names
-- tenant: a replica runs every tenant's tasks
-- The tenants with ready tasks that carry a concurrency key, of the names in
-- $2 (and of the queues in $1 when it is not null: `--queues`). One probe of
-- tasks_keyed_ready per tenant that has queues.
SELECT q.tenant FROM (SELECT DISTINCT tenant FROM queues) q
WHERE (SELECT true FROM tasks t
       WHERE t.state = 'QUEUED' AND t.concurrency_key IS NOT NULL AND t.tenant = q.tenant
         AND t.name = ANY($2::text[]) AND ($1::text[] IS NULL OR t.queue = ANY($1::text[]))
       LIMIT 1);

-- name: keyed_limited_queues
-- params: tenant
-- The queues of tenant $1 with max_concurrent (and no start limit), not
-- paused, in name order: a keyed claim takes their locks (lock_queue, after
-- the tenant's keyed lock) so that it may claim their keyed tasks too.
SELECT name FROM queues
WHERE tenant = $1 AND max_concurrent IS NOT NULL AND start_limit IS NULL AND NOT paused
ORDER BY name;

-- name: claim_keyed
-- params: tenant, limit, owner, lease_seconds, names, queues, scan, locked
-- Claim ready tasks of tenant $1 that carry a concurrency key, of the names in
-- $5 (and the queues in $6 unless null), at most $2, never more RUNNING per
-- key than the task's concurrency_limit, nor more RUNNING in a queue with
-- max_concurrent than that. Run under lock_queue with the tenant's keyed lock
-- (serialising every claim of a keyed task of the tenant across replicas)
-- and the locks of the queues in $8 (keyed_limited_queues: those with
-- max_concurrent, whose claims claim_limited also makes under them), so the
-- running tasks counted here are every claim committed before. The
-- candidates are the first $7 ready keyed tasks in claim order (tasks further
-- back wait while these all belong to keys at their limit); queues paused,
-- start-limited (claim_start_limited claims their keyed tasks), or with a
-- max_concurrent but not locked here are left out: their keyed tasks wait. Candidates are not locked: every claim of a keyed
-- task holds the keyed lock, and the UPDATE skips a task that changed
-- meanwhile (a cancel).
WITH candidates AS (
    SELECT t.id, t.queue, t.priority, t.run_at, t.seq, t.concurrency_key, t.concurrency_limit
    FROM tasks t
    WHERE t.state = 'QUEUED' AND t.concurrency_key IS NOT NULL AND t.tenant = $1
      AND t.name = ANY($5::text[]) AND ($6::text[] IS NULL OR t.queue = ANY($6::text[]))
      AND t.queue NOT IN (
          SELECT name FROM queues
          WHERE tenant = $1
            AND (paused OR start_limit IS NOT NULL
                 OR (max_concurrent IS NOT NULL AND NOT name = ANY($8::text[]))))
    ORDER BY t.tenant, t.priority DESC, t.run_at, t.seq
    LIMIT $7
), running AS (
    SELECT r.concurrency_key, count(*) AS n FROM tasks r
    WHERE r.state = 'RUNNING' AND r.tenant = $1 AND r.concurrency_key IS NOT NULL
      AND r.concurrency_key IN (SELECT concurrency_key FROM candidates)
    GROUP BY r.concurrency_key
), by_key AS (
    SELECT c.id, c.queue, c.priority, c.run_at, c.seq
    FROM (
        SELECT c.*, row_number() OVER (PARTITION BY c.concurrency_key
                                       ORDER BY c.priority DESC, c.run_at, c.seq) AS rank
        FROM candidates c
    ) c LEFT JOIN running r ON r.concurrency_key = c.concurrency_key
    WHERE c.rank + coalesce(r.n, 0) <= c.concurrency_limit
), free AS (
    SELECT q.name, greatest(0, q.max_concurrent - (
        SELECT count(*) FROM tasks WHERE state = 'RUNNING' AND tenant = $1 AND queue = q.name
    )) AS n
    FROM queues q
    WHERE q.tenant = $1 AND q.name = ANY($8::text[]) AND q.max_concurrent IS NOT NULL
), allowed AS (
    SELECT id FROM (
        SELECT b.*, row_number() OVER (PARTITION BY b.queue
                                       ORDER BY b.priority DESC, b.run_at, b.seq) AS rank
        FROM by_key b
    ) b LEFT JOIN free f ON f.name = b.queue
    WHERE f.n IS NULL OR b.rank <= f.n
    ORDER BY b.priority DESC, b.run_at, b.seq
    LIMIT $2
)
UPDATE tasks t
SET state = 'RUNNING', attempts = t.attempts + 1, claims = t.claims + 1, started_at = now(),
    lease_owner = $3, lease_expires_at = now() + make_interval(secs => $4), queue_paused = false
FROM allowed WHERE t.id = allowed.id AND t.tenant = $1 AND t.state = 'QUEUED'
RETURNING t.id, t.claims, t.tenant, t.name, t.queue, t.payload, t.attempts, t.max_attempts, t.priority,
          t.run_at, t.seq, t.started_at, t.timeout_seconds, t.backoff_base, t.backoff_factor,
          t.backoff_max, t.cancel_requested, t.trace_context;

-- name: complete
-- params: ids, owners, claims, states, results, errors, finished_ats, run_ats
-- tenant: a lease names its task, whichever tenant's
-- Record many outcomes in one statement. An outcome applies only while its
-- lease (id, owner, claim) still holds; the leases returned are the ones applied.
-- (lease_owner is set only while a task runs, so owner and claim say it all;
-- leaving state out keeps the plan on the primary key whatever the statistics.)
-- A cancel asked for while the task ran wins over the outcome.
UPDATE tasks t
SET state = CASE WHEN t.cancel_requested THEN 'CANCELLED' ELSE o.state END,
    result = o.result::jsonb,
    error = coalesce(o.error::jsonb, t.error),
    errors = CASE WHEN o.error IS NULL THEN t.errors ELSE t.errors || o.error::jsonb END,
    run_at = coalesce(o.run_at, t.run_at),
    finished_at = CASE WHEN t.cancel_requested OR o.state IN ('SUCCEEDED', 'DEAD', 'CANCELLED')
                       THEN o.finished_at END,
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest($1::uuid[], $2::text[], $3::int[], $4::text[], $5::text[], $6::text[],
            $7::timestamptz[], $8::timestamptz[])
     AS o(id, owner, claim, state, result, error, finished_at, run_at)
WHERE t.id = o.id AND t.claims = o.claim
  AND t.lease_owner = o.owner
RETURNING t.id, o.owner AS lease_owner, t.claims, t.tenant, t.queue, t.state, t.started_at,
          t.concurrency_key IS NOT NULL AS keyed;

-- name: release
-- params: ids, owners, claims, delay
-- tenant: a lease names its task, whichever tenant's
-- Hand running tasks back, each while its lease (id, owner, claim) holds,
-- without charging the attempt: ready again at once ($4 = 0, graceful
-- shutdown) or after $4 seconds.
UPDATE tasks t
SET state = CASE WHEN $4 > 0 THEN 'SCHEDULED' ELSE 'QUEUED' END,
    run_at = CASE WHEN $4 > 0 THEN now() + make_interval(secs => $4) ELSE t.run_at END,
    attempts = t.attempts - 1, started_at = NULL,
    lease_owner = NULL, lease_expires_at = NULL
FROM unnest($1::uuid[], $2::text[], $3::int[]) AS r(id, owner, claim)
WHERE t.id = r.id AND t.claims = r.claim
  AND t.lease_owner = r.owner
RETURNING t.id;

-- name: notify_ready
-- params: channel
-- tenant: touches no row
SELECT pg_notify($1, 'ready');

-- name: prune_finished
-- params: before, batch
-- tenant: retention is the installation's, for every tenant
-- Delete up to $2 finished tasks that finished before $1, oldest first, read
-- from tasks_finished (only finished tasks, by finish time: see 0007).
DELETE FROM tasks WHERE id IN (
    SELECT id FROM tasks
    WHERE state IN ('SUCCEEDED', 'DEAD', 'CANCELLED') AND finished_at < $1
    ORDER BY finished_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
);

-- name: expire_idempotency_keys
-- params: before, batch
-- tenant: retention is the installation's, for every tenant
-- Free up to $2 idempotency keys of tasks created before $1.
UPDATE tasks SET idempotency_key = NULL WHERE id IN (
    SELECT id FROM tasks
    WHERE idempotency_key IS NOT NULL AND created_at < $1
    ORDER BY created_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
);

-- name: ensure_queues
-- params: tenant, names
INSERT INTO queues (tenant, name) SELECT $1, unnest($2::text[]) ON CONFLICT DO NOTHING;

-- name: list_queues
-- params: tenant
SELECT * FROM queues WHERE tenant = $1 ORDER BY name;

-- name: get_queue
-- params: tenant, name
SELECT * FROM queues WHERE tenant = $1 AND name = $2;

-- name: update_queue
-- params: tenant, name, max_concurrent, max_attempts, timeout_seconds, backoff_base
-- params: backoff_factor, backoff_max, paused, start_limit, start_window_seconds
-- params: start_limit_key
-- Null leaves a setting as it is; 0 removes max_concurrent, timeout_seconds or
-- start_limit, '' start_limit_key. A start limit set without a window counts
-- per second (the window stays when the limit is removed).
UPDATE queues SET
    max_concurrent = CASE WHEN $3::int IS NULL THEN max_concurrent
                          ELSE nullif($3::int, 0) END,
    max_attempts = coalesce($4::int, max_attempts),
    timeout_seconds = CASE WHEN $5::float8 IS NULL THEN timeout_seconds
                           ELSE nullif($5::float8, 0) END,
    backoff_base = coalesce($6::float8, backoff_base),
    backoff_factor = coalesce($7::float8, backoff_factor),
    backoff_max = coalesce($8::float8, backoff_max),
    paused = coalesce($9::bool, paused),
    start_limit = CASE WHEN $10::int IS NULL THEN start_limit ELSE nullif($10::int, 0) END,
    start_window_seconds = coalesce($11::float8, start_window_seconds,
                                    CASE WHEN nullif($10::int, 0) IS NOT NULL THEN 1 END),
    start_limit_key = CASE WHEN $12::text IS NULL THEN start_limit_key
                           ELSE nullif($12::text, '') END,
    updated_at = now()
WHERE tenant = $1 AND name = $2
RETURNING *;

-- name: mark_paused_tasks
-- params: tenant, queue
-- After pausing a queue: its unfinished tasks leave the claim's main index.
-- (Resuming touches no task: the claim reads what is still marked.)
UPDATE tasks SET queue_paused = true
WHERE tenant = $1 AND queue = $2 AND state IN ('QUEUED', 'SCHEDULED', 'RETRYING', 'RUNNING')
  AND NOT queue_paused;

-- name: register_replica
-- params: id, host, pid, version
-- tenant: replicas are shared by every tenant
INSERT INTO replicas (id, host, pid, version) VALUES ($1, $2, $3, $4)
ON CONFLICT (id) DO UPDATE SET host = $2, pid = $3, version = $4, started_at = now(),
    last_heartbeat_at = now(), stopped_at = NULL;

-- name: heartbeat
-- params: replica, ids, owners, claims, lease_seconds
-- tenant: replicas are shared by every tenant
-- One statement per interval: the replica is alive, and every lease that still
-- holds ($2 ids, owners $3, claims $4) runs for another $5 seconds. Returns the ids
-- whose lease it still holds, and whether someone asked to cancel each (the
-- safety net for a cancel NOTIFY this replica missed).
WITH alive AS (
    UPDATE replicas SET last_heartbeat_at = now() WHERE id = $1
)
UPDATE tasks t SET lease_expires_at = now() + make_interval(secs => $5)
FROM unnest($2::uuid[], $3::text[], $4::int[]) AS h(id, owner, claim)
WHERE t.id = h.id AND t.claims = h.claim AND t.lease_owner = h.owner
RETURNING t.id, t.cancel_requested;

-- name: task_progress
-- params: id, owner, claim, progress, message
-- tenant: a lease names its task, whichever tenant's
-- A running handler's progress report (TaskContext.heartbeat), stored while
-- its lease (id, owner, claim) holds; no row back: the lease moved on.
-- A null progress keeps the last one (a message alone).
UPDATE tasks SET progress = coalesce($4, progress), progress_message = $5,
    progress_at = now()
WHERE id = $1 AND claims = $3 AND lease_owner = $2
RETURNING id;

-- name: stop_replica
-- params: id
-- tenant: replicas are shared by every tenant
UPDATE replicas SET stopped_at = now(), last_heartbeat_at = now() WHERE id = $1;

-- name: reap_expired
-- params: lock, batch, max_reclaims
-- tenant: a lease names its task, whichever tenant's
-- Take back up to $2 tasks whose lease expired (their replica died or lost the
-- database for longer than a lease). One replica at a time reaps ($1 names the
-- advisory lock). The lost attempt is not charged; after more than $3 losses
-- the task is DEAD. Returns each task (its name, queue, max attempts and
-- trace context, for the log line), its old owner and its new state.
WITH lock AS (
    SELECT pg_try_advisory_xact_lock(hashtext($1)) AS held
), expired AS (
    SELECT id, lease_owner, jsonb_build_object(
               'type', 'LeaseExpired',
               'message', format('replica %s stopped renewing its lease', lease_owner),
               'traceback', '', 'attempt', attempts, 'failed_at', now()) AS error
    FROM tasks
    WHERE state = 'RUNNING' AND lease_expires_at < now() AND (SELECT held FROM lock)
    ORDER BY lease_expires_at
    LIMIT $2
    FOR UPDATE SKIP LOCKED
), reclaimed AS (
    UPDATE tasks t
    SET state = CASE WHEN t.reclaims >= $3 THEN 'DEAD' ELSE 'QUEUED' END,
        attempts = CASE WHEN t.reclaims >= $3 THEN t.attempts ELSE t.attempts - 1 END,
        reclaims = t.reclaims + 1,
        error = expired.error,
        errors = t.errors || expired.error,
        finished_at = CASE WHEN t.reclaims >= $3 THEN now() END,
        started_at = CASE WHEN t.reclaims >= $3 THEN t.started_at END,
        lease_owner = NULL, lease_expires_at = NULL
    FROM expired
    WHERE t.id = expired.id
    RETURNING t.id, t.state, t.tenant, t.queue, t.name, t.max_attempts, t.trace_context
)
SELECT reclaimed.id, reclaimed.state, reclaimed.tenant, reclaimed.queue, reclaimed.name,
       reclaimed.max_attempts, reclaimed.trace_context, expired.lease_owner,
       expired.error::text AS error
FROM reclaimed JOIN expired USING (id);

-- name: list_replicas
-- params: tenant, lease_seconds
-- Replicas are shared; each with the count of tenant $1's tasks it runs.
SELECT r.*, coalesce(n.running, 0) AS running,
       r.stopped_at IS NULL AND r.last_heartbeat_at > now() - make_interval(secs => $2) AS alive
FROM replicas r
LEFT JOIN (
    SELECT lease_owner, count(*) AS running FROM tasks
    WHERE state = 'RUNNING' AND tenant = $1 GROUP BY lease_owner
) n ON n.lease_owner = r.id
ORDER BY r.started_at DESC
LIMIT 200;

-- name: prune_replicas
-- params: older_than_seconds
-- tenant: replicas are shared by every tenant
DELETE FROM replicas
WHERE coalesce(stopped_at, last_heartbeat_at) < now() - make_interval(secs => $1);

-- name: ping
-- tenant: touches no row
SELECT 1;
