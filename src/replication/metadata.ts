// On-disk metadata: where it lives, what it holds, how it is updated atomically.
//
// Layout, relative to the start of the metadata area:
//   0       superblock slot 0 (4 KiB)      two slots, written alternately with a
//   4 KiB   superblock slot 1 (4 KiB)      sequence number and a CRC, so a torn
//                                          write (kill -9, power loss) leaves the
//                                          previous slot intact
//   8 KiB   activity log (256 KiB ring of 4 KiB transactions)
//   264 KiB dirty bitmap, 1 bit per 4 KiB of data, in 4 KiB pages
//
// Where the area is (DRBD's three meta-disk forms):
//   internal          at the end of the backing device, data shrinks to make room
//   DEV[IDX]          indexed: slot IDX of 128 MiB on an external device
//   DEV               flexible: the whole external device
import { crc32 } from 'node:zlib';
import { z } from 'zod';
import type { MetaDisk } from '../api/config.ts';
import { Bitmap, BITMAP_PAGE_BYTES, BLOCK_SIZE } from './bitmap.ts';
import type { BlockFile, Storage } from './world.ts';
import { ERROR_CODES, TandemError } from './errors.ts';
import { freshUuids, type Uuids } from './uuids.ts';

export const MD_MAGIC = Buffer.from('TNDMMETA', 'latin1');
export const MD_VERSION = 1;
export const SUPER_SLOT_BYTES = 4096;
export const AL_OFFSET = 2 * SUPER_SLOT_BYTES;
export const AL_BYTES = 256 * 1024;
export const BITMAP_OFFSET = AL_OFFSET + AL_BYTES;
export const INDEXED_SLOT_BYTES = 128 * 1024 * 1024;

/** DRBD's MDF_* flags, the ones tandem keeps. */
export const MD_FLAGS = {
  consistent: 1 << 0,
  wasUpToDate: 1 << 1,
  outdated: 1 << 2,
  primaryInd: 1 << 3,
  crashedPrimary: 1 << 4,
  fullSync: 1 << 5,
  peerOutdated: 1 << 6,
  connectedInd: 1 << 7,
  alClean: 1 << 8,
  /** This node was Primary when it lost its peer (the "older" primary in a split brain). */
  primaryAtSplit: 1 << 9,
  /** A Secondary is writing what its Primary sends (like primaryInd: cleared on a clean detach). */
  secondaryInd: 1 << 10,
  /**
   * This node's machine restarted (its boot id changed) while it was Primary or receiving
   * as Secondary, without a clean detach: writes that were in its page cache may be gone.
   * A process crash alone keeps the page cache and does not set it. Cleared when the pair
   * is in sync again.
   */
  cacheLost: 1 << 11,
} as const;
export type MdFlag = keyof typeof MD_FLAGS;

export interface Superblock {
  seq: bigint;
  flags: number;
  /** Last agreed size of the replicated device, bytes (DRBD's la_size). 0 = never agreed. */
  laSize: number;
  /** Capacity of the local data area in bytes, at create-md time. */
  dataCapacity: number;
  bitmapBits: number;
  uuids: Uuids;
  resource: string;
  /** The host's boot id when primaryInd/secondaryInd were set (0: unknown). */
  bootId: bigint;
}

export interface MdLocation {
  /** Device holding the metadata. */
  path: string;
  /** Byte offset of the metadata area on that device. */
  offset: number;
  /** Bytes available for the area. */
  bytes: number;
  /** Usable data bytes of the backing device (all of it when external). */
  dataCapacity: number;
  internal: boolean;
}

const roundUp = (n: number, m: number): number => Math.ceil(n / m) * m;
const roundDown = (n: number, m: number): number => Math.floor(n / m) * m;

export function bitmapBytesFor(dataBytes: number): number {
  return roundUp(Math.ceil(Math.ceil(dataBytes / BLOCK_SIZE) / 8), BITMAP_PAGE_BYTES);
}

