#!/usr/bin/env bash
# The UI's browser tests (tests/ui.rs): Node with playwright-core from the npm registry, driving
# Debian's Chromium (00-apt.sh). Installs only what is missing; the lock file pins the version.
set -euo pipefail
cd "$(dirname "$0")/../../serve/ui-tests"
if ! command -v npm >/dev/null; then
    sudo_=""
    [ "$(id -u)" -eq 0 ] || sudo_="sudo"
    $sudo_ apt-get update -qq
    DEBIAN_FRONTEND=noninteractive $sudo_ apt-get install -y -qq --no-install-recommends nodejs npm
fi
if [ ! -f node_modules/playwright-core/package.json ]; then
    npm ci --no-audit --no-fund
fi
