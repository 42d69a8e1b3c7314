"""Structured logs: text or JSON lines, each carrying the current trace.

Every record that passes through the handler `setup_logging` installs gets
`trace_id` and `span_id` (hex, as trace back ends show them) when it was
written inside a span, whichever logger wrote it and in whichever thread or
task (handlers' threads inherit the attempt's context). Outside a span the
fields are absent (JSON) or left off the line (text).

    2026-05-01T10:00:00.123Z INFO treadle.scheduler: replica r1 serving ... trace_id=... span_id=...
    {"time": "2026-05-01T10:00:00.123Z", "level": "INFO", "logger": "treadle.scheduler",
     "message": "...", "trace_id": "...", "span_id": "..."}

A record may name its trace itself (`extra={"trace_id": ..., "span_id": ...}`:
a task's, logged outside the task's span); the current span is then left
alone. A `traceback` field (`extra=`, text already formatted: a failed task's
short traceback) is a JSON key like any other, and goes below the text line.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import sys
from datetime import UTC, datetime
from typing import IO, Any

from treadle.common import config, telemetry

FORMATS = ("text", "json")
TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"
#: The `extra=` field holding a formatted traceback that is not the record's
#: exception (shown below a text line, like one).
TRACEBACK = "traceback"


@dataclasses.dataclass(frozen=True)
class LogSettings:
    """How the services log (`TREADLE_LOG_FORMAT`), shared by scheduler and gateway."""

    #: `text` (one line per record) or `json` (one JSON object per line).
    log_format: str = config.setting(
        "text",
        choices=FORMATS,
        flags="logging",
        help="log lines as text or JSON, with trace ids inside spans ({env})",
    )

    @property
    def json(self) -> bool:
        return self.log_format == "json"


#: LogRecord attributes that are not `extra=` fields.
_STANDARD = frozenset(
    vars(logging.LogRecord("", 0, "", 0, "", (), None)).keys()
    | {"message", "asctime", "trace_id", "span_id", "taskName"}
)


class TraceContext(logging.Filter):
    """Adds `trace_id` and `span_id` of the current span to each record."""

    def filter(self, record: logging.LogRecord) -> bool:
        if not hasattr(record, "trace_id"):
            found = telemetry.ids()
            if found is not None:
                record.trace_id, record.span_id = found
        return True


def _time(record: logging.LogRecord) -> str:
    stamp = datetime.fromtimestamp(record.created, UTC)
    return stamp.strftime("%Y-%m-%dT%H:%M:%S.") + f"{stamp.microsecond // 1000:03d}Z"


class TextFormatter(logging.Formatter):
    """The classic line, with ` trace_id=… span_id=…` appended inside a span,
    and a `traceback` field below it."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT)

    def formatTime(self, record: logging.LogRecord, datefmt: str | None = None) -> str:
        return _time(record)

    def format(self, record: logging.LogRecord) -> str:
        line = super().format(record)
        trace_id = getattr(record, "trace_id", None)
        if trace_id is not None:
            first, newline, rest = line.partition("\n")  # keep a traceback below the ids
            span_id = getattr(record, "span_id", "")
            line = f"{first} trace_id={trace_id} span_id={span_id}{newline}{rest}"
        shown = getattr(record, TRACEBACK, None)
        if shown:
            line = f"{line}\n{str(shown).rstrip()}"
        return line


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, trace and span
    ids, `exception` (the traceback), and any `extra=` fields."""

    def format(self, record: logging.LogRecord) -> str:
        data: dict[str, Any] = {
            "time": _time(record),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key in ("trace_id", "span_id"):
            if hasattr(record, key):
                data[key] = getattr(record, key)
        if record.exc_info:
            data["exception"] = self.formatException(record.exc_info)
        elif record.exc_text:
            data["exception"] = record.exc_text
        if record.stack_info:
            data["stack"] = self.formatStack(record.stack_info)
        for key, value in vars(record).items():
            if key not in _STANDARD and key not in data:
                data[key] = value
        return json.dumps(data, default=str, ensure_ascii=False)


def handler(json_lines: bool, stream: IO[str] | None = None) -> logging.Handler:
    """A stream handler (stderr by default) with the trace filter and the chosen format."""
    out = logging.StreamHandler(stream or sys.stderr)
    out.addFilter(TraceContext())
    out.setFormatter(JsonFormatter() if json_lines else TextFormatter())
    return out


def setup_logging(json_lines: bool, level: int | None = None) -> None:
    """Send every log record to stderr through one handler: JSON lines or text,
    with trace ids. Replaces the root logger's plain stream handlers (those of
    `logging.basicConfig` or an earlier call) and leaves others be; keeps the
    root level unless `level` is given."""
    root = logging.getLogger()
    for old in root.handlers[:]:
        if type(old) is logging.StreamHandler:
            root.removeHandler(old)
    root.addHandler(handler(json_lines))
    if level is not None:
        root.setLevel(level)
