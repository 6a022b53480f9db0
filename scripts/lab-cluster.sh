#!/usr/bin/env bash
# npm run lab:cluster — the whole product on the local cluster, as a user runs it on
# a real one: nodes with real kubelets and containerd (cluster:up), the tandem image
# built here and loaded into every node (npm run image), `helm install` with only the
# image values changed, `kubectl apply -f examples/mysql-volume.yaml`, then
# `kubectl get rv` until the volume is Ready. Needs root (namespaces, loop devices).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
bash scripts/e2e-setup.sh >/dev/null
node test/e2e/harness/cli.ts up
export KUBECONFIG=$PWD/.cluster/kubeconfig
kubectl=$(node -e 'import("./test/e2e/harness/paths.ts").then((m) => console.log(m.bin.kubectl))')
helm=$(node -e 'import("./test/e2e/harness/paths.ts").then((m) => console.log(m.bin.helm))')
# The image cluster:up loaded into the nodes (a second when nothing changed), and the CSI
# sidecars built from their Go modules (registry.k8s.io is not reachable from the lab).
images=$(node scripts/image.ts tandem csi-sidecars --import)
ref=$(awk '$1 == "tandem" { print $2 }' <<<"$images")
sidecars=$(awk '$1 == "csi-sidecars" { print $2 }' <<<"$images")
node scripts/cluster-deploy.ts undeploy >/dev/null 2>&1 || true # the host-process shortcut, if it ran
"$helm" upgrade --install tandem helm/tandem --namespace tandem-system --create-namespace --reset-values \
  --set image.repository="${ref%:*}" --set image.tag="${ref##*:}" \
  --set csi.provisioner.image="$sidecars" --set csi.attacher.image="$sidecars" --wait --timeout 5m
"$kubectl" get pods -n tandem-system -o wide
"$kubectl" apply -f examples/storage-pool.yaml      # the administrator grants the disks
"$kubectl" apply -f examples/mysql-volume.yaml
for _ in $(seq 1 90); do
  "$kubectl" get rv mysql --no-headers
  "$kubectl" get rv mysql -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -q True && break
  sleep 2
done
"$kubectl" get rv,rvr
echo
echo "The volume is mounted on the Primary:  npm run cluster:exec -- master -- findmnt /mydata/mysql"
echo "The agent's engine, inside its pod:    $kubectl exec -n tandem-system ds/tandem-node-agent -- ls /run/tandem"
echo "Move the Primary (tutorial §11):       $kubectl patch rv mysql --type=merge -p '{\"spec\":{\"primary\":\"backup\"}}'"
echo "Watch it:                              KUBECONFIG=$KUBECONFIG $kubectl get rv -w"
echo "Lose a node whole (a power cut):       npm run cluster:node -- stop master"
echo "Stop: $kubectl delete rv mysql && npm run cluster:down"
