// A keyed work queue as controller-runtime's: a key waiting is queued once however
// often it is added; a key being processed is never processed twice at once (an
// add during processing re-queues it after); failures back off per key
// (exponential, capped), success forgets the failures. Informer callbacks only
// add keys; workers take keys and reconcile.

import type { Clock } from './clock.ts';

export interface WorkQueueOptions {
  baseDelayMs?: number;
  maxDelayMs?: number;
  /** Timers from this clock (the simulator's virtual time); else setTimer/clearTimer, else real timers. */
  clock?: Clock;
  /** Injected for tests. */
  setTimer?: (fn: () => void, ms: number) => { unref?(): void } | unknown;
  clearTimer?: (t: unknown) => void;
}

export class WorkQueue {
  readonly #queue: string[] = [];
  readonly #queued = new Set<string>();
  readonly #processing = new Set<string>();
  readonly #dirty = new Set<string>();
  readonly #failures = new Map<string, number>();
  /** The pending delayed add of each key: its timer and when it fires (ms since the epoch). */
  readonly #timers = new Map<string, { timer: unknown; at: number }>();
  readonly #waiters: ((key: string | undefined) => void)[] = [];
  readonly #base: number;
  readonly #max: number;
  readonly #setTimer: NonNullable<WorkQueueOptions['setTimer']>;
  readonly #clearTimer: NonNullable<WorkQueueOptions['clearTimer']>;
  readonly #now: () => number;
  #shuttingDown = false;

  constructor(o: WorkQueueOptions = {}) {
    this.#base = o.baseDelayMs ?? 200;
    this.#max = o.maxDelayMs ?? 60_000;
    this.#setTimer =
      o.setTimer ?? (o.clock ? (fn, ms) => o.clock!.setTimer(fn, ms) : (fn, ms) => setTimeout(fn, ms).unref());
    this.#clearTimer =
      o.clearTimer ?? (o.clock ? (t) => o.clock!.clearTimer(t) : (t) => clearTimeout(t as NodeJS.Timeout));
    this.#now = o.clock ? () => o.clock!.now().getTime() : () => Date.now();
  }

  get length(): number {
    return this.#queue.length;
  }

  add(key: string): void {
    if (this.#shuttingDown) return;
    if (this.#processing.has(key)) {
      this.#dirty.add(key);
      return;
    }
    if (this.#queued.has(key)) return;
    const waiter = this.#waiters.shift();
    if (waiter) {
      this.#processing.add(key);
      waiter(key);
      return;
    }
    this.#queued.add(key);
    this.#queue.push(key);
  }

  /**
   * Adds the key after `ms`. A key has at most one pending delayed add, the one that fires
   * first (controller-runtime's delaying queue): a reconcile that asks to look again in 1 s
   * is not held back by a 30 s backstop asked for earlier.
   */
  addAfter(key: string, ms: number): void {
    if (this.#shuttingDown) return;
    if (ms <= 0) return this.add(key);
    const at = this.#now() + ms;
    const pending = this.#timers.get(key);
    if (pending) {
      if (pending.at <= at) return;
      this.#clearTimer(pending.timer);
    }
    this.#timers.set(key, {
      at,
      timer: this.#setTimer(() => {
        this.#timers.delete(key);
        this.add(key);
      }, ms),
    });
  }

  /** Re-adds the key after its next backoff delay; returns the delay. */
  addRateLimited(key: string): number {
    const n = this.#failures.get(key) ?? 0;
    this.#failures.set(key, n + 1);
    const delay = Math.min(this.#max, this.#base * 2 ** n);
    this.addAfter(key, delay);
    return delay;
  }

  forget(key: string): void {
    this.#failures.delete(key);
  }

  failures(key: string): number {
    return this.#failures.get(key) ?? 0;
  }

  /** The next key, or undefined once the queue shuts down. Call done(key) after processing. */
  get(): Promise<string | undefined> {
    const key = this.#queue.shift();
    if (key !== undefined) {
      this.#queued.delete(key);
      this.#processing.add(key);
      return Promise.resolve(key);
    }
    if (this.#shuttingDown) return Promise.resolve(undefined);
    return new Promise((resolve) => this.#waiters.push(resolve));
  }

  done(key: string): void {
    this.#processing.delete(key);
    if (this.#dirty.delete(key)) this.add(key);
  }

  /** Stops handing out keys; waiting get()s resolve undefined. */
  shutDown(): void {
    this.#shuttingDown = true;
    for (const t of this.#timers.values()) this.#clearTimer(t.timer);
    this.#timers.clear();
    for (const w of this.#waiters.splice(0)) w(undefined);
  }

  get busy(): number {
    return this.#processing.size;
  }
}
