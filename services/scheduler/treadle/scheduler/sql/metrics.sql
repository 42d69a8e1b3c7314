-- Statements behind the periodic metrics and the health report (metrics.py,
-- health.py). They run every few seconds on every replica: they only read, and
-- only through indexes. Queue gauges come from here, never from a counter row
-- updated per task.

-- name: metrics_queues
-- Per queue: its tasks by state and its oldest ready task's wait. Ready tasks
-- are counted in one pass over a ready index (tasks_ready_by_queue or
-- tasks_ready); the other states over tasks_queue_state_seq (queue, state,
-- seq), one range per queue and state (the state comes from VALUES, so the
-- planner cannot pick a partial index and filter by queue). The cost grows
-- with the tasks waiting, not with the finished ones kept for retention.
WITH ready AS (
    SELECT queue, count(*) AS n, min(run_at) AS oldest
    FROM tasks WHERE state = 'QUEUED'
    GROUP BY queue
), other AS (
    SELECT q.name, s.state, c.n
    FROM queues q
    CROSS JOIN (VALUES ('SCHEDULED'), ('RETRYING'), ('RUNNING'), ('DEAD')) AS s(state)
    CROSS JOIN LATERAL (
        SELECT count(*) AS n FROM tasks t WHERE t.queue = q.name AND t.state = s.state
    ) c
)
SELECT q.name, q.paused, q.max_concurrent,
       coalesce(r.n, 0) AS queued,
       extract(epoch FROM now() - r.oldest)::float8 AS oldest_queued_age,
       coalesce(sum(o.n) FILTER (WHERE o.state = 'SCHEDULED'), 0)::bigint AS scheduled,
       coalesce(sum(o.n) FILTER (WHERE o.state = 'RETRYING'), 0)::bigint AS retrying,
       coalesce(sum(o.n) FILTER (WHERE o.state = 'RUNNING'), 0)::bigint AS running,
       coalesce(sum(o.n) FILTER (WHERE o.state = 'DEAD'), 0)::bigint AS dead
FROM queues q
LEFT JOIN ready r ON r.queue = q.name
LEFT JOIN other o ON o.name = q.name
GROUP BY q.name, r.n, r.oldest
ORDER BY q.name;

-- name: metrics_database
-- A trivial statement for health (its latency) that also says how big the database is.
SELECT pg_database_size(current_database()) AS size_bytes;
