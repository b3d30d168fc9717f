#!/usr/bin/env bash
# The clients' test tools: a virtualenv at target/venv with the Python client and the queue
# software its end-to-end tests run against (Celery with Redis, TaskiQ, taskiq-redis), pytest and
# ruff. Each step skips what is already installed. The Node client has no dependencies: nothing to
# npm install. redis-server comes from 00-apt.sh.
set -euo pipefail
cd "$(dirname "$0")/../.."
venv=target/venv
python=${PYTHON:-$(command -v python3 || true)}
if [ ! -x "$venv/bin/python" ]; then
    if [ -z "$python" ]; then
        # tests/clients.rs then skips the Python suite, saying the virtualenv is missing.
        echo "20-clients.sh: no python3 on PATH; the Python client's tests will be skipped" >&2
        exit 0
    fi
    "$python" -m venv "$venv"
fi
pip=("$venv/bin/python" -m pip --disable-pip-version-check -q)
# One interpreter start to find what is missing (a `pip show` per package costs a second each).
mapfile -t need < <("$venv/bin/python" - <<'PY'
from importlib import metadata
for spec, name in [("celery[redis]>=5.3", "celery"), ("redis>=4.5", "redis"),
                   ("taskiq>=0.11.19", "taskiq"), ("taskiq-redis>=1.0", "taskiq-redis"),
                   ("pytest>=7", "pytest"), ("ruff>=0.4", "ruff")]:
    try:
        metadata.version(name)
    except metadata.PackageNotFoundError:
        print(spec)
PY
)
if [ ${#need[@]} -gt 0 ]; then
    "${pip[@]}" install "${need[@]}"
fi
# The client itself: always reinstalled (no dependencies; pip builds it in an isolated
# environment with setuptools from PyPI), so the venv holds this tree's.
"${pip[@]}" install --no-deps --force-reinstall ./clients/python
command -v node >/dev/null || echo "20-clients.sh: node is missing; the Node client's tests will be skipped" >&2
