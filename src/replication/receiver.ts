// The Secondary's side of replication: writes from the peer (mirrored DATA and the
// resync's RS_DATA/RS_ZERO), the barriers that close the Primary's epochs, and
// reads for a Diskless Primary.
//
// A write from the peer: its range is registered in the conflict lock when it
// arrives (so overlapping writes land in arrival order, the order the Primary
// applied them), it is written once earlier overlapping writes are done (and, on a
// new SyncTarget, once Inconsistent is on disk), then answered. A BARRIER closes
// the receive epoch: once every write of the epoch is on the local disk, the disk
// is synced and BARRIER_ACK says the epoch is durable (or, if the sync failed, that
// it is not: the Primary keeps those blocks out of sync). Acks go out in epoch order.
//
// Back-pressure (DRBD's max-buffers): while more than max-buffers pages received
// from the peer wait for the local disk, the receiver stops reading from the
// connection; TCP then holds the Primary back, whose send queue fills and makes new
// application writes wait. Memory stays bounded on both sides.
import { eio, type Core, zeroLocally } from './core.ts';
import { PeerProtocolError } from './messages.ts';
import type { PeerConnection } from './world.ts';

const PAGE = 4096;

export class Receiver {
  readonly #core: Core;
  /** The current receive epoch's writes: true once on the local disk, false if that failed. */
  #epochWrites: Promise<boolean>[] = [];
  #ackChain: Promise<void> = Promise.resolve();
  /** Writes received from the peer that are not yet on the local disk (any epoch, resync included). */
  readonly #inflight = new Set<Promise<boolean>>();
  #inflightBytes = 0;
  #paused: PeerConnection | undefined;
  /** Held back on a new SyncTarget until its Inconsistent state is on disk (see Resync.prepareTarget). */
  gate: Promise<void> = Promise.resolve();
  /** secondaryInd on disk, once per attach, before the first write from the peer lands. */
  #indicated: Promise<void> | undefined;

  constructor(core: Core) {
    this.#core = core;
  }

  onAttached(): void {
    this.#indicated = undefined;
  }

  /** The first write from the peer after attach records secondaryInd first (see metadata.ts). */
  private indicate(): Promise<void> {
    const local = this.#core.local;
    if (!local) return Promise.resolve();
    const bootId = this.#core.world.host.bootId();
    this.#indicated ??=
      local.md.has('secondaryInd') && local.md.sb.bootId === bootId
        ? Promise.resolve()
        : local.md.update({ set: ['secondaryInd'], bootId });
    return this.#indicated;
  }

  onConnected(): void {
    this.#epochWrites = [];
    this.#ackChain = Promise.resolve();
    this.#paused = undefined;
  }

