// One simulated node for npm run bench:control: the node agent's API traffic and the
// kubelet's heartbeats, without engines, disks or containers.
//
// Agent (as src/node-agent/agent.ts does it): a watch on this node's replicas (label
// tandem.dev/node=NODE, the same SupervisedInformer), two workers on the same work
// queue, a pass per replica every HEARTBEAT_MS and at every change of its spec. A pass
// "acts" when the spec's generation is new (the engine takes ACT_MS to be promoted,
// demoted or brought up), passes again ACT_AGAIN_MS later and reports; otherwise it
// reports when the status changed, when the controller asked (tandem.dev/report-requested),
// every APART_HEARTBEAT_MS while the engine is apart from its peer, and else every
// REPORT_REFRESH_MS. The report is the agent's own merge patch through
// KubeAgentApi.reportStatus, every field named. The agent's Lease (tandem-agent-NODE) is
// renewed from the work queue every HEARTBEAT_MS through KubeAgentApi.renewLease. A Primary that loses its peer
// records the fence (decideFence, KubeAgentApi.patchVolumeStatus) as the real agent's
// fence-peer handler does.
//
// Kubelet: the node's Lease in kube-node-lease renewed every LEASE_RENEW_MS and the Node's
// status posted every NODE_STATUS_REPORT_MS (kubelet's nodeStatusReportFrequency; with
// node leases it posts more often only when something changed), first at a random phase.
import { randomBytes } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { ANNOTATIONS, CONDITIONS, KINDS, LABELS } from '../../src/api/names.ts';
import { ReplicatedVolumeReplica, ReplicatedVolumeReplicaStatus } from '../../src/api/replicated-volume-replica.ts';
import { APART_HEARTBEAT_MS, ACT_AGAIN_MS, HEARTBEAT_MS, REPORT_REFRESH_MS } from '../../src/node-agent/agent.ts';
import { KubeAgentApi } from '../../src/node-agent/agent-api.ts';
import { decideFence } from '../../src/node-agent/fence.ts';
import { canonicalJson } from '../../src/runtime/canonical-json.ts';
import { Conditions } from '../../src/runtime/conditions.ts';
import { SupervisedInformer } from '../../src/runtime/informer.ts';
import { collectionPath, listCustom, mergePatch } from '../../src/runtime/kube.ts';
import { WorkQueue } from '../../src/runtime/work-queue.ts';
import { runWorkers } from '../../src/runtime/workers.ts';

/** How long the simulated engine takes to carry out an order (up, promote, demote). */
export const ACT_MS = 150;
/** kubelet's node lease: renewed every 10 s (a quarter of its 40 s duration). */
export const LEASE_RENEW_MS = 10_000;
/** kubelet's nodeStatusReportFrequency: the Node's status is posted this often when nothing changed. */
export const NODE_STATUS_REPORT_MS = 300_000;
/** A peer's loss is noticed by the engine this long after it died (ping timeout). */
export const NOTICE_MS = 1_000;

/** Shared by all simulated nodes: which nodes are dead, and since when their peers notice. */
export type World = { lostAt: Map<string, number> };

type Engine = { generation: number; epoch: number; role: 'Primary' | 'Secondary' | 'Unconfigured'; up: boolean };

const TOGETHER = 'Connected';
const AGENT_LEASE = '*lease*';

export class SimNode {
  readonly name: string;
  readonly #world: World;
  readonly #api: KubeAgentApi;
  readonly #coord: k8s.CoordinationV1Api;
  readonly #core: k8s.CoreV1Api;
  readonly #log: Logger;
  readonly #cache: SupervisedInformer<k8s.KubernetesObject>;
  readonly #queue = new WorkQueue({ baseDelayMs: 500, maxDelayMs: 30_000 });
  readonly #engines = new Map<string, Engine>();
  readonly #reported = new Map<string, { json: string; at: number; asked: string | undefined }>();
  readonly #uuids = new Map<string, string>();
  readonly #fenced = new Set<string>();
  readonly #timers: NodeJS.Timeout[] = [];
  readonly #nodeIp: string;
  #workers: Promise<void>[] = [];
  #stopped = false;
  /** When each replica last reported (ms), for the failover's "agent silent" clock. */
  readonly lastReport = new Map<string, number>();
  reports = 0;
  /** When the agent's Lease was last renewed (ms): with lastReport, the "agent silent" clock. */
  lastLease: number | undefined;

