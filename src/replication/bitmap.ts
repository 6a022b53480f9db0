// The dirty bitmap: one bit per 4 KiB block of the replicated device. A set bit
// means "this block may differ from the peer and must be resynced".
// Pages (4 KiB of bitmap = 32768 bits = 128 MiB of data) are the unit of on-disk
// persistence; the bitmap remembers which pages changed since they were written.

export const BLOCK_SIZE = 4096;
export const BLOCK_SHIFT = 12;
export const BITMAP_PAGE_BYTES = 4096;
export const BITS_PER_PAGE = BITMAP_PAGE_BYTES * 8;

export class Bitmap {
  /** Bits tracked; only grow() changes it (the object stays the same: holders never go stale). */
  bits: number;
  bytes: Uint8Array;
  private words: Uint32Array;
  private setCount = 0;
  private readonly dirtyPages = new Set<number>();
  /** A bit was cleared since the dirty pages were last taken (see takeDirtySnapshot). */
  private clearedSinceTake = false;

  constructor(bits: number, storage?: Uint8Array) {
    this.bits = bits;
    const byteLength = Math.ceil(Math.ceil(bits / 8) / BITMAP_PAGE_BYTES) * BITMAP_PAGE_BYTES;
    this.bytes = storage ?? new Uint8Array(byteLength);
    if (this.bytes.byteLength < byteLength)
      throw new RangeError(`bitmap storage of ${this.bytes.byteLength} bytes is smaller than ${byteLength}`);
    this.words = new Uint32Array(this.bytes.buffer, this.bytes.byteOffset, byteLength / 4);
    this.clearTail();
    this.recount();
  }

  /**
   * Tracks `bits` bits from now on (a grown device); the new bits are clear, and the set
   * bits, their count and the dirty pages are kept. In place: a resync or a verify that
   * holds this bitmap keeps working on the one the metadata writes.
   */
  grow(bits: number): void {
    if (bits <= this.bits) return;
    const byteLength = Math.ceil(Math.ceil(bits / 8) / BITMAP_PAGE_BYTES) * BITMAP_PAGE_BYTES;
    if (byteLength > this.bytes.byteLength) {
      const bytes = new Uint8Array(byteLength);
      bytes.set(this.bytes);
      this.bytes = bytes;
      this.words = new Uint32Array(bytes.buffer, 0, byteLength / 4);
    }
    // The bits past the old end are clear already (clearTail, and no range ever reaches past it).
    this.bits = bits;
  }

  static blocksFor(bytes: number): number {
    return Math.ceil(bytes / BLOCK_SIZE);
  }

  get count(): number {
    return this.setCount;
  }

  /** Bits beyond `bits` (a shrunk or odd-sized device) never count. */
  private clearTail(): void {
    for (let b = this.bits; b < this.words.length * 32; b++) {
      if ((b & 31) === 0 && b + 32 <= this.words.length * 32) {
        this.words[b >>> 5] = 0;
        b += 31;
        continue;
      }
      this.words[b >>> 5]! &= ~(1 << (b & 31));
    }
  }

  recount(): void {
    let n = 0;
    for (let i = 0; i < this.words.length; i++) {
      let w = this.words[i]!;
      while (w !== 0) {
        w &= w - 1;
        n++;
      }
    }
    this.setCount = n;
  }

  test(bit: number): boolean {
    return ((this.words[bit >>> 5]! >>> (bit & 31)) & 1) === 1;
  }

  /** Sets bits [from, to); returns how many were newly set. */
  setRange(from: number, to: number): number {
    const added = this.applyRange(from, to, true);
    this.setCount += added;
    return added;
  }

  /**
   * Marks the pages holding bits [from, to) dirty whether or not a bit changed: the
   * bits as read may be only in a cache that a failed sync left unwritten, so the
   * next write-back must put them on disk again.
   */
  touchRange(from: number, to: number): void {
    const words = BITMAP_PAGE_BYTES / 4;
    to = Math.min(to, this.bits);
    if (from >= to) return;
    for (let p = Math.floor((from >>> 5) / words); p <= Math.floor(((to - 1) >>> 5) / words); p++)
      this.dirtyPages.add(p);
  }

  /** Clears bits [from, to); returns how many were cleared. */
  clearRange(from: number, to: number): number {
    const removed = this.applyRange(from, to, false);
    this.setCount -= removed;
    if (removed > 0) this.clearedSinceTake = true;
    return removed;
  }

  /** Sets or clears [from, to) a word at a time; returns how many bits changed. */
  private applyRange(from: number, to: number, set: boolean): number {
    to = Math.min(to, this.bits);
    let changed = 0;
    for (let b = from; b < to; ) {
      const wi = b >>> 5;
      const lo = b & 31;
      const hi = Math.min(32, lo + (to - b));
      const mask = hi - lo === 32 ? 0xffffffff : (((1 << (hi - lo)) - 1) << lo) >>> 0;
      const old = this.words[wi]!;
      const now = (set ? old | mask : old & ~mask) >>> 0;
      if (now !== old) {
        changed += popcount((now ^ old) >>> 0);
        this.words[wi] = now;
        this.dirtyPages.add(Math.floor(wi / (BITMAP_PAGE_BYTES / 4)));
      }
      b += hi - lo;
    }
    return changed;
  }

