#!/usr/bin/env bash
# Brings a fresh clone to a runnable state: the pinned toolchain from npm (Deno, buf, protoc-gen-es)
# and, as root on Debian, the `criu` package whose crit and pycriu the tests use as independent
# checks of our image and RPC formats. Safe to run again: it does only what is missing.
set -euo pipefail
root=$(cd "$(dirname "$(readlink -f "${BASH_SOURCE[0]}")")/.." && pwd)
cd "$root"
if [ ! -x node_modules/.bin/deno ] || [ ! -x node_modules/.bin/buf ] || [ package-lock.json -nt node_modules/.package-lock.json ]; then
  echo "setup: installing the pinned toolchain (npm ci, exactly as package-lock.json pins it)"
  # npm ci never rewrites the lock file, so a checkout stays clean.
  npm ci --no-audit --no-fund --loglevel=error
fi
if ! command -v crit >/dev/null 2>&1 || ! /usr/bin/python3 -c 'import pycriu' >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's criu package (for crit and pycriu)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq criu >/dev/null
  else
    echo "setup: Debian's criu package is missing; tests that compare with crit/pycriu will fail" >&2
  fi
fi
# The network lock of dumped TCP connections goes through iptables (CRIU's default) or nft.
if ! command -v iptables-restore >/dev/null 2>&1 || ! command -v nft >/dev/null 2>&1; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's iptables and nftables (the network lock of TCP connections)"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq iptables nftables >/dev/null
  else
    echo "setup: iptables or nft is missing; dumping established TCP connections will fail" >&2
  fi
fi
# The bundle the launcher runs (it would build it on first use too, but here it is built once,
# before tests start many criu processes at the same time).
bash "$root/scripts/bundle.sh"
