// The local backing store's real I/O: sizes of files and block devices, exact
// reads and writes, and the inline fast path of the application's small requests.
import type { Stats } from 'node:fs';
import { readFile, stat, type FileHandle } from 'node:fs/promises';
import { read as fsRead, readSync, write as fsWrite, writeSync } from 'node:fs';
import { ERROR_CODES, TandemError } from './errors.ts';

/** glibc's encoding of dev_t. */
function majorMinor(rdev: number): [number, number] {
  const r = BigInt(rdev);
  const major = Number(((r >> 8n) & 0xfffn) | ((r >> 32n) & ~0xfffn));
  const minor = Number((r & 0xffn) | ((r >> 12n) & ~0xffn));
  return [major, minor];
}

export async function sizeOf(path: string): Promise<{ size: number; isBlockDevice: boolean }> {
  let st: Stats;
  try {
    st = await stat(path);
  } catch (err) {
    throw new TandemError(ERROR_CODES.backing, `${path}: cannot open backing device: ${(err as Error).message}`, 10, {
      cause: err,
    });
  }
  if (st.isBlockDevice()) {
    const [maj, min] = majorMinor(st.rdev);
    const sectors = Number((await readFile(`/sys/dev/block/${maj}:${min}/size`, 'utf8')).trim());
    return { size: sectors * 512, isBlockDevice: true };
  }
  if (st.isFile()) return { size: st.size, isBlockDevice: false };
  throw new TandemError(ERROR_CODES.backing, `${path}: not a block device or regular file`);
}

/**
 * Reads exactly `length` bytes (short reads past EOF of a sparse file return zeroes).
 * Uses callback fs.read on the descriptor: FileHandle.read costs about four times
 * as much per byte for large reads (1.69 s vs 0.43 s per GiB in 1 MiB reads here).
 */
export async function readExact(h: FileHandle, offset: number, length: number, into?: Buffer): Promise<Buffer> {
  const buf = into ?? Buffer.allocUnsafe(length);
  let done = 0;
  while (done < length) {
    const bytesRead = await new Promise<number>((resolve, reject) => {
      fsRead(h.fd, buf, done, length - done, offset + done, (err, n) => (err ? reject(err) : resolve(n)));
    });
    if (bytesRead === 0) {
      buf.fill(0, done, length);
      break;
    }
    done += bytesRead;
  }
  return buf;
}

export async function writeExact(h: FileHandle, offset: number, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.byteLength) {
    const bytesWritten = await new Promise<number>((resolve, reject) => {
      fsWrite(h.fd, data, done, data.byteLength - done, offset + done, (err, n) => (err ? reject(err) : resolve(n)));
    });
    if (bytesWritten === 0) throw new TandemError(ERROR_CODES.io, `short write at ${offset + done}`);
    done += bytesWritten;
  }
}

export interface BackingIoOptions {
  /** Requests up to this many bytes may run inline. Default 64 KiB. */
  readonly inlineMaxBytes?: number;
  /** An inline read slower than this (µs) is taken for a page-cache miss. Default 60. */
  readonly slowReadMicros?: number;
  /**
   * An inline write slower than this (µs) waited for the device (writeback, dirty throttling).
   * Default 250: a buffered write rarely waits, and when it does the threadpool cannot make it faster.
   */
  readonly slowWriteMicros?: number;
  /** Inline I/O stays off this long after a slow call (ms), doubled per consecutive slow probe. Default 10. */
  readonly backoffMs?: number;
  /** ... up to this (ms). Default 250. */
  readonly maxBackoffMs?: number;
  /** Time source in ms (tests). */
  readonly now?: () => number;
}

/** Weight of the latest inline call in a gate's slowness score (a moving average of 0 = fast, 1 = slow). */
const SLOW_WEIGHT = 0.25;
/** The gate closes on a slow call that brings the score to this: two slow calls in a row do, one among fast ones does not. */
const SLOW_SCORE_CLOSE = 0.4;

/** When inline calls of one kind (reads or writes) are allowed. */
class InlineGate {
  /** Inline calls are allowed from this time (ms). */
  openAt = 0;
  backoffMs: number;
  /** Moving average of recent inline calls being slow. */
  slowScore = 0;
  constructor(backoffMs: number) {
    this.backoffMs = backoffMs;
  }
}