/** Internal metadata size for a backing device of `backingBytes`. */
export function internalMdBytes(backingBytes: number): number {
  return BITMAP_OFFSET + bitmapBytesFor(backingBytes);
}

/** The internal metadata's place in a backing device of `bytes` (its end), or why it does not fit. */
export function internalLocation(diskPath: string, bytes: number): MdLocation {
  const diskBytes = roundDown(bytes, BLOCK_SIZE);
  const mdBytes = internalMdBytes(diskBytes);
  if (diskBytes <= mdBytes + BLOCK_SIZE)
    throw new TandemError(
      ERROR_CODES.metadata,
      `${diskPath}: device of ${bytes} bytes is too small for internal metadata`,
    );
  const offset = roundDown(diskBytes - mdBytes, BLOCK_SIZE);
  return { path: diskPath, offset, bytes: diskBytes - offset, dataCapacity: offset, internal: true };
}

/**
 * The one rule for sizing a file with internal metadata: `dataBytes` (in whole blocks),
 * then the metadata internalLocation puts at the end, sized for a backing device of
 * `mdFor` bytes. Its bitmap grows with the file, so the data fits when `mdFor` is at
 * least the size returned. A grow asks for the exact size (internalFileBytesFor); a new
 * pool file for more (node-agent/disk-check.ts backingFileBytes).
 */
export function internalFileBytes(dataBytes: number, mdFor: number): number {
  return roundUp(dataBytes, BLOCK_SIZE) + internalMdBytes(mdFor);
}

/**
 * The smallest file size whose internal metadata starts at or after `atLeast`: a file
 * grown to it holds `atLeast` bytes of data, and its new metadata area lies wholly past
 * the old end when `atLeast` is the old size (so the old area is never written over).
 */
export function internalFileBytesFor(atLeast: number): number {
  // The data area holds at least two blocks (internalLocation's smallest device).
  const want = Math.max(roundUp(atLeast, BLOCK_SIZE), 2 * BLOCK_SIZE);
  // The metadata sized for the file itself: a larger file can need a larger bitmap.
  let bytes = internalFileBytes(want, want);
  for (let next = internalFileBytes(want, bytes); next > bytes; next = internalFileBytes(want, bytes)) bytes = next;
  return bytes;
}

// --- growing a file with internal metadata ------------------------------------------
//
// The metadata sits at the end of the file, so a bigger file puts it elsewhere. A grow
// never writes below the old end: (1) an intent file next to the disk records both
// sizes, durably; (2) the file is extended; (3) the bitmap, the activity log and last
// the superblock are written at the new end, each durable before the next; (4) the
// intent goes. A crash anywhere leaves the old metadata intact; the next attach (or
// create-md) settles it: a file of the new size whose new superblock is valid is kept,
// anything else is cut back to the old size. Until settled, the metadata is not located.

/** Next to the disk: `{"resource","from","to"}` while its internal metadata moves. */
export const growIntentPath = (diskPath: string) => `${diskPath}.tandem-grow`;

const GrowIntent = z.object({
  resource: z.string(),
  from: z.number().int().positive(),
  to: z.number().int().positive(),
});
export type GrowIntent = z.infer<typeof GrowIntent>;

async function readGrowIntent(storage: Storage, diskPath: string): Promise<GrowIntent | undefined> {
  const text = await storage.readText(growIntentPath(diskPath));
  if (text === undefined) return undefined;
  const parsed = GrowIntent.safeParse(
    (() => {
      try {
        return JSON.parse(text);
      } catch {
        return undefined;
      }
    })(),
  );
  if (!parsed.success || parsed.data.to <= parsed.data.from)
    throw new TandemError(
      ERROR_CODES.metadata,
      `${growIntentPath(diskPath)}: not a grow record tandem wrote; nothing was touched (look at it, then remove it)`,
    );
  return parsed.data;
}

