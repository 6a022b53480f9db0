#!/usr/bin/env bash
# What the CSI driver and its tests need, from the Go module proxy (never copied into
# this tree), into ${TANDEM_CACHE:-$HOME/.cache/tandem}:
#   1. csi.proto from the CSI spec's own Go module (github.com/container-storage-interface/spec),
#      with its LICENSE beside it: the driver loads it at start (src/csi/proto.ts);
#   2. csi-sanity (github.com/kubernetes-csi/csi-test/v5, built unmodified), the outside
#      judge test/e2e/csi-sanity.test.ts runs against the driver.
# A no-op on a warm machine. Output: KEY=path lines on stdout.
set -euo pipefail
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
# The spec version csi-test v5.6.0's go.mod requires, so the driver and the judge speak the same proto.
spec_version=v1.13.0
sanity_version=v5.6.0
spec_dir="$cache/csi-spec-$spec_version"
sanity_dir="$cache/csi-test-$sanity_version"
log() { printf '[csi-setup] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "Go is required (>= 1.24) to fetch the CSI spec and build csi-sanity"; exit 1; }
# Private module and build caches under the cache dir; GOFLAGS=-modcacherw so they can be removed.
export GOMODCACHE="$cache/go-mod" GOFLAGS=-modcacherw GOTOOLCHAIN=local

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
if [[ ! -f "$spec_dir/csi.proto" ]]; then
  log "Fetching github.com/container-storage-interface/spec@$spec_version"
  dir=$(cd "$tmp" && go mod download -json "github.com/container-storage-interface/spec@$spec_version" |
    sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p')
  mkdir -p "$spec_dir.tmp"
  cp "$dir/csi.proto" "$dir/LICENSE" "$spec_dir.tmp/"
  rm -rf "$spec_dir" && mv "$spec_dir.tmp" "$spec_dir"
fi

if [[ ! -x "$sanity_dir/csi-sanity" ]]; then
  log "Building csi-sanity $sanity_version from the Go module proxy (cold: about 3 minutes on 2 cores)"
  rm -rf "$sanity_dir.tmp" && mkdir -p "$sanity_dir.tmp"
  (cd "$tmp" && GOBIN="$sanity_dir.tmp" GOCACHE="$cache/go-build-csi" CGO_ENABLED=0 \
    nice -n 19 go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$sanity_version")
  rm -rf "$sanity_dir" && mv "$sanity_dir.tmp" "$sanity_dir"
fi
# As e2e-setup.sh: the cache keeps the results, not the Go caches (TANDEM_KEEP_GO_CACHE=1 keeps them).
if [[ "${TANDEM_KEEP_GO_CACHE:-0}" != 1 ]]; then
  rm -rf "$cache/go-mod" "$cache/go-build-csi"
fi

echo "CSI_PROTO=$spec_dir/csi.proto"
echo "CSI_SANITY=$sanity_dir/csi-sanity"
