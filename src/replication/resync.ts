// Resync: after the connect plan named a SyncSource and a SyncTarget, both sides
// exchange their bitmaps (OR-merged: a block either side may have changed moves)
// and the source pushes every marked block.
//
// Source: walks the bitmap; each chunk is read under the conflict lock and queued
// on the link before the lock is released, so a later application write to the
// same blocks reaches the target after the resync data, never before. A run of
// zeroes travels as its range only; with csums-alg only blocks whose digests
// differ travel. A bit is cleared when the target answers RS_ACK.
//
// Target: before the first block lands, its Inconsistent state (and the merged
// bitmap) is on disk, the before-resync-target handler ran, and a split-brain
// victim's save file is open. Its own bits are cleared as blocks land, and reach
// the disk only after the data behind them is durable (Metadata.writeDirtyBitmap):
// a power loss mid-resync leaves its bits set, and the next bitmap exchange brings
// the lost blocks back even though the source already cleared them. At the end it
// syncs its data, then records UpToDate and the source's generation, then answers
// SYNC_DONE_ACK; the source then retires its bitmap generation.
import { BLOCK_SIZE, Bitmap, decodeRle, encodeRle } from './bitmap.ts';
import type { Core } from './core.ts';
import { deferred, type Deferred } from './deferred.ts';
import { blockDigests, digestSize, isSupportedAlg } from './digest.ts';
import { DiscardSave } from './discard-save.ts';
import type { MdFlag } from './metadata.ts';
import type { UuidsJson } from './messages.ts';
import type { Receiver } from './receiver.ts';
import { APP_ACTIVE_WINDOW_MS, resyncRateNow } from './resync-rate.ts';
import { isSyncSource, isSyncing } from './states.ts';
import { finishSyncSource, finishSyncTarget, randomUuid, uuidsFromJson, uuidsToJson } from './uuids.ts';
import type { PeerConnection } from './world.ts';

/** Resync chunks: at most this many contiguous 4 KiB blocks per RS_DATA. */
export const RS_CHUNK_BLOCKS = 256;
/** Resync bytes in flight (sent, not yet acked by the target). */
const RS_WINDOW_BYTES = 32 * 1024 * 1024;
const BITMAP_FRAME_BYTES = 64 * 1024;

export interface SyncProgress {
  percent: number;
  remainingBytes: number;
  totalBytes: number;
  etaSeconds: number | undefined;
  speedKiBps: number;
  averageKiBps: number;
  paused: boolean;
}

const ZEROES = Buffer.alloc(RS_CHUNK_BLOCKS * BLOCK_SIZE);

export function isZero(data: Buffer): boolean {
  for (let off = 0; off < data.length; off += ZEROES.length) {
    const part = data.subarray(off, off + ZEROES.length);
    if (!part.equals(ZEROES.subarray(0, part.length))) return false;
  }
  return true;
}

export class Resync {
  readonly #core: Core;
  readonly #receiver: Receiver;
  #peerBitmapChunks: Buffer[] = [];
  #inflight = new Map<number, number>();
  #inflightBytes = 0;
  #wake: Deferred<void> | undefined;
  #totalBytes = 0;
  #doneBytes = 0;
  #started = 0;
  #samples: [number, number][] = [];
  #tokens = 0;
  #tokenTime = 0;
  /** csums-alg: chunks whose digests are with the target, locked until it answers. */
  readonly #csumPending = new Map<number, { release: () => void; data: Buffer }>();
  /** A split-brain victim's save of its own blocks, kept across reconnects until a resync finishes. */
  #discard: DiscardSave | undefined;
  /** The last finished save. */
  lastSaved: string | undefined;

  constructor(core: Core, receiver: Receiver) {
    this.#core = core;
    this.#receiver = receiver;
  }

  // --- connection lifecycle --------------------------------------------------

  onConnected(): void {
    this.#peerBitmapChunks = [];
  }

