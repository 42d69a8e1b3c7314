-- Statements behind the periodic metrics and the health report (metrics.py,
-- health.py). They run every few seconds on every replica: they only read, and
-- only through indexes. Queue gauges come from here, never from a counter row
-- updated per task.

-- name: metrics_queues
-- tenant: the operator's view of every tenant's queues (a name two tenants use is summed)
-- Per queue: its tasks by state and its oldest ready task's wait. Ready tasks
-- are counted in one pass over a ready index (tasks_ready_by_queue or
-- tasks_ready); the other states over tasks_queue_state_seq (queue, state,
-- seq), one range per queue and state (the state comes from VALUES, so the
-- planner cannot pick a partial index and filter by queue). The cost grows
-- with the tasks waiting, not with the finished ones kept for retention.
WITH ready AS (
    SELECT tenant, queue, count(*) AS n, min(run_at) AS oldest
    FROM tasks WHERE state = 'QUEUED'
    GROUP BY tenant, queue
), other AS (
    SELECT q.tenant, q.name, s.state, c.n
    FROM queues q
    CROSS JOIN (VALUES ('SCHEDULED'), ('RETRYING'), ('RUNNING'), ('DEAD')) AS s(state)
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM tasks t
        WHERE t.tenant = q.tenant AND t.queue = q.name AND t.state = s.state
    ) c
)
SELECT q.tenant, q.name, q.paused, q.max_concurrent,
       coalesce(r.n, 0) AS queued,
       extract(epoch FROM now() - r.oldest)::float8 AS oldest_queued_age,
       coalesce(sum(o.n) FILTER (WHERE o.state = 'SCHEDULED'), 0)::bigint AS scheduled,
       coalesce(sum(o.n) FILTER (WHERE o.state = 'RETRYING'), 0)::bigint AS retrying,
       coalesce(sum(o.n) FILTER (WHERE o.state = 'RUNNING'), 0)::bigint AS running,
       coalesce(sum(o.n) FILTER (WHERE o.state = 'DEAD'), 0)::bigint AS dead
FROM queues q
LEFT JOIN ready r ON r.tenant = q.tenant AND r.queue = q.name
LEFT JOIN other o ON o.tenant = q.tenant AND o.name = q.name
GROUP BY q.tenant, q.name, r.n, r.oldest
ORDER BY q.name, q.tenant;

-- name: metrics_database
-- tenant: touches no row
-- A trivial statement for health (its latency) that also says how big the database is.
SELECT pg_database_size(current_database()) AS size_bytes;
