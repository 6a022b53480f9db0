#!/usr/bin/env bash
# The local two-node lab: installs what it needs, then runs scripts/lab.ts on Node 24.
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
exec node scripts/lab.ts "$@"
