#!/usr/bin/env bash
# Debian packages the tests use: PostgreSQL (the shared store, a primary and a standby), Redis (the
# Celery/TaskiQ broker), Chromium (the UI's browser tests). Installed only when missing.
set -euo pipefail
need=()
command -v redis-server >/dev/null || need+=(redis-server)
ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql)
command -v chromium >/dev/null || need+=(chromium)
if [ ${#need[@]} -gt 0 ]; then
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends "${need[@]}"
    # Debian starts the packaged servers; the tests run their own on free ports.
    $sudo_ service postgresql stop >/dev/null 2>&1 || true
    $sudo_ service redis-server stop >/dev/null 2>&1 || true
fi
