#!/usr/bin/env bash
# What the CSI driver and its tests need, from the Go module proxy (never copied into
# this tree), into ${TANDEM_CACHE:-$HOME/.cache/tandem}:
#   1. csi.proto from the CSI spec's own Go module and the kubelet's plugin registration
#      api.proto, each with its LICENSE (scripts/fetch-protos.sh): the driver loads them
#      at start (src/csi/proto.ts);
#   2. csi-sanity (github.com/kubernetes-csi/csi-test/v5, built unmodified), the outside
#      judge test/e2e/csi-sanity.test.ts runs against the driver;
#   3. the sidecars the chart runs beside the driver's controller, external-provisioner,
#      external-attacher and external-resizer, built unmodified from their modules
#      (test/e2e/build/csi-sidecars pins their k8s.io modules to one release).
# A no-op on a warm machine. Output: KEY=path lines on stdout.
set -euo pipefail
repo=$(cd "$(dirname "$0")/.." && pwd)
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
sanity_version=v5.6.0
sanity_dir="$cache/csi-test-$sanity_version"
sidecar_mod="$repo/test/e2e/build/csi-sidecars"
sidecar_dir="$cache/csi-sidecars-$(cat "$sidecar_mod/go.mod" "$sidecar_mod/go.sum" "$sidecar_mod/tools.go" | sha256sum | cut -c1-16)"
log() { printf '[csi-setup] %s\n' "$*" >&2; }
command -v go >/dev/null || { log "Go is required (>= 1.26) to fetch the CSI spec and build csi-sanity"; exit 1; }
# Private module and build caches under the cache dir; GOFLAGS=-modcacherw so they can be removed.
export GOMODCACHE="$cache/go-mod" GOFLAGS=-modcacherw GOTOOLCHAIN=local

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
protos=$(bash "$repo/scripts/fetch-protos.sh" "$cache")

if [[ ! -x "$sanity_dir/csi-sanity" ]]; then
  log "Building csi-sanity $sanity_version from the Go module proxy (cold: about 3 minutes on 2 cores)"
  rm -rf "$sanity_dir.tmp" && mkdir -p "$sanity_dir.tmp"
  (cd "$tmp" && GOBIN="$sanity_dir.tmp" GOCACHE="$cache/go-build-csi" CGO_ENABLED=0 \
    nice -n 19 go install "github.com/kubernetes-csi/csi-test/v5/cmd/csi-sanity@$sanity_version")
  rm -rf "$sanity_dir" && mv "$sanity_dir.tmp" "$sanity_dir"
fi
if [[ ! -f "$sidecar_dir/.complete" ]]; then
  log "Building csi-provisioner, csi-attacher and csi-resizer from the Go module proxy (cold: about 7 minutes on 2 cores)"
  start=$(date +%s)
  rm -rf "$sidecar_dir.tmp" && mkdir -p "$sidecar_dir.tmp"
  (cd "$sidecar_mod" && GOFLAGS=-mod=readonly GOCACHE="$cache/go-build-csi" CGO_ENABLED=0 \
    nice -n 19 go build -trimpath -ldflags "-s -w" -o "$sidecar_dir.tmp/" \
      github.com/kubernetes-csi/external-provisioner/v6/cmd/csi-provisioner \
      github.com/kubernetes-csi/external-attacher/v4/cmd/csi-attacher \
      github.com/kubernetes-csi/external-resizer/v2/cmd/csi-resizer)
  touch "$sidecar_dir.tmp/.complete"
  rm -rf "$sidecar_dir" && mv "$sidecar_dir.tmp" "$sidecar_dir"
  log "Built the sidecars in $(( $(date +%s) - start ))s"
fi
# As e2e-setup.sh: the cache keeps the results, not the Go caches (TANDEM_KEEP_GO_CACHE=1 keeps them).
if [[ "${TANDEM_KEEP_GO_CACHE:-0}" != 1 ]]; then
  rm -rf "$cache/go-mod" "$cache/go-build-csi"
fi

echo "$protos"
echo "CSI_SANITY=$sanity_dir/csi-sanity"
echo "CSI_PROVISIONER=$sidecar_dir/csi-provisioner"
echo "CSI_ATTACHER=$sidecar_dir/csi-attacher"
echo "CSI_RESIZER=$sidecar_dir/csi-resizer"
