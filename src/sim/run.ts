// One simulated round: two real engines (src/replication, unchanged) in one
// process, over simulated disks and an in-memory network, driven by a seeded
// workload and seeded faults, with the invariants checked after every event.
//
// A round: set up a pair (fresh metadata, the initial sync by --clear-bitmap or a
// forced full sync), then `steps` actions — application writes/reads/flushes,
// administration (manual mode: primary, secondary, disconnect, connect, invalidate,
// verify, pause/resume, down/up; managed mode: an arbiter with fencing that fails
// the volume over, as the controller does with the API server), and faults
// (process crash, power loss of one or both nodes, link cut/heal/slow, disk
// errors) — each followed by a random stretch of simulated time. Then everything
// is healed and the pair must converge: Connected, UpToDate/UpToDate, and the two
// disks byte-identical, holding every write the oracle (oracle.ts) says must be there.
import pino, { type Logger } from 'pino';
import { ResourceConfig, type HostConfig } from '../api/config.ts';
import { Engine } from '../replication/engine.ts';
import {
  AL_BYTES,
  AL_OFFSET,
  BITMAP_OFFSET,
  internalMdBytes,
  locateMetadata,
  Metadata,
} from '../replication/metadata.ts';
import { decodeTransaction } from '../replication/activity-log.ts';
import { hasLocalDisk, isConnected, isSyncTarget } from '../replication/states.ts';
import type { EngineState } from '../replication/state.ts';
import type { ConnectPlan } from '../replication/sync-plan.ts';
import type { HandlerRunner, World } from '../replication/world.ts';
import { EventQueue } from './clock.ts';
import { BLOCK, decodeBlock, writeContent } from './content.ts';
import { SimDisks } from './disk.ts';
import { applyMutants, type Mutant } from './mutants.ts';
import { SimNetwork } from './network.ts';
import { Oracle, type Violation } from './oracle.ts';
import { Rng } from './rng.ts';

export type Mode = 'manual' | 'managed';

export interface RoundOptions {
  seed: number;
  /** Actions in the round (default 120). */
  steps?: number;
  /** Default: chosen by the seed. */
  mode?: Mode;
  /** Old bugs put back, to check that the simulator finds them. */
  mutants?: Mutant[];
  /** Engine log lines kept per node for the failure report. */
  logLines?: number;
}

export interface RoundResult {
  seed: number;
  mode: Mode;
  violations: Violation[];
  /** The runner's actions, one line each. */
  trace: string[];
  /** The engines' last log lines (failures only). */
  logs: string[];
  stats: { events: number; simulatedMs: number; writes: number; acked: number; faults: number; connections: number };
}

const RESOURCE = 'sim0';
const NODES = ['alpha', 'beta'] as const;
type NodeName = (typeof NODES)[number];

/** The next turn of the real event loop: every promise chain started by the last event has run by then. */
const settleMicrotasks = (): Promise<void> => new Promise((resolve) => setImmediate(resolve));

class SimNode {
  readonly name: NodeName;
  readonly disks: SimDisks;
  readonly host: HostConfig;
  incarnation = 0;
  /** The machine's boot: a power loss starts a new one, a process crash does not. */
  boot = 1;
  running = false;
  engine: Engine | undefined;
  last: EngineState | undefined;
  /** Reachable from the arbiter (managed mode: the node is Ready for the control plane). */
  reachable = true;
  downSince = 0;
  readonly logRing: string[] = [];
  readonly #logLines: number;

  constructor(name: NodeName, disks: SimDisks, host: HostConfig, logLines: number) {
    this.name = name;
    this.disks = disks;
    this.host = host;
    this.#logLines = logLines;
  }

  log(line: string): void {
    this.logRing.push(line.trimEnd());
    if (this.logRing.length > this.#logLines) this.logRing.shift();
  }
}

interface Arbiter {
  primary: NodeName | undefined;
  epoch: number;
  fenced: Set<NodeName>;
}

export async function runRound(o: RoundOptions): Promise<RoundResult> {
  const undo = applyMutants(o.mutants ?? []);
  const sim = new Sim(o);
  // In an engine process an unhandled rejection is fatal: here it fails the round.
  const onUnhandled = (err: unknown): void =>
    sim.oracle.fail('no unhandled failure (it would kill the engine process)', (err as Error).stack ?? String(err));
  process.on('unhandledRejection', onUnhandled);
  try {
    await sim.run();
    return sim.result();
  } finally {
    process.off('unhandledRejection', onUnhandled);
    undo();
  }
}

class Sim {
  readonly seed: number;
  readonly rng: Rng;
  /**
   * Which writes are TRIM/WRITE_ZEROES: a stream of its own, so that adding them left every
   * other choice of a seed as it was (the mutant seeds in test/sim/engine still find their bugs).
   */
  readonly workloadRng: Rng;
  readonly q = new EventQueue();
  readonly net: SimNetwork;
  readonly nodes: Record<NodeName, SimNode>;
  readonly oracle = new Oracle([...NODES]);
  readonly mode: Mode;
  readonly steps: number;
  /** The size a person last asked grow-disk for (it only goes up). */
  growTo = 0;
  readonly config: ResourceConfig;
  readonly trace: string[] = [];
  readonly arbiter: Arbiter = { primary: undefined, epoch: 0, fenced: new Set() };
  readonly inflight: Record<NodeName, Set<number>> = { alpha: new Set(), beta: new Set() };
  readonly hot: number[];
  writeSeq = 0;
  ackSeq = 0;
  stats = { writes: 0, acked: 0, faults: 0 };
  /** SIM_DEBUG=1: every acknowledgement and flush in the trace. */
  readonly debug = process.env.SIM_DEBUG === '1';
  /** A person discarded this node's data (invalidate, the peer's primary --force, --discard-my-data). */
  readonly userDiscard: Record<NodeName, boolean> = { alpha: false, beta: false };

