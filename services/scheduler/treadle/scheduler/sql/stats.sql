-- Statistics: the flush of each replica's counters, and the reads behind the
-- statistics APIs. Tables in migrations/0004_stats.sql. Histograms are summed
-- bucket by bucket (one sum per bound of treadle.scheduler.tally.BOUNDS, plus
-- the overflow bucket: 19), which is ten times faster than an aggregate over
-- the arrays. Each block declares its parameters, in $1..$n order, on
-- `-- params:` lines.

-- name: stats_flush
-- params: hourly_queues, hourly_hours, hourly_submitted, hourly_succeeded, hourly_failed
-- params: hourly_dead, hourly_cancelled, hourly_duration_sums, hourly_duration_counts
-- params: hourly_duration_maxes, hourly_buckets, recent_widths, recent_ats, recent_queues
-- params: recent_succeeded, recent_failed, recent_dead, recent_cancelled
-- params: recent_duration_sums, recent_duration_counts, recent_duration_maxes, recent_buckets
-- params: error_queues, error_hours, error_types, error_messages, error_counts
-- params: error_examples, error_last_seen_ats, hourly_tenants, recent_tenants, error_tenants
-- tenant: each row names its tenant ($30, $31, $32): a replica counts every tenant's tasks
-- Add one replica's counters to the aggregates: one statement per flush
-- however many tasks it counted. Rows come sorted by key, so replicas
-- flushing at once take their row locks in the same order.
WITH h AS (
    SELECT * FROM unnest($1::text[], $2::timestamptz[], $3::bigint[], $4::bigint[],
                         $5::bigint[], $6::bigint[], $7::bigint[], $8::float8[], $9::bigint[],
                         $10::float8[], $11::text[], $30::text[])
        AS h(queue, hour, submitted, succeeded, failed, dead, cancelled,
             duration_sum, duration_count, duration_max, buckets, tenant)
), totals AS (
    INSERT INTO task_stats_totals AS t (tenant, queue, submitted, succeeded, failed, dead,
                                        cancelled)
    SELECT tenant, queue, sum(submitted), sum(succeeded), sum(failed), sum(dead), sum(cancelled)
    FROM h GROUP BY tenant, queue ORDER BY tenant, queue
    ON CONFLICT (tenant, queue) DO UPDATE SET
        submitted = t.submitted + excluded.submitted,
        succeeded = t.succeeded + excluded.succeeded,
        failed = t.failed + excluded.failed,
        dead = t.dead + excluded.dead,
        cancelled = t.cancelled + excluded.cancelled,
        updated_at = now()
), hourly AS (
    INSERT INTO task_stats_hourly AS t (tenant, queue, hour, submitted, succeeded, failed, dead,
                                        cancelled, duration_sum, duration_count, duration_max,
                                        duration_buckets)
    SELECT tenant, queue, hour, submitted, succeeded, failed, dead, cancelled,
           duration_sum, duration_count, duration_max, buckets::bigint[]
    FROM h
    ON CONFLICT (tenant, queue, hour) DO UPDATE SET
        submitted = t.submitted + excluded.submitted,
        succeeded = t.succeeded + excluded.succeeded,
        failed = t.failed + excluded.failed,
        dead = t.dead + excluded.dead,
        cancelled = t.cancelled + excluded.cancelled,
        duration_sum = t.duration_sum + excluded.duration_sum,
        duration_count = t.duration_count + excluded.duration_count,
        duration_max = greatest(t.duration_max, excluded.duration_max),
        duration_buckets = stats_add_buckets(t.duration_buckets, excluded.duration_buckets),
        updated_at = now()
), recent AS (
    INSERT INTO task_stats_recent AS t (width, at, tenant, queue, succeeded, failed, dead,
                                        cancelled, duration_sum, duration_count, duration_max,
                                        duration_buckets)
    SELECT width, at, tenant, queue, succeeded, failed, dead, cancelled,
           duration_sum, duration_count, duration_max, buckets::bigint[]
    FROM unnest($12::smallint[], $13::timestamptz[], $14::text[], $15::bigint[],
                $16::bigint[], $17::bigint[], $18::bigint[], $19::float8[], $20::bigint[],
                $21::float8[], $22::text[], $31::text[])
         AS r(width, at, queue, succeeded, failed, dead, cancelled,
              duration_sum, duration_count, duration_max, buckets, tenant)
    ON CONFLICT (width, at, tenant, queue) DO UPDATE SET
        succeeded = t.succeeded + excluded.succeeded,
        failed = t.failed + excluded.failed,
        dead = t.dead + excluded.dead,
        cancelled = t.cancelled + excluded.cancelled,
        duration_sum = t.duration_sum + excluded.duration_sum,
        duration_count = t.duration_count + excluded.duration_count,
        duration_max = greatest(t.duration_max, excluded.duration_max),
        duration_buckets = stats_add_buckets(t.duration_buckets, excluded.duration_buckets)
)
INSERT INTO task_error_stats AS t (tenant, queue, hour, type, message, count, examples,
                                   last_seen_at)
