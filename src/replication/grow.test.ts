// Growing a file with internal metadata moves the metadata to the new end. The move
// must survive a crash at any point, followed by a power loss that keeps a random part
// of what was not yet synced: afterwards the metadata is found (at the old end or the
// new one), whole, and nothing the data area held is changed. This searches every crash
// point of one grow, each with several power-loss outcomes.
import { ActivityLog, AL_EXTENT_BYTES } from './activity-log.ts';
import { BLOCK_SIZE } from './bitmap.ts';
import {
  AL_BYTES,
  AL_OFFSET,
  growIntentPath,
  internalFileBytesFor,
  internalLocation,
  locateMetadata,
  Metadata,
  moveInternalMetadata,
  settleGrow,
} from './metadata.ts';
import type { BlockFile, Storage } from './world.ts';
import { SimFile } from '../sim/disk.ts';
import { Rng } from '../sim/rng.ts';

const MiB = 1024 * 1024;
const DISK = '/pool/vol.img';

class Crash extends Error {}

/**
 * One file and its directory, with a volatile cache (SimFile) and a file size that is
 * durable only after a datasync (the size is cached metadata too). Every mutating
 * operation counts; the `crashAt`-th and all after it fail, as in a killed process.
 */
class Machine {
  file: SimFile;
  durableSize: number;
  /** The directory: durable at once (writeTextDurable and removeDurable sync it). */
  readonly texts = new Map<string, string>();
  ops = 0;
  crashAt = Number.POSITIVE_INFINITY;

  constructor(size: number) {
    this.file = new SimFile(DISK, size);
    this.durableSize = size;
  }

  #op(): void {
    if (++this.ops >= this.crashAt) throw new Crash(`crashed at operation ${this.ops}`);
  }

  /** Power loss: each unsynced sector survives with probability `keep`; the size as last synced. */
  powerLoss(rng: Rng, keep: number): void {
    this.file.powerLoss(rng, keep);
    if (this.file.size !== this.durableSize) this.file.truncate(this.durableSize);
    this.crashAt = Number.POSITIVE_INFINITY;
  }

  storage(): Storage {
    const f = (): SimFile => this.file;
    const block: BlockFile = {
      path: DISK,
      read: async (offset, length) => f().view(offset, length),
      write: async (offset, data) => {
        this.#op();
        f().apply(offset, Buffer.from(data));
      },
      zeroRange: async (offset, length) => {
        this.#op();
        f().apply(offset, Buffer.alloc(length));
      },
      datasync: async () => {
        this.#op();
        f().persist(f().snapshotCache());
        this.durableSize = f().size;
      },
      truncate: async (size) => {
        this.#op();
        f().truncate(size);
      },
      close: async () => {},
    };
    return {
      sizeOf: async () => ({ size: f().size, isBlockDevice: false }),
      open: async () => block,
      create: async () => block,
      mkdirp: async () => {},
      writeText: async (path, text) => {
        this.texts.set(path, text);
      },
      readText: async (path) => this.texts.get(path),
      writeTextDurable: async (path, text) => {
        this.#op();
        this.texts.set(path, text);
      },
      removeDurable: async (path) => {
        this.#op();
        this.texts.delete(path);
      },
    };
  }
}

/** Data blocks with a pattern, so a write over the data area shows. */
const pattern = (i: number) => Buffer.alloc(BLOCK_SIZE, (i * 37 + 11) & 0xff);
const DATA_BLOCKS = [0, 1, 100, 1000, 2047];

type Before = { uuids: Metadata['sb']['uuids']; flags: number; laSize: number; bits: number[]; extents: number[] };

/** A file of `from` bytes with metadata, data, dirty bits and hot extents, all durable. */
async function prepare(from: number): Promise<{ m: Machine; before: Before }> {
  const m = new Machine(from);
  const storage = m.storage();
  const location = await locateMetadata(storage, DISK, { kind: 'internal' });
  await Metadata.create(storage, location, 'vol');
  const data = await storage.open(DISK);
  const md = await Metadata.open(storage, location, 'vol', data);
  await md.update({ set: ['consistent', 'wasUpToDate', 'primaryInd'], laSize: 8 * MiB });
  for (const b of DATA_BLOCKS) await data.write(b * BLOCK_SIZE, pattern(b));
  const bits = [3, 4, 5, 1999, 2047];
  for (const b of bits) md.bitmap.setRange(b, b + 1);
  await md.writeDirtyBitmap(true);
  const al = new ActivityLog({ file: data, offset: location.offset + AL_OFFSET, bytes: AL_BYTES }, 61);
  await al.recover();
  await al.begin(0, 1);
  await al.begin(AL_EXTENT_BYTES, 1);
  await data.datasync();
  return {
    m,
    before: { uuids: md.sb.uuids, flags: md.sb.flags, laSize: md.sb.laSize, bits, extents: [0, 1] },
  };
}

