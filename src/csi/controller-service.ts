// CSI Controller service: a CSI volume is a ReplicatedVolume in the driver's
// namespace (so `kubectl get rv` shows everything as before).
//
//   CreateVolume       StorageClass parameters (requests.ts) + two nodes of the pool
//                      (placement.ts) → a ReplicatedVolume; its replicas' nodes are the
//                      accessible topology. Idempotent on the CSI name (annotation).
//   DeleteVolume       deletes it; the controller's finalizer takes the engines down.
//   ControllerPublish  the publishing node becomes Primary: spec.primary names it and the
//                      call returns once the controller has chosen it and its agent
//                      reports Primary. Published on another node whose Node is Ready:
//                      FAILED_PRECONDITION naming that node. On a lost node: the
//                      controller's failover (fence first) decides, as for any volume.
//   ControllerUnpublish forgets the publication; the role stays (nothing is mounted).
//   ControllerExpandVolume  offline (expansion.ts): refused while published; spec.size
//                      grows (conditionally, as publish writes) and the call returns once
//                      every replica's engine reports the new size.
import { LABELS } from '../api/names.ts';
import { parseQuantity } from '../api/quantity.ts';
import { fileClaimsOf, poolUsed } from '../api/storage-pool.ts';
import { describeError, isConflict } from '../runtime/kube.ts';
import { aborted, alreadyExists, CsiError, invalid, notFound, precondition, unavailable } from './errors.ts';
import {
  CSI_LABEL,
  CSI_NAME_ANNOTATION,
  PUBLISHED_ANNOTATION,
  TOPOLOGY_KEY,
  parseVolumeId,
  volumeId,
  volumeNameFor,
} from './identity.ts';
import { type CapacityRange, type DiskRoom, decideExpansion, growthPending, type PoolRoom } from './expansion.ts';
import { chooseReplicaNodes, type TopologyRequirement } from './placement.ts';
import {
  checkCapabilities,
  decideSize,
  isBlock,
  parseParameters,
  unsupportedCapability,
  type VolumeCapability,
} from './requests.ts';
import type { StoredVolume, VolumeStore } from './volume-store.ts';
import { status } from '@grpc/grpc-js';

type Req = Record<string, unknown>;

export type ControllerOptions = {
  store: VolumeStore;
  /** How long ControllerPublish waits for the node to become Primary before UNAVAILABLE (the CO retries). */
  publishTimeoutMs?: number;
  /** How long ControllerExpandVolume waits for every replica to grow before UNAVAILABLE (the CO retries). */
  expandTimeoutMs?: number;
  sleep?: (ms: number) => Promise<void>;
};

const topologyOf = (rv: StoredVolume) => rv.spec.replicas.map((r) => ({ segments: { [TOPOLOGY_KEY]: r.node } }));
const bytesOf = (rv: StoredVolume) => (rv.spec.size ? (parseQuantity(rv.spec.size) ?? 0) : 0);

function str(req: Req, key: string): string {
  const v = req[key];
  return typeof v === 'string' ? v : '';
}

export class ControllerService {
  readonly #store: VolumeStore;
  readonly #publishTimeoutMs: number;
  readonly #expandTimeoutMs: number;
  readonly #sleep: (ms: number) => Promise<void>;

  constructor(o: ControllerOptions) {
    this.#store = o.store;
    this.#publishTimeoutMs = o.publishTimeoutMs ?? 60_000;
    // Below the sidecars' --timeout (the chart's csi.timeout, 120 s): the resizer hears why.
    this.#expandTimeoutMs = o.expandTimeoutMs ?? 90_000;
    this.#sleep = o.sleep ?? ((ms) => new Promise((r) => setTimeout(r, ms)));
  }

  ControllerGetCapabilities = async () => ({
    capabilities: ['CREATE_DELETE_VOLUME', 'PUBLISH_UNPUBLISH_VOLUME', 'LIST_VOLUMES', 'EXPAND_VOLUME'].map((type) => ({
      rpc: { type },
    })),
  });

