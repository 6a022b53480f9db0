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
import type { Deferred } from './deferred.ts';

export interface TlRequest {
  readonly seq: number;
  readonly offset: number;
  readonly length: number;
  readonly epoch: number;
  /** Protocol A's ack point: handed to the network. */
  readonly sent: Deferred<boolean>;
  /** Protocol B's: the peer has it in memory (RECV_ACK). */
  readonly received: Deferred<boolean>;
  /** Protocol C's: the peer wrote it (WRITE_ACK), or could not (NEG_ACK, lost link: false). */
  readonly written: Deferred<boolean>;
  /** Its epoch is on the peer's stable storage (BARRIER_ACK), or not (an error, a lost link: false). */
  readonly durable: Deferred<boolean>;
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

  add(r: Omit<TlRequest, 'epoch'>, now: number): TlRequest {
    const e = this.#open;
    if (e.requests.length === 0) (e as { openedAt: number }).openedAt = now;
    const req: TlRequest = { ...r, epoch: e.number };
    e.requests.push(req);
    e.bytes += r.length;
    this.#bySeq.set(r.seq, req);
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
