// Simulated disks with a volatile write cache. A write lands in the cache (what
// reads see at once); datasync moves what was cached when it was called to stable
// storage. Power loss empties the cache, except that each cached 512-byte sector
// may already have been written back, independently and at random: so a power
// loss tears multi-sector writes and reorders them, as a real disk and page cache
// may. A process crash keeps the cache (it belongs to the kernel). Faults: the
// next operations of a kind fail with EIO.
import type { BlockFile, Storage } from '../replication/world.ts';
import type { EventQueue } from './clock.ts';
import type { Rng } from './rng.ts';

export const SECTOR = 512;
const ZERO_SECTOR = Buffer.alloc(SECTOR);

export type DiskOp = 'read' | 'write' | 'sync';

/** A sector's contents and the order of the write that put them there. */
interface Sector {
  data: Buffer;
  seq: number;
}

export class SimFile {
  readonly path: string;
  size: number;
  /** Stable storage: sector index → contents (absent: zeroes). */
  readonly durable = new Map<number, Sector>();
  /** Written, not yet on stable storage. */
  readonly cache = new Map<number, Sector>();
  #seq = 0;
  /** Operations of a kind that will fail with EIO. */
  readonly failNext: Record<DiskOp, number> = { read: 0, write: 0, sync: 0 };
  /** Debugging: called for every write that lands (SIM_WATCH_BLOCK). */
  onWrite: ((offset: number, data: Buffer) => void) | undefined;

  constructor(path: string, size: number) {
    this.path = path;
    this.size = size;
  }

  /** What a read sees now: the cache over stable storage. */
  view(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    const first = Math.floor(offset / SECTOR);
    const last = Math.ceil((offset + length) / SECTOR);
    for (let s = first; s < last; s++) {
      const src = (this.cache.get(s) ?? this.durable.get(s))?.data;
      if (!src) continue;
      const from = Math.max(offset, s * SECTOR);
      const to = Math.min(offset + length, (s + 1) * SECTOR);
      src.copy(out, from - offset, from - s * SECTOR, to - s * SECTOR);
    }
    return out;
  }

  /** The stable contents only (what survives a power loss with nothing written back). */
  durableView(offset: number, length: number): Buffer {
    const out = Buffer.alloc(length);
    for (let s = Math.floor(offset / SECTOR); s < Math.ceil((offset + length) / SECTOR); s++) {
      const src = this.durable.get(s)?.data;
      if (!src) continue;
      const from = Math.max(offset, s * SECTOR);
      const to = Math.min(offset + length, (s + 1) * SECTOR);
      src.copy(out, from - offset, from - s * SECTOR, to - s * SECTOR);
    }
    return out;
  }