export async function writeGrowIntent(storage: Storage, diskPath: string, intent: GrowIntent): Promise<void> {
  await storage.writeTextDurable(growIntentPath(diskPath), `${JSON.stringify(intent)}\n`);
}

export async function clearGrowIntent(storage: Storage, diskPath: string): Promise<void> {
  await storage.removeDurable(growIntentPath(diskPath));
}

/**
 * Finishes or undoes an interrupted grow of `diskPath` (see above). Returns what it found:
 * none, a grow that had committed, or one cut back to its old size.
 */
export async function settleGrow(
  storage: Storage,
  diskPath: string,
  resource: string,
): Promise<'none' | 'committed' | 'rolled-back'> {
  const intent = await readGrowIntent(storage, diskPath);
  if (!intent) return 'none';
  if (intent.resource !== resource)
    throw new TandemError(
      ERROR_CODES.metadata,
      `${growIntentPath(diskPath)} belongs to resource '${intent.resource}', not '${resource}'; nothing was touched`,
    );
  const { size, isBlockDevice } = await storage.sizeOf(diskPath);
  if (isBlockDevice || size < intent.from || size > intent.to)
    throw new TandemError(
      ERROR_CODES.metadata,
      `${diskPath}: ${size} bytes, but the interrupted grow went from ${intent.from} to ${intent.to}; nothing was touched`,
    );
  if (size === intent.to) {
    const grown = await Metadata.readSuperblock(storage, internalLocation(diskPath, size));
    if (grown?.resource === resource) {
      await clearGrowIntent(storage, diskPath);
      return 'committed';
    }
  }
  const f = await storage.open(diskPath);
  try {
    await f.truncate(intent.from);
    await f.datasync();
  } finally {
    await f.close();
  }
  await clearGrowIntent(storage, diskPath);
  return 'rolled-back';
}

/**
 * Grows a file with internal metadata from `from` to `to` bytes and moves the metadata
 * (and the activity log, `log`) to the new end, as described above. The caller holds
 * every write off. On a failure before the new superblock is durable, the growth is
 * undone (the old metadata was never touched); if even that fails, the intent stays and
 * the next attach settles it the same way.
 */
export async function moveInternalMetadata(o: {
  storage: Storage;
  data: BlockFile;
  md: Metadata;
  log: { readonly offset: number; moveTo(offset: number): Promise<void> };
  resource: string;
  from: number;
  to: number;
  onUndoFailed?: (err: unknown) => void;
}): Promise<MdLocation> {
  const disk = o.md.location.path;
  const oldLog = o.log.offset;
  const target = internalLocation(disk, o.to);
  await writeGrowIntent(o.storage, disk, { resource: o.resource, from: o.from, to: o.to });
  try {
    await o.data.truncate(o.to);
    await o.md.relocate(target, () => o.log.moveTo(target.offset + AL_OFFSET));
  } catch (err) {
    if (o.md.location.offset !== target.offset) {
      const undo = async (): Promise<void> => {
        if (o.log.offset !== oldLog) await o.log.moveTo(oldLog);
        await o.data.truncate(o.from);
        await o.data.datasync();
        await clearGrowIntent(o.storage, disk);
      };
      await undo().catch((undoErr: unknown) => o.onUndoFailed?.(undoErr));
    }
    throw err;
  }
  await clearGrowIntent(o.storage, disk);
  return target;
}

