// Online verify (VerifyS → VerifyT): the source compares every block's digest with
// the peer's. Mismatches are marked out of sync on both sides; a reconnect or
// `invalidate` repairs them. Each chunk stays locked from the source's read until
// the peer's answer, so an application write cannot make a false mismatch.
import { BLOCK_SIZE } from './bitmap.ts';
import type { Core } from './core.ts';
import { deferred, type Deferred } from './deferred.ts';
import { blockDigests, digestSize } from './digest.ts';
import type { Receiver } from './receiver.ts';
import { RS_CHUNK_BLOCKS, type SyncProgress } from './resync.ts';
import type { PeerConnection } from './world.ts';

/** Chunks whose digests are with the peer at once. */
const VERIFY_WINDOW = 8;

export class Verify {
  readonly #core: Core;
  readonly #receiver: Receiver;
  #doneBytes = 0;
  #oosBlocks = 0;
  #started = 0;
  readonly #inflight = new Map<number, { release: () => void; length: number }>();
  #wake: Deferred<void> | undefined;

  constructor(core: Core, receiver: Receiver) {
    this.#core = core;
    this.#receiver = receiver;
  }

  onConnectionLost(): void {
    for (const v of this.#inflight.values()) v.release();
    this.#inflight.clear();
    this.#wake?.resolve();
  }

  /** Starts as VerifyS (the caller checked the preconditions and committed VerifyS). */
  start(c: PeerConnection, alg: string): void {
    this.reset();
    this.#core.send(c, { type: 'state', state: { verifyStart: true } });
    this.run(c, alg).catch((err: unknown) => {
      const core = this.#core;
      core.log.error({ err }, 'The online verify failed');
      core.spawn(
        'on-io-error',
        core
          .localIoError(err, 'online verify')
          .finally(() => c.close('NetworkFailure', `online verify failed: ${(err as Error).message}`)),
      );
    });
  }

  /** The peer started verifying against us (VerifyT). */
  reset(): void {
    this.#doneBytes = 0;
    this.#oosBlocks = 0;
    this.#started = this.#core.world.clock.now();
  }

  private async run(c: PeerConnection, alg: string): Promise<void> {
    const core = this.#core;
    const local = core.local!;
    const chunk = RS_CHUNK_BLOCKS * BLOCK_SIZE;
    for (let offset = 0; offset < core.size; offset += chunk) {
      while (this.#inflight.size >= VERIFY_WINDOW && core.conn === c) {
        this.#wake = deferred();
        await this.#wake.promise;
      }
      if (core.conn !== c || core.state.conn !== 'VerifyS') return;
      const length = Math.min(chunk, core.size - offset);
      const release = await core.lock.acquire(offset, length);
      let data: Buffer;
      try {
        data = await local.data.read(offset, length);
      } catch (err) {
        release();
        throw err;
      }
      core.counters.dr += length;
      // The connection may have ended while we waited for the lock or the read: its
      // loss released what was in flight then, so this chunk's lock is ours to release
      // (seed 8283: it stayed held and the next resync waited for it forever).
      if (core.conn !== c || core.state.conn !== 'VerifyS') {
        release();
        return;
      }
      this.#inflight.set(offset, { release, length });
      core.send(c, { type: 'verify-req', offset, length, digests: blockDigests(alg, data, BLOCK_SIZE) });
    }
    while (this.#inflight.size > 0 && core.conn === c) {
      this.#wake = deferred();
      await this.#wake.promise;
    }
    if (core.conn !== c) return;
    await core.persistBitmap(true);
    const oos = this.#oosBlocks;
    core.log.info(
      { oosBlocks: oos, seconds: (core.world.clock.now() - this.#started) / 1000 },
      `Online verify done: ${oos * 4} KiB out of sync`,
    );
    core.send(c, { type: 'state', state: { verifyDone: { oosBlocks: oos } } });
    core.fact({ conn: 'Connected' }, `online verify finished: ${oos} blocks out of sync`);
    if (oos > 0) core.spawn('the out-of-sync handler', core.handler('out-of-sync'));
  }

  /** VerifyT: our digests against the peer's; mismatches are marked out of sync here too. */
  onRequest(c: PeerConnection, offset: number, length: number, digests: Buffer): void {
    const core = this.#core;
    this.#receiver.checkRange(offset, length, 'verify request');
    const alg = (core.config.net.verifyAlg ?? 'sha1').toLowerCase();
    const lock = core.lock.acquire(offset, length);
    const work = (async () => {
      const release = await lock;
      try {
        const local = core.local;
        if (!local) return;
        const ours = blockDigests(alg, await local.data.read(offset, length), BLOCK_SIZE);
        const n = digestSize(alg);
        const blocks = Math.ceil(length / BLOCK_SIZE);
        const mismatch = Buffer.alloc(Math.ceil(blocks / 8));
        for (let i = 0; i < blocks; i++) {
          if (!ours.subarray(i * n, (i + 1) * n).equals(digests.subarray(i * n, (i + 1) * n))) {
            mismatch[i >> 3]! |= 1 << (i & 7);
            local.md.bitmap.setRange(offset / BLOCK_SIZE + i, offset / BLOCK_SIZE + i + 1);
          }
        }
        this.#doneBytes += length;
        if (c === core.conn) core.send(c, { type: 'verify-reply', offset, length, mismatch });
      } catch (err) {
        core.log.error({ err, offset }, 'Reading for online verify failed');
        if (core.localDiskUsable()) core.spawn('on-io-error', core.localIoError(err, 'online verify'));
      } finally {
        release();
      }
    })();
    core.spawn('answering a verify request', work);
  }

  onReply(offset: number, length: number, mismatch: Buffer): void {
    const entry = this.#inflight.get(offset);
    if (!entry) return;
    this.#inflight.delete(offset);
    const bm = this.#core.local?.md.bitmap;
    const blocks = Math.ceil(length / BLOCK_SIZE);
    for (let i = 0; i < blocks; i++) {
      if (((mismatch[i >> 3] ?? 0) >> (i & 7)) & 1) {
        bm?.setRange(offset / BLOCK_SIZE + i, offset / BLOCK_SIZE + i + 1);
        this.#oosBlocks++;
        this.#core.log.warn({ offset: offset + i * BLOCK_SIZE }, 'Online verify found a block out of sync');
      }
    }
    this.#doneBytes += length;
    entry.release();
    this.#wake?.resolve();
  }

  progress(): SyncProgress {
    const core = this.#core;
    const elapsed = (core.world.clock.now() - this.#started) / 1000;
    const speed = elapsed > 0 ? this.#doneBytes / elapsed : 0;
    const remaining = Math.max(0, core.size - this.#doneBytes);
    return {
      percent: Math.floor((this.#doneBytes / Math.max(1, core.size)) * 1000) / 10,
      remainingBytes: remaining,
      totalBytes: core.size,
      etaSeconds: speed > 0 ? Math.round(remaining / speed) : undefined,
      speedKiBps: Math.round(speed / 1024),
      averageKiBps: Math.round(speed / 1024),
      paused: false,
    };
  }
}