  constructor(o: RoundOptions) {
    this.seed = o.seed;
    this.rng = new Rng(o.seed);
    this.workloadRng = new Rng(o.seed ^ 0x7a3e0);
    const r = this.rng;
    this.mode = o.mode ?? (r.chance(0.5) ? 'manual' : 'managed');
    this.steps = o.steps ?? 120;
    this.net = new SimNetwork(this.q, r.fork(), {
      latency: [0.02, 0.3],
      spike: [5, 200],
      detect: [500, 3000],
      connect: [1, 100],
    });
    const dataMiB = r.pick([16, 32, 64]);
    const internal = r.chance(0.5);
    const managed = this.mode === 'managed';
    const protocol = managed ? 'C' : r.weighted({ C: 8, B: 1, A: 1 });
    const hosts = NODES.map(
      (name, i): HostConfig => ({
        name,
        minor: 0,
        disk: `/dev/${name}/data`,
        metaDisk: internal ? { kind: 'internal' } : { kind: 'flexible', path: `/dev/${name}/meta` },
        address: { family: 'ipv4', host: `10.0.0.${i + 1}`, port: 7789 },
      }),
    );
    this.config = ResourceConfig.parse({
      name: RESOURCE,
      protocol,
      hosts,
      net: {
        allowTwoPrimaries: false,
        afterSb0pri: managed
          ? 'disconnect'
          : r.pick(['disconnect', 'discard-zero-changes', 'discard-least-changes', 'discard-younger-primary']),
        afterSb1pri: managed ? 'disconnect' : r.pick(['disconnect', 'consensus', 'discard-secondary']),
        afterSb2pri: 'disconnect',
        verifyAlg: 'crc32c',
        csumsAlg: r.chance(0.3) ? 'crc32c' : undefined,
        timeoutMs: 6000,
        maxBuffers: r.pick([32, 256, 2048]),
        maxEpochSize: r.pick([4, 64, 2048]),
        maxEpochBytes: r.pick([64 * 1024, 8 * 1024 * 1024]),
        maxEpochAgeMs: r.pick([5, 100, 1000]),
      },
      disk: {
        fencing: managed ? 'resource-and-stonith' : 'dont-care',
        onIoError: 'detach',
        alExtents: 7,
        discardedDataDir: '/var/lib/tandem/discarded',
        resyncRate: r.chance(0.3) ? 64 * 1024 * 1024 : undefined,
      },
      handlers: managed
        ? { 'fence-peer': 'sim', 'unfence-peer': 'sim', 'split-brain': 'sim' }
        : { 'split-brain': 'sim' },
      source: 'sim',
    });
    const size = dataMiB * 1024 * 1024;
    const timing = {
      read: [0.01, 0.1] as [number, number],
      write: [0.01, 0.2] as [number, number],
      sync: [0.2, 3] as [number, number],
      slow: 0.01,
    };
    this.nodes = {} as Record<NodeName, SimNode>;
    for (const [i, name] of NODES.entries()) {
      const disks = new SimDisks(this.q, r.fork(), timing);
      disks.add(hosts[i]!.disk, internal ? size + 1024 * 1024 : size + (i === 0 ? 0 : 4096 * r.int(0, 64)));
      if (!internal) disks.add(`/dev/${name}/meta`, 4 * 1024 * 1024);
      this.nodes[name] = new SimNode(name, disks, hosts[i]!, o.logLines ?? 60);
    }
    const watch = process.env.SIM_WATCH_BLOCK;
    if (watch !== undefined) {
      const wb = Number(watch);
      for (const n of NODES) {
        const f = this.nodes[n].disks.file(hosts[NODES.indexOf(n)]!.disk);
        f.onWrite = (offset, data) => {
          const at = wb * BLOCK - offset;
          if (at < 0 || at >= data.length) return;
          this.note(
            `${n}: WRITE lands on block ${wb}: ${JSON.stringify(decodeBlock(Buffer.concat([data.subarray(at, at + BLOCK), Buffer.alloc(BLOCK)]).subarray(0, BLOCK), wb))} (${data.length} bytes at ${offset}) ${new Error().stack
              ?.split('\n')
              .slice(3, 9)
              .map((l) =>
                l
                  .trim()
                  .replace(/^at /, '')
                  .replace(/\(file:\/\/\/work\/main\//, '('),
              )
              .join(' < ')}`,
          );
        };
      }
    }
    if (watch !== undefined) {
      const wb = Number(watch);
      for (const n of NODES) {
        const f = this.nodes[n].disks.file(internal ? hosts[NODES.indexOf(n)]!.disk : `/dev/${n}/meta`);
        const base = internal ? Math.floor((f.size - internalMdBytes(f.size)) / 4096) * 4096 : 0;
        const at = base + BITMAP_OFFSET + (wb >> 3);
        const dataWatch = f.onWrite;
        const alStart = base + AL_OFFSET;
        f.onWrite = (offset, data) => {
          dataWatch?.(offset, data);
          if (offset >= alStart && offset < alStart + AL_BYTES) {
            const tx = decodeTransaction(Buffer.from(data));
            this.note(
              `${n}: AL transaction ${tx ? `seq ${tx.seq}: [${tx.extents.join(',')}]` : 'undecodable'} (extent of block ${wb}: ${Math.floor(wb / 1024)})`,
            );
          }
          if (at < offset || at >= offset + data.length) return;
          this.note(
            `${n}: METADATA bit of block ${wb} written as ${(data[at - offset]! >> (wb & 7)) & 1} ${new Error().stack
              ?.split('\n')
              .slice(3, 12)
              .map((l) =>
                l
                  .trim()
                  .replace(/^at /, '')
                  .replace(/\(file:\/\/\/work\/main\//, '('),
              )
              .join(' < ')}`,
          );
        };
      }
    }
    // The blocks the application works on: a few per 4 MiB extent, so the activity log (7 extents) evicts.
    const blocks = size / BLOCK;
    this.hot = [...new Set(Array.from({ length: 48 }, () => r.int(0, blocks - 9)))].sort((a, b) => a - b);
  }

  note(line: string): void {
    this.trace.push(`${(this.q.now / 1000).toFixed(3)}s ${line}`);
  }

  other(n: NodeName): NodeName {
    return n === 'alpha' ? 'beta' : 'alpha';
  }

  // --- driving simulated time -----------------------------------------------------

