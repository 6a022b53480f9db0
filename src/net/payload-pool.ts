// Write payloads of a given size, reused: NBD_CMD_WRITE payloads (src/nbd) and the
// peer's DATA/RS_DATA frames (src/replication). A 1 MiB payload is an ArrayBuffer
// outside V8's heap; allocating one per request makes the garbage collector run for
// the external memory alone (15% of the Primary's event loop in `npm run bench`'s
// sequential writes; on a Secondary receiving them, V8's concurrent marker and
// sweeper took about 12% of both cores), and fresh memory costs a page fault and a
// zeroed page per 4 KiB. Payloads are handed back once nobody reads them any more
// (NbdExport.write: the data is the backend's until its promise settles; a peer's
// frame is the engine's until it is on the local disk).

/** Payloads smaller than this come from Node's own pool (or are cheap enough). */
export const POOLED_PAYLOAD_MIN = 64 * 1024;

export class PayloadPool {
  readonly #free = new Map<number, Buffer[]>();
  /** Buffers this pool handed out: only those may come back (never a view of something else). */
  readonly #ours = new WeakSet<Buffer>();
  readonly #maxBytes: number;
  readonly #alloc: (length: number) => Buffer;
  #freeBytes = 0;

  /** `alloc`: makes a new large payload (default Buffer.allocUnsafeSlow: memory of its own, outside Node's shared pool). */
  constructor(maxBytes: number, alloc: (length: number) => Buffer = Buffer.allocUnsafeSlow) {
    this.#maxBytes = maxBytes;
    this.#alloc = alloc;
  }

  /** Bytes held for reuse. */
  get freeBytes(): number {
    return this.#freeBytes;
  }

  /** A buffer of exactly `length` bytes (contents undefined). */
  take(length: number): Buffer {
    if (length >= POOLED_PAYLOAD_MIN) {
      const b = this.#free.get(length)?.pop();
      if (b !== undefined) {
        this.#freeBytes -= length;
        return b;
      }
      const fresh = this.#alloc(length);
      this.#ours.add(fresh);
      return fresh;
    }
    return Buffer.allocUnsafe(length);
  }

  /** Returns a buffer from take() once nobody uses it any more; anything else is ignored. */
  give(buf: Buffer): void {
    if (!this.#ours.has(buf) || this.#freeBytes + buf.length > this.#maxBytes) return;
    let list = this.#free.get(buf.length);
    if (list === undefined) {
      list = [];
      this.#free.set(buf.length, list);
    }
    list.push(buf);
    this.#freeBytes += buf.length;
  }
}