  CreateVolume = async (req: Req) => {
    const name = str(req, 'name');
    if (!name) throw invalid('CreateVolume: name is required');
    checkCapabilities(req.volume_capabilities as VolumeCapability[], 'CreateVolume');
    if (req.volume_content_source)
      throw invalid('CreateVolume: volume_content_source is not supported (no snapshots or clones)');
    const params = parseParameters(req.parameters as Record<string, string>);
    const bytes = decideSize(req.capacity_range as { required_bytes?: number; limit_bytes?: number });
    const rvName = volumeNameFor(name);
    const existing = await this.#store.getVolume(rvName);
    if (existing) return this.#sameVolume(existing, name, bytes, params.pool);

    const pool = await this.#store.getPool(params.pool);
    if (!pool) throw invalid(`CreateVolume: storage pool ${params.pool} does not exist`);
    const nodes = new Map((await this.#store.listNodes()).map((n) => [n.name, n]));
    const load = new Map<string, number>();
    for (const v of await this.#store.listVolumes())
      for (const r of v.spec.replicas) load.set(r.node, (load.get(r.node) ?? 0) + 1);
    // Room under a capacity counts every namespace's volumes in the pool, as the controller does.
    const claims = pool.nodes.some((g) => g.capacity !== undefined)
      ? fileClaimsOf(await this.#store.listAllVolumes())
      : [];
    const roomOn = (g: (typeof pool.nodes)[number]) => {
      const capacity = g.capacity !== undefined ? parseQuantity(g.capacity) : undefined;
      return capacity === undefined ? undefined : capacity - poolUsed(claims, params.pool, g.node, capacity);
    };
    const choice = chooseReplicaNodes(
      params.pool,
      pool.nodes.map((g) => {
        const n = nodes.get(g.node);
        return {
          name: g.node,
          ready: n?.ready ?? false,
          unschedulable: n?.unschedulable ?? true,
          hasInternalIP: n?.hasInternalIP ?? false,
          poolDirectory: g.directory !== undefined,
          replicas: load.get(g.node) ?? 0,
          roomBytes: roomOn(g),
        };
      }),
      req.accessibility_requirements as TopologyRequirement | undefined,
      bytes,
    );
    if (!choice.ok)
      throw new CsiError(
        choice.code === 'INVALID_ARGUMENT' ? status.INVALID_ARGUMENT : status.RESOURCE_EXHAUSTED,
        choice.message,
      );
    let rv: StoredVolume;
    try {
      rv = await this.#store.createVolume({
        name: rvName,
        labels: { [CSI_LABEL]: 'true', [LABELS.managedBy]: 'tandem-csi' },
        annotations: { [CSI_NAME_ANNOTATION]: name },
        spec: {
          pool: params.pool,
          size: String(bytes),
          replicas: choice.nodes.map((node) => ({ node, metaDisk: 'internal' })),
          ...(params.protocol ? { protocol: params.protocol } : {}),
          ...(params.resyncRate ? { resyncRate: params.resyncRate } : {}),
          ...(params.verifyAlg ? { verifyAlg: params.verifyAlg } : {}),
          ...(params.onIoError ? { onIoError: params.onIoError } : {}),
          ...(params.failover !== undefined || params.nodeNotReadySeconds !== undefined
            ? { failover: { enabled: params.failover ?? true, nodeNotReadySeconds: params.nodeNotReadySeconds ?? 10 } }
            : {}),
        },
      });
    } catch (err) {
      // A concurrent CreateVolume of the same name won the race: answer as for a retry.
      if (!isConflict(err)) throw err;
      const raced = await this.#store.getVolume(rvName);
      if (!raced) throw aborted(`CreateVolume ${name}: created concurrently and gone again`);
      return this.#sameVolume(raced, name, bytes, params.pool);
    }
    return { volume: this.#volume(rv, params.pool) };
  };

  #volume(rv: StoredVolume, pool: string) {
    return {
      volume_id: volumeId(rv.metadata.namespace, rv.metadata.name),
      capacity_bytes: bytesOf(rv),
      volume_context: { pool },
      accessible_topology: topologyOf(rv),
    };
  }

  /** CreateVolume again for a name that exists: the same volume, or ALREADY_EXISTS when it differs. */
  #sameVolume(rv: StoredVolume, name: string, bytes: number, pool: string) {
    if (rv.metadata.annotations?.[CSI_NAME_ANNOTATION] !== name)
      throw alreadyExists(
        `CreateVolume ${name}: ReplicatedVolume ${rv.metadata.name} exists and was not created for it`,
      );
    if (rv.metadata.deletionTimestamp) throw aborted(`CreateVolume ${name}: the volume is still being deleted`);
    if (bytesOf(rv) !== bytes || rv.spec.pool !== pool)
      throw alreadyExists(
        `CreateVolume ${name}: exists with ${bytesOf(rv)} bytes in pool ${rv.spec.pool}, not ${bytes} in ${pool}`,
      );
    return { volume: this.#volume(rv, pool) };
  }

  /** The volume of a volume_id (NOT_FOUND when it is not there, INVALID_ARGUMENT when it is missing). */
  async #volumeOf(req: Req, what: string): Promise<StoredVolume> {
    const id = str(req, 'volume_id');
    if (!id) throw invalid(`${what}: volume_id is required`);
    const ref = parseVolumeId(id);
    const rv = ref && ref.namespace === this.#store.namespace ? await this.#store.getVolume(ref.name) : undefined;
    if (!rv) throw notFound(`${what}: volume ${id} does not exist`);
    return rv;
  }

  DeleteVolume = async (req: Req) => {
    const id = str(req, 'volume_id');
    if (!id) throw invalid('DeleteVolume: volume_id is required');
    const ref = parseVolumeId(id);
    // CSI: a volume that does not exist is deleted already.
    if (!ref || ref.namespace !== this.#store.namespace) return {};
    const rv = await this.#store.getVolume(ref.name);
    if (!rv) return {};
    const published = rv.metadata.annotations?.[PUBLISHED_ANNOTATION];
    if (published) throw precondition(`DeleteVolume ${id}: still published on node ${published}`);
    await this.#store.deleteVolume(ref.name);
    return {};
  };

  ValidateVolumeCapabilities = async (req: Req) => {
    const rv = await this.#volumeOf(req, 'ValidateVolumeCapabilities');
    const caps = req.volume_capabilities as VolumeCapability[] | undefined;
    if (!caps || caps.length === 0) throw invalid('ValidateVolumeCapabilities: volume_capabilities are required');
    const why = caps.map(unsupportedCapability).find((m) => m !== undefined);
    if (why) return { message: why };
    const params = req.parameters as Record<string, string> | undefined;
    if (params && Object.keys(params).length > 0) {
      const p = parseParameters(params);
      if (p.pool !== rv.spec.pool) return { message: `the volume is in pool ${rv.spec.pool}, not ${p.pool}` };
    }
    return {
      confirmed: {
        volume_context: req.volume_context ?? {},
        volume_capabilities: caps,
        parameters: params ?? {},
      },
    };
  };

  ListVolumes = async (req: Req) => {
    const max = Number(req.max_entries ?? 0);
    if (max < 0) throw invalid('ListVolumes: max_entries must not be negative');
    // A deleted volume waits for its engines to go down (the finalizer); to CSI it is gone already.
    const all = (await this.#store.listVolumes(`${CSI_LABEL}=true`))
      .filter((rv) => !rv.metadata.deletionTimestamp)
      .sort((a, b) => (a.metadata.name < b.metadata.name ? -1 : 1));
    const token = str(req, 'starting_token');
    let start = 0;
    if (token) {
      if (!/^[0-9]+$/.test(token) || Number(token) > all.length)
        throw aborted(`ListVolumes: starting_token ${token} is not one this driver gave`);
      start = Number(token);
    }
    const end = max > 0 ? Math.min(all.length, start + max) : all.length;
    return {
      entries: all.slice(start, end).map((rv) => ({ volume: this.#volume(rv, rv.spec.pool) })),
      next_token: end < all.length ? String(end) : '',
    };
  };

  ControllerPublishVolume = async (req: Req) => {
    const node = str(req, 'node_id');
    const id = str(req, 'volume_id');
    if (!id) throw invalid('ControllerPublishVolume: volume_id is required');
    if (!node) throw invalid('ControllerPublishVolume: node_id is required');
    const cap = req.volume_capability as VolumeCapability | undefined;
    if (!cap) throw invalid('ControllerPublishVolume: volume_capability is required');
    const why = unsupportedCapability(cap);
    if (why) throw invalid(`ControllerPublishVolume: ${why}`);
    if (!(await this.#store.getNode(node))) throw notFound(`ControllerPublishVolume: node ${node} does not exist`);
    // Read, check, write conditionally; the controller writes the volume too (finalizer,
    // port), so a conflict means "read again", a few times, before giving up.
    for (let attempt = 0; ; attempt++) {
      const rv = await this.#volumeOf(req, 'ControllerPublishVolume');
      if (!rv.spec.replicas.some((r) => r.node === node))
        throw precondition(
          `ControllerPublishVolume ${id}: node ${node} holds no replica (the volume lives on ${rv.spec.replicas.map((r) => r.node).join(' and ')})`,
        );
      if (rv.metadata.deletionTimestamp)
        throw precondition(`ControllerPublishVolume ${id}: the volume is being deleted`);
      const current = rv.metadata.annotations?.[PUBLISHED_ANNOTATION];
      if (current && current !== node) {
        const there = await this.#store.getNode(current);
        if (there?.ready)
          throw precondition(
            `ControllerPublishVolume ${id}: published on node ${current}, which is alive; unpublish it there first`,
          );
      }
      if (current === node && rv.spec.primary === node) break;
      try {
        await this.#store.patchVolume(
          rv.metadata.name,
          { annotations: { [PUBLISHED_ANNOTATION]: node }, spec: { primary: node } },
          rv.metadata.resourceVersion,
        );
        break;
      } catch (err) {
        if (!isConflict(err)) throw err;
        if (attempt >= 9) throw aborted(`ControllerPublishVolume ${id}: the volume kept changing; try again`);
      }
    }
    await this.#waitPrimary(parseVolumeId(id)!.name, node, id);
    return { publish_context: {} };
  };

  async #waitPrimary(name: string, node: string, id: string): Promise<void> {
    const deadline = Date.now() + this.#publishTimeoutMs;
    let last = 'no status yet';
    for (;;) {
      const rv = await this.#store.getVolume(name);
      if (!rv) throw notFound(`ControllerPublishVolume: volume ${id} is gone`);
      const reported = rv.status?.replicas?.find((r) => r.node === node)?.role;
      if (rv.status?.primary === node && reported === 'Primary') return;
      last = `chosen Primary ${rv.status?.primary ?? 'none'}, ${node} reports ${reported ?? 'nothing'}`;
      if (Date.now() > deadline)
        throw unavailable(`ControllerPublishVolume ${id}: ${node} is not Primary yet (${last}); the CO will retry`);
      await this.#sleep(500);
    }
  }

  ControllerUnpublishVolume = async (req: Req) => {
    const id = str(req, 'volume_id');
    if (!id) throw invalid('ControllerUnpublishVolume: volume_id is required');
    const node = str(req, 'node_id');
    const ref = parseVolumeId(id);
    // CSI: a volume or node that is gone counts as unpublished.
    if (!ref || ref.namespace !== this.#store.namespace) return {};
    for (let attempt = 0; ; attempt++) {
      const rv = await this.#store.getVolume(ref.name);
      const current = rv?.metadata.annotations?.[PUBLISHED_ANNOTATION];
      if (!rv || current === undefined || (node && current !== node)) return {};
      try {
        await this.#store.patchVolume(
          rv.metadata.name,
          { annotations: { [PUBLISHED_ANNOTATION]: null } },
          rv.metadata.resourceVersion,
        );
        return {};
      } catch (err) {
        if (!isConflict(err)) throw new CsiError(status.INTERNAL, describeError(err).message);
        if (attempt >= 9) throw aborted(`ControllerUnpublishVolume ${id}: the volume kept changing; try again`);
      }
    }
  };

  ControllerExpandVolume = async (req: Req) => {
    const what = 'ControllerExpandVolume';
    const id = str(req, 'volume_id');
    if (!id) throw invalid(`${what}: volume_id is required`);
    const range = req.capacity_range as CapacityRange;
    if (!range) throw invalid(`${what}: capacity_range is required`);
    const cap = req.volume_capability as VolumeCapability | undefined;
    if (cap) {
      const why = unsupportedCapability(cap);
      if (why) throw invalid(`${what}: ${why}`);
    }
    // Read, decide, write conditionally (as ControllerPublish): the controller writes the volume too.
    let bytes: number;
    let rv: StoredVolume;
    for (let attempt = 0; ; attempt++) {
      rv = await this.#volumeOf(req, what);
      const decision = await this.#decideExpansion(rv, id, range).catch((err: unknown) => {
        throw err instanceof CsiError ? new CsiError(err.code, `${what}: ${err.message}`) : err;
      });
      bytes = decision.bytes;
      if (!decision.patch) break;
      try {
        await this.#store.patchVolume(rv.metadata.name, { spec: { size: String(bytes) } }, rv.metadata.resourceVersion);
        break;
      } catch (err) {
        if (!isConflict(err)) throw err;
        if (attempt >= 9) throw aborted(`${what} ${id}: the volume kept changing; try again`);
      }
    }
    await this.#waitGrown(
      rv.metadata.name,
      rv.spec.replicas.map((r) => r.node),
      bytes,
      id,
    );
    // A filesystem grows on the node (NodeExpandVolume); a raw block volume is its device.
    return { capacity_bytes: bytes, node_expansion_required: !(cap && isBlock(cap)) };
  };

  /** The snapshot decideExpansion needs: the pool's room on each file-backed replica's node, each disk's capacity. */
  async #decideExpansion(rv: StoredVolume, id: string, range: CapacityRange) {
    const currentBytes = bytesOf(rv);
    const pools: PoolRoom[] = [];
    const disks: DiskRoom[] = [];
    const want = Number(range?.required_bytes ?? 0);
    if (want > currentBytes) {
      const pool = await this.#store.getPool(rv.spec.pool);
      const files = rv.spec.replicas.filter((r) => r.disk === undefined).map((r) => r.node);
      const limited = (pool?.nodes ?? []).filter((g) => g.capacity !== undefined && files.includes(g.node));
      if (limited.length > 0) {
        // Every namespace's volumes share a pool's capacity, as in CreateVolume and the controller.
        const claims = fileClaimsOf(await this.#store.listAllVolumes());
        const self = {
          key: `${rv.metadata.namespace}/${rv.metadata.name}`,
          created: rv.metadata.creationTimestamp ? new Date(rv.metadata.creationTimestamp).toISOString() : '',
        };
        for (const g of limited) {
          const capacity = parseQuantity(g.capacity!);
          if (capacity === undefined) continue;
          pools.push({ node: g.node, capacity, usedByOthers: poolUsed(claims, rv.spec.pool, g.node, capacity, self) });
        }
      }
      for (const r of rv.spec.replicas)
        if (r.disk !== undefined)
          disks.push({
            node: r.node,
            disk: r.disk,
            capacityBytes: rv.status?.replicas?.find((s) => s.node === r.node)?.capacityBytes,
          });
    }
    return decideExpansion({
      id,
      currentBytes,
      range,
      publishedOn: rv.metadata.annotations?.[PUBLISHED_ANNOTATION],
      deleting: rv.metadata.deletionTimestamp !== undefined,
      pools,
      disks,
    });
  }

  async #waitGrown(name: string, nodes: string[], bytes: number, id: string): Promise<void> {
    const deadline = Date.now() + this.#expandTimeoutMs;
    for (;;) {
      const rv = await this.#store.getVolume(name);
      if (!rv) throw notFound(`ControllerExpandVolume: volume ${id} is gone`);
      const pending = growthPending(nodes, rv.status?.replicas, bytes);
      if (pending.length === 0) return;
      if (Date.now() > deadline)
        throw unavailable(
          `ControllerExpandVolume ${id}: not every replica has grown to ${bytes} bytes yet (${pending.join(', ')}); the CO will retry`,
        );
      await this.#sleep(500);
    }
  }
}
