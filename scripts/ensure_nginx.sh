#!/usr/bin/env bash
# Makes sure Debian's nginx is installed for the deployment test (tests/test_deployment.py).
#
# The test runs nginx as its own child process, with a config and prefix in a temporary
# folder; the package's own service is never started here. When nginx is missing and we
# are root, install the distribution's package with apt-get; else say what to do and carry
# on: the test then skips (or fails with LLAMA_GPU_REQUIRE_SERVICES=1).
set -euo pipefail

if command -v nginx >/dev/null || [ -x /usr/sbin/nginx ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "ensure_nginx: nginx is missing; install it as root: apt-get install nginx-light (or nginx)" >&2
  exit 0
fi
if ! command -v apt-get >/dev/null; then
  echo "ensure_nginx: nginx is missing and apt-get is not available here" >&2
  exit 0
fi
echo "ensure_nginx: installing Debian's nginx with apt-get" >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -q
# policy-rc.d keeps the package's post-install script from starting the system service:
# the test starts its own nginx, and nothing should listen on port 80 behind its back.
policy=/usr/sbin/policy-rc.d
created=0
if [ ! -e "$policy" ]; then
  printf '#!/bin/sh\nexit 101\n' >"$policy"
  chmod +x "$policy"
  created=1
fi
apt-get install -y -q --no-install-recommends nginx || status=$?
if [ "$created" = 1 ]; then
  rm -f "$policy"
fi
if [ -n "${status:-}" ]; then
  exit "$status"
fi
/usr/sbin/nginx -v