  /** Runs simulated time forward by `ms`, one event at a time, checking after each. */
  async advance(ms: number): Promise<void> {
    const until = this.q.now + ms;
    for (;;) {
      await settleMicrotasks();
      this.check();
      if (this.oracle.violations.length > 0) return;
      if (!this.q.runOne(until)) break;
    }
    await settleMicrotasks();
    this.check();
  }

  /** Runs simulated time until `p` settles (or `maxMs` passed: then it throws). */
  async drive<T>(p: Promise<T>, maxMs: number, what: string): Promise<T> {
    let done = false;
    let value: T | undefined;
    let error: unknown;
    p.then(
      (v) => {
        done = true;
        value = v;
      },
      (e: unknown) => {
        done = true;
        error = e;
      },
    );
    const deadline = this.q.now + maxMs;
    for (;;) {
      await settleMicrotasks();
      this.check();
      if (done) break;
      if (!this.q.runOne(deadline)) throw new Error(`${what}: did not finish within ${maxMs} ms of simulated time`);
    }
    if (error !== undefined) throw error;
    return value as T;
  }

  /** Runs until `pred` holds (checked after every event), or `maxMs` passed. */
  async until(pred: () => boolean, maxMs: number): Promise<boolean> {
    const deadline = this.q.now + maxMs;
    for (;;) {
      await settleMicrotasks();
      this.check();
      if (pred() || this.oracle.violations.length > 0) return pred();
      if (!this.q.runOne(deadline)) return pred();
    }
  }

  // --- processes ------------------------------------------------------------------

  private world(node: SimNode, alive: () => boolean, rng: Rng): World {
    return {
      host: { bootId: () => BigInt(node.boot) * 2n + 1n },
      clock: this.q.clock(alive),
      storage: node.disks.storage(alive),
      transport: this.net.transport(node.name, alive),
      handlers: this.handlers(node, alive),
      random: { bytes: (n) => rng.bytes(n) },
    };
  }

  private handlers(node: SimNode, alive: () => boolean): HandlerRunner {
    return {
      run: (name, command) =>
        new Promise((resolve) => {
          if (command === undefined) {
            resolve(undefined);
            return;
          }
          this.q.at(
            this.rng.int(1, 50),
            () => {
              const code = this.handler(node.name, name);
              this.note(`${node.name}: handler ${name} exited ${code}`);
              resolve(code);
            },
            alive,
          );
        }),
    };
  }

  /** The handlers' effect on the arbiter (managed mode): fence-peer and unfence-peer, as the agent's script does against the API server. */
  private handler(node: NodeName, name: string): number {
    const a = this.arbiter;
    const peer = this.other(node);
    if (name === 'fence-peer') {
      if (!this.nodes[node].reachable) return -1;
      if (a.primary !== node) return 6;
      a.fenced.add(peer);
      return 7;
    }
    if (name === 'unfence-peer') {
      if (this.nodes[node].reachable && a.primary === node) a.fenced.delete(peer);
      return 0;
    }
    return 0;
  }

  private logger(node: SimNode): Logger {
    return pino(
      { base: { node: node.name }, timestamp: () => `,"t":${this.q.now.toFixed(3)}` },
      { write: (line: string) => node.log(line) },
    );
  }

  /** Starts an engine process on `node`: attach and, usually, connect (`tandemadm up`). */
  start(name: NodeName, connect = true): void {
    const node = this.nodes[name];
    if (node.running) return;
    node.incarnation++;
    const inc = node.incarnation;
    node.running = true;
    const alive = (): boolean => node.running && node.incarnation === inc;
    const peer = this.nodes[this.other(name)];
    const engine = new Engine({
      config: this.config,
      self: node.host,
      peer: peer.host,
      logger: this.logger(node),
      world: this.world(node, alive, this.rng.fork()),
    });
    engine.on('state', (s, cause) => {
      if (alive()) this.onState(node, s, cause);
    });
    engine.on('plan', (p) => {
      if (alive()) this.onPlan(node, p);
    });
    engine.on('synced', (connected) => {
      if (!alive()) return;
      const peerName = this.other(name);
      this.oracle.resyncDone(name, peerName, connected);
      this.userDiscard[name] = false;
      this.note(`${name}: resync finished${connected ? '' : ' after the link dropped'}, now holds ${peerName}'s data`);
    });
    engine.on('bug', (m) => {
      if (alive()) this.oracle.fail('state transitions are ones the state machine allows', `${name}: ${m}`);
    });
    node.engine = engine;
    node.last = engine.state;
    this.note(`${name}: engine started (incarnation ${inc})`);
    this.op(name, 'up', async () => {
      await engine.attach();
      if (connect) await engine.connect();
    });
  }

  /** Kills `node`'s engine (SIGKILL), or cuts its power: its page cache goes too. */
  kill(name: NodeName, powerLoss: boolean): void {
    const node = this.nodes[name];
    if (!node.running) return;
    node.running = false;
    node.engine = undefined;
    node.downSince = this.q.now;
    this.inflight[name].clear();
    this.net.processDied(name, powerLoss);
    this.stats.faults++;
    if (powerLoss) {
      node.boot++;
      const lost = node.disks.powerLoss(this.rng.pick([0, 0.5, 0.9]));
      this.oracle.powerLoss(name);
      this.note(`${name}: POWER LOSS (${lost} cached sectors lost)`);
    } else this.note(`${name}: process killed`);
  }

  /** Runs an engine call in the background, as a person's command would; the outcome goes to the trace. */
  op(name: NodeName, what: string, fn: () => Promise<void>): void {
    const node = this.nodes[name];
    const inc = node.incarnation;
    fn().then(
      () => {
        if (node.incarnation === inc) this.note(`${name}: ${what}: ok`);
      },
      (err: unknown) => {
        if (node.incarnation === inc) this.note(`${name}: ${what}: ${(err as Error).message}`);
      },
    );
  }

  // --- what the engines say ----------------------------------------------------------