export async function locateMetadata(storage: Storage, diskPath: string, meta: MetaDisk): Promise<MdLocation> {
  const sizeOf = (path: string) => storage.sizeOf(path);
  const disk = await sizeOf(diskPath);
  const diskBytes = roundDown(disk.size, BLOCK_SIZE);
  switch (meta.kind) {
    case 'internal': {
      if ((await storage.readText(growIntentPath(diskPath))) !== undefined)
        throw new TandemError(
          ERROR_CODES.metadata,
          `${diskPath}: its internal metadata was moving when the engine stopped (${growIntentPath(diskPath)}); 'tandemadm up' or 'attach' settles it`,
        );
      return internalLocation(diskPath, disk.size);
    }
    case 'indexed': {
      const md = await sizeOf(meta.path);
      const offset = meta.index * INDEXED_SLOT_BYTES;
      if (offset + INDEXED_SLOT_BYTES > md.size) {
        throw new TandemError(
          ERROR_CODES.metadata,
          `${meta.path}[${meta.index}]: meta-disk of ${md.size} bytes has no room for index ${meta.index} (each index takes 128 MiB)`,
        );
      }
      const maxData = (INDEXED_SLOT_BYTES - BITMAP_OFFSET) * 8 * BLOCK_SIZE;
      return {
        path: meta.path,
        offset,
        bytes: INDEXED_SLOT_BYTES,
        dataCapacity: Math.min(diskBytes, maxData),
        internal: false,
      };
    }
    case 'flexible': {
      const md = await sizeOf(meta.path);
      const need = BITMAP_OFFSET + bitmapBytesFor(diskBytes);
      if (md.size < need)
        throw new TandemError(
          ERROR_CODES.metadata,
          `${meta.path}: meta-disk of ${md.size} bytes is too small, ${need} bytes are needed for a ${diskBytes}-byte disk`,
        );
      return { path: meta.path, offset: 0, bytes: md.size, dataCapacity: diskBytes, internal: false };
    }
  }
}

export function encodeSuperblock(sb: Superblock): Buffer {
  const b = Buffer.alloc(SUPER_SLOT_BYTES);
  MD_MAGIC.copy(b, 0);
  b.writeUInt32LE(MD_VERSION, 8);
  b.writeBigUInt64LE(sb.seq, 16);
  b.writeUInt32LE(sb.flags, 24);
  b.writeBigUInt64LE(BigInt(sb.laSize), 32);
  b.writeBigUInt64LE(BigInt(sb.dataCapacity), 40);
  b.writeBigUInt64LE(BigInt(sb.bitmapBits), 48);
  b.writeBigUInt64LE(sb.uuids.current, 56);
  b.writeBigUInt64LE(sb.uuids.bitmap, 64);
  b.writeBigUInt64LE(sb.uuids.history[0], 72);
  b.writeBigUInt64LE(sb.uuids.history[1], 80);
  const name = Buffer.from(sb.resource, 'utf8').subarray(0, 128);
  b.writeUInt16LE(name.length, 88);
  name.copy(b, 90);
  b.writeBigUInt64LE(sb.bootId, 224);
  b.writeUInt32LE(crc32(b.subarray(0, SUPER_SLOT_BYTES - 4)), SUPER_SLOT_BYTES - 4);
  return b;
}

/** Returns the superblock, or undefined when the slot holds no valid one. */
export function decodeSuperblock(b: Buffer): Superblock | undefined {
  if (b.length < SUPER_SLOT_BYTES || !b.subarray(0, 8).equals(MD_MAGIC)) return undefined;
  if (b.readUInt32LE(SUPER_SLOT_BYTES - 4) !== crc32(b.subarray(0, SUPER_SLOT_BYTES - 4))) return undefined;
  if (b.readUInt32LE(8) !== MD_VERSION) return undefined;
  const nameLen = b.readUInt16LE(88);
  return {
    seq: b.readBigUInt64LE(16),
    flags: b.readUInt32LE(24),
    laSize: Number(b.readBigUInt64LE(32)),
    dataCapacity: Number(b.readBigUInt64LE(40)),
    bitmapBits: Number(b.readBigUInt64LE(48)),
    uuids: {
      current: b.readBigUInt64LE(56),
      bitmap: b.readBigUInt64LE(64),
      history: [b.readBigUInt64LE(72), b.readBigUInt64LE(80)],
    },
    resource: b.subarray(90, 90 + nameLen).toString('utf8'),
    bootId: b.readBigUInt64LE(224),
  };
}