  /** Every write received so far is on the local disk (or failed). */
  async drain(): Promise<void> {
    await Promise.all([...this.#inflight]);
  }

  /** Checks a range the peer names against our disk before anything is allocated or touched. */
  checkRange(offset: number, length: number, what: string): void {
    if (offset < 0 || length < 0 || offset % 512 !== 0 || offset + length > this.#core.capacity)
      throw new PeerProtocolError(`${what} [${offset}, +${length}) outside our disk of ${this.#core.capacity} bytes`);
  }

  onData(c: PeerConnection, seq: number, offset: number, data: Buffer, payload: Buffer, fua: boolean): void {
    const core = this.#core;
    this.checkRange(offset, data.length, 'peer write');
    core.counters.nr += data.length;
    if (core.config.protocol === 'B') core.send(c, { type: 'recv-ack', seq });
    const done = this.receive(
      c,
      offset,
      data.length,
      async (file) => {
        await core.saveBeforeOverwrite(offset, data.length);
        core.counters.lo++;
        try {
          await file.write(offset, data);
          if (fua) await file.datasync();
          core.counters.dw += data.length;
        } finally {
          core.counters.lo--;
        }
        core.payloads.give(payload); // on disk: nothing refers to it any more (after a failure it is simply dropped)
        // A Primary without a disk of its own writes only here (DRBD: "we have the only
        // disk of the cluster"): the blocks are marked for when its disk comes back.
        await this.onlyCopy(offset, data.length, fua);
      },
      (ok) => (ok ? { type: 'write-ack', seq } : { type: 'neg-ack', seq, errno: -5 }),
    );
    this.#epochWrites.push(done);
  }

  /**
   * ZERO: a mirrored TRIM or WRITE_ZEROES. Our copy of the range must read as zeroes too
   * (the two disks stay identical, whatever the storage under each does with a discard),
   * so it is applied like a write of zeroes: in order, acknowledged by the same rules, in
   * the current epoch; `punch` gives the space back where the storage can.
   */
  onZero(c: PeerConnection, seq: number, offset: number, length: number, fua: boolean, punch: boolean): void {
    const core = this.#core;
    this.checkRange(offset, length, 'peer zeroes');
    if (core.config.protocol === 'B') core.send(c, { type: 'recv-ack', seq });
    const done = this.receive(
      c,
      offset,
      length,
      async (file) => {
        await core.saveBeforeOverwrite(offset, length);
        await zeroLocally(core, file, offset, length, fua, punch);
        await this.onlyCopy(offset, length, fua);
      },
      (ok) => (ok ? { type: 'write-ack', seq } : { type: 'neg-ack', seq, errno: -5 }),
      0,
    );
    this.#epochWrites.push(done);
  }

  /**
   * After a write from a Primary whose own disk is gone: this disk holds the only copy. The
   * range is marked for when its disk comes back, and the write is acknowledged only once
   * the new data generation this node started when that disk went is on disk (seed 23694:
   * acknowledged before it, then that record failed, and after a restart of both the
   * Primary's stale disk looked newer and the resync overwrote the write). A failed record
   * fails the write (NEG_ACK): nothing then holds it for sure.
   */
  private async onlyCopy(offset: number, length: number, fua: boolean): Promise<void> {
    const core = this.#core;
    const p = core.state.peerDisk;
    if (p !== 'Diskless' && p !== 'Failed') return;
    core.local?.md.bitmap.setRange(Math.floor(offset / 4096), Math.ceil((offset + length) / 4096));
    await core.persistBitmap(fua);
    await core.newGenerationRecorded();
  }

  /** BARRIER: the epoch's writes made durable, then acknowledged (in epoch order). */
  onBarrier(c: PeerConnection, epoch: number): void {
    const core = this.#core;
    const writes = this.#epochWrites;
    this.#epochWrites = [];
    this.#ackChain = this.#ackChain.then(async () => {
      await Promise.all(writes);
      let errno = 0;
      const local = core.local;
      if (!local || !core.localDiskUsable()) errno = -5;
      else {
        try {
          await local.data.datasync();
          // Bits this node set for a disk-less Primary live on the metadata device.
          if (local.md.file !== local.data) await local.md.file.datasync();
          // Our disk holds writes the Primary's lacks: the generation that says so comes first.
          const p = core.state.peerDisk;
          if (p === 'Diskless' || p === 'Failed') await core.newGenerationRecorded();
        } catch (err) {
          errno = -5;
          core.log.error({ err, epoch }, 'Could not make an epoch durable');
          core.spawn('on-io-error', core.localIoError(err, 'flush of an epoch'));
        }
      }
      if (c === core.conn) core.send(c, { type: 'barrier-ack', epoch, writes: writes.length, errno });
    });
    core.spawn(`acknowledging epoch ${epoch}`, this.#ackChain);
  }

  /**
   * A write from the peer (mirrored or resync). `write` runs once the range's turn came;
   * `answer` is sent when it is done. Resolves true once the data is on the local disk.
   */
  receive(
    c: PeerConnection,
    offset: number,
    length: number,
    write: (file: NonNullable<Core['local']>['data']) => Promise<void>,
    answer: (ok: boolean) => Parameters<Core['send']>[1],
    /** Received bytes held in memory until written (max-buffers); a ZERO holds none. */
    held = length,
  ): Promise<boolean> {
    const core = this.#core;
    core.counters.ua++;
    this.#took(c, held);
    const lock = core.lock.acquire(offset, length);
    const work = (async (): Promise<boolean> => {
      const release = await lock;
      let ok = true;
      try {
        await this.gate;
        const local = core.local;
        if (!local || !core.localDiskUsable()) throw eio('no local disk');
        await this.indicate();
        await write(local.data);
      } catch (err) {
        ok = false;
        core.log.error({ err, offset, length }, 'Local write of a request from the peer failed');
        if (core.localDiskUsable()) core.spawn('on-io-error', core.localIoError(err, 'mirrored write'));
      } finally {
        release();
        core.counters.ua--;
        this.#gave(held);
      }
      if (c === core.conn) core.send(c, answer(ok));
      return ok;
    })();
    this.#inflight.add(work);
    void work.finally(() => this.#inflight.delete(work));
    return work;
  }

  #took(c: PeerConnection, bytes: number): void {
    this.#inflightBytes += bytes;
    if (this.#paused === undefined && this.#inflightBytes > this.#core.config.net.maxBuffers * PAGE) {
      this.#paused = c;
      c.pauseReading();
    }
  }

  #gave(bytes: number): void {
    this.#inflightBytes -= bytes;
    if (this.#paused !== undefined && this.#inflightBytes <= (this.#core.config.net.maxBuffers * PAGE) / 2) {
      const c = this.#paused;
      this.#paused = undefined;
      c.resumeReading();
    }
  }

  /** READ_REQ from a Diskless Primary: served from our disk under the conflict lock. */
  onReadRequest(c: PeerConnection, id: number, offset: number, length: number): void {
    const core = this.#core;
    this.checkRange(offset, length, 'peer read');
    const lock = core.lock.acquire(offset, length);
    const work = (async () => {
      const release = await lock;
      let errno = 0;
      let data: Buffer = Buffer.alloc(0);
      try {
        const local = core.local;
        if (!local || !core.localDiskUsable()) throw eio('no local disk');
        data = await local.data.read(offset, length);
        core.counters.dr += length;
        core.counters.ns += length;
      } catch (err) {
        if (core.localDiskUsable()) core.spawn('on-io-error', core.localIoError(err, 'read for the peer'));
        errno = -5;
      } finally {
        release();
      }
      if (c === core.conn) core.send(c, { type: 'read-reply', id, errno, data });
    })();
    core.spawn('a read for the peer', work);
  }
}
