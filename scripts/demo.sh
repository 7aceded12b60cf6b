#!/usr/bin/env bash
# The demo: a lab cluster under load, a host failing and rejoining, a drainstop, a summary.
# Installs what it needs first. Needs root for the lab; without it, runs the simulator's version.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
exec node dist/cli/main.js demo "$@"
