-- Tracing: the submitter's W3C trace context ({"traceparent": ..., "tracestate": ...}),
-- stored with the task so that its execution span, on whichever replica and
-- however much later, continues the submitter's trace. NULL when the task was
-- submitted outside a trace (tracing off, cron schedules).
ALTER TABLE tasks ADD COLUMN trace_context jsonb;
