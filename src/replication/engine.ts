// One replicated resource on this node: local disk + metadata + peer link +
// DRBD's state model.
//
// The life of one application write on the Primary (DRBD's drbd_req.h is the model):
//   1. Checked against the device size before anything else.
//   2. Its block range is taken in the conflict lock: an earlier overlapping
//      write (or resync read) finishes first, so both disks see overlapping
//      writes in the same order.
//   3. If the peer takes writes, a DATA frame is queued on the link (seq N) and
//      the request enters the transfer log (`pending`); the local pwrite is
//      submitted at the same time.
//   4. It completes to the application when the local write is done AND
//        protocol A: the DATA frame reached the kernel's socket buffer,
//        protocol B: the peer sent RECV_ACK (it has the data in memory),
//        protocol C: the peer sent WRITE_ACK (it wrote the data).
//      Under every protocol the peer sends WRITE_ACK, so the transfer log knows
//      exactly which writes the peer has.
//   5. If the link is lost first, every write still in the transfer log is
//      marked out of sync in the bitmap (persisted before the application hears
//      back), and a new data generation is started, so the reconnect resyncs
//      exactly those blocks.
//   6. Without a peer, the write is marked out of sync (bitmap persisted) and
//      completes when the local write does.
import { EventEmitter } from 'node:events';
import { setTimeout as sleep } from 'node:timers/promises';
import { z } from 'zod';
import type { Logger } from 'pino';
import type { HostConfig, ResourceConfig } from '../api/config.ts';
import { openBacking, readExact, writeExact, type Backing } from './backing.ts';
import { Bitmap, BLOCK_SIZE, decodeRle, encodeRle } from './bitmap.ts';
import { zeroCounters, type Counters } from './counters.ts';
import { deferred, type Deferred } from './deferred.ts';
import { ERROR_CODES, REFUSALS, refuse, StateChangeError, TandemError } from './errors.ts';
import { IntervalLock } from './interval-lock.ts';
import { ActivityLog, AL_EXTENT_BYTES } from './activity-log.ts';
import { AL_BYTES, AL_OFFSET, locateMetadata, Metadata, type MdFlag } from './metadata.ts';
import { PeerLink, type Connection } from './peer-link.ts';
import { PayloadPool } from '../net/payload-pool.ts';
import { initialState, transition, type EngineState, type StateChange } from './state.ts';
import {
  hasLocalDisk,
  isConnected,
  isSyncSource,
  isSyncTarget,
  isSyncing,
  isUpToDate,
  type ConnectionState,
  type DiskState,
  type Role,
} from './states.ts';
import { resolveSplitBrain } from './split-brain.ts';
import { runHandler, type HandlerName } from './handlers.ts';
import { mkdir, open as openFile, writeFile, type FileHandle } from 'node:fs/promises';
import { join } from 'node:path';
import {
  compareUuids,
  finishSyncSource,
  finishSyncTarget,
  newCurrent,
  randomUuid,
  UUID_JUST_CREATED,
  uuidsFromJson,
  uuidsToJson,
  type SyncDecision,
  type Uuids,
} from './uuids.ts';
import {
  DATA_FLAGS,
  FRAME_FLAGS,
  P,
  decodeData,
  decodeRange,
  decodeRsData,
  decodeSeq,
  encodeData,
  encodeFrame,
  encodeRange,
  encodeRsData,
  encodeSeq,
  encodeVerify,
  decodeVerify,
  encodeReadRequest,
  decodeReadRequest,
  encodeReadReply,
  decodeReadReply,
  type Frame,
} from './wire.ts';
import { blockDigests, digestSize, isSupportedAlg } from './digest.ts';
import { APP_ACTIVE_WINDOW_MS, resyncRateNow } from './resync-rate.ts';

const UuidsJson = z.object({
  current: z.string().regex(/^[0-9A-F]{16}$/),
  bitmap: z.string().regex(/^[0-9A-F]{16}$/),
  history: z.tuple([z.string().regex(/^[0-9A-F]{16}$/), z.string().regex(/^[0-9A-F]{16}$/)]),
});

const Params = z.object({
  reply: z.boolean(),
  protocol: z.enum(['A', 'B', 'C']),
  capacity: z.number().int().nonnegative(),
  laSize: z.number().int().nonnegative(),
  uuids: UuidsJson,
  disk: z.string(),
  role: z.enum(['Primary', 'Secondary']),
  allowTwoPrimaries: z.boolean(),
  discardMyData: z.boolean(),
  crashedPrimary: z.boolean(),
  node: z.string(),
  /** Blocks changed since the last common generation (own bitmap count), for split-brain policies. */
  changes: z.number().int().nonnegative(),
  primaryAtSplit: z.boolean(),
  /** `invalidate` (the sender wants to be the full-sync target) or `invalidate-remote` (the receiver should be). */
  invalidate: z.enum(['none', 'self', 'peer']),
  /** `resize`: both sides re-read their disk sizes and may grow the device. */
  resize: z.boolean(),
});
type Params = z.infer<typeof Params>;

const StateMsg = z.object({
  role: z.enum(['Primary', 'Secondary']).optional(),
  disk: z.string().optional(),
  /** Two-phase promotion: ask the peer before becoming Primary while connected. */
  promoteRequest: z.number().int().optional(),
  promoteReply: z.object({ id: z.number().int(), ok: z.boolean(), message: z.string().optional() }).optional(),
  syncPaused: z.boolean().optional(),
  /** `new-current-uuid --clear-bitmap` on the peer: both blank disks are declared identical. */
  clearBitmapUuid: UuidsJson.optional(),
  verifyStart: z.boolean().optional(),
  /** DRBD's P_SYNC_UUID: the generation a full-sync target carries until it is done, so an interrupted sync resumes. */
  syncUuid: z
    .string()
    .regex(/^[0-9A-F]{16}$/)
    .optional(),
  verifyDone: z.object({ oosBlocks: z.number().int().nonnegative() }).optional(),
});

const SyncDone = z.object({ uuids: UuidsJson });

/** Resync chunks: at most this many contiguous 4 KiB blocks per RS_DATA. */
const RS_CHUNK_BLOCKS = 256;
/** Resync bytes in flight (sent, not yet acked by the target). */
const RS_WINDOW_BYTES = 32 * 1024 * 1024;
const BITMAP_FRAME_BYTES = 64 * 1024;
/** Received payloads kept for reuse: a full window of 1 MiB mirrored writes and then some. */
const PEER_PAYLOAD_POOL_BYTES = 64 * 1024 * 1024;

interface PeerRequest {
  seq: number;
  offset: number;
  length: number;
  sent: Deferred<boolean>;
  received: Deferred<boolean>;
  written: Deferred<boolean>;
}

export interface EngineOptions {
  config: ResourceConfig;
  self: HostConfig;
  peer: HostConfig | undefined;
  logger: Logger;
  /** How many NBD clients hold the device open (a Primary in use cannot be demoted). */
  openCount?: () => number;
  /** Closes the device's clients before a forced demotion. */
  closeClients?: () => Promise<void>;
  /** The configuration file, for handlers' DRBD_CONF. */
  configFile?: string;
}

export interface SyncProgress {
  percent: number;
  remainingBytes: number;
  totalBytes: number;
  etaSeconds: number | undefined;
  speedKiBps: number;
  averageKiBps: number;
  paused: boolean;
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
  counters: Counters;
  oosBytes: number;
  sync: SyncProgress | undefined;
  uuids: { current: string; bitmap: string; history: [string, string] };
  lastDecision: { decision: SyncDecision; rule: string } | undefined;
  lastError: string | undefined;
  /** Where this node's discarded blocks were saved by the last resync that overwrote its own changes. */
  discardedBlocksSavedTo: string | undefined;
}

export interface EngineEvents {
  state: [EngineState, string];
}

export class Engine extends EventEmitter<EngineEvents> {
  readonly config: ResourceConfig;
  readonly self: HostConfig;
  readonly peer: HostConfig | undefined;
  readonly log: Logger;
  private readonly openCount: () => number;
  private readonly closeClients: () => Promise<void>;
  private readonly configFile: string | undefined;

  state: EngineState = initialState();
  private backing: Backing | undefined;
  private md: Metadata | undefined;
  private al: ActivityLog | undefined;
  /** Usable bytes of the local disk. */
  private capacity = 0;
  /** The device size the application sees. */
  size = 0;
  readonly counters: Counters = zeroCounters();
  private readonly lock = new IntervalLock();

  private link: PeerLink | undefined;
  private conn: Connection | undefined;
  private sentParams: Params | undefined;
  private peerParams: Params | undefined;
  private nextSeq = 1;
  private readonly pending = new Map<number, PeerRequest>();
  private readonly flushWaiters = new Map<number, Deferred<boolean>>();
  /** Writes received from the peer that are not yet on the local disk. */
  private readonly receiving = new Set<Promise<void>>();
  /** Large DATA/RS_DATA payloads from the peer, reused once they are on the local disk. */
  private readonly payloads = new PayloadPool(PEER_PAYLOAD_POOL_BYTES);
  /** Holds back disk writes on a new SyncTarget until its Inconsistent state is on disk. */
  private syncGate: Promise<void> = Promise.resolve();
  /** Holds back completions after a lost link until the new generation is on disk. */
  private generationGate: Promise<void> = Promise.resolve();
  private bitmapChain: Promise<unknown> = Promise.resolve();
  private bitmapTimer: NodeJS.Timeout | undefined;
  private peerBitmapChunks: Buffer[] = [];
  private discardMyData = false;
  private readonly peerReads = new Map<number, Deferred<{ errno: number; data: Buffer } | undefined>>();
  private nextReadId = 1;
  private pendingInvalidate: 'none' | 'self' | 'peer' = 'none';
  private pendingResize = false;
  /** csums-alg: chunks whose digests are with the target, locked until it answers. */
  private readonly csumPending = new Map<number, { release: () => void; data: Buffer }>();
  /** When the application last did I/O here (the resync controller backs off while it does). */
  private lastAppIo = 0;
  /** While I/O is frozen (fencing), requests wait on this; false means "fail them". */
  private ioGate: Promise<boolean> = Promise.resolve(true);
  private ioRelease: ((go: boolean) => void) | undefined;
  private verifyDoneBytes = 0;
  private verifyOosBlocks = 0;
  private verifyInflight = new Map<number, { release: () => void; length: number }>();
  private verifyWake: Deferred<void> | undefined;
  private saveDiscarded = false;
  private discard: { path: string; handle: FileHandle; saved: Bitmap; bytes: number } | undefined;
  /** The image where this node's last discarded blocks were saved. */
  lastSaved: string | undefined;
  private promoteId = 0;
  private readonly promoteWaiters = new Map<number, Deferred<{ ok: boolean; message?: string }>>();
  private peerPromoting = false;
  lastDecision: { decision: SyncDecision; rule: string } | undefined;
  lastError: string | undefined;

