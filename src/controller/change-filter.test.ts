import type * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { Controller } from './controller.ts';
import { nodeFingerprint, replicaFingerprint } from './change-filter.ts';
import { staleInMs } from './reconciler.ts';
import type { CacheFactory } from '../runtime/informer.ts';
import type { VolumeApi } from './volume-api.ts';
import type { ReplicatedVolumeReplica } from '../api/replicated-volume-replica.ts';

const replica = (status: Record<string, unknown>, spec: Record<string, unknown> = { role: 'Secondary', epoch: 1 }) => ({
  apiVersion: 'tandem.dev/v1alpha1',
  kind: 'ReplicatedVolumeReplica',
  metadata: {
    name: 'db-b',
    namespace: 'ns',
    generation: 2,
    resourceVersion: String(Math.random()),
    labels: { 'tandem.dev/volume': 'db', 'tandem.dev/node': 'b' },
  },
  spec,
  status,
});

const beat = (t: string) => ({
  role: 'Secondary',
  connectionState: 'Connected',
  diskState: 'UpToDate',
  counters: { dw: Number(t.slice(-2)) * 4096 },
  lastHeartbeatTime: t,
});

const node = (
  ready: string,
  heartbeat: string,
  since = '2026-12-07T10:00:00Z',
  taints: k8s.V1Taint[] = [],
): k8s.V1Node => ({
  metadata: { name: 'b', resourceVersion: heartbeat },
  spec: { taints },
  status: {
    addresses: [{ type: 'InternalIP', address: '10.0.0.2' }],
    conditions: [
      {
        type: 'Ready',
        status: ready,
        reason: 'KubeletReady',
        lastHeartbeatTime: new Date(heartbeat),
        lastTransitionTime: new Date(since),
      },
    ],
  },
});

describe('fingerprints leave heartbeats out', () => {
  test('a replica heartbeat (new time, new counters) is no change; a new state or order is', () => {
    const a = replicaFingerprint(replica(beat('2026-12-07T10:00:05.001Z')));
    expect(replicaFingerprint(replica(beat('2026-12-07T10:00:10.002Z')))).toBe(a);
    expect(replicaFingerprint(replica({ ...beat('2026-12-07T10:00:10Z'), connectionState: 'WFConnection' }))).not.toBe(
      a,
    );
    expect(replicaFingerprint(replica(beat('2026-12-07T10:00:10Z'), { role: 'Primary', epoch: 2 }))).not.toBe(a);
  });

  test("a Node's status heartbeat is no change; Ready, its transition time, and taints are", () => {
    const a = nodeFingerprint(node('True', '2026-12-07T10:00:00Z'));
    expect(nodeFingerprint(node('True', '2026-12-07T10:05:00Z'))).toBe(a);
    expect(nodeFingerprint(node('Unknown', '2026-12-07T10:05:00Z', '2026-12-07T10:05:00Z'))).not.toBe(a);
    expect(
      nodeFingerprint(
        node('True', '2026-12-07T10:05:00Z', undefined, [
          { key: 'node.kubernetes.io/unreachable', effect: 'NoSchedule' },
        ]),
      ),
    ).not.toBe(a);
  });
});

/** A cache the test fills by hand; every put or delete is reported as the informer would. */
function handCache<T extends k8s.KubernetesObject>() {
  const objects = new Map<string, T>();
  let onChange: (o: T) => void = () => {};
  const key = (name: string, ns?: string) => `${ns ?? ''}/${name}`;
  const factory: CacheFactory<T> = (h) => {
    onChange = h.onChange;
    return {
      list: () => [...objects.values()],
      get: (name, ns) => objects.get(key(name, ns)),
      synced: true,
      start: async () => {},
      stop: async () => {},
    };
  };
  return {
    factory,
    put(o: T) {
      objects.set(key(o.metadata?.name ?? '', o.metadata?.namespace), o);
      onChange(o);
    },
    remove(o: T) {
      objects.delete(key(o.metadata?.name ?? '', o.metadata?.namespace));
      onChange(o);
    },
  };
}

