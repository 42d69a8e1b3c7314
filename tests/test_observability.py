"""Metrics end to end: both /metrics endpoints during a real run (counters match
the tasks run, promtool finds no problem), the docs list every metric, and the
Prometheus, Grafana and compose files in deploy/ fit the metrics we expose."""

from __future__ import annotations

import asyncio
import json
import os
import re
from collections.abc import AsyncIterator
from pathlib import Path

import httpx
import pytest
import yaml
from scrape import PROMTOOL, Scraped, promtool, scrape
from support import make_settings

from treadle.client import Client, TaskSpec, TaskState
from treadle.gateway.server import Gateway
from treadle.gateway.settings import Settings as GatewaySettings
from treadle.scheduler.registry import load_app
from treadle.scheduler.supervisor import Replica

ROOT = Path(__file__).resolve().parent.parent
DEPLOY = ROOT / "deploy"
# .ci/run sets TREADLE_TEST_REQUIRE_PROMTOOL=1: in CI a missing promtool fails
# these tests instead of skipping them.
needs_promtool = pytest.mark.skipif(
    PROMTOOL is None and os.environ.get("TREADLE_TEST_REQUIRE_PROMTOOL") != "1",
    reason="promtool not installed (Debian package `prometheus`; .ci/run installs it)",
)
SUBMIT = 'mutation Submit($i: JSON) { submitTask(input: {name: "echo", payload: $i}) { id } }'
BY_GRAPHQL, BY_GRPC = 12, 8


class Run:
    def __init__(self, replica: Replica, gateway: Gateway) -> None:
        self.replica = replica
        self.gateway = gateway

    async def scheduler(self) -> Scraped:
        assert self.replica.metrics_server is not None
        return await scrape(f"http://{self.replica.metrics_server.address}/metrics")

    async def gateway_metrics(self) -> Scraped:
        return await scrape(f"{self.gateway.url}/metrics")


@pytest.fixture
async def run(database_url: str, schema: str) -> AsyncIterator[Run]:
    replica = Replica(
        make_settings(schema, metrics_interval=0.1), load_app("taskapp"), database_url
    )
    await replica.start()
    gateway = Gateway(GatewaySettings(http_port=0, scheduler_address=replica.address))
    try:
        await gateway.start()
        yield Run(replica, gateway)
    finally:
        await gateway.stop()
        await replica.stop()


async def run_tasks(run: Run) -> None:
    """BY_GRAPHQL tasks through the gateway, BY_GRPC in one gRPC batch; wait for all."""
    async with httpx.AsyncClient(base_url=run.gateway.url, timeout=10) as http:
        ids = []
        for i in range(BY_GRAPHQL):
            reply = await http.post("/graphql", json={"query": SUBMIT, "variables": {"i": i}})
            ids.append(reply.json()["data"]["submitTask"]["id"])
    async with Client(run.replica.address) as client:
        ids += await client.submit_many(
            [TaskSpec(name="echo", payload_json=str(i)) for i in range(BY_GRPC)]
        )
        for task_id in ids:
            assert (await client.wait(task_id, timeout=10)).state is TaskState.SUCCEEDED
    # Outcomes are written (and counted) a flush after the handlers return.
    for _ in range(100):
        if (await run.scheduler()).value("treadle_outcomes_recorded_total") == len(ids):
            break
        await asyncio.sleep(0.02)


async def test_both_endpoints_count_the_tasks_run(run: Run) -> None:
    await run_tasks(run)
    total = BY_GRAPHQL + BY_GRPC
    s, g = await run.scheduler(), await run.gateway_metrics()
    assert s.value("treadle_tasks_submitted_total", queue="default", task="echo") == total
    assert s.value("treadle_tasks_started_total", queue="default", task="echo") == total
    finished = "treadle_tasks_finished_total"
    assert s.value(finished, queue="default", task="echo", outcome="succeeded") == total
    assert s.value(finished) == total
    assert s.value("treadle_outcomes_recorded_total") == total
    server = "treadle_grpc_server_handled_total"
    assert s.value(server, grpc_method="SubmitTask", grpc_code="OK") == BY_GRAPHQL
    assert s.value(server, grpc_method="SubmitTasks", grpc_code="OK") == 1

    ops = "treadle_graphql_operations_total"
    assert g.value(ops, operation_name="Submit", operation_type="mutation", outcome="ok") == (
        BY_GRAPHQL
    )
    client = "treadle_grpc_client_handled_total"
    assert g.value(client, grpc_method="SubmitTask", grpc_code="OK") == BY_GRAPHQL
    assert g.value("treadle_http_requests_total", route="/graphql", status="200") == BY_GRAPHQL


