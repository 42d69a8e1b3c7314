"""Tracing set-up from the standard OTEL_* variables, and W3C context carriers."""

from __future__ import annotations

import pytest
from opentelemetry import trace
from opentelemetry.sdk.resources import SERVICE_NAME
from opentelemetry.sdk.trace import TracerProvider

from treadle.common import telemetry
from treadle.common.errors import InvalidArgument


@pytest.mark.parametrize(
    ("env", "expected"),
    [
        ({}, []),
        ({"OTEL_SERVICE_NAME": "x"}, []),
        ({"OTEL_TRACES_EXPORTER": "none"}, []),
        ({"OTEL_TRACES_EXPORTER": "otlp"}, ["otlp_proto_grpc"]),
        ({"OTEL_TRACES_EXPORTER": "otlp, console"}, ["otlp_proto_grpc", "console"]),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://collector:4317"}, ["otlp_proto_grpc"]),
        ({"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://c:4317"}, ["otlp_proto_grpc"]),
        (
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/protobuf"},
            ["otlp_proto_http"],
        ),
        ({"OTEL_TRACES_EXPORTER": "console", "OTEL_SDK_DISABLED": "true"}, []),
        ({"OTEL_EXPORTER_OTLP_ENDPOINT": "http://c:4317", "OTEL_TRACES_EXPORTER": "none"}, []),
    ],
)
def test_tracing_is_on_only_when_the_environment_asks(
    env: dict[str, str], expected: list[str]
) -> None:
    assert telemetry.requested_exporters(env) == expected


def test_unsupported_protocol_and_unknown_exporter_are_named() -> None:
    with pytest.raises(InvalidArgument, match="OTEL_EXPORTER_OTLP_PROTOCOL"):
        telemetry.requested_exporters(
            {"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "carrier-pigeon"}
        )
    with pytest.raises(InvalidArgument, match="no trace exporter 'zipkin_json'"):
        telemetry.load_exporter("zipkin_json")


def test_setup_installs_nothing_when_off() -> None:
    assert telemetry.setup_tracing("treadle-test", {}) is None
    assert telemetry.active_provider() is None
    assert telemetry.get_tracer("x") is None


def test_provider_names_the_service_unless_the_environment_does(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.delenv("OTEL_SERVICE_NAME", raising=False)
    monkeypatch.delenv("OTEL_RESOURCE_ATTRIBUTES", raising=False)
    provider = telemetry.build_provider("treadle-scheduler", ["otlp_proto_grpc"])
    assert provider.resource.attributes[SERVICE_NAME] == "treadle-scheduler"
    provider.shutdown()
    monkeypatch.setenv("OTEL_SERVICE_NAME", "billing-workers")
    provider = telemetry.build_provider("treadle-scheduler", [])
    assert provider.resource.attributes[SERVICE_NAME] == "billing-workers"
    provider.shutdown()


def test_carrier_round_trip() -> None:
    assert telemetry.current_carrier() is None
    assert telemetry.ids() is None
    provider = TracerProvider()
    with provider.get_tracer("t").start_as_current_span("submit") as span:
        carrier = telemetry.current_carrier()
        ids = telemetry.ids()
    assert carrier is not None and set(carrier) >= {"traceparent"}
    restored = trace.get_current_span(telemetry.context_from(carrier)).get_span_context()
    assert restored.trace_id == span.get_span_context().trace_id
    assert restored.span_id == span.get_span_context().span_id
    assert restored.is_remote
    assert ids == (
        trace.format_trace_id(restored.trace_id),
        trace.format_span_id(restored.span_id),
    )
    empty = trace.get_current_span(telemetry.context_from(None)).get_span_context()
    assert not empty.is_valid
    # A stored carrier names the same ids; anything else (a row written by hand) none.
    assert telemetry.carrier_ids(carrier) == ids
    for junk in (None, {}, [], {"traceparent": 7}, {"traceparent": "00-zz"}, "text"):
        assert telemetry.carrier_ids(junk) is None
