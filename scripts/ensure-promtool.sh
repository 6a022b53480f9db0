#!/usr/bin/env bash
# promtool (for `promtool test rules` on the chart's alert rules), from Debian's
# `prometheus` package: only the promtool binary is unpacked, into
# ${TANDEM_CACHE:-$HOME/.cache/tandem}/promtool-deb/ (no Prometheus server is installed
# or started). Building it from the Prometheus Go module instead takes ~20 minutes of
# this machine's two cores, a third of CI's budget, for the same rule engine.
# Prints the binary's path, last on stdout.
set -euo pipefail
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
dir="$cache/promtool-deb"
log() { printf '[promtool] %s\n' "$*" >&2; }
if [[ ! -x "$dir/usr/bin/promtool" ]]; then
  tmp=$(mktemp -d)
  trap 'rm -rf "$tmp"' EXIT
  log "Fetching Debian's prometheus package for its promtool"
  (cd "$tmp" && { apt-get download prometheus >&2 2>/dev/null || { apt-get update -qq >&2 && apt-get download prometheus >&2; }; })
  rm -rf "$dir.tmp" && mkdir -p "$dir.tmp"
  dpkg-deb -x "$tmp"/prometheus_*.deb "$dir.tmp"
  find "$dir.tmp" -mindepth 1 -maxdepth 1 ! -name usr -exec rm -rf {} +
  rm -rf "$dir" && mv "$dir.tmp" "$dir"
  log "$("$dir/usr/bin/promtool" --version 2>&1 | head -1)"
fi
echo "$dir/usr/bin/promtool"
