#!/usr/bin/env bash
# Builds promtool (for `promtool test rules` on the chart's alert rules) from the
# Prometheus Go module that test/promtool/go.mod pins, into
# ${TANDEM_CACHE:-$HOME/.cache/tandem}/promtool-<hash of the build inputs>/promtool,
# only when it is not there yet (cold: a few minutes on 2 cores; warm: instant).
# Prints the binary's path, last on stdout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir="$repo/test/promtool"
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
log() { printf '[promtool] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "Go is required to build promtool"; exit 1; }
hash=$(cat "$build_dir/go.mod" "$build_dir/go.sum" "$build_dir/tools.go" | sha256sum | cut -c1-16)
bin_dir="$cache/promtool-$hash"
if [[ ! -f "$bin_dir/.complete" ]]; then
  log "Building promtool ($(grep -E 'github.com/prometheus/prometheus ' "$build_dir/go.mod" | awk '{print $NF}'))"
  start=$(date +%s)
  go_tmp="$cache/promtool-go"
  rm -rf "$bin_dir.tmp" && mkdir -p "$bin_dir.tmp"
  # nice: the build shares the machine's cores with whatever else runs.
  (cd "$build_dir" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 \
    GOMODCACHE="$go_tmp/mod" GOCACHE="$go_tmp/build" \
    nice -n 19 go build -trimpath -o "$bin_dir.tmp/promtool" github.com/prometheus/prometheus/cmd/promtool)
  touch "$bin_dir.tmp/.complete"
  rm -rf "$bin_dir" && mv "$bin_dir.tmp" "$bin_dir"
  if [[ "${TANDEM_KEEP_GO_CACHE:-0}" != 1 ]]; then
    chmod -R u+w "$go_tmp" && rm -rf "$go_tmp"
  fi
  log "Built in $(( $(date +%s) - start ))s: $bin_dir/promtool"
fi
echo "$bin_dir/promtool"
