-- Every audit log statement (treadle.scheduler.audit), one named block each.
-- Tables are unqualified: each connection's search_path is the installation's schema.
-- Each block declares its parameters, in $1..$n order, on `-- params:` lines.
-- Every statement on a tenant's events takes the tenant and matches on it; the
-- exceptions say why on a `-- tenant: none (...)` line.

-- name: audit_insert
-- params: tenant, key_id, key_name, action, target, change
INSERT INTO audit_events (tenant, key_id, key_name, action, target, change)
VALUES ($1, $2, $3, $4, $5, $6::jsonb);

-- name: audit_list
-- params: tenant, before, limit
-- The tenant's events, newest first, older than event id $2 (null: from the newest).
SELECT id, tenant, at, key_id, key_name, action, target, change::text AS change
FROM audit_events
WHERE tenant = $1 AND ($2::bigint IS NULL OR id < $2)
ORDER BY id DESC
LIMIT $3;

-- name: audit_list_all
-- params: before, limit
-- tenant: none (the operator's view across tenants: `treadle audit` without --tenant, direct database access only)
SELECT id, tenant, at, key_id, key_name, action, target, change::text AS change
FROM audit_events
WHERE ($1::bigint IS NULL OR id < $1)
ORDER BY id DESC
LIMIT $2;
