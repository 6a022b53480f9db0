// The kubelet's two heartbeats for a simulated node, and nothing else of the kubelet.
// It runs inside the node's network namespace, as system:node:NAME, so whatever
// cuts the node off (stop kills it, partition downs its link) silences it exactly
// as it would silence a kubelet, and kube-controller-manager reacts for real.
//
//   - The Lease kube-node-lease/NAME is renewed every interval (kubelet: 10 s).
//   - The Node's status (Ready and the pressure conditions, addresses, capacity)
//     is posted when the server's copy is not Ready=True or is older than 10 s,
//     which is also how a kubelet brings a node back after the controller marked
//     it Unknown.
//
// Usage: node heartbeat.ts NODE IP KUBECONFIG INTERVAL_SECONDS
import { cpus } from 'node:os';
import { setTimeout as sleep } from 'node:timers/promises';
import { KubeHttp, credentialsFromKubeconfig } from './kube-http.ts';

const [node, ip, kubeconfig, intervalText] = process.argv.slice(2);
if (!node || !ip || !kubeconfig || !intervalText) {
  console.error('usage: heartbeat.ts NODE IP KUBECONFIG INTERVAL_SECONDS');
  process.exit(2);
}
const intervalMs = Number(intervalText) * 1000;
const statusRefreshMs = 10_000;
const http = new KubeHttp(credentialsFromKubeconfig(kubeconfig));
const requestTimeoutMs = Math.max(1000, intervalMs - 500);

function log(msg: string, extra: Record<string, unknown> = {}): void {
  console.log(JSON.stringify({ time: new Date().toISOString(), node, msg, ...extra }));
}

// metav1.MicroTime is RFC 3339 with exactly six fractional digits.
const microTime = (d: Date) => d.toISOString().replace(/\.(\d{3})Z$/, '.$1000Z');

async function renewLease(now: Date): Promise<void> {
  const path = `/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases/${node}`;
  const spec = { holderIdentity: node, leaseDurationSeconds: 40, renewTime: microTime(now) };
  const r = await http.request('PATCH', path, {
    body: { spec },
    contentType: 'application/merge-patch+json',
    timeoutMs: requestTimeoutMs,
  });
  if (r.status === 404) {
    const c = await http.request('POST', '/apis/coordination.k8s.io/v1/namespaces/kube-node-lease/leases', {
      body: { apiVersion: 'coordination.k8s.io/v1', kind: 'Lease', metadata: { name: node }, spec },
      timeoutMs: requestTimeoutMs,
    });
    if (c.status >= 300) throw new Error(`Lease create answered ${c.status}: ${c.text}`);
  } else if (r.status >= 300) {
    throw new Error(`Lease renew answered ${r.status}: ${r.text}`);
  }
}

type NodeStatus = { status?: { conditions?: { type: string; status: string; lastHeartbeatTime?: string }[] } };

// lastTransitionTime moves only when the conditions change (they all change together here).
function statusPatch(now: Date, transition: boolean) {
  const t = now.toISOString().replace(/\.\d{3}Z$/, 'Z');
  const condition = (type: string, status: string, reason: string, message: string) => ({
    type,
    status,
    reason,
    message,
    lastHeartbeatTime: t,
    ...(transition ? { lastTransitionTime: t } : {}),
  });
  const resources = { cpu: String(cpus().length), memory: '4Gi', pods: '110', 'ephemeral-storage': '10Gi' };
  return {
    status: {
      conditions: [
        condition('Ready', 'True', 'KubeletReady', 'tandem e2e heartbeat is posting ready status'),
        condition('MemoryPressure', 'False', 'KubeletHasSufficientMemory', 'simulated node'),
        condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'simulated node'),
        condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'simulated node'),
      ],
      addresses: [
        { type: 'InternalIP', address: ip },
        { type: 'Hostname', address: node },
      ],
      capacity: resources,
      allocatable: resources,
      nodeInfo: {
        machineID: '',
        systemUUID: '',
        bootID: '',
        kernelVersion: '',
        osImage: 'tandem e2e simulated node',
        containerRuntimeVersion: '',
        kubeletVersion: 'tandem-e2e-heartbeat',
        kubeProxyVersion: '',
        operatingSystem: 'linux',
        architecture: process.arch === 'x64' ? 'amd64' : process.arch,
      },
    },
  };
}

let lastPosted = 0;

async function postStatusIfNeeded(now: Date): Promise<void> {
  const g = await http.request('GET', `/api/v1/nodes/${node}`, { timeoutMs: requestTimeoutMs });
  if (g.status !== 200) throw new Error(`Node get answered ${g.status}: ${g.text}`);
  const ready = (g.body as NodeStatus).status?.conditions?.find((c) => c.type === 'Ready');
  if (ready?.status === 'True' && now.getTime() - lastPosted < statusRefreshMs) return;
  // Conditions merge by type (strategic merge patch), as the kubelet's patches do.
  const p = await http.request('PATCH', `/api/v1/nodes/${node}/status`, {
    body: statusPatch(now, ready?.status !== 'True'),
    contentType: 'application/strategic-merge-patch+json',
    timeoutMs: requestTimeoutMs,
  });
  if (p.status >= 300) throw new Error(`Node status patch answered ${p.status}: ${p.text}`);
  if (ready?.status !== 'True') log('Posted Ready=True', { was: ready?.status ?? 'none' });
  lastPosted = now.getTime();
}

process.on('SIGTERM', () => process.exit(0));
log('Started heartbeat', { ip, intervalMs });
let failing = false;
for (;;) {
  const started = Date.now();
  try {
    await renewLease(new Date());
    await postStatusIfNeeded(new Date());
    if (failing) log('Reached the API server again');
    failing = false;
  } catch (err) {
    if (!failing) log('Failed to heartbeat', { err: String(err) });
    failing = true;
  }
  await sleep(Math.max(0, intervalMs - (Date.now() - started)));
}
