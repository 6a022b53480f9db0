// tandem-controller: the Deployment that reconciles ReplicatedVolumes.
//
//   tandem-controller [--metrics-port 8080] [--workers 4] [--no-leader-elect]
//   env: KUBECONFIG (else in-cluster), POD_NAMESPACE (the Lease's namespace), POD_NAME (identity)
//
// Informers fill caches and enqueue keys; once this process holds the Lease,
// workers take keys from the queue and reconcile. SIGTERM: stop taking keys,
// finish the ones in hand, hand the Lease back, exit.
import { writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import * as k8s from '@kubernetes/client-node';
import pino from 'pino';
import { KINDS, LABELS } from '../api/names.ts';
import { controllerMetrics } from './metrics.ts';
import { VolumeReconciler } from './reconciler.ts';
import { TerminalError } from './runtime/errors.ts';
import { startHealthServer } from './runtime/http.ts';
import { SupervisedInformer } from './runtime/informer.ts';
import { collectionPath, describeError, isConflict, listCustom } from './runtime/kube.ts';
import { LeaderElector } from './runtime/leader-election.ts';
import { WorkQueue } from './runtime/work-queue.ts';

function flag(argv: string[], name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}

export async function main(argv: string[]): Promise<void> {
  const log = pino({ base: { component: 'controller' }, level: process.env.LOG_LEVEL ?? 'info' });
  // For process supervisors outside Kubernetes (npm run cluster:deploy).
  if (process.env.TANDEM_PID_FILE) writeFileSync(process.env.TANDEM_PID_FILE, `${process.pid}\n`);
  const kc = new k8s.KubeConfig();
  kc.loadFromDefault();
  const metrics = controllerMetrics();
  const queue = new WorkQueue();
  const custom = kc.makeApiClient(k8s.CustomObjectsApi);
  const core = kc.makeApiClient(k8s.CoreV1Api);

  const volumes: SupervisedInformer<k8s.KubernetesObject> = new SupervisedInformer({
    kc,
    log,
    path: collectionPath(KINDS.volume.plural),
    list: listCustom(custom, KINDS.volume.plural),
    onChange: (o) => queue.add(`${o.metadata?.namespace}/${o.metadata?.name}`),
    onResync: () => {
      for (const o of volumes.list()) queue.add(`${o.metadata?.namespace}/${o.metadata?.name}`);
    },
  });
  const replicas = new SupervisedInformer<k8s.KubernetesObject>({
    kc,
    log,
    path: collectionPath(KINDS.replica.plural),
    list: listCustom(custom, KINDS.replica.plural),
    onChange: (o) => {
      const v = o.metadata?.labels?.[LABELS.volume];
      if (v) queue.add(`${o.metadata?.namespace}/${v}`);
    },
  });
  const nodes = new SupervisedInformer<k8s.V1Node>({
    kc,
    log,
    path: '/api/v1/nodes',
    list: () => core.listNode(),
    onChange: (n) => {
      for (const o of volumes.list()) {
        const spec = (o as { spec?: { replicas?: { node?: string }[] } }).spec;
        if (spec?.replicas?.some((r) => r.node === n.metadata?.name))
          queue.add(`${o.metadata?.namespace}/${o.metadata?.name}`);
      }
    },
  });
  const informers = [volumes, replicas, nodes];
  const reconciler = new VolumeReconciler({ kc, log, metrics, caches: { volumes, replicas, nodes } });

  const namespace = process.env.POD_NAMESPACE ?? 'tandem-system';
  const identity = process.env.POD_NAME ?? `${hostname()}-${process.pid}`;
  const elector = argv.includes('--no-leader-elect')
    ? undefined
    : new LeaderElector({ kc, log, namespace, name: 'tandem-controller', identity });
  const server = await startHealthServer({
    port: Number(flag(argv, '--metrics-port', '8080')),
    registry: metrics.registry,
    ready: () => informers.every((i) => i.synced),
  });
  log.info({ port: server.port, identity, namespace }, 'Serving /healthz /readyz /metrics');

  const workers: Promise<void>[] = [];
  let stopping = false;
  const stop = async (why: string, code: number): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'Shutting down');
    queue.shutDown();
    await Promise.race([Promise.all(workers), new Promise((r) => setTimeout(r, 10_000))]);
    await elector?.release();
    await Promise.all(informers.map((i) => i.stop()));
    await server.close();
    log.info('Stopped');
    process.exit(code);
  };
  process.on('SIGTERM', () => void stop('SIGTERM', 0));
  process.on('SIGINT', () => void stop('SIGINT', 0));

  await Promise.all(informers.map((i) => i.start()));
  if (elector) await elector.run(() => void stop('lost leadership', 1));
  if (stopping) return;
  log.info('Starting workers');
  const count = Number(flag(argv, '--workers', '4'));
  for (let w = 0; w < count; w++) workers.push(worker());
  for (const o of volumes.list()) queue.add(`${o.metadata?.namespace}/${o.metadata?.name}`);

  async function worker(): Promise<void> {
    for (let key = await queue.get(); key !== undefined; key = await queue.get()) {
      const end = metrics.reconcileSeconds.startTimer();
      try {
        const r = await reconciler.reconcile(key);
        queue.forget(key);
        metrics.reconciles.inc({ result: 'success' });
        if (r.requeueAfterMs) queue.addAfter(key, r.requeueAfterMs);
      } catch (err) {
        metrics.reconcileErrors.inc();
        if (err instanceof TerminalError) {
          metrics.reconciles.inc({ result: 'terminal' });
          queue.forget(key);
          log.error({ rv: key, reason: err.reason, error: err.message }, 'Reconcile failed; waiting for a change');
        } else if (isConflict(err)) {
          metrics.reconciles.inc({ result: 'conflict' });
          queue.addRateLimited(key);
          log.debug({ rv: key }, 'Conflict; requeued');
        } else {
          metrics.reconciles.inc({ result: 'error' });
          const delay = queue.addRateLimited(key);
          log.warn({ rv: key, error: describeError(err), delayMs: delay }, 'Reconcile failed; retrying');
        }
      } finally {
        end();
        queue.done(key);
      }
    }
  }
}
