#!/usr/bin/env bash
# Installs what tandem's lab and tests need on a fresh Debian machine, and is a
# no-op on a warm one: npm packages (including Node 24 itself, from the npm
# registry's `node` package) and the real NBD clients and filesystem tools.
# Source it: it puts node_modules/.bin (Node 24, jest, tsc) first on PATH.
set -euo pipefail
repo=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$repo"

if [[ ! -x node_modules/.bin/node || ! -x node_modules/.bin/jest || package-lock.json -nt node_modules/.package-lock.json ]]; then
  echo "[deps] npm ci" >&2
  npm ci --no-audit --no-fund >&2
fi
export PATH="$repo/node_modules/.bin:$PATH"

missing=()
command -v nbdinfo >/dev/null || missing+=(libnbd-bin)
command -v nbdkit >/dev/null || missing+=(nbdkit)
command -v qemu-img >/dev/null || missing+=(qemu-utils)
command -v fio >/dev/null || missing+=(fio)
command -v mkfs.xfs >/dev/null || missing+=(xfsprogs)
command -v ip >/dev/null || missing+=(iproute2)
command -v iptables >/dev/null || missing+=(iptables)
command -v fusermount3 >/dev/null || missing+=(fuse3)
command -v taskset >/dev/null || missing+=(util-linux)
command -v tmux >/dev/null || missing+=(tmux)
command -v filefrag >/dev/null || missing+=(e2fsprogs)
if ((${#missing[@]})); then
  echo "[deps] apt-get install ${missing[*]}" >&2
  apt-get update -qq >&2
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${missing[@]}" >&2
fi
# 127.0.0.2 and 127.0.0.3 (the lab's two nodes) are loopback on Linux already.
node --version | grep -q '^v24\.' || { echo "[deps] Node 24 is not first on PATH ($(node --version))" >&2; exit 1; }
