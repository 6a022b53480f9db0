// Where the local control plane keeps its things, and the network plan of the
// simulated nodes. One place, read by the harness CLI, the node runtime and the tests.
//
//   ${TANDEM_CACHE:-~/.cache/tandem}/         built binaries (scripts/e2e-setup.sh), outside git
//   .cluster/                                 per-cluster state in the work tree (git-ignored):
//     kubeconfig                              admin (system:masters)
//     pki/ etcd/ logs/ run/*.pid state.json
//     nodes/NAME/{sdb1.img,sdb2.img,kubeconfig,etc-tandem/}
//   /run/tandem-e2e/NAME/{mnt,uts}            namespace handles (a private bind mount, never
//                                             inside the work tree so `rm -rf` can't walk a mount)
//   netns tandem-e2e-NAME, bridge tandem-br0  10.77.0.0/24, host 10.77.0.1
import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = resolve(dirname(fileURLToPath(import.meta.url)), '../../..');
export const stateDir = process.env.TANDEM_CLUSTER_DIR ?? join(repoRoot, '.cluster');
export const nsRoot = '/run/tandem-e2e';

function readVersions(): Record<string, string> {
  const text = readFileSync(join(repoRoot, 'test/e2e/build/versions.env'), 'utf8');
  const out: Record<string, string> = {};
  for (const line of text.split('\n')) {
    const m = /^([A-Z_]+)=(.*)$/.exec(line.trim());
    if (m) out[m[1]!] = m[2]!;
  }
  return out;
}
const versions = readVersions();
export const kubernetesVersion = versions.KUBERNETES_VERSION!;
const cacheDir = process.env.TANDEM_CACHE ?? join(homedir(), '.cache/tandem');
// scripts/e2e-setup.sh names the directory after the hash of the build inputs.
const buildDir = join(repoRoot, 'test/e2e/build');
const inputsHash = createHash('sha256')
  .update(Buffer.concat(['go.mod', 'go.sum', 'tools.go', 'etcd/main.go'].map((f) => readFileSync(join(buildDir, f)))))
  .digest('hex')
  .slice(0, 16);
const k8sBin = join(cacheDir, `k8s-${kubernetesVersion}`, `bin-${inputsHash}`);
const toolsDir = join(cacheDir, `kubectl-layer-v33-${versions.KUBECTL_LAYER_VERSION}`);

export const bin = {
  etcd: join(k8sBin, 'etcd'),
  kubeApiserver: join(k8sBin, 'kube-apiserver'),
  kubeControllerManager: join(k8sBin, 'kube-controller-manager'),
  kubeScheduler: join(k8sBin, 'kube-scheduler'),
  kubelet: join(k8sBin, 'kubelet'),
  kubeProxy: join(k8sBin, 'kube-proxy'),
  kubectl: process.env.TANDEM_KUBECTL ?? join(toolsDir, 'kubectl'),
  helm: process.env.TANDEM_HELM ?? join(toolsDir, 'helm'),
} as const;

export const state = {
  kubeconfig: join(stateDir, 'kubeconfig'),
  pki: join(stateDir, 'pki'),
  etcdData: join(stateDir, 'etcd'),
  logs: join(stateDir, 'logs'),
  run: join(stateDir, 'run'),
  file: join(stateDir, 'state.json'),
  node: (name: string) => join(stateDir, 'nodes', name),
} as const;

// Network plan. The API server listens on the bridge's host address, which is
// reachable from the host and from every node namespace, and from nowhere else.
export const net = {
  bridge: 'tandem-br0',
  prefixLength: 24,
  hostIp: '10.77.0.1',
  nodeIp: (index: number) => `10.77.0.${11 + index}`,
  serviceCidr: '10.96.0.0/24',
  serviceIp: '10.96.0.1',
} as const;

export const ports = { apiserver: 6443, etcdClient: 23790, etcdPeer: 23800 } as const;
export const apiserverUrl = `https://${net.hostIp}:${ports.apiserver}`;

// Node lifecycle timing: each kubelet renews its Lease every 2 s, kube-controller-manager
// checks every second and gives up on a node after 8 s without a renewal.
export const timing = { heartbeatSeconds: 2, nodeMonitorPeriodSeconds: 1, nodeMonitorGraceSeconds: 8 } as const;

// The tutorial's hosts first; `--nodes 3` adds node-3, and so on.
export function nodeNames(count: number): string[] {
  const names = ['master', 'backup'];
  for (let i = 3; i <= count; i++) names.push(`node-${i}`);
  return names.slice(0, Math.max(count, 1));
}

export const nodeNs = {
  netns: (name: string) => `tandem-e2e-${name}`,
  netnsPath: (name: string) => `/run/netns/tandem-e2e-${name}`,
  hostVeth: (name: string) => `tdm-${name}`, // IFNAMSIZ: node names up to 11 characters
  dir: (name: string) => join(nsRoot, name),
  mnt: (name: string) => join(nsRoot, name, 'mnt'),
  uts: (name: string) => join(nsRoot, name, 'uts'),
} as const;

// The tutorial's disk layout, scaled down: /dev/sdb1 for data, /dev/sdb2 for external metadata.
export const nodeDisks = [
  { dev: 'sdb1', bytes: 1024 * 1024 * 1024 },
  { dev: 'sdb2', bytes: 256 * 1024 * 1024 },
] as const;