  private onState(node: SimNode, s: EngineState, cause: string): void {
    const prev = node.last;
    node.last = { ...s };
    if (!prev) return;
    const peer = this.other(node.name);
    if (prev.disk !== 'Failed' && s.disk === 'Failed') {
      this.oracle.diskFailed(node.name);
      this.note(`${node.name}: disk failed (${cause})`);
    }
    const fromTarget = isSyncTarget(prev.conn) || prev.conn === 'WFBitMapT';
    if (fromTarget && !isConnected(s.conn)) this.oracle.partedDuringResync(node.name, peer);
    // A person's `primary --force` accepts whatever that node holds: no check there.
    if (
      this.mode === 'managed' &&
      prev.role !== 'Primary' &&
      s.role === 'Primary' &&
      s.disk === 'UpToDate' &&
      !cause.includes('--force')
    ) {
      const file = node.disks.file(node.host.disk);
      this.oracle.promoted(node.name, (block) => decodeBlock(file.view(block * BLOCK, BLOCK), block));
    }
    if (
      prev.conn !== s.conn &&
      (this.debug || s.conn === 'StandAlone' || s.conn === 'Connected' || isSyncTarget(s.conn))
    )
      this.note(`${node.name}: ${prev.conn} -> ${s.conn} [${cause}]`);
  }

  private onPlan(node: SimNode, p: ConnectPlan): void {
    const peer = this.other(node.name);
    if (p.kind !== 'sync') {
      this.note(`${node.name}: connect refused: ${p.kind === 'refuse' ? p.reason : p.kind}`);
      return;
    }
    this.note(`${node.name}: decided ${p.decision} (${p.rule})`);
    // "In sync" is a claim about two disks with data; a Diskless or Inconsistent side makes none.
    const data = (d: string): boolean => d === 'UpToDate' || d === 'Consistent' || d === 'Outdated';
    if (p.role === 'none' && data(p.disk) && data(p.peerDisk)) this.oracle.connectedInSync(node.name, peer);
    if (p.role === 'target') {
      const victim = p.splitBrain?.victim === 'self' || this.userDiscard[node.name];
      // A person's choice holds until a resync as target completes (an interrupted one resumes).
      this.oracle.resyncStarts(node.name, peer, victim, p.rule);
    }
  }

  /** After every event. */
  private check(): void {
    const a = this.nodes.alpha;
    const b = this.nodes.beta;
    const ea = a.running ? a.engine : undefined;
    const eb = b.running ? b.engine : undefined;
    if (ea && eb && !this.config.net.allowTwoPrimaries) {
      const both = ea.state.role === 'Primary' && eb.state.role === 'Primary';
      if (both && isConnected(ea.state.conn) && isConnected(eb.state.conn))
        this.oracle.fail(
          'never two Primaries',
          `both nodes are Primary while connected (${ea.state.conn}/${eb.state.conn})`,
        );
    }
  }

  // --- the application ----------------------------------------------------------------

  /** The node a Primary mirrors its writes to right now (as its status says), if any. */
  private replicatesTo(name: NodeName): NodeName | undefined {
    const e = this.nodes[name].engine;
    if (!e) return undefined;
    const s = e.state;
    const takes =
      s.conn === 'Connected' ||
      s.conn === 'WFBitMapS' ||
      s.conn === 'SyncSource' ||
      s.conn === 'PausedSyncS' ||
      s.conn === 'WFBitMapT' ||
      s.conn === 'VerifyS' ||
      s.conn === 'VerifyT';
    return takes && s.peerDisk !== 'Diskless' && s.peerDisk !== 'Failed' && s.peerDisk !== 'DUnknown'
      ? this.other(name)
      : undefined;
  }

  /** An application write; `zeroes`: a TRIM or WRITE_ZEROES of the blocks instead (reads back as zeroes). */
  private appWrite(name: NodeName, zeroes = false): void {
    const node = this.nodes[name];
    const e = node.engine;
    if (!e || !node.running || e.state.role !== 'Primary') return;
    const count = this.rng.chance(0.8) ? 1 : this.rng.int(2, 8);
    const first = this.rng.chance(0.9) ? this.rng.pick(this.hot) : this.rng.int(0, e.size / BLOCK - 9);
    const blocks = Array.from({ length: count }, (_, i) => first + i).filter((b) => (b + 1) * BLOCK <= e.size);
    if (blocks.length === 0 || blocks.some((b) => this.inflight[name].has(b))) return;
    const w = ++this.writeSeq;
    const fua = this.rng.chance(0.1);
    const punch = zeroes && this.workloadRng.chance(0.5);
    if (zeroes) this.oracle.zeroWrite(w);
    const inc = node.incarnation;
    const peerAtIssue = this.replicatesTo(name);
    const peerBoot = this.nodes[this.other(name)].boot;
    for (const b of blocks) {
      this.inflight[name].add(b);
      this.oracle.issued(name, peerAtIssue, b, w);
    }
    this.stats.writes++;
    const done = zeroes
      ? e.zero(blocks[0]! * BLOCK, blocks.length * BLOCK, fua, punch)
      : e.write(blocks[0]! * BLOCK, writeContent(w, blocks[0]!, blocks.length), fua);
    done.then(
      () => {
        if (node.incarnation !== inc || !node.running) return;
        const a = ++this.ackSeq;
        const peer = this.replicatesTo(name);
        const disk = e.localDiskUsable();
        // The peer holds it for certain under protocol C, and only as a whole copy (UpToDate):
        // a SyncTarget's blocks are overwritten by the resync that has to finish first.
        const certain = this.config.protocol === 'C' && e.state.peerDisk === 'UpToDate';
        const restarted = this.nodes[this.other(name)].boot !== peerBoot;
        for (const b of blocks) this.oracle.acked(name, b, w, a, fua, peer, certain, disk, restarted);
        if (this.debug)
          this.note(
            `${name}: ack ${zeroes ? (punch ? 'trim' : 'write-zeroes') : 'write'} ${w} blocks ${blocks.join(',')}${fua ? ' FUA' : ''} (replicated to ${peer ?? 'nobody'})`,
          );
        this.stats.acked++;
        // Managed (fencing through the arbiter): this node acknowledged a write on its own
        // (no connection), so the other may not be able to do the same at this moment:
        // Primary, I/O flowing, not connected either, with a disk of its own (a disk-less
        // Primary with no peer fails every write: it acknowledges nothing, seed 26496).
        // In manual mode a person may do just that.
        const other = this.nodes[this.other(name)];
        const oe = other.running ? other.engine : undefined;
        if (
          this.mode === 'managed' &&
          oe &&
          !this.config.net.allowTwoPrimaries &&
          !isConnected(e.state.conn) &&
          oe.state.role === 'Primary' &&
          !oe.state.suspended &&
          !isConnected(oe.state.conn) &&
          hasLocalDisk(oe.state.disk)
        )
          this.oracle.fail(
            'never two nodes acknowledge writes at once',
            `${name} acknowledged write ${w} while ${other.name} is an independent Primary (${oe.state.conn}, arbiter: ${this.arbiter.primary ?? 'nobody'} epoch ${this.arbiter.epoch})`,
          );
        for (const b of blocks) this.inflight[name].delete(b);
      },
      () => {
        if (node.incarnation === inc) for (const b of blocks) this.inflight[name].delete(b);
      },
    );
  }