SELECT tenant, queue, hour, type, message, count, examples::uuid[], last_seen_at
FROM unnest($23::text[], $24::timestamptz[], $25::text[], $26::text[], $27::bigint[],
            $28::text[], $29::timestamptz[], $32::text[])
     AS e(queue, hour, type, message, count, examples, last_seen_at, tenant)
ON CONFLICT (hour, tenant, queue, type, message) DO UPDATE SET
    count = t.count + excluded.count,
    examples = ARRAY(
        SELECT x FROM unnest(t.examples || excluded.examples) WITH ORDINALITY AS u(x, o)
        GROUP BY x ORDER BY min(o) LIMIT 3),
    last_seen_at = greatest(t.last_seen_at, excluded.last_seen_at);

-- name: stats_prune
-- params: seconds_before, minutes_before, errors_before, lock
-- tenant: retention is the installation's, for every tenant
-- Drop one-second rows before $1, one-minute rows before $2 and error rows of
-- hours before $3. One replica at a time ($4 names the advisory lock); the
-- others skip the round.
WITH lock AS (
    SELECT pg_try_advisory_xact_lock(hashtext($4)) AS held
), seconds AS (
    DELETE FROM task_stats_recent
    WHERE width = 1 AND at < $1 AND (SELECT held FROM lock)
), minutes AS (
    DELETE FROM task_stats_recent
    WHERE width = 60 AND at < $2 AND (SELECT held FROM lock)
)
DELETE FROM task_error_stats WHERE hour < $3 AND (SELECT held FROM lock);

-- name: stats_queues
-- params: tenant, queue
-- One queue ($2) of tenant $1 or every one: its settings; its waiting and
-- running tasks, each count a range of the (tenant, queue, state, seq) index
-- and the oldest ready task from the ready index, so the cost follows the
-- backlog, not the table; lifetime totals from their one row.
SELECT q.name, q.max_concurrent, q.paused,
       (SELECT count(*) FROM tasks t
        WHERE t.tenant = q.tenant AND t.queue = q.name AND t.state = 'QUEUED') AS length,
       (SELECT count(*) FROM tasks t
        WHERE t.tenant = q.tenant AND t.queue = q.name AND t.state = 'RUNNING') AS running,
       (SELECT count(*) FROM tasks t
        WHERE t.tenant = q.tenant AND t.queue = q.name AND t.state = 'SCHEDULED') AS scheduled,
       (SELECT count(*) FROM tasks t
        WHERE t.tenant = q.tenant AND t.queue = q.name AND t.state = 'RETRYING') AS retrying,
       (SELECT min(t.run_at) FROM tasks t
        WHERE t.tenant = q.tenant AND t.queue = q.name AND t.state = 'QUEUED')
           AS oldest_enqueued_at,
       coalesce(s.submitted, 0) AS total_enqueued,
       coalesce(s.succeeded, 0) AS total_completed,
       coalesce(s.failed, 0) AS total_failed,
       coalesce(s.dead, 0) AS total_dead,
       coalesce(s.cancelled, 0) AS total_cancelled
FROM queues q
LEFT JOIN task_stats_totals s ON s.tenant = q.tenant AND s.queue = q.name
WHERE q.tenant = $1 AND ($2::text IS NULL OR q.name = $2)
ORDER BY q.name;

-- name: stats_state_counts
-- params: tenant
-- The tenant's tasks stored, by state (a walk of the (tenant, queue, state, seq) index).
SELECT state, count(*) AS count FROM tasks WHERE tenant = $1 GROUP BY state;

-- name: stats_queue_count
-- params: tenant
SELECT count(*) FROM queues WHERE tenant = $1;