  constructor(o: {
    name: string;
    ip: string;
    world: World;
    agentKc: k8s.KubeConfig;
    kubeletKc: k8s.KubeConfig;
    log: Logger;
  }) {
    this.name = o.name;
    this.#nodeIp = o.ip;
    this.#world = o.world;
    this.#log = o.log.child({ node: o.name });
    this.#api = new KubeAgentApi(o.agentKc, o.name, { nodeIdentity: false });
    this.#coord = o.kubeletKc.makeApiClient(k8s.CoordinationV1Api);
    this.#core = o.kubeletKc.makeApiClient(k8s.CoreV1Api);
    const selector = `${LABELS.node}=${o.name}`;
    this.#cache = new SupervisedInformer<k8s.KubernetesObject>({
      kc: o.agentKc,
      log: this.#log,
      path: collectionPath(KINDS.replica.plural),
      labelSelector: selector,
      list: listCustom(o.agentKc.makeApiClient(k8s.CustomObjectsApi), KINDS.replica.plural, selector),
      onChange: (r) => this.#queue.add(`${r.metadata?.namespace}/${r.metadata?.name}`),
    });
  }

  /** The Node object as a kubelet registers it, then its status (Ready, InternalIP). */
  async register(): Promise<void> {
    await this.#core.createNode({
      body: {
        metadata: { name: this.name, labels: { 'kubernetes.io/hostname': this.name, 'kubernetes.io/os': 'linux' } },
        spec: {},
      },
    });
    await this.#postNodeStatus('True');
    await this.#coord
      .createNamespacedLease({
        namespace: 'kube-node-lease',
        body: { metadata: { name: this.name }, spec: this.#leaseSpec() },
      })
      .catch((err: unknown) => {
        if ((err as { code?: number }).code !== 409) throw err;
      });
  }

  async start(): Promise<void> {
    await this.#cache.start();
    this.#workers = runWorkers({
      queue: this.#queue,
      count: 2,
      log: this.#log,
      keyField: 'rvr',
      handle: (key) => (key === AGENT_LEASE ? this.#renewAgentLease() : this.#pass(key)),
    });
    const every = (ms: number, first: number, fn: () => Promise<unknown>) => {
      const tick = () => {
        if (this.#stopped) return;
        fn().catch((err: unknown) => this.#log.warn({ err }, 'Simulated kubelet call failed'));
        this.#timers.push(setTimeout(tick, ms));
      };
      this.#timers.push(setTimeout(tick, first));
    };
    every(HEARTBEAT_MS, HEARTBEAT_MS, async () => {
      for (const r of this.#cache.list()) this.#queue.add(`${r.metadata?.namespace}/${r.metadata?.name}`);
      this.#queue.add(AGENT_LEASE);
    });
    this.#queue.add(AGENT_LEASE);
    every(LEASE_RENEW_MS, Math.random() * LEASE_RENEW_MS, () => this.#renewLease());
    every(NODE_STATUS_REPORT_MS, Math.random() * NODE_STATUS_REPORT_MS, () => this.#postNodeStatus('True'));
  }

  /** The node dies: agent and kubelet stop at once, nothing more is written. */
  async stop(): Promise<void> {
    this.#stopped = true;
    for (const t of this.#timers) clearTimeout(t);
    this.#queue.shutDown();
    await Promise.race([Promise.all(this.#workers), new Promise((r) => setTimeout(r, 5000))]);
    await this.#cache.stop();
  }

  /** Every replica of this node as the watch has it. */
  replicas(): k8s.KubernetesObject[] {
    return [...this.#cache.list()];
  }

  #leaseSpec(): k8s.V1LeaseSpec {
    return {
      holderIdentity: this.name,
      leaseDurationSeconds: 40,
      renewTime: new k8s.V1MicroTime(Date.now()),
    };
  }

  /** kubelet keeps the Lease it last wrote and updates it (a read only after a conflict). */
  #lease: k8s.V1Lease | undefined;

  async #renewLease(): Promise<void> {
    const namespace = 'kube-node-lease';
    this.#lease ??= await this.#coord.readNamespacedLease({ name: this.name, namespace });
    try {
      this.#lease = await this.#coord.replaceNamespacedLease({
        name: this.name,
        namespace,
        body: { ...this.#lease, spec: this.#leaseSpec() },
      });
    } catch (err) {
      this.#lease = undefined;
      throw err;
    }
  }

  async #postNodeStatus(ready: 'True'): Promise<void> {
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const condition = (type: string, status: string, reason: string, message: string) => ({
      type,
      status,
      reason,
      message,
      lastHeartbeatTime: now,
      lastTransitionTime: this.#since.get(type) ?? now,
    });
    for (const t of ['MemoryPressure', 'DiskPressure', 'PIDPressure', 'Ready'])
      if (!this.#since.has(t)) this.#since.set(t, now);
    await this.#core.patchNodeStatus(
      {
        name: this.name,
        body: {
          status: {
            addresses: [
              { type: 'InternalIP', address: this.#nodeIp },
              { type: 'Hostname', address: this.name },
            ],
            capacity: { cpu: '4', memory: '16Gi', pods: '110' },
            allocatable: { cpu: '4', memory: '16Gi', pods: '110' },
            conditions: [
              condition(
                'MemoryPressure',
                'False',
                'KubeletHasSufficientMemory',
                'kubelet has sufficient memory available',
              ),
              condition('DiskPressure', 'False', 'KubeletHasNoDiskPressure', 'kubelet has no disk pressure'),
              condition('PIDPressure', 'False', 'KubeletHasSufficientPID', 'kubelet has sufficient PID available'),
              condition('Ready', ready, 'KubeletReady', 'kubelet is posting ready status'),
            ],
          },
        },
      },
      mergePatch,
    );
  }
  readonly #since = new Map<string, string>();

  /** Is the engine of this replica apart from its peer (the peer's node died and it noticed)? */
  #apart(peer: string): boolean {
    const at = this.#world.lostAt.get(peer);
    return at !== undefined && Date.now() >= at + NOTICE_MS;
  }

  async #pass(key: string): Promise<{ requeueAfterMs?: number } | undefined> {
    if (this.#stopped) return undefined;
    const [namespace, name] = key.split('/') as [string, string];
    const raw = this.#cache.get(name, namespace);
    if (!raw) return undefined;
    const parsed = ReplicatedVolumeReplica.safeParse(raw);
    if (!parsed.success) return undefined;
    const rvr = parsed.data;
    const spec = rvr.spec;
    const generation = rvr.metadata.generation ?? 0;
    let engine = this.#engines.get(key);
    // --- act: a spec not yet carried out (a stale epoch is never acted on, as the agent) ---
    if ((!engine || engine.generation !== generation) && spec.epoch >= (engine?.epoch ?? 0)) {
      const before = engine;
      await new Promise((r) => setTimeout(r, ACT_MS));
      engine = {
        generation,
        epoch: spec.epoch,
        up: spec.engine === 'Up',
        role: spec.engine === 'Up' ? spec.role : 'Unconfigured',
      };
      this.#engines.set(key, engine);
      // After acting only an overdue refresh is written, from what was read before.
      const last = this.#reported.get(key);
      if (before && (!last || Date.now() - last.at >= REPORT_REFRESH_MS)) await this.#report(rvr, before);
      return { requeueAfterMs: ACT_AGAIN_MS };
    }
    if (!engine) return undefined;
    const apart = engine.up && this.#apart(spec.peer.node);
    if (apart && engine.role === 'Primary') await this.#fencePeer(rvr);
    await this.#report(rvr, engine);
    return apart ? { requeueAfterMs: APART_HEARTBEAT_MS } : undefined;
  }

  /** The agent's Lease, from its work queue (the real agent reads its engine host first). */
  async #renewAgentLease(): Promise<undefined> {
    if (this.#stopped) return undefined;
    const at = new Date();
    await this.#api.renewLease(at);
    this.lastLease = at.getTime();
    return undefined;
  }

  /** The fence-peer handler: record the peer Outdated before writing on alone. */
  async #fencePeer(rvr: ReplicatedVolumeReplica): Promise<void> {
    const k = `${rvr.metadata.namespace}/${rvr.spec.volume}@${rvr.spec.epoch}`;
    if (this.#fenced.has(k)) return;
    const rv = await this.#api.readVolume(rvr.metadata.namespace, rvr.spec.volume);
    if (!rv) return;
    const d = decideFence(rv.status, rvr.spec, this.name, new Date());
    if (d.kind === 'write') {
      try {
        await this.#api.patchVolumeStatus(rv, { fence: d.fence });
      } catch (err) {
        if ((err as { code?: number }).code === 409) return; // read again on the next pass
        throw err;
      }
    }
    this.#fenced.add(k);
  }

  async #report(rvr: ReplicatedVolumeReplica, engine: Engine): Promise<void> {
    const key = `${rvr.metadata.namespace}/${rvr.metadata.name}`;
    const spec = rvr.spec;
    const now = new Date();
    const apart = engine.up && this.#apart(spec.peer.node);
    const conditions = new Conditions(rvr.status?.conditions, engine.generation, now);
    conditions.set({
      type: CONDITIONS.disksFound,
      status: 'True',
      reason: 'Found',
      message: 'disk and meta-disk found',
    });
    if (engine.up)
      conditions.set({
        type: CONDITIONS.engineReady,
        status: 'True',
        reason: 'Running',
        message: 'engine runs as the spec says',
      });
    const vkey = `${rvr.metadata.namespace}/${spec.volume}`;
    if (!this.#uuids.has(vkey)) this.#uuids.set(vkey, randomBytes(8).toString('hex').toUpperCase());
    const status: ReplicatedVolumeReplicaStatus = {
      role: engine.role,
      ...(engine.up
        ? {
            peerRole: apart ? 'Unknown' : engine.role === 'Primary' ? 'Secondary' : 'Primary',
            connectionState: apart ? 'WFConnection' : TOGETHER,
            diskState: 'UpToDate',
            peerDiskState: apart ? 'DUnknown' : 'UpToDate',
            outOfSyncBytes: 0,
            sizeBytes: spec.sizeBytes ?? 0,
            capacityBytes: spec.sizeBytes ?? 0,
            currentUuid: this.#uuids.get(vkey),
          }
        : {}),
      epoch: engine.epoch,
      mounted: false,
      conditions: conditions.list,
      observedGeneration: engine.generation,
    };
    const json = canonicalJson(status);
    const last = this.#reported.get(key);
    const every = apart ? APART_HEARTBEAT_MS : REPORT_REFRESH_MS;
    const asked = rvr.metadata.annotations?.[ANNOTATIONS.reportRequested];
    const requested = asked !== undefined && asked !== last?.asked;
    if (last && last.json === json && !requested && now.getTime() - last.at < every - Math.min(500, every / 4)) return;
    const body: Record<string, unknown> = Object.fromEntries(
      Object.keys(ReplicatedVolumeReplicaStatus.shape).map((k) => [k, null]),
    );
    Object.assign(body, status, { lastHeartbeatTime: now.toISOString() });
    if (await this.#api.reportStatus(rvr.metadata.namespace, rvr.metadata.name, body)) {
      this.#reported.set(key, { json, at: now.getTime(), asked });
      this.lastReport.set(key, now.getTime());
      this.reports++;
    }
  }
}