  private appRead(name: NodeName): void {
    const node = this.nodes[name];
    const e = node.engine;
    if (!e || !node.running || e.state.role !== 'Primary') return;
    const block = this.rng.pick(this.hot);
    if ((block + 1) * BLOCK > e.size || this.inflight[name].has(block)) return;
    const inc = node.incarnation;
    this.inflight[name].add(block);
    e.read(block * BLOCK, BLOCK).then(
      (data) => {
        if (node.incarnation !== inc) return;
        this.inflight[name].delete(block);
        const ids = decodeBlock(data, block);
        if (typeof ids === 'string')
          this.oracle.fail('no acknowledged write is lost', `${name} read block ${block}: ${ids}`);
        else this.oracle.read(name, block, ids, 'application read');
      },
      () => {
        if (node.incarnation === inc) this.inflight[name].delete(block);
      },
    );
  }

  private appFlush(name: NodeName): void {
    const node = this.nodes[name];
    const e = node.engine;
    if (!e || !node.running || e.state.role !== 'Primary') return;
    const upTo = this.ackSeq;
    const inc = node.incarnation;
    const whole = (): NodeName | undefined =>
      e.state.conn === 'Connected' && e.state.peerDisk === 'UpToDate' && this.config.protocol === 'C'
        ? this.other(name)
        : undefined;
    const peerAtIssue = whole();
    e.flush().then(
      () => {
        if (node.incarnation !== inc || !node.running) return;
        const peer = peerAtIssue !== undefined && whole() === peerAtIssue ? peerAtIssue : undefined;
        this.oracle.flushed(name, upTo, peer);
        if (this.debug) this.note(`${name}: flush done (acks <= ${upTo}, reached ${peer ?? 'only this node'})`);
      },
      () => {},
    );
  }

  // --- actions ---------------------------------------------------------------------------

  private runningNodes(): NodeName[] {
    return NODES.filter((n) => this.nodes[n].running && this.nodes[n].engine);
  }

  private act(): void {
    const r = this.rng;
    const managed = this.mode === 'managed';
    const kind = r.weighted({
      write: 40,
      read: 14,
      flush: 8,
      admin: managed ? 0 : 10,
      crash: 2,
      power: 2,
      bothPower: 0.4,
      restart: 4,
      cut: 2,
      heal: 3,
      slow: 1,
      diskError: 0.7,
      unreachable: managed ? 1 : 0,
    });
    const live = this.runningNodes();
    const any = r.pick(NODES);
    switch (kind) {
      case 'write':
      case 'read':
      case 'flush': {
        const primaries = live.filter((n) => this.nodes[n].engine!.state.role === 'Primary');
        const target = managed ? this.arbiter.primary : primaries.length > 0 ? r.pick(primaries) : undefined;
        if (!target) return;
        const times = kind === 'write' ? r.int(1, 4) : 1;
        for (let i = 0; i < times; i++) {
          if (kind === 'write') this.appWrite(target, this.workloadRng.chance(0.12));
          else if (kind === 'read') this.appRead(target);
          else this.appFlush(target);
        }
        return;
      }
      case 'admin':
        return this.admin();
      case 'crash':
        return this.kill(any, false);
      case 'power':
        return this.kill(any, true);
      case 'bothPower':
        this.kill('alpha', true);
        this.kill('beta', true);
        return;
      case 'restart': {
        const dead = NODES.filter((n) => !this.nodes[n].running);
        if (dead.length > 0) this.start(r.pick(dead));
        return;
      }
      case 'cut':
        this.note('link CUT');
        this.stats.faults++;
        this.net.cut();
        return;
      case 'heal':
        if (!this.net.up) this.note('link healed');
        this.net.heal();
        if (managed) for (const n of NODES) this.nodes[n].reachable = true;
        return;
      case 'slow':
        this.note('link slow');
        this.net.slow(r.int(100, 3000));
        return;
      case 'diskError': {
        const node = this.nodes[any];
        const file = node.disks.file(
          r.chance(0.7) || this.config.hosts[0]!.metaDisk.kind === 'internal' ? node.host.disk : `/dev/${any}/meta`,
        );
        const op = r.pick(['read', 'write', 'sync'] as const);
        file.failNext[op] += r.int(1, 3);
        this.stats.faults++;
        this.note(`${any}: disk errors on the next ${op}s of ${file.path}`);
        return;
      }
      case 'unreachable':
        this.nodes[any].reachable = false;
        this.note(`${any}: cut off from the arbiter`);
        if (r.chance(0.5)) this.net.cut();
        return;
    }
  }

