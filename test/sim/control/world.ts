// The simulated cluster: two nodes (master, backup), each with a heartbeat and a
// node agent; kube-controller-manager's node lifecycle (NotReady after the grace
// period); one controller; the simulated API server; the pair of engine models;
// an application writing on the Primary. The controller and the agents are the
// real ones (src/controller/controller.ts, src/node-agent/agent.ts) on the
// simulated API, clock and engines. Faults are the e2e harness's: stop, start,
// partition and heal a node, cut its agent from the API, cut the replication
// link, cut the controller from the API (it loses its Lease and exits), kill and
// restart the controller and the agents, and informer watches that fall behind.
import type * as k8s from '@kubernetes/client-node';
import pino, { type Logger } from 'pino';
import { ReplicatedVolumeSpec } from '../../../src/api/replicated-volume.ts';
import { Controller } from '../../../src/controller/controller.ts';
import { NodeAgent } from '../../../src/node-agent/agent.ts';
import type { ConsumerPort } from '../../../src/node-agent/executor.ts';
import { PLACEHOLDER_SOURCE } from '../../../src/node-agent/plan.ts';
import type { Client, Obj } from './api-server.ts';
import { SimApiServer } from './api-server.ts';
import { SimAgentApi, SimCache, SimVolumeApi } from './clients.ts';
import { SimPair } from './engine.ts';
import { Rng, Scheduler } from './scheduler.ts';

export const NODES = ['master', 'backup'] as const;
export type NodeName = (typeof NODES)[number];
export const NS = 'sim';
export const VOLUME = 'db';
export const RESOURCE = `${NS}.${VOLUME}`;
export const MOUNT = '/mydata/db';
export const POOL = 'tutorial';
/** The e2e harness's timings (test/e2e/harness/paths.ts) and the chart's defaults. */
export const TIMING = { heartbeatMs: 2_000, nodeGraceMs: 8_000, leaseRenewDeadlineMs: 10_000, writeEveryMs: 250 };

type NodeState = { stopped: boolean; partitioned: boolean; apiCut: boolean; lastHeartbeat: number };

class SimClient implements Client {
  readonly id: string;
  dead = false;
  readonly #cut: () => boolean;
  constructor(id: string, cut: () => boolean) {
    this.id = id;
    this.#cut = cut;
  }
  cut(): boolean {
    return this.#cut();
  }
}

export class World {
  readonly s: Scheduler;
  readonly rng: Rng;
  readonly api: SimApiServer;
  readonly pair: SimPair;
  readonly nodes: Record<NodeName, NodeState>;
  linkCut = false;
  controllerApiCut = false;
  /** Lines of what happened, newest last. */
  readonly trace: string[] = [];
  controller: { ctl: Controller; client: SimClient; caches: SimCache<k8s.KubernetesObject>[] } | undefined;
  readonly agents = new Map<
    NodeName,
    { agent: NodeAgent; client: SimClient; cache?: SimCache<k8s.KubernetesObject> }
  >();
  #incarnation = 0;
  #controllerCutSince: number | undefined;

  constructor(seed: number) {
    this.s = new Scheduler();
    this.rng = new Rng(seed);
    this.api = new SimApiServer(this.s, this.rng);
    this.nodes = Object.fromEntries(
      NODES.map((n) => [n, { stopped: false, partitioned: false, apiCut: false, lastHeartbeat: 0 }]),
    ) as Record<NodeName, NodeState>;
    this.pair = new SimPair({
      s: this.s,
      rng: this.rng,
      trace: (l) => this.log(l),
      nodes: NODES,
      resource: RESOURCE,
      linkUp: () => this.linkUp(),
      handler: (node, res, action) => this.#handler(node as NodeName, res, action),
    });
  }

  log(line: string): void {
    this.trace.push(`${(this.s.t / 1000).toFixed(3).padStart(9)} ${line}`);
    if (this.trace.length > 4000) this.trace.splice(0, 2000);
  }

