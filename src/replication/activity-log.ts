// The activity log: the set of "hot" 4 MiB extents a Primary may be writing to.
//
// Why: while connected, writes set no bitmap bits (both disks get them). If the
// Primary dies with writes in flight, some of them may be on one disk and not
// the other, and nothing says where. DRBD's answer, and ours: before a write
// lands in an extent, that extent is recorded on disk as active. After a crash,
// every extent in the log is marked out of sync, so the resync is bounded by
// `al-extents` × 4 MiB, not by the device size.
//
// On disk: two slots in the metadata's AL area, written alternately. Each slot
// holds one whole transaction: magic, sequence number, the full list of active
// extents, CRC. A torn write spoils only the slot it hit; the other slot is the
// previous state, and the write that needed the new transaction had not started.
// A transaction is fdatasync'ed before the writes that waited for it proceed.
//
// In memory: an LRU of active extents with a reference count of writes in flight;
// only an extent with no write in flight may leave the log. Writes that need new
// extents at the same time share one transaction (group commit).
import { crc32 } from 'node:zlib';
import { deferred, type Deferred } from './deferred.ts';
import type { BlockFile } from './world.ts';

export const AL_EXTENT_BYTES = 4 * 1024 * 1024;
const TX_MAGIC = Buffer.from('TNDMALTX', 'latin1');
const TX_HEADER = 32;

export interface AlStorage {
  file: BlockFile;
  /** Absolute offset of the AL area on the metadata device. */
  offset: number;
  /** Bytes of the AL area (both slots). */
  bytes: number;
}

export function encodeTransaction(seq: bigint, extents: number[], slotBytes: number): Buffer {
  const len = TX_HEADER + extents.length * 4;
  if (len > slotBytes)
    throw new RangeError(`${extents.length} active extents do not fit an AL slot of ${slotBytes} bytes`);
  const b = Buffer.alloc(Math.ceil(len / 4096) * 4096);
  TX_MAGIC.copy(b, 0);
  b.writeBigUInt64LE(seq, 8);
  b.writeUInt32LE(extents.length, 16);
  for (const [i, e] of extents.entries()) b.writeUInt32LE(e, TX_HEADER + i * 4);
  b.writeUInt32LE(crc32(b.subarray(TX_HEADER, len)), 20);
  b.writeUInt32LE(crc32(b.subarray(0, 24)), 24);
  return b;
}

export function decodeTransaction(b: Buffer): { seq: bigint; extents: number[] } | undefined {
  if (b.length < TX_HEADER || !b.subarray(0, 8).equals(TX_MAGIC)) return undefined;
  if (b.readUInt32LE(24) !== crc32(b.subarray(0, 24))) return undefined;
  const count = b.readUInt32LE(16);
  const len = TX_HEADER + count * 4;
  if (len > b.length || b.readUInt32LE(20) !== crc32(b.subarray(TX_HEADER, len))) return undefined;
  const extents: number[] = [];
  for (let i = 0; i < count; i++) extents.push(b.readUInt32LE(TX_HEADER + i * 4));
  return { seq: b.readBigUInt64LE(8), extents };
}

export interface AlHooks {
  /**
   * Runs before a transaction that takes extents out of the log: once an extent is cold,
   * only the bitmap remembers which of its blocks differ from the peer, so the bitmap's
   * set bits must be durable first (DRBD writes the extent's bitmap pages on eviction).
   */
  beforeEvict?: () => Promise<void>;
  /** A write waits for room because every extent is held: whoever holds them should let go soon. */
  onFull?: () => void;
}

export class ActivityLog {
  private readonly storage: AlStorage;
  private readonly capacity: number;
  private readonly hooks: AlHooks;
  /** Active extents in LRU order (Map iteration order = least recently used first). */
  private readonly active = new Map<number, number>();
  private seq = 0n;
  private committing: Promise<void> | undefined;
  private readonly wanted = new Set<number>();
  /** Extents in `active` whose transaction is written but not yet durable: no write may enter them yet. */
  private readonly pending = new Set<number>();
  /**
   * Writes inside begin() per extent: an extent a waiting write needs may not leave the log
   * before that write has taken its reference (it does as soon as it is woken). Without
   * this, under pressure a transaction made an extent hot for a waiting write, the next
   * one evicted it (no reference yet), and the write asked again: 24 transactions per
   * write at QD8 with 7 extents, Connected.
   */
  private readonly reserved = new Map<number, number>();
  private waiters: Deferred<void>[] = [];
  private slotWaiters: Deferred<void>[] = [];
  /** Transactions written, for /proc/drbd's `al:` counter. */
  transactions = 0;

  constructor(storage: AlStorage, capacity: number, hooks: AlHooks = {}) {
    this.storage = storage;
    this.hooks = hooks;
    this.capacity = Math.max(7, Math.min(capacity, Math.floor((storage.bytes / 2 - TX_HEADER) / 4)));
  }

  private get slotBytes(): number {
    return this.storage.bytes / 2;
  }

  /** Reads the newest valid transaction: the extents that were hot when this node last wrote its log. */
  async recover(): Promise<number[]> {
    let best: { seq: bigint; extents: number[] } | undefined;
    for (let slot = 0; slot < 2; slot++) {
      const head = await this.storage.file.read(this.storage.offset + slot * this.slotBytes, 4096);
      const count = head.subarray(0, 8).equals(TX_MAGIC) ? head.readUInt32LE(16) : 0;
      const len = Math.min(this.slotBytes, Math.ceil((TX_HEADER + count * 4) / 4096) * 4096);
      const whole = len > 4096 ? await this.storage.file.read(this.storage.offset + slot * this.slotBytes, len) : head;
      const tx = decodeTransaction(whole);
      if (tx && (!best || tx.seq > best.seq)) best = tx;
    }
    this.seq = best?.seq ?? 0n;
    return best?.extents ?? [];
  }

