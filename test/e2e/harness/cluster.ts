// The whole local cluster: up (idempotent), down (safe to repeat), and the node
// and API server operations the tests and the CLI share.
import { existsSync, readdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { join } from 'node:path';
import { build } from '../../../scripts/image/build.ts';
import {
  adminHttp,
  apiserverReady,
  ensureBinaries,
  restartApiserver,
  startApiserver,
  startControllerManager,
  startEtcd,
  startScheduler,
  stopControlPlane,
} from './control-plane.ts';
import type { KubeHttp } from './kube-http.ts';
import {
  destroyNodes,
  ensureBridge,
  ensureNode,
  healNode,
  type NodeImages,
  nodesOwner,
  partitionNode,
  readState,
  startNode,
  stopNode,
  waitNodesReady,
} from './nodes.ts';
import type { RuntimeStart } from './node-runtime.ts';
import { net, nodeNames, ports, repoRoot, state, stateDir } from './paths.ts';

export { restartApiserver };

function requireRoot(): void {
  if (process.getuid?.() !== 0)
    throw new Error('The local cluster needs root (network namespaces, loop devices, mounts)');
}

async function withAdmin<T>(fn: (http: KubeHttp) => Promise<T>): Promise<T> {
  const http = adminHttp();
  try {
    return await fn(http);
  } finally {
    http.close();
  }
}

const seconds = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
function describeStart(s: RuntimeStart): string {
  return `containerd ${seconds(s.containerdMs)}, images ${seconds(s.imagesMs)}, kubelet to Ready ${seconds(Date.now() - s.kubeletStartedAt!)}`;
}

/** The pause and tandem images (npm run image; about a second when nothing changed). */
async function nodeImages(log: (msg: string) => void): Promise<NodeImages> {
  const images = await build(repoRoot, ['pause', 'tandem'], log);
  return { pause: images.pause!, tandem: images.tandem! };
}

/**
 * Starts whatever is not running and returns when /readyz is ok and every node's
 * kubelet reports it Ready. With the cluster already up this only checks, in about a second.
 * `nodeCount` defaults to the nodes the cluster already has, else 2.
 */
export async function up(opts: { nodeCount?: number; log?: (msg: string) => void } = {}): Promise<void> {
  requireRoot();
  ensureBinaries();
  const log = opts.log ?? (() => {});
  await reclaimMachine(log);
  const known = Object.keys(readState().nodes).length;
  const names = nodeNames(opts.nodeCount ?? (known || 2));
  // A new cluster (no etcd data yet) starts new logs; `down` leaves the last ones for a post-mortem.
  if (!existsSync(state.etcdData)) rmSync(state.logs, { recursive: true, force: true });
  // The API server binds to the bridge's address, so the bridge comes first.
  ensureBridge();
  log('Starting etcd');
  await startEtcd();
  log('Starting kube-apiserver');
  await startApiserver();
  log('Starting kube-controller-manager');
  await startControllerManager();
  log('Starting kube-scheduler');
  await startScheduler();
  const images = await nodeImages(log);
  await withAdmin(async (http) => {
    const started = new Map<string, RuntimeStart>();
    for (const [index, name] of names.entries()) {
      log(`Starting node ${name} (containerd, kube-proxy, kubelet)`);
      started.set(name, await ensureNode(name, index, images));
    }
    for (const name of names) {
      await waitNodesReady(http, [name]);
      const s = started.get(name)!;
      if (s.kubeletStartedAt !== undefined) log(`Node ${name} is Ready (${describeStart(s)})`);
    }
  });
  log(`Cluster is up: KUBECONFIG=${state.kubeconfig}, nodes ${names.join(', ')}`);
}

/**
 * Nodes made from another state dir (say, a CI clone whose processes were killed
 * at the end of its run) are removed; a cluster of another state dir that is
 * still running is refused, since names, addresses and ports are per machine.
 */
async function reclaimMachine(log: (msg: string) => void): Promise<void> {
  const owner = nodesOwner();
  if (owner === undefined || owner === stateDir) return;
  if (await tcpOpen(net.hostIp, ports.apiserver)) {
    throw new Error(`A local cluster made from ${owner} is running (one per machine): run cluster:down there first`);
  }
  log(`Removing the nodes a cluster made from ${owner} left behind`);
  await destroyNodes();
}

function tcpOpen(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const s = connect({ host, port, timeout: 1000 });
    const done = (open: boolean) => {
      s.destroy();
      resolve(open);
    };
    s.on('connect', () => done(true));
    s.on('timeout', () => done(false));
    s.on('error', () => done(false));
  });
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
    case 'start': {
      const images = await nodeImages(() => {});
      return withAdmin(async (http) => {
        const s = await startNode(name, images);
        await waitNodesReady(http, [name]);
        if (s.kubeletStartedAt !== undefined) console.error(`[cluster] Node ${name} is Ready (${describeStart(s)})`);
      });
    }
    case 'heal':
      healNode(name);
      if (readState().nodes[name]?.stopped) return;
      return withAdmin((http) => waitNodesReady(http, [name]));
  }
}