  // resync bookkeeping
  private rsInflight = new Map<number, number>();
  private rsInflightBytes = 0;
  private rsWake: Deferred<void> | undefined;
  private rsTotalBytes = 0;
  private rsDoneBytes = 0;
  private rsStarted = 0;
  private rsSamples: [number, number][] = [];
  private rsTokens = 0;
  private rsTokenTime = 0;

  constructor(opts: EngineOptions) {
    super();
    this.config = opts.config;
    this.self = opts.self;
    this.peer = opts.peer;
    this.log = opts.logger;
    this.openCount = opts.openCount ?? (() => 0);
    this.closeClients = opts.closeClients ?? (async () => {});
    this.configFile = opts.configFile;
  }

  /** Runs a DRBD handler from `handlers {}` with DRBD's environment. */
  private handler(name: HandlerName, extraEnv: Record<string, string> = {}): Promise<number | undefined> {
    return runHandler(
      name,
      this.config.handlers[name],
      {
        resource: this.config.name,
        minor: this.self.minor,
        peerAddress: this.peer?.address.host,
        peerAf: this.peer?.address.family,
        peerName: this.peer?.name,
        configFile: this.configFile,
        logger: this.log,
      },
      extraEnv,
    );
  }

  // --- state ---------------------------------------------------------------

  /** Commits a state change (facts and soft rules checked), logs the diff with its cause. */
  private commit(change: StateChange, cause: string): void {
    const r = transition(this.state, change, {
      allowTwoPrimaries: this.config.net.allowTwoPrimaries,
      openCount: this.openCount(),
    });
    if (!r.ok) throw r.error;
    if (r.diff === '') return;
    const wasWhole = isWholePrimary(this.state);
    this.state = r.next;
    this.log.info({ change: r.diff, cause }, `${r.diff} [${cause}]`);
    this.emit('state', this.state, cause);
    // DRBD 9's unfence-peer: a Primary sees its peer Connected and UpToDate again, so a
    // fence the fence-peer handler (or a failover) put on the peer can be taken away now,
    // not at the next poll; until it is, the peer may not be promoted if this node dies.
    if (!wasWhole && isWholePrimary(this.state)) void this.handler('unfence-peer');
  }

  /** Like commit, for facts: a refusal here is a bug, so it is logged, not thrown. */
  private fact(change: StateChange, cause: string): void {
    try {
      this.commit(change, cause);
    } catch (err) {
      this.log.error({ err, change, cause }, 'Refused a state fact');
      this.state = { ...this.state, ...change };
    }
  }

  private get metadata(): Metadata {
    if (!this.md) throw new TandemError(ERROR_CODES.stateChange, `${this.config.name}: no local disk (Diskless)`, 11);
    return this.md;
  }

  // --- attach / detach -----------------------------------------------------

  async attach(): Promise<void> {
    if (this.md) return;
    this.fact({ disk: 'Attaching' }, 'attach');
    let backing: Backing | undefined;
    try {
      backing = await openBacking(this.self.disk);
      const location = await locateMetadata(this.self.disk, this.self.metaDisk);
      const md = await Metadata.open(location, this.config.name, backing);
      this.backing = backing;
      this.md = md;
      this.capacity = Math.min(
        location.dataCapacity,
        md.sb.bitmapBits * BLOCK_SIZE,
        this.config.disk.size ?? Number.MAX_SAFE_INTEGER,
      );
      this.capacity -= this.capacity % BLOCK_SIZE;
      if (md.sb.laSize > this.capacity) {
        throw new TandemError(
          ERROR_CODES.backing,
          `${this.self.disk}: the disk holds ${this.capacity} bytes but the device was ${md.sb.laSize} bytes; refusing to attach a shrunk disk`,
        );
      }
      this.size = md.sb.laSize > 0 ? md.sb.laSize : this.capacity;
      const al = new ActivityLog(
        { handle: md.handle, offset: location.offset + AL_OFFSET, bytes: AL_BYTES },
        this.config.disk.alExtents,
      );
      const hot = await al.recover();
      if (hot.length > 0) {
        // Unclean shutdown: writes may have been in flight in these extents,
        // on one disk and not the other. Resync exactly them.
        for (const e of hot)
          md.bitmap.setRange((e * AL_EXTENT_BYTES) / BLOCK_SIZE, ((e + 1) * AL_EXTENT_BYTES) / BLOCK_SIZE);
        await md.writeDirtyBitmap(true);
        this.log.warn(
          { extents: hot.length, bytes: hot.length * AL_EXTENT_BYTES },
          'Activity log was not empty (unclean shutdown); marked its extents out of sync',
        );
      }
      await al.clear();
      this.al = al;
      // DRBD: a consistent disk is UpToDate on attach unless fencing is on; then it
      // stays Consistent until a peer confirms it (a lone node cannot know it is newest).
      const disk: DiskState = !md.has('consistent')
        ? 'Inconsistent'
        : md.has('outdated')
          ? 'Outdated'
          : this.config.disk.fencing === 'dont-care'
            ? 'UpToDate'
            : 'Consistent';
      this.counters.bm = md.bitmapWrites;
      this.fact({ disk }, 'attach');
      this.bitmapTimer = setInterval(() => {
        void this.persistBitmap(false);
      }, 1000);
      this.bitmapTimer.unref();
    } catch (err) {
      // Leave nothing half attached: a later attach starts from scratch.
      const md = this.md;
      this.md = undefined;
      this.backing = undefined;
      await md?.close().catch(() => {});
      await backing?.close().catch(() => {});
      this.fact({ disk: 'Diskless' }, 'attach failed');
      throw err;
    }
  }

  async detach(): Promise<void> {
    if (!this.md) return;
    if (this.state.role === 'Primary')
      throw new TandemError(
        ERROR_CODES.notImplemented,
        `${this.config.name}: detaching the disk of a Primary (serving through the peer) is not implemented yet`,
        20,
      );
    if (this.conn) await this.disconnect();
    await this.lock.drain();
    await this.persistBitmap(true);
    await this.al?.clear();
    this.al = undefined;
    if (this.bitmapTimer) clearInterval(this.bitmapTimer);
    await this.md.close();
    await this.backing?.close();
    this.md = undefined;
    this.backing = undefined;
    this.fact({ disk: 'Diskless' }, 'detach');
  }

  // --- connection ------------------------------------------------------------

  async connect(opts: { discardMyData?: boolean } = {}): Promise<void> {
    if (!this.peer) throw new TandemError(ERROR_CODES.config, `resource ${this.config.name} has no peer section`);
    if (opts.discardMyData) this.discardMyData = true;
    if (this.link) return;
    const net = this.config.net;
    const link = new PeerLink({
      resource: this.config.name,
      nodeName: this.self.name,
      peerName: this.peer.name,
      self: this.self.address,
      peer: this.peer.address,
      sharedSecret: net.sharedSecret,
      hmacAlg: net.cramHmacAlg ?? 'sha256',
      connectIntMs: net.connectIntMs,
      pingIntMs: net.pingIntMs,
      pingTimeoutMs: net.pingTimeoutMs,
      payloads: this.payloads,
      logger: this.log.child({ component: 'link' }),
    });
    link.on('state', (cs, reason) => {
      if (!this.conn) this.fact({ conn: cs }, reason);
    });
    link.on('refused', (reason) => {
      this.lastError = reason;
    });
    link.on('connected', (c) => this.onConnected(c));
    this.link = link;
    await link.start();
  }

  async disconnect(): Promise<void> {
    const link = this.link;
    this.link = undefined;
    if (!link) {
      this.fact({ conn: 'StandAlone' }, 'disconnect');
      return;
    }
    this.fact({ conn: 'Disconnecting' }, 'disconnect');
    // The connection first: a listening server's close() waits for its sockets.
    this.conn?.close('TearDown', 'disconnect');
    await link.stop();
    await this.generationGate;
    this.fact({ conn: 'StandAlone' }, 'disconnect');
  }