  /** A person at the keyboard (manual mode): tandemadm's commands. */
  private admin(): void {
    const r = this.rng;
    const live = this.runningNodes();
    if (live.length === 0) return;
    const name = r.pick(live);
    const e = this.nodes[name].engine!;
    const peer = this.other(name);
    const cmd = r.weighted({
      primary: 6,
      secondary: 5,
      disconnect: 3,
      connect: 4,
      discard: 1,
      force: 0.3,
      invalidate: 0.7,
      invalidateRemote: 0.5,
      verify: 1,
      pause: 0.5,
      resume: 1,
      down: 1,
      grow: 0.5,
      resize: 0.5,
    });
    this.note(`${name}: tandemadm ${cmd}`);
    switch (cmd) {
      case 'primary':
        return this.op(name, 'primary', () => e.promote());
      case 'secondary':
        return this.op(name, 'secondary', () => e.demote());
      case 'disconnect':
        return this.op(name, 'disconnect', () => e.disconnect());
      case 'connect':
        return this.op(name, 'connect', () => e.connect());
      case 'discard':
        return this.op(name, 'connect --discard-my-data', async () => {
          await e.demote({ force: true });
          await e.disconnect();
          this.userDiscard[name] = true;
          await e.connect({ discardMyData: true });
        });
      case 'force':
        return this.op(name, 'primary --force', async () => {
          await e.promote({ force: true });
          this.userDiscard[peer] = true;
        });
      case 'invalidate':
        return this.op(name, 'invalidate', async () => {
          this.userDiscard[name] = true;
          await e.invalidate();
        });
      case 'invalidateRemote':
        return this.op(name, 'invalidate-remote', async () => {
          this.userDiscard[peer] = true;
          await e.invalidateRemote();
        });
      case 'verify':
        return this.op(name, 'verify', () => e.verify());
      case 'pause':
        return this.op(name, 'pause-sync', () => e.pauseSync());
      case 'resume':
        return this.op(name, 'resume-sync', () => e.resumeSync());
      case 'grow': {
        // The size goes up (on one node at a time, as each agent does); a file with internal
        // metadata grows and the metadata moves, under whatever else runs.
        this.growTo = Math.max(this.growTo, e.size) + r.pick([0, 1, 4]) * 1024 * 1024;
        const to = this.growTo;
        return this.op(name, `grow-disk ${to}`, () => e.growDisk(to));
      }
      case 'resize':
        return this.op(name, `resize (device ${e.size})`, () => e.resize());
      case 'down': {
        const node = this.nodes[name];
        const inc = node.incarnation;
        return this.op(name, 'down', async () => {
          await e.down();
          if (node.incarnation === inc && node.running) {
            node.running = false;
            node.engine = undefined;
            this.net.processDied(name, false);
            this.note(`${name}: engine stopped after down`);
          }
        });
      }
    }
  }

  /** Managed mode: what the controller and the agents do, every half second. */
  private control(): void {
    const a = this.arbiter;
    const r = this.rng;
    const up = (n: NodeName): boolean =>
      this.nodes[n].running && this.nodes[n].reachable && this.nodes[n].engine !== undefined;
    if (a.primary === undefined) {
      const candidates = NODES.filter(
        (n) => up(n) && this.nodes[n].engine!.state.disk === 'UpToDate' && !a.fenced.has(n),
      );
      if (candidates.length > 0) {
        a.primary = r.pick(candidates);
        a.epoch++;
        this.note(`arbiter: ${a.primary} is Primary (epoch ${a.epoch})`);
      }
    } else if (!up(a.primary)) {
      const p = this.nodes[a.primary];
      if (!p.running || !p.reachable) {
        if (p.downSince === 0) p.downSince = this.q.now;
      }
      const y = this.other(a.primary);
      const ey = this.nodes[y].engine;
      if (
        this.q.now - p.downSince >= 3000 &&
        up(y) &&
        ey &&
        ey.state.disk === 'UpToDate' &&
        !a.fenced.has(y) &&
        !isSyncTarget(ey.state.conn)
      ) {
        a.primary = y;
        a.epoch++;
        this.note(`arbiter: FAILOVER to ${y} (epoch ${a.epoch})`);
      }
    }
    for (const n of NODES) {
      const node = this.nodes[n];
      if (node.running && node.reachable) node.downSince = 0;
      const e = node.engine;
      if (!up(n) || !e) continue;
      if (a.primary === n && e.state.role !== 'Primary' && e.state.disk === 'UpToDate' && !isSyncTarget(e.state.conn))
        this.op(n, 'agent: primary', () => e.promote());
      if (a.primary !== n && e.state.role === 'Primary')
        this.op(n, 'agent: secondary --force, reconnect discarding', async () => {
          await e.demote({ force: true });
          await e.disconnect();
          await e.connect({ discardMyData: true });
        });
      if (e.state.conn === 'StandAlone' && e.state.disk !== 'Diskless' && e.state.disk !== 'Attaching') {
        // The agent's discard is no person's choice: fencing must have kept the superseded
        // Primary from acknowledging anything the new one lacks, and the oracle checks it.
        const discard = a.primary !== n && e.lastDecision?.decision.startsWith('split-brain') === true;
        this.op(n, discard ? 'agent: connect --discard-my-data' : 'agent: connect', () =>
          e.connect({ discardMyData: discard }),
        );
      }
    }
  }

  // --- the round ----------------------------------------------------------------------------

  async run(): Promise<void> {
    this.note(
      `seed ${this.seed} mode ${this.mode} protocol ${this.config.protocol} size ${this.nodes.alpha.disks.file(this.config.hosts[0]!.disk).size} meta ${this.config.hosts[0]!.metaDisk.kind} epochs ${this.config.net.maxEpochSize}/${this.config.net.maxEpochBytes}/${this.config.net.maxEpochAgeMs}ms max-buffers ${this.config.net.maxBuffers}`,
    );
    try {
      await this.setup();
      if (this.mode === 'managed') {
        const tick = (): void => {
          this.control();
          this.q.at(500, tick);
        };
        this.q.at(500, tick);
      }
      for (let i = 0; i < this.steps && this.oracle.violations.length === 0; i++) {
        this.act();
        await this.advance(this.rng.int(1, 400));
      }
      if (this.oracle.violations.length === 0) await this.settle();
    } catch (err) {
      this.oracle.fail('the simulation runs', (err as Error).stack ?? String(err));
    }
  }