/** Picks the newer of two valid slots; a torn write invalidates only the slot it hit. */
export function newestSuperblock(a: Superblock | undefined, b: Superblock | undefined): Superblock | undefined {
  if (!a) return b;
  if (!b) return a;
  return a.seq >= b.seq ? a : b;
}

/**
 * Open metadata of one resource on this node. Superblock updates are
 * synchronous (written and fdatasync'ed before the state they describe is acted
 * on); bitmap pages are written by the caller when it needs them durable.
 */
export type SuperblockChange = Partial<Omit<Superblock, 'seq'>> & { set?: MdFlag[]; clear?: MdFlag[] };

export class Metadata {
  /** Where the area is; changes only when a grown file's internal metadata moves (relocate). */
  location: MdLocation;
  readonly file: BlockFile;
  private readonly ownsFile: boolean;
  /** The tail of the superblock updates, applied in call order. */
  private updateChain: Promise<void> = Promise.resolve();
  sb: Superblock;
  bitmap: Bitmap;
  /** Counters for /proc/drbd: `al` and `bm` writes. */
  bitmapWrites = 0;

  private constructor(location: MdLocation, file: BlockFile, ownsFile: boolean, sb: Superblock, bitmap: Bitmap) {
    this.location = location;
    this.file = file;
    this.ownsFile = ownsFile;
    this.sb = sb;
    this.bitmap = bitmap;
  }

  static async readSuperblock(storage: Storage, location: MdLocation): Promise<Superblock | undefined> {
    const f = await storage.open(location.path);
    try {
      const slots = await f.read(location.offset, 2 * SUPER_SLOT_BYTES);
      return newestSuperblock(
        decodeSuperblock(slots.subarray(0, SUPER_SLOT_BYTES)),
        decodeSuperblock(slots.subarray(SUPER_SLOT_BYTES)),
      );
    } finally {
      await f.close();
    }
  }

  /** Writes fresh metadata: new generation identifiers, a clean bitmap, an empty activity log. */
  static async create(storage: Storage, location: MdLocation, resource: string): Promise<{ bitmapBytes: number }> {
    const f = await storage.open(location.path);
    try {
      const bitmapBytes = bitmapBytesFor(location.dataCapacity);
      if (BITMAP_OFFSET + bitmapBytes > location.bytes)
        throw new TandemError(ERROR_CODES.metadata, `${location.path}: metadata area too small`);
      const zero = Buffer.alloc(1024 * 1024);
      for (let off = AL_OFFSET; off < BITMAP_OFFSET + bitmapBytes; off += zero.length) {
        await f.write(
          location.offset + off,
          zero.subarray(0, Math.min(zero.length, BITMAP_OFFSET + bitmapBytes - off)),
        );
      }
      const sb: Superblock = {
        seq: 1n,
        flags: 0,
        laSize: 0,
        dataCapacity: location.dataCapacity,
        bitmapBits: Math.ceil(location.dataCapacity / BLOCK_SIZE),
        uuids: freshUuids(),
        resource,
        bootId: 0n,
      };
      // The zeroed activity log, bitmap and other slot are durable before the superblock
      // that makes them count. The superblock goes in the slot its sequence number names
      // (as update() picks them): the first update then writes the other slot, and a torn
      // first update leaves this one intact (simulator seed 2174 lost both).
      const slot = Number(sb.seq % 2n);
      await f.write(location.offset + (1 - slot) * SUPER_SLOT_BYTES, Buffer.alloc(SUPER_SLOT_BYTES));
      await f.datasync();
      await f.write(location.offset + slot * SUPER_SLOT_BYTES, encodeSuperblock(sb));
      await f.datasync();
      return { bitmapBytes };
    } finally {
      await f.close();
    }
  }