  apply(offset: number, data: Uint8Array): void {
    const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
    this.onWrite?.(offset, buf);
    const first = Math.floor(offset / SECTOR);
    const last = Math.ceil((offset + buf.length) / SECTOR);
    for (let s = first; s < last; s++) {
      const from = Math.max(offset, s * SECTOR);
      const to = Math.min(offset + buf.length, (s + 1) * SECTOR);
      let sector: Buffer;
      if (from === s * SECTOR && to === (s + 1) * SECTOR)
        sector = Buffer.from(buf.subarray(from - offset, to - offset));
      else {
        sector = Buffer.from((this.cache.get(s) ?? this.durable.get(s))?.data ?? ZERO_SECTOR);
        buf.copy(sector, from - s * SECTOR, from - offset, to - offset);
      }
      this.cache.set(s, { data: sector, seq: ++this.#seq });
    }
    this.size = Math.max(this.size, offset + buf.length);
  }

  /** A new size: sectors past it are gone (a later growth reads zeroes there). */
  truncate(size: number): void {
    for (const m of [this.durable, this.cache]) for (const s of [...m.keys()]) if (s * SECTOR >= size) m.delete(s);
    const last = Math.floor(size / SECTOR);
    if (size % SECTOR !== 0)
      for (const m of [this.durable, this.cache]) {
        const sector = m.get(last);
        if (sector) m.set(last, { data: Buffer.from(sector.data).fill(0, size % SECTOR), seq: sector.seq });
      }
    this.size = size;
  }

  /** The sectors a datasync called now covers, as they are now. */
  snapshotCache(): Map<number, Sector> {
    return new Map(this.cache);
  }

  /**
   * Makes a snapshot durable. Sectors rewritten since stay cached with their newer
   * contents, and a snapshot never puts older contents over newer durable ones (two
   * syncs may complete in either order).
   */
  persist(snapshot: Map<number, Sector>): void {
    for (const [s, sector] of snapshot) {
      if ((this.durable.get(s)?.seq ?? 0) < sector.seq) this.durable.set(s, sector);
      if (this.cache.get(s) === sector) this.cache.delete(s);
    }
  }

  /** Power loss: each cached sector independently made it to stable storage or did not. */
  powerLoss(rng: Rng, keep: number): number {
    let lost = 0;
    for (const [s, sector] of this.cache) {
      if (rng.chance(keep)) this.durable.set(s, sector);
      else lost++;
    }
    this.cache.clear();
    return lost;
  }
}

export interface DiskTiming {
  /** Milliseconds per operation: [min, max], and the chance of a slow one (x20). */
  read: [number, number];
  write: [number, number];
  sync: [number, number];
  slow: number;
}

/** One node's disks (files by path) and the storage its engine sees. */
export class SimDisks {
  readonly files = new Map<string, SimFile>();
  readonly texts = new Map<string, string>();
  readonly #queue: EventQueue;
  readonly #rng: Rng;
  readonly #timing: DiskTiming;

  constructor(queue: EventQueue, rng: Rng, timing: DiskTiming) {
    this.#queue = queue;
    this.#rng = rng;
    this.#timing = timing;
  }

  add(path: string, size: number): SimFile {
    const f = new SimFile(path, size);
    this.files.set(path, f);
    return f;
  }

  file(path: string): SimFile {
    const f = this.files.get(path);
    if (!f) throw Object.assign(new Error(`${path}: no such file`), { code: 'ENOENT' });
    return f;
  }

  /** Power loss: every file's cache. Returns the sectors lost. */
  powerLoss(keep: number): number {
    let lost = 0;
    for (const f of this.files.values()) lost += f.powerLoss(this.#rng, keep);
    return lost;
  }

  private delay(op: DiskOp): number {
    const [lo, hi] = this.#timing[op];
    const d = lo + this.#rng.float() * (hi - lo);
    return this.#rng.chance(this.#timing.slow) ? d * 20 : d;
  }

  /** The storage an engine process sees; its completions are dropped once `alive` says it died. */
  storage(alive: () => boolean): Storage {
    const q = this.#queue;
    const op = <T>(file: SimFile, kind: DiskOp, run: () => T): Promise<T> =>
      new Promise<T>((resolve, reject) => {
        q.at(
          this.delay(kind),
          () => {
            if (file.failNext[kind] > 0) {
              file.failNext[kind]--;
              reject(Object.assign(new Error(`${file.path}: simulated I/O error (${kind})`), { code: 'EIO' }));
              return;
            }
            try {
              resolve(run());
            } catch (err) {
              reject(err);
            }
          },
          alive,
        );
      });
    const blockFile = (f: SimFile): BlockFile => ({
      path: f.path,
      read: (offset, length) => op(f, 'read', () => f.view(offset, length)),
      write: (offset, data) => {
        const copy = Buffer.from(data);
        return op(f, 'write', () => f.apply(offset, copy));
      },
      // A punched hole or a zeroed range: zeroes through the same volatile cache as a write
      // (a hole is not durable before a sync either). Never past the end: KEEP_SIZE.
      zeroRange: (offset, length) =>
        op(f, 'write', () => f.apply(offset, Buffer.alloc(Math.max(0, Math.min(length, f.size - offset))))),
      datasync: () => {
        const snapshot = f.snapshotCache();
        return op(f, 'sync', () => f.persist(snapshot));
      },
      // The size is the file system's metadata: journaled, kept through a power loss here.
      truncate: (size) =>
        op(f, 'write', () => {
          f.truncate(size);
        }),
      close: () => Promise.resolve(),
    });
    return {
      sizeOf: async (path) => ({ size: this.file(path).size, isBlockDevice: false }),
      open: async (path) => blockFile(this.file(path)),
      create: async (path, size) => blockFile(this.add(path, size)),
      mkdirp: async () => {},
      writeText: async (path, text) => {
        this.texts.set(path, text);
      },
      readText: async (path) => this.texts.get(path),
      writeTextDurable: async (path, text) => {
        this.texts.set(path, text);
      },
      removeDurable: async (path) => {
        this.texts.delete(path);
      },
    };
  }
}
