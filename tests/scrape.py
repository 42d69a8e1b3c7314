"""Read Prometheus metrics the way Prometheus does: over HTTP, in the text format.

metrics = await scrape("http://127.0.0.1:9464/metrics")
metrics.value("treadle_tasks_started_total", queue="default", task="echo")
"""

from __future__ import annotations

import asyncio
import dataclasses
import shutil
import subprocess

import httpx
from prometheus_client.parser import text_string_to_metric_families

PROMTOOL = shutil.which("promtool")


@dataclasses.dataclass
class Scraped:
    text: str
    #: Family name (as exposed: counters end in _total) -> sample name -> [(labels, value)].
    families: dict[str, dict[str, list[tuple[dict[str, str], float]]]]

    def value(self, sample: str, **labels: str) -> float:
        """The sum of `sample` over the series whose labels include `labels` (0 if none)."""
        return sum(
            value
            for samples in self.families.values()
            for labels_of, value in samples.get(sample, ())
            if all(labels_of.get(k) == v for k, v in labels.items())
        )

    def series(self, sample: str) -> list[tuple[dict[str, str], float]]:
        return [s for samples in self.families.values() for s in samples.get(sample, ())]

    def names(self, prefix: str = "treadle_") -> set[str]:
        """Families whose name starts with `prefix`, as `# TYPE` lines name them."""
        return {
            line.split()[2]
            for line in self.text.splitlines()
            if line.startswith("# TYPE ") and line.split()[2].startswith(prefix)
        }


def parse(text: str) -> Scraped:
    families: dict[str, dict[str, list[tuple[dict[str, str], float]]]] = {}
    for family in text_string_to_metric_families(text):
        samples = families.setdefault(family.name, {})
        for sample in family.samples:
            samples.setdefault(sample.name, []).append((dict(sample.labels), sample.value))
    return Scraped(text, families)


async def scrape(url: str) -> Scraped:
    async with httpx.AsyncClient(timeout=10) as http:
        response = await http.get(url)
    assert response.status_code == 200, response.text
    assert response.headers["content-type"].startswith("text/plain; version=0.0.4")
    return parse(response.text)


async def promtool(*args: str, stdin: str | None = None) -> tuple[int, str]:
    """Run promtool; returns its exit code and its output (stdout and stderr)."""
    assert PROMTOOL is not None, "promtool not installed (Debian package `prometheus`)"

    def run() -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [PROMTOOL, *args],
            input=stdin,
            capture_output=True,
            text=True,
            timeout=60,
            check=False,
        )

    done = await asyncio.to_thread(run)
    return done.returncode, (done.stdout + done.stderr).strip()