  /** Empties the log on disk (clean shutdown, or after recovery marked the extents out of sync). */
  async clear(): Promise<void> {
    this.active.clear();
    await this.writeTransaction();
  }

  get activeCount(): number {
    return this.active.size;
  }

  /**
   * Makes every extent of [offset, offset+length) active and takes a reference
   * on each; resolves once that is on disk. Pair with `complete`.
   */
  async begin(offset: number, length: number): Promise<void> {
    const first = Math.floor(offset / AL_EXTENT_BYTES);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / AL_EXTENT_BYTES);
    // Only a write within one extent reserves it: one that spans two and found one of them
    // hot would hold it while waiting for room for the other, and enough of those could
    // hold every extent with none in use (they keep the old way: evicted, asked again).
    const reserving = first === last;
    if (reserving) this.reserved.set(first, (this.reserved.get(first) ?? 0) + 1);
    try {
      for (;;) {
        let missing = false;
        for (let e = first; e <= last; e++)
          if (!this.active.has(e)) {
            missing = true;
            this.wanted.add(e);
          } else if (this.pending.has(e)) missing = true;
        if (!missing) break;
        await this.commit();
      }
      for (let e = first; e <= last; e++) {
        const refs = this.active.get(e)!;
        this.active.delete(e);
        this.active.set(e, refs + 1);
      }
    } finally {
      if (reserving) {
        const n = this.reserved.get(first)! - 1;
        if (n === 0) this.reserved.delete(first);
        else this.reserved.set(first, n);
      }
    }
  }

  complete(offset: number, length: number): void {
    const first = Math.floor(offset / AL_EXTENT_BYTES);
    const last = Math.floor((offset + Math.max(length, 1) - 1) / AL_EXTENT_BYTES);
    for (let e = first; e <= last; e++) {
      const refs = this.active.get(e);
      if (refs !== undefined) this.active.set(e, Math.max(0, refs - 1));
    }
    if (this.slotWaiters.length > 0) {
      const w = this.slotWaiters;
      this.slotWaiters = [];
      for (const d of w) d.resolve();
    }
  }

  /** Wakes the writes waiting on a transaction: each checks whether its extents are in now. */
  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const d of w) d.resolve();
  }

  /**
   * One transaction for every extent wanted so far (group commit). The writes waiting are
   * woken after each transaction, not when the loop ends: a write whose extents are in
   * goes on (and may be the one that frees room for the rest).
   */
  private commit(): Promise<void> {
    if (this.committing) {
      const d = deferred<void>();
      this.waiters.push(d);
      return d.promise;
    }
    this.committing = (async () => {
      // Extents dropped from memory whose data is not yet known durable: on disk they are
      // still in the log, and they stay there until beforeEvict has succeeded. A failed
      // beforeEvict puts them back, or the next transaction would drop them without it
      // (seed 31419: a failed data sync, then the next write's transaction evicted the
      // extent anyway, and a power cut lost the extent's last write with no bit to resync it).
      let evicted: [number, number][] = [];
      try {
        while (this.wanted.size > 0) {
          // Make room: evict least recently used extents with no write in flight.
          const need = [...this.wanted].filter((e) => !this.active.has(e));
          let room = this.capacity - this.active.size;
          for (const [e, refs] of this.active) {
            if (room >= need.length) break;
            if (refs === 0 && !this.wanted.has(e) && !this.reserved.has(e)) {
              this.active.delete(e);
              evicted.push([e, refs]);
              room++;
            }
          }
          if (room <= 0) {
            // Every extent is busy: wait for a write to complete.
            const d = deferred<void>();
            this.slotWaiters.push(d);
            this.hooks.onFull?.();
            await d.promise;
            continue;
          }
          const adding = need.slice(0, room);
          for (const e of adding) {
            this.active.set(e, 0);
            this.pending.add(e);
            this.wanted.delete(e);
          }
          for (const e of [...this.wanted]) if (this.active.has(e)) this.wanted.delete(e);
          try {
            if (evicted.length > 0) {
              try {
                await this.hooks.beforeEvict?.();
              } catch (err) {
                // Least recently used again, ahead of everything else: still in the log on disk.
                const rest = [...this.active].filter(([e]) => !adding.includes(e));
                this.active.clear();
                for (const [e, refs] of [...evicted, ...rest]) this.active.set(e, refs);
                evicted = [];
                throw err;
              }
            }
            evicted = [];
            await this.writeTransaction();
          } catch (err) {
            // Not durable: the extents are not in the log, and no write may behave as if they were.
            for (const e of adding) this.active.delete(e);
            throw err;
          } finally {
            for (const e of adding) this.pending.delete(e);
          }
          this.wake();
        }
      } finally {
        this.committing = undefined;
        this.wake();
      }
    })();
    return this.committing;
  }

  /**
   * The log's area moved (its file grew and the internal metadata with it): the active
   * extents are written there as the newest transaction, durably. The caller holds every
   * write off, so no transaction runs meanwhile.
   */
  async moveTo(offset: number): Promise<void> {
    while (this.committing) await this.committing.catch(() => undefined);
    this.storage.offset = offset;
    await this.writeTransaction();
  }

  get offset(): number {
    return this.storage.offset;
  }

  private async writeTransaction(): Promise<void> {
    this.seq += 1n;
    const tx = encodeTransaction(this.seq, [...this.active.keys()], this.slotBytes);
    await this.storage.file.write(this.storage.offset + Number(this.seq % 2n) * this.slotBytes, tx);
    await this.storage.file.datasync();
    this.transactions++;
  }
}
