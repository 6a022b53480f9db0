// tandem-controller: the Deployment that reconciles ReplicatedVolumes.
//
//   tandem-controller [--metrics-port 8080] [--workers 4] [--lease-seconds 15] [--no-leader-elect]
//   env: KUBECONFIG (else in-cluster), POD_NAMESPACE (the Lease's namespace), POD_NAME (identity)
//
// Informers fill caches and enqueue keys; once this process holds the Lease,
// workers take keys from the queue and reconcile. SIGTERM: stop taking keys,
// finish the ones in hand, hand the Lease back, exit.
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { DEFAULT_OPERATOR_NAMESPACE, KINDS } from '../api/names.ts';
import { controllerMetrics } from './metrics.ts';
import { startHealthServer } from '../runtime/http.ts';
import { type CacheFactory, SupervisedInformer } from '../runtime/informer.ts';
import { collectionPath, listCustom } from '../runtime/kube.ts';
import { shareConnections } from '../runtime/kube-config.ts';
import { LeaderElector } from '../runtime/leader-election.ts';
import { Controller } from './controller.ts';
import { KubeVolumeApi } from './volume-api.ts';
import { KubeWorkloadApi } from './workload-api.ts';

/** The Lease's duration: whole seconds, long enough for a few renewals (every 2 s). */
function leaseSeconds(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 6 || n > 300)
    throw new Error(`--lease-seconds ${v}: give whole seconds from 6 to 300 (it is renewed every 2 s)`);
  return n;
}

function flag(argv: string[], name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}

export async function main(argv: string[]): Promise<void> {
  const log = pino({ base: { component: 'controller' }, level: process.env.LOG_LEVEL ?? 'info' });
  // For process supervisors outside Kubernetes (npm run cluster:deploy).
  if (process.env.TANDEM_PID_FILE) writeFileSync(process.env.TANDEM_PID_FILE, `${process.pid}\n`);
  const kc = shareConnections(new k8s.KubeConfig());
  kc.loadFromDefault();
  const metrics = controllerMetrics();
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const core = kc.makeApiClient(k8s.CoreV1Api);
  const coordination = kc.makeApiClient(k8s.CoordinationV1Api);
  const informer =
    <T extends k8s.KubernetesObject>(path: string, list: () => Promise<k8s.KubernetesListObject<T>>): CacheFactory<T> =>
    (handlers) =>
      new SupervisedInformer<T>({ kc, log, path, list, ...handlers });
  // The controller's namespace: its Lease and every volume's peer Secret live here.
  const namespace = process.env.POD_NAMESPACE ?? DEFAULT_OPERATOR_NAMESPACE;
  const controller = new Controller({
    api: new KubeVolumeApi(kc, namespace),
    workload: new KubeWorkloadApi(kc),
    log,
    metrics,
    volumes: informer(collectionPath(KINDS.volume.plural), listCustom(custom, KINDS.volume.plural)),
    replicas: informer(collectionPath(KINDS.replica.plural), listCustom(custom, KINDS.replica.plural)),
    nodes: informer('/api/v1/nodes', () => core.listNode()),
    pools: informer(collectionPath(KINDS.pool.plural), listCustom(custom, KINDS.pool.plural)),
    leases: informer(`/apis/coordination.k8s.io/v1/namespaces/${namespace}/leases`, () =>
      coordination.listNamespacedLease({ namespace }),
    ),
  });
  const identity = process.env.POD_NAME ?? `${hostname()}-${process.pid}`;
  const elector = argv.includes('--no-leader-elect')
    ? undefined
    : new LeaderElector({
        kc,
        log,
        namespace,
        name: 'tandem-controller',
        identity,
        leaseDurationSeconds: leaseSeconds(flag(argv, '--lease-seconds', '15')),
      });
  const server = await startHealthServer({
    port: Number(flag(argv, '--metrics-port', '8080')),
    registry: metrics.registry,
    ready: () => controller.synced,
  });
  log.info({ port: server.port, identity, namespace }, 'Serving /healthz /readyz /metrics');

  let stopping = false;
  const stop = async (why: string, code: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'Shutting down');
    await controller.stopWorkers(10_000);
    await elector?.release();
    await controller.stopCaches();
    await server.close();
    log.info('Stopped');
    process.exit(code);
  };
  process.on('SIGTERM', () => void stop('SIGTERM', 0));
  process.on('SIGINT', () => void stop('SIGINT', 0));

  await controller.startCaches();
  if (elector) await elector.run(() => void stop('lost leadership', 1));
  if (stopping) return;
  log.info('Starting workers');
  controller.startWorkers(Number(flag(argv, '--workers', '4')));
}