  /** create-md on both, up, connect, and the initial sync. */
  private async setup(): Promise<void> {
    for (const n of NODES) {
      const node = this.nodes[n];
      const storage = node.disks.storage(() => true);
      const location = await this.drive(
        locateMetadata(storage, node.host.disk, node.host.metaDisk),
        1000,
        'locate metadata',
      );
      await this.drive(Metadata.create(storage, location, RESOURCE), 10_000, 'create-md');
    }
    for (const n of NODES) this.start(n);
    const ok = await this.until(() => NODES.every((n) => this.nodes[n].engine?.state.conn === 'Connected'), 30_000);
    if (!ok) throw new Error('the pair did not connect at setup');
    const first = this.rng.pick(NODES);
    if (this.rng.chance(0.5)) {
      await this.drive(
        this.nodes[first].engine!.newCurrentUuid({ clearBitmap: true }),
        10_000,
        'new-current-uuid --clear-bitmap',
      );
      this.note(`${first}: new-current-uuid --clear-bitmap`);
    } else {
      await this.drive(this.nodes[first].engine!.promote({ force: true }), 10_000, 'primary --force');
      this.note(`${first}: primary --force (full initial sync)`);
      if (this.mode === 'managed') {
        this.arbiter.primary = first;
        this.arbiter.epoch = 1;
      }
    }
    if (this.mode === 'manual' && !this.nodes[first].engine!.state.role.startsWith('P'))
      await this.drive(this.nodes[first].engine!.promote(), 10_000, 'primary');
  }

  /**
   * Heals everything and lets the pair converge: both processes up, the link up, no
   * disk errors, split brains resolved (manual mode: a person picks the victim). Then
   * the pair must be Connected, UpToDate/UpToDate, byte-identical and hold what the
   * oracle says.
   */
  /**
   * A person declares `n`'s data the one to keep: in managed mode the arbiter makes it
   * Primary (a new epoch); `steps` run on it (`what`, and in manual mode it steps down
   * again before it connects); a StandAlone peer is told to connect.
   */
  private personKeeps(n: NodeName, what: string, steps: (managed: boolean) => Promise<void>): void {
    const managed = this.mode === 'managed';
    if (managed) {
      this.arbiter.primary = n;
      this.arbiter.epoch++;
      this.note(`arbiter: a person makes ${n} Primary (epoch ${this.arbiter.epoch})`);
    }
    this.op(n, `settle: ${what}${managed ? '' : ', secondary'}, connect`, () => steps(managed));
    const eo = this.nodes[this.other(n)].engine;
    if (eo?.state.conn === 'StandAlone') this.op(this.other(n), 'settle: connect', () => eo.connect());
  }

  private async settle(): Promise<void> {
    this.note('SETTLE: healing everything');
    this.net.heal();
    for (const n of NODES) {
      this.nodes[n].reachable = true;
      for (const f of this.nodes[n].disks.files.values()) f.failNext.read = f.failNext.write = f.failNext.sync = 0;
      // A disk detached after an I/O error comes back by restarting the engine (down/up).
      const e = this.nodes[n].engine;
      if (e && (e.state.disk === 'Diskless' || e.state.disk === 'Failed')) this.kill(n, false);
    }
    const whole = (): boolean =>
      NODES.every((n) => {
        const e = this.nodes[n].engine;
        return (
          this.nodes[n].running &&
          e?.state.conn === 'Connected' &&
          e.state.disk === 'UpToDate' &&
          e.state.peerDisk === 'UpToDate'
        );
      });
    for (let attempt = 0; attempt < 8 && !whole(); attempt++) {
      for (const n of NODES) if (!this.nodes[n].running) this.start(n);
      await this.advance(2000);
      // No consistent copy left (an interrupted initial sync, a disk error, `invalidate` on the
      // good one), or two copies with no generation in common: a person declares one node's
      // data the truth and the other's to be overwritten (its `invalidate`).
      const es = NODES.map((n) => this.nodes[n].engine);
      const refusing = es.some((e) =>
        /I shall become SyncSource, but my disk is Inconsistent/.test(e?.lastError ?? ''),
      );
      const unrelated = es.some((e) => /Unrelated data/.test(e?.lastError ?? '') && e?.state.conn === 'StandAlone');
      let decided = false;
      if (!refusing && (unrelated || es.every((e) => e?.state.disk === 'Inconsistent'))) {
        decided = true;
        const chosen = this.rng.pick(NODES);
        const e = this.nodes[chosen].engine!;
        const other = this.other(chosen);
        const eo = this.nodes[other].engine!;
        this.userDiscard[other] = true;
        this.oracle.forcedInconsistent(chosen);
        if (this.mode === 'managed') {
          this.arbiter.primary = chosen;
          this.arbiter.epoch++;
          this.note(`arbiter: a person makes ${chosen} Primary (epoch ${this.arbiter.epoch})`);
        }
        const keep = this.mode === 'managed';
        this.op(other, 'settle: disconnect, invalidate, connect', async () => {
          await eo.demote({ force: true });
          await eo.disconnect();
          await eo.invalidate();
          await eo.connect();
        });
        this.op(chosen, `settle: primary --force${keep ? '' : ', secondary'}, connect`, async () => {
          await e.promote({ force: true });
          if (!keep) await e.demote();
          await e.connect();
        });
      }
      // The newest data is on a disk that is not trusted (a disk error, an interrupted
      // resync) and the other is older: the engines refuse to guess; a person decides to
      // keep the newest data.
      for (const n of refusing ? NODES : []) {
        const e = this.nodes[n].engine;
        if (!e || !/I shall become SyncSource, but my disk is Inconsistent/.test(e.lastError ?? '')) continue;
        this.userDiscard[this.other(n)] = true;
        this.oracle.forcedInconsistent(n);
        this.personKeeps(n, 'primary --force', async (managed) => {
          await e.promote({ force: true });
          if (!managed) await e.demote();
          await e.connect();
        });
        decided = true;
        break;
      }
      // A node that never recorded the size it agreed (fresh metadata, or the record lost
      // with its cache) and was then forced Primary alone took its whole disk, larger than
      // its peer's; the peer refuses it. A person sets its size back to what the peer holds
      // (DRBD's `resize --size`; what lies past that end is given up, and is not compared).
      for (const n of decided ? [] : NODES) {
        const e = this.nodes[n].engine;
        const m = /The peer's disk size is too small! \((\d+) < (\d+) bytes\)/.exec(e?.lastError ?? '');
        if (!e || !m || e.state.conn !== 'StandAlone' || e.size <= Number(m[1])) continue;
        const fits = Number(m[1]);
        this.personKeeps(n, `primary, resize --size ${fits}`, async (managed) => {
          if (e.state.role !== 'Primary') await e.promote();
          await e.resize({ size: fits });
          if (!managed) await e.demote();
          await e.connect();
        });
        decided = true;
        break;
      }
      if (this.mode === 'manual' && !decided) {
        const sb = NODES.filter((n) => {
          const e = this.nodes[n].engine;
          return e?.state.conn === 'StandAlone';
        });
        if (sb.length > 0) {
          // A person picks the victim; a side whose disk is Inconsistent (a resync from an
          // earlier recovery was interrupted) cannot be the one whose data is kept.
          const inconsistent = NODES.filter((n) => this.nodes[n].engine?.state.disk === 'Inconsistent');
          const victim = inconsistent.length === 1 ? inconsistent[0]! : this.rng.pick(NODES);
          for (const n of NODES) {
            const e = this.nodes[n].engine;
            if (!e) continue;
            const discard = n === victim && e.lastDecision?.decision.startsWith('split-brain') === true;
            this.op(n, discard ? 'settle: secondary, connect --discard-my-data' : 'settle: connect', async () => {
              if (discard) {
                this.userDiscard[n] = true;
                await e.demote({ force: true });
                await e.disconnect();
              }
              await e.connect({ discardMyData: discard });
            });
          }
        } else {
          for (const n of NODES) {
            const e = this.nodes[n].engine;
            if (e?.state.conn === 'StandAlone') this.op(n, 'settle: connect', () => e.connect());
          }
        }
        // Two Primaries cannot connect: one steps down; so does a Primary that must become SyncTarget.
        const ea = this.nodes.alpha.engine;
        const eb = this.nodes.beta.engine;
        if (ea?.state.role === 'Primary' && eb?.state.role === 'Primary')
          this.op('beta', 'settle: secondary', () => eb.demote({ force: true }));
        for (const n of NODES) {
          const e = this.nodes[n].engine;
          if (e?.state.role === 'Primary' && /I shall become SyncTarget, but I am primary/.test(e.lastError ?? ''))
            this.op(n, 'settle: secondary, connect', async () => {
              await e.demote({ force: true });
              await e.connect();
            });
        }
      }
      // A person resumes a paused resync.
      for (const n of NODES) {
        const e = this.nodes[n].engine;
        if (e?.state.userIsp) this.op(n, 'settle: resume-sync', () => e.resumeSync());
      }
      await this.until(whole, 60_000);
      // A connected pair may still be finishing a resync or a verify.
      await this.until(() => whole() && NODES.every((n) => this.nodes[n].engine!.state.conn === 'Connected'), 30_000);
    }
    if (this.oracle.violations.length > 0) return;
    if (!whole()) {
      this.oracle.fail(
        'the pair converges after a heal',
        NODES.map((n) => {
          const e = this.nodes[n].engine;
          return `${n}: ${e ? `${e.state.role} ${e.state.conn} ${e.state.disk}/${e.state.peerDisk}${e.state.suspended ? ' suspended' : ''}; ${e.lastError ?? ''}` : 'not running'}`;
        }).join('; '),
      );
      return;
    }
    // Let in-flight application writes and epochs finish.
    await this.advance(3000);
    if (this.oracle.violations.length === 0 && whole()) this.compareDisks();
  }

