#!/usr/bin/env bash
# npm run lab:cluster — the whole product on the local control plane, as a user
# would run it on a real cluster: cluster up, helm install + controller and agents
# (npm run cluster:deploy), kubectl apply -f examples/mysql-volume.yaml, then
# `kubectl get rv` until the volume is Ready. Needs root (namespaces, loop devices).
set -euo pipefail
cd "$(dirname "$0")/.."
. scripts/ensure-deps.sh
bash scripts/e2e-setup.sh >/dev/null
node test/e2e/harness/cli.ts up
node scripts/cluster-deploy.ts deploy
export KUBECONFIG=$PWD/.cluster/kubeconfig
kubectl=$(node -e 'import("./test/e2e/harness/paths.ts").then((m) => console.log(m.bin.kubectl))')
"$kubectl" apply -f examples/mysql-volume.yaml
for _ in $(seq 1 90); do
  "$kubectl" get rv mysql --no-headers
  "$kubectl" get rv mysql -o jsonpath='{.status.conditions[?(@.type=="Ready")].status}' | grep -q True && break
  sleep 2
done
"$kubectl" get rv,rvr
echo
echo "The volume is mounted on the Primary:  npm run cluster:exec -- master -- findmnt /mydata/mysql"
echo "Move the Primary (tutorial §11):       $kubectl patch rv mysql --type=merge -p '{\"spec\":{\"primary\":\"backup\"}}'"
echo "Watch it:                              KUBECONFIG=$KUBECONFIG $kubectl get rv -w"
echo "Stop: npm run cluster:undeploy && npm run cluster:down"
