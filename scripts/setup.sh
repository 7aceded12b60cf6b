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
# ipvsadm drives the kernel's IP Virtual Server, the other peer of bench:lab's requests/s comparison.
command -v ipvsadm >/dev/null 2>&1 || need_apt+=(ipvsadm)
command -v chromium >/dev/null 2>&1 || need_apt+=(chromium)
command -v ss >/dev/null 2>&1 || need_apt+=(iproute2)
# libfaketime moves one process's wall clock (the lab's clock-step faults, test/lab-faults.test.ts).
command -v faketime >/dev/null 2>&1 || need_apt+=(faketime)
# FRR (zebra, bfdd, bgpd) runs in the routed lab's namespaces only (src/lab/frr.ts), started by
# the lab from /usr/lib/frr; its system service is never wanted (see below).
[ -x /usr/lib/frr/bgpd ] || need_apt+=(frr)
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
    # Where systemd runs, installing frr enables and starts frr.service (zebra in the machine's
    # own namespace); the lab needs none of it. Only when this script installed frr just now,
    # so an FRR someone runs on purpose is never stopped.
    if [[ " ${need_apt[*]} " == *" frr "* ]] && command -v systemctl >/dev/null 2>&1; then
      systemctl disable --now frr.service >/dev/null 2>&1 || true
    fi
  fi
fi

# The npm packages: exactly the lock file's, with `npm ci`, unless node_modules already holds
# them. That is decided on content, not on timestamps (a fresh clone or worktree makes the lock
# look newer than an install that matches it): every package npm recorded as installed
# (node_modules/.package-lock.json) has the lock's version, and every package of the lock is
# installed, but for optional ones (rollup's and esbuild's other platforms).
lock_matches() {
  node -e '
    const { readFileSync } = require("node:fs");
    const read = (f) => JSON.parse(readFileSync(f, "utf8")).packages ?? {};
    try {
      const lock = read("package-lock.json");
      const installed = read("node_modules/.package-lock.json");
      for (const [name, entry] of Object.entries(lock)) {
        const have = installed[name];
        if (name === "") continue;
        if (have ? have.version !== entry.version : !entry.optional && !entry.devOptional) process.exit(1);
      }
      for (const name of Object.keys(installed)) if (!(name in lock)) process.exit(1);
    } catch {
      process.exit(1);
    }
  '
}
if ! lock_matches; then
  if [ -L node_modules ]; then
    # `npm ci` empties node_modules first: through a link it would empty a tree others share.
    echo "setup: node_modules links to $(readlink node_modules), which does not hold this lock file's packages; not reinstalling through the link (remove it to install here)" >&2
  else
    echo "setup: installing npm packages (npm ci)"
    npm ci --no-audit --no-fund --loglevel=error
  fi
fi

npm run --silent build
