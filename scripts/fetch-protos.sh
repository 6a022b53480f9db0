#!/usr/bin/env bash
# fetch-protos.sh DEST: the protobuf files tandem-csi loads at start, taken from their
# projects' own Go modules on the Go module proxy (never copied into this tree), each
# beside its project's LICENSE:
#   DEST/csi-spec-v1.13.0/csi.proto          github.com/container-storage-interface/spec
#   DEST/kubelet-v0.34.4/api.proto           k8s.io/kubelet's plugin registration API
#                                            (pkg/apis/pluginregistration/v1)
# Used by scripts/csi-setup.sh (DEST = the cache) and by the Dockerfile's `protos`
# stage (DEST = /protos, copied to /app/protos). Needs only the go command.
set -euo pipefail
dest=${1:?usage: fetch-protos.sh DEST}
# The spec version csi-test v5.6.0's go.mod requires (src/csi/proto.ts: CSI_SPEC_VERSION).
spec_version=v1.13.0
# The kubelet of the e2e cluster (test/e2e/build/versions.env); the API is v1 since 1.13.
kubelet_version=v0.34.4
work=$(mktemp -d)
trap 'chmod -R u+w "$work"; rm -rf "$work"' EXIT
export GOMODCACHE="$work/mod" GOFLAGS=-modcacherw GOTOOLCHAIN=local
dir_of() { (cd "$work" && go mod download -json "$1" | sed -n 's/^[[:space:]]*"Dir": "\(.*\)",$/\1/p'); }
if [[ ! -f "$dest/csi-spec-$spec_version/csi.proto" ]]; then
  d=$(dir_of "github.com/container-storage-interface/spec@$spec_version")
  mkdir -p "$dest/csi-spec-$spec_version.tmp"
  cp "$d/csi.proto" "$d/LICENSE" "$dest/csi-spec-$spec_version.tmp/"
  rm -rf "$dest/csi-spec-$spec_version" && mv "$dest/csi-spec-$spec_version.tmp" "$dest/csi-spec-$spec_version"
fi
if [[ ! -f "$dest/kubelet-$kubelet_version/api.proto" ]]; then
  d=$(dir_of "k8s.io/kubelet@$kubelet_version")
  mkdir -p "$dest/kubelet-$kubelet_version.tmp"
  cp "$d/pkg/apis/pluginregistration/v1/api.proto" "$d/LICENSE" "$dest/kubelet-$kubelet_version.tmp/"
  rm -rf "$dest/kubelet-$kubelet_version" && mv "$dest/kubelet-$kubelet_version.tmp" "$dest/kubelet-$kubelet_version"
fi
echo "CSI_PROTO=$dest/csi-spec-$spec_version/csi.proto"
echo "KUBELET_REGISTRATION_PROTO=$dest/kubelet-$kubelet_version/api.proto"
