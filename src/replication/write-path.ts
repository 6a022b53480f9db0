// The Primary's application I/O: reads, writes and flushes from the NBD export.
//
// The life of one application write (DRBD's drbd_req.h is the model):
//   1. Checked against the device size; it waits while I/O is frozen (fencing).
//   2. Its block range is taken in the conflict lock: an earlier overlapping write
//      (or resync read) finishes first, so both disks see overlapping writes in the
//      same order.
//   3. Its activity-log extents are made hot, on disk, before any byte lands.
//   4. If the peer takes writes, a DATA frame is queued (waiting for room in the
//      send queue first: a peer that falls behind slows the Primary down) and the
//      write joins the transfer log in the open epoch; the local pwrite runs at the
//      same time.
//   5. It completes to the application when the local write is done AND
//        protocol A: the DATA frame was handed to the network,
//        protocol B: the peer has it in memory (RECV_ACK),
//        protocol C: the peer wrote it (WRITE_ACK).
//      The peer's page cache is not stable storage: the write stays in the transfer
//      log, and its extents stay hot, until the peer acknowledges its whole epoch as
//      durable (BARRIER_ACK, after the peer's fdatasync).
//   6. If the connection ends first, every write in the transfer log becomes a
//      bitmap bit, persisted before the extents cool down; a Primary that stopped
//      feeding an UpToDate peer starts a new data generation, and no write completes
//      until that is on disk. The reconnect resyncs exactly those blocks.
//   7. Without a peer, the write is marked out of sync and completes when the local
//      write does.
// A FLUSH closes the open epoch and waits for the peer's acknowledgement of it (under
// protocol C), and makes the local disk durable: every write completed before it is
// then on stable storage on both nodes.
import { BLOCK_SIZE } from './bitmap.ts';
import { eio, type Core, zeroLocally } from './core.ts';
import { deferred, type Deferred } from './deferred.ts';
import type { IoFreeze } from './io-freeze.ts';
import { PeerProtocolError, type PeerMessage, MAX_PEER_RANGE } from './messages.ts';
import { isSyncSource, isUpToDate } from './states.ts';
import { LatencyHistogram } from './latency.ts';
import { TransferLog, type TlRequest } from './transfer-log.ts';
import type { BlockFile, PeerConnection, Timer } from './world.ts';

/** Bytes queued towards the peer beyond which a new mirrored write waits. */
const SEND_QUEUE_HIGH = 16 * 1024 * 1024;
const SEND_QUEUE_LOW = 8 * 1024 * 1024;
/** The largest range one ZERO frame covers (the peer refuses larger ones). */
const ZERO_PIECE = MAX_PEER_RANGE;

export class WritePath {
  readonly #core: Core;
  readonly #freeze: IoFreeze;
  #tl = new TransferLog();
  /** The connection the transfer log belongs to. */
  #tlConn: PeerConnection | undefined;
  #nextSeq = 1;
  #epochTimer: Timer | undefined;
  /** Flushes waiting for the peer's acknowledgement of an epoch, by epoch number. */
  readonly #epochWaiters = new Map<number, Deferred<boolean>>();
  /** Completions wait for this after a lost connection: the new generation and the transfer log's bits on disk. */
  #lossGate: Promise<void> = Promise.resolve();
  readonly #peerReads = new Map<number, Deferred<{ errno: number; data: Buffer } | undefined>>();
  #nextReadId = 1;
  /** Completed application writes, from submission to the answer (frozen time included: the application waited it). */
  readonly latency = new LatencyHistogram();

  constructor(core: Core, freeze: IoFreeze) {
    this.#core = core;
    this.#freeze = freeze;
  }

  /** Writes held for the peer (sent, epoch not yet acknowledged). */
  get transferLogSize(): number {
    return this.#tl.size;
  }

