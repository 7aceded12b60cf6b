#!/usr/bin/env bash
# Installs what nlb needs on a fresh Debian 12 machine with Node 20: the Debian packages the
# lab, the data plane and the benchmarks use, then the npm packages, then a build. Safe to run
# again: each step is skipped when already done.
set -euo pipefail
cd "$(dirname "$0")/.."

need_apt=()
command -v nft >/dev/null 2>&1 || need_apt+=(nftables)
command -v conntrack >/dev/null 2>&1 || need_apt+=(conntrack)
command -v iperf3 >/dev/null 2>&1 || need_apt+=(iperf3)
command -v haproxy >/dev/null 2>&1 || need_apt+=(haproxy)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
# libfaketime moves one process's wall clock (the lab's clock-step faults, test/lab-faults.test.ts).
command -v faketime >/dev/null 2>&1 || need_apt+=(faketime)
if [ "${#need_apt[@]}" -gt 0 ]; then
  if [ "$(id -u)" -ne 0 ]; then
    echo "setup: missing Debian packages: ${need_apt[*]}; run as root (or install them) to enable the lab tests" >&2
  else
    echo "setup: installing Debian packages: ${need_apt[*]}"
    export DEBIAN_FRONTEND=noninteractive
    apt-get update -qq
    # iperf3 asks whether to start a daemon; never.
    echo "iperf3 iperf3/start_daemon boolean false" | debconf-set-selections 2>/dev/null || true
    apt-get install -y -qq --no-install-recommends "${need_apt[@]}" >/dev/null
  fi
fi

if [ ! -d node_modules ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing npm packages"
  # `npm ci` would be the stricter choice, but npm 11.19 refuses this lock file (it reports
  # rollup's optional per-platform packages as missing even from a freshly written lock file);
  # `npm install` installs the same locked versions.
  npm install --no-audit --no-fund --loglevel=error
fi

npm run --silent build
