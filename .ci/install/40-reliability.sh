#!/usr/bin/env bash
# The reliability tools (RELIABILITY.md): schemathesis in target/venv, for bench/hostile-http.sh
# and the hostile-HTTP slice of the test suite (tests/hostile_http.rs skips it when missing).
# Installed only when missing.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/venv
[ -x "$venv/bin/python" ] || "${PYTHON:-python3}" -m venv "$venv"
if [ ! -x "$venv/bin/schemathesis" ]; then
    "$venv/bin/python" -m pip --disable-pip-version-check -q install "schemathesis>=4.0,<5"
fi
