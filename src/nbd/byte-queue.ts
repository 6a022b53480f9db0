// A FIFO of received bytes kept as a list of the chunks the socket delivered.
// Nothing is concatenated on arrival: a reader takes a zero-copy view when the
// bytes it wants lie in one chunk, and copies exactly once (into a buffer of the
// final size) when they straddle chunks. This is what keeps Buffer.concat off the
// NBD hot path.
//
// A chunk may be pushed as *transient*: the caller will reuse its memory (the
// connection reads the socket into one staging buffer shared by every client).
// Nothing taken from a transient chunk is a view of it, and {@link own} copies
// what is left of it before the caller reuses the memory.

export class ByteQueue {
  #chunks: (Buffer | undefined)[] = [];
  /** Parallel to #chunks: true for a chunk whose memory the pusher will reuse. */
  #transient: boolean[] = [];
  /** Index of the first live chunk in #chunks (consumed chunks are dropped lazily). */
  #head = 0;
  /** Read position inside #chunks[#head]. */
  #offset = 0;
  #length = 0;

  /** Bytes queued and not yet consumed. */
  get length(): number {
    return this.#length;
  }

  push(chunk: Buffer, transient = false): void {
    if (chunk.length === 0) return;
    this.#chunks.push(chunk);
    this.#transient.push(transient);
    this.#length += chunk.length;
  }

  /** True if some queued bytes still live in a transient chunk. */
  get holdsTransient(): boolean {
    for (let i = this.#head; i < this.#chunks.length; i++) if (this.#transient[i]) return true;
    return false;
  }

  /** Copies the queued bytes out of transient chunks, so that their memory may be reused. */
  own(): void {
    if (!this.holdsTransient) return;
    const copy = Buffer.allocUnsafe(this.#length);
    this.copyTo(copy, 0, this.#length);
    this.push(copy);
  }

  /**
   * The front chunk and the read position in it, for in-place decoding of a
   * fixed-size header when {@link contiguous} says it is all there.
   */
  front(): { chunk: Buffer; offset: number } | null {
    const chunk = this.#chunks[this.#head];
    return chunk === undefined ? null : { chunk, offset: this.#offset };
  }

  /** Bytes readable from the front chunk without crossing into the next one. */
  contiguous(): number {
    const chunk = this.#chunks[this.#head];
    return chunk === undefined ? 0 : chunk.length - this.#offset;
  }

  /**
   * Removes and returns the next `n` bytes (n <= length). A view into the
   * received chunk when possible, otherwise one fresh buffer of exactly `n` bytes.
   */
  take(n: number): Buffer {
    if (n > this.#length) throw new RangeError(`ByteQueue.take(${n}) with only ${this.#length} bytes queued`);
    if (n === 0) return Buffer.alloc(0);
    const chunk = this.#chunks[this.#head]!;
    if (chunk.length - this.#offset >= n && !this.#transient[this.#head]) {
      const view = chunk.subarray(this.#offset, this.#offset + n);
      this.skip(n);
      return view;
    }
    const out = Buffer.allocUnsafe(n);
    this.copyTo(out, 0, n);
    return out;
  }

  /** Removes the next `n` bytes (n <= length), copying them into `dest` at `destOffset`. */
  copyTo(dest: Buffer, destOffset: number, n: number): void {
    if (n > this.#length) throw new RangeError(`ByteQueue.copyTo(${n}) with only ${this.#length} bytes queued`);
    let remaining = n;
    let at = destOffset;
    while (remaining > 0) {
      const chunk = this.#chunks[this.#head]!;
      const avail = chunk.length - this.#offset;
      const step = Math.min(avail, remaining);
      chunk.copy(dest, at, this.#offset, this.#offset + step);
      at += step;
      remaining -= step;
      this.#advance(step);
    }
  }

  /** Discards the next `n` bytes (n <= length). */
  skip(n: number): void {
    if (n > this.#length) throw new RangeError(`ByteQueue.skip(${n}) with only ${this.#length} bytes queued`);
    let remaining = n;
    while (remaining > 0) {
      const avail = this.#chunks[this.#head]!.length - this.#offset;
      const step = Math.min(avail, remaining);
      remaining -= step;
      this.#advance(step);
    }
  }

  /** Removes and returns everything queued, as views of the received chunks. */
  drain(): Buffer[] {
    const out: Buffer[] = [];
    for (let i = this.#head; i < this.#chunks.length; i++) {
      const chunk = this.#chunks[i]!;
      out.push(i === this.#head ? chunk.subarray(this.#offset) : chunk);
    }
    const transient = this.#transient.slice(this.#head);
    this.#chunks = [];
    this.#transient = [];
    this.#head = 0;
    this.#offset = 0;
    this.#length = 0;
    return out.map((b, i) => (transient[i] ? Buffer.from(b) : b)).filter((b) => b.length > 0);
  }

  #advance(step: number): void {
    this.#offset += step;
    this.#length -= step;
    if (this.#offset === this.#chunks[this.#head]!.length) {
      this.#chunks[this.#head] = undefined; // let the chunk be collected
      this.#head++;
      this.#offset = 0;
      if (this.#head === this.#chunks.length) {
        this.#chunks.length = 0;
        this.#transient.length = 0;
        this.#head = 0;
      } else if (this.#head >= 64 && this.#head * 2 >= this.#chunks.length) {
        this.#chunks = this.#chunks.slice(this.#head);
        this.#transient = this.#transient.slice(this.#head);
        this.#head = 0;
      }
    }
  }
}
