// The whole local cluster: up (idempotent), down (safe to repeat), and the node
// and API server operations the tests and the CLI share.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { adminHttp, apiserverReady, checkBinaries, restartApiserver, startApiserver, startControllerManager, startEtcd, stopControlPlane } from './control-plane.ts';
import type { KubeHttp } from './kube-http.ts';
import { destroyNodes, ensureBridge, ensureNode, healNode, partitionNode, readState, startNode, stopNode, waitNodesReady } from './nodes.ts';
import { nodeNames, state, stateDir } from './paths.ts';

export { restartApiserver };

function requireRoot(): void {
  if (process.getuid?.() !== 0) throw new Error('The local cluster needs root (network namespaces, loop devices, mounts)');
}

async function withAdmin<T>(fn: (http: KubeHttp) => Promise<T>): Promise<T> {
  const http = adminHttp();
  try {
    return await fn(http);
  } finally {
    http.close();
  }
}

/**
 * Starts whatever is not running and returns when /readyz is ok and every node
 * is Ready. With the cluster already up this only checks, in well under a second.
 * `nodeCount` defaults to the nodes the cluster already has, else 2.
 */
export async function up(opts: { nodeCount?: number; log?: (msg: string) => void } = {}): Promise<void> {
  requireRoot();
  checkBinaries();
  const log = opts.log ?? (() => {});
  const known = Object.keys(readState().nodes).length;
  const names = nodeNames(opts.nodeCount ?? (known || 2));
  // The API server binds to the bridge's address, so the bridge comes first.
  ensureBridge();
  log('Starting etcd');
  await startEtcd();
  log('Starting kube-apiserver');
  await startApiserver();
  log('Starting kube-controller-manager');
  await startControllerManager();
  await withAdmin(async (http) => {
    for (const [index, name] of names.entries()) {
      log(`Starting node ${name}`);
      await ensureNode(http, name, index);
    }
    await waitNodesReady(http, names);
  });
  log(`Cluster is up: KUBECONFIG=${state.kubeconfig}, nodes ${names.join(', ')}`);
}

/** Stops every process and removes namespaces, mounts, loop devices and state. Logs stay. */
export async function down(): Promise<void> {
  requireRoot();
  // The API server goes first: it binds to the bridge's address, and with the bridge
  // gone its shutdown hangs on requests to itself until the shutdown timeout.
  await stopControlPlane();
  await destroyNodes();
  if (existsSync(stateDir)) {
    for (const entry of readdirSync(stateDir)) {
      if (join(stateDir, entry) !== state.logs) rmSync(join(stateDir, entry), { recursive: true, force: true });
    }
  }
}

export async function isUp(): Promise<boolean> {
  if (!existsSync(state.kubeconfig)) return false;
  return withAdmin((http) => apiserverReady(http));
}

export type NodeAction = 'stop' | 'start' | 'partition' | 'heal';

/** stop/start/partition/heal; start and heal return when the node is Ready again. */
export async function nodeAction(action: NodeAction, name: string): Promise<void> {
  requireRoot();
  switch (action) {
    case 'stop':
      return stopNode(name);
    case 'partition':
      return partitionNode(name);
    case 'start':
      return withAdmin(async (http) => {
        await startNode(http, name);
        await waitNodesReady(http, [name]);
      });
    case 'heal':
      healNode(name);
      if (readState().nodes[name]?.stopped) return;
      return withAdmin((http) => waitNodesReady(http, [name]));
  }
}
