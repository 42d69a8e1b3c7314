"""What deploys Treadle: deploy/kubernetes (validated offline against the
Kubernetes schemas that kubernetes-validate ships), the image (Dockerfile,
.dockerignore) and compose.yaml. No cluster and no Docker engine are needed;
what can run here runs (the compose health check, against a real replica)."""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path
from typing import Any

import kubernetes_validate
import pytest
import yaml

from treadle.common import config, target
from treadle.common.access import AccessSettings
from treadle.common.logs import LogSettings
from treadle.gateway.settings import Settings as GatewaySettings
from treadle.scheduler.rpc import LIVENESS
from treadle.scheduler.settings import Settings as SchedulerSettings
from treadle.scheduler.supervisor import Replica

ROOT = Path(__file__).resolve().parent.parent
KUBERNETES = ROOT / "deploy" / "kubernetes"
#: The oldest Kubernetes the manifests are for (gRPC probes are GA from 1.27),
#: and the newest whose schemas kubernetes-validate ships.
VERSIONS = ("1.27", kubernetes_validate.latest_version())
#: The image's user (Dockerfile), which the pods' securityContext names.
UID = 10001


def _manifests() -> dict[str, list[dict[str, Any]]]:
    return {
        path.name: [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
        for path in sorted(KUBERNETES.glob("*.yaml"))
        if path.name != "kustomization.yaml"
    }


def _resources() -> dict[tuple[str, str], dict[str, Any]]:
    """Every resource by (kind, name)."""
    return {
        (doc["kind"], doc["metadata"]["name"]): doc
        for docs in _manifests().values()
        for doc in docs
    }


def _pod(workload: dict[str, Any]) -> dict[str, Any]:
    return workload["spec"]["template"]  # type: ignore[no-any-return]


def _selects(selector: dict[str, str], labels: dict[str, str]) -> bool:
    return selector.items() <= labels.items()


def _env(container: dict[str, Any]) -> dict[str, str]:
    """A container's environment; values from the Secret as the Secret holds them."""
    secret = _resources()[("Secret", "treadle")]["stringData"]
    env = {}
    for var in container.get("env", []):
        if "valueFrom" in var:
            ref = var["valueFrom"]["secretKeyRef"]
            assert ref["name"] == "treadle" and ref["key"] in secret, var
            env[var["name"]] = secret[ref["key"]]
        else:
            env[var["name"]] = var["value"]
    return env


def test_the_kustomization_lists_every_manifest() -> None:
    kustomization = yaml.safe_load((KUBERNETES / "kustomization.yaml").read_text())
    assert sorted(kustomization["resources"]) == sorted(_manifests())
    assert [image["name"] for image in kustomization["images"]] == ["treadle"]


@pytest.mark.parametrize("version", VERSIONS)
def test_manifests_match_the_kubernetes_schemas(version: str) -> None:
    """Strict: a field the schema does not know (a typo) is an error too."""
    for name, docs in _manifests().items():
        assert len(docs) == 1, f"{name}: one resource per file"
        try:
            kubernetes_validate.validate(docs[0], version, strict=True)
        except kubernetes_validate.ValidationError as exc:
            pytest.fail(f"{name} is not a valid {docs[0]['kind']} for Kubernetes {version}: {exc}")


def test_selectors_ports_and_secrets_fit_the_pods() -> None:
    resources = _resources()
    workloads = {
        name: doc for (kind, name), doc in resources.items() if kind in ("Deployment", "Job")
    }
    pods = {name: _pod(doc)["metadata"]["labels"] for name, doc in workloads.items()}
    for (kind, name), doc in resources.items():
        spec = doc.get("spec", {})
        if kind == "Deployment":
            assert _selects(spec["selector"]["matchLabels"], pods[name]), name
        selector = {
            "Service": spec.get("selector"),
            "PodDisruptionBudget": spec.get("selector", {}).get("matchLabels"),
            "NetworkPolicy": spec.get("podSelector", {}).get("matchLabels"),
        }.get(kind)
        if selector is None:
            continue
        chosen = [w for w, labels in pods.items() if _selects(selector, labels)]
        assert len(chosen) == 1, f"{kind} {name} selects {chosen}: one workload"
        containers = _pod(workloads[chosen[0]])["spec"]["containers"]
        ports = {p["name"]: p["containerPort"] for c in containers for p in c.get("ports", [])}
        for port in spec.get("ports", []):  # a Service's
            assert port["targetPort"] in ports, f"Service {name}: no container port {port}"
        for rule in spec.get("ingress", []):  # a NetworkPolicy's
            for port in rule.get("ports", []):
                assert port["port"] in ports.values(), f"NetworkPolicy {name} opens {port}"
        for container in containers:
            _env(container)  # every secretKeyRef names a key the Secret holds


def test_every_process_accepts_its_settings() -> None:
    """Each container's TREADLE_* variables are known and valid: the process
    would start with them rather than stop on a bad setting."""
    classes = {
        "scheduler": [SchedulerSettings, AccessSettings, LogSettings],
        "gateway": [GatewaySettings, AccessSettings, LogSettings],
        "migrate": [SchedulerSettings],
    }
    for (kind, name), doc in _resources().items():
        if kind not in ("Deployment", "Job"):
            continue
        pod = _pod(doc)["spec"]
        assert pod["securityContext"]["runAsNonRoot"] and pod["securityContext"]["runAsUser"] == UID
        (container,) = pod["containers"]
        assert container["securityContext"]["allowPrivilegeEscalation"] is False
        role = container["args"][0]
        env = _env(container)
        config.check_unknown(env, classes[role])
        for cls in classes[role]:
            config.load(cls, env)
        if role in ("scheduler", "gateway"):
            access = config.load(AccessSettings, env)
            assert access.keys, f"{name}: TREADLE_AUTH=keys, as it listens beyond loopback"


def test_probes_ask_what_the_processes_answer() -> None:
    resources = _resources()
    scheduler = resources[("Deployment", "treadle-scheduler")]
    (container,) = _pod(scheduler)["spec"]["containers"]
    grpc_port = int(_env(container)["TREADLE_GRPC_PORT"])
    assert container["readinessProbe"]["grpc"] == {"port": grpc_port}, "'' says SERVING"
    for probe in ("startupProbe", "livenessProbe"):
        assert container[probe]["grpc"] == {"port": grpc_port, "service": LIVENESS}
    drain = float(_env(container)["TREADLE_DRAIN_TIMEOUT"])
    assert _pod(scheduler)["spec"]["terminationGracePeriodSeconds"] > drain
    assert scheduler["spec"]["strategy"]["rollingUpdate"]["maxUnavailable"] == 0

    # The gateway reaches every replica: the headless Service's name, balanced.
    service = resources[("Service", "treadle-scheduler")]
    assert service["spec"]["clusterIP"] == "None"
    (gateway,) = _pod(resources[("Deployment", "treadle-gateway")])["spec"]["containers"]
    address = _env(gateway)["TREADLE_SCHEDULER_ADDRESS"]
    assert target.target(address) == f"treadle-scheduler:{grpc_port}"
    for probe in ("livenessProbe", "readinessProbe"):
        assert gateway[probe]["httpGet"]["path"] == "/health"


# -- the image -------------------------------------------------------------------


def _instructions() -> list[tuple[str, str]]:
    text = (ROOT / "Dockerfile").read_text().replace("\\\n", " ")
    lines = [line.strip() for line in text.splitlines()]
    return [
        (line.split()[0].upper(), line.partition(" ")[2])
        for line in lines
        if line and not line.startswith("#")
    ]


def test_the_image_installs_what_runs_and_runs_unprivileged() -> None:
    steps = _instructions()
    stages = [i for i, (op, _) in enumerate(steps) if op == "FROM"]
    final = steps[stages[-1] :]
    users = [arg for op, arg in final if op == "USER"]
    assert users == [f"{UID}:{UID}"], "the last stage runs as the unprivileged user"
    assert f"--uid {UID}" in " ".join(arg for op, arg in final if op == "RUN")
    assert [op for op, _ in final].index("USER") > max(
        i for i, (op, _) in enumerate(final) if op in ("RUN", "COPY")
    ), "nothing after USER needs root"
    (sync,) = [arg for op, arg in steps if op == "RUN" and "uv sync" in arg]
    for flag in ("--frozen", "--no-dev", "--extra server", "--no-editable"):
        assert flag in sync


def test_dockerignore_lets_in_only_what_the_build_copies() -> None:
    lines = [
        line.strip()
        for line in (ROOT / ".dockerignore").read_text().splitlines()
        if line.strip() and not line.startswith("#")
    ]
    assert lines[0] == "*", "everything is left out but what is let in"
    allowed = {line[1:].rstrip("/") for line in lines if line.startswith("!")}
    copied = {
        source.rstrip("/")
        for op, arg in _instructions()
        if op == "COPY" and not arg.startswith("--from")
        for source in arg.split()[:-1]
    }
    assert copied == allowed
    assert {"**/__pycache__", "**/*.pyc"} <= set(lines)


# -- compose -----------------------------------------------------------------------


def _compose() -> dict[str, Any]:
    services: dict[str, Any] = yaml.safe_load((ROOT / "compose.yaml").read_text())["services"]
    return services


def test_compose_publishes_grpc_and_http_and_balances_over_the_replicas() -> None:
    services = _compose()
    schedulers = {n: s for n, s in services.items() if s.get("command") == ["scheduler"]}
    assert len(schedulers) >= 2
    published = [p for s in schedulers.values() for p in s["ports"]]
    assert published == [f"127.0.0.1:{50051 + i}:50051" for i in range(len(schedulers))]
    gateway = services["gateway"]
    assert gateway["ports"] == ["127.0.0.1:8000:8000"]
    host, _, port = gateway["environment"]["TREADLE_SCHEDULER_ADDRESS"].rpartition(":")
    for name, scheduler in schedulers.items():
        assert host in scheduler["networks"]["default"]["aliases"], name
        assert scheduler["environment"]["TREADLE_GRPC_PORT"] == port
        assert scheduler["depends_on"]["migrate"]["condition"] == "service_completed_successfully"
        assert gateway["depends_on"][name]["condition"] == "service_healthy"
    assert services["migrate"]["command"] == ["migrate"]
    for service in services.values():
        config.check_unknown(service.get("environment", {}), [])


async def test_the_compose_health_check_asks_a_real_replica(replica: Replica) -> None:
    check = _compose()["scheduler-1"]["healthcheck"]["test"]
    assert check[:3] == ["CMD", "python", "-c"]
    code = check[3].replace("127.0.0.1:50051", replica.address)
    assert code != check[3], "the check dials the replica's own gRPC port"
    proc = await asyncio.create_subprocess_exec(
        sys.executable, "-c", code, stderr=asyncio.subprocess.PIPE
    )
    async with asyncio.timeout(20):
        _, err = await proc.communicate()
    assert proc.returncode == 0, err.decode()