  /**
   * No completion until `p` is done (a new generation or the bits of a lost link on disk).
   * If `p` fails, what it was to record is not on disk, and no write may complete as if it
   * were: every completion from here fails (EIO) until the next connection starts over.
   */
  holdCompletions(p: Promise<void>): void {
    p.catch(() => undefined); // handled: its failure reaches completions through the gate
    const gate = this.#lossGate.then(() => p);
    gate.catch(() => undefined); // waited for by completions; a failure is theirs to report
    this.#lossGate = gate;
  }

  /** Waits for what holdCompletions asked (disconnect waits for it too); never rejects. */
  settled(): Promise<void> {
    return this.#lossGate.catch(() => undefined);
  }

  /** The gate, for a completion: a failed record fails the request. */
  private async passLossGate(): Promise<void> {
    try {
      await this.#lossGate;
    } catch (err) {
      throw eio(
        `${this.#core.config.name}: could not record on disk what this write depends on (${(err as Error).message})`,
      );
    }
  }

  // --- the connection ---------------------------------------------------------

  onConnected(c: PeerConnection): void {
    // A new connection starts over from what is on disk (a failed record stays failed:
    // its disk was detached, and the plan is made from the metadata as it is).
    this.#lossGate = Promise.resolve();
    this.#tl = new TransferLog();
    this.#tlConn = c;
    this.#epochTimer?.cancel();
    this.#epochTimer = undefined;
  }

  /**
   * The connection ended: everything the peer may not have on stable storage becomes
   * out of sync. The bits are durable before the writes' extents leave the activity
   * log, and completions wait for them.
   */
  onConnectionLost(): void {
    const reqs = this.#tl.drain();
    this.#tlConn = undefined;
    this.#epochTimer?.cancel();
    this.#epochTimer = undefined;
    this.#core.counters.pe = 0;
    const local = this.#core.local;
    for (const r of reqs) {
      local?.md.bitmap.setRange(Math.floor(r.offset / BLOCK_SIZE), Math.ceil((r.offset + r.length) / BLOCK_SIZE));
      r.settle('sent', false);
      r.settle('received', false);
      r.settle('written', false);
      r.settle('durable', false);
    }
    for (const w of this.#epochWaiters.values()) w.resolve(false);
    this.#epochWaiters.clear();
    for (const w of this.#peerReads.values()) w.resolve(undefined);
    this.#peerReads.clear();
    if (reqs.length === 0) return;
    this.#core.log.info({ writes: reqs.length }, 'Marked the writes the peer had not made durable out of sync');
    const persisted = this.#core.persistBitmap(true).then(() => {
      for (const r of reqs) local?.al.complete(r.offset, r.length);
    });
    this.holdCompletions(persisted);
  }

