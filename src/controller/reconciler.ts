// Reconcile one ReplicatedVolume. Level-based: read the world from the caches,
// decide with pure functions (decisions/), act, write status once. The spine:
//
//   finalizer → placement → port + peer Secret → roles → replicas → status
//
// Deletion: replicas are told engine=Down (demote, `down`, wipe nothing); once
// every reachable agent reports its engine gone, the finalizer is removed and
// the garbage collector takes the replicas and the Secret (owner references).
import { randomBytes } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import {
  ANNOTATIONS,
  API_VERSION,
  FIELD_MANAGERS,
  FINALIZER,
  KINDS,
  LABELS,
  PORT_RANGE,
  SECRET_KEY,
  peerSecretName,
  replicaName,
} from '../api/names.ts';
import { ReplicatedVolume, type ReplicatedVolumeStatus } from '../api/replicated-volume.ts';
import { ReplicatedVolumeReplica, type ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import { allocatePort, decidePlacement, type NodeView, type Placement } from './decisions/placement.ts';
import { decideEngineState, desiredReplicaSpecs } from './decisions/replicas.ts';
import { decideRoles, type RolesDecision } from './decisions/roles.ts';
import { aggregateStatus, canonicalJson, eventsBetween, sameStatus } from './decisions/status.ts';
import type { ControllerMetrics } from './metrics.ts';
import { TerminalError } from './runtime/errors.ts';
import { isNotFound, mergePatch, recordEvent, replicaApi, volumeApi } from './runtime/kube.ts';

export interface Caches {
  volumes: {
    list(): readonly k8s.KubernetesObject[];
    get(name: string, namespace?: string): k8s.KubernetesObject | undefined;
  };
  replicas: { list(namespace?: string): readonly k8s.KubernetesObject[] };
  nodes: { list(): readonly k8s.V1Node[] };
}

export type ReconcileResult = { requeueAfterMs?: number };

export function nodeView(n: k8s.V1Node): NodeView {
  const ready = n.status?.conditions?.find((c) => c.type === 'Ready');
  return {
    name: n.metadata?.name ?? '',
    ready: ready?.status === 'True',
    readySince: ready?.lastTransitionTime ? new Date(ready.lastTransitionTime) : undefined,
    unschedulable: n.spec?.unschedulable === true,
    internalIP: n.status?.addresses?.find((a) => a.type === 'InternalIP')?.address,
  };
}

export class VolumeReconciler {
  readonly #custom: k8s.CustomObjectsApi;
  readonly #core: k8s.CoreV1Api;
  readonly #objects: k8s.KubernetesObjectApi;
  readonly #caches: Caches;
  readonly #log: Logger;
  readonly #metrics: ControllerMetrics;
  readonly #now: () => Date;
  /** Ports handed out but maybe not yet seen in the cache (several workers). */
  readonly #reservedPorts = new Map<number, string>();

  constructor(o: { kc: k8s.KubeConfig; caches: Caches; log: Logger; metrics: ControllerMetrics; now?: () => Date }) {
    this.#custom = o.kc.makeApiClient(k8s.CustomObjectsApi);
    this.#core = o.kc.makeApiClient(k8s.CoreV1Api);
    this.#objects = k8s.KubernetesObjectApi.makeApiClient(o.kc);
    this.#caches = o.caches;
    this.#log = o.log;
    this.#metrics = o.metrics;
    this.#now = o.now ?? (() => new Date());
  }

  async reconcile(key: string): Promise<ReconcileResult> {
    const [namespace, name] = key.split('/') as [string, string];
    const raw = this.#caches.volumes.get(name, namespace);
    if (!raw) {
      this.#metrics.observe(namespace, name, undefined);
      return {};
    }
    const parsed = ReplicatedVolume.safeParse(raw);
    if (!parsed.success) throw new TerminalError('InvalidSpec', `${key}: ${parsed.error.message}`);
    let rv = parsed.data;
    const log = this.#log.child({ rv: key });
    const now = this.#now();
    const nodes = new Map(this.#caches.nodes.list().map((n) => [n.metadata?.name ?? '', nodeView(n)]));
    const replicas = this.#replicasOf(rv);
    const deleting = rv.metadata.deletionTimestamp !== undefined;

    if (deleting && !rv.metadata.finalizers?.includes(FINALIZER)) return {};
    if (!deleting) rv = await this.#ensureFinalizer(rv, log);

    const placement = decidePlacement(rv.spec.replicas, nodes, replicas.size > 0);
    let roles: RolesDecision | undefined;
    let port: number | undefined = Number(rv.metadata.annotations?.[ANNOTATIONS.port]) || undefined;
    if (placement.ok && !deleting) {
      ({ rv, port } = await this.#ensurePort(rv, port, log));
      await this.#ensureSecret(rv, log);
    }
    if (placement.ok && port !== undefined) {
      const forcePrimary = rv.metadata.annotations?.[ANNOTATIONS.forcePrimary];
      roles = decideRoles({
        nodes: [rv.spec.replicas[0]!.node, rv.spec.replicas[1]!.node],
        preferred: rv.spec.primary,
        chosen: rv.status?.primary,
        epoch: rv.status?.epoch ?? 0,
        fence: rv.status?.fence,
        failover: rv.spec.failover,
        health: Object.fromEntries(
          rv.spec.replicas.map((r) => {
            const n = nodes.get(r.node);
            return [r.node, n ? { ready: n.ready, since: n.readySince } : undefined];
          }),
        ),
        forcePrimary: deleting ? undefined : forcePrimary,
        now,
        observed: rv.spec.replicas.map((r) => {
          const have = replicas.get(r.node);
          return {
            node: r.node,
            ...have?.status,
            ...(have
              ? {
                  ordered: { role: have.spec.role, initialSync: have.spec.initialSync },
                  stale: (have.status?.observedGeneration ?? -1) < (have.metadata.generation ?? 0),
                }
              : {}),
          };
        }),
      });
    }

    const status = aggregateStatus({
      generation: rv.metadata.generation ?? 0,
      previous: rv.status,
      nodes: rv.spec.replicas.map((r) => r.node),
      replicas: new Map(
        [...replicas].map(([n, r]) => [n, { status: r.status, generation: r.metadata.generation ?? 0 }]),
      ),
      placementFailure: placement.ok ? undefined : { reason: placement.reason, message: placement.message },
      roles,
      port,
      deleting,
      now,
    });
    // The status first: a new Primary, epoch or fence is committed by this write, which
    // is conditional on the resourceVersion read. Only then are the replicas told, so a
    // promotion never reaches an agent unless it won against a fence written meanwhile.
    await this.#writeStatus(rv, status, log);
    if (roles?.failover && roles.failover.epoch !== rv.status?.lastFailover?.epoch) {
      if (roles.reason === 'Failover') this.#metrics.failovers.inc({ namespace, volume: name });
      log.warn({ ...roles.failover, reason: roles.reason }, roles.message);
    }
    if (placement.ok && port !== undefined && roles)
      await this.#applyReplicas(rv, placement, port, roles, replicas, deleting, log);
    this.#metrics.observe(namespace, name, status);
    if (
      roles?.reason === 'Stable' &&
      roles.forcePrimary === undefined &&
      rv.metadata.annotations?.[ANNOTATIONS.forcePrimary] !== undefined
    )
      await this.#dropForceAnnotation(rv, log);

    if (deleting) return this.#finishDeletion(rv, replicas, nodes, log);
    // Level-based backstop: agents report every few seconds; look again while not Ready,
    // and when a failover clock runs, when it expires.
    const backstop = status.phase === 'Ready' ? 30_000 : 3_000;
    return { requeueAfterMs: Math.min(backstop, roles?.recheckAfterMs ?? Infinity) };
  }

  #replicasOf(rv: ReplicatedVolume): Map<string, ReplicatedVolumeReplica> {
    const out = new Map<string, ReplicatedVolumeReplica>();
    for (const o of this.#caches.replicas.list(rv.metadata.namespace)) {
      if (o.metadata?.labels?.[LABELS.volume] !== rv.metadata.name) continue;
      const r = ReplicatedVolumeReplica.safeParse(o);
      if (r.success && r.data.metadata.ownerReferences?.some((ref) => ref.uid === rv.metadata.uid))
        out.set(r.data.spec.node, r.data);
    }
    return out;
  }

  async #ensureFinalizer(rv: ReplicatedVolume, log: Logger): Promise<ReplicatedVolume> {
    if (rv.metadata.finalizers?.includes(FINALIZER)) return rv;
    const updated = await this.#custom.patchNamespacedCustomObject(
      {
        ...volumeApi,
        namespace: rv.metadata.namespace,
        name: rv.metadata.name,
        body: {
          metadata: {
            finalizers: [...(rv.metadata.finalizers ?? []), FINALIZER],
            resourceVersion: rv.metadata.resourceVersion,
          },
        },
      },
      mergePatch,
    );
    log.info('Added finalizer');
    return ReplicatedVolume.parse(updated);
  }

  /** The volume's replication port, allocated once and kept in an annotation. */
  async #ensurePort(
    rv: ReplicatedVolume,
    current: number | undefined,
    log: Logger,
  ): Promise<{ rv: ReplicatedVolume; port: number }> {
    const key = `${rv.metadata.namespace}/${rv.metadata.name}`;
    if (current !== undefined) return { rv, port: current };
    const used = new Set<number>();
    for (const o of this.#caches.volumes.list()) {
      const p = Number(o.metadata?.annotations?.[ANNOTATIONS.port]);
      if (p) used.add(p);
    }
    for (const [p, owner] of this.#reservedPorts) if (owner !== key) used.add(p);
    const port = allocatePort(used, PORT_RANGE);
    if (port === undefined)
      throw new TerminalError(
        'NoFreePort',
        `All ${PORT_RANGE.count} replication ports from ${PORT_RANGE.first} are in use`,
      );
    this.#reservedPorts.set(port, key);
    const updated = await this.#custom.patchNamespacedCustomObject(
      {
        ...volumeApi,
        namespace: rv.metadata.namespace,
        name: rv.metadata.name,
        body: {
          metadata: { annotations: { [ANNOTATIONS.port]: String(port) }, resourceVersion: rv.metadata.resourceVersion },
        },
      },
      mergePatch,
    );
    log.info({ port }, 'Allocated replication port');
    return { rv: ReplicatedVolume.parse(updated), port };
  }

  async #ensureSecret(rv: ReplicatedVolume, log: Logger): Promise<void> {
    const name = peerSecretName(rv.metadata.name);
    try {
      await this.#core.readNamespacedSecret({ name, namespace: rv.metadata.namespace });
      return;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    await this.#core.createNamespacedSecret({
      namespace: rv.metadata.namespace,
      body: {
        metadata: {
          name,
          namespace: rv.metadata.namespace,
          labels: { [LABELS.volume]: rv.metadata.name, [LABELS.managedBy]: FIELD_MANAGERS.controller },
          ownerReferences: [this.#ownerRef(rv)],
        },
        type: 'Opaque',
        stringData: { [SECRET_KEY]: randomBytes(32).toString('base64url') },
      },
    });
    log.info({ secret: name }, 'Created peer secret');
  }

  #ownerRef(rv: ReplicatedVolume): k8s.V1OwnerReference {
    return {
      apiVersion: API_VERSION,
      kind: KINDS.volume.kind,
      name: rv.metadata.name,
      uid: rv.metadata.uid ?? '',
      controller: true,
      blockOwnerDeletion: true,
    };
  }

  async #applyReplicas(
    rv: ReplicatedVolume,
    placement: Placement & { ok: true },
    port: number,
    roles: RolesDecision,
    current: Map<string, ReplicatedVolumeReplica>,
    deleting: boolean,
    log: Logger,
  ): Promise<void> {
    const engine = decideEngineState(
      deleting,
      rv.spec.replicas.map((r) => current.get(r.node)?.spec.engine),
      rv.spec.replicas.map((r) => current.get(r.node)?.status),
    );
    for (const spec of desiredReplicaSpecs(rv, placement.replicas, port, roles, engine)) {
      const have = current.get(spec.node);
      if (have && canonicalJson(have.spec) === canonicalJson(spec)) continue;
      // While deleting, only existing replicas are told to go Down: a replica already gone
      // (namespace teardown deletes them first) leaves an orphan engine its agent takes down.
      if (deleting && !have) continue;
      await this.#objects.patch(
        {
          apiVersion: API_VERSION,
          kind: KINDS.replica.kind,
          metadata: {
            name: replicaName(rv.metadata.name, spec.node),
            namespace: rv.metadata.namespace,
            labels: {
              [LABELS.volume]: rv.metadata.name,
              [LABELS.node]: spec.node,
              [LABELS.managedBy]: FIELD_MANAGERS.controller,
            },
            ownerReferences: [this.#ownerRef(rv)],
          },
          spec,
        } as k8s.KubernetesObject & { spec: ReplicatedVolumeReplicaSpec },
        undefined,
        undefined,
        FIELD_MANAGERS.controller,
        true,
        k8s.PatchStrategy.ServerSideApply,
      );
      log.info(
        {
          node: spec.node,
          role: spec.role,
          engine: spec.engine,
          epoch: spec.epoch,
          ...(spec.initialSync ? { initialSync: true } : {}),
        },
        have ? 'Updated replica' : 'Created replica',
      );
    }
  }

  async #writeStatus(rv: ReplicatedVolume, status: ReplicatedVolumeStatus, log: Logger): Promise<void> {
    if (sameStatus(rv.status, status)) return;
    // PUT /status with the resourceVersion read: replaces the whole status, refused (409) if it moved.
    await this.#custom.replaceNamespacedCustomObjectStatus({
      ...volumeApi,
      namespace: rv.metadata.namespace,
      name: rv.metadata.name,
      body: {
        apiVersion: rv.apiVersion,
        kind: rv.kind,
        metadata: {
          name: rv.metadata.name,
          namespace: rv.metadata.namespace,
          resourceVersion: rv.metadata.resourceVersion,
        },
        spec: rv.spec,
        status,
      },
    });
    log.debug({ phase: status.phase }, 'Updated status');
    for (const e of eventsBetween(rv.status, status)) {
      await recordEvent(
        this.#core,
        FIELD_MANAGERS.controller,
        undefined,
        { kind: KINDS.volume.kind, name: rv.metadata.name, namespace: rv.metadata.namespace, uid: rv.metadata.uid },
        e,
      ).catch((err: unknown) => log.warn({ err, reason: e.reason }, 'Could not record event'));
      log.info({ reason: e.reason, detail: e.message }, 'Recorded event');
    }
  }

  /** The operator's force-primary took effect: the annotation goes, so it never forces again. */
  async #dropForceAnnotation(rv: ReplicatedVolume, log: Logger): Promise<void> {
    await this.#custom.patchNamespacedCustomObject(
      {
        ...volumeApi,
        namespace: rv.metadata.namespace,
        name: rv.metadata.name,
        body: { metadata: { annotations: { [ANNOTATIONS.forcePrimary]: null } } },
      },
      mergePatch,
    );
    log.info('Removed the force-primary annotation; the forced node is Primary');
  }

  async #finishDeletion(
    rv: ReplicatedVolume,
    replicas: Map<string, ReplicatedVolumeReplica>,
    nodes: Map<string, NodeView>,
    log: Logger,
  ): Promise<ReconcileResult> {
    const waiting = [...replicas.values()].filter((r) => {
      const n = nodes.get(r.spec.node);
      if (!n?.ready) return false; // an unreachable node cannot answer; its engine is left as it is
      const s = r.status;
      const acted = (s?.observedGeneration ?? -1) >= (r.metadata.generation ?? 0) && r.spec.engine === 'Down';
      return !(acted && (s?.role === undefined || s.role === 'Unconfigured'));
    });
    if (waiting.length > 0) {
      log.info({ nodes: waiting.map((r) => r.spec.node) }, 'Waiting for engines to go down');
      return { requeueAfterMs: 1000 };
    }
    const finalizers = (rv.metadata.finalizers ?? []).filter((f) => f !== FINALIZER);
    await this.#custom.patchNamespacedCustomObject(
      {
        ...volumeApi,
        namespace: rv.metadata.namespace,
        name: rv.metadata.name,
        body: { metadata: { finalizers, resourceVersion: rv.metadata.resourceVersion } },
      },
      mergePatch,
    );
    for (const [p, owner] of this.#reservedPorts)
      if (owner === `${rv.metadata.namespace}/${rv.metadata.name}`) this.#reservedPorts.delete(p);
    log.info('Removed finalizer; engines are down');
    return {};
  }
}

export { replicaApi };