  onConnectionLost(): void {
    this.#inflight.clear();
    this.#inflightBytes = 0;
    this.#wake?.resolve();
    for (const v of this.#csumPending.values()) v.release();
    this.#csumPending.clear();
  }

  /** Wakes the source loop (resume-sync, a window opened). */
  wake(): void {
    this.#wake?.resolve();
  }

  /**
   * The plan made this node SyncTarget: before the first block lands, Inconsistent and the
   * bitmap on disk, the handler, the save file. Runs as the receiver's gate.
   */
  prepareTarget(saveDiscarded: boolean): void {
    const core = this.#core;
    this.setGate('preparing the resync target', async () => {
      const md = core.local!.md;
      await core.persistBitmap(true);
      if (md.has('consistent')) await md.update({ clear: ['consistent', 'wasUpToDate'] });
      await core.handler('before-resync-target');
      if (saveDiscarded && !this.#discard) {
        this.#discard = await DiscardSave.start(
          { dir: core.config.disk.discardedDataDir, resource: core.config.name, node: core.self.name, size: core.size },
          core.world,
          core.log,
        );
      }
    });
  }

  /**
   * Chains `step` onto the receiver's gate: writes from the peer wait for it. If it
   * fails, the writes behind it fail too (answered NEG_ACK), and the failure is a local
   * disk error.
   */
  private setGate(what: string, step: () => Promise<void>): void {
    const gate = this.#receiver.gate.then(step);
    this.#receiver.gate = gate;
    this.#core.spawn(what, gate, true);
  }

  /** A full sync gets its own generation: the target carries it until the end, so an interruption resumes with a bitmap resync. */
  startFullSource(c: PeerConnection): void {
    const core = this.#core;
    const md = core.local!.md;
    let uuids = md.sb.uuids;
    if (uuids.bitmap === 0n) uuids = { ...uuids, bitmap: randomUuid(core.world.random) };
    const syncUuid = uuidsToJson(uuids).bitmap;
    core.send(c, { type: 'state', state: { syncUuid } });
    core.spawn(
      'recording the full sync generation',
      core.persistBitmap(true).then(() => md.update((sb) => ({ uuids: { ...sb.uuids, bitmap: uuids.bitmap } }))),
      true,
    );
  }

  /** The source's full-sync generation: adopted as our current once our preparation is on disk. */
  onSyncUuid(uuid: string): void {
    const core = this.#core;
    const current = BigInt(`0x${uuid}`);
    this.setGate('adopting the full sync generation', async () => {
      await core.local!.md.update(({ uuids: old }) => {
        const history: [bigint, bigint] = old.current === 4n ? old.history : [old.current, old.history[0]];
        return { uuids: { current, bitmap: 0n, history } };
      });
    });
  }

  saveBeforeOverwrite(offset: number, length: number): Promise<void> {
    const d = this.#discard;
    const local = this.#core.local;
    if (!d || !local) return Promise.resolve();
    return d.saveBeforeOverwrite(offset, length, local.md.bitmap, local.data);
  }

  // --- the bitmap exchange --------------------------------------------------------

