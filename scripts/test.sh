#!/usr/bin/env bash
# Runs every check and every test: typecheck, lint, format, then the whole vitest suite (core
# properties, kernel hash vectors, the simulator's seeds, CLI, and the lab tests in network
# namespaces, which need root). The lab files run one after another while the rest run beside
# them in worker threads (vitest.config.ts). Installs what it needs first.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/setup.sh
echo "== typecheck"; npm run --silent typecheck
echo "== lint"; npm run --silent lint
echo "== format"; npm run --silent format:check
echo "== tests"
npx vitest run "$@"