  setAll(): void {
    this.setRange(0, this.bits);
  }

  clearAll(): void {
    this.clearRange(0, this.bits);
  }

  /** First set bit at or after `from`, or -1. Skips clean words 32 bits at a time. */
  nextSet(from: number): number {
    if (from >= this.bits) return -1;
    let wi = from >>> 5;
    let w = (this.words[wi]! >>> (from & 31)) << (from & 31);
    for (;;) {
      if (w !== 0) {
        const bit = wi * 32 + (31 - Math.clz32(w & -w));
        return bit < this.bits ? bit : -1;
      }
      wi++;
      if (wi >= this.words.length) return -1;
      w = this.words[wi]!;
    }
  }

  /** First clear bit at or after `from`, or `bits`. */
  nextClear(from: number): number {
    for (let b = from; b < this.bits; b++) {
      if ((b & 31) === 0 && this.words[b >>> 5] === 0xffffffff) {
        b += 31;
        continue;
      }
      if (!this.test(b)) return b;
    }
    return this.bits;
  }

  /** ORs another bitmap of the same size into this one (the bitmap exchange on connect). */
  merge(other: Bitmap): void {
    const n = Math.min(this.words.length, other.words.length);
    for (let i = 0; i < n; i++) {
      const old = this.words[i]!;
      const now = (old | other.words[i]!) >>> 0;
      if (now !== old) {
        this.words[i] = now;
        this.dirtyPages.add(Math.floor(i / (BITMAP_PAGE_BYTES / 4)));
      }
    }
    this.clearTail();
    this.recount();
  }

  takeDirtyPages(): number[] {
    const pages = [...this.dirtyPages].sort((a, b) => a - b);
    this.dirtyPages.clear();
    this.clearedSinceTake = false;
    return pages;
  }

  /**
   * The changed pages as copies taken now, and whether any bit was cleared since the
   * last take. A cleared bit says "this block is on the peer's disk as on ours": it may
   * reach the disk only after the data that made it true is durable, so the writer
   * syncs the data device between this snapshot and writing it (Metadata.writeDirtyBitmap).
   */
  takeDirtySnapshot(): { pages: { index: number; bytes: Uint8Array }[]; cleared: boolean } {
    const cleared = this.clearedSinceTake;
    const pages = this.takeDirtyPages().map((index) => ({ index, bytes: this.page(index).slice() }));
    return { pages, cleared };
  }

  /** Puts pages of a snapshot that could not be written back in the dirty set. */
  restoreDirty(pages: number[], cleared: boolean): void {
    for (const p of pages) this.dirtyPages.add(p);
    if (cleared) this.clearedSinceTake = true;
  }

  page(index: number): Uint8Array {
    return this.bytes.subarray(index * BITMAP_PAGE_BYTES, (index + 1) * BITMAP_PAGE_BYTES);
  }

  get pageCount(): number {
    return this.bytes.byteLength / BITMAP_PAGE_BYTES;
  }
}

function popcount(w: number): number {
  let n = 0;
  while (w !== 0) {
    w &= w - 1;
    n++;
  }
  return n;
}

// --- Run-length encoding for the bitmap exchange -------------------------------
// A mostly clean bitmap of a large device must not cost megabytes on the wire
// (DRBD compresses with its own RLE for the same reason). Format: LEB128 varints
// giving alternating run lengths, starting with a run of clear bits (possibly 0).

/** Encodes bits [0, bits) (all of them by default; the device's size when the disk is larger). */
export function encodeRle(bm: Bitmap, bits = bm.bits): Buffer {
  const out: number[] = [];
  const end = Math.min(bits, bm.bits);
  let pos = 0;
  let wantSet = false;
  while (pos < end) {
    const next = Math.min(end, wantSet ? bm.nextClear(pos) : nextSetOrEnd(bm, pos));
    pushVarint(out, next - pos);
    pos = next;
    wantSet = !wantSet;
  }
  return Buffer.from(out);
}

function nextSetOrEnd(bm: Bitmap, from: number): number {
  const n = bm.nextSet(from);
  return n < 0 ? bm.bits : n;
}

function pushVarint(out: number[], v: number): void {
  while (v >= 0x80) {
    out.push((v % 0x80) | 0x80);
    v = Math.floor(v / 0x80);
  }
  out.push(v);
}

/** Decodes a run-length bitmap of `bits` bits; throws RangeError on a malformed or oversized encoding. */
export function decodeRle(data: Uint8Array, bits: number): Bitmap {
  const bm = new Bitmap(bits);
  let pos = 0;
  let set = false;
  let i = 0;
  while (i < data.length) {
    let v = 0;
    let mul = 1;
    for (;;) {
      if (i >= data.length) throw new RangeError('truncated bitmap run length');
      const byte = data[i++]!;
      v += (byte & 0x7f) * mul;
      if ((byte & 0x80) === 0) break;
      mul *= 0x80;
      if (mul > 2 ** 49) throw new RangeError('bitmap run length too large');
    }
    if (pos + v > bits) throw new RangeError(`bitmap runs exceed ${bits} bits`);
    if (set) bm.setRange(pos, pos + v);
    pos += v;
    set = !set;
  }
  bm.takeDirtyPages();
  return bm;
}