  sendBitmap(c: PeerConnection): void {
    // Only the device's blocks: a disk grown (or simply larger) than the peer's has a longer
    // bitmap than the peer can take, and its bits past the device mean nothing.
    const rle = encodeRle(this.#core.local!.md.bitmap, Math.ceil(this.#core.size / BLOCK_SIZE));
    for (let off = 0; off < rle.length || off === 0; off += BITMAP_FRAME_BYTES) {
      const last = off + BITMAP_FRAME_BYTES >= rle.length;
      this.#core.send(c, { type: 'bitmap', chunk: rle.subarray(off, off + BITMAP_FRAME_BYTES), last });
      if (last) break;
    }
  }

  onBitmap(c: PeerConnection, chunk: Buffer, last: boolean): void {
    const core = this.#core;
    this.#peerBitmapChunks.push(Buffer.from(chunk));
    if (!last) return;
    const rle = Buffer.concat(this.#peerBitmapChunks);
    this.#peerBitmapChunks = [];
    const bm = core.local!.md.bitmap;
    const peerBits = decodeRle(rle, Math.max(bm.bits, Math.ceil(core.peerParams!.capacity / BLOCK_SIZE)));
    const merged = new Bitmap(bm.bits);
    for (let b = peerBits.nextSet(0); b >= 0 && b < bm.bits; b = peerBits.nextSet(b + 1)) {
      const end = Math.min(peerBits.nextClear(b), bm.bits);
      merged.setRange(b, end);
      b = end;
    }
    bm.merge(merged);
    // Bits past the device size mean nothing.
    bm.clearRange(Math.ceil(core.size / BLOCK_SIZE), bm.bits);
    const source = core.state.conn === 'WFBitMapS';
    this.#totalBytes = bm.count * BLOCK_SIZE;
    this.#doneBytes = 0;
    this.#started = core.world.clock.now();
    this.#samples = [[this.#started, 0]];
    core.log.info({ outOfSyncBytes: bm.count * BLOCK_SIZE, exchangedBytes: rle.length }, 'Exchanged bitmaps');
    const paused = core.state.userIsp || core.state.peerIsp;
    if (source) {
      core.fact({ conn: paused ? 'PausedSyncS' : 'SyncSource', peerDisk: 'Inconsistent' }, 'resync started');
      this.run(c).catch((err: unknown) => this.failed(c, err));
    } else {
      // The merged bits are on disk before the first block lands: the source clears its own
      // bit as each block is acknowledged, so after a crash only this side would remember.
      this.setGate('recording the merged bitmap', () => core.persistBitmap(true));
      core.fact({ conn: paused ? 'PausedSyncT' : 'SyncTarget', disk: 'Inconsistent' }, 'resync started');
    }
  }

  private failed(c: PeerConnection, err: unknown): void {
    const core = this.#core;
    core.log.error({ err }, 'The resync failed');
    core.spawn(
      'on-io-error',
      core
        .localIoError(err, 'resync')
        .finally(() => c.close('NetworkFailure', `resync failed: ${(err as Error).message}`)),
    );
  }

  // --- the source ----------------------------------------------------------------

  private async run(c: PeerConnection): Promise<void> {
    const core = this.#core;
    const local = core.local!;
    const bm = local.md.bitmap;
    const sizeBits = Math.ceil(core.size / BLOCK_SIZE);
    let cursor = 0;
    this.#tokens = 0;
    this.#tokenTime = core.world.clock.now();
    // What goes out must be on stable storage here first: the target clears its bits for
    // each block it gets, so a copy that a power loss here could still undo would leave
    // the two disks different with no bit saying so. (Application writes during the
    // resync are covered by the transfer log and the activity log as usual.)
    await local.data.datasync();
    while (core.conn === c && isSyncSource(core.state.conn) && core.localDiskUsable()) {
      if (core.state.conn === 'PausedSyncS' || this.#inflightBytes >= RS_WINDOW_BYTES) {
        this.#wake = deferred();
        await this.#wake.promise;
        continue;
      }
      let bit = bm.nextSet(cursor);
      while (bit >= 0 && this.#inflight.has(bit)) bit = bm.nextSet(bit + 1);
      if (bit < 0 || bit >= sizeBits) {
        if (this.#inflightBytes > 0) {
          this.#wake = deferred();
          await this.#wake.promise;
          continue;
        }
        if (bm.count === 0 || bm.nextSet(0) >= sizeBits || bm.nextSet(0) < 0) break;
        cursor = 0;
        continue;
      }
      const end = Math.min(bm.nextClear(bit), bit + RS_CHUNK_BLOCKS, sizeBits);
      const offset = bit * BLOCK_SIZE;
      const length = Math.min(end * BLOCK_SIZE, core.size) - offset;
      await this.rateLimit(length);
      if (core.conn !== c) return;
      this.#inflight.set(bit, length);
      this.#inflightBytes += length;
      const release = await core.lock.acquire(offset, length);
      try {
        const data = await local.data.read(offset, length);
        core.counters.dr += length;
        if (core.conn !== c) return;
        const csums = core.config.net.csumsAlg?.toLowerCase();
        if (isZero(data)) {
          core.send(c, { type: 'rs-zero', offset, length });
        } else if (csums && isSupportedAlg(csums)) {
          // csums-alg: send digests; only blocks the target lacks travel. The range stays
          // locked until the answer, so no application write can slip between our read and
          // the data we may still send.
          this.#csumPending.set(offset, { release, data });
          core.send(c, { type: 'rs-csum', offset, length, digests: blockDigests(csums, data, BLOCK_SIZE) });
          cursor = end;
          continue;
        } else {
          core.counters.ns += length;
          core.send(c, { type: 'rs-data', offset, data, payload: data });
        }
      } finally {
        if (!this.#csumPending.has(offset)) release();
      }
      cursor = end;
    }
    if (core.conn !== c || !isSyncSource(core.state.conn)) return;
    await core.persistBitmap(true);
    core.log.info(
      { bytes: this.#doneBytes, seconds: (core.world.clock.now() - this.#started) / 1000 },
      'Resync source finished; telling the target',
    );
    core.send(c, { type: 'sync-done', uuids: uuidsToJson(local.md.sb.uuids) });
  }

  /** Token bucket at the rate resyncRateNow allows (fixed, or throttled while the application is busy). */
  private async rateLimit(bytes: number): Promise<void> {
    const core = this.#core;
    for (;;) {
      const now = core.world.clock.now();
      const rate = resyncRateNow(core.config.disk, now - core.lastAppIo < APP_ACTIVE_WINDOW_MS);
      if (!rate) {
        this.#tokenTime = now;
        return;
      }
      this.#tokens = Math.min(rate / 4, this.#tokens + ((now - this.#tokenTime) / 1000) * rate);
      this.#tokenTime = now;
      if (this.#tokens >= bytes || this.#tokens >= rate / 4) {
        this.#tokens -= bytes;
        return;
      }
      await core.world.clock.sleep(Math.max(5, Math.ceil(((bytes - this.#tokens) / rate) * 1000)));
    }
  }

  onRsAck(offset: number, length: number, ok: boolean): void {
    if (!this.#core.localDiskUsable()) return; // detached: its bitmap says "everything", leave it so
    const bit = offset / BLOCK_SIZE;
    const inflight = this.#inflight.get(bit);
    if (inflight !== undefined) {
      this.#inflight.delete(bit);
      this.#inflightBytes -= inflight;
    }
    if (ok) {
      this.#core.local?.md.bitmap.clearRange(bit, Math.ceil((offset + length) / BLOCK_SIZE));
      this.#doneBytes += length;
      this.sampleSpeed();
    }
    this.#wake?.resolve();
  }

  /** csums-alg: equal blocks are done; the differing runs go as RS_DATA, then the range is released. */
  onRsCsumReply(c: PeerConnection, offset: number, length: number, differ: Buffer): void {
    const core = this.#core;
    const pending = this.#csumPending.get(offset);
    if (!pending) return;
    this.#csumPending.delete(offset);
    const bit0 = offset / BLOCK_SIZE;
    const blocks = Math.ceil(length / BLOCK_SIZE);
    const differs = (i: number): boolean => (((differ[i >> 3] ?? 0) >> (i & 7)) & 1) === 1;
    const chunk = this.#inflight.get(bit0);
    if (chunk !== undefined) {
      this.#inflight.delete(bit0);
      this.#inflightBytes -= chunk;
    }
    const bm = core.local?.md.bitmap;
    for (let i = 0; i < blocks; ) {
      if (!differs(i)) {
        bm?.clearRange(bit0 + i, bit0 + i + 1);
        this.#doneBytes += BLOCK_SIZE;
        i++;
        continue;
      }
      let e = i + 1;
      while (e < blocks && differs(e)) e++;
      const data = pending.data.subarray(i * BLOCK_SIZE, Math.min(e * BLOCK_SIZE, length));
      this.#inflight.set(bit0 + i, data.length);
      this.#inflightBytes += data.length;
      core.counters.ns += data.length;
      core.send(c, { type: 'rs-data', offset: offset + i * BLOCK_SIZE, data, payload: data });
      i = e;
    }
    pending.release();
    this.sampleSpeed();
    this.#wake?.resolve();
  }

  /** The target finished: the source's bitmap generation becomes history. */
  async onSyncDoneAck(): Promise<void> {
    const core = this.#core;
    const md = core.local!.md;
    // A crashed Primary's recovery resync is done: the flag has served its purpose.
    const clear: MdFlag[] =
      core.state.role === 'Primary'
        ? ['primaryAtSplit', 'cacheLost']
        : ['crashedPrimary', 'primaryAtSplit', 'cacheLost'];
    await md.update((sb) => ({ uuids: finishSyncSource(sb.uuids), clear }));
    if (isSyncSource(core.state.conn)) core.fact({ conn: 'Connected', peerDisk: 'UpToDate' }, 'resync finished');
  }

  // --- the target -------------------------------------------------------------------

  onRsData(c: PeerConnection, offset: number, data: Buffer, payload: Buffer): void {
    const core = this.#core;
    this.#receiver.checkRange(offset, data.length, 'resync data');
    core.counters.nr += data.length;
    this.#receiver.receive(
      c,
      offset,
      data.length,
      async (file) => {
        await this.saveBeforeOverwrite(offset, data.length);
        await file.write(offset, data);
        core.counters.dw += data.length;
        core.payloads.give(payload);
        core.local?.md.bitmap.clearRange(offset / BLOCK_SIZE, Math.ceil((offset + data.length) / BLOCK_SIZE));
        this.#doneBytes += data.length;
        this.sampleSpeed();
      },
      (ok) => ({ type: ok ? 'rs-ack' : 'rs-neg-ack', offset, length: data.length }),
    );
  }

  onRsZero(c: PeerConnection, offset: number, length: number): void {
    const core = this.#core;
    this.#receiver.checkRange(offset, length, 'resync zeroes');
    this.#receiver.receive(
      c,
      offset,
      length,
      async (file) => {
        await this.saveBeforeOverwrite(offset, length);
        // Already zero (a hole in a thin file, or a blank disk): nothing to write. Otherwise
        // a hole is punched: a thin target stays as thin as its source.
        const current = await file.read(offset, length);
        core.counters.dr += length;
        if (!isZero(current)) {
          await file.zeroRange(offset, length, true);
          core.counters.dw += length;
        }
        core.local?.md.bitmap.clearRange(offset / BLOCK_SIZE, Math.ceil((offset + length) / BLOCK_SIZE));
        this.#doneBytes += length;
        this.sampleSpeed();
      },
      (ok) => ({ type: ok ? 'rs-ack' : 'rs-neg-ack', offset, length }),
    );
  }

  /** SyncTarget, csums-alg: compare the source's digests with ours; equal blocks are in sync already. */
  onRsCsum(c: PeerConnection, offset: number, length: number, digests: Buffer): void {
    const core = this.#core;
    this.#receiver.checkRange(offset, length, 'resync digests');
    const alg = (core.config.net.csumsAlg ?? 'sha1').toLowerCase();
    const lock = core.lock.acquire(offset, length);
    const work = (async () => {
      const release = await lock;
      const blocks = Math.ceil(length / BLOCK_SIZE);
      const differ = Buffer.alloc(Math.ceil(blocks / 8));
      try {
        await this.#receiver.gate;
        const local = core.local!;
        const ours = blockDigests(alg, await local.data.read(offset, length), BLOCK_SIZE);
        core.counters.dr += length;
        const n = digestSize(alg);
        for (let i = 0; i < blocks; i++) {
          if (ours.subarray(i * n, (i + 1) * n).equals(digests.subarray(i * n, (i + 1) * n))) {
            local.md.bitmap.clearRange(offset / BLOCK_SIZE + i, offset / BLOCK_SIZE + i + 1);
            this.#doneBytes += BLOCK_SIZE;
          } else {
            differ[i >> 3]! |= 1 << (i & 7);
          }
        }
      } catch (err) {
        core.log.error({ err, offset }, 'Reading for a checksum comparison failed; asking for all of it');
        differ.fill(0xff);
      } finally {
        release();
      }
      if (c === core.conn) core.send(c, { type: 'rs-csum-reply', offset, length, differ });
    })();
    core.spawn('comparing checksums', work);
  }

  /** SYNC_DONE: every block is here; make it durable, then record UpToDate and the source's generation. */
  async onSyncDone(c: PeerConnection, source: UuidsJson): Promise<void> {
    const core = this.#core;
    // A resync with nothing to move ends before the target's preparation (Inconsistent
    // on disk, the before-resync-target handler) has finished: let it finish first, so
    // the end's UpToDate and new generation are written after it, not undone by it.
    await this.#receiver.gate.catch(() => undefined);
    await this.#receiver.drain();
    const local = core.local!;
    const md = local.md;
    // The data first, then the bitmap that says it is in sync, then the superblock that says UpToDate.
    await local.data.datasync();
    md.bitmap.clearAll();
    await core.persistBitmap(true);
    if (this.#discard) {
      const d = this.#discard;
      this.#discard = undefined;
      this.lastSaved = await d.finish({ resource: core.config.name, node: core.self.name, deviceSize: core.size });
    }
    await md.update((sb) => ({
      uuids: finishSyncTarget(sb.uuids, uuidsFromJson(source)),
      set: ['consistent', 'wasUpToDate'],
      // The target's data is whole again: an unclean stop before it no longer matters.
      clear: ['outdated', 'primaryAtSplit', 'fullSync', 'crashedPrimary', 'cacheLost'],
    }));
    core.spawn('the after-resync-target handler', core.handler('after-resync-target'));
    core.log.info(
      { bytes: this.#doneBytes, seconds: (core.world.clock.now() - this.#started) / 1000 },
      'Resync finished',
    );
    core.synced(c === core.conn);
    if (c !== core.conn) return;
    core.fact({ conn: 'Connected', disk: 'UpToDate', peerDisk: 'UpToDate' }, 'resync finished');
    core.send(c, { type: 'sync-done-ack' });
  }

  /** detach/down: a save in progress is closed with its map, so what it holds can be recovered. */
  async close(): Promise<void> {
    const d = this.#discard;
    this.#discard = undefined;
    if (d)
      this.lastSaved = await d.finish({
        resource: this.#core.config.name,
        node: this.#core.self.name,
        deviceSize: this.#core.size,
      });
  }

  // --- progress -----------------------------------------------------------------------

  private sampleSpeed(): void {
    const now = this.#core.world.clock.now();
    const last = this.#samples[this.#samples.length - 1];
    if (!last || now - last[0] >= 250) {
      this.#samples.push([now, this.#doneBytes]);
      if (this.#samples.length > 40) this.#samples.shift();
    }
  }

  progress(): SyncProgress | undefined {
    const core = this.#core;
    const local = core.local;
    if (!local || !isSyncing(core.state.conn)) return undefined;
    const remaining = local.md.bitmap.count * BLOCK_SIZE;
    const total = Math.max(this.#totalBytes, remaining);
    const now = core.world.clock.now();
    const first = this.#samples.find(([t]) => now - t <= 3000) ?? this.#samples[0] ?? [now, 0];
    const window = (now - first[0]) / 1000;
    const speed = window > 0 ? (this.#doneBytes - first[1]) / window : 0;
    const elapsed = (now - this.#started) / 1000;
    const avg = elapsed > 0 ? this.#doneBytes / elapsed : 0;
    return {
      percent: total === 0 ? 100 : Math.floor(((total - remaining) / total) * 1000) / 10,
      remainingBytes: remaining,
      totalBytes: total,
      etaSeconds: speed > 0 ? Math.round(remaining / speed) : undefined,
      speedKiBps: Math.round(speed / 1024),
      averageKiBps: Math.round(avg / 1024),
      paused: core.state.conn === 'PausedSyncS' || core.state.conn === 'PausedSyncT',
    };
  }
}