describe('the Controller enqueues a volume for changes, not for heartbeats', () => {
  const setup = () => {
    const volumes = handCache<k8s.KubernetesObject>();
    const replicas = handCache<k8s.KubernetesObject>();
    const nodes = handCache<k8s.V1Node>();
    const pools = handCache<k8s.KubernetesObject>();
    const leases = handCache<k8s.KubernetesObject>();
    const c = new Controller({
      // No worker runs here: the reconciler and its API are never called.
      api: {} as VolumeApi,
      log: pino({ level: 'silent' }),
      volumes: volumes.factory,
      replicas: replicas.factory,
      nodes: nodes.factory,
      pools: pools.factory,
      leases: leases.factory,
    });
    volumes.put({
      metadata: { name: 'db', namespace: 'ns' },
      spec: { replicas: [{ node: 'a' }, { node: 'b' }] },
    } as never);
    const drain = async () => {
      const keys: string[] = [];
      while (c.queue.length > 0) {
        const k = (await c.queue.get())!;
        keys.push(k);
        c.queue.done(k);
      }
      return keys;
    };
    return { replicas, nodes, leases, drain };
  };

  test("an agent's Lease renewals enqueue nothing (the reconcile rechecks on its own clock)", async () => {
    const { leases, drain } = setup();
    await drain();
    for (const t of ['2026-12-07T10:00:00Z', '2026-12-07T10:00:05Z'])
      leases.put({ metadata: { name: 'tandem-agent-a', namespace: 'tandem-system' }, spec: { renewTime: t } } as never);
    expect(await drain()).toEqual([]);
  });

  test('replica heartbeats: only the first report and real changes', async () => {
    const { replicas, drain } = setup();
    await drain();
    replicas.put(replica(beat('2026-12-07T10:00:05Z')) as never);
    expect(await drain()).toEqual(['ns/db']);
    replicas.put(replica(beat('2026-12-07T10:00:10Z')) as never);
    replicas.put(replica(beat('2026-12-07T10:00:15Z')) as never);
    expect(await drain()).toEqual([]);
    replicas.put(replica({ ...beat('2026-12-07T10:00:16Z'), connectionState: 'WFConnection' }) as never);
    expect(await drain()).toEqual(['ns/db']);
    replicas.remove(replica(beat('2026-12-07T10:00:16Z')) as never);
    expect(await drain()).toEqual(['ns/db']);
  });

  test("Node status heartbeats: only Ready's changes enqueue the node's volumes", async () => {
    const { nodes, drain } = setup();
    await drain();
    nodes.put(node('True', '2026-12-07T10:00:00Z'));
    expect(await drain()).toEqual(['ns/db']);
    nodes.put(node('True', '2026-12-07T10:05:00Z'));
    nodes.put(node('True', '2026-12-07T10:10:00Z'));
    expect(await drain()).toEqual([]);
    nodes.put(node('Unknown', '2026-12-07T10:10:40Z', '2026-12-07T10:10:40Z'));
    expect(await drain()).toEqual(['ns/db']);
  });
});

test('staleInMs: when the first heartbeat goes stale (30 s), a moment after', () => {
  const now = new Date('2026-12-07T10:00:30Z');
  const r = (t?: string, node = 'a') =>
    ({ spec: { node }, status: t ? { lastHeartbeatTime: t } : {} }) as ReplicatedVolumeReplica;
  expect(staleInMs([r('2026-12-07T10:00:28Z'), r('2026-12-07T10:00:25Z')], now)).toBe(25_250);
  expect(staleInMs([r('2026-11-07T10:00:00Z'), r()], now)).toBe(Infinity);
  // The agent's Lease renewal is its sign of life: a report a minute old is not silence.
  expect(staleInMs([r('2026-12-07T09:59:30Z')], now, { a: '2026-12-07T10:00:29Z' })).toBe(29_250);
  // A replica's report older than REPORT_STALE_MS is silence whatever the Lease says.
  expect(staleInMs([r('2026-12-07T09:57:00Z')], now, { a: '2026-12-07T10:00:29Z' })).toBe(Infinity);
});
