// A simulated API server with what the controller and the agents rely on:
// resourceVersions (one counter, as etcd's revision), generation bumped by spec
// changes only, writes conditional on resourceVersion (409 on a mismatch),
// no-op updates that change nothing, merge patches, and watches whose events
// reach each client in order, late by a seeded lag, held while the client is cut
// off or its watch is stalled (an informer reconnecting), then delivered in a rush.
// Every request and every answer crosses a simulated network: latency both ways,
// and a cut-off client's request is lost, or applied with its answer lost.
import * as k8s from '@kubernetes/client-node';
import type { Rng, Scheduler } from './scheduler.ts';

export type Kind = 'rv' | 'rvr' | 'node' | 'secret' | 'pool' | 'lease';
export type Obj = {
  apiVersion?: string;
  kind?: string;
  metadata: {
    name: string;
    namespace?: string;
    uid?: string;
    resourceVersion?: string;
    generation?: number;
    labels?: Record<string, string>;
    annotations?: Record<string, string>;
    finalizers?: string[];
    [k: string]: unknown;
  };
  spec?: unknown;
  status?: unknown;
  [k: string]: unknown;
};

export type Change = { kind: Kind; type: 'ADDED' | 'MODIFIED' | 'DELETED'; old: Obj | undefined; obj: Obj; by: string };

const clone = <T>(x: T): T => (x === undefined ? x : (JSON.parse(JSON.stringify(x)) as T));
const same = (a: unknown, b: unknown) => JSON.stringify(a) === JSON.stringify(b);

export class ApiError extends k8s.ApiException<unknown> {
  constructor(code: number, reason: string) {
    super(code, reason, { kind: 'Status', code, reason, message: reason }, {});
  }
}

/** A client of the API server: its requests cross the network only while it is reachable. */
export interface Client {
  readonly id: string;
  /** Cut off from the API server now. */
  cut(): boolean;
  /** Gone (killed): new requests fail at once; requests already sent still land. */
  dead: boolean;
}

type Watcher = {
  client: Client;
  kind: Kind;
  filter: (o: Obj) => boolean;
  deliver: (type: Change['type'], obj: Obj) => void;
  backlog: { type: Change['type']; obj: Obj }[];
  /** Virtual time before which nothing is delivered (a stalled watch). */
  stalledUntil: number;
  lastAt: number;
  pumping: boolean;
  closed: boolean;
};

