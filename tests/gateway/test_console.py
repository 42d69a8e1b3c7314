"""The web console's files over HTTP: `/`, the assets its pages name, GraphiQL
from the vendored assets, same-origin-only policies, and the vendored versions
being the ones package-lock.json pins. (The pages in a browser:
tests/e2e/test_console.py.)"""

from __future__ import annotations

import json
import re
from pathlib import Path

import httpx

from treadle.gateway import console


def assets_of(html: str) -> list[str]:
    return re.findall(r'(?:src|href)="(/console/[^"]+)"', html)


async def test_the_console_and_every_asset_it_names_are_served(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    assert page.status_code == 200
    assert page.headers["content-type"].startswith("text/html")
    names = assets_of(page.text)
    assert "/console/js/main.js" in names and "/console/vendor/graphql-ws.min.js" in names
    # The modules main.js imports, and theirs, are files of the package too.
    modules = [p.relative_to(console.FILES) for p in (console.FILES / "js").rglob("*.js")]
    for name in [*names, *(f"/console/{m}" for m in modules)]:
        reply = await http.get(name)
        assert reply.status_code == 200, name
    missing = await http.get("/console/js/nothing.js")
    assert missing.status_code == 404


async def test_pages_allow_this_origin_only(http: httpx.AsyncClient) -> None:
    page = await http.get("/")
    policy = page.headers["content-security-policy"]
    host = http.base_url.netloc.decode()
    assert "default-src 'none'" in policy and "script-src 'self';" in policy
    assert f"connect-src 'self' ws://{host};" in policy
    assert "style-src 'self';" in policy  # the console sets no inline styles
    assert page.headers["x-content-type-options"] == "nosniff"


async def test_graphiql_comes_from_the_vendored_assets(http: httpx.AsyncClient) -> None:
    page = await http.get("/graphql", headers={"accept": "text/html"})
    assert page.status_code == 200
    assert "https://" not in page.text and "http://" not in page.text
    assert "/console/vendor/graphiql.min.js" in assets_of(page.text)
    assert "script-src 'self';" in page.headers["content-security-policy"]
    for name in assets_of(page.text):
        assert (await http.get(name)).status_code == 200, name
    # GraphQL itself is unchanged.
    answer = await http.post("/graphql", json={"query": "{ __typename }"})
    assert answer.json() == {"data": {"__typename": "Query"}}


def test_vendored_assets_are_the_pinned_versions(repo_root: Path) -> None:
    lock = json.loads((repo_root / "package-lock.json").read_text())["packages"]
    vendored = json.loads((console.FILES / "vendor" / "VERSIONS.json").read_text())
    pinned = json.loads((repo_root / "package.json").read_text())["dependencies"]
    for package, found in vendored.items():
        assert pinned[package] == found["version"], package
        assert lock[f"node_modules/{package}"]["version"] == found["version"], package
