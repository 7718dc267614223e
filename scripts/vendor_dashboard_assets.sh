#!/usr/bin/env bash
# Vendors the dashboard's third-party browser assets into the package (no CDN at run time).
#
# Installs the exact versions pinned in llama_gpu/dashboard/package.json from the npm
# registry into a temporary folder and copies their distributed builds into
# llama_gpu/dashboard/static/vendor/, with their licences. Run it when a pin changes;
# the copied files are committed, so serving the dashboard needs neither npm nor internet.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
dashboard="$root/llama_gpu/dashboard"
vendor="$dashboard/static/vendor"
work="$(mktemp -d)"
trap 'rm -rf "$work"' EXIT

command -v npm >/dev/null || { echo "npm is needed to vendor the dashboard assets" >&2; exit 1; }

cp "$dashboard/package.json" "$work/package.json"
(cd "$work" && npm install --no-audit --no-fund --ignore-scripts --omit=dev --silent)

modules="$work/node_modules"
mkdir -p "$vendor"
rm -f "$vendor"/*
install -m 0644 "$modules/socket.io-client/dist/socket.io.min.js" "$vendor/socket.io.min.js"
install -m 0644 "$modules/socket.io-client/LICENSE" "$vendor/socket.io-client.LICENSE"
install -m 0644 "$modules/chart.js/dist/chart.umd.js" "$vendor/chart.umd.js"
install -m 0644 "$modules/chart.js/LICENSE.md" "$vendor/chart.js.LICENSE.md"

{
  echo "Vendored by scripts/vendor_dashboard_assets.sh from the npm registry:"
  for pkg in socket.io-client chart.js; do
    node -e "const p=require('$modules/$pkg/package.json'); console.log('  ' + p.name + '@' + p.version + ' (' + p.license + ')')"
  done
} > "$vendor/VERSIONS.txt"
cat "$vendor/VERSIONS.txt"