export class SimApiServer {
  readonly #s: Scheduler;
  readonly #rng: Rng;
  #rv = 1;
  readonly #store = new Map<Kind, Map<string, Obj>>([
    ['rv', new Map()],
    ['rvr', new Map()],
    ['node', new Map()],
    ['secret', new Map()],
    ['pool', new Map()],
    ['lease', new Map()],
  ]);
  readonly #watchers = new Set<Watcher>();
  readonly events: { at: number; obj: string; type: string; reason: string; message: string; by: string }[] = [];
  /** Called with every committed change, before any watcher hears of it (invariants). */
  onChange: ((c: Change) => void) | undefined;
  /** Extra watch lag: most events in ms, a few in seconds (an informer that fell behind). */
  lag = { typicalMs: [1, 30] as [number, number], slowChance: 0.01, slowMs: [500, 4000] as [number, number] };
  latencyMs: [number, number] = [1, 15];
  timeoutMs = 5_000;

  constructor(s: Scheduler, rng: Rng) {
    this.#s = s;
    this.#rng = rng;
  }

  static key(o: { metadata: { name: string; namespace?: string } }): string {
    return `${o.metadata.namespace ?? ''}/${o.metadata.name}`;
  }

  // --- server side (synchronous, at the instant a request arrives) -----------------

  get(kind: Kind, namespace: string | undefined, name: string): Obj | undefined {
    return clone(this.#store.get(kind)!.get(`${namespace ?? ''}/${name}`));
  }

  list(kind: Kind, filter: (o: Obj) => boolean = () => true): Obj[] {
    return [...this.#store.get(kind)!.values()].filter(filter).map(clone);
  }

  /** Peek without copying (invariant checks only). */
  peek(kind: Kind, namespace: string | undefined, name: string): Obj | undefined {
    return this.#store.get(kind)!.get(`${namespace ?? ''}/${name}`);
  }

  create(kind: Kind, obj: Obj, by: string): Obj {
    const m = this.#store.get(kind)!;
    const k = SimApiServer.key(obj);
    if (m.has(k)) throw new ApiError(409, 'AlreadyExists');
    const o = clone(obj);
    o.metadata.resourceVersion = String(++this.#rv);
    o.metadata.generation = 1;
    o.metadata.uid ??= `uid-${kind}-${k}`;
    m.set(k, o);
    this.#commit({ kind, type: 'ADDED', old: undefined, obj: o, by });
    return clone(o);
  }

  /**
   * The one write path: `mutate` gets a copy of the stored object and returns the
   * new one; `precondition` is the resourceVersion the writer read (409 if it moved).
   * A write that changes nothing changes nothing (no new resourceVersion, no event).
   */
  update(
    kind: Kind,
    namespace: string | undefined,
    name: string,
    mutate: (o: Obj) => Obj,
    precondition: string | undefined,
    by: string,
  ): Obj {
    const m = this.#store.get(kind)!;
    const k = `${namespace ?? ''}/${name}`;
    const old = m.get(k);
    if (!old) throw new ApiError(404, 'NotFound');
    if (precondition !== undefined && precondition !== old.metadata.resourceVersion)
      throw new ApiError(409, 'Conflict');
    const next = mutate(clone(old));
    next.metadata = {
      ...next.metadata,
      resourceVersion: old.metadata.resourceVersion,
      generation: old.metadata.generation,
    };
    if (same(next, old)) return clone(old);
    if (!same(next.spec, old.spec)) next.metadata.generation = (old.metadata.generation ?? 1) + 1;
    next.metadata.resourceVersion = String(++this.#rv);
    m.set(k, next);
    this.#commit({ kind, type: 'MODIFIED', old, obj: next, by });
    return clone(next);
  }

  recordEvent(obj: string, e: { type: string; reason: string; message: string }, by: string): void {
    this.events.push({ at: this.#s.t, obj, ...e, by });
  }

  #commit(c: Change): void {
    this.onChange?.(c);
    for (const w of this.#watchers) {
      if (w.closed || w.kind !== c.kind) continue;
      if (!w.filter(c.obj) && !(c.old && w.filter(c.old))) continue;
      w.backlog.push({ type: c.type, obj: clone(c.obj) });
      this.#pump(w);
    }
  }

  // --- watches -----------------------------------------------------------------

  /** A watch from now on; events reach `deliver` in order, each late by the lag. */
  watch(
    client: Client,
    kind: Kind,
    filter: (o: Obj) => boolean,
    deliver: (type: Change['type'], obj: Obj) => void,
  ): { close(): void; stall(ms: number): void } {
    const w: Watcher = {
      client,
      kind,
      filter,
      deliver,
      backlog: [],
      stalledUntil: 0,
      lastAt: 0,
      pumping: false,
      closed: false,
    };
    this.#watchers.add(w);
    return {
      close: () => {
        w.closed = true;
        this.#watchers.delete(w);
      },
      stall: (ms: number) => {
        w.stalledUntil = Math.max(w.stalledUntil, this.#s.t + ms);
      },
    };
  }

  #lag(): number {
    const l = this.lag;
    return this.#rng.chance(l.slowChance) ? this.#rng.int(...l.slowMs) : this.#rng.int(...l.typicalMs);
  }

  /** Delivers the backlog one event at a time; a cut-off or stalled watch waits and retries. */
  #pump(w: Watcher): void {
    if (w.pumping || w.closed) return;
    w.pumping = true;
    const step = () => {
      w.pumping = false;
      if (w.closed || w.backlog.length === 0) return;
      if (w.client.dead) return;
      if (w.client.cut() || this.#s.t < w.stalledUntil) {
        w.pumping = true;
        this.#s.setTimer(step, Math.max(200, w.stalledUntil - this.#s.t));
        return;
      }
      const e = w.backlog.shift()!;
      w.deliver(e.type, e.obj);
      if (w.backlog.length > 0) {
        w.pumping = true;
        this.#s.setTimer(step, this.#rng.int(0, 2));
      }
    };
    const at = Math.max(w.lastAt, this.#s.t + this.#lag());
    w.lastAt = at;
    w.pumping = true;
    this.#s.setTimer(step, at - this.#s.t);
  }

  // --- the network -------------------------------------------------------------

  /**
   * A request from `client`: it arrives after a latency and `op` runs then, on the
   * server; the answer comes back after another. A client cut off when it sends
   * gets a timeout and nothing happened; one cut off when the answer travels gets
   * a timeout although it happened.
   */
  async call<T>(client: Client, op: () => T): Promise<T> {
    if (client.dead) throw new Error(`${client.id} is gone`);
    if (client.cut()) {
      await this.#s.sleep(this.timeoutMs);
      throw new Error(`${client.id}: the API server did not answer (cut off)`);
    }
    await this.#s.sleep(this.#rng.int(...this.latencyMs));
    let result: T | undefined;
    let error: unknown;
    try {
      result = op();
    } catch (err) {
      error = err;
    }
    await this.#s.sleep(this.#rng.int(...this.latencyMs));
    if (client.cut()) {
      await this.#s.sleep(this.timeoutMs);
      throw new Error(`${client.id}: the answer was lost (cut off)`);
    }
    if (error !== undefined) throw error;
    return result as T;
  }
}