  /** Does the peer take mirrored writes right now? */
  peerTakesWrites(): PeerConnection | undefined {
    const c = this.#core.conn;
    if (!c || !this.#core.peerParams || c !== this.#tlConn) return undefined;
    const s = this.#core.state;
    if (s.peerDisk === 'Diskless' || s.peerDisk === 'Failed') return undefined;
    // Online verify (either direction) does not stop replication.
    const takes =
      s.conn === 'Connected' ||
      s.conn === 'WFBitMapS' ||
      isSyncSource(s.conn) ||
      s.conn === 'WFBitMapT' ||
      s.conn === 'VerifyS' ||
      s.conn === 'VerifyT';
    return takes ? c : undefined;
  }

  // --- the application's I/O ----------------------------------------------------

  private checkRange(offset: number, length: number): void {
    if (offset < 0 || length < 0 || offset + length > this.#core.size) {
      throw Object.assign(new Error(`request [${offset}, +${length}) beyond device size ${this.#core.size}`), {
        code: 'EINVAL',
      });
    }
  }

  private requirePrimary(): void {
    const name = this.#core.config.name;
    if (this.#core.state.role !== 'Primary')
      throw Object.assign(new Error(`${name} is not Primary`), { code: 'EPERM' });
    if (!this.#core.localDiskUsable() && !this.peerServesData())
      throw eio(`${name} has neither a local disk nor an UpToDate peer`);
  }

  /** A Diskless Primary keeps serving through a Connected, UpToDate peer (on-io-error detach). */
  private peerServesData(): boolean {
    return (
      this.#core.conn !== undefined && this.#core.peerParams !== undefined && isUpToDate(this.#core.state.peerDisk)
    );
  }

  private async passFreeze(): Promise<void> {
    if (!(await this.#freeze.pass())) throw eio(`${this.#core.config.name}: I/O was frozen by fencing and then failed`);
  }

  async read(offset: number, length: number): Promise<Buffer> {
    const core = this.#core;
    this.checkRange(offset, length);
    core.lastAppIo = core.world.clock.now();
    await this.passFreeze();
    this.requirePrimary();
    const local = core.local;
    if (local && core.localDiskUsable()) {
      core.counters.lo++;
      try {
        const buf = await local.data.read(offset, length);
        core.counters.dr += length;
        return buf;
      } catch (err) {
        if ((await core.localIoError(err, 'read')) === 'passed')
          throw eio(`local read failed: ${(err as Error).message}`);
      } finally {
        core.counters.lo--;
      }
    }
    return this.readFromPeer(offset, length);
  }

  private async readFromPeer(offset: number, length: number): Promise<Buffer> {
    const core = this.#core;
    const c = core.conn;
    if (!c || !this.peerServesData()) throw eio(`${core.config.name}: no local disk and no UpToDate peer to read from`);
    const id = this.#nextReadId++ >>> 0;
    const w = deferred<{ errno: number; data: Buffer } | undefined>();
    this.#peerReads.set(id, w);
    core.counters.pe++;
    core.send(c, { type: 'read-req', id, offset, length });
    const r = await w.promise;
    core.counters.pe--;
    if (r?.errno !== 0 || r.data.length !== length) throw eio(`${core.config.name}: reading through the peer failed`);
    core.counters.nr += length;
    return r.data;
  }

  onReadReply(id: number, errno: number, data: Buffer): void {
    this.#peerReads.get(id)?.resolve({ errno, data });
    this.#peerReads.delete(id);
  }

  async write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.checkRange(offset, data.length);
    await this.submit(
      offset,
      data.length,
      fua,
      (file) => this.localWrite(file, offset, data, fua),
      (seq) => ({ type: 'data', seq, fua, offset, data, payload: data }),
      data.length,
    );
  }

  /**
   * TRIM and WRITE_ZEROES (NBD): afterwards the range reads as zeroes on both nodes, as
   * DRBD mirrors discards. `punch`: give the space back (TRIM, or WRITE_ZEROES without
   * NBD_CMD_FLAG_NO_HOLE). The same life as a write (conflict lock, activity log, transfer
   * log, the protocol's ack rule, out-of-sync bits when the peer misses it), with a ZERO
   * frame instead of the data. A trim of a whole device goes in ZERO_PIECE pieces, one
   * after the other, so no piece holds more activity-log extents than a large write.
   */
  async zero(offset: number, length: number, fua: boolean, punch: boolean): Promise<void> {
    this.checkRange(offset, length);
    for (let at = 0; at < length; at += ZERO_PIECE) {
      const o = offset + at;
      const n = Math.min(ZERO_PIECE, length - at);
      await this.submit(
        o,
        n,
        fua,
        (file) => zeroLocally(this.#core, file, o, n, fua, punch),
        (seq) => ({ type: 'zero', seq, fua, punch, offset: o, length: n }),
        0,
      );
    }
  }

  /**
   * One application write (data or zeroes), steps 1-7 above. `toDisk` puts it on our disk;
   * `message` is the mirrored frame; `sentBytes` counts towards `ns`.
   */
  private async submit(
    offset: number,
    length: number,
    fua: boolean,
    toDisk: (file: BlockFile) => Promise<void>,
    message: (seq: number) => PeerMessage,
    sentBytes: number,
  ): Promise<void> {
    const core = this.#core;
    core.lastAppIo = core.world.clock.now();
    // The latency metric only, never a decision: the injected clock is in whole milliseconds.
    const started = performance.now();
    await this.#submit(offset, length, fua, toDisk, message, sentBytes);
    this.latency.observe((performance.now() - started) / 1000);
  }

  async #submit(
    offset: number,
    length: number,
    fua: boolean,
    toDisk: (file: BlockFile) => Promise<void>,
    message: (seq: number) => PeerMessage,
    sentBytes: number,
  ): Promise<void> {
    const core = this.#core;
    await this.passFreeze();
    this.requirePrimary();
    core.counters.ap++;
    const release = await core.lock.acquire(offset, length);
    let local = core.localDiskUsable() ? core.local : undefined;
    try {
      await local?.al.begin(offset, length);
      if (local) core.counters.al = local.al.transactions;
    } catch (err) {
      // The activity log could not be made durable (its own write, or the data sync an
      // eviction needs): a failed disk like any other. A sync that failed may have dropped
      // what it was to make durable (Linux marks the pages clean), so the disk is not
      // trusted on; detached, the write goes on to the peer alone, as DRBD's would.
      if (!local || (await core.localIoError(err, 'activity log')) !== 'detached' || !core.conn) {
        release();
        core.counters.ap--;
        throw err;
      }
      local = undefined;
    }
    // The activity-log reference: dropped at completion for a local-only write, or handed
    // to the transfer log (dropped when the peer made the epoch durable) for a mirrored one.
    let alHeld = local !== undefined;
    try {
      let c = this.peerTakesWrites();
      if (c && c.queuedBytes > SEND_QUEUE_HIGH) {
        await c.whenQueuedBelow(SEND_QUEUE_LOW);
        c = this.peerTakesWrites();
      }
      const req = c ? this.mirror(c, offset, length, fua, message, sentBytes) : undefined;
      if (req && local) alHeld = false;
      // true: on the local disk; false: the disk failed and was detached (the peer must have it).
      // A mirrored request's DATA frame leaves first (afterFlush): the peer's write overlaps ours.
      const onDisk = local
        ? (req && c ? c.afterFlush(() => toDisk(local.data)) : toDisk(local.data)).then(
            () => true,
            async (err: unknown) => {
              if ((await core.localIoError(err, 'write')) === 'passed')
                throw eio(`local write failed: ${(err as Error).message}`);
              return false;
            },
          )
        : Promise.resolve(false);
      if (!req) {
        // Out of sync from the moment it is not mirrored, before our disk has it: a handshake
        // that starts while this write is in flight must carry its bit in the bitmap it sends
        // (DRBD drains application I/O before it sends the bitmap, for the same reason).
        const preset = this.setOutOfSync(offset, length);
        if (!(await onDisk)) throw eio(`${core.config.name}: the write reached neither the local disk nor the peer`);
        await this.markOutOfSync(offset, length, preset);
        this.requireLocalCopy();
        // Not on the peer: with fencing, the application hears back only once the peer is
        // fenced (I/O may have frozen after this write passed the gate at its start).
        await this.passFreeze();
        return;
      }
      const wrote = await onDisk;
      const p = core.config.protocol;
      // Without a local copy, only the peer's disk holds this write: wait for it whatever the
      // protocol, and until its epoch is durable there (closed now, not at its age). The peer
      // answers that epoch only after the state saying our disk is gone, and only once the
      // new data generation it starts for it is on its disk (seed 23694: acknowledged on the
      // WRITE_ACK alone, the peer's disk then failed to record that generation, and after a
      // restart of both our stale disk looked newer and the resync overwrote the write).
      if (!wrote && this.#tl.openEpoch.number === req.epoch) this.closeEpoch('the only copy is on the peer');
      const ok = await (!wrote
        ? req.when('written').then((w) => w && req.when('durable'))
        : req.when(p === 'C' ? 'written' : p === 'A' ? 'sent' : 'received'));
      if (!ok && !wrote) throw eio(`${core.config.name}: the write reached neither the local disk nor the peer`);
      if (!ok) {
        await this.markOutOfSync(offset, length);
        this.requireLocalCopy();
        // The peer did not confirm it: with fencing, the application hears back only once the peer is fenced.
        await this.passFreeze();
      }
      await this.passLossGate();
    } finally {
      if (alHeld) local?.al.complete(offset, length);
      release();
      core.counters.ap--;
    }
  }

  private mirror(
    c: PeerConnection,
    offset: number,
    length: number,
    fua: boolean,
    message: (seq: number) => PeerMessage,
    sentBytes: number,
  ): TlRequest {
    const core = this.#core;
    const seq = this.#nextSeq++ >>> 0;
    const req = this.#tl.add(seq, offset, length, core.world.clock.now());
    core.counters.pe++;
    core.counters.ns += sentBytes;
    core.send(c, message(seq), () => req.settle('sent', true));
    const open = this.#tl.openEpoch;
    const net = core.config.net;
    if (fua || open.writes >= net.maxEpochSize || open.bytes >= net.maxEpochBytes) this.closeEpoch('size or FUA');
    else if (open.writes === 1) this.armEpochTimer(open.number);
    return req;
  }

  private armEpochTimer(epoch: number): void {
    this.#epochTimer?.cancel();
    this.#epochTimer = this.#core.world.clock.after(this.#core.config.net.maxEpochAgeMs, () => {
      this.#epochTimer = undefined;
      if (this.#tl.openEpoch.number === epoch) this.closeEpoch('age');
    });
  }

  /**
   * Closes the open epoch (if it has writes) with a BARRIER; returns its number.
   * Also called when the activity log is full: its extents wait for the peer's acknowledgement.
   */
  closeEpoch(_why: string): number | undefined {
    const c = this.#tlConn;
    if (!c || c !== this.#core.conn) return undefined;
    const epoch = this.#tl.close();
    if (epoch === undefined) return undefined;
    this.#epochTimer?.cancel();
    this.#epochTimer = undefined;
    this.#core.counters.ep++;
    this.#core.send(c, { type: 'barrier', epoch });
    return epoch;
  }

  private async localWrite(file: BlockFile, offset: number, data: Buffer, fua: boolean): Promise<void> {
    const core = this.#core;
    core.counters.lo++;
    try {
      await file.write(offset, data);
      if (fua) await file.datasync();
      core.counters.dw += data.length;
    } finally {
      core.counters.lo--;
    }
  }

  /**
   * A write that only the local disk holds: if that disk was detached meanwhile (an I/O
   * error, so it will come back Inconsistent), no copy anyone trusts holds it.
   */
  private requireLocalCopy(): void {
    if (!this.#core.localDiskUsable())
      throw eio(`${this.#core.config.name}: the local disk failed and the peer does not have this write`);
  }

  /** Marks a range out of sync; completions after a lost link wait for its bits and generation. */
  /** Sets the range's bits in memory; returns how many were newly set. */
  private setOutOfSync(offset: number, length: number): number {
    const local = this.#core.local;
    if (local === undefined || !this.#core.localDiskUsable()) return 0;
    return local.md.bitmap.setRange(Math.floor(offset / BLOCK_SIZE), Math.ceil((offset + length) / BLOCK_SIZE));
  }

  /** `preset`: bits this request already set (setOutOfSync) that still have to reach the disk. */
  async markOutOfSync(offset: number, length: number, preset = 0): Promise<void> {
    // The bit first: the data is on this disk whatever happens to the request now.
    const added = preset + this.setOutOfSync(offset, length);
    await this.passLossGate();
    // The page cache is enough: the write's extent stays in the activity log until it
    // completes, and an extent leaves the log only after the bitmap is durable.
    if (added > 0) await this.#core.persistBitmap(false);
  }

  /**
   * FLUSH: every write completed before it is durable on this node and, when
   * connected (protocol C), on the peer too.
   */
  async flush(): Promise<void> {
    const core = this.#core;
    await this.passFreeze();
    this.requirePrimary();
    const c = this.peerTakesWrites();
    let peer: Promise<boolean> | undefined;
    if (c) {
      const epoch = this.closeEpoch('flush') ?? this.#tl.newestClosed;
      peer = epoch === undefined ? Promise.resolve(true) : this.waitEpoch(epoch);
    }
    const local = core.local;
    if (local && core.localDiskUsable()) {
      try {
        await core.persistBitmap(false);
        await local.data.datasync();
        if (local.md.file !== local.data) await local.md.file.datasync();
      } catch (err) {
        if ((await core.localIoError(err, 'flush')) === 'passed')
          throw eio(`local flush failed: ${(err as Error).message}`);
      }
    }
    const waitsForPeer = peer !== undefined && (core.config.protocol === 'C' || !core.localDiskUsable());
    const peerDurable = waitsForPeer ? await peer : false;
    if (!core.localDiskUsable() && !peerDurable)
      throw eio(`${core.config.name}: flush reached neither the local disk nor the peer`);
    // The peer was lost meanwhile: with fencing, the application hears back only once it is fenced.
    if (waitsForPeer && !peerDurable) await this.passFreeze();
    await this.passLossGate();
  }

  private waitEpoch(epoch: number): Promise<boolean> {
    let w = this.#epochWaiters.get(epoch);
    if (!w) {
      w = deferred<boolean>();
      this.#epochWaiters.set(epoch, w);
    }
    return w.promise;
  }

  // --- the peer's answers ---------------------------------------------------------

  onAck(seq: number, what: 'received' | 'written'): void {
    const req = this.#tl.get(seq);
    if (!req) return;
    req.settle('received', true);
    req.settle('sent', true);
    if (what === 'written' && !req.isSettled('written')) {
      req.settle('written', true);
      this.#core.counters.pe--;
    }
  }

  /** The peer could not write it: out of sync, and the write completes (it is on our disk). */
  onNegAck(seq: number): void {
    const req = this.#tl.get(seq);
    if (!req || req.isSettled('written')) return;
    this.#core.counters.pe--;
    this.#core.log.warn({ offset: req.offset, length: req.length }, 'Peer failed to write a block; marked out of sync');
    // The write completes as written locally only: out of sync first (if the bit cannot be
    // written, the write path tries again and fails the write).
    const marked = this.markOutOfSync(req.offset, req.length).finally(() => {
      req.settle('sent', true);
      req.settle('received', true);
      req.settle('written', false);
    });
    this.#core.spawn('marking a block the peer could not write', marked, true);
  }

  /** The peer made a whole epoch durable (or could not): its writes leave the transfer log. */
  onBarrierAck(epoch: number, writes: number, errno: number): void {
    const r = this.#tl.ack(epoch, writes);
    if (!r.ok) throw new PeerProtocolError(r.problem);
    const local = this.#core.local;
    const release = (): void => {
      for (const q of r.requests) local?.al.complete(q.offset, q.length);
    };
    if (errno === 0) release();
    else {
      this.#core.log.warn(
        { epoch, writes, errno },
        'Peer could not make an epoch durable; marked its writes out of sync',
      );
      for (const q of r.requests)
        local?.md.bitmap.setRange(Math.floor(q.offset / BLOCK_SIZE), Math.ceil((q.offset + q.length) / BLOCK_SIZE));
      this.holdCompletions(this.#core.persistBitmap(true).then(release));
    }
    for (const q of r.requests) q.settle('durable', errno === 0);
    this.#epochWaiters.get(epoch)?.resolve(errno === 0);
    this.#epochWaiters.delete(epoch);
  }
}