  /** The two data areas, sector by sector, and every block against each node's lineage. */
  private compareDisks(): void {
    const ea = this.nodes.alpha.engine!;
    const size = ea.size;
    const views = NODES.map((n) => this.nodes[n].disks.file(this.nodes[n].host.disk).view(0, size));
    if (!views[0]!.equals(views[1]!)) {
      let at = 0;
      while (at < size && views[0]![at] === views[1]![at]) at++;
      const block = Math.floor(at / BLOCK);
      const ids = views.map((v) => decodeBlock(v.subarray(block * BLOCK, (block + 1) * BLOCK), block));
      this.oracle.fail(
        'converged disks are identical',
        `the pair says Connected UpToDate/UpToDate but the disks differ at byte ${at} (block ${block}: alpha ${JSON.stringify(ids[0])}, beta ${JSON.stringify(ids[1])})`,
      );
      return;
    }
    for (const block of this.oracle.blocks()) {
      if ((block + 1) * BLOCK > size) continue;
      for (const [i, n] of NODES.entries()) {
        const ids = decodeBlock(views[i]!.subarray(block * BLOCK, (block + 1) * BLOCK), block);
        if (typeof ids === 'string')
          this.oracle.fail('no acknowledged write is lost', `${n} block ${block} at the end: ${ids}`);
        else this.oracle.read(n, block, ids, 'disk after convergence');
      }
    }
  }

  /** What each node's disk holds for `block`: the view reads see, and what is durable. */
  private diskReport(block: number): string {
    return NODES.map((n) => {
      const node = this.nodes[n];
      const f = node.disks.file(node.host.disk);
      const view = decodeBlock(f.view(block * BLOCK, BLOCK), block);
      const durable = decodeBlock(f.durableView(block * BLOCK, BLOCK), block);
      const bit = node.engine?.local?.md.bitmap.test(block);
      return `${n} disk ${JSON.stringify(view)} durable ${JSON.stringify(durable)} oos-bit ${bit ?? '-'}`;
    }).join('; ');
  }

  result(): RoundResult {
    const failed = this.oracle.violations.length > 0;
    if (failed) {
      const m = /block (\d+)/.exec(this.oracle.violations[0]!.detail);
      if (m) this.trace.push(`disks at block ${m[1]}: ${this.diskReport(Number(m[1]))}`);
    }
    return {
      seed: this.seed,
      mode: this.mode,
      violations: this.oracle.violations,
      trace: this.trace,
      logs: failed ? NODES.flatMap((n) => this.nodes[n].logRing.map((l) => `${n}: ${l}`)) : [],
      stats: {
        events: this.q.steps,
        simulatedMs: Math.round(this.q.now),
        writes: this.stats.writes,
        acked: this.stats.acked,
        faults: this.stats.faults,
        connections: this.net.connections,
      },
    };
  }
}
