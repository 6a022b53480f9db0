// One replicated resource on this node: local disk + metadata + peer link +
// DRBD's state model. The engine is the hub; its parts each own one concern:
//   state.ts        the state machine: every change, its allowed edges, its effects
//   sync-plan.ts    what to do when the pair connects (pure)
//   write-path.ts   the Primary's application I/O, the transfer log and its epochs
//   receiver.ts     the Secondary's side: mirrored writes, barriers, back-pressure
//   resync.ts       the bitmap exchange and the resync, both sides
//   verify.ts       online verify
//   io-freeze.ts    suspended I/O (fencing)
//   discard-save.ts a split-brain victim's blocks, saved before they are overwritten
// Everything outside the process (clock, disks, network, handlers, randomness)
// comes through `world` (world.ts), so the simulator (src/sim) can run two engines
// in one process under seeded faults.
import { EventEmitter } from 'node:events';
import type { Logger } from 'pino';
import type { HostConfig, ResourceConfig } from '../api/config.ts';
import { PayloadPool } from '../net/payload-pool.ts';
import { ActivityLog, AL_EXTENT_BYTES } from './activity-log.ts';
import { BLOCK_SIZE } from './bitmap.ts';
import type { Core, LocalDisk } from './core.ts';
import { zeroCounters, type Counters } from './counters.ts';
import { deferred, type Deferred } from './deferred.ts';
import { ERROR_CODES, REFUSALS, refuse, StateChangeError, TandemError } from './errors.ts';
import type { HandlerName } from './handlers.ts';
import { IntervalLock } from './interval-lock.ts';
import { IoFreeze } from './io-freeze.ts';
import { decodeMessage, encodeMessage, type Params, type PeerMessage, type StateMsg } from './messages.ts';
import {
  AL_BYTES,
  AL_OFFSET,
  internalFileBytesFor,
  locateMetadata,
  Metadata,
  moveInternalMetadata,
  settleGrow,
} from './metadata.ts';
import { Receiver } from './receiver.ts';
import { Resync, type SyncProgress } from './resync.ts';
import {
  effectsOf,
  initialState,
  soleWritableCopy,
  transition,
  type Effect,
  type EngineState,
  type StateChange,
} from './state.ts';
import {
  isConnected,
  isSyncing,
  isSyncTarget,
  isUpToDate,
  hasLocalDisk,
  type ConnectionState,
  type DiskState,
  type Role,
} from './states.ts';
import { planConnect, type ConnectPlan } from './sync-plan.ts';
import {
  newCurrent,
  randomUuid,
  UUID_JUST_CREATED,
  uuidsFromJson,
  uuidsToJson,
  type SyncDecision,
  type Uuids,
} from './uuids.ts';
import { Verify } from './verify.ts';
import type { Frame } from './wire.ts';
import type { BlockFile, PeerConnection, PeerLinkHandle, Timer, World } from './world.ts';
import { WritePath } from './write-path.ts';
import { isSupportedAlg } from './digest.ts';
import type { LatencySnapshot } from './latency.ts';

export type { SyncProgress } from './resync.ts';

/** Received payloads kept for reuse: a full window of 1 MiB mirrored writes and then some. */
const PEER_PAYLOAD_POOL_BYTES = 64 * 1024 * 1024;

export interface EngineOptions {
  config: ResourceConfig;
  self: HostConfig;
  peer: HostConfig | undefined;
  logger: Logger;
  /** Clock, disks, network, handlers, randomness: realWorld in a process, the simulator's in src/sim. */
  world: World;
  /** How many NBD clients hold the device open (a Primary in use cannot be demoted). */
  openCount?: () => number;
  /** Closes the device's clients before a forced demotion. */
  closeClients?: () => Promise<void>;
  /** The configuration file, for handlers' DRBD_CONF. */
  configFile?: string;
}

export interface EngineStatus {
  resource: string;
  minor: number;
  node: string;
  peerNode: string | undefined;
  role: Role;
  peerRole: Role;
  cstate: ConnectionState;
  disk: DiskState;
  peerDisk: DiskState;
  protocol: 'A' | 'B' | 'C';
  suspended: boolean;
  userPaused: boolean;
  peerPaused: boolean;
  size: number;
  /** Bytes the local disk can hold for the device now (0: Diskless); `grow-disk` raises it. */
  capacity: number;
  counters: Counters;
  oosBytes: number;
  sync: SyncProgress | undefined;
  uuids: { current: string; bitmap: string; history: [string, string] };
  lastDecision: { decision: SyncDecision; rule: string } | undefined;
  lastError: string | undefined;
  /** Where this node's discarded blocks were saved by the last resync that overwrote its own changes. */
  discardedBlocksSavedTo: string | undefined;
  /** Mirrored writes the peer has not yet made durable (the transfer log). */
  transferLog: number;
  /** Completed application writes by latency (latency.ts). */
  writeLatency: LatencySnapshot;
}

export interface EngineEvents {
  state: [EngineState, string];
  /** The plan this side made from the exchanged PARAMS (for the simulator's checks and for logs). */
  plan: [ConnectPlan];
  /** Something that must never happen happened (a refused fact): a bug, logged. */
  bug: [string];
  /** A resync ended on this side (the target): its disk holds the source's data, durably. */
  synced: [boolean];
}

export class Engine extends EventEmitter<EngineEvents> implements Core {
  readonly config: ResourceConfig;
  readonly self: HostConfig;
  readonly peer: HostConfig | undefined;
  readonly log: Logger;
  readonly world: World;
  readonly #openCount: () => number;
  readonly #closeClients: () => Promise<void>;
  readonly #configFile: string | undefined;

  state: EngineState = initialState();
  local: LocalDisk | undefined;
  capacity = 0;
  size = 0;
  /** The configured `size` (disk section), raised by grow-disk; undefined: the whole disk. */
  #sizeLimit: number | undefined;
  readonly counters: Counters = zeroCounters();
  readonly lock = new IntervalLock();
  readonly payloads = new PayloadPool(PEER_PAYLOAD_POOL_BYTES);
  lastAppIo = 0;

  #link: PeerLinkHandle | undefined;
  conn: PeerConnection | undefined;
  #sentParams: Params | undefined;
  peerParams: Params | undefined;
  #discardMyData = false;
  #pendingInvalidate: 'none' | 'self' | 'peer' = 'none';
  /** We sent the peer new PARAMS on an established connection and await its answer. */
  #renegotiating = false;
  #pendingResize = false;
  #promoteId = 0;
  readonly #promoteWaiters = new Map<number, Deferred<{ ok: boolean; message?: string }>>();
  #peerPromoting = false;
  #bitmapChain: Promise<unknown> = Promise.resolve();
  /** The last new data generation started here (runEffects); awaited before acknowledging a write only this disk holds. */
  #newGeneration: Promise<void> = Promise.resolve();
  /** A new generation that waits for I/O to thaw (the cause of the parting), see runEffects. */
  #deferredGeneration: string | undefined;
  #bitmapTimer: Timer | undefined;
  lastDecision: { decision: SyncDecision; rule: string } | undefined;
  lastError: string | undefined;

  readonly #freeze = new IoFreeze();
  readonly writes: WritePath;
  readonly #receiver: Receiver;
  readonly #resync: Resync;
  readonly #verify: Verify;