  /** Opens existing metadata; `dataFile` is reused (not closed by close()) when the metadata is internal. */
  static async open(storage: Storage, location: MdLocation, resource: string, dataFile?: BlockFile): Promise<Metadata> {
    const shared = location.internal && dataFile !== undefined;
    const file = shared ? dataFile : await storage.open(location.path);
    try {
      const slots = await file.read(location.offset, 2 * SUPER_SLOT_BYTES);
      const sb = newestSuperblock(
        decodeSuperblock(slots.subarray(0, SUPER_SLOT_BYTES)),
        decodeSuperblock(slots.subarray(SUPER_SLOT_BYTES)),
      );
      if (!sb)
        throw new TandemError(
          ERROR_CODES.metadata,
          `${describe(location)}: no valid tandem metadata found; run 'tandemadm create-md ${resource}' first`,
        );
      if (sb.resource !== resource)
        throw new TandemError(
          ERROR_CODES.metadata,
          `${describe(location)}: metadata belongs to resource '${sb.resource}', not '${resource}'`,
        );
      const bitmapBytes = bitmapBytesFor(sb.bitmapBits * BLOCK_SIZE);
      const raw = await file.read(location.offset + BITMAP_OFFSET, bitmapBytes);
      const bitmap = new Bitmap(sb.bitmapBits, new Uint8Array(raw.buffer, raw.byteOffset, raw.byteLength));
      return new Metadata(location, file, !shared, sb, bitmap);
    } catch (err) {
      if (!shared) await file.close();
      throw err;
    }
  }

  has(flag: MdFlag): boolean {
    return (this.sb.flags & MD_FLAGS[flag]) !== 0;
  }

  /**
   * Commits a superblock change: the next slot, then fdatasync. Changes are applied
   * one at a time, each to the superblock the previous one left: two concurrent
   * updates built from the same superblock would otherwise both write seq+1 and
   * the later would undo the earlier (a resync's new generation lost to a flag
   * cleared in the same millisecond). A function computes its change from the
   * superblock it is applied to, for changes derived from the current identifiers.
   */
  update(change: SuperblockChange | ((sb: Superblock) => SuperblockChange)): Promise<void> {
    const apply = async (): Promise<void> => {
      const { set = [], clear = [], ...fields } = typeof change === 'function' ? change(this.sb) : change;
      let flags = fields.flags ?? this.sb.flags;
      for (const f of set) flags |= MD_FLAGS[f];
      for (const f of clear) flags &= ~MD_FLAGS[f];
      const next: Superblock = { ...this.sb, ...fields, flags, seq: this.sb.seq + 1n };
      const slot = Number(next.seq % 2n);
      await this.file.write(this.location.offset + slot * SUPER_SLOT_BYTES, encodeSuperblock(next));
      await this.file.datasync();
      this.sb = next;
    };
    const done = this.updateChain.then(apply, apply);
    this.updateChain = done.catch(() => undefined);
    return done;
  }

  /** Bits the metadata area can hold: the largest data size it can track. */
  get maxBitmapBits(): number {
    return (this.location.bytes - BITMAP_OFFSET) * 8;
  }

  /**
   * Grows the bitmap to `bits` (online resize): new pages are zeroed on disk,
   * existing bits are kept, and the superblock records the new size.
   */
  async growBitmap(bits: number): Promise<void> {
    if (bits <= this.bitmap.bits) return;
    if (bits > this.maxBitmapBits)
      throw new TandemError(
        ERROR_CODES.metadata,
        `${describe(this.location)}: the metadata area can track ${this.maxBitmapBits * BLOCK_SIZE} bytes, not ${bits * BLOCK_SIZE}`,
      );
    const oldPages = this.bitmap.pageCount;
    const grown = new Bitmap(bits);
    for (let p = oldPages; p < grown.pageCount; p++)
      await this.file.write(this.location.offset + BITMAP_OFFSET + p * BITMAP_PAGE_BYTES, grown.page(p));
    await this.file.datasync();
    this.bitmap.grow(bits);
    await this.update({ bitmapBits: bits });
  }

