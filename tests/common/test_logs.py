"""Structured logs: JSON or text lines, with the current trace and span ids."""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import TracerProvider

from treadle.common import config, logs
from treadle.common.errors import InvalidArgument


@pytest.fixture
def logger() -> Iterator[logging.Logger]:
    log = logging.getLogger("tests.logs")
    log.setLevel(logging.INFO)
    log.propagate = False
    yield log
    log.handlers.clear()
    log.propagate = True


def lines(out: io.StringIO) -> list[str]:
    return out.getvalue().splitlines()


def test_json_lines_carry_the_span_inside_one_only(logger: logging.Logger) -> None:
    out = io.StringIO()
    logger.addHandler(logs.handler(json_lines=True, stream=out))
    logger.info("outside")
    with TracerProvider().get_tracer("t").start_as_current_span("work") as span:
        logger.info("inside %s", "a span", extra={"task_id": "t-1"})
    outside, inside = (json.loads(line) for line in lines(out))
    assert outside.keys() == {"time", "level", "logger", "message"}
    assert outside["message"] == "outside" and outside["level"] == "INFO"
    assert outside["time"].endswith("Z")
    context = span.get_span_context()
    assert inside == {
        "time": inside["time"],
        "level": "INFO",
        "logger": "tests.logs",
        "message": "inside a span",
        "trace_id": trace.format_trace_id(context.trace_id),
        "span_id": trace.format_span_id(context.span_id),
        "task_id": "t-1",
    }


def test_json_lines_carry_the_traceback(logger: logging.Logger) -> None:
    out = io.StringIO()
    logger.addHandler(logs.handler(json_lines=True, stream=out))
    try:
        raise ValueError("bad")
    except ValueError:
        logger.exception("failed")
    (line,) = lines(out)
    record = json.loads(line)
    assert record["level"] == "ERROR"
    assert "ValueError: bad" in record["exception"]


def test_text_lines_end_with_the_ids_inside_a_span(logger: logging.Logger) -> None:
    out = io.StringIO()
    logger.addHandler(logs.handler(json_lines=False, stream=out))
    logger.warning("plain")
    with TracerProvider().get_tracer("t").start_as_current_span("work") as span:
        logger.warning("traced")
    plain, traced = lines(out)
    assert plain.endswith(" WARNING tests.logs: plain")
    context = span.get_span_context()
    assert traced.endswith(
        f" WARNING tests.logs: traced trace_id={trace.format_trace_id(context.trace_id)}"
        f" span_id={trace.format_span_id(context.span_id)}"
    )


def test_a_record_names_its_own_trace_and_a_traceback_field(logger: logging.Logger) -> None:
    """Logged for a task outside its span: the task's ids win over the current
    span's, and a `traceback` field goes below the text line, or is a JSON key."""
    text, json_out = io.StringIO(), io.StringIO()
    logger.addHandler(logs.handler(json_lines=False, stream=text))
    logger.addHandler(logs.handler(json_lines=True, stream=json_out))
    shown = "Traceback (most recent call last):\n  ...\nValueError: bad\n"
    fields = {"trace_id": "a" * 32, "span_id": "b" * 16, logs.TRACEBACK: shown}
    with TracerProvider().get_tracer("t").start_as_current_span("elsewhere"):
        logger.error("task t-1 is DEAD", extra=fields)
    first, *below = text.getvalue().splitlines()
    assert first.endswith(
        f" ERROR tests.logs: task t-1 is DEAD trace_id={'a' * 32} span_id={'b' * 16}"
    )
    assert below == ["Traceback (most recent call last):", "  ...", "ValueError: bad"]
    record = json.loads(json_out.getvalue())
    assert (record["trace_id"], record["span_id"]) == ("a" * 32, "b" * 16)
    assert record["traceback"] == shown


def test_setup_logging_replaces_the_plain_stream_handlers() -> None:
    root = logging.getLogger()
    before = root.handlers[:]
    plain = logging.StreamHandler(io.StringIO())
    root.addHandler(plain)
    try:
        logs.setup_logging(json_lines=True)
        assert plain not in root.handlers
        ours = [h for h in root.handlers if isinstance(h.formatter, logs.JsonFormatter)]
        assert len(ours) == 1
        assert any(isinstance(f, logs.TraceContext) for f in ours[0].filters)
        # pytest's capture handlers (subclasses) are left alone
        assert [h for h in before if type(h) is not logging.StreamHandler] == [
            h for h in root.handlers if h not in ours
        ]
    finally:
        root.handlers[:] = before


def test_log_format_setting() -> None:
    assert config.load(logs.LogSettings, {}).json is False
    assert config.load(logs.LogSettings, {"TREADLE_LOG_FORMAT": "json"}).json is True
    with pytest.raises(InvalidArgument, match="TREADLE_LOG_FORMAT must be text or json"):
        config.load(logs.LogSettings, {"TREADLE_LOG_FORMAT": "xml"})