  constructor(opts: EngineOptions) {
    super();
    this.config = opts.config;
    this.self = opts.self;
    this.peer = opts.peer;
    this.log = opts.logger;
    this.world = opts.world;
    this.#openCount = opts.openCount ?? (() => 0);
    this.#closeClients = opts.closeClients ?? (async () => {});
    this.#configFile = opts.configFile;
    this.#sizeLimit = opts.config.disk.size;
    this.writes = new WritePath(this, this.#freeze);
    this.#receiver = new Receiver(this);
    this.#resync = new Resync(this, this.#receiver);
    this.#verify = new Verify(this, this.#receiver);
  }

  /** Runs a DRBD handler from `handlers {}` with DRBD's environment. */
  handler(name: HandlerName, extraEnv: Record<string, string> = {}): Promise<number | undefined> {
    return this.world.handlers.run(
      name,
      this.config.handlers[name],
      {
        resource: this.config.name,
        minor: this.self.minor,
        peerAddress: this.peer?.address.host,
        peerAf: this.peer?.address.family,
        peerName: this.peer?.name,
        configFile: this.#configFile,
        logger: this.log,
      },
      extraEnv,
    );
  }

  spawn(what: string, p: Promise<unknown>, disk = false): void {
    p.catch((err: unknown) => {
      this.log.error({ err }, `Failed: ${what}`);
      if (disk && this.localDiskUsable())
        this.localIoError(err, what).catch((e: unknown) => this.log.error({ err: e }, 'on-io-error failed'));
    });
  }

  send(c: PeerConnection, m: PeerMessage, onSent?: () => void): boolean {
    return c.send(encodeMessage(m), onSent);
  }

  // --- state ---------------------------------------------------------------

  /** Commits a state change (rules checked), logs the diff with its cause, runs its effects. */
  private commit(change: StateChange, cause: string): void {
    const r = transition(this.state, change, {
      allowTwoPrimaries: this.config.net.allowTwoPrimaries,
      openCount: this.#openCount(),
    });
    if (!r.ok) throw r.error;
    this.apply(r.next, r.diff, cause);
  }

  private apply(next: EngineState, diff: string, cause: string): void {
    if (diff === '') return;
    const prev = this.state;
    this.state = next;
    this.log.info({ change: diff, cause }, `${diff} [${cause}]`);
    this.emit('state', this.state, cause);
    this.runEffects(effectsOf(prev, next, this.config.disk.fencing), cause);
  }

  /** Like commit, for facts about the world: a refusal here is a bug, so it is logged and the fact applied. */
  fact(change: StateChange, cause: string): void {
    try {
      this.commit(change, cause);
    } catch (err) {
      const message = `refused a state fact: ${(err as Error).message} (${JSON.stringify(change)} [${cause}])`;
      this.log.error({ err, change, cause }, 'Refused a state fact');
      this.emit('bug', message);
      const next = { ...this.state, ...change };
      this.apply(next, `${JSON.stringify(change)}`, cause);
    }
  }

  private runEffects(effects: Effect[], cause: string): void {
    for (const e of effects) {
      switch (e.kind) {
        case 'new-generation': {
          // DRBD's NEW_CUR_UUID: with I/O frozen (fencing), no write completes, so the new
          // generation waits for the thaw; a node that never thaws (the peer was promoted and
          // fenced it) never started one, and its reconnect is a plain resync from the newer
          // side instead of a split brain nobody wrote into (seed 26381).
          if (this.state.suspended || effects.some((f) => f.kind === 'fence-peer' && f.freeze)) {
            this.#deferredGeneration = cause;
            break;
          }
          this.startNewGeneration(cause);
          break;
        }
        case 'fence-peer':
          // Before any write completes without the peer: freeze (resource-and-stonith)
          // and ask the fence-peer handler to make sure the peer cannot take over.
          if (e.freeze) this.suspendIo(`fencing: lost the peer (${cause})`);
          this.spawn('fencing the peer', this.fencePeer());
          break;
        case 'unfence-peer':
          // DRBD 9's unfence-peer: a fence the fence-peer handler (or a failover) put on the
          // peer can be taken away now, not at the next poll.
          this.spawn('the unfence-peer handler', this.handler('unfence-peer'));
          break;
        case 'pri-on-incon-degr':
          this.log.error('Primary without a usable local disk lost its peer: no copy of the data is reachable');
          this.spawn('the pri-on-incon-degr handler', this.handler('pri-on-incon-degr'));
          break;
      }
    }
  }

  private get metadata(): Metadata {
    if (!this.local)
      throw new TandemError(ERROR_CODES.stateChange, `${this.config.name}: no local disk (Diskless)`, 11);
    return this.local.md;
  }

  localDiskUsable(): boolean {
    return this.local !== undefined && hasLocalDisk(this.state.disk);
  }

  // --- attach / detach -----------------------------------------------------

  async attach(): Promise<void> {
    if (this.local) return;
    this.fact({ disk: 'Attaching' }, 'attach');
    const storage = this.world.storage;
    let data: BlockFile | undefined;
    let md: Metadata | undefined;
    try {
      if (this.self.metaDisk.kind === 'internal') {
        const settled = await settleGrow(storage, this.self.disk, this.config.name);
        if (settled === 'committed') this.log.warn('An interrupted grow of the disk had committed: kept it');
        if (settled === 'rolled-back')
          this.log.warn('An interrupted grow of the disk had not committed: the file is back at its old size');
      }
      data = await storage.open(this.self.disk);
      const location = await locateMetadata(storage, this.self.disk, this.self.metaDisk);
      md = await Metadata.open(storage, location, this.config.name, data);
      let capacity = Math.min(
        location.dataCapacity,
        md.sb.bitmapBits * BLOCK_SIZE,
        this.#sizeLimit ?? Number.MAX_SAFE_INTEGER,
      );
      capacity -= capacity % BLOCK_SIZE;
      if (md.sb.laSize > capacity) {
        throw new TandemError(
          ERROR_CODES.backing,
          `${this.self.disk}: the disk holds ${capacity} bytes but the device was ${md.sb.laSize} bytes; refusing to attach a shrunk disk`,
        );
      }
      const mdRef = md;
      const al = new ActivityLog(
        { file: md.file, offset: location.offset + AL_OFFSET, bytes: AL_BYTES },
        this.config.disk.alExtents,
        {
          // An extent leaving the log must need no resync after a crash: the data written
          // to it is made durable here first (internal metadata shares the file, so the
          // log's own sync would do; external metadata would not), then the bitmap's bits.
          beforeEvict: async () => {
            if (mdRef.file !== data) await data!.datasync();
            await this.persistBitmap(true);
          },
          onFull: () => this.writes.closeEpoch('activity log full'),
        },
      );
      const hot = await al.recover();
      if (hot.length > 0) {
        // Unclean shutdown: writes may have been in flight in these extents, on one
        // disk and not the other, or not yet durable on the peer. Resync exactly them.
        // The pages are written again even where the bits read back as set: they may be
        // set only in a cache whose sync failed before the crash, and the log is cleared
        // next (seed 7727: the cleared log survived a power loss, the bits did not).
        for (const e of hot) {
          const from = (e * AL_EXTENT_BYTES) / BLOCK_SIZE;
          const to = ((e + 1) * AL_EXTENT_BYTES) / BLOCK_SIZE;
          mdRef.bitmap.setRange(from, to);
          mdRef.bitmap.touchRange(from, to);
        }
        await mdRef.writeDirtyBitmap(true);
        this.log.warn(
          { extents: hot.length, bytes: hot.length * AL_EXTENT_BYTES },
          'Activity log was not empty (unclean shutdown); marked its extents out of sync',
        );
      }
      await al.clear();
      if ((md.has('secondaryInd') || md.has('primaryInd')) && md.sb.bootId !== this.world.host.bootId()) {
        // Stopped uncleanly, and the machine restarted since: what was in its page cache is gone.
        await md.update({ set: ['cacheLost'] });
        this.log.warn('The machine restarted since this disk last took writes: unflushed writes may be lost here');
      }
      if (md.has('secondaryInd')) await md.update({ clear: ['secondaryInd'] });
      this.capacity = capacity;
      this.size = md.sb.laSize > 0 ? md.sb.laSize : capacity;
      this.local = { data, md, al };
      this.#newGeneration = Promise.resolve(); // a failed record belonged to the disk that went
      this.#receiver.onAttached();
      // DRBD: a consistent disk is UpToDate on attach unless fencing is on; then it
      // stays Consistent until a peer confirms it (a lone node cannot know it is newest).
      // A disk whose machine restarted with writes in its cache (cacheLost) may lack writes
      // its peer acknowledged: Consistent too, until the peer is seen (seed 27382).
      const disk: DiskState = !md.has('consistent')
        ? 'Inconsistent'
        : md.has('outdated')
          ? 'Outdated'
          : this.config.disk.fencing === 'dont-care' && !md.has('cacheLost')
            ? 'UpToDate'
            : 'Consistent';
      this.counters.bm = md.bitmapWrites;
      this.fact({ disk }, 'attach');
      this.#bitmapTimer = this.world.clock.every(1000, () => {
        this.spawn('writing the bitmap', this.persistBitmap(false), true);
      });
    } catch (err) {
      // Leave nothing half attached: a later attach starts from scratch.
      this.local = undefined;
      await md?.close().catch(() => {});
      await data?.close().catch(() => {});
      this.fact({ disk: 'Diskless' }, 'attach failed');
      throw err;
    }
  }

  async detach(): Promise<void> {
    const local = this.local;
    if (!local) return;
    if (this.state.role === 'Primary')
      throw new TandemError(
        ERROR_CODES.notImplemented,
        `${this.config.name}: detaching the disk of a Primary (serving through the peer) is not implemented yet`,
        20,
      );
    if (this.conn || this.#link) await this.disconnect();
    await this.lock.drain();
    await this.#resync.close();
    await this.#receiver.drain();
    await local.data.datasync();
    await this.persistBitmap(true);
    await local.al.clear();
    if (local.md.has('secondaryInd')) await local.md.update({ clear: ['secondaryInd'] });
    this.#bitmapTimer?.cancel();
    this.#bitmapTimer = undefined;
    await local.md.close();
    await local.data.close();
    this.local = undefined;
    this.fact({ disk: 'Diskless' }, 'detach');
  }

  /**
   * This disk now holds the only copy that takes writes: what was written to it so far
   * (some of it perhaps on the peer's disk only, durably) is made durable here too, and the
   * new generation is on disk, before any further write completes (the write path waits
   * for it). If either fails, the disk is detached (on-io-error).
   */
  private startNewGeneration(cause: string): void {
    this.#deferredGeneration = undefined;
    const local = this.local;
    if (!local) return;
    const md = local.md;
    const done = local.data
      .datasync()
      .then(() => md.update((sb) => ({ uuids: newCurrent(sb.uuids, this.world.random), set: ['primaryAtSplit'] })))
      .then(() =>
        this.log.info(
          { uuids: uuidsToJson(md.sb.uuids), cause },
          'Started a new data generation: the peer no longer receives our writes',
        ),
      );
    this.spawn('starting a new data generation', done, true);
    this.writes.holdCompletions(done);
    this.#newGeneration = done;
  }

  newGenerationRecorded(): Promise<void> {
    return this.#newGeneration;
  }

  /** Writes changed bitmap pages; concurrent callers share one round (group commit). */
  persistBitmap(sync: boolean): Promise<void> {
    const local = this.local;
    if (!local) return Promise.resolve();
    // A cleared bit reaches the disk only after the data behind it: on a resync target it
    // says "this block arrived", which a power loss could still undo. (On a source the
    // sync costs little and keeps the rule whole, whatever the state says at the time.)
    const round = this.#bitmapChain.then(async () => {
      await local.md.writeDirtyBitmap(sync, local.data);
      this.counters.bm = local.md.bitmapWrites;
    });
    // The bitmap could not be written: the disk failed (on-io-error decides, as for data).
    this.#bitmapChain = round.catch((err: unknown) =>
      this.localIoError(err, 'writing the bitmap').catch((e: unknown) =>
        this.log.error({ err: e }, 'on-io-error failed'),
      ),
    );
    return round;
  }

  synced(connected: boolean): void {
    this.emit('synced', connected);
  }

  saveBeforeOverwrite(offset: number, length: number): Promise<void> {
    return this.#resync.saveBeforeOverwrite(offset, length);
  }

  // --- connection ------------------------------------------------------------

  async connect(opts: { discardMyData?: boolean } = {}): Promise<void> {
    if (!this.peer) throw new TandemError(ERROR_CODES.config, `resource ${this.config.name} has no peer section`);
    // A Diskless node does not connect (tandem has no diskless clients): attach first.
    if (!this.local)
      throw new TandemError(
        ERROR_CODES.stateChange,
        `${this.config.name}: no local disk (Diskless); attach it first`,
        11,
      );
    if (this.#link) {
      if (opts.discardMyData) this.#discardMyData = true;
      return;
    }
    // A new connect from StandAlone carries its own options, as drbdadm's does: a
    // --discard-my-data from an earlier, refused attempt does not linger (seed 2968).
    this.#discardMyData = opts.discardMyData === true;
    const net = this.config.net;
    const link = this.world.transport.link({
      resource: this.config.name,
      nodeName: this.self.name,
      peerName: this.peer.name,
      self: this.self.address,
      peer: this.peer.address,
      sharedSecret: net.sharedSecret,
      hmacAlg: net.cramHmacAlg ?? 'sha256',
      ...(net.tls && net.tlsCa && net.tlsCert && net.tlsKey
        ? { tls: { ca: net.tlsCa, cert: net.tlsCert, key: net.tlsKey } }
        : {}),
      connectIntMs: net.connectIntMs,
      pingIntMs: net.pingIntMs,
      pingTimeoutMs: net.pingTimeoutMs,
      payloads: this.payloads,
      logger: this.log.child({ component: 'link' }),
    });
    link.on('state', (cs, reason) => {
      if (!this.conn && this.#link === link) this.fact({ conn: cs }, reason);
    });
    link.on('refused', (reason) => {
      this.lastError = reason;
    });
    link.on('connected', (c) => this.onConnected(link, c));
    this.#link = link;
    await link.start();
  }

  async disconnect(): Promise<void> {
    const link = this.#link;
    this.#link = undefined;
    if (!link) {
      this.fact({ conn: 'StandAlone' }, 'disconnect');
      return;
    }
    this.fact({ conn: 'Disconnecting' }, 'disconnect');
    // The connection first: a listening server's close() waits for its sockets.
    this.conn?.close('TearDown', 'disconnect');
    await link.stop();
    await this.writes.settled();
    this.fact({ conn: 'StandAlone' }, 'disconnect');
  }

  private onConnected(link: PeerLinkHandle, c: PeerConnection): void {
    if (this.#link !== link || !this.local) {
      c.close('StandAlone', this.local ? 'disconnected meanwhile' : 'no local disk');
      return;
    }
    this.conn = c;
    c.onClose = (cs, reason) => this.onConnectionLost(c, cs, reason);
    // Our PARAMS go out, and the per-connection state is reset, before any frame
    // from the peer is handled: frames that came with the handshake are replayed by
    // setHandler, and the plan needs what we sent.
    this.peerParams = undefined;
    this.writes.onConnected(c);
    this.#receiver.onConnected();
    this.#resync.onConnected();
    this.sendParams(c, false);
    c.setHandler((f) => this.onFrame(c, f));
  }

  private makeParams(reply: boolean): Params {
    const md = this.metadata;
    return {
      reply,
      protocol: this.config.protocol,
      capacity: this.capacity,
      laSize: md.sb.laSize,
      uuids: uuidsToJson(md.sb.uuids),
      disk: this.state.disk,
      role: this.state.role === 'Primary' ? 'Primary' : 'Secondary',
      allowTwoPrimaries: this.config.net.allowTwoPrimaries,
      discardMyData: this.#discardMyData,
      crashedPrimary: md.has('crashedPrimary') && this.state.role !== 'Primary',
      cacheLost: md.has('cacheLost'),
      node: this.self.name,
      changes: md.bitmap.count,
      primaryAtSplit: md.has('primaryAtSplit'),
      // `invalidate` while alone is remembered on disk until a full sync as target ends.
      invalidate: this.#pendingInvalidate !== 'none' ? this.#pendingInvalidate : md.has('fullSync') ? 'self' : 'none',
      resize: this.#pendingResize,
    };
  }

  private sendParams(c: PeerConnection, reply: boolean): void {
    if (!reply && this.peerParams) this.#renegotiating = true;
    this.#sentParams = this.makeParams(reply);
    this.send(c, { type: 'params', params: this.#sentParams });
  }

  /** Our decision to drop the connection and stop (split brain, a refusal): the peer is told why. */
  private abortConnection(c: PeerConnection, reason: string, log: 'warn' | 'error' = 'error'): void {
    this.lastError = reason;
    this.log[log]({ reason }, reason);
    this.send(c, { type: 'error', message: reason });
    const link = this.#link;
    this.#link = undefined;
    if (link) this.spawn('stopping the peer link', link.stop());
    c.close('StandAlone', reason, true);
  }

  private onConnectionLost(c: PeerConnection, cs: ConnectionState, reason: string): void {
    if (this.conn !== c) return;
    this.conn = undefined;
    this.peerParams = undefined;
    this.#renegotiating = false;
    this.#peerPromoting = false;
    for (const w of this.#promoteWaiters.values()) w.resolve({ ok: false, message: 'connection lost' });
    this.#promoteWaiters.clear();
    this.#resync.onConnectionLost();
    this.#verify.onConnectionLost();
    // The state first (its effects: a new generation, fencing), then the transfer log's bits.
    const link = this.#link;
    if (link) {
      this.fact({ conn: cs === 'StandAlone' ? 'NetworkFailure' : cs }, reason);
      this.writes.onConnectionLost();
      this.fact({ conn: 'Unconnected' }, 'reconnecting');
      link.resume();
    } else {
      if (this.state.conn !== 'Disconnecting') this.fact({ conn: 'StandAlone' }, reason);
      this.writes.onConnectionLost();
    }
  }

  // --- frames ------------------------------------------------------------------

  private onFrame(c: PeerConnection, f: Frame): void {
    let m: PeerMessage;
    try {
      m = decodeMessage(f);
      this.dispatch(c, m);
    } catch (err) {
      this.log.error({ err }, 'Failed to handle a peer frame');
      c.close('ProtocolError', (err as Error).message);
    }
  }

  /** Runs an asynchronous handler; a failure drops the connection (a disk error also goes through on-io-error). */
  private background(c: PeerConnection, what: string, p: Promise<void>): void {
    p.catch((err: unknown) => {
      this.log.error({ err }, `Failed: ${what}`);
      const done = this.localDiskUsable() ? this.localIoError(err, what) : Promise.resolve();
      this.spawn(
        what,
        done.finally(() => c.close('NetworkFailure', `${what} failed: ${(err as Error).message}`)),
      );
    });
  }

  private dispatch(c: PeerConnection, m: PeerMessage): void {
    switch (m.type) {
      case 'params':
        // A resize request: look at our own disk again before answering.
        if (m.params.resize && !m.params.reply) {
          this.background(
            c,
            'growing for the peer',
            this.refreshCapacity()
              .catch((err: unknown) =>
                this.log.warn({ err }, "Could not grow for the peer's resize; answering with the current size"),
              )
              .then(() => {
                if (this.conn === c) this.onParams(c, m.params);
              }),
          );
          return;
        }
        return this.onParams(c, m.params);
      case 'state':
        return this.onPeerState(c, m.state);
      case 'error': {
        this.lastError = `peer: ${m.message}`;
        this.log.error({ reason: m.message }, 'Peer dropped the connection');
        const link = this.#link;
        this.#link = undefined;
        if (link) this.spawn('stopping the peer link', link.stop());
        return c.close('StandAlone', `peer: ${m.message}`);
      }
    }
    if (!this.peerParams) throw new Error(`packet type ${m.type} before PARAMS`);
    switch (m.type) {
      case 'bitmap':
        return this.#resync.onBitmap(c, m.chunk, m.last);
      case 'sync-done':
        return this.background(c, 'finishing the resync', this.#resync.onSyncDone(c, m.uuids));
      case 'sync-done-ack':
        return this.background(c, 'finishing the resync', this.#resync.onSyncDoneAck());
      case 'data':
        return this.#receiver.onData(c, m.seq, m.offset, m.data, m.payload, m.fua);
      case 'zero':
        return this.#receiver.onZero(c, m.seq, m.offset, m.length, m.fua, m.punch);
      case 'barrier':
        return this.#receiver.onBarrier(c, m.epoch);
      case 'recv-ack':
        return this.writes.onAck(m.seq, 'received');
      case 'write-ack':
        return this.writes.onAck(m.seq, 'written');
      case 'neg-ack':
        return this.writes.onNegAck(m.seq);
      case 'barrier-ack':
        return this.writes.onBarrierAck(m.epoch, m.writes, m.errno);
      case 'rs-data':
        return this.#resync.onRsData(c, m.offset, m.data, m.payload);
      case 'rs-zero':
        return this.#resync.onRsZero(c, m.offset, m.length);
      case 'rs-ack':
        return this.#resync.onRsAck(m.offset, m.length, true);
      case 'rs-neg-ack':
        return this.#resync.onRsAck(m.offset, m.length, false);
      case 'rs-csum':
        return this.#resync.onRsCsum(c, m.offset, m.length, m.digests);
      case 'rs-csum-reply':
        return this.#resync.onRsCsumReply(c, m.offset, m.length, m.differ);
      case 'verify-req':
        return this.#verify.onRequest(c, m.offset, m.length, m.digests);
      case 'verify-reply':
        return this.#verify.onReply(m.offset, m.length, m.mismatch);
      case 'read-req':
        return this.#receiver.onReadRequest(c, m.id, m.offset, m.length);
      case 'read-reply':
        return this.writes.onReadReply(m.id, m.errno, m.data);
    }
  }

  /**
   * Both sides send PARAMS; each plans from (what it sent, what it got) with the same
   * pure rules (sync-plan.ts), so both reach mirrored plans without a third message.
   */
  private onParams(c: PeerConnection, p: Params): void {
    if (!p.reply && this.peerParams && (this.#renegotiating || this.state.conn !== 'Connected')) {
      // The peer renegotiates while we do too (the requests crossed), or while a resync
      // or bitmap exchange runs: one plan cannot follow the other safely. Start over: the
      // reconnect plans once from both sides' current PARAMS (pending invalidate/resize
      // requests are kept and go out again).
      this.log.warn({ conn: this.state.conn }, 'The peer renegotiated at the same time: reconnecting to plan again');
      c.close('NetworkFailure', 'renegotiation crossed');
      return;
    }
    if (p.reply) this.#renegotiating = false;
    if (!p.reply && isConnected(this.state.conn) && this.peerParams) {
      // The peer renegotiates (e.g. after `primary --force`): answer with ours.
      this.sendParams(c, true);
    }
    this.peerParams = p;
    const plan = planConnect(this.#sentParams!, p, {
      policy: this.config.net,
      keepsDiscarded: this.config.disk.discardedDataDir !== 'none',
    });
    this.#pendingInvalidate = 'none';
    this.#pendingResize = false;
    this.emit('plan', plan);
    const splitBrain =
      ((plan.kind === 'refuse' || plan.kind === 'retry') && plan.splitBrain) ||
      plan.kind === 'demote-victim' ||
      (plan.kind === 'sync' && plan.splitBrain !== undefined);
    if (splitBrain) {
      this.log.error({ rule: plan.kind === 'sync' ? plan.rule : plan.rule }, 'Split-Brain detected');
      this.spawn('the split-brain handler', this.handler('split-brain'));
    }
    switch (plan.kind) {
      case 'refuse':
        if (plan.decision) this.lastDecision = { decision: plan.decision, rule: plan.rule ?? plan.reason };
        if (plan.callPriLost) this.spawn('the pri-lost-after-sb handler', this.handler('pri-lost-after-sb'));
        return this.abortConnection(c, plan.reason);
      case 'retry':
        this.lastDecision = { decision: plan.decision, rule: plan.rule };
        return c.close('NetworkFailure', plan.reason);
      case 'demote-victim':
        // Demote by force, then come back as the victim: the peer keeps retrying.
        this.lastDecision = { decision: plan.decision, rule: plan.rule };
        this.log.error(
          { rule: plan.rule },
          'Split brain victim is this Primary: demoting it by force (violently-as0p)',
        );
        c.close('NetworkFailure', plan.reason);
        this.spawn(
          'demoting the split brain victim',
          this.demote({ force: true }).then(() => {
            this.#discardMyData = true;
          }),
        );
        return;
      case 'sync':
        return this.applySyncPlan(c, p, plan);
    }
  }

  private applySyncPlan(c: PeerConnection, p: Params, plan: Extract<ConnectPlan, { kind: 'sync' }>): void {
    const md = this.metadata;
    this.lastDecision = { decision: plan.decision, rule: plan.rule };
    this.log.info({ decision: plan.decision, rule: plan.rule, size: plan.size }, 'Decided how to sync with the peer');
    this.#discardMyData = false;
    if (plan.size !== this.size || md.sb.laSize !== plan.size) {
      this.size = plan.size;
      this.background(c, 'recording the device size', md.update({ laSize: plan.size }));
    }
    if (plan.grownFrom !== undefined)
      md.bitmap.setRange(Math.floor(plan.grownFrom / BLOCK_SIZE), Math.ceil(plan.size / BLOCK_SIZE));
    const peerRole: Role = p.role;
    if (plan.role === 'none') {
      if (plan.disk === 'UpToDate' && this.state.disk !== 'UpToDate')
        this.background(c, 'recording UpToDate', this.persistUpToDate());
      if (md.has('primaryAtSplit')) this.background(c, 'clearing a flag', md.update({ clear: ['primaryAtSplit'] }));
      if (md.has('cacheLost') && plan.disk === 'UpToDate' && plan.peerDisk === 'UpToDate')
        this.background(c, 'clearing a flag', md.update({ clear: ['cacheLost'] }));
      this.fact(
        { conn: 'Connected', peerRole, peerDisk: plan.peerDisk, disk: plan.disk },
        'connected, no resync needed',
      );
      this.resumeIo('the peer is back');
      return;
    }
    if (plan.role === 'source') {
      if (plan.disk === 'UpToDate' && this.state.disk !== 'UpToDate')
        this.background(c, 'recording UpToDate', this.persistUpToDate());
      this.fact({ conn: 'WFBitMapS', peerRole, peerDisk: plan.peerDisk, disk: plan.disk }, plan.rule);
      this.resumeIo('the peer is back');
    } else {
      this.fact({ conn: 'WFBitMapT', peerRole, peerDisk: plan.peerDisk }, plan.rule);
    }
    // A `pause-sync` given while apart still holds: the peer learns it before the resync starts.
    if (this.state.userIsp) this.sendState({ syncPaused: true });
    if (plan.full) md.bitmap.setRange(0, Math.ceil(plan.size / BLOCK_SIZE));
    if (plan.role === 'target') this.#resync.prepareTarget(plan.saveDiscarded);
    if (plan.role === 'source' && plan.full) this.#resync.startFullSource(c);
    this.#resync.sendBitmap(c);
  }

  private onPeerState(c: PeerConnection, s: StateMsg): void {
    if (s.promoteRequest !== undefined) {
      // Grant unless we are Primary (or about to be) and two primaries are not allowed.
      const refused =
        !this.config.net.allowTwoPrimaries &&
        (this.state.role === 'Primary' || (this.#promoteWaiters.size > 0 && this.#link?.dials === true));
      if (!refused) this.#peerPromoting = true;
      this.send(c, {
        type: 'state',
        state: {
          promoteReply: {
            id: s.promoteRequest,
            ok: !refused,
            ...(refused ? { message: REFUSALS.twoPrimaries[1] } : {}),
          },
        },
      });
      return;
    }
    if (s.promoteReply) {
      this.#promoteWaiters.get(s.promoteReply.id)?.resolve({
        ok: s.promoteReply.ok,
        ...(s.promoteReply.message ? { message: s.promoteReply.message } : {}),
      });
      this.#promoteWaiters.delete(s.promoteReply.id);
      return;
    }
    if (s.clearBitmapUuid) {
      const uuids = uuidsFromJson(s.clearBitmapUuid);
      this.background(
        c,
        'new-current-uuid --clear-bitmap',
        (async () => {
          const md = this.metadata;
          md.bitmap.clearAll();
          await this.persistBitmap(true);
          await md.update({ uuids, laSize: this.size, set: ['consistent', 'wasUpToDate'], clear: ['outdated'] });
          this.fact({ disk: 'UpToDate', peerDisk: 'UpToDate' }, 'new-current-uuid --clear-bitmap on the peer');
        })(),
      );
      return;
    }
    if (s.syncUuid) return this.#resync.onSyncUuid(s.syncUuid);
    if (s.verifyStart) {
      this.#verify.reset();
      this.fact({ conn: 'VerifyT' }, 'online verify started by the peer');
      return;
    }
    if (s.verifyDone) {
      this.fact({ conn: 'Connected' }, `online verify finished: ${s.verifyDone.oosBlocks} blocks out of sync`);
      return;
    }
    const change: StateChange = {};
    if (s.role) {
      change.peerRole = s.role;
      this.#peerPromoting = false;
    }
    if (s.disk) change.peerDisk = s.disk;
    if (s.syncPaused !== undefined) {
      change.peerIsp = s.syncPaused;
      if (isSyncing(this.state.conn)) change.conn = syncConn(this.state.conn, this.state.userIsp || s.syncPaused);
      if (!s.syncPaused) this.#resync.wake();
    }
    this.fact(change, 'peer state change');
  }

  private sendState(state: StateMsg): void {
    if (this.conn) this.send(this.conn, { type: 'state', state });
  }

  // --- the application's I/O (called by the NBD export) -------------------------

  read(offset: number, length: number): Promise<Buffer> {
    return this.writes.read(offset, length);
  }

  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    return this.writes.write(offset, data, fua);
  }

  flush(): Promise<void> {
    return this.writes.flush();
  }

  /** NBD TRIM (punch) and WRITE_ZEROES: zeroes on both nodes; see WritePath.zero. */
  zero(offset: number, length: number, fua: boolean, punch: boolean): Promise<void> {
    return this.writes.zero(offset, length, fua, punch);
  }

  /**
   * A local disk operation failed. DRBD's on-io-error decides: `detach` (the
   * default) fails the disk and continues Diskless, serving through the peer;
   * `pass_on` returns the error to the application; `call-local-io-error` runs
   * the local-io-error handler and then passes the error on.
   */
  async localIoError(err: unknown, what: string): Promise<'detached' | 'passed'> {
    const policy = this.config.disk.onIoError;
    this.log.error({ err, what, policy }, `Local I/O error during ${what}`);
    if (policy === 'call-local-io-error') {
      await this.handler('local-io-error');
      return 'passed';
    }
    if (policy === 'pass_on') return 'passed';
    if (this.state.disk !== 'Diskless' && this.state.disk !== 'Failed') {
      this.fact({ disk: 'Failed' }, `local I/O error during ${what}`);
      this.#bitmapTimer?.cancel();
      this.#bitmapTimer = undefined;
      this.fact({ disk: 'Diskless' }, 'on-io-error detach');
      this.sendState({ disk: 'Diskless' });
      // A resync cannot go on without this disk (as source it has nothing to send, as target
      // nowhere to write): the connection starts over, and the plan sees the disk is gone.
      const c = this.conn;
      if (c && (isSyncing(this.state.conn) || this.state.conn === 'WFBitMapS' || this.state.conn === 'WFBitMapT'))
        c.close('NetworkFailure', `the local disk failed during the resync (${what})`);
      // Writes in flight may still land on this disk without their bits: when it is attached
      // again it is Inconsistent and wholly out of sync (a full resync from the peer, or a
      // person's `primary --force`), never trusted as it was. Best effort: the disk failed.
      const md = this.local?.md;
      if (md) {
        md.bitmap.setAll();
        this.spawn(
          'marking the failed disk for a full resync',
          md.writeDirtyBitmap(true).then(() => md.update({ clear: ['consistent', 'wasUpToDate'] })),
        );
      }
      if (this.state.role === 'Primary' && !isUpToDate(this.state.peerDisk)) {
        this.log.error('Detached the disk of a Primary with no UpToDate peer: application I/O fails from now on');
      }
    }
    return 'detached';
  }

  // --- resync control -------------------------------------------------------------

  async pauseSync(): Promise<void> {
    const paused = this.state.userIsp;
    this.fact(
      { userIsp: true, conn: isSyncing(this.state.conn) ? syncConn(this.state.conn, true) : this.state.conn },
      'pause-sync',
    );
    if (!paused) this.sendState({ syncPaused: true });
  }

  async resumeSync(): Promise<void> {
    this.fact(
      {
        userIsp: false,
        conn: isSyncing(this.state.conn) ? syncConn(this.state.conn, this.state.peerIsp) : this.state.conn,
      },
      'resume-sync',
    );
    this.sendState({ syncPaused: false });
    this.#resync.wake();
  }

  // --- roles ------------------------------------------------------------------------

  /** Role changes run one at a time (two `primary --force` at once would start two generations). */
  #roleChain: Promise<unknown> = Promise.resolve();

  private serialRole<T>(fn: () => Promise<T>): Promise<T> {
    const run = this.#roleChain.then(fn, fn);
    this.#roleChain = run.catch(() => undefined);
    return run;
  }

  promote(opts: { force?: boolean } = {}): Promise<void> {
    return this.serialRole(() => this.promoteNow(opts));
  }

  demote(opts: { force?: boolean } = {}): Promise<void> {
    return this.serialRole(() => this.demoteNow(opts));
  }

  private async promoteNow(opts: { force?: boolean }): Promise<void> {
    if (this.state.role === 'Primary') return;
    // `--force` declares this node's data the truth, so it needs data: a disk that failed
    // or was detached has none (DRBD forces only a disk that is Inconsistent or better).
    // Seed 29219: a Diskless node was forced Primary, reported UpToDate with no disk, and
    // later took a resync onto the failed disk's stale handles.
    if (opts.force && !this.localDiskUsable())
      throw refuse(REFUSALS.noUpToDateDisk, `no local disk to force (${this.state.disk}): attach it first`);
    const md = this.metadata;
    // With fencing on, a node that cannot see its peer is promoted only once the
    // fence-peer handler has made sure the peer cannot be (DRBD's "Refusing to be
    // Primary while peer is not outdated"): the peer may be Primary on the other side
    // of a partition, and writes acknowledged here would then be lost to a failover
    // (simulator seed 4332). A Consistent disk (attached alone, newest unknown) becomes
    // UpToDate by the same fence. `--force` overrides a failed fence, as in DRBD.
    // A machine that restarted and lost unflushed writes since its disk last saw its peer may
    // lack writes the peer acknowledged (their epochs were not durable here yet): alone, it
    // is not the newest copy for certain, whatever a fence says (seed 27382: promoted by
    // hand, it later won a split brain over the node that held the acknowledged write).
    if (!this.conn && md?.has('cacheLost') && !opts.force)
      throw refuse(
        REFUSALS.noUpToDateDisk,
        'this machine restarted and lost unflushed writes since its disk last saw its peer: connect to the peer first, or --force to accept losing them',
      );
    let fencedConsistent = false;
    if (
      !this.conn &&
      this.config.disk.fencing !== 'dont-care' &&
      (isUpToDate(this.state.disk) || this.state.disk === 'Consistent')
    ) {
      const code = await this.handler('fence-peer');
      const fenced = code === 3 || code === 4 || code === 5 || code === 7;
      if (this.conn) throw refuse(REFUSALS.inTransientState, 'the peer connected while it was being fenced');
      if (fenced) {
        fencedConsistent = this.state.disk === 'Consistent';
      } else {
        const why = code === undefined ? 'no fence-peer handler is configured' : `fence-peer handler exited ${code}`;
        if (!opts.force) throw refuse(REFUSALS.primaryNop, why);
        this.log.warn(
          { code },
          `Forced into a split brain situation: promoting although the peer is not fenced (${why})`,
        );
      }
    }
    if (!isUpToDate(this.state.disk) && !fencedConsistent && !opts.force) throw refuse(REFUSALS.noUpToDateDisk);
    if (this.conn && (this.state.peerRole === 'Primary' || this.#peerPromoting) && !this.config.net.allowTwoPrimaries)
      throw refuse(REFUSALS.twoPrimaries);
    if (isSyncTarget(this.state.conn)) throw refuse(REFUSALS.syncing);
    // Connected: ask the peer first, so two nodes can never both promote at once.
    if (this.conn && !this.config.net.allowTwoPrimaries) {
      const id = ++this.#promoteId;
      const w = deferred<{ ok: boolean; message?: string }>();
      this.#promoteWaiters.set(id, w);
      this.sendState({ promoteRequest: id });
      const timeout = this.world.clock.after(this.config.net.timeoutMs, () =>
        w.resolve({ ok: false, message: 'peer did not answer' }),
      );
      const answer = await w.promise;
      timeout.cancel();
      this.#promoteWaiters.delete(id);
      if (!answer.ok) throw new StateChangeError(-1, answer.message ?? 'peer refused');
    }
    const forced = opts.force === true && !isUpToDate(this.state.disk) && !fencedConsistent;
    if (forced && this.conn && this.peerParams) this.assertNotRenegotiating();
    // Promoted while not connected: our data will move ahead of the peer's (DRBD: conn < WFReportParams).
    const alone = !this.conn;
    if (forced) {
      md.bitmap.setRange(0, Math.ceil(this.size / BLOCK_SIZE));
      await this.persistBitmap(true);
    }
    // Alone, this disk becomes the only copy that takes writes: what it received as
    // Secondary is made durable first (the peer that sent it may be gone for good).
    if (alone) await this.local!.data.datasync();
    await md.update((sb) => {
      let uuids: Uuids = sb.uuids;
      if (forced) {
        // `--force`/`--overwrite-data-of-peer`: our data becomes the truth; all of it must reach the peer.
        // A new generation that is not relative to anything: the peer gets a full sync.
        // The old generation and, if set, the one the bitmap was relative to stay in history,
        // so the peer's data is recognised as an ancestor (a full sync, or a detectable split brain).
        const history: [bigint, bigint] =
          uuids.current === UUID_JUST_CREATED
            ? uuids.history
            : [uuids.current, uuids.bitmap !== 0n ? uuids.bitmap : uuids.history[0]];
        uuids = { current: randomUuid(this.world.random), bitmap: 0n, history };
      } else if (alone) {
        // Always a new generation, even with a bitmap generation left over (a resync whose
        // end the target confirmed too late): the peer may have adopted our current since,
        // and writes under it would then look like no change at all.
        uuids = newCurrent(uuids, this.world.random);
      }
      return {
        uuids,
        laSize: sb.laSize > 0 ? sb.laSize : this.size,
        set: forced ? ['consistent', 'wasUpToDate', 'primaryInd', 'crashedPrimary'] : ['primaryInd', 'crashedPrimary'],
        bootId: this.world.host.bootId(),
        // Forced: this node's data is the truth now, whatever an earlier `invalidate` asked.
        clear: forced ? ['outdated', 'fullSync'] : [],
      };
    });
    this.commit(
      { role: 'Primary', ...(forced || fencedConsistent ? { disk: 'UpToDate' as const } : {}) },
      opts.force ? 'primary --force' : 'primary',
    );
    this.sendState({ role: 'Primary', disk: this.state.disk === 'UpToDate' ? 'UpToDate' : undefined });
    if (forced && this.conn && this.peerParams) this.sendParams(this.conn, false);
  }

  private async demoteNow(opts: { force?: boolean }): Promise<void> {
    if (this.state.role !== 'Primary') return;
    if (opts.force && this.state.suspended) this.resumeIo('demoted while frozen: failing the frozen I/O', false);
    if (opts.force && this.#openCount() > 0) await this.#closeClients();
    if (this.#openCount() > 0) throw refuse(REFUSALS.deviceInUse, `${this.#openCount()} NBD client(s) connected`);
    await this.lock.drain();
    this.commit({ role: 'Secondary' }, 'secondary');
    await this.persistBitmap(true);
    await this.metadata.update({ clear: ['primaryInd', 'crashedPrimary'] });
    this.sendState({ role: 'Secondary' });
  }

  /**
   * `new-current-uuid --clear-bitmap`: skip the initial sync of two blank disks
   * (DRBD's documented shortcut for thinly provisioned or zeroed devices). Only
   * for a Connected pair whose disks have never held data.
   */
  async newCurrentUuid(opts: { clearBitmap: boolean }): Promise<void> {
    if (!opts.clearBitmap)
      throw new TandemError(
        ERROR_CODES.notImplemented,
        'new-current-uuid without --clear-bitmap is not implemented yet',
        20,
      );
    const md = this.metadata;
    if (
      this.state.conn !== 'Connected' ||
      this.state.disk !== 'Inconsistent' ||
      this.state.peerDisk !== 'Inconsistent'
    ) {
      throw new StateChangeError(
        -15,
        'new-current-uuid --clear-bitmap needs a Connected pair with both disks Inconsistent',
      );
    }
    if (md.sb.uuids.current !== 4n || this.peerParams?.uuids.current !== '0000000000000004') {
      throw new StateChangeError(
        -3,
        `new-current-uuid --clear-bitmap is only for disks that never held data (both must be just created; ours ${uuidsToJson(md.sb.uuids).current}, peer's ${this.peerParams?.uuids.current ?? 'unknown'})`,
      );
    }
    const uuids = newCurrent({ ...md.sb.uuids, bitmap: 0n }, this.world.random);
    const fresh = { ...uuids, bitmap: 0n };
    md.bitmap.clearAll();
    await this.persistBitmap(true);
    await md.update({ uuids: fresh, laSize: this.size, set: ['consistent', 'wasUpToDate'], clear: ['outdated'] });
    this.sendState({ clearBitmapUuid: uuidsToJson(fresh) });
    this.fact({ disk: 'UpToDate', peerDisk: 'UpToDate' }, 'new-current-uuid --clear-bitmap');
  }

  async verify(): Promise<void> {
    const alg = this.config.net.verifyAlg;
    if (!alg)
      throw new TandemError(
        ERROR_CODES.config,
        `${this.config.name}: no verify-alg configured (net { verify-alg sha1; })`,
        10,
      );
    if (!isSupportedAlg(alg))
      throw new TandemError(ERROR_CODES.config, `${this.config.name}: verify-alg ${alg} is not supported here`, 10);
    if (this.state.conn !== 'Connected') throw refuse(REFUSALS.needConnection);
    if (!isUpToDate(this.state.disk) || !isUpToDate(this.state.peerDisk))
      throw new StateChangeError(-2, 'Online verify needs UpToDate data on both nodes');
    this.fact({ conn: 'VerifyS' }, 'verify');
    this.#verify.start(this.conn!, alg.toLowerCase());
  }

  /**
   * Re-reads this disk's usable size (after the backing device grew, or grow-disk) and
   * grows the bitmap to cover it. Internal metadata sits at the end of the device: only
   * grow-disk moves it, so a device that changed size under it otherwise is refused.
   */
  private async refreshCapacity(): Promise<void> {
    const md = this.metadata;
    const location = await locateMetadata(this.world.storage, this.self.disk, this.self.metaDisk);
    if (md.location.internal && location.offset !== md.location.offset)
      throw new TandemError(
        ERROR_CODES.notImplemented,
        `${this.self.disk} changed size under its internal metadata (it was at ${md.location.offset}, the new end puts it at ${location.offset}): a file grows with 'tandemadm grow-disk'; a block device with internal metadata cannot grow online (use an external meta-disk)`,
        20,
      );
    let capacity = Math.min(
      location.dataCapacity,
      md.maxBitmapBits * BLOCK_SIZE,
      this.#sizeLimit ?? Number.MAX_SAFE_INTEGER,
    );
    capacity -= capacity % BLOCK_SIZE;
    if (capacity < this.size)
      throw new StateChangeError(
        -14,
        `Refusing to shrink the device: the disk holds ${capacity} bytes, the device is ${this.size}`,
      );
    await md.growBitmap(Math.ceil(capacity / BLOCK_SIZE));
    this.capacity = capacity;
  }

  /**
   * `grow-disk` (tandem's own; DRBD leaves growing the backing device to its owner): the
   * configured size went up to `size`. A file-backed disk (a pool file) grows to hold it:
   * with internal metadata, the metadata moves to the new end while every write waits
   * (metadata.ts says how a crash is survived); with external metadata, the file just
   * grows. A block device must already be big enough. Any role, any connection state:
   * only this node's disk changes; the device grows at the next `resize`.
   */
  async growDisk(size: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size <= 0 || size % BLOCK_SIZE !== 0)
      throw new StateChangeError(-11, `grow-disk: ${size} is not a positive multiple of ${BLOCK_SIZE} bytes`);
    const md = this.metadata;
    if (size < this.size)
      throw new StateChangeError(
        -14,
        `grow-disk: ${size} bytes is less than the device's ${this.size}; it never shrinks`,
      );
    const local = this.local!;
    const disk = await this.world.storage.sizeOf(this.self.disk);
    if (md.location.internal && md.location.dataCapacity < size) {
      if (disk.isBlockDevice)
        throw new TandemError(
          ERROR_CODES.notImplemented,
          `grow-disk: ${this.self.disk} is a block device with internal metadata; it cannot grow online (use an external meta-disk)`,
          20,
        );
      await this.#moveInternalMetadata(disk.size, internalFileBytesFor(Math.max(size, disk.size)));
    } else if (!md.location.internal && disk.size < size) {
      if (disk.isBlockDevice)
        throw new StateChangeError(
          -14,
          `grow-disk: ${this.self.disk} holds ${disk.size} bytes, not ${size}: grow it first`,
        );
      await local.data.truncate(size);
      await local.data.datasync();
    }
    const before = this.capacity;
    this.#sizeLimit = size;
    await this.refreshCapacity();
    if (this.capacity !== before) this.log.info({ from: before, to: this.capacity }, 'The disk can hold more now');
  }

  /**
   * Grows the file from `from` to `to` bytes and moves the internal metadata to its new
   * end, with every read-write range locked (no write, resync or received write runs).
   */
  async #moveInternalMetadata(from: number, to: number): Promise<void> {
    const local = this.local!;
    const release = await this.lock.acquire(0, Number.MAX_SAFE_INTEGER);
    try {
      const at = await moveInternalMetadata({
        storage: this.world.storage,
        data: local.data,
        md: local.md,
        log: local.al,
        resource: this.config.name,
        from,
        to,
        onUndoFailed: (err) => this.log.error({ err }, 'Could not undo a failed grow; the next attach settles it'),
      });
      this.log.warn({ from, to, metadataAt: at.offset }, 'Grew the disk file and moved its internal metadata');
      await this.persistBitmap(true);
    } finally {
      release();
    }
  }

  /**
   * `resize`: grow online after both backing devices grew; the new area is synced. With
   * `size` (DRBD's `resize --size`), sets the device's size on a Primary that is StandAlone:
   * the way back when a node that never recorded the agreed size (fresh metadata, or the
   * record lost with its cache) was forced Primary alone and took its whole, larger disk —
   * its peer then refuses it ("The peer's disk size is too small!"). Shrinking drops what
   * lies past the new end, so the caller makes sure nothing there matters (a filesystem
   * shrunk first, or no data there at all).
   */
  async resize(o: { size?: number } = {}): Promise<void> {
    if (o.size !== undefined) return this.setSize(o.size);
    if (!this.conn || this.state.conn !== 'Connected') throw refuse(REFUSALS.needConnection);
    this.assertNotRenegotiating();
    if (!isUpToDate(this.state.disk) || !isUpToDate(this.state.peerDisk))
      throw new StateChangeError(-2, 'resize needs UpToDate data on both nodes');
    await this.refreshCapacity();
    this.#pendingResize = true;
    this.sendParams(this.conn, false);
  }

  private async setSize(size: number): Promise<void> {
    if (!Number.isSafeInteger(size) || size <= 0 || size % BLOCK_SIZE !== 0)
      throw new StateChangeError(-11, `resize --size: ${size} is not a positive multiple of ${BLOCK_SIZE} bytes`);
    if (this.state.conn !== 'StandAlone')
      throw new StateChangeError(
        -10,
        `resize --size needs the resource StandAlone (it is ${this.state.conn}): disconnect first; a connected pair grows with plain resize`,
      );
    if (this.state.role !== 'Primary' || !isUpToDate(this.state.disk))
      throw new StateChangeError(-2, 'resize --size needs this node Primary with UpToDate data');
    const md = this.metadata;
    if (size > this.capacity)
      throw new StateChangeError(-14, `resize --size: the disk holds ${this.capacity} bytes, not ${size}`);
    const from = this.size;
    if (size === from) return;
    // Grown: the new area is not on the peer. Shrunk: the bits past the end no longer count.
    if (size > from) md.bitmap.setRange(Math.ceil(from / BLOCK_SIZE), Math.ceil(size / BLOCK_SIZE));
    else md.bitmap.clearRange(Math.ceil(size / BLOCK_SIZE), Math.ceil(from / BLOCK_SIZE));
    await this.persistBitmap(true);
    await md.update({ laSize: size });
    this.size = size;
    this.log.warn({ from, to: size }, size < from ? 'Device shrunk by resize --size' : 'Device grown by resize --size');
  }

  /** Freezes application I/O: requests wait (none completes) until resumeIo. */
  private suspendIo(cause: string): void {
    if (this.state.suspended) return;
    this.#freeze.freeze();
    this.fact({ suspended: true }, cause);
  }

  /**
   * Thaws I/O; with `go` false the frozen requests fail with EIO instead of proceeding. A
   * new generation deferred by the freeze starts first when this disk is still the only
   * copy that takes writes (the frozen writes then complete only once it is on disk).
   */
  resumeIo(cause: string, go = true): void {
    if (!this.state.suspended) return;
    const deferred = this.#deferredGeneration;
    this.#deferredGeneration = undefined;
    this.fact({ suspended: false }, cause);
    if (go && deferred !== undefined && soleWritableCopy(this.state))
      this.startNewGeneration(`${deferred}; I/O thawed: ${cause}`);
    this.#freeze.thaw(go);
  }

  /**
   * DRBD's fence-peer contract: the handler makes sure the peer cannot become
   * Primary with older data (marks it Outdated, or powers it off) and says so
   * by its exit code. 3: peer Inconsistent, 4: peer Outdated, 5: peer down,
   * 7: peer fenced (STONITH) → resume. 6: the peer is Primary → stay frozen.
   * Anything else → stay frozen until `resume-io` or the peer returns.
   */
  private async fencePeer(): Promise<void> {
    const code = await this.handler('fence-peer');
    if (code === undefined) {
      if (this.state.suspended)
        this.log.error(
          'fencing is on but no fence-peer handler is configured: I/O stays frozen until the peer returns or resume-io',
        );
      return;
    }
    if (code === 3 || code === 4 || code === 5 || code === 7) {
      await this.local?.md.update({ set: ['peerOutdated'] });
      this.resumeIo(`fence-peer handler exited ${code}: the peer is fenced`);
    } else if (code === 6) {
      this.log.error('fence-peer handler exited 6: the peer is Primary; I/O stays frozen (demote this node)');
    } else {
      this.log.error({ code }, 'fence-peer handler failed: I/O stays frozen until the peer returns or resume-io');
    }
  }

  /** One renegotiation with the peer at a time (DRBD: "In transient state, retry after next state change"). */
  private assertNotRenegotiating(): void {
    if (this.#renegotiating) throw refuse(REFUSALS.inTransientState, 'a renegotiation with the peer is in flight');
  }

  /** `invalidate`: this node's data is declared bad; a full resync from the peer replaces it. */
  async invalidate(): Promise<void> {
    if (this.state.role === 'Primary')
      throw new StateChangeError(-13, 'Refusing to invalidate a Primary (demote it first)');
    if (this.conn && this.state.conn === 'Connected') {
      if (!isUpToDate(this.state.peerDisk))
        throw new StateChangeError(-2, 'invalidate needs an UpToDate peer to sync from');
      this.assertNotRenegotiating();
      this.#pendingInvalidate = 'self';
      this.sendParams(this.conn, false);
      return;
    }
    if (isConnected(this.state.conn)) throw refuse(REFUSALS.inTransientState);
    // A disk detached after an I/O error keeps its handles until down; it is not a disk to
    // invalidate (seed 9559: it came back as Inconsistent with no disk under it).
    if (this.state.disk === 'Diskless' || this.state.disk === 'Failed' || this.state.disk === 'Attaching')
      throw refuse(REFUSALS.diskless);
    // Alone: everything out of sync and Inconsistent; the next connection makes this node
    // the full-sync target whatever the generations say (the request is kept on disk).
    this.metadata.bitmap.setRange(0, Math.ceil(this.size / BLOCK_SIZE));
    await this.persistBitmap(true);
    await this.metadata.update({ clear: ['consistent', 'wasUpToDate'], set: ['fullSync'] });
    this.fact({ disk: 'Inconsistent' }, 'invalidate');
  }

  /** `invalidate-remote`: the peer's data is declared bad; a full resync from here replaces it. */
  async invalidateRemote(): Promise<void> {
    if (!this.conn || this.state.conn !== 'Connected') throw refuse(REFUSALS.needConnection);
    if (this.state.peerRole === 'Primary')
      throw new StateChangeError(-13, 'Refusing to invalidate the peer while it is Primary');
    if (!isUpToDate(this.state.disk)) throw new StateChangeError(-2, 'invalidate-remote needs UpToDate data here');
    this.assertNotRenegotiating();
    this.#pendingInvalidate = 'peer';
    this.sendParams(this.conn, false);
  }

  async outdate(): Promise<void> {
    if (isConnected(this.state.conn)) throw refuse(REFUSALS.lowerThanOutdated);
    if (this.state.role === 'Primary') throw new StateChangeError(-7, 'Refusing to outdate a Primary');
    if (!isUpToDate(this.state.disk) && this.state.disk !== 'Consistent') return;
    await this.metadata.update({ set: ['outdated'] });
    this.fact({ disk: 'Outdated' }, 'outdate');
  }

  private async persistUpToDate(): Promise<void> {
    await this.metadata.update({ set: ['consistent', 'wasUpToDate'], clear: ['outdated'] });
  }

  // --- status and shutdown --------------------------------------------------------------

  syncProgress(): SyncProgress | undefined {
    if (!this.local) return undefined;
    if (this.state.conn === 'VerifyS' || this.state.conn === 'VerifyT') return this.#verify.progress();
    return this.#resync.progress();
  }

  status(): EngineStatus {
    const md = this.local?.md;
    return {
      resource: this.config.name,
      minor: this.self.minor,
      node: this.self.name,
      peerNode: this.peer?.name,
      role: this.state.role,
      peerRole: this.state.peerRole,
      cstate: this.state.conn,
      disk: this.state.disk,
      peerDisk: this.state.peerDisk,
      protocol: this.config.protocol,
      suspended: this.state.suspended,
      userPaused: this.state.userIsp,
      peerPaused: this.state.peerIsp,
      size: this.size,
      capacity: md ? this.capacity : 0,
      counters: { ...this.counters },
      oosBytes: md ? md.bitmap.count * BLOCK_SIZE : 0,
      sync: this.syncProgress(),
      uuids: uuidsToJson(md?.sb.uuids ?? { current: 0n, bitmap: 0n, history: [0n, 0n] }),
      lastDecision: this.lastDecision,
      lastError: this.lastError,
      discardedBlocksSavedTo: this.#resync.lastSaved,
      transferLog: this.writes.transferLogSize,
      writeLatency: this.writes.latency.snapshot(),
    };
  }

  /** `down`: demote, disconnect, make the metadata durable, close the disk. */
  async down(): Promise<void> {
    if (this.state.role === 'Primary') await this.demote();
    await this.disconnect();
    await this.detach();
  }
}

function syncConn(c: ConnectionState, paused: boolean): ConnectionState {
  if (c === 'SyncSource' || c === 'PausedSyncS') return paused ? 'PausedSyncS' : 'SyncSource';
  if (c === 'SyncTarget' || c === 'PausedSyncT') return paused ? 'PausedSyncT' : 'SyncTarget';
  return c;
}
