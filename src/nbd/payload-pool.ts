// Write payloads of a given size, reused. A 1 MiB write payload is an ArrayBuffer
// outside V8's heap; allocating one per request makes the garbage collector run
// for the external memory alone (15% of the event loop in `npm run bench`'s
// sequential writes). Payloads are handed back when the backend has settled the
// write (NbdExport.write: the data is the backend's only until then).

/** Payloads smaller than this come from Node's own pool (or are cheap enough). */
export const POOLED_PAYLOAD_MIN = 64 * 1024;

export class PayloadPool {
  readonly #free = new Map<number, Buffer[]>();
  /** Buffers this pool handed out: only those may come back (never a view of something else). */
  readonly #ours = new WeakSet<Buffer>();
  readonly #maxBytes: number;
  #freeBytes = 0;

  constructor(maxBytes: number) {
    this.#maxBytes = maxBytes;
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
      const fresh = Buffer.allocUnsafeSlow(length);
      this.#ours.add(fresh);
      return fresh;
    }
    return Buffer.allocUnsafe(length);
  }

  /** Returns a buffer from take() once nobody uses it any more; anything else is ignored. */
  give(buf: Buffer): void {
    if (!this.#ours.has(buf) || this.#freeBytes + buf.length > this.#maxBytes) return;
    let list = this.#free.get(buf.length);
    if (list === undefined) this.#free.set(buf.length, (list = []));
    list.push(buf);
    this.#freeBytes += buf.length;
  }
}
