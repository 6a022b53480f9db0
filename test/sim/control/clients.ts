// The controller's VolumeApi, the agent's AgentApi and the informer caches, on
// the simulated API server: the same calls the real implementations make, with
// the same semantics (merge patch, conditional PUT, server-side apply), across
// the simulated network.
import type * as k8s from '@kubernetes/client-node';
import { StoragePool } from '../../../src/api/storage-pool.ts';
import {
  agentLeaseName,
  ANNOTATIONS,
  DEFAULT_OPERATOR_NAMESPACE,
  FINALIZER,
  KINDS,
  LABELS,
  peerSecretName,
  SECRET_KEY,
} from '../../../src/api/names.ts';
import { type Fence, ReplicatedVolume, type ReplicatedVolumeStatus } from '../../../src/api/replicated-volume.ts';
import type {
  ReplicatedVolumeReplica,
  ReplicatedVolumeReplicaSpec,
} from '../../../src/api/replicated-volume-replica.ts';
import { leaseRenewTime } from '../../../src/controller/agent-lease.ts';
import { type FreshRead, replicaMetadata, type VolumeApi } from '../../../src/controller/volume-api.ts';
import type { AgentApi, ObjectRef } from '../../../src/node-agent/agent-api.ts';
import type { CacheFactory, ObjectCache } from '../../../src/runtime/informer.ts';
import type { EventInput } from '../../../src/runtime/kube.ts';
import { ApiError, type Client, type Kind, type Obj, SimApiServer } from './api-server.ts';

/** RFC 7386 merge patch. */
export function mergePatch(target: unknown, patch: unknown): unknown {
  if (patch === null || typeof patch !== 'object' || Array.isArray(patch)) return patch;
  const out: Record<string, unknown> =
    target && typeof target === 'object' && !Array.isArray(target) ? { ...(target as Record<string, unknown>) } : {};
  for (const [k, v] of Object.entries(patch as Record<string, unknown>)) {
    if (v === null) delete out[k];
    else out[k] = mergePatch(out[k], v);
  }
  return out;
}

const asObj = (x: unknown) => x as Obj;

export class SimVolumeApi implements VolumeApi {
  readonly #api: SimApiServer;
  readonly #c: Client;

  constructor(api: SimApiServer, client: Client) {
    this.#api = api;
    this.#c = client;
  }