  /**
   * Moves internal metadata to the end of its grown file (the file is already `to`
   * long): the whole bitmap, grown to the new data area, then `moveLog` (the activity
   * log's own move), then the superblock in the new place, each durable before the
   * next. The caller holds every write off and has recorded the grow's intent. Runs in
   * the superblock update order, so no update lands in the old place meanwhile.
   */
  relocate(to: MdLocation, moveLog: () => Promise<void>): Promise<void> {
    const apply = async (): Promise<void> => {
      if (!this.location.internal || !to.internal || to.offset < this.location.offset + this.location.bytes)
        throw new TandemError(ERROR_CODES.metadata, `${describe(this.location)}: cannot move metadata to ${to.offset}`);
      const bits = Math.ceil(to.dataCapacity / BLOCK_SIZE);
      // A copy for the new place; the bitmap in memory grows (in place) once it counts.
      const grownBytes = new Uint8Array(bitmapBytesFor(bits * BLOCK_SIZE));
      grownBytes.set(this.bitmap.bytes);
      const grown = new Bitmap(bits, grownBytes);
      if (BITMAP_OFFSET + grownBytes.byteLength > to.bytes)
        throw new TandemError(ERROR_CODES.metadata, `${describe(to)}: metadata area too small for the grown bitmap`);
      for (let p = 0; p < grown.pageCount; p++)
        await this.file.write(to.offset + BITMAP_OFFSET + p * BITMAP_PAGE_BYTES, grown.page(p));
      const next: Superblock = {
        ...this.sb,
        seq: this.sb.seq + 1n,
        dataCapacity: to.dataCapacity,
        bitmapBits: bits,
      };
      const slot = Number(next.seq % 2n);
      await this.file.write(to.offset + (1 - slot) * SUPER_SLOT_BYTES, Buffer.alloc(SUPER_SLOT_BYTES));
      await this.file.datasync();
      await moveLog();
      await this.file.write(to.offset + slot * SUPER_SLOT_BYTES, encodeSuperblock(next));
      await this.file.datasync();
      this.location = to;
      this.sb = next;
      // Bits may have changed since the copy was written (a resync's acknowledgements, a
      // lost connection's marks), and a page written meanwhile went to the old place: every
      // page is written again at the new place by the next bitmap write.
      this.bitmap.grow(bits);
      this.bitmap.touchRange(0, bits);
    };
    const done = this.updateChain.then(apply, apply);
    this.updateChain = done.catch(() => undefined);
    return done;
  }

  /**
   * Writes the bitmap pages that changed since they were last written, as they are
   * now. When bits were cleared since then, `data` (the data device) is synced first:
   * a clear bit claims the block matches the peer, which is only true on disk once the
   * write that made it so is durable; a power loss between the two must leave the bit
   * set, never a clear bit over data that did not survive. Set bits need no such order:
   * a set bit is only ever too cautious. `sync`: the pages are durable on return.
   */
  async writeDirtyBitmap(sync: boolean, data?: BlockFile): Promise<number> {
    const { pages, cleared } = this.bitmap.takeDirtySnapshot();
    if (pages.length === 0) return 0;
    try {
      if (cleared && data !== undefined) await data.datasync();
      for (const p of pages) {
        await this.file.write(this.location.offset + BITMAP_OFFSET + p.index * BITMAP_PAGE_BYTES, p.bytes);
        this.bitmapWrites++;
      }
      if (sync) await this.file.datasync();
    } catch (err) {
      this.bitmap.restoreDirty(
        pages.map((p) => p.index),
        cleared,
      );
      throw err;
    }
    return pages.length;
  }

  async close(): Promise<void> {
    await this.updateChain;
    if (this.ownsFile) await this.file.close();
  }
}

export function describe(location: MdLocation): string {
  return location.internal
    ? `${location.path} (internal meta-disk)`
    : location.offset > 0 || location.bytes === INDEXED_SLOT_BYTES
      ? `${location.path}[${location.offset / INDEXED_SLOT_BYTES}]`
      : location.path;
}
