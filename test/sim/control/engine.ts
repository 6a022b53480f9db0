// A model of the replication engine as the agent sees it through tandemadm and
// `status --json`: DRBD's roles, connection and disk states, generation
// identifiers decided at connect (none / bitmap / full / split brain), the
// fence-peer freeze of a Primary that loses an UpToDate peer, the refusals
// (no UpToDate disk, a second Primary, SyncTarget, device in use), and the
// handlers calling the agent. Not the engine (src/replication): a deliberate
// simulation, small enough to explore thousands of runs, faithful in the states
// the control plane decides from. Data is a set of write numbers per disk, so the
// simulator can check that no acknowledged write is ever lost.
import type { EngineStatusView, AdmResult } from '../../../src/node-agent/engine-client.ts';
import type { EngineDriver } from '../../../src/node-agent/executor.ts';
import type { Rng, Scheduler } from './scheduler.ts';

export const JUST_CREATED = 4;
export type Disk = 'UpToDate' | 'Outdated' | 'Inconsistent' | 'Consistent' | 'Diskless';
type Uuids = { current: number; bitmap: number; history: [number, number] };

/** What survives a crash: the metadata and the data. */
type Stored = { uuids: Uuids; disk: Disk; writes: Set<number>; primaryAtSplit: boolean };

export type CState = 'StandAlone' | 'WFConnection' | 'Connected' | 'SyncSource' | 'SyncTarget';

export type Trace = (line: string) => void;

/** One resource on one node. */
export class SimEngine {
  readonly node: string;
  readonly resource: string;
  stored: Stored | undefined;
  running = false;
  role: 'Primary' | 'Secondary' = 'Secondary';
  cstate: CState = 'StandAlone';
  peerRole: 'Primary' | 'Secondary' | 'Unknown' = 'Unknown';
  peerDisk: Disk | 'DUnknown' = 'DUnknown';
  disk: Disk = 'Diskless';
  suspended = false;
  discardMyData = false;
  lastDecision: { decision: string; rule: string } | undefined;
  syncPercent: number | undefined;
  /** Where the Primary's device is mounted by the consumer (the simulated filesystem). */
  mounted = false;
  /** Bumps on every (re)start: timers of an earlier incarnation do nothing. */
  incarnation = 0;

  constructor(node: string, resource: string) {
    this.node = node;
    this.resource = resource;
  }

  get connected(): boolean {
    return this.cstate === 'Connected' || this.cstate === 'SyncSource' || this.cstate === 'SyncTarget';
  }

  /** Would a write be acknowledged by this engine now (as the application's Primary)? */
  get writable(): boolean {
    return this.running && this.role === 'Primary' && !this.suspended && this.mounted && this.disk === 'UpToDate';
  }

  status(): EngineStatusView {
    return {
      resource: this.resource,
      role: this.role,
      peerRole: this.connected ? this.peerRole : 'Unknown',
      cstate: this.cstate,
      disk: this.disk,
      peerDisk: this.connected ? this.peerDisk : 'DUnknown',
      suspended: this.suspended,
      size: 1 << 30,
      counters: {},
      oosBytes: 0,
      sync: this.syncPercent !== undefined ? { percent: this.syncPercent, remainingBytes: 0, totalBytes: 1 } : null,
      uuids: { current: (this.stored?.uuids.current ?? 0).toString(16).padStart(16, '0').toUpperCase() },
      attach:
        this.role === 'Primary'
          ? { method: 'sim', reason: 'simulated', device: `/dev/sim-${this.resource}`, lastError: null }
          : { method: 'sim', reason: 'not Primary', device: null, lastError: null },
      lastDecision: this.lastDecision ?? null,
    };
  }
}

type Handler = (node: string, resource: string, action: 'fence' | 'unfence' | 'rejoin') => Promise<number>;

/** The two engines of one resource and the link between them. */
export class SimPair {
  readonly #s: Scheduler;
  readonly #rng: Rng;
  readonly #trace: Trace;
  readonly engines: Map<string, SimEngine>;
  /** Is the replication network between the two nodes up? */
  linkUp: () => boolean;
  /** Calls the node's agent (undefined when no agent runs there: the handler script cannot connect). */
  handler: Handler;
  #nextUuid = 100;
  /** Acknowledged writes, in order: [write number, node]. */
  readonly acked: { n: number; node: string; at: number }[] = [];
  #connectTimer: unknown;
  /** Checked when a write is acknowledged (the data invariant). */
  onAck: ((e: SimEngine, n: number) => void) | undefined;
  onRoleChange: ((e: SimEngine, from: string, to: string, how: string) => void) | undefined;

