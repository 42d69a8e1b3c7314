-- API keys and the audit log (treadle.scheduler.keys, treadle.scheduler.audit).

-- An API key. The caller holds the token, trdl_<id>_<secret>, shown once when
-- the key is made; this table keeps its id (the public part, by which a call's
-- key is looked up) and a SHA-256 hash of the whole token, never the token.
-- A plain fast hash is enough here, unlike for passwords: the secret is 256
-- random bits, so nobody can guess tokens against a leaked hash however fast
-- each guess is; slow hashes (bcrypt, scrypt) exist to stretch low-entropy
-- passwords and would cost every uncached call milliseconds for nothing.
CREATE TABLE api_keys (
    -- The token's lookup id: 16 hex digits, shown as the prefix trdl_<id>.
    id           text PRIMARY KEY,
    tenant       text NOT NULL,
    -- Free text saying what the key is for (ci-deploy); rotation keeps it.
    name         text NOT NULL,
    secret_hash  bytea NOT NULL,
    scopes       text[] NOT NULL
        CHECK (cardinality(scopes) > 0 AND scopes <@ ARRAY['submit', 'read', 'admin']),
    created_at   timestamptz NOT NULL DEFAULT now(),
    -- Null: never expires. Rotation sets the old key's to the end of the grace period.
    expires_at   timestamptz,
    revoked_at   timestamptz,
    -- Written by the replicas at most once a minute per key (not per call).
    last_used_at timestamptz,
    -- The key this one replaced (`treadle keys rotate`).
    rotated_from text REFERENCES api_keys (id),
    -- The id of the first key of its rotation chain: the same for a key and
    -- every key that replaced it. What "the tasks this key submitted" should
    -- match on, so that rotating a key does not hide them from it.
    lineage      text NOT NULL
);
CREATE INDEX api_keys_tenant ON api_keys (tenant, created_at);

-- What admins did: one row per key made, revoked or rotated, and per admin
-- call that changed something (queues, schedules, cancel, retry). Never
-- updated; kept for good.
CREATE TABLE audit_events (
    id       bigserial PRIMARY KEY,
    tenant   text NOT NULL,
    at       timestamptz NOT NULL DEFAULT now(),
    -- The key the action was made with; null with authentication off or for
    -- an action made with direct database access (`treadle keys`, whose
    -- key_name then says cli:<operating-system user>).
    key_id   text,
    key_name text,
    -- The gRPC method (PauseQueue) or key action (CreateKey).
    action   text NOT NULL,
    -- The id or name of what it acted on (a task id, a queue, a schedule, a key id).
    target   text NOT NULL DEFAULT '',
    -- What changed: the request's fields, secrets left out.
    change   jsonb NOT NULL DEFAULT '{}'
);
CREATE INDEX audit_events_tenant ON audit_events (tenant, id);
