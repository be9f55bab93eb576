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
# Debian packages the tests drive, one row each: a command (or a python module, "py:NAME") whose
# absence means the package is missing, the package, and what it is for. Debian's criu package
# gives crit and pycriu, independent checks of our image and RPC formats (its criu binary is never
# run). Installed in one apt call, only when something is missing.
packages=(
  "crit criu crit and pycriu, to check our images"
  "py:pycriu criu crit and pycriu, to check our images"
  "iptables-restore iptables the network lock of TCP connections (CRIU's default)"
  "nft nftables the network lock through nftables"
  "ip iproute2 network devices, addresses and routes of a namespace (ip addr/route save and restore)"
  "busybox busybox-static a container's root file system, one static binary"
  "nginx nginx-light a real HTTP server to checkpoint with keep-alive connections (tests/servers_test.ts)"
  "redis-server redis-server a real key-value store to checkpoint with a client connected"
  "memcached memcached a real cache to checkpoint with a client connected"
  "losetup mount a loop block device: the plugin device-mapping hooks' tests, disks mounted in a container"
  "mkfs.ext4 e2fsprogs an ext4 image for that loop device (mntns tests)"
  "runc runc an OCI runtime that checkpoints and restores containers through criu swrk"
  "crun crun another OCI runtime, tried with criu-ts as its criu"
  "lxc-create lxc LXC containers, checkpointed by lxc-checkpoint through criu's command line"
  "podman podman Podman containers, checkpointed by podman container checkpoint through runc and criu"
  "ctr containerd containerd and its ctr client, checkpointing a container through runc and criu"
)
missing=()
for row in "${packages[@]}"; do
  read -r probe package _ <<<"$row"
  if [[ $probe == py:* ]]; then
    /usr/bin/python3 -c "import ${probe#py:}" >/dev/null 2>&1 && continue
  else
    command -v "$probe" >/dev/null 2>&1 && continue
  fi
  [[ " ${missing[*]} " == *" $package "* ]] || missing+=("$package")
done
if [ ${#missing[@]} -gt 0 ]; then
  if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null 2>&1; then
    echo "setup: installing Debian's ${missing[*]}"
    apt-get update -qq >/dev/null
    # Packages that ship a daemon must not start it: the tests start their own, on their own ports.
    no_daemons=
    if [ ! -e /usr/sbin/policy-rc.d ]; then
      printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d && no_daemons=1
    fi
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq "${missing[@]}" >/dev/null
    [ -z "$no_daemons" ] || rm -f /usr/sbin/policy-rc.d
  else
    echo "setup: missing Debian packages ${missing[*]}; the tests that use them will fail" >&2
  fi
fi
# The bundle the launcher runs (it would build it on first use too, but here it is built once,
# before tests start many criu processes at the same time).
bash "$root/scripts/bundle.sh"