-- name: stats_window
-- params: tenant, width, since
-- Per queue of tenant $1, what finished in the buckets of width $2 (1 or 60
-- seconds) from $3 on.
SELECT queue,
       sum(succeeded)::bigint AS succeeded, sum(failed)::bigint AS failed,
       sum(dead)::bigint AS dead, sum(cancelled)::bigint AS cancelled,
       sum(duration_sum) AS duration_sum, sum(duration_count)::bigint AS duration_count,
       max(duration_max) AS duration_max,
       ARRAY[sum(duration_buckets[1]), sum(duration_buckets[2]), sum(duration_buckets[3]),
             sum(duration_buckets[4]), sum(duration_buckets[5]), sum(duration_buckets[6]),
             sum(duration_buckets[7]), sum(duration_buckets[8]), sum(duration_buckets[9]),
             sum(duration_buckets[10]), sum(duration_buckets[11]), sum(duration_buckets[12]),
             sum(duration_buckets[13]), sum(duration_buckets[14]), sum(duration_buckets[15]),
             sum(duration_buckets[16]), sum(duration_buckets[17]), sum(duration_buckets[18]),
             sum(duration_buckets[19])]::bigint[] AS duration_buckets
FROM task_stats_recent
WHERE tenant = $1 AND width = $2 AND at >= $3
GROUP BY queue;

-- name: stats_trends
-- params: tenant, unit, since, until, queues
-- Tenant $1's hourly aggregate from $3 until before $4, summed per $2 ('hour'
-- or 'day', in UTC) over the queues $5 (null: every queue).
SELECT date_trunc($2, hour, 'UTC') AS start,
       sum(submitted)::bigint AS submitted, sum(succeeded)::bigint AS succeeded,
       sum(failed)::bigint AS failed, sum(dead)::bigint AS dead,
       sum(cancelled)::bigint AS cancelled, sum(duration_sum) AS duration_sum,
       sum(duration_count)::bigint AS duration_count, max(duration_max) AS duration_max,
       ARRAY[sum(duration_buckets[1]), sum(duration_buckets[2]), sum(duration_buckets[3]),
             sum(duration_buckets[4]), sum(duration_buckets[5]), sum(duration_buckets[6]),
             sum(duration_buckets[7]), sum(duration_buckets[8]), sum(duration_buckets[9]),
             sum(duration_buckets[10]), sum(duration_buckets[11]), sum(duration_buckets[12]),
             sum(duration_buckets[13]), sum(duration_buckets[14]), sum(duration_buckets[15]),
             sum(duration_buckets[16]), sum(duration_buckets[17]), sum(duration_buckets[18]),
             sum(duration_buckets[19])]::bigint[] AS duration_buckets
FROM task_stats_hourly
WHERE tenant = $1 AND hour >= $3 AND hour < $4
  AND ($5::text[] IS NULL OR queue = ANY($5::text[]))
GROUP BY 1
ORDER BY 1;

-- name: stats_error_patterns
-- params: tenant, since, until, queue, limit
-- Tenant $1's $5 most frequent errors (type, message) of attempts that failed
-- in the hours from $2 until before $3, in queue $4 (null: every queue), with
-- up to three example task ids, the most recent first.
WITH e AS (
    SELECT * FROM task_error_stats
    WHERE tenant = $1 AND hour >= $2 AND hour < $3 AND ($4::text IS NULL OR queue = $4)
), p AS (
    SELECT type, message, sum(count)::bigint AS count, array_agg(DISTINCT queue) AS queues,
           min(hour) AS first_hour, max(last_seen_at) AS last_seen_at
    FROM e
    GROUP BY type, message
    ORDER BY count DESC, type, message
    LIMIT $5
)
SELECT p.*,
       ARRAY(SELECT x::text
             FROM e, unnest(e.examples) WITH ORDINALITY AS u(x, o)
             WHERE e.type = p.type AND e.message = p.message
             GROUP BY x ORDER BY max(e.hour) DESC, min(o) LIMIT 3) AS examples
FROM p
ORDER BY count DESC, type, message;

-- name: stats_replicas
-- params: lease_seconds
-- tenant: replicas are shared by every tenant
-- Replicas not stopped, with their start and last heartbeat; alive when heard
-- from within $1 seconds, lost otherwise.
SELECT id, started_at, last_heartbeat_at,
       last_heartbeat_at > now() - make_interval(secs => $1) AS alive,
       extract(epoch FROM now() - last_heartbeat_at)::float8 AS silent_seconds
FROM replicas
WHERE stopped_at IS NULL
ORDER BY started_at;
