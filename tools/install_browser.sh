#!/bin/sh
# Install Debian chromium (+ driver) for the opt-in real-browser test (tests/test_browser.py).
# `playwright install` cannot download browsers here; Playwright drives /usr/bin/chromium instead.
# Idempotent: does nothing when chromium is already installed. Needs root (or sudo).
set -eu
if command -v chromium >/dev/null 2>&1 && [ -x /usr/bin/chromium ]; then
    echo "chromium already installed: $(chromium --version 2>/dev/null || echo /usr/bin/chromium)"
    exit 0
fi
SUDO=""
if [ "$(id -u)" -ne 0 ]; then
    SUDO="sudo"
fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update
$SUDO apt-get install -y chromium chromium-driver
chromium --version
