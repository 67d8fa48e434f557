#!/usr/bin/env bash
# Install headless Chromium and its WebDriver from Debian's packages, for the end-to-end tests
# (tests/e2e). Does nothing if /usr/bin/chromium and /usr/bin/chromedriver are already there.
# Needs root (or sudo) and the Debian package mirror; no browser is downloaded from anywhere else.
set -euo pipefail

if [[ -x /usr/bin/chromium && -x /usr/bin/chromedriver ]]; then
    echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null) already installed"
    exit 0
fi

SUDO=""
if [[ "$(id -u)" != "0" ]]; then
    if command -v sudo >/dev/null 2>&1; then
        SUDO="sudo -n"
    else
        echo "install-browser: need root (or sudo) to apt-get install chromium chromium-driver" >&2
        exit 1
    fi
fi

started=$(date +%s)
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -q
$SUDO apt-get install -y -q chromium chromium-driver fonts-dejavu-core
echo "install-browser: $(/usr/bin/chromium --version 2>/dev/null) installed in $(( $(date +%s) - started )) s"