  /** A pino logger whose lines go into the trace (synchronously, so the trace is in order). */
  logger(who: string): Logger {
    const KEEP = ['node', 'role', 'epoch', 'engine', 'reason', 'detail', 'action', 'error', 'force', 'code', 'seen'];
    return pino(
      { level: 'info', base: undefined, timestamp: false },
      {
        write: (s: string) => {
          const o = JSON.parse(s) as Record<string, unknown>;
          const extra = KEEP.filter((k) => o[k] !== undefined)
            .map((k) => `${k}=${typeof o[k] === 'object' ? JSON.stringify(o[k]) : String(o[k])}`)
            .join(' ');
          this.log(`${who}: ${String(o.msg)}${extra ? ` ${extra}` : ''}`);
        },
      },
    );
  }

  reachable(n: NodeName): boolean {
    const s = this.nodes[n];
    return !s.stopped && !s.partitioned && !s.apiCut;
  }

  linkUp(): boolean {
    return !this.linkCut && NODES.every((n) => !this.nodes[n].stopped && !this.nodes[n].partitioned);
  }

  // --- setup ------------------------------------------------------------------------

  setup(): void {
    for (const [i, n] of NODES.entries()) {
      this.api.create(
        'node',
        {
          apiVersion: 'v1',
          kind: 'Node',
          metadata: { name: n },
          status: {
            conditions: [{ type: 'Ready', status: 'True', lastTransitionTime: this.#stamp() }],
            addresses: [{ type: 'InternalIP', address: `10.77.0.${10 + i}` }],
          },
        },
        'setup',
      );
    }
    // The administrator's pool: the tutorial's disks on both nodes.
    this.api.create(
      'pool',
      {
        apiVersion: 'tandem.dev/v1alpha1',
        kind: 'StoragePool',
        metadata: { name: POOL },
        spec: { nodes: NODES.map((n) => ({ node: n, devices: ['/dev/sdb1', '/dev/sdb2'] })) },
      },
      'admin',
    );
    const spec = ReplicatedVolumeSpec.parse({
      pool: POOL,
      protocol: 'C',
      filesystem: 'xfs',
      mountPath: MOUNT,
      replicas: NODES.map((n) => ({ node: n, disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' })),
    });
    this.api.create(
      'rv',
      { apiVersion: 'tandem.dev/v1alpha1', kind: 'ReplicatedVolume', metadata: { name: VOLUME, namespace: NS }, spec },
      'user',
    );
    this.#heartbeats();
    this.#writer();
    this.startController();
    for (const n of NODES) this.startAgent(n);
  }

  #stamp(): string {
    return this.s
      .now()
      .toISOString()
      .replace(/\.\d+Z$/, 'Z');
  }

  /** The node heartbeats and kube-controller-manager's NotReady/Ready marks. */
  #heartbeats(): void {
    const tick = () => {
      for (const n of NODES) {
        const st = this.nodes[n];
        if (this.reachable(n)) st.lastHeartbeat = this.s.t;
        const node = this.api.peek('node', undefined, n) as { status: { conditions: { status: string }[] } };
        const ready = node.status.conditions[0]!.status === 'True';
        const fresh = this.s.t - st.lastHeartbeat < TIMING.nodeGraceMs;
        if (ready !== fresh) {
          this.log(`kcm: node ${n} ${fresh ? 'Ready' : 'NotReady'}`);
          this.api.update(
            'node',
            undefined,
            n,
            (o) => ({
              ...o,
              status: {
                ...(o.status as object),
                conditions: [{ type: 'Ready', status: fresh ? 'True' : 'Unknown', lastTransitionTime: this.#stamp() }],
              },
            }),
            undefined,
            'kcm',
          );
        }
      }
      this.#checkControllerLease();
      this.s.setTimer(tick, 1000);
    };
    this.s.setTimer(tick, 1000);
  }

  #writer(): void {
    const tick = () => {
      this.pair.write();
      this.s.setTimer(tick, TIMING.writeEveryMs);
    };
    this.s.setTimer(tick, TIMING.writeEveryMs);
  }

  // --- the controller ----------------------------------------------------------------

  /** Starts a controller (it lists, then works); returns at once, the simulation runs it. */
  startController(): void {
    if (this.controller) return;
    const client = new SimClient(`controller-${++this.#incarnation}`, () => this.controllerApiCut);
    const caches: SimCache<k8s.KubernetesObject>[] = [];
    const keep = (c: SimCache<k8s.KubernetesObject>) => caches.push(c);
    const ctl = new Controller({
      api: new SimVolumeApi(this.api, client),
      log: this.logger('controller'),
      clock: this.s,
      volumes: SimCache.factory(this.api, client, 'rv', undefined, keep),
      replicas: SimCache.factory(this.api, client, 'rvr', undefined, keep),
      nodes: SimCache.factory(this.api, client, 'node', undefined, keep as (c: SimCache<k8s.V1Node>) => void),
      pools: SimCache.factory(this.api, client, 'pool', undefined, keep),
      leases: SimCache.factory(this.api, client, 'lease', undefined, keep),
    });
    this.controller = { ctl, client, caches };
    this.log(`${client.id}: started`);
    void ctl.startCaches().then(() => {
      if (!client.dead) ctl.startWorkers(2);
    });
  }

  /** kill -9: requests already sent still land; nothing new goes out. */
  killController(): void {
    const c = this.controller;
    if (!c) return;
    c.client.dead = true;
    void c.ctl.stopWorkers(0, this.s);
    void c.ctl.stopCaches();
    this.controller = undefined;
    this.log(`${c.client.id}: killed`);
  }

  /** A controller cut from the API server cannot renew its Lease and exits (controller-runtime does). */
  #checkControllerLease(): void {
    if (!this.controllerApiCut) {
      this.#controllerCutSince = undefined;
      return;
    }
    this.#controllerCutSince ??= this.s.t;
    if (this.controller && this.s.t - this.#controllerCutSince >= TIMING.leaseRenewDeadlineMs) {
      this.log('controller: lost its Lease; exiting');
      this.killController();
    }
  }

  // --- the agents ------------------------------------------------------------------------

  startAgent(n: NodeName): void {
    if (this.agents.has(n) || this.nodes[n].stopped) return;
    const client = new SimClient(`agent-${n}-${++this.#incarnation}`, () => !this.reachable(n));
    const alive = () => !client.dead;
    const engine = this.pair.engines.get(n)!;
    const consumer: ConsumerPort = {
      ensure: async () => {
        await this.s.sleep(this.rng.int(10, 200));
        if (!alive()) throw new Error('the agent is gone');
        if (engine.role !== 'Primary' || !engine.running) throw new Error('mount: no such device');
        engine.mounted = true;
        return { created: false };
      },
      release: async () => {
        await this.s.sleep(this.rng.int(5, 50));
        if (!alive()) throw new Error('the agent is gone');
        const was = engine.mounted;
        engine.mounted = false;
        return was;
      },
      // The simulated volume never grows: its size is not the question here.
      deviceBytes: async () => undefined,
      source: async () => (engine.mounted ? `/dev/sim-${RESOURCE}` : PLACEHOLDER_SOURCE),
      exists: async () => true,
      // The node's two disks, as the agent's checks see them: distinct block devices, unused.
      diskFacts: async (paths) =>
        new Map(paths.map((p, i) => [p, { kind: 'block' as const, id: `8:${17 + i}`, mountedAt: [], holders: [] }])),
      createBackingFile: async () => undefined,
      removeBackingFile: async () => 'absent' as const,
    };
    let cache: SimCache<k8s.KubernetesObject> | undefined;
    const agent = new NodeAgent({
      node: n,
      api: new SimAgentApi(this.api, client, n),
      engines: this.pair.driver(n, alive),
      config: { write: async () => undefined, remove: async () => false },
      consumer,
      clock: this.s,
      log: this.logger(`agent ${n}`),
      replicas: SimCache.factory(
        this.api,
        client,
        'rvr',
        (o: Obj) => o.metadata.labels?.['tandem.dev/node'] === n,
        (c) => {
          cache = c;
        },
      ),
    });
    this.agents.set(n, { agent, client, ...(cache ? { cache } : {}) });
    this.log(`${client.id}: started`);
    void agent.start();
  }

  killAgent(n: NodeName): void {
    const a = this.agents.get(n);
    if (!a) return;
    a.client.dead = true;
    void a.agent.stop();
    this.agents.delete(n);
    this.log(`${a.client.id}: killed`);
  }

  async #handler(n: NodeName, res: string, action: 'fence' | 'unfence' | 'rejoin'): Promise<number> {
    // The handler is a process started by the engine; it asks the agent over its socket.
    await this.s.sleep(this.rng.int(30, 200));
    const a = this.agents.get(n);
    if (!a || this.nodes[n].stopped) {
      this.log(`engine ${n}: ${action} handler: cannot ask the node agent (exit 1)`);
      return 1;
    }
    // The agent's socket server answers 1 when the request fails (fence.ts serveFenceRequests).
    return a.agent.handle(res, action).catch(() => 1);
  }

  // --- faults (the e2e harness's) -------------------------------------------------------

  stopNode(n: NodeName): void {
    this.log(`fault: stop node ${n}`);
    this.nodes[n].stopped = true;
    this.killAgent(n);
    this.pair.crash(n);
    this.pair.linkChanged();
  }

  /** The node boots again; the harness then starts its agent. */
  startNode(n: NodeName): void {
    if (!this.nodes[n].stopped) return;
    this.log(`fault: start node ${n}`);
    this.nodes[n].stopped = false;
    this.pair.linkChanged();
    this.startAgent(n);
  }

  partition(n: NodeName, on: boolean): void {
    this.log(`fault: ${on ? 'partition' : 'heal'} node ${n}`);
    this.nodes[n].partitioned = on;
    this.pair.linkChanged();
  }

  cutApi(n: NodeName, on: boolean): void {
    this.log(`fault: ${on ? 'cut' : 'heal'} the API for node ${n}`);
    this.nodes[n].apiCut = on;
  }

  cutLink(on: boolean): void {
    this.log(`fault: ${on ? 'cut' : 'heal'} the replication link`);
    this.linkCut = on;
    this.pair.linkChanged();
  }

  cutControllerApi(on: boolean): void {
    this.log(`fault: ${on ? 'cut' : 'heal'} the controller's API`);
    this.controllerApiCut = on;
  }

  /** An informer falls behind (its watch reconnects with backoff): nothing reaches it for ms. */
  stallWatch(
    which: 'controller-volumes' | 'controller-replicas' | 'controller-nodes' | `agent-${NodeName}`,
    ms: number,
  ): void {
    this.log(`fault: the ${which} watch stalls for ${ms} ms`);
    if (which.startsWith('agent-')) this.agents.get(which.slice(6) as NodeName)?.cache?.stall(ms);
    else {
      const i = ['controller-volumes', 'controller-replicas', 'controller-nodes'].indexOf(which);
      this.controller?.caches[i]?.stall(ms);
    }
  }

  /** The user moves the role (kubectl patch rv --type merge -p '{"spec":{"primary":N}}'). */
  setPreferred(n: NodeName | undefined): void {
    this.log(`user: spec.primary = ${n ?? '(unset)'}`);
    this.api.update(
      'rv',
      NS,
      VOLUME,
      (o) => {
        const spec = { ...(o.spec as Record<string, unknown>) };
        if (n) spec.primary = n;
        else delete spec.primary;
        return { ...o, spec };
      },
      undefined,
      'user',
    );
  }

  /** Puts every fault away, as the e2e's healEverything; agents of restarted nodes come back. */
  healAll(): void {
    this.cutControllerApi(false);
    this.linkCut = false;
    for (const n of NODES) {
      this.nodes[n].partitioned = false;
      this.nodes[n].apiCut = false;
    }
    this.pair.linkChanged();
    for (const n of NODES) this.startNode(n);
    if (!this.controller) this.startController();
    for (const n of NODES) if (!this.agents.has(n)) this.startAgent(n);
  }
}
