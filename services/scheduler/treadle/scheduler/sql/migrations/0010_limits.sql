-- Rate limits and quotas (docs/security.md#rate-limits-and-quotas).
--
-- Submits: a token bucket per tenant (and per API key), shared by every
-- replica. Each replica leases tokens from the bucket's row in chunks (one
-- statement per chunk, never one per submit) and serves submits from its
-- chunk. A tenant's waiting tasks are capped by a quota, counted from the
-- task indexes (no counter row is touched per task).
--
-- Starts: a queue may start at most `start_limit` tasks per fixed window of
-- `start_window_seconds` (aligned on multiples of it since the epoch), across
-- every replica; with `start_limit_key`, at most that many per distinct value
-- of that top-level payload field. Such a queue is claimed like one with
-- max_concurrent: one replica at a time under the queue's advisory lock,
-- counting its starts in queue_starts in the claim's own transaction.

-- The operator's limits per tenant (`treadle tenants limits set`); a null
-- column takes the replica's default (TREADLE_TENANT_SUBMIT_RATE, ...), 0 is
-- no limit.
CREATE TABLE tenant_limits (
    tenant           text PRIMARY KEY,
    -- submits per second, and the bucket's size (the largest burst)
    submit_rate      double precision CHECK (submit_rate >= 0),
    submit_burst     integer CHECK (submit_burst >= 0),
    -- the same for each API key of the tenant
    key_submit_rate  double precision CHECK (key_submit_rate >= 0),
    key_submit_burst integer CHECK (key_submit_burst >= 0),
    -- QUEUED + SCHEDULED + RETRYING tasks at most
    max_queued       bigint CHECK (max_queued >= 0),
    updated_at       timestamptz NOT NULL DEFAULT now()
);

-- The shared buckets: `subject` is '' for the tenant's own bucket, the key's
-- id for a key's. `tokens` as of `updated_at`; refilled when next leased from.
CREATE TABLE submit_buckets (
    tenant     text NOT NULL,
    subject    text NOT NULL,
    tokens     double precision NOT NULL,
    -- what the last lease took (read back by the lease statement)
    granted    integer NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL,
    PRIMARY KEY (tenant, subject)
);

-- The tokens a bucket holds at `at`: `tokens` as of `since`, refilled at
-- `rate` per second, never more than `burst`.
CREATE FUNCTION bucket_tokens(tokens float8, since timestamptz, at timestamptz, rate float8,
                              burst float8) RETURNS float8
LANGUAGE sql IMMUTABLE AS $$
    SELECT least(burst, tokens + rate * greatest(0, extract(epoch FROM at - since)))
$$;

-- What a lease takes from a bucket holding `available` tokens: as many whole
-- tokens as it holds, up to `want`, when it holds at least `need`; else none.
CREATE FUNCTION bucket_grant(available float8, need integer, want integer) RETURNS integer
LANGUAGE sql IMMUTABLE AS $$
    SELECT CASE WHEN floor(available) >= need THEN least(want, floor(available))::integer
                ELSE 0 END
$$;

ALTER TABLE queues
    ADD COLUMN start_limit          integer CHECK (start_limit >= 1),
    ADD COLUMN start_window_seconds double precision
        CHECK (start_window_seconds > 0 AND start_window_seconds <= 86400),
    ADD COLUMN start_limit_key      text;

-- Starts in the current window of each start-limited queue, per key ('' for
-- a static limit). Written only under the queue's advisory lock; a row whose
-- window has ended is replaced by the next start, or pruned.
CREATE TABLE queue_starts (
    tenant       text NOT NULL,
    queue        text NOT NULL,
    key          text NOT NULL,
    window_start timestamptz NOT NULL,
    window_end   timestamptz NOT NULL,
    count        integer NOT NULL,
    PRIMARY KEY (tenant, queue, key)
);
CREATE INDEX queue_starts_ended ON queue_starts (window_end);