  patchVolumeMeta(
    rv: ReplicatedVolume,
    meta: { finalizers?: string[]; annotations?: Record<string, string | null> },
    conditional: boolean,
  ): Promise<unknown> {
    return this.#api.call(this.#c, () =>
      this.#api.update(
        'rv',
        rv.metadata.namespace,
        rv.metadata.name,
        (o) => ({ ...o, metadata: mergePatch(o.metadata, meta) as Obj['metadata'] }),
        conditional ? rv.metadata.resourceVersion : undefined,
        this.#c.id,
      ),
    );
  }

  replaceVolumeStatus(rv: ReplicatedVolume, status: ReplicatedVolumeStatus): Promise<unknown> {
    return this.#api.call(this.#c, () =>
      this.#api.update(
        'rv',
        rv.metadata.namespace,
        rv.metadata.name,
        (o) => ({ ...o, status: JSON.parse(JSON.stringify(status)) }),
        rv.metadata.resourceVersion,
        this.#c.id,
      ),
    );
  }

  ensurePeerSecret(rv: ReplicatedVolume): Promise<boolean> {
    return this.#api.call(this.#c, () => {
      const name = peerSecretName(rv.metadata.namespace, rv.metadata.name);
      if (this.#api.peek('secret', DEFAULT_OPERATOR_NAMESPACE, name)) return false;
      this.#api.create(
        'secret',
        { metadata: { name, namespace: DEFAULT_OPERATOR_NAMESPACE }, data: { [SECRET_KEY]: 'c2VjcmV0' } },
        this.#c.id,
      );
      return true;
    });
  }

  ensureNodeTls(_node: string): Promise<boolean> {
    // The simulated agents run without peer TLS.
    return this.#api.call(this.#c, () => false);
  }

  listNodeAccess(): Promise<string[]> {
    // No per-node accounts in the simulation (ensureNodeAccess makes none).
    return this.#api.call(this.#c, () => []);
  }

  nodeExists(_node: string): Promise<boolean> {
    return this.#api.call(this.#c, () => true);
  }

  deleteNodeAccess(_node: string): Promise<void> {
    return this.#api.call(this.#c, () => undefined);
  }

  ensureNodeAccess(_node: string, _names: readonly string[]): Promise<boolean> {
    // Per-node RBAC is the API server's; the simulated one has no RBAC.
    return this.#api.call(this.#c, () => false);
  }

  deletePeerSecret(_rv: ReplicatedVolume): Promise<void> {
    // The simulated API server keeps Secrets; nothing in the simulation reads a deleted volume's.
    return this.#api.call(this.#c, () => undefined);
  }

  createReplica(rv: ReplicatedVolume, spec: ReplicatedVolumeReplicaSpec): Promise<void> {
    return this.#api.call(this.#c, () => {
      const meta = replicaMetadata(rv, spec.node);
      this.#api.create(
        'rvr',
        asObj({ apiVersion: 'tandem.dev/v1alpha1', kind: KINDS.replica.kind, metadata: meta, spec }),
        this.#c.id,
      );
    });
  }

  replaceReplica(
    rv: ReplicatedVolume,
    current: ReplicatedVolumeReplica,
    spec: ReplicatedVolumeReplicaSpec,
  ): Promise<void> {
    return this.#api.call(this.#c, () => {
      this.#api.update(
        'rvr',
        current.metadata.namespace,
        current.metadata.name,
        (o) => ({ ...o, spec: clone(spec) }),
        current.metadata.resourceVersion,
        this.#c.id,
      );
      void rv;
    });
  }

  readFresh(namespace: string, name: string, nodes: readonly string[]): Promise<FreshRead> {
    return this.#api.call(this.#c, () => {
      const volume = this.#api.get('rv', namespace, name);
      if (!volume) throw new ApiError(404, 'NotFound');
      return {
        volume,
        replicas: this.#api.list(
          'rvr',
          (o) => o.metadata.namespace === namespace && o.metadata.labels?.[LABELS.volume] === name,
        ),
        nodes: nodes
          .map((n) => this.#api.get('node', undefined, n))
          .filter((n): n is Obj => n !== undefined) as k8s.V1Node[],
        agents: Object.fromEntries(
          nodes.map((n) => [n, leaseRenewTime(this.#api.get('lease', DEFAULT_OPERATOR_NAMESPACE, agentLeaseName(n)))]),
        ),
      };
    });
  }

  requestReport(replica: k8s.KubernetesObject, time: string): Promise<void> {
    const { namespace, name, resourceVersion } = replica.metadata ?? {};
    return this.#api.call(this.#c, () => {
      this.#api.update(
        'rvr',
        namespace,
        name ?? '',
        (o) => ({
          ...o,
          metadata: { ...o.metadata, annotations: { ...o.metadata.annotations, [ANNOTATIONS.reportRequested]: time } },
        }),
        resourceVersion,
        this.#c.id,
      );
    });
  }

  recordEvent(rv: ReplicatedVolume, e: EventInput): Promise<void> {
    return this.#api.call(this.#c, () => this.#api.recordEvent(`rv/${rv.metadata.name}`, e, this.#c.id));
  }
}

const clone = <T>(x: T): T => JSON.parse(JSON.stringify(x)) as T;

export class SimAgentApi implements AgentApi {
  readonly #api: SimApiServer;
  readonly #c: Client;
  readonly #node: string;

  constructor(api: SimApiServer, client: Client, node: string) {
    this.#api = api;
    this.#c = client;
    this.#node = node;
  }