  private onConnected(c: Connection): void {
    this.conn = c;
    c.onClose = (cs, reason) => this.onConnectionLost(c, cs, reason);
    // Our PARAMS go out, and the per-connection state is reset, before any frame
    // from the peer is handled: frames that came with the handshake are replayed
    // by setHandler, and the decision needs what we sent.
    this.peerParams = undefined;
    this.peerBitmapChunks = [];
    this.sendParams(c, false);
    c.setHandler((f) => {
      try {
        this.onFrame(c, f);
      } catch (err) {
        this.log.error({ err }, 'Failed to handle a peer frame');
        c.close('ProtocolError', (err as Error).message);
      }
    });
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
      discardMyData: this.discardMyData,
      crashedPrimary: md.has('crashedPrimary') && this.state.role !== 'Primary',
      node: this.self.name,
      changes: md.bitmap.count,
      primaryAtSplit: md.has('primaryAtSplit'),
      invalidate: this.pendingInvalidate,
      resize: this.pendingResize,
    };
  }

  private sendParams(c: Connection, reply: boolean): void {
    this.sentParams = this.makeParams(reply);
    c.sendJson(P.PARAMS, this.sentParams);
  }

  private abortConnection(c: Connection, reason: string, log: 'warn' | 'error' = 'error'): void {
    this.lastError = reason;
    this.log[log]({ reason }, reason);
    c.sendJson(P.ERROR, { message: reason });
    const link = this.link;
    this.link = undefined;
    void link?.stop();
    c.close('StandAlone', reason, true);
  }

  private onConnectionLost(c: Connection, cs: ConnectionState, reason: string): void {
    if (this.conn !== c) return;
    this.conn = undefined;
    this.peerParams = undefined;
    this.peerPromoting = false;
    const wasPeerDisk = this.state.peerDisk;
    const lostUpToDatePeer = this.state.role === 'Primary' && wasPeerDisk !== 'DUnknown';
    if (this.state.role === 'Primary' && !this.localDiskUsable()) {
      // DRBD's pri-on-incon-degr: a Primary without good local data just lost the
      // peer that held it; application I/O fails from here on.
      this.log.error('Primary without a usable local disk lost its peer: no copy of the data is reachable');
      void this.handler('pri-on-incon-degr');
    }
    const fencing = this.config.disk.fencing;
    if (
      this.state.role === 'Primary' &&
      (wasPeerDisk === 'UpToDate' || wasPeerDisk === 'Consistent') &&
      fencing !== 'dont-care'
    ) {
      // Before any write completes without the peer: freeze (resource-and-stonith)
      // and ask the fence-peer handler to make sure the peer cannot take over.
      if (fencing === 'resource-and-stonith') this.suspendIo(`fencing: lost the peer (${reason})`);
      void this.fencePeer();
    }
    // Everything the peer may not have becomes out of sync (transfer log, resync in flight).
    for (const r of this.pending.values()) {
      this.metadata.bitmap.setRange(r.offset / BLOCK_SIZE, Math.ceil((r.offset + r.length) / BLOCK_SIZE));
      r.sent.resolve(false);
      r.received.resolve(false);
      r.written.resolve(false);
    }
    this.pending.clear();
    this.counters.pe = 0;
    for (const w of this.peerReads.values()) w.resolve(undefined);
    this.peerReads.clear();
    for (const w of this.flushWaiters.values()) w.resolve(false);
    this.flushWaiters.clear();
    for (const w of this.promoteWaiters.values()) w.resolve({ ok: false, message: 'connection lost' });
    this.promoteWaiters.clear();
    this.rsInflight.clear();
    this.rsInflightBytes = 0;
    this.rsWake?.resolve();
    for (const v of this.csumPending.values()) v.release();
    this.csumPending.clear();
    for (const v of this.verifyInflight.values()) v.release();
    this.verifyInflight.clear();
    this.verifyWake?.resolve();
    if (this.md && lostUpToDatePeer && this.md.sb.uuids.bitmap === 0n) {
      // A Primary that loses its peer starts a new data generation, on disk
      // before any further write completes (DRBD: new current UUID).
      const md = this.md;
      this.generationGate = md
        .update((sb) => ({ uuids: newCurrent(sb.uuids), set: ['primaryAtSplit'] }))
        .then(() =>
          this.log.info({ uuids: uuidsToJson(md.sb.uuids) }, 'Started a new data generation after losing the peer'),
        );
    }
    const next: ConnectionState = cs === 'StandAlone' ? 'StandAlone' : cs;
    this.fact({ conn: next }, reason);
    if (next !== 'StandAlone') {
      this.fact({ conn: 'Unconnected' }, 'reconnecting');
      this.link?.resume();
    } else {
      this.link = undefined;
    }
  }

  // --- frames ------------------------------------------------------------------

  private onFrame(c: Connection, f: Frame): void {
    switch (f.type) {
      case P.PARAMS: {
        const params = Params.parse(JSON.parse(f.payload.toString('utf8')));
        // A resize request: look at our own disk again before answering.
        if (params.resize && !params.reply) {
          return void this.refreshCapacity()
            .catch((err: unknown) =>
              this.log.warn({ err }, "Could not grow for the peer's resize; answering with the current size"),
            )
            .then(() => {
              if (this.conn === c) this.onParams(c, params);
            });
        }
        return this.onParams(c, params);
      }
      case P.STATE:
        return this.onPeerState(c, StateMsg.parse(JSON.parse(f.payload.toString('utf8'))));
      case P.BITMAP:
        return this.onBitmapFrame(c, f);
      case P.ERROR: {
        const msg = String((JSON.parse(f.payload.toString('utf8')) as { message?: unknown }).message ?? 'unknown');
        this.lastError = `peer: ${msg}`;
        this.log.error({ reason: msg }, 'Peer dropped the connection');
        const link = this.link;
        this.link = undefined;
        void link?.stop();
        return c.close('StandAlone', `peer: ${msg}`);
      }
      case P.SYNC_DONE:
        return void this.onSyncDone(c, SyncDone.parse(JSON.parse(f.payload.toString('utf8'))));
      case P.SYNC_DONE_ACK:
        return void this.onSyncDoneAck();
    }
    if (!this.peerParams) throw new Error(`packet type 0x${f.type.toString(16)} before PARAMS`);
    switch (f.type) {
      case P.DATA:
        return this.onData(c, f.payload);
      case P.RECV_ACK:
        return this.onAck(f.payload, 'received');
      case P.WRITE_ACK:
        return this.onAck(f.payload, 'written');
      case P.NEG_ACK:
        return this.onNegAck(f.payload);
      case P.FLUSH:
        return this.onPeerFlush(c, decodeSeq(f.payload).seq);
      case P.FLUSH_ACK: {
        const { seq } = decodeSeq(f.payload);
        this.flushWaiters.get(seq)?.resolve(true);
        this.flushWaiters.delete(seq);
        return;
      }
      case P.RS_DATA:
        return this.onRsData(c, f.payload);
      case P.RS_ACK:
        return this.onRsAck(f.payload, true);
      case P.RS_NEG_ACK:
        return this.onRsAck(f.payload, false);
      case P.RS_ZERO:
        return this.onRsZero(c, f.payload);
      case P.RS_CSUM:
        return this.onRsCsum(c, f.payload);
      case P.RS_CSUM_REPLY:
        return this.onRsCsumReply(c, f.payload);
      case P.VERIFY_REQ:
        return this.onVerifyRequest(c, f.payload);
      case P.VERIFY_REPLY:
        return this.onVerifyReply(f.payload);
      case P.READ_REQ:
        return this.onReadRequest(c, f.payload);
      case P.READ_REPLY: {
        const r = decodeReadReply(f.payload);
        this.peerReads.get(r.id)?.resolve(r);
        this.peerReads.delete(r.id);
        return;
      }
      default:
        throw new Error(`unexpected packet type 0x${f.type.toString(16)}`);
    }
  }

  /**
   * Both sides send PARAMS; each decides from (what it sent, what it got) with
   * the same pure rules, so both reach mirrored decisions without a third message.
   */
  private onParams(c: Connection, p: Params): void {
    if (!p.reply && isConnected(this.state.conn) && this.peerParams) {
      // The peer renegotiates (e.g. after `primary --force`): answer with ours.
      this.sendParams(c, true);
    }
    this.peerParams = p;
    const mine = this.sentParams!;
    if (p.protocol !== mine.protocol)
      return this.abortConnection(c, `incompatible communication protocols: ours ${mine.protocol}, peer ${p.protocol}`);
    // Size: the smaller disk; never below a size the device already had.
    const agreedLa = Math.max(mine.laSize, p.laSize);
    const fits = Math.min(mine.capacity, p.capacity);
    if (agreedLa > 0 && fits < agreedLa)
      return this.abortConnection(c, `The peer's disk size is too small! (${fits} < ${agreedLa} bytes)`);
    const resizing = mine.resize || p.resize;
    this.pendingResize = false;
    const newSize = agreedLa > 0 && !resizing ? agreedLa : fits;
    const grownFrom = resizing && agreedLa > 0 && newSize > agreedLa ? agreedLa : undefined;

    let { decision, rule } = compareUuids(uuidsFromJson(mine.uuids), uuidsFromJson(p.uuids));
    if (decision === 'none' && mine.crashedPrimary !== p.crashedPrimary) {
      decision = mine.crashedPrimary ? 'bitmap-source' : 'bitmap-target';
      rule = `${mine.crashedPrimary ? 'we' : 'the peer'} crashed while Primary`;
    } else if (decision === 'none' && mine.disk === 'Inconsistent' && p.disk === 'UpToDate') {
      decision = 'bitmap-target';
      rule = 'same generation, our disk is Inconsistent (interrupted resync or invalidate)';
    } else if (decision === 'none' && p.disk === 'Inconsistent' && mine.disk === 'UpToDate') {
      decision = 'bitmap-source';
      rule = "same generation, the peer's disk is Inconsistent (interrupted resync or invalidate)";
    } else if (
      decision === 'none' &&
      mine.disk === 'UpToDate' &&
      p.disk === 'UpToDate' &&
      mine.changes + p.changes > 0
    ) {
      // Blocks marked by online verify: the Primary's version wins, else the lower node name's.
      const weSource = mine.role === 'Primary' || (p.role !== 'Primary' && this.self.name < p.node);
      decision = weSource ? 'bitmap-source' : 'bitmap-target';
      rule = `same generation, ${mine.changes + p.changes} blocks marked out of sync (verify)`;
    }
    if (mine.invalidate === 'self' || p.invalidate === 'peer') {
      decision = 'full-target';
      rule = mine.invalidate === 'self' ? 'invalidate' : 'invalidate-remote on the peer';
    } else if (mine.invalidate === 'peer' || p.invalidate === 'self') {
      decision = 'full-source';
      rule = mine.invalidate === 'peer' ? 'invalidate-remote' : 'invalidate on the peer';
    }
    this.pendingInvalidate = 'none';
    let discardOwn = false;
    if (decision === 'split-brain' || decision === 'split-brain-unrelated') {
      const full = decision === 'split-brain-unrelated';
      const sbRule = rule;
      this.log.error({ rule }, 'Split-Brain detected');
      void this.handler('split-brain');
      if (mine.discardMyData && p.discardMyData)
        return this.abortConnection(c, 'Split-Brain detected and both sides want to discard their data; refusing');
      let victim: 'self' | 'peer' | undefined;
      if (mine.discardMyData) {
        victim = 'self';
        rule = `split brain resolved: we discard our data (${sbRule})`;
      } else if (p.discardMyData) {
        victim = 'peer';
        rule = `split brain resolved: the peer discards its data (${sbRule})`;
      } else {
        const out = resolveSplitBrain({
          policy: this.config.net,
          self: { name: this.self.name, role: mine.role, changes: mine.changes, primaryAtSplit: mine.primaryAtSplit },
          peer: { name: p.node, role: p.role, changes: p.changes, primaryAtSplit: p.primaryAtSplit },
        });
        this.log.warn({ outcome: out }, 'Evaluated the after-sb policies');
        if (!out.victim) {
          this.lastDecision = { decision, rule: `${sbRule}; ${out.rule}` };
          return this.abortConnection(
            c,
            `Split-Brain detected but unresolved, dropping connection! (${sbRule}; ${out.rule})`,
          );
        }
        if (out.victim === 'self' && this.state.role === 'Primary') {
          this.lastDecision = { decision, rule: `${sbRule}; ${out.rule}` };
          if (out.violent) {
            // Demote by force, then come back as the victim: the peer keeps retrying.
            this.log.error(
              { rule: out.rule },
              'Split brain victim is this Primary: demoting it by force (violently-as0p)',
            );
            c.close('NetworkFailure', `split brain: demoting this Primary by force (${out.rule})`);
            void (async () => {
              try {
                await this.demote({ force: true });
                this.discardMyData = true;
              } catch (err) {
                this.log.error({ err }, 'Could not demote the split brain victim');
              }
            })();
            return;
          }
          if (out.callPriLost) void this.handler('pri-lost-after-sb');
          return this.abortConnection(
            c,
            `Split-Brain detected; this Primary would be the victim (${out.rule}); staying Primary and disconnecting`,
          );
        }
        victim = out.victim;
        rule = `split brain resolved automatically: ${out.rule} (${sbRule})`;
      }
      decision = victim === 'self' ? (full ? 'full-target' : 'bitmap-target') : full ? 'full-source' : 'bitmap-source';
      discardOwn = victim === 'self';
    }
    if (
      decision === 'none' &&
      p.role === 'Primary' &&
      mine.role === 'Primary' &&
      !(p.allowTwoPrimaries && mine.allowTwoPrimaries)
    ) {
      return this.abortConnection(
        c,
        'both nodes are Primary and allow-two-primaries is not set on both; refusing to connect',
      );
    }
    if (decision === 'unrelated-data') {
      this.lastDecision = { decision, rule };
      return this.abortConnection(c, `Unrelated data, aborting! (${rule})`);
    }
    const target = decision === 'bitmap-target' || decision === 'full-target';
    if (target && this.state.role === 'Primary')
      return this.abortConnection(c, `I shall become SyncTarget, but I am primary! (${rule})`);
    // Our own changes are about to be overwritten: keep a copy (see saveBeforeOverwrite).
    this.saveDiscarded = target && (discardOwn || mine.changes > 0) && this.config.disk.discardedDataDir !== 'none';
    if (grownFrom !== undefined) {
      // The new area holds whatever the disks had: sync it from the Primary
      // (or, with none, from the node that asked for the resize).
      this.metadata.bitmap.setRange(Math.floor(grownFrom / BLOCK_SIZE), Math.ceil(newSize / BLOCK_SIZE));
      if (decision === 'none') {
        const weSource = mine.role === 'Primary' || (p.role !== 'Primary' && mine.resize);
        decision = weSource ? 'bitmap-source' : 'bitmap-target';
        rule = `grown from ${grownFrom} to ${newSize} bytes: the new area is synced`;
      }
    }
    this.lastDecision = { decision, rule };
    this.log.info({ decision, rule, size: newSize }, 'Decided how to sync with the peer');
    this.discardMyData = false;
    if (newSize !== this.size || this.metadata.sb.laSize !== newSize) {
      this.size = newSize;
      void this.metadata.update({ laSize: newSize });
    }

    const peerRole: Role = p.role;
    if (decision === 'none') {
      // Same generation: identical data. A Consistent/Outdated disk next to an
      // UpToDate one of the same generation is UpToDate too.
      const consistent = (d: string): boolean => d === 'UpToDate' || d === 'Consistent';
      const same = (d: string): DiskState =>
        (d === 'Consistent' && (consistent(p.disk) || consistent(mine.disk))) ||
        (d === 'Outdated' && (p.disk === 'UpToDate' || mine.disk === 'UpToDate'))
          ? 'UpToDate'
          : (d as DiskState);
      const disk = same(this.state.disk);
      const peerDisk = same(p.disk);
      if (disk !== this.state.disk) void this.persistDisk(disk);
      if (this.metadata.has('primaryAtSplit')) void this.metadata.update({ clear: ['primaryAtSplit'] });
      this.fact({ conn: 'Connected', peerRole, peerDisk, disk }, 'connected, no resync needed');
      this.resumeIo('the peer is back');
      return;
    }
    const source = decision === 'bitmap-source' || decision === 'full-source';
    const full = decision === 'full-source' || decision === 'full-target';
    // DRBD clamps a sync source's disk to UpToDate: the generation identifiers have just
    // named its data the newer copy (a node that came up alone is only Consistent until then).
    const sourceDisk =
      source && (this.state.disk === 'Consistent' || this.state.disk === 'Outdated')
        ? { disk: 'UpToDate' as const }
        : {};
    if (sourceDisk.disk) void this.persistDisk('UpToDate');
    this.fact(
      { conn: source ? 'WFBitMapS' : 'WFBitMapT', peerRole, peerDisk: p.disk as DiskState, ...sourceDisk },
      rule,
    );
    if (source) this.resumeIo('the peer is back');
    if (full) this.metadata.bitmap.setRange(0, Math.ceil(newSize / BLOCK_SIZE));
    if (target) this.syncGate = this.prepareSyncTarget();
    if (source && full) {
      // A full sync gets its own generation: the target carries it as its current
      // until the end, so after an interruption the pair resumes with a bitmap
      // resync instead of starting over. The source's bits are made durable first.
      const md = this.metadata;
      let uuids = md.sb.uuids;
      if (uuids.bitmap === 0n) uuids = { ...uuids, bitmap: randomUuid() };
      const syncUuid = uuidsToJson(uuids).bitmap;
      this.sendState({ syncUuid });
      void this.persistBitmap(true).then(() => md.update((sb) => ({ uuids: { ...sb.uuids, bitmap: uuids.bitmap } })));
    }
    this.sendBitmap(c);
  }

  /** Before the first block lands on a new SyncTarget: Inconsistent on disk, the handler, the save file. */
  private async prepareSyncTarget(): Promise<void> {
    await this.persistBitmap(true);
    if (this.metadata.has('consistent')) await this.metadata.update({ clear: ['consistent', 'wasUpToDate'] });
    await this.handler('before-resync-target');
    if (this.saveDiscarded) {
      const dir = this.config.disk.discardedDataDir;
      await mkdir(dir, { recursive: true });
      const stamp = new Date().toISOString().replace(/[:.]/g, '-');
      const path = join(dir, `${this.config.name}-${this.self.name}-${stamp}.img`);
      const handle = await openFile(path, 'w');
      await handle.truncate(this.size);
      this.discard = { path, handle, saved: new Bitmap(Math.ceil(this.size / BLOCK_SIZE)), bytes: 0 };
      this.log.warn({ path }, "Saving this node's blocks before the resync overwrites them");
    }
  }

  /**
   * A split-brain victim's diverged blocks are kept: before a resync (or a
   * mirrored write during it) overwrites a block this node still holds its own
   * version of, that version is copied to a sparse image at the same offset.
   * The device as this node had it = the new device with those blocks laid over.
   */
  private async saveBeforeOverwrite(offset: number, length: number): Promise<void> {
    const d = this.discard;
    if (!d) return;
    const bm = this.metadata.bitmap;
    const from = Math.floor(offset / BLOCK_SIZE);
    const to = Math.ceil((offset + length) / BLOCK_SIZE);
    for (let b = from; b < to; b++) {
      if (!bm.test(b) || d.saved.test(b)) continue;
      let e = b + 1;
      while (e < to && bm.test(e) && !d.saved.test(e)) e++;
      const old = await readExact(this.backing!.handle, b * BLOCK_SIZE, (e - b) * BLOCK_SIZE);
      await writeExact(d.handle, b * BLOCK_SIZE, old);
      d.saved.setRange(b, e);
      d.bytes += old.length;
      b = e;
    }
  }

  private async finishDiscardSave(): Promise<void> {
    const d = this.discard;
    this.discard = undefined;
    this.saveDiscarded = false;
    if (!d) return;
    const ranges: [number, number][] = [];
    for (let b = d.saved.nextSet(0); b >= 0; b = d.saved.nextSet(b)) {
      const e = d.saved.nextClear(b);
      ranges.push([b * BLOCK_SIZE, (e - b) * BLOCK_SIZE]);
      b = e;
    }
    await d.handle.datasync();
    await d.handle.close();
    await writeFile(
      `${d.path}.json`,
      JSON.stringify(
        { resource: this.config.name, node: this.self.name, deviceSize: this.size, blockSize: BLOCK_SIZE, ranges },
        null,
        1,
      ),
    );
    this.lastSaved = d.path;
    this.log.warn({ path: d.path, bytes: d.bytes, ranges: ranges.length }, 'Saved the blocks this node discarded');
  }

  private sendBitmap(c: Connection): void {
    const rle = encodeRle(this.metadata.bitmap);
    for (let off = 0; off < rle.length || off === 0; off += BITMAP_FRAME_BYTES) {
      const last = off + BITMAP_FRAME_BYTES >= rle.length;
      c.send(encodeFrame(P.BITMAP, rle.subarray(off, off + BITMAP_FRAME_BYTES), last ? FRAME_FLAGS.LAST : 0));
      if (last) break;
    }
  }

  private onBitmapFrame(c: Connection, f: Frame): void {
    this.peerBitmapChunks.push(Buffer.from(f.payload));
    if ((f.flags & FRAME_FLAGS.LAST) === 0) return;
    const rle = Buffer.concat(this.peerBitmapChunks);
    this.peerBitmapChunks = [];
    const bm = this.metadata.bitmap;
    const peerBits = decodeRle(rle, Math.max(bm.bits, Math.ceil(this.peerParams!.capacity / BLOCK_SIZE)));
    const merged = new Bitmap(bm.bits);
    for (let b = peerBits.nextSet(0); b >= 0 && b < bm.bits; b = peerBits.nextSet(b + 1)) {
      const end = Math.min(peerBits.nextClear(b), bm.bits);
      merged.setRange(b, end);
      b = end;
    }
    bm.merge(merged);
    // Bits past the device size mean nothing.
    bm.clearRange(Math.ceil(this.size / BLOCK_SIZE), bm.bits);
    const source = this.state.conn === 'WFBitMapS';
    this.rsTotalBytes = bm.count * BLOCK_SIZE;
    this.rsDoneBytes = 0;
    this.rsStarted = Date.now();
    this.rsSamples = [[this.rsStarted, 0]];
    this.log.info({ outOfSyncBytes: bm.count * BLOCK_SIZE, exchangedBytes: rle.length }, 'Exchanged bitmaps');
    if (source) {
      this.fact(
        { conn: this.state.userIsp || this.state.peerIsp ? 'PausedSyncS' : 'SyncSource', peerDisk: 'Inconsistent' },
        'resync started',
      );
      this.runResync(c).catch((err: unknown) => this.backgroundFailed(c, err, 'resync'));
    } else {
      this.fact(
        { conn: this.state.userIsp || this.state.peerIsp ? 'PausedSyncT' : 'SyncTarget', disk: 'Inconsistent' },
        'resync started',
      );
    }
  }

  private onPeerState(c: Connection, s: z.infer<typeof StateMsg>): void {
    if (s.promoteRequest !== undefined) {
      // Grant unless we are Primary (or about to be) and two primaries are not allowed.
      const refused =
        !this.config.net.allowTwoPrimaries &&
        (this.state.role === 'Primary' || (this.promoteWaiters.size > 0 && this.link?.dials === true));
      if (!refused) this.peerPromoting = true;
      c.sendJson(P.STATE, {
        promoteReply: { id: s.promoteRequest, ok: !refused, message: refused ? REFUSALS.twoPrimaries[1] : undefined },
      });
      return;
    }
    if (s.promoteReply) {
      this.promoteWaiters
        .get(s.promoteReply.id)
        ?.resolve({ ok: s.promoteReply.ok, ...(s.promoteReply.message ? { message: s.promoteReply.message } : {}) });
      this.promoteWaiters.delete(s.promoteReply.id);
      return;
    }
    if (s.clearBitmapUuid) {
      const uuids = uuidsFromJson(s.clearBitmapUuid);
      void (async () => {
        this.metadata.bitmap.clearAll();
        await this.persistBitmap(true);
        await this.metadata.update({
          uuids,
          laSize: this.size,
          set: ['consistent', 'wasUpToDate'],
          clear: ['outdated'],
        });
        this.fact({ disk: 'UpToDate', peerDisk: 'UpToDate' }, 'new-current-uuid --clear-bitmap on the peer');
      })();
      return;
    }
    if (s.syncUuid) {
      const current = BigInt(`0x${s.syncUuid}`);
      const prev = this.syncGate;
      this.syncGate = prev.then(async () => {
        await this.metadata.update(({ uuids: old }) => {
          const history: [bigint, bigint] = old.current === 4n ? old.history : [old.current, old.history[0]];
          return { uuids: { current, bitmap: 0n, history } };
        });
      });
      return;
    }
    if (s.verifyStart) {
      this.verifyDoneBytes = 0;
      this.verifyOosBlocks = 0;
      this.rsStarted = Date.now();
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
      this.peerPromoting = false;
    }
    if (s.disk) change.peerDisk = s.disk as DiskState;
    if (s.syncPaused !== undefined) {
      change.peerIsp = s.syncPaused;
      if (isSyncing(this.state.conn)) change.conn = syncConn(this.state.conn, this.state.userIsp || s.syncPaused);
      if (!s.syncPaused) this.rsWake?.resolve();
    }
    this.fact(change, 'peer state change');
  }

  private sendState(msg: z.infer<typeof StateMsg>): void {
    this.conn?.sendJson(P.STATE, msg);
  }

  // --- the application's I/O (called by the NBD export) -------------------------

  private checkRange(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.size) {
      throw Object.assign(new Error(`request [${offset}, +${length}) beyond device size ${this.size}`), {
        code: 'EINVAL',
      });
    }
  }

  private requirePrimary(): void {
    if (this.state.role !== 'Primary')
      throw Object.assign(new Error(`${this.config.name} is not Primary`), { code: 'EPERM' });
    if (!this.localDiskUsable() && !this.peerServesData())
      throw eio(`${this.config.name} has neither a local disk nor an UpToDate peer`);
  }

  private localDiskUsable(): boolean {
    return this.md !== undefined && hasLocalDisk(this.state.disk);
  }

  /** A Diskless Primary keeps serving through a Connected, UpToDate peer (on-io-error detach). */
  private peerServesData(): boolean {
    return this.conn !== undefined && this.peerParams !== undefined && isUpToDate(this.state.peerDisk);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    this.checkRange(offset, length);
    this.lastAppIo = Date.now();
    if (!(await this.ioGate)) throw eio(`${this.config.name}: I/O was frozen by fencing and then failed`);
    this.requirePrimary();
    if (this.localDiskUsable()) {
      this.counters.lo++;
      try {
        const buf = await this.backing!.io.read(offset, length);
        this.counters.dr += length;
        return buf;
      } catch (err) {
        if ((await this.localIoError(err, 'read')) === 'passed')
          throw eio(`local read failed: ${(err as Error).message}`);
      } finally {
        this.counters.lo--;
      }
    }
    return this.readFromPeer(offset, length);
  }

  private async readFromPeer(offset: number, length: number): Promise<Buffer> {
    const c = this.conn;
    if (!c || !this.peerServesData()) throw eio(`${this.config.name}: no local disk and no UpToDate peer to read from`);
    const id = this.nextReadId++ >>> 0;
    const w = deferred<{ errno: number; data: Buffer } | undefined>();
    this.peerReads.set(id, w);
    this.counters.pe++;
    c.send(encodeReadRequest(id, offset, length));
    const r = await w.promise;
    this.counters.pe--;
    if (r?.errno !== 0 || r.data.length !== length) throw eio(`${this.config.name}: reading through the peer failed`);
    this.counters.nr += length;
    return r.data;
  }

  private onReadRequest(c: Connection, payload: Buffer): void {
    const { id, offset, length } = decodeReadRequest(payload);
    if (offset + length > this.capacity || length > 32 * 1024 * 1024)
      throw new Error(`peer read [${offset}, +${length}) out of range`);
    const lock = this.lock.acquire(offset, length);
    void (async () => {
      const release = await lock;
      let reply: Buffer[];
      try {
        if (!this.localDiskUsable()) throw eio('no local disk');
        const data = await this.backing!.io.read(offset, length);
        this.counters.dr += length;
        this.counters.ns += length;
        reply = encodeReadReply(id, 0, data);
      } catch (err) {
        if (this.localDiskUsable()) void this.localIoError(err, 'read for the peer');
        reply = encodeReadReply(id, -5);
      } finally {
        release();
      }
      if (c === this.conn) c.send(reply);
    })();
  }

  /**
   * A local disk operation failed. DRBD's on-io-error decides: `detach` (the
   * default) fails the disk and continues Diskless, serving through the peer;
   * `pass_on` returns the error to the application; `call-local-io-error` runs
   * the local-io-error handler and then passes the error on.
   */
  private async localIoError(err: unknown, what: string): Promise<'detached' | 'passed'> {
    const policy = this.config.disk.onIoError;
    this.log.error({ err, what, policy }, `Local I/O error during ${what}`);
    if (policy === 'call-local-io-error') {
      await this.handler('local-io-error');
      return 'passed';
    }
    if (policy === 'pass_on') return 'passed';
    if (this.state.disk !== 'Diskless' && this.state.disk !== 'Failed') {
      this.fact({ disk: 'Failed' }, `local I/O error during ${what}`);
      if (this.bitmapTimer) clearInterval(this.bitmapTimer);
      this.fact({ disk: 'Diskless' }, 'on-io-error detach');
      this.sendState({ disk: 'Diskless' });
      if (this.state.role === 'Primary' && !this.peerServesData()) {
        this.log.error('Detached the disk of a Primary with no UpToDate peer: application I/O fails from now on');
      }
    }
    return 'detached';
  }

  /** Does the peer take mirrored writes right now? */
  private peerTakesWrites(): Connection | undefined {
    const c = this.conn;
    if (!c || !this.peerParams) return undefined;
    const cs = this.state.conn;
    if (this.state.peerDisk === 'Diskless' || this.state.peerDisk === 'Failed') return undefined;
    return cs === 'Connected' || cs === 'WFBitMapS' || isSyncSource(cs) || cs === 'WFBitMapT' ? c : undefined;
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.checkRange(offset, data.length);
    this.lastAppIo = Date.now();
    if (!(await this.ioGate)) throw eio(`${this.config.name}: I/O was frozen by fencing and then failed`);
    this.requirePrimary();
    this.counters.ap++;
    const release = await this.lock.acquire(offset, data.length);
    const al = this.localDiskUsable() ? this.al : undefined;
    try {
      await al?.begin(offset, data.length);
      if (al) this.counters.al = al.transactions;
    } catch (err) {
      release();
      this.counters.ap--;
      throw err;
    }
    try {
      const c = this.peerTakesWrites();
      let req: PeerRequest | undefined;
      if (c) req = this.mirror(c, offset, data, fua ? DATA_FLAGS.FUA : 0);
      // true: on the local disk; false: the disk failed and was detached (the peer must have it).
      const local = this.localDiskUsable()
        ? this.localWrite(offset, data, fua).then(
            () => true,
            async (err: unknown) => {
              if ((await this.localIoError(err, 'write')) === 'passed')
                throw eio(`local write failed: ${(err as Error).message}`);
              return false;
            },
          )
        : Promise.resolve(false);
      if (!req) {
        if (!(await local)) throw eio(`${this.config.name}: the write reached neither the local disk nor the peer`);
        await this.markOutOfSync(offset, data.length);
        return;
      }
      const onDisk = await local;
      const p = this.config.protocol;
      // Without a local copy, only the peer's disk holds this write: wait for it whatever the protocol.
      const ok = await (!onDisk || p === 'C'
        ? req.written.promise
        : p === 'A'
          ? req.sent.promise
          : req.received.promise);
      if (!ok && !onDisk) throw eio(`${this.config.name}: the write reached neither the local disk nor the peer`);
      if (!ok) {
        await this.markOutOfSync(offset, data.length);
        // The peer did not confirm it: with fencing, the application hears back only once the peer is fenced.
        if (!(await this.ioGate)) throw eio(`${this.config.name}: I/O was frozen by fencing and then failed`);
      }
    } finally {
      al?.complete(offset, data.length);
      release();
      this.counters.ap--;
    }
  }

  private mirror(c: Connection, offset: number, data: Buffer, flags: number): PeerRequest {
    const seq = this.nextSeq++ >>> 0;
    const req: PeerRequest = {
      seq,
      offset,
      length: data.length,
      sent: deferred(),
      received: deferred(),
      written: deferred(),
    };
    this.pending.set(seq, req);
    this.counters.pe++;
    this.counters.ns += data.length;
    c.send(encodeData(seq, offset, data, flags), () => req.sent.resolve(true));
    return req;
  }

  private async localWrite(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.counters.lo++;
    try {
      await this.backing!.io.write(offset, data);
      if (fua) await this.backing!.handle.datasync();
      this.counters.dw += data.length;
    } finally {
      this.counters.lo--;
    }
  }

  /** Marks a range out of sync and makes the bits durable before the caller completes. */
  private async markOutOfSync(offset: number, length: number): Promise<void> {
    await this.generationGate;
    if (!this.localDiskUsable()) return;
    const added = this.metadata.bitmap.setRange(
      Math.floor(offset / BLOCK_SIZE),
      Math.ceil((offset + length) / BLOCK_SIZE),
    );
    if (added > 0) await this.persistBitmap(false);
  }

  /** Writes dirty bitmap pages; concurrent callers share one round (group commit). */
  private persistBitmap(sync: boolean): Promise<void> {
    const md = this.md;
    if (!md) return Promise.resolve();
    const round = this.bitmapChain.then(async () => {
      await md.writeDirtyBitmap(sync);
      this.counters.bm = md.bitmapWrites;
    });
    this.bitmapChain = round.catch((err: unknown) => this.log.error({ err }, 'Failed to write the bitmap'));
    return round;
  }

  /**
   * FLUSH: every write completed before it is durable on this node and, when
   * connected, on the peer too (protocol C's meaning of a flush).
   */
  async flush(): Promise<void> {
    if (!(await this.ioGate)) throw eio(`${this.config.name}: I/O was frozen by fencing and then failed`);
    this.requirePrimary();
    const c = this.peerTakesWrites();
    let peer: Promise<boolean> | undefined;
    if (c) {
      const seq = this.nextSeq++ >>> 0;
      const w = deferred<boolean>();
      this.flushWaiters.set(seq, w);
      c.send(encodeSeq(P.FLUSH, seq));
      peer = w.promise;
      this.counters.ep++;
    }
    if (this.localDiskUsable()) {
      try {
        await this.persistBitmap(false);
        await this.backing!.handle.datasync();
        if (this.md && this.md.location.path !== this.self.disk) await this.md.handle.datasync();
      } catch (err) {
        if ((await this.localIoError(err, 'flush')) === 'passed')
          throw eio(`local flush failed: ${(err as Error).message}`);
      }
    }
    const peerDurable = peer && (this.config.protocol === 'C' || !this.localDiskUsable()) ? await peer : false;
    if (!this.localDiskUsable() && !peerDurable)
      throw eio(`${this.config.name}: flush reached neither the local disk nor the peer`);
  }

  // --- the Secondary's side of replication ----------------------------------------

  private onData(c: Connection, payload: Buffer): void {
    const { seq, flags, offset, data } = decodeData(payload);
    this.counters.nr += data.length;
    if (offset + data.length > this.capacity)
      throw new Error(`peer wrote [${offset}, +${data.length}) beyond our disk of ${this.capacity} bytes`);
    this.counters.ua++;
    if (this.config.protocol === 'B') c.send(encodeSeq(P.RECV_ACK, seq));
    this.receive(
      c,
      offset,
      data.length,
      async () => {
        await this.saveBeforeOverwrite(offset, data.length);
        await this.localWrite(offset, data, (flags & DATA_FLAGS.FUA) !== 0);
        this.payloads.give(payload); // on disk: nothing refers to it any more (after a failure it is simply dropped)
      },
      (ok) => (ok ? encodeSeq(P.WRITE_ACK, seq) : encodeSeq(P.NEG_ACK, seq, -5)),
    );
  }

  /**
   * A write from the peer (mirrored or resync): its range is registered in the
   * conflict lock now, in arrival order; it is written once earlier overlapping
   * writes are done (and, on a new SyncTarget, once Inconsistent is on disk);
   * then the peer gets its answer.
   */
  private receive(
    c: Connection,
    offset: number,
    length: number,
    write: () => Promise<void>,
    answer: (ok: boolean) => Buffer[],
  ): void {
    const lock = this.lock.acquire(offset, length);
    const work = (async () => {
      const release = await lock;
      let ok = true;
      try {
        await this.syncGate;
        await write();
      } catch (err) {
        ok = false;
        this.log.error({ err, offset, length }, 'Local write of a request from the peer failed');
        if (this.localDiskUsable()) void this.localIoError(err, 'mirrored write');
      } finally {
        release();
        this.counters.ua--;
      }
      if (c === this.conn) c.send(answer(ok));
    })();
    this.receiving.add(work);
    void work.finally(() => this.receiving.delete(work));
  }

  private onPeerFlush(c: Connection, seq: number): void {
    const before = [...this.receiving];
    void (async () => {
      await Promise.all(before);
      await this.backing?.handle.datasync();
      if (c === this.conn) c.send(encodeSeq(P.FLUSH_ACK, seq));
    })();
  }

  private onAck(payload: Buffer, what: 'received' | 'written'): void {
    const { seq } = decodeSeq(payload);
    const req = this.pending.get(seq);
    if (!req) return;
    req.received.resolve(true);
    req.sent.resolve(true);
    if (what === 'written') {
      req.written.resolve(true);
      this.pending.delete(seq);
      this.counters.pe--;
    }
  }

  private onNegAck(payload: Buffer): void {
    const { seq } = decodeSeq(payload);
    const req = this.pending.get(seq);
    if (!req) return;
    this.pending.delete(seq);
    this.counters.pe--;
    this.log.warn({ offset: req.offset, length: req.length }, 'Peer failed to write a block; marked out of sync');
    void this.markOutOfSync(req.offset, req.length).then(() => {
      req.sent.resolve(true);
      req.received.resolve(true);
      req.written.resolve(false);
    });
  }

  // --- resync ------------------------------------------------------------------------

  /**
   * SyncSource: walks the bitmap and pushes marked blocks to the target. Each
   * chunk is read under the conflict lock and queued on the link before the
   * lock is released, so a later application write to the same blocks reaches
   * the target after the resync data, never before.
   */
  private async runResync(c: Connection): Promise<void> {
    const bm = this.metadata.bitmap;
    const sizeBits = Math.ceil(this.size / BLOCK_SIZE);
    let cursor = 0;
    this.rsTokens = 0;
    this.rsTokenTime = Date.now();
    while (this.conn === c && isSyncSource(this.state.conn)) {
      if (this.state.conn === 'PausedSyncS' || this.rsInflightBytes >= RS_WINDOW_BYTES) {
        this.rsWake = deferred();
        await this.rsWake.promise;
        continue;
      }
      let bit = bm.nextSet(cursor);
      while (bit >= 0 && this.rsInflight.has(bit)) bit = bm.nextSet(bit + 1);
      if (bit < 0 || bit >= sizeBits) {
        if (this.rsInflightBytes > 0) {
          this.rsWake = deferred();
          await this.rsWake.promise;
          continue;
        }
        if (bm.count === 0 || bm.nextSet(0) >= sizeBits || bm.nextSet(0) < 0) break;
        cursor = 0;
        continue;
      }
      const end = Math.min(bm.nextClear(bit), bit + RS_CHUNK_BLOCKS, sizeBits);
      const offset = bit * BLOCK_SIZE;
      const length = Math.min(end * BLOCK_SIZE, this.size) - offset;
      await this.rateLimit(length);
      if (this.conn !== c) return;
      this.rsInflight.set(bit, length);
      this.rsInflightBytes += length;
      const release = await this.lock.acquire(offset, length);
      try {
        const data = await readExact(this.backing!.handle, offset, length);
        this.counters.dr += length;
        if (this.conn !== c) return;
        const csums = this.config.net.csumsAlg?.toLowerCase();
        if (isZero(data)) {
          // A run of zeroes travels as its range only; the target keeps holes holes.
          c.send(encodeRange(P.RS_ZERO, offset, length));
        } else if (csums && isSupportedAlg(csums)) {
          // csums-alg: send digests; only blocks the target lacks travel. The
          // range stays locked until the answer, so no application write can
          // slip between our read and the data we may still send.
          this.csumPending.set(offset, { release, data });
          c.send(encodeVerify(P.RS_CSUM, offset, length, blockDigests(csums, data, BLOCK_SIZE)));
          cursor = end;
          continue;
        } else {
          this.counters.ns += length;
          c.send(encodeRsData(offset, data));
        }
      } finally {
        if (!this.csumPending.has(offset)) release();
      }
      cursor = end;
    }
    if (this.conn !== c || !isSyncSource(this.state.conn)) return;
    await this.persistBitmap(true);
    this.log.info(
      { bytes: this.rsDoneBytes, seconds: (Date.now() - this.rsStarted) / 1000 },
      'Resync source finished; telling the target',
    );
    c.sendJson(P.SYNC_DONE, { uuids: uuidsToJson(this.metadata.sb.uuids) });
  }

  /** Token bucket at the rate resyncRateNow allows (fixed, or throttled while the application is busy). */
  private async rateLimit(bytes: number): Promise<void> {
    for (;;) {
      const now = Date.now();
      const rate = resyncRateNow(this.config.disk, now - this.lastAppIo < APP_ACTIVE_WINDOW_MS);
      if (!rate) {
        this.rsTokenTime = now;
        return;
      }
      this.rsTokens = Math.min(rate / 4, this.rsTokens + ((now - this.rsTokenTime) / 1000) * rate);
      this.rsTokenTime = now;
      if (this.rsTokens >= bytes || this.rsTokens >= rate / 4) {
        this.rsTokens -= bytes;
        return;
      }
      await sleep(Math.max(5, Math.ceil(((bytes - this.rsTokens) / rate) * 1000)));
    }
  }

  private onRsData(c: Connection, payload: Buffer): void {
    const { offset, data } = decodeRsData(payload);
    this.counters.nr += data.length;
    if (offset + data.length > this.capacity)
      throw new Error(`resync data [${offset}, +${data.length}) beyond our disk`);
    this.counters.ua++;
    this.receive(
      c,
      offset,
      data.length,
      async () => {
        await this.saveBeforeOverwrite(offset, data.length);
        await this.localWrite(offset, data, false);
        this.payloads.give(payload);
        this.metadata.bitmap.clearRange(offset / BLOCK_SIZE, Math.ceil((offset + data.length) / BLOCK_SIZE));
        this.rsDoneBytes += data.length;
        this.sampleSpeed();
      },
      (ok) => encodeRange(ok ? P.RS_ACK : P.RS_NEG_ACK, offset, data.length),
    );
  }

  private onRsZero(c: Connection, payload: Buffer): void {
    const { offset, length } = decodeRange(payload);
    if (offset + length > this.capacity) throw new Error(`resync zeroes [${offset}, +${length}) beyond our disk`);
    this.counters.ua++;
    this.receive(
      c,
      offset,
      length,
      async () => {
        await this.saveBeforeOverwrite(offset, length);
        // Already zero (a hole in a thin file, or a blank disk): nothing to write.
        const current = await this.backing!.io.read(offset, length);
        this.counters.dr += length;
        if (!isZero(current)) await this.localWrite(offset, Buffer.alloc(length), false);
        this.metadata.bitmap.clearRange(offset / BLOCK_SIZE, Math.ceil((offset + length) / BLOCK_SIZE));
        this.rsDoneBytes += length;
        this.sampleSpeed();
      },
      (ok) => encodeRange(ok ? P.RS_ACK : P.RS_NEG_ACK, offset, length),
    );
  }

  /** SyncTarget, csums-alg: compare the source's digests with ours; equal blocks are in sync already. */
  private onRsCsum(c: Connection, payload: Buffer): void {
    const { offset, length, body } = decodeVerify(payload);
    if (offset + length > this.capacity) throw new Error(`resync digests [${offset}, +${length}) beyond our disk`);
    const alg = (this.config.net.csumsAlg ?? 'sha1').toLowerCase();
    const lock = this.lock.acquire(offset, length);
    void (async () => {
      const release = await lock;
      const blocks = Math.ceil(length / BLOCK_SIZE);
      const differ = Buffer.alloc(Math.ceil(blocks / 8));
      try {
        await this.syncGate;
        const ours = blockDigests(alg, await this.backing!.io.read(offset, length), BLOCK_SIZE);
        this.counters.dr += length;
        const n = digestSize(alg);
        for (let i = 0; i < blocks; i++) {
          if (ours.subarray(i * n, (i + 1) * n).equals(body.subarray(i * n, (i + 1) * n))) {
            this.metadata.bitmap.clearRange(offset / BLOCK_SIZE + i, offset / BLOCK_SIZE + i + 1);
            this.rsDoneBytes += BLOCK_SIZE;
          } else {
            differ[i >> 3]! |= 1 << (i & 7);
          }
        }
      } catch (err) {
        this.log.error({ err, offset }, 'Reading for a checksum comparison failed; asking for all of it');
        differ.fill(0xff);
      } finally {
        release();
      }
      if (c === this.conn) c.send(encodeVerify(P.RS_CSUM_REPLY, offset, length, differ));
    })();
  }

  /** SyncSource, csums-alg: equal blocks are done; the differing runs go as RS_DATA, then the range is released. */
  private onRsCsumReply(c: Connection, payload: Buffer): void {
    const { offset, length, body } = decodeVerify(payload);
    const pending = this.csumPending.get(offset);
    if (!pending) return;
    this.csumPending.delete(offset);
    const bit0 = offset / BLOCK_SIZE;
    const blocks = Math.ceil(length / BLOCK_SIZE);
    const differs = (i: number): boolean => (((body[i >> 3] ?? 0) >> (i & 7)) & 1) === 1;
    const chunk = this.rsInflight.get(bit0);
    if (chunk !== undefined) {
      this.rsInflight.delete(bit0);
      this.rsInflightBytes -= chunk;
    }
    for (let i = 0; i < blocks; ) {
      if (!differs(i)) {
        this.metadata.bitmap.clearRange(bit0 + i, bit0 + i + 1);
        this.rsDoneBytes += BLOCK_SIZE;
        i++;
        continue;
      }
      let e = i + 1;
      while (e < blocks && differs(e)) e++;
      const data = pending.data.subarray(i * BLOCK_SIZE, Math.min(e * BLOCK_SIZE, length));
      this.rsInflight.set(bit0 + i, data.length);
      this.rsInflightBytes += data.length;
      this.counters.ns += data.length;
      c.send(encodeRsData(offset + i * BLOCK_SIZE, data));
      i = e;
    }
    pending.release();
    this.sampleSpeed();
    this.rsWake?.resolve();
  }

  private onRsAck(payload: Buffer, ok: boolean): void {
    const { offset, length } = decodeRange(payload);
    const bit = offset / BLOCK_SIZE;
    const inflight = this.rsInflight.get(bit);
    if (inflight !== undefined) {
      this.rsInflight.delete(bit);
      this.rsInflightBytes -= inflight;
    }
    if (ok) {
      this.metadata.bitmap.clearRange(bit, Math.ceil((offset + length) / BLOCK_SIZE));
      this.rsDoneBytes += length;
      this.sampleSpeed();
    }
    this.rsWake?.resolve();
  }

  private sampleSpeed(): void {
    const now = Date.now();
    const last = this.rsSamples[this.rsSamples.length - 1];
    if (!last || now - last[0] >= 250) {
      this.rsSamples.push([now, this.rsDoneBytes]);
      if (this.rsSamples.length > 40) this.rsSamples.shift();
    }
  }

  private async onSyncDone(c: Connection, msg: z.infer<typeof SyncDone>): Promise<void> {
    // A resync with nothing to move ends before the target's preparation (Inconsistent
    // on disk, the before-resync-target handler) has finished: let it finish first, so
    // the end's UpToDate and new generation are written after it, not undone by it.
    await this.syncGate.catch(() => undefined);
    await Promise.all([...this.receiving]);
    const md = this.metadata;
    md.bitmap.clearAll();
    await this.persistBitmap(true);
    await this.finishDiscardSave();
    await md.update((sb) => ({
      uuids: finishSyncTarget(sb.uuids, uuidsFromJson(msg.uuids)),
      set: ['consistent', 'wasUpToDate'],
      clear: ['outdated', 'primaryAtSplit'],
    }));
    void this.handler('after-resync-target');
    this.log.info({ bytes: this.rsDoneBytes, seconds: (Date.now() - this.rsStarted) / 1000 }, 'Resync finished');
    if (c !== this.conn) return;
    this.fact({ conn: 'Connected', disk: 'UpToDate', peerDisk: 'UpToDate' }, 'resync finished');
    c.send(encodeFrame(P.SYNC_DONE_ACK));
  }

  private async onSyncDoneAck(): Promise<void> {
    const md = this.metadata;
    // A crashed Primary's recovery resync is done: the flag has served its purpose.
    const clear: MdFlag[] = this.state.role === 'Primary' ? ['primaryAtSplit'] : ['crashedPrimary', 'primaryAtSplit'];
    await md.update((sb) => ({ uuids: finishSyncSource(sb.uuids), clear }));
    if (isSyncSource(this.state.conn)) this.fact({ conn: 'Connected', peerDisk: 'UpToDate' }, 'resync finished');
  }

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
    this.rsWake?.resolve();
  }

  // --- roles ------------------------------------------------------------------------

  async promote(opts: { force?: boolean } = {}): Promise<void> {
    if (this.state.role === 'Primary') return;
    const md = this.metadata;
    if (!isUpToDate(this.state.disk) && !opts.force) throw refuse(REFUSALS.noUpToDateDisk);
    if (this.conn && (this.state.peerRole === 'Primary' || this.peerPromoting) && !this.config.net.allowTwoPrimaries)
      throw refuse(REFUSALS.twoPrimaries);
    if (isSyncTarget(this.state.conn)) throw refuse(REFUSALS.syncing);
    // Connected: ask the peer first, so two nodes can never both promote at once.
    if (this.conn && !this.config.net.allowTwoPrimaries) {
      const id = ++this.promoteId;
      const w = deferred<{ ok: boolean; message?: string }>();
      this.promoteWaiters.set(id, w);
      this.sendState({ promoteRequest: id });
      const answer = await Promise.race([
        w.promise,
        sleep(this.config.net.timeoutMs).then(() => ({ ok: false, message: 'peer did not answer' })),
      ]);
      this.promoteWaiters.delete(id);
      if (!answer.ok) throw new StateChangeError(-1, answer.message ?? 'peer refused');
    }
    const forced = opts.force === true && !isUpToDate(this.state.disk);
    const alone = !this.conn;
    if (forced) {
      md.bitmap.setRange(0, Math.ceil(this.size / BLOCK_SIZE));
      await this.persistBitmap(true);
    }
    await md.update((sb) => {
      let uuids: Uuids = sb.uuids;
      if (forced) {
        // `--force`/`--overwrite-data-of-peer`: our data becomes the truth; all of it must reach the peer.
        // A new generation that is not relative to anything: the peer gets a full sync.
        const history: [bigint, bigint] =
          uuids.current === UUID_JUST_CREATED ? uuids.history : [uuids.current, uuids.history[0]];
        uuids = { current: randomUuid(), bitmap: 0n, history };
      } else if (alone && uuids.bitmap === 0n) {
        uuids = newCurrent(uuids);
      }
      return {
        uuids,
        laSize: sb.laSize > 0 ? sb.laSize : this.size,
        set: forced ? ['consistent', 'wasUpToDate', 'primaryInd', 'crashedPrimary'] : ['primaryInd', 'crashedPrimary'],
        clear: forced ? ['outdated'] : [],
      };
    });
    this.commit(
      { role: 'Primary', ...(forced ? { disk: 'UpToDate' as const } : {}) },
      opts.force ? 'primary --force' : 'primary',
    );
    this.sendState({ role: 'Primary', disk: this.state.disk });
    if (forced && this.conn && this.peerParams) this.sendParams(this.conn, false);
  }

  async demote(opts: { force?: boolean } = {}): Promise<void> {
    if (this.state.role !== 'Primary') return;
    if (opts.force && this.state.suspended) this.resumeIo('demoted while frozen: failing the frozen I/O', false);
    if (opts.force && this.openCount() > 0) await this.closeClients();
    if (this.openCount() > 0) throw refuse(REFUSALS.deviceInUse, `${this.openCount()} NBD client(s) connected`);
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
    const uuids = newCurrent({ ...md.sb.uuids, bitmap: 0n });
    const fresh = { ...uuids, bitmap: 0n };
    md.bitmap.clearAll();
    await this.persistBitmap(true);
    await md.update({ uuids: fresh, laSize: this.size, set: ['consistent', 'wasUpToDate'], clear: ['outdated'] });
    this.sendState({ clearBitmapUuid: uuidsToJson(fresh) });
    this.fact({ disk: 'UpToDate', peerDisk: 'UpToDate' }, 'new-current-uuid --clear-bitmap');
  }

  /**
   * Online verify (VerifyS): compares every block's digest with the peer's.
   * Mismatches are marked out of sync on both sides; a reconnect or `invalidate`
   * repairs them. Each chunk stays locked from our read until the peer's answer,
   * so an application write on this node cannot make a false mismatch.
   */
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
    const c = this.conn!;
    this.verifyDoneBytes = 0;
    this.verifyOosBlocks = 0;
    this.rsStarted = Date.now();
    this.fact({ conn: 'VerifyS' }, 'verify');
    this.sendState({ verifyStart: true });
    this.runVerify(c, alg.toLowerCase()).catch((err: unknown) => this.backgroundFailed(c, err, 'online verify'));
  }

  private async runVerify(c: Connection, alg: string): Promise<void> {
    const chunk = RS_CHUNK_BLOCKS * BLOCK_SIZE;
    for (let offset = 0; offset < this.size; offset += chunk) {
      while (this.verifyInflight.size >= 8 && this.conn === c) {
        this.verifyWake = deferred();
        await this.verifyWake.promise;
      }
      if (this.conn !== c || this.state.conn !== 'VerifyS') return;
      const length = Math.min(chunk, this.size - offset);
      const release = await this.lock.acquire(offset, length);
      const data = await readExact(this.backing!.handle, offset, length);
      this.counters.dr += length;
      this.verifyInflight.set(offset, { release, length });
      c.send(encodeVerify(P.VERIFY_REQ, offset, length, blockDigests(alg, data, BLOCK_SIZE)));
    }
    while (this.verifyInflight.size > 0 && this.conn === c) {
      this.verifyWake = deferred();
      await this.verifyWake.promise;
    }
    if (this.conn !== c) return;
    await this.persistBitmap(true);
    const oos = this.verifyOosBlocks;
    this.log.info(
      { oosBlocks: oos, seconds: (Date.now() - this.rsStarted) / 1000 },
      `Online verify done: ${oos * 4} KiB out of sync`,
    );
    this.sendState({ verifyDone: { oosBlocks: oos } });
    this.fact({ conn: 'Connected' }, `online verify finished: ${oos} blocks out of sync`);
    if (oos > 0) void this.handler('out-of-sync');
  }

  private onVerifyRequest(c: Connection, payload: Buffer): void {
    const { offset, length, body } = decodeVerify(payload);
    const alg = (this.config.net.verifyAlg ?? 'sha1').toLowerCase();
    if (offset + length > this.capacity) throw new Error(`verify request [${offset}, +${length}) beyond our disk`);
    const lock = this.lock.acquire(offset, length);
    void (async () => {
      const release = await lock;
      try {
        const data = await readExact(this.backing!.handle, offset, length);
        const ours = blockDigests(alg, data, BLOCK_SIZE);
        const n = digestSize(alg);
        const blocks = Math.ceil(length / BLOCK_SIZE);
        const mismatch = Buffer.alloc(Math.ceil(blocks / 8));
        for (let i = 0; i < blocks; i++) {
          if (!ours.subarray(i * n, (i + 1) * n).equals(body.subarray(i * n, (i + 1) * n))) {
            mismatch[i >> 3]! |= 1 << (i & 7);
            this.metadata.bitmap.setRange(offset / BLOCK_SIZE + i, offset / BLOCK_SIZE + i + 1);
          }
        }
        this.verifyDoneBytes += length;
        if (c === this.conn) c.send(encodeVerify(P.VERIFY_REPLY, offset, length, mismatch));
      } finally {
        release();
      }
    })();
  }

  private onVerifyReply(payload: Buffer): void {
    const { offset, length, body } = decodeVerify(payload);
    const entry = this.verifyInflight.get(offset);
    if (!entry) return;
    this.verifyInflight.delete(offset);
    const blocks = Math.ceil(length / BLOCK_SIZE);
    for (let i = 0; i < blocks; i++) {
      if (((body[i >> 3] ?? 0) >> (i & 7)) & 1) {
        this.metadata.bitmap.setRange(offset / BLOCK_SIZE + i, offset / BLOCK_SIZE + i + 1);
        this.verifyOosBlocks++;
        this.log.warn({ offset: offset + i * BLOCK_SIZE }, 'Online verify found a block out of sync');
      }
    }
    this.verifyDoneBytes += length;
    entry.release();
    this.verifyWake?.resolve();
  }

  /**
   * Re-reads this disk's usable size (after the backing device grew) and grows
   * the bitmap to cover it. External metadata only: internal metadata sits at
   * the end of the device and would have to move.
   */
  private async refreshCapacity(): Promise<void> {
    const md = this.metadata;
    if (md.location.internal)
      throw new TandemError(
        ERROR_CODES.notImplemented,
        'resize with internal meta-disk is not implemented yet (use an external meta-disk)',
        20,
      );
    const location = await locateMetadata(this.self.disk, this.self.metaDisk);
    let capacity = Math.min(
      location.dataCapacity,
      md.maxBitmapBits * BLOCK_SIZE,
      this.config.disk.size ?? Number.MAX_SAFE_INTEGER,
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

  /** `resize`: grow online after both backing devices grew; the new area is synced. */
  async resize(): Promise<void> {
    if (!this.conn || this.state.conn !== 'Connected') throw refuse(REFUSALS.needConnection);
    if (!isUpToDate(this.state.disk) || !isUpToDate(this.state.peerDisk))
      throw new StateChangeError(-2, 'resize needs UpToDate data on both nodes');
    await this.refreshCapacity();
    this.pendingResize = true;
    this.sendParams(this.conn, false);
  }

  /** Freezes application I/O: requests wait (none completes) until resumeIo. */
  private suspendIo(cause: string): void {
    if (this.state.suspended) return;
    this.ioGate = new Promise<boolean>((r) => {
      this.ioRelease = r;
    });
    this.fact({ suspended: true }, cause);
  }

  /** Thaws I/O; with `go` false the frozen requests fail with EIO instead of proceeding. */
  resumeIo(cause: string, go = true): void {
    if (!this.state.suspended) return;
    const release = this.ioRelease;
    this.ioRelease = undefined;
    this.ioGate = Promise.resolve(true);
    this.fact({ suspended: false }, cause);
    release?.(go);
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
      await this.metadata.update({ set: ['peerOutdated'] });
      this.resumeIo(`fence-peer handler exited ${code}: the peer is fenced`);
    } else if (code === 6) {
      this.log.error('fence-peer handler exited 6: the peer is Primary; I/O stays frozen (demote this node)');
    } else {
      this.log.error({ code }, 'fence-peer handler failed: I/O stays frozen until the peer returns or resume-io');
    }
  }

  /** A resync or verify loop failed (a local disk error): apply on-io-error and drop the connection. */
  private backgroundFailed(c: Connection, err: unknown, what: string): void {
    this.log.error({ err }, `The ${what} failed`);
    void this.localIoError(err, what).finally(() =>
      c.close('NetworkFailure', `${what} failed: ${(err as Error).message}`),
    );
  }

  /** `invalidate`: this node's data is declared bad; a full resync from the peer replaces it. */
  async invalidate(): Promise<void> {
    if (this.state.role === 'Primary')
      throw new StateChangeError(-13, 'Refusing to invalidate a Primary (demote it first)');
    if (this.conn && this.state.conn === 'Connected') {
      if (!isUpToDate(this.state.peerDisk))
        throw new StateChangeError(-2, 'invalidate needs an UpToDate peer to sync from');
      this.pendingInvalidate = 'self';
      this.sendParams(this.conn, false);
      return;
    }
    if (isConnected(this.state.conn)) throw refuse(REFUSALS.inTransientState);
    // Alone: everything out of sync and Inconsistent; the next connection resyncs it all.
    this.metadata.bitmap.setRange(0, Math.ceil(this.size / BLOCK_SIZE));
    await this.persistBitmap(true);
    await this.metadata.update({ clear: ['consistent', 'wasUpToDate'] });
    this.fact({ disk: 'Inconsistent' }, 'invalidate');
  }

  /** `invalidate-remote`: the peer's data is declared bad; a full resync from here replaces it. */
  async invalidateRemote(): Promise<void> {
    if (!this.conn || this.state.conn !== 'Connected') throw refuse(REFUSALS.needConnection);
    if (this.state.peerRole === 'Primary')
      throw new StateChangeError(-13, 'Refusing to invalidate the peer while it is Primary');
    if (!isUpToDate(this.state.disk)) throw new StateChangeError(-2, 'invalidate-remote needs UpToDate data here');
    this.pendingInvalidate = 'peer';
    this.sendParams(this.conn, false);
  }

  async outdate(): Promise<void> {
    if (isConnected(this.state.conn)) throw refuse(REFUSALS.lowerThanOutdated);
    if (this.state.role === 'Primary') throw new StateChangeError(-7, 'Refusing to outdate a Primary');
    if (!isUpToDate(this.state.disk) && this.state.disk !== 'Consistent') return;
    await this.metadata.update({ set: ['outdated'] });
    this.fact({ disk: 'Outdated' }, 'outdate');
  }

  private async persistDisk(disk: DiskState): Promise<void> {
    if (disk === 'UpToDate') await this.metadata.update({ set: ['consistent', 'wasUpToDate'], clear: ['outdated'] });
  }

  // --- status and shutdown --------------------------------------------------------------

  syncProgress(): SyncProgress | undefined {
    if (!this.md) return undefined;
    if (this.state.conn === 'VerifyS' || this.state.conn === 'VerifyT') {
      const elapsed = (Date.now() - this.rsStarted) / 1000;
      const speed = elapsed > 0 ? this.verifyDoneBytes / elapsed : 0;
      const remaining = Math.max(0, this.size - this.verifyDoneBytes);
      return {
        percent: Math.floor((this.verifyDoneBytes / Math.max(1, this.size)) * 1000) / 10,
        remainingBytes: remaining,
        totalBytes: this.size,
        etaSeconds: speed > 0 ? Math.round(remaining / speed) : undefined,
        speedKiBps: Math.round(speed / 1024),
        averageKiBps: Math.round(speed / 1024),
        paused: false,
      };
    }
    if (!isSyncing(this.state.conn)) return undefined;
    const remaining = this.md.bitmap.count * BLOCK_SIZE;
    const total = Math.max(this.rsTotalBytes, remaining);
    const now = Date.now();
    const first = this.rsSamples.find(([t]) => now - t <= 3000) ?? this.rsSamples[0] ?? [now, 0];
    const window = (now - first[0]) / 1000;
    const speed = window > 0 ? (this.rsDoneBytes - first[1]) / window : 0;
    const elapsed = (now - this.rsStarted) / 1000;
    const avg = elapsed > 0 ? this.rsDoneBytes / elapsed : 0;
    return {
      percent: total === 0 ? 100 : Math.floor(((total - remaining) / total) * 1000) / 10,
      remainingBytes: remaining,
      totalBytes: total,
      etaSeconds: speed > 0 ? Math.round(remaining / speed) : undefined,
      speedKiBps: Math.round(speed / 1024),
      averageKiBps: Math.round(avg / 1024),
      paused: this.state.conn === 'PausedSyncS' || this.state.conn === 'PausedSyncT',
    };
  }

  status(): EngineStatus {
    const md = this.md;
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
      counters: { ...this.counters },
      oosBytes: md ? md.bitmap.count * BLOCK_SIZE : 0,
      sync: this.syncProgress(),
      uuids: uuidsToJson(md?.sb.uuids ?? { current: 0n, bitmap: 0n, history: [0n, 0n] }),
      lastDecision: this.lastDecision,
      lastError: this.lastError,
      discardedBlocksSavedTo: this.lastSaved,
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
  if (isSyncSource(c)) return paused ? 'PausedSyncS' : 'SyncSource';
  if (isSyncTarget(c)) return paused ? 'PausedSyncT' : 'SyncTarget';
  return c;
}

function eio(message: string): Error {
  return Object.assign(new Error(message), { code: 'EIO' });
}

const ZEROES = Buffer.alloc(RS_CHUNK_BLOCKS * BLOCK_SIZE);

function isZero(data: Buffer): boolean {
  for (let off = 0; off < data.length; off += ZEROES.length) {
    const part = data.subarray(off, off + ZEROES.length);
    if (!part.equals(ZEROES.subarray(0, part.length))) return false;
  }
  return true;
}

/** Primary, Connected, both disks UpToDate and I/O flowing: the peer can take over now. */
function isWholePrimary(s: EngineState): boolean {
  return (
    s.role === 'Primary' && s.conn === 'Connected' && s.disk === 'UpToDate' && s.peerDisk === 'UpToDate' && !s.suspended
  );
}