/** Runs the grow with the machine set to crash at `crashAt`; true when it ran to the end. */
async function grow(m: Machine, from: number, to: number, crashAt: number): Promise<boolean> {
  const storage = m.storage();
  const location = await locateMetadata(storage, DISK, { kind: 'internal' });
  const data = await storage.open(DISK);
  const md = await Metadata.open(storage, location, 'vol', data);
  const al = new ActivityLog({ file: data, offset: location.offset + AL_OFFSET, bytes: AL_BYTES }, 61);
  await al.recover();
  await al.begin(0, 1);
  await al.begin(AL_EXTENT_BYTES, 1);
  m.ops = 0;
  m.crashAt = crashAt;
  try {
    await moveInternalMetadata({ storage, data, md, log: al, resource: 'vol', from, to });
    return true;
  } catch (err) {
    if (!(err instanceof Crash)) throw err;
    return false;
  }
}

/** After the crash and power loss: settle, then everything must be as before, at one of the two sizes. */
async function check(m: Machine, before: Before, from: number, to: number, what: string): Promise<number> {
  const storage = m.storage();
  await settleGrow(storage, DISK, 'vol');
  expect({ what, intent: m.texts.has(growIntentPath(DISK)) }).toEqual({ what, intent: false });
  const size = m.file.size;
  expect({ what, size: size === from || size === to }).toEqual({ what, size: true });
  const location = await locateMetadata(storage, DISK, { kind: 'internal' });
  const data = await storage.open(DISK);
  const md = await Metadata.open(storage, location, 'vol', data);
  expect({ what, uuids: md.sb.uuids, flags: md.sb.flags, laSize: md.sb.laSize }).toEqual({
    what,
    uuids: before.uuids,
    flags: before.flags,
    laSize: before.laSize,
  });
  expect({ what, bits: md.bitmap.count }).toEqual({ what, bits: before.bits.length });
  for (const b of before.bits) expect({ what, b, set: md.bitmap.test(b) }).toEqual({ what, b, set: true });
  expect(md.sb.bitmapBits * BLOCK_SIZE).toBeGreaterThanOrEqual(location.dataCapacity);
  const al = new ActivityLog({ file: data, offset: location.offset + AL_OFFSET, bytes: AL_BYTES }, 61);
  expect({ what, extents: (await al.recover()).sort() }).toEqual({ what, extents: before.extents });
  for (const b of DATA_BLOCKS)
    expect({ what, b, same: (await data.read(b * BLOCK_SIZE, BLOCK_SIZE)).equals(pattern(b)) }).toEqual({
      what,
      b,
      same: true,
    });
  return size;
}

describe('growing a file with internal metadata', () => {
  const from = internalFileBytesFor(8 * MiB);
  const to = internalFileBytesFor(Math.max(24 * MiB, from));

  test('the new end holds the metadata past the old end, with room for the grown data', () => {
    // The area moves wholly past the old end: a crash never finds it half overwritten.
    expect(internalLocation(DISK, to).offset).toBeGreaterThanOrEqual(from);
    for (const want of [8 * MiB + 1, 96 * MiB, 128 * MiB + 1, 3 * 1024 * MiB]) {
      const bytes = internalFileBytesFor(want);
      expect(bytes % BLOCK_SIZE).toBe(0);
      expect(internalLocation(DISK, bytes).dataCapacity).toBeGreaterThanOrEqual(want);
      // The smallest such file: one block less holds less.
      expect(internalLocation(DISK, bytes - BLOCK_SIZE).dataCapacity).toBeLessThan(want);
    }
  });

  test('a crash at every step, then a power loss, leaves whole metadata at the old size or the new', async () => {
    const sizes = new Set<number>();
    let points = 0;
    for (let crashAt = 1; ; crashAt++) {
      const { m, before } = await prepare(from);
      const finished = await grow(m, from, to, crashAt);
      if (finished) {
        expect(await check(m, before, from, to, 'no crash')).toBe(to);
        break;
      }
      // Several power-loss outcomes of the same crash, each from the same state.
      const snapshot = {
        durable: new Map(m.file.durable),
        cache: new Map(m.file.cache),
        size: m.file.size,
        durableSize: m.durableSize,
        texts: new Map(m.texts),
      };
      for (const [seed, keep] of [
        [1, 0],
        [2, 1],
        [3, 0.5],
        [4, 0.5],
      ] as const) {
        m.file = new SimFile(DISK, snapshot.size);
        for (const [k, v] of snapshot.durable) m.file.durable.set(k, v);
        for (const [k, v] of snapshot.cache) m.file.cache.set(k, v);
        m.durableSize = snapshot.durableSize;
        m.texts.clear();
        for (const [k, v] of snapshot.texts) m.texts.set(k, v);
        m.powerLoss(new Rng(seed * 1000 + crashAt), keep);
        sizes.add(await check(m, before, from, to, `crash at ${crashAt}, power loss keep ${keep} seed ${seed}`));
      }
      points++;
    }
    // The search reached both outcomes: rolled back early, kept once the superblock was durable.
    expect(points).toBeGreaterThan(5);
    expect([...sizes].sort()).toEqual([from, to].sort());
  });

  test('a stray intent file that tandem did not write stops the attach and touches nothing', async () => {
    const { m } = await prepare(from);
    m.texts.set(growIntentPath(DISK), 'not json');
    await expect(settleGrow(m.storage(), DISK, 'vol')).rejects.toThrow(/not a grow record tandem wrote/);
    await expect(locateMetadata(m.storage(), DISK, { kind: 'internal' })).rejects.toThrow(/was moving/);
    expect(m.file.size).toBe(from);
  });
});