/**
 * The local disk's hot path. Small reads and writes run inline (pread/pwrite on the event
 * loop) while they are served by the page cache; everything else, and everything for a while
 * after an inline call that had to wait for the device, goes through libuv's threadpool (where
 * up to UV_THREADPOOL_SIZE misses wait for the device in parallel).
 *
 * Why: a 4 KiB pread or pwrite that the page cache serves costs 2-5 µs, but a threadpool round
 * trip costs a queue hand-off, a thread wake-up and an event-loop wake-up on top, and on a
 * 2-core machine those context switches dominate: 4 KiB random reads went from ~55k to ~180k
 * IOPS inline (npm run bench). The guard bounds what inline I/O may cost the event loop (which
 * also answers the peer's pings): one call that missed the cache, then `backoffMs` of
 * threadpool I/O before the next inline attempt, doubling while the attempts keep missing. Large requests never run inline: a 1 MiB copy
 * into the page cache is better overlapped with receiving the next request.
 *
 * Semantics are the same either way: the returned promise settles when pread/pwrite returned,
 * so ordering, FUA (the caller's fdatasync after it) and the ack rules are untouched.
 */
export class BackingIo {
  readonly #handle: FileHandle;
  readonly #inlineMax: number;
  readonly #slowReadNs: bigint;
  readonly #slowWriteNs: bigint;
  readonly #minBackoffMs: number;
  readonly #maxBackoffMs: number;
  readonly #now: () => number;
  readonly #reads: InlineGate;
  readonly #writes: InlineGate;
  /** Calls that went inline, and inline calls found slow (for tests and diagnostics). */
  inlineCalls = 0;
  slowInlineCalls = 0;

  constructor(handle: FileHandle, opts: BackingIoOptions = {}) {
    this.#handle = handle;
    this.#inlineMax = opts.inlineMaxBytes ?? 64 * 1024;
    this.#slowReadNs = BigInt(opts.slowReadMicros ?? 60) * 1000n;
    this.#slowWriteNs = BigInt(opts.slowWriteMicros ?? 250) * 1000n;
    this.#minBackoffMs = opts.backoffMs ?? 10;
    this.#maxBackoffMs = opts.maxBackoffMs ?? 250;
    this.#now = opts.now ?? Date.now;
    this.#reads = new InlineGate(this.#minBackoffMs);
    this.#writes = new InlineGate(this.#minBackoffMs);
  }

  read(offset: number, length: number): Promise<Buffer> {
    if (length > this.#inlineMax || this.#now() < this.#reads.openAt) return readExact(this.#handle, offset, length);
    const buf = Buffer.allocUnsafe(length);
    const t0 = process.hrtime.bigint();
    let done: number;
    try {
      done = readSync(this.#handle.fd, buf, 0, length, offset);
    } catch (err) {
      return Promise.reject(err);
    }
    this.#judge(this.#reads, t0, this.#slowReadNs);
    if (done === length) return Promise.resolve(buf);
    // Short read (end of a sparse file, or a signal): finish it the ordinary way.
    return done === 0
      ? Promise.resolve(buf.fill(0))
      : readExact(this.#handle, offset + done, length - done, buf.subarray(done)).then(() => buf);
  }

  write(offset: number, data: Uint8Array): Promise<void> {
    if (data.length > this.#inlineMax || this.#now() < this.#writes.openAt)
      return writeExact(this.#handle, offset, data);
    const t0 = process.hrtime.bigint();
    let done: number;
    try {
      done = writeSync(this.#handle.fd, data, 0, data.length, offset);
    } catch (err) {
      return Promise.reject(err);
    }
    this.#judge(this.#writes, t0, this.#slowWriteNs);
    return done === data.length ? Promise.resolve() : writeExact(this.#handle, offset + done, data.subarray(done));
  }

  /**
   * After an inline call: slow calls close the gate for a while (longer each time in a row),
   * but not a single slow call among fast ones. On two cores shared with the client, the
   * event loop is now and then preempted in the middle of a page-cache pread; taking that
   * for a cache miss sent 10 ms of reads through the threadpool each time, and the 4 KiB
   * random read figure of `npm run bench` swung between 120k and 187k IOPS from run to run
   * (steady at 188k-192k with the gate never closing). Real misses come in runs, and a run
   * closes the gate by its second call.
   */
  #judge(gate: InlineGate, t0: bigint, slowNs: bigint): void {
    this.inlineCalls++;
    const slow = process.hrtime.bigint() - t0 > slowNs;
    gate.slowScore = gate.slowScore * (1 - SLOW_WEIGHT) + (slow ? SLOW_WEIGHT : 0);
    if (!slow) {
      gate.backoffMs = this.#minBackoffMs;
      return;
    }
    this.slowInlineCalls++;
    if (gate.slowScore < SLOW_SCORE_CLOSE) return;
    gate.openAt = this.#now() + gate.backoffMs;
    gate.backoffMs = Math.min(this.#maxBackoffMs, gate.backoffMs * 2);
  }
}