  constructor(o: {
    s: Scheduler;
    rng: Rng;
    trace: Trace;
    nodes: readonly [string, string];
    resource: string;
    linkUp: () => boolean;
    handler: Handler;
  }) {
    this.#s = o.s;
    this.#rng = o.rng;
    this.#trace = o.trace;
    this.engines = new Map(o.nodes.map((n) => [n, new SimEngine(n, o.resource)]));
    this.linkUp = o.linkUp;
    this.handler = o.handler;
  }

  #peer(e: SimEngine): SimEngine {
    return [...this.engines.values()].find((x) => x !== e)!;
  }

  #uuid(): number {
    this.#nextUuid += 2;
    return this.#nextUuid;
  }

  #log(e: SimEngine, what: string): void {
    this.#trace(`engine ${e.node}: ${what} [${e.role} ${e.cstate} ${e.disk}${e.suspended ? ' frozen' : ''}]`);
  }

  #setRole(e: SimEngine, role: 'Primary' | 'Secondary', how: string): void {
    if (e.role === role) return;
    const from = e.role;
    e.role = role;
    const p = this.#peer(e);
    if (e.connected && p.connected) p.peerRole = role;
    this.onRoleChange?.(e, from, role, how);
  }

  #persistDisk(e: SimEngine): void {
    if (e.stored) e.stored.disk = e.disk;
  }

  // --- tandemadm ------------------------------------------------------------------

  /** The EngineDriver the agent on `node` uses. */
  driver(node: string, alive: () => boolean): EngineDriver {
    const e = this.engines.get(node)!;
    const lat = () => this.#rng.int(20, 250);
    return {
      status: async (res) => {
        await this.#s.sleep(this.#rng.int(1, 10));
        if (!alive()) throw new Error('the agent is gone');
        return res === e.resource && e.running ? e.status() : undefined;
      },
      adm: async (res, ...args) => {
        await this.#s.sleep(lat());
        if (!alive()) throw new Error('the agent is gone');
        const r = res === e.resource ? this.#adm(e, args) : { code: 10, stdout: '', stderr: 'no such resource' };
        await this.#s.sleep(this.#rng.int(5, 50));
        return r;
      },
      resources: async () => (e.running ? [e.resource] : []),
    };
  }

  #adm(e: SimEngine, argv: string[]): AdmResult {
    const flags = new Set(argv.filter((a) => a.startsWith('--') && a !== '--'));
    const cmd = argv.filter((a) => !a.startsWith('--')).at(-1) ?? '';
    const ok = (what?: string): AdmResult => {
      if (what) this.#log(e, what);
      return { code: 0, stdout: '', stderr: '' };
    };
    const refuse = (code: number, why: string): AdmResult => ({ code, stdout: '', stderr: why });
    switch (cmd) {
      case 'create-md':
        if (e.stored) return refuse(1, 'metadata exists');
        e.stored = {
          uuids: { current: JUST_CREATED, bitmap: 0, history: [0, 0] },
          disk: 'Inconsistent',
          writes: new Set(),
          primaryAtSplit: false,
        };
        return ok('create-md');
      case 'up':
        if (!e.stored) return refuse(1, 'no metadata');
        if (e.running) return ok();
        e.running = true;
        e.incarnation++;
        e.role = 'Secondary';
        e.suspended = false;
        // A disk that comes up alone is Consistent until a peer confirms it.
        e.disk = e.stored.disk === 'UpToDate' ? 'Consistent' : e.stored.disk;
        e.cstate = 'WFConnection';
        e.lastDecision = undefined;
        this.#scheduleConnect();
        return ok('up');
      case 'down':
        if (!e.running) return ok();
        if (e.role === 'Primary' && e.mounted) return refuse(11, 'device in use');
        this.#stop(e, 'down');
        return ok('down');
      case 'primary': {
        if (!e.running) return refuse(10, 'not running');
        if (e.role === 'Primary') return ok();
        const force = flags.has('--force');
        const p = this.#peer(e);
        if (e.disk !== 'UpToDate' && !force)
          return refuse(11, `State change failed: Need access to UpToDate data (${e.disk})`);
        if (e.connected && (p.role === 'Primary' || e.peerRole === 'Primary'))
          return refuse(11, 'State change failed: Multiple primaries not allowed by config');
        if (e.cstate === 'SyncTarget') return refuse(11, 'State change failed: SyncTarget');
        const u = e.stored!.uuids;
        if (force && e.disk !== 'UpToDate') {
          e.stored!.uuids = {
            current: this.#uuid(),
            bitmap: 0,
            history: [u.current === JUST_CREATED ? 0 : u.current, u.history[0]],
          };
          e.disk = 'UpToDate';
          this.#persistDisk(e);
          if (e.connected && p.connected) this.#startSync(e, p, 'full', 'primary --force');
        } else if (!e.connected && u.bitmap === 0) {
          e.stored!.uuids = { current: this.#uuid(), bitmap: u.current, history: u.history };
        }
        e.stored!.primaryAtSplit = false;
        this.#setRole(e, 'Primary', force ? 'primary --force' : 'primary');
        return ok(force ? 'primary --force' : 'primary');
      }
      case 'secondary': {
        if (!e.running || e.role !== 'Primary') return ok();
        const force = flags.has('--force');
        if (force && e.suspended) e.suspended = false; // the frozen writes fail
        if (e.mounted && !force) return refuse(11, 'State change failed: Device is held open by someone');
        e.mounted = false;
        this.#setRole(e, 'Secondary', force ? 'secondary --force' : 'secondary');
        return ok(force ? 'secondary --force' : 'secondary');
      }
      case 'connect':
        if (!e.running) return refuse(10, 'not running');
        if (e.cstate !== 'StandAlone') return refuse(10, 'already connecting');
        e.cstate = 'WFConnection';
        e.discardMyData = flags.has('--discard-my-data');
        this.#scheduleConnect();
        return ok(e.discardMyData ? 'connect --discard-my-data' : 'connect');
      case 'outdate':
        if (!e.running) return refuse(10, 'not running');
        if (e.connected) return refuse(17, 'State change failed: Disk state is lower than outdated (connected)');
        if (e.role === 'Primary') return refuse(17, 'Refusing to outdate a Primary');
        if (e.disk === 'UpToDate' || e.disk === 'Consistent') {
          e.disk = 'Outdated';
          this.#persistDisk(e);
        }
        return ok('outdate');
      case 'resume-io':
        if (!e.running) return refuse(10, 'not running');
        e.suspended = false;
        return ok('resume-io');
      default:
        return refuse(20, `unknown command ${cmd}`);
    }
  }

  // --- engine life --------------------------------------------------------------------

  /** The engine process ends (down, or the node stops): the peer sees the link go. */
  #stop(e: SimEngine, why: string): void {
    const wasConnected = e.connected;
    e.running = false;
    e.incarnation++;
    e.role = 'Secondary';
    e.cstate = 'StandAlone';
    e.suspended = false;
    e.mounted = false;
    e.disk = 'Diskless';
    e.syncPercent = undefined;
    this.#trace(`engine ${e.node}: stopped (${why})`);
    const p = this.#peer(e);
    if (wasConnected && p.connected) {
      // A clean `down` or a reset is seen at once; a power cut only by a timeout.
      const inc = p.incarnation;
      this.#s.setTimer(
        () => {
          if (p.incarnation === inc && p.connected) this.#lost(p, `peer ${why}`);
        },
        why === 'down' ? this.#rng.int(5, 50) : this.#rng.int(300, 6000),
      );
    }
  }

  /** The node stops: its engines die with it. */
  crash(node: string): void {
    const e = this.engines.get(node)!;
    if (e.running) this.#stop(e, 'node stopped');
  }

  /** The link went down: each side notices on its own, by its ping timeout. */
  linkChanged(): void {
    if (this.linkUp()) {
      this.#scheduleConnect();
      return;
    }
    for (const e of this.engines.values()) {
      if (!e.connected) continue;
      const inc = e.incarnation;
      this.#s.setTimer(
        () => {
          if (e.incarnation === inc && e.connected && !this.linkUp()) this.#lost(e, 'link down');
        },
        this.#rng.int(200, 6000),
      );
    }
  }

  /** One side lost the connection (DRBD's after-state-change on conn loss). */
  #lost(e: SimEngine, why: string): void {
    const p = this.#peer(e);
    const wasPeerDisk = e.peerDisk;
    e.cstate = 'WFConnection';
    e.peerRole = 'Unknown';
    e.peerDisk = 'DUnknown';
    e.syncPercent = undefined;
    this.#log(e, `lost the peer (${why})`);
    // The connection is gone for both: the other side hears the reset soon if it can.
    if (p.connected && p.running) {
      const inc = p.incarnation;
      this.#s.setTimer(
        () => {
          if (p.incarnation === inc && p.connected) this.#lost(p, 'connection reset');
        },
        this.linkUp() ? this.#rng.int(1, 30) : this.#rng.int(200, 6000),
      );
    }
    if (e.role === 'Primary' && (wasPeerDisk === 'UpToDate' || wasPeerDisk === 'Consistent')) {
      // fencing resource-and-stonith: freeze before any write completes without the peer,
      // start a new data generation, and ask the fence-peer handler.
      e.suspended = true;
      const u = e.stored!.uuids;
      if (u.bitmap === 0) e.stored!.uuids = { current: this.#uuid(), bitmap: u.current, history: u.history };
      e.stored!.primaryAtSplit = true;
      this.#log(e, 'froze I/O; asking the fence-peer handler');
      const inc = e.incarnation;
      void this.handler(e.node, e.resource, 'fence').then((code) => {
        if (e.incarnation !== inc || !e.running) return;
        this.#trace(`engine ${e.node}: fence-peer handler exited ${code}`);
        if ((code === 4 || code === 7) && e.suspended) {
          e.suspended = false;
          this.#log(e, 'the peer is fenced; resumed I/O');
        }
      });
    }
    this.#scheduleConnect();
  }

  #scheduleConnect(): void {
    if (this.#connectTimer) return;
    this.#connectTimer = this.#s.setTimer(
      () => {
        this.#connectTimer = undefined;
        this.#tryConnect();
      },
      this.#rng.int(50, 800),
    );
  }

  #tryConnect(): void {
    const [a, b] = [...this.engines.values()] as [SimEngine, SimEngine];
    if (!a.running || !b.running || a.cstate !== 'WFConnection' || b.cstate !== 'WFConnection') return;
    if (!this.linkUp()) return;
    this.#handshake(a, b);
  }

  /** compare generation identifiers (DRBD's uuid_compare) from a's point of view. */
  #compare(a: Uuids, b: Uuids): string {
    if (a.current === JUST_CREATED && b.current === JUST_CREATED) return 'none';
    if (a.current === JUST_CREATED) return 'full-target';
    if (b.current === JUST_CREATED) return 'full-source';
    if (a.current === b.current) return 'none';
    const bOurs = b.bitmap !== 0 && b.bitmap === a.current;
    const aTheirs = a.bitmap !== 0 && a.bitmap === b.current;
    if (bOurs && aTheirs) return 'split-brain';
    if (bOurs) return 'bitmap-target';
    if (aTheirs) return 'bitmap-source';
    if (b.history.includes(a.current)) return 'full-target';
    if (a.history.includes(b.current)) return 'full-source';
    if (a.bitmap !== 0 && a.bitmap === b.bitmap) return 'split-brain';
    return 'split-brain-unrelated';
  }

  #handshake(a: SimEngine, b: SimEngine): void {
    let d = this.#compare(a.stored!.uuids, b.stored!.uuids);
    if (d === 'none' && a.disk === 'Inconsistent' && b.disk === 'UpToDate') d = 'bitmap-target';
    else if (d === 'none' && b.disk === 'Inconsistent' && a.disk === 'UpToDate') d = 'bitmap-source';
    const standAlone = (why: string, decision?: string) => {
      for (const e of [a, b]) {
        e.cstate = 'StandAlone';
        e.discardMyData = false;
        if (decision) e.lastDecision = { decision, rule: why };
        this.#log(e, `refused the connection: ${why}`);
      }
    };
    if (d.startsWith('split-brain')) {
      for (const e of [a, b]) void this.handler(e.node, e.resource, 'rejoin');
      if (a.discardMyData && b.discardMyData) return standAlone('both want to discard their data');
      if (a.discardMyData) d = d === 'split-brain' ? 'bitmap-target' : 'full-target';
      else if (b.discardMyData) d = d === 'split-brain' ? 'bitmap-source' : 'full-source';
      else return standAlone('split brain, after-sb policy disconnect', 'split-brain');
    }
    if (d === 'none' && a.role === 'Primary' && b.role === 'Primary') return standAlone('both nodes are Primary');
    const aTarget = d === 'bitmap-target' || d === 'full-target';
    const bTarget = d === 'bitmap-source' || d === 'full-source';
    if ((aTarget && a.role === 'Primary') || (bTarget && b.role === 'Primary'))
      return standAlone('I shall become SyncTarget, but I am primary!', d);
    for (const e of [a, b]) {
      e.lastDecision = { decision: e === a ? d : mirror(d), rule: 'sim' };
      e.discardMyData = false;
    }
    if (d === 'none') {
      const consistent = (x: Disk) => x === 'UpToDate' || x === 'Consistent';
      const settle = (x: Disk, y: Disk): Disk =>
        (x === 'Consistent' && (consistent(y) || consistent(x))) || (x === 'Outdated' && y === 'UpToDate')
          ? 'UpToDate'
          : x;
      const da = settle(a.disk, b.disk);
      const db = settle(b.disk, a.disk);
      a.disk = da;
      b.disk = db;
      for (const e of [a, b]) {
        const p = this.#peer(e);
        e.cstate = 'Connected';
        e.peerRole = p.role;
        e.peerDisk = p.disk;
        this.#persistDisk(e);
        if (e.suspended) {
          e.suspended = false;
          this.#log(e, 'the peer is back; resumed I/O');
        }
        e.stored!.primaryAtSplit = false;
        this.#log(e, 'connected, no resync needed');
      }
      this.#whole();
      return;
    }
    const [source, target] = aTarget ? [b, a] : [a, b];
    this.#startSync(source, target, d.startsWith('full') ? 'full' : 'bitmap', d);
  }

  #startSync(source: SimEngine, target: SimEngine, kind: 'full' | 'bitmap', why: string): void {
    if (source.disk === 'Consistent' || source.disk === 'Outdated') source.disk = 'UpToDate';
    source.cstate = 'SyncSource';
    target.cstate = 'SyncTarget';
    target.disk = 'Inconsistent';
    this.#persistDisk(source);
    this.#persistDisk(target);
    source.peerRole = target.role;
    target.peerRole = source.role;
    source.peerDisk = 'Inconsistent';
    target.peerDisk = source.disk;
    source.syncPercent = 0;
    target.syncPercent = 0;
    if (source.suspended) {
      source.suspended = false;
      this.#log(source, 'the peer is back; resumed I/O');
    }
    this.#log(source, `SyncSource (${kind}: ${why})`);
    const inc = [source.incarnation, target.incarnation];
    this.#s.setTimer(
      () => {
        if (source.incarnation !== inc[0] || target.incarnation !== inc[1]) return;
        if (source.cstate !== 'SyncSource' || target.cstate !== 'SyncTarget') return;
        target.stored!.writes = new Set(source.stored!.writes);
        const su = source.stored!.uuids;
        target.stored!.uuids = { current: su.current, bitmap: 0, history: su.history };
        if (su.bitmap !== 0)
          source.stored!.uuids = { current: su.current, bitmap: 0, history: [su.bitmap, su.history[0]] };
        target.disk = 'UpToDate';
        source.cstate = 'Connected';
        target.cstate = 'Connected';
        source.peerDisk = 'UpToDate';
        target.peerDisk = 'UpToDate';
        source.syncPercent = undefined;
        target.syncPercent = undefined;
        source.stored!.primaryAtSplit = false;
        target.stored!.primaryAtSplit = false;
        this.#persistDisk(target);
        this.#log(target, 'resync finished');
        this.#whole();
      },
      kind === 'full' ? this.#rng.int(2000, 20000) : this.#rng.int(100, 3000),
    );
  }

  /** A Primary Connected with an UpToDate peer runs its unfence-peer handler. */
  #whole(): void {
    for (const e of this.engines.values()) {
      if (
        e.role === 'Primary' &&
        e.cstate === 'Connected' &&
        e.disk === 'UpToDate' &&
        e.peerDisk === 'UpToDate' &&
        !e.suspended
      )
        void this.handler(e.node, e.resource, 'unfence');
    }
  }

  // --- the application ---------------------------------------------------------------

  /** The application writes on every writable Primary; protocol C acknowledges once both disks have it. */
  write(): void {
    for (const e of this.engines.values()) {
      if (!e.writable) continue;
      const p = this.#peer(e);
      const n = this.acked.length + 1;
      if (e.connected) {
        // Protocol C: the write completes only with the peer's ack. A link that is down but
        // not yet noticed leaves the write pending; it is not acknowledged now.
        if (!this.linkUp() || !p.running || !p.connected) continue;
        p.stored!.writes.add(n);
      }
      e.stored!.writes.add(n);
      this.acked.push({ n, node: e.node, at: this.#s.t });
      this.onAck?.(e, n);
    }
  }
}

function mirror(d: string): string {
  return d.replace('source', 'T').replace('target', 'source').replace('T', 'target');
}
