-- Rate limits and quotas on submits (limits_store.py; tables in
-- migrations/0010_limits.sql). None of these runs per submit: a replica
-- leases submit tokens in chunks, counts a tenant's waiting tasks at most
-- once a second, and reads the operator's limits every few seconds.

-- name: lease_submit_tokens
-- params: tenant, subject, rate, burst, need, want
-- Take tokens from the bucket of tenant $1 (subject $2: '' for the tenant's
-- own, a key's id for that key's), refilled at $3 per second up to $4 since
-- it was last leased from: up to $6 whole tokens when it holds at least $5,
-- else none. A bucket used for the first time starts full. Returns what was
-- taken and what is left (after the refill), from which a refused caller
-- learns how long to wait. Concurrent leases of one bucket queue on its row.
INSERT INTO submit_buckets AS b (tenant, subject, tokens, granted, updated_at)
VALUES ($1, $2, $4::float8 - bucket_grant($4, $5, $6), bucket_grant($4, $5, $6), now())
ON CONFLICT (tenant, subject) DO UPDATE SET
    granted = bucket_grant(bucket_tokens(b.tokens, b.updated_at, now(), $3, $4), $5, $6),
    tokens = bucket_tokens(b.tokens, b.updated_at, now(), $3, $4)
             - bucket_grant(bucket_tokens(b.tokens, b.updated_at, now(), $3, $4), $5, $6),
    updated_at = now()
WHERE b.tenant = $1
RETURNING granted, tokens;

-- name: count_waiting
-- params: tenant
-- Tenant $1's tasks waiting to run (QUEUED, SCHEDULED, RETRYING), for its
-- quota: per queue and state, one range of tasks_queue_state_seq each (the
-- state comes from VALUES, so the planner cannot pick a partial index, or
-- the tenant's index, and filter). Sized by the waiting tasks, never by the
-- finished ones kept for retention.
SELECT coalesce(sum(c.n), 0)::bigint AS waiting
FROM queues q
CROSS JOIN (VALUES ('QUEUED'), ('SCHEDULED'), ('RETRYING')) AS s(state)
CROSS JOIN LATERAL (
    SELECT count(*) AS n FROM tasks t
    WHERE t.tenant = q.tenant AND t.queue = q.name AND t.state = s.state
) c
WHERE q.tenant = $1;

-- name: all_tenant_limits
-- tenant: the operator's limits of every tenant, read by each replica (and listed by the CLI)
SELECT * FROM tenant_limits ORDER BY tenant;

-- name: set_tenant_limits
-- params: tenant, submit_rate, submit_burst, key_submit_rate, key_submit_burst, max_queued
-- params: given
-- Set the limits named in $7 (column names) for tenant $1; the others stay
-- as they are (null: the replicas' default). Returns the row.
INSERT INTO tenant_limits AS l (tenant, submit_rate, submit_burst, key_submit_rate,
                                key_submit_burst, max_queued)
VALUES ($1, $2, $3, $4, $5, $6)
ON CONFLICT (tenant) DO UPDATE SET
    submit_rate = CASE WHEN 'submit_rate' = ANY($7::text[]) THEN $2 ELSE l.submit_rate END,
    submit_burst = CASE WHEN 'submit_burst' = ANY($7::text[]) THEN $3 ELSE l.submit_burst END,
    key_submit_rate = CASE WHEN 'key_submit_rate' = ANY($7::text[]) THEN $4
                           ELSE l.key_submit_rate END,
    key_submit_burst = CASE WHEN 'key_submit_burst' = ANY($7::text[]) THEN $5
                            ELSE l.key_submit_burst END,
    max_queued = CASE WHEN 'max_queued' = ANY($7::text[]) THEN $6 ELSE l.max_queued END,
    updated_at = now()
WHERE l.tenant = $1
RETURNING *;

-- name: clear_tenant_limits
-- params: tenant
-- Tenant $1 back to the replicas' defaults; its buckets start afresh.
WITH buckets AS (
    DELETE FROM submit_buckets WHERE tenant = $1
)
DELETE FROM tenant_limits WHERE tenant = $1 RETURNING tenant;

-- name: prune_queue_starts
-- tenant: upkeep of every tenant's start windows
-- Forget start counts of windows that have ended (a claim replaces its own
-- queue's anyway; this keeps keys no longer used from piling up).
DELETE FROM queue_starts WHERE window_end < now();