@needs_promtool
async def test_promtool_finds_no_problem_in_either_endpoint(run: Run) -> None:
    await run_tasks(run)
    async with httpx.AsyncClient(base_url=run.gateway.url) as http:
        await http.get("/health/detailed")
        await http.post("/graphql", json={"query": "{ nope }"})
    for scraped in (await run.scheduler(), await run.gateway_metrics()):
        assert "treadle_tasks" in scraped.text or "treadle_graphql" in scraped.text
        code, output = await promtool("check", "metrics", stdin=scraped.text)
        assert (code, output) == (0, ""), output


async def test_at_least_fifty_metric_families(run: Run) -> None:
    names = (await run.scheduler()).names() | (await run.gateway_metrics()).names()
    assert len(names) >= 50, sorted(names)


async def exposed(run: Run) -> set[str]:
    return (await run.scheduler()).names() | (await run.gateway_metrics()).names()


def documented(text: str) -> set[str]:
    return set(re.findall(r"`(treadle_[a-z0-9_]+)`", text))


async def test_the_docs_list_every_metric_and_no_other(run: Run) -> None:
    text = (ROOT / "docs" / "observability.md").read_text()
    names = await exposed(run)
    listed = documented(text)
    assert sorted(names - listed) == [], "metrics missing from docs/observability.md"
    assert sorted(listed - names) == [], "docs/observability.md lists metrics nobody exposes"


def sample_names(families: set[str]) -> set[str]:
    """Every sample name a family can have (histograms add _bucket, _sum and _count)."""
    out = set(families)
    for name in families:
        out |= {f"{name}_bucket", f"{name}_sum", f"{name}_count"}
    return out


def referenced(text: str) -> set[str]:
    """Metric names in PromQL, recording rules' names (level:metric:ops) aside."""
    return set(re.findall(r"(?<![:\w])treadle_[a-z0-9_]+(?![:\w])", text))


async def test_dashboard_and_rules_use_only_exposed_metrics(run: Run) -> None:
    known = sample_names(await exposed(run))
    dashboard = json.loads((DEPLOY / "grafana" / "dashboards" / "treadle.json").read_text())
    exprs = [target["expr"] for panel in dashboard["panels"] for target in panel.get("targets", ())]
    assert len(exprs) >= 20
    titles = " ".join(panel["title"].lower() for panel in dashboard["panels"])
    for topic in ("throughput", "latency", "queue", "error", "replica", "pool"):
        assert topic in titles, topic
    assert sorted(referenced(" ".join(exprs)) - known) == []
    rules = yaml.safe_load((DEPLOY / "prometheus" / "rules.yml").read_text())
    rule_exprs = [r["expr"] for group in rules["groups"] for r in group["rules"]]
    recorded = {r["record"] for group in rules["groups"] for r in group["rules"] if "record" in r}
    assert sorted(referenced(" ".join(rule_exprs)) - known - recorded) == []


@needs_promtool
async def test_promtool_accepts_the_prometheus_config_and_rules() -> None:
    code, output = await promtool("check", "config", str(DEPLOY / "prometheus" / "prometheus.yml"))
    assert code == 0, output
    code, output = await promtool("check", "rules", str(DEPLOY / "prometheus" / "rules.yml"))
    assert code == 0, output


def test_compose_wires_the_whole_stack() -> None:
    compose = yaml.safe_load((ROOT / "compose.yaml").read_text())
    services = compose["services"]
    assert {
        "postgres", "scheduler-1", "scheduler-2", "gateway", "prometheus", "grafana", "jaeger",
    } <= set(services)  # fmt: skip
    for name in ("scheduler-1", "scheduler-2"):
        env = services[name]["environment"]
        assert env["TREADLE_METRICS_PORT"] == "9464"
        assert env["OTEL_EXPORTER_OTLP_ENDPOINT"] == "http://jaeger:4317"
    config = yaml.safe_load((DEPLOY / "prometheus" / "prometheus.yml").read_text())
    targets = {
        t for job in config["scrape_configs"] for sc in job["static_configs"] for t in sc["targets"]
    }
    assert targets == {"gateway:8000", "scheduler-1:9464", "scheduler-2:9464"}
    mounts = " ".join(services["prometheus"]["volumes"] + services["grafana"]["volumes"])
    for folder in (
        "./deploy/prometheus",
        "./deploy/grafana/provisioning",
        "./deploy/grafana/dashboards",
    ):
        assert folder in mounts
        assert (ROOT / folder).is_dir()
