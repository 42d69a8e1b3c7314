#!/usr/bin/env bash
# The system programs some tests drive, installed from Debian when missing:
#   chromium  the console's browser tests (Playwright drives /usr/bin/chromium)
#   wrk       the gateway benchmarks' load generator
#   promtool  checks /metrics output and deploy/prometheus (Debian package prometheus)
# Installs only when a tool is missing, apt-get exists and we run as root; one
# apt-get update at most. Quiet and instant when everything is present. Never
# fails: a tool still missing makes its tests skip, or fail where CI asks them to
# (TREADLE_TEST_REQUIRE_BROWSER / _WRK / _PROMTOOL).
set -uo pipefail

declare -A package=([chromium]=chromium [wrk]=wrk [promtool]=prometheus)
missing=()
for tool in chromium wrk promtool; do
  command -v "$tool" >/dev/null 2>&1 || missing+=("${package[$tool]}")
done
[ ${#missing[@]} -eq 0 ] && exit 0

if ! command -v apt-get >/dev/null 2>&1 || [ "$(id -u)" != 0 ]; then
  echo "system_tools: missing Debian packages ${missing[*]} (apt-get unavailable or not root):" \
    "their tests will skip" >&2
  exit 0
fi
echo "system_tools: installing Debian packages ${missing[*]}" >&2
if ! { apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
      --no-install-recommends "${missing[@]}"; } >/dev/null 2>&1; then
  echo "system_tools: could not install ${missing[*]}: their tests will skip" >&2
fi
exit 0
