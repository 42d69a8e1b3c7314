-- Statistics: counters that replicas keep in memory and add here every few
-- seconds (one statement per flush), never a row touched per task.

-- Elementwise sum of two duration histograms (a missing bucket counts 0).
CREATE FUNCTION stats_add_buckets(a bigint[], b bigint[]) RETURNS bigint[]
LANGUAGE sql IMMUTABLE PARALLEL SAFE AS $$
    SELECT coalesce(array_agg(coalesce(x, 0) + coalesce(y, 0) ORDER BY i), '{}')
    FROM unnest(a, b) WITH ORDINALITY AS u(x, y, i)
$$;

-- Per queue, for good: lifetime totals, read in one row.
CREATE TABLE task_stats_totals (
    queue      text PRIMARY KEY,
    submitted  bigint NOT NULL DEFAULT 0,
    succeeded  bigint NOT NULL DEFAULT 0,
    failed     bigint NOT NULL DEFAULT 0,
    dead       bigint NOT NULL DEFAULT 0,
    cancelled  bigint NOT NULL DEFAULT 0,
    updated_at timestamptz NOT NULL DEFAULT now()
);

-- Per queue and hour (UTC), kept for good: trends.
-- failed counts failed attempts (retried or not); dead counts tasks that ended
-- DEAD. Durations are those of attempts that succeeded or failed, in seconds;
-- duration_buckets is a histogram over fixed bounds (treadle.scheduler.tally).
CREATE TABLE task_stats_hourly (
    queue            text NOT NULL,
    hour             timestamptz NOT NULL,
    submitted        bigint NOT NULL DEFAULT 0,
    succeeded        bigint NOT NULL DEFAULT 0,
    failed           bigint NOT NULL DEFAULT 0,
    dead             bigint NOT NULL DEFAULT 0,
    cancelled        bigint NOT NULL DEFAULT 0,
    duration_sum     double precision NOT NULL DEFAULT 0,
    duration_count   bigint NOT NULL DEFAULT 0,
    duration_max     double precision NOT NULL DEFAULT 0,
    duration_buckets bigint[] NOT NULL DEFAULT '{}',
    updated_at       timestamptz NOT NULL DEFAULT now(),
    PRIMARY KEY (queue, hour)
);
-- Trends over every queue walk the hours.
CREATE INDEX task_stats_hourly_hour ON task_stats_hourly (hour);

-- Per queue and second (width 1) or minute (width 60), kept for a few minutes
-- and an hour: throughput, error rate and processing time over sliding
-- windows, and the alerts built on them. Every outcome is counted in both.
CREATE TABLE task_stats_recent (
    width            smallint NOT NULL CHECK (width IN (1, 60)),
    at               timestamptz NOT NULL,
    queue            text NOT NULL,
    succeeded        bigint NOT NULL DEFAULT 0,
    failed           bigint NOT NULL DEFAULT 0,
    dead             bigint NOT NULL DEFAULT 0,
    cancelled        bigint NOT NULL DEFAULT 0,
    duration_sum     double precision NOT NULL DEFAULT 0,
    duration_count   bigint NOT NULL DEFAULT 0,
    duration_max     double precision NOT NULL DEFAULT 0,
    duration_buckets bigint[] NOT NULL DEFAULT '{}',
    PRIMARY KEY (width, at, queue)
);

-- Failed attempts per queue, hour and error (type, message), with up to three
-- example task ids; pruned after TREADLE_STATS_ERROR_RETENTION_SECONDS.
CREATE TABLE task_error_stats (
    queue        text NOT NULL,
    hour         timestamptz NOT NULL,
    type         text NOT NULL,
    message      text NOT NULL,
    count        bigint NOT NULL,
    examples     uuid[] NOT NULL,
    last_seen_at timestamptz NOT NULL,
    PRIMARY KEY (hour, queue, type, message)
);