  reportStatus(namespace: string, name: string, status: Record<string, unknown>): Promise<boolean> {
    return this.#api.call(this.#c, () => {
      if (!this.#api.peek('rvr', namespace, name)) return false;
      this.#api.update(
        'rvr',
        namespace,
        name,
        (o) => ({ ...o, status: mergePatch(o.status, status) }),
        undefined,
        this.#c.id,
      );
      return true;
    });
  }

  recordEvent(obj: ObjectRef, e: EventInput): Promise<void> {
    return this.#api.call(this.#c, () =>
      this.#api.recordEvent(`${obj.kind === KINDS.volume.kind ? 'rv' : 'rvr'}/${obj.name}`, e, this.#c.id),
    );
  }

  readReplica(namespace: string, name: string): Promise<{ role: string; epoch: number } | undefined> {
    return this.#api.call(this.#c, () => {
      const o = this.#api.peek('rvr', namespace, name) as { spec: { role: string; epoch: number } } | undefined;
      return o ? { role: o.spec.role, epoch: o.spec.epoch } : undefined;
    });
  }

  readNodeTls(): Promise<undefined> {
    // The simulated agents run without peer TLS (peerTls is off): their links are simulated.
    return this.#api.call(this.#c, () => undefined);
  }

  readPeerSecret(name: string): Promise<string | undefined> {
    return this.#api.call(this.#c, () => {
      const s = this.#api.peek('secret', DEFAULT_OPERATOR_NAMESPACE, name) as
        | { data?: Record<string, string> }
        | undefined;
      return s?.data?.[SECRET_KEY] ? 'secret' : undefined;
    });
  }

  readPool(name: string): Promise<StoragePool | undefined> {
    return this.#api.call(this.#c, () => {
      const o = this.#api.get('pool', undefined, name);
      return o ? StoragePool.parse(o) : undefined;
    });
  }

  readVolume(namespace: string, name: string): Promise<ReplicatedVolume | undefined> {
    return this.#api.call(this.#c, () => {
      const o = this.#api.get('rv', namespace, name);
      return o ? ReplicatedVolume.parse(o) : undefined;
    });
  }

  renewLease(at: Date): Promise<void> {
    return this.#api.call(this.#c, () => {
      const name = agentLeaseName(this.#node);
      const spec = { holderIdentity: this.#node, leaseDurationSeconds: 15, renewTime: at.toISOString() };
      if (this.#api.peek('lease', DEFAULT_OPERATOR_NAMESPACE, name))
        this.#api.update('lease', DEFAULT_OPERATOR_NAMESPACE, name, (o) => ({ ...o, spec }), undefined, this.#c.id);
      else
        this.#api.create(
          'lease',
          {
            apiVersion: 'coordination.k8s.io/v1',
            kind: 'Lease',
            metadata: { name, namespace: DEFAULT_OPERATOR_NAMESPACE },
            spec,
          },
          this.#c.id,
        );
    });
  }

  patchVolumeStatus(rv: ReplicatedVolume, status: { fence: Fence | null }): Promise<void> {
    return this.#api.call(this.#c, () => {
      this.#api.update(
        'rv',
        rv.metadata.namespace,
        rv.metadata.name,
        (o) => ({ ...o, status: mergePatch(o.status, status) }),
        rv.metadata.resourceVersion,
        this.#c.id,
      );
    });
  }
}

/** An informer on the simulated server: a list, then a watch from that instant; changes reach it late. */
export class SimCache<T extends k8s.KubernetesObject> implements ObjectCache<T> {
  readonly #api: SimApiServer;
  readonly #c: Client;
  readonly #kind: Kind;
  readonly #filter: (o: Obj) => boolean;
  readonly #handlers: { onChange: (o: T) => void; onResync?: () => void };
  readonly #objects = new Map<string, T>();
  #watch: { close(): void; stall(ms: number): void } | undefined;
  synced = false;

  constructor(
    api: SimApiServer,
    client: Client,
    kind: Kind,
    filter: (o: Obj) => boolean,
    handlers: { onChange: (o: T) => void; onResync?: () => void },
  ) {
    this.#api = api;
    this.#c = client;
    this.#kind = kind;
    this.#filter = filter;
    this.#handlers = handlers;
  }

  static factory<T extends k8s.KubernetesObject>(
    api: SimApiServer,
    client: Client,
    kind: Kind,
    filter: (o: Obj) => boolean = () => true,
    made?: (c: SimCache<T>) => void,
  ): CacheFactory<T> {
    return (handlers) => {
      const c = new SimCache<T>(api, client, kind, filter, handlers);
      made?.(c);
      return c;
    };
  }

  /** Lists until it gets an answer (the real informer retries with backoff), then watches. */
  async start(): Promise<void> {
    for (;;) {
      if (this.#c.dead) return;
      try {
        await this.#api.call(this.#c, () => {
          for (const o of this.#api.list(this.#kind, this.#filter))
            this.#objects.set(SimApiServer.key(o), o as unknown as T);
          this.#watch = this.#api.watch(this.#c, this.#kind, this.#filter, (type, o) => this.#apply(type, o));
        });
        break;
      } catch {
        /* cut off: try again */
      }
    }
    this.synced = true;
    for (const o of this.#objects.values()) this.#handlers.onChange(o);
  }

  #apply(type: string, o: Obj): void {
    const k = SimApiServer.key(o);
    if (type === 'DELETED' || !this.#filter(o)) this.#objects.delete(k);
    else this.#objects.set(k, o as unknown as T);
    this.#handlers.onChange(o as unknown as T);
  }

  /** The watch falls behind: nothing reaches this cache for ms, then everything in a rush. */
  stall(ms: number): void {
    this.#watch?.stall(ms);
  }

  list(namespace?: string): readonly T[] {
    const all = [...this.#objects.values()];
    return namespace === undefined ? all : all.filter((o) => o.metadata?.namespace === namespace);
  }

  get(name: string, namespace?: string): T | undefined {
    return this.#objects.get(`${namespace ?? ''}/${name}`);
  }

  async stop(): Promise<void> {
    this.#watch?.close();
  }
}

export { FINALIZER };
