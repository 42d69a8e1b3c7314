-- Every API key statement (treadle.scheduler.keys), one named block each.
-- Tables are unqualified: each connection's search_path is the installation's schema.
-- Each block declares its parameters, in $1..$n order, on `-- params:` lines.
-- Every statement on a tenant's keys takes the tenant and matches on it; the
-- exceptions say why on a `-- tenant: none (...)` line.

-- name: key_insert
-- params: id, tenant, name, secret_hash, scopes, expires_at, rotated_from, lineage
INSERT INTO api_keys (id, tenant, name, secret_hash, scopes, expires_at, rotated_from, lineage)
VALUES ($1, $2, $3, $4, $5::text[], $6, $7, $8)
RETURNING id, tenant, name, scopes, created_at, expires_at, revoked_at, last_used_at,
          rotated_from, lineage;

-- name: key_authenticate
-- params: id
-- tenant: none (authentication: the call's tenant is what this lookup finds out; the id is unique across tenants and the secret's hash must match)
SELECT id, tenant, name, secret_hash, scopes, expires_at, revoked_at, lineage
FROM api_keys WHERE id = $1;

-- name: key_list
-- params: tenant
SELECT id, tenant, name, scopes, created_at, expires_at, revoked_at, last_used_at, rotated_from,
       lineage
FROM api_keys WHERE tenant = $1
ORDER BY created_at, id;

-- name: key_list_all
-- tenant: none (the operator's view across tenants: `treadle keys list` without --tenant, direct database access only)
SELECT id, tenant, name, scopes, created_at, expires_at, revoked_at, last_used_at, rotated_from,
       lineage
FROM api_keys
ORDER BY tenant, created_at, id;

-- name: key_lock
-- params: tenant, id
-- The key, locked until the transaction ends (revoke, rotate).
SELECT id, tenant, name, scopes, created_at, expires_at, revoked_at, last_used_at, rotated_from,
       lineage
FROM api_keys WHERE tenant = $1 AND id = $2
FOR UPDATE;

-- name: key_revoke
-- params: tenant, id
-- A key revoked already keeps its first revocation time.
UPDATE api_keys SET revoked_at = coalesce(revoked_at, now())
WHERE tenant = $1 AND id = $2
RETURNING id, tenant, name, scopes, created_at, expires_at, revoked_at, last_used_at,
          rotated_from, lineage;

-- name: key_expire
-- params: tenant, id, expires_at
-- Rotation: the old key expires at the end of the grace period, or sooner if it already would.
UPDATE api_keys SET expires_at = least(coalesce(expires_at, 'infinity'), $3)
WHERE tenant = $1 AND id = $2
RETURNING id, tenant, name, scopes, created_at, expires_at, revoked_at, last_used_at,
          rotated_from, lineage;

-- name: keys_touch
-- params: tenants, ids, used_ats
-- Record when keys were last used (a replica's batch, at most once a minute per key).
UPDATE api_keys k SET last_used_at = greatest(k.last_used_at, u.used_at)
FROM unnest($1::text[], $2::text[], $3::timestamptz[]) AS u(tenant, id, used_at)
WHERE k.tenant = u.tenant AND k.id = u.id;
