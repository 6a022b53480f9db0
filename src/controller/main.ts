// tandem-controller: the Deployment that reconciles ReplicatedVolumes.
//
//   tandem-controller [--metrics-port 8080] [--workers 4] [--lease-seconds 15] [--no-leader-elect]
//   env: KUBECONFIG (else in-cluster), POD_NAMESPACE (the Lease's namespace), POD_NAME (identity)
//
// Informers fill caches and enqueue keys; once this process holds the Lease,
// workers take keys from the queue and reconcile. SIGTERM: stop renewing the Lease and
// taking keys, finish the ones in hand, hand the Lease back, exit.
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
  const leaseDurationSeconds = leaseSeconds(flag(argv, '--lease-seconds', '15'));
  const elector = argv.includes('--no-leader-elect')
    ? undefined
    : new LeaderElector({
        kc,
        log,
        namespace,
        name: 'tandem-controller',
        identity,
        leaseDurationSeconds,
      });
  const server = await startHealthServer({
    port: Number(flag(argv, '--metrics-port', '8080')),
    registry: metrics.registry,
    ready: () => controller.synced,
  });
  log.info({ port: server.port, identity, namespace }, 'Serving /healthz /readyz /metrics');

  // Shutting down: renew the Lease no more, let the reconciles in hand finish within a
  // third of the Lease (it stays valid at least two thirds of it after the last renewal,
  // so they end while it is still ours), then hand it back so a standby takes over at
  // once. Workers still busy then: exit without handing it back, so nothing of ours can
  // act after a standby leads; it takes over when the Lease expires.
  const graceMs = (leaseDurationSeconds * 1000) / 3;
  let stopping = false;
  const stop = async (why: string, code: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'Shutting down');
    // Whatever hangs below, the process ends (the kubelet would SIGKILL it later).
    setTimeout(() => process.exit(code), graceMs + 5_000);
    elector?.stopRenewing();
    const idle = await controller.stopWorkers(graceMs);
    if (!idle) log.warn({ waitedMs: graceMs }, 'Reconciles still running; leaving the Lease to expire');
    else await elector?.release();
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
