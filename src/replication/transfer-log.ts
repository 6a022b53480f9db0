// The Primary's transfer log (DRBD's drbd_req.h "transfer log"): every mirrored
// write, grouped in epochs, from the moment it is sent until the peer says the
// whole epoch is on stable storage (BARRIER_ACK). The peer's WRITE_ACK only says
// the write reached its page cache: a power loss there can still undo it, so the
// write stays here until its epoch is acknowledged. If the connection ends first,
// every write still here becomes a bitmap bit (drain), and the reconnect resyncs it.
//
// An epoch is closed (a BARRIER is sent) at an application FLUSH or FUA write,
// after max-epoch-size writes or max-epoch-bytes bytes, after epoch-ms of age, and
// when the activity log runs out of room (its extents stay hot until the epoch that
// wrote them is acknowledged). The peer answers epochs in order.
//
// A write stays here until its epoch's BARRIER_ACK: at 30,000 4 KiB writes a second that
// is thousands of writes, held long enough for V8 to promote them to its old space,
// where they stay as garbage until a full GC. So a request is small: its outcome at each
// acknowledgement point in two small integers, and a waiter only while someone waits
// (it used to carry a promise and two closures per point: a Primary's old space grew by
// tens of MiB under 4 KiB writes at QD32, docs/design/2026-12-07-engine-memory.md).

/** Where a mirrored write has got to, in the order the answers come. */
export const ACK_POINTS = {
  /** Protocol A's ack point: handed to the network. */
  sent: 1,
  /** Protocol B's: the peer has it in memory (RECV_ACK). */
  received: 2,
  /** Protocol C's: the peer wrote it (WRITE_ACK), or could not (NEG_ACK, lost link: false). */
  written: 4,
  /** Its epoch is on the peer's stable storage (BARRIER_ACK), or not (an error, a lost link: false). */
  durable: 8,
} as const;
export type AckPoint = keyof typeof ACK_POINTS;

interface Waiter {
  readonly point: AckPoint;
  readonly resolve: (ok: boolean) => void;
}

export class TlRequest {
  readonly seq: number;
  readonly offset: number;
  readonly length: number;
  readonly epoch: number;
  /** Bits of ACK_POINTS: settled, and settled as true. */
  #settled = 0;
  #ok = 0;
  #waiters: Waiter[] | undefined;

  constructor(seq: number, offset: number, length: number, epoch: number) {
    this.seq = seq;
    this.offset = offset;
    this.length = length;
    this.epoch = epoch;
  }

  /** The first outcome at a point is the one that counts. */
  settle(point: AckPoint, ok: boolean): void {
    const bit = ACK_POINTS[point];
    if ((this.#settled & bit) !== 0) return;
    this.#settled |= bit;
    if (ok) this.#ok |= bit;
    const waiters = this.#waiters;
    if (waiters === undefined) return;
    const rest = waiters.filter((w) => w.point !== point);
    this.#waiters = rest.length > 0 ? rest : undefined;
    for (const w of waiters) if (w.point === point) w.resolve(ok);
  }

  isSettled(point: AckPoint): boolean {
    return (this.#settled & ACK_POINTS[point]) !== 0;
  }

  /** The outcome at `point`, once there is one. */
  when(point: AckPoint): Promise<boolean> {
    const bit = ACK_POINTS[point];
    if ((this.#settled & bit) !== 0) return Promise.resolve((this.#ok & bit) !== 0);
    return new Promise<boolean>((resolve) => {
      const w: Waiter = { point, resolve };
      if (this.#waiters === undefined) this.#waiters = [w];
      else this.#waiters.push(w);
    });
  }
}

interface Epoch {
  readonly number: number;
  readonly requests: TlRequest[];
  bytes: number;
  readonly openedAt: number;
}

export type EpochAck = { ok: true; requests: TlRequest[] } | { ok: false; problem: string };

export class TransferLog {
  readonly #epochs: Epoch[] = [];
  readonly #bySeq = new Map<number, TlRequest>();
  #open: Epoch;

  constructor(firstEpoch = 1) {
    this.#open = { number: firstEpoch >>> 0, requests: [], bytes: 0, openedAt: 0 };
  }

  /** The epoch new writes join. */
  get openEpoch(): { number: number; writes: number; bytes: number; openedAt: number } {
    const e = this.#open;
    return { number: e.number, writes: e.requests.length, bytes: e.bytes, openedAt: e.openedAt };
  }

  /** Writes held (sent, their epoch not yet acknowledged). */
  get size(): number {
    return this.#bySeq.size;
  }

  /** Closed epochs the peer has not acknowledged yet. */
  get closedEpochs(): number {
    return this.#epochs.length;
  }

  add(seq: number, offset: number, length: number, now: number): TlRequest {
    const e = this.#open;
    if (e.requests.length === 0) (e as { openedAt: number }).openedAt = now;
    const req = new TlRequest(seq, offset, length, e.number);
    e.requests.push(req);
    e.bytes += length;
    this.#bySeq.set(seq, req);
    return req;
  }

  get(seq: number): TlRequest | undefined {
    return this.#bySeq.get(seq);
  }

  /** Closes the open epoch if it has writes; returns its number (send a BARRIER for it). */
  close(): number | undefined {
    const e = this.#open;
    if (e.requests.length === 0) return undefined;
    this.#epochs.push(e);
    this.#open = { number: (e.number + 1) >>> 0, requests: [], bytes: 0, openedAt: 0 };
    return e.number;
  }

  /** The newest closed epoch not yet acknowledged: a flush waits for it. */
  get newestClosed(): number | undefined {
    return this.#epochs[this.#epochs.length - 1]?.number;
  }

  /**
   * The peer acknowledged `epoch` with `writes` writes in it. Epochs are acknowledged
   * in the order they were closed; anything else means the stream is broken.
   */
  ack(epoch: number, writes: number): EpochAck {
    const e = this.#epochs[0];
    if (e === undefined || e.number !== epoch)
      return { ok: false, problem: `BARRIER_ACK for epoch ${epoch}, expected ${e === undefined ? 'none' : e.number}` };
    if (e.requests.length !== writes)
      return {
        ok: false,
        problem: `BARRIER_ACK for epoch ${epoch} counts ${writes} writes, it had ${e.requests.length}`,
      };
    this.#epochs.shift();
    for (const r of e.requests) this.#bySeq.delete(r.seq);
    return { ok: true, requests: e.requests };
  }

  /** The connection ended: every write still held, oldest first; the log starts over empty. */
  drain(): TlRequest[] {
    const all = [...this.#epochs.flatMap((e) => e.requests), ...this.#open.requests];
    this.#epochs.length = 0;
    this.#bySeq.clear();
    this.#open = { number: (this.#open.number + 1) >>> 0, requests: [], bytes: 0, openedAt: 0 };
    return all;
  }
}
