#!/usr/bin/env bash
# Makes sure Debian's chromium is at /usr/bin/chromium for the dashboard's browser test.
#
# The test launches the browser only by this path (Playwright never downloads one). When
# it is missing and we are root, install the distribution's package with apt-get; else
# say what to do and carry on: the test then skips (or fails with LLAMA_GPU_REQUIRE_SERVICES=1).
set -euo pipefail

CHROMIUM=/usr/bin/chromium

if [ -x "$CHROMIUM" ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure_chromium: $CHROMIUM is missing; install it as root: apt-get install chromium" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure_chromium: $CHROMIUM is missing and apt-get is not available here" >&2
  exit 0
fi
echo "ensure_chromium: installing Debian's chromium with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
apt-get install -y -q --no-install-recommends chromium fonts-liberation
"$CHROMIUM" --version
