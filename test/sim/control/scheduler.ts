// Virtual time for the control-plane simulator: one queue of timed callbacks, run
// in time order (ties in the order they were set), with every promise chain
// settled between two callbacks. The controller, the agents and their runtime
// take this as their Clock, so a run is a pure function of its seed.
import type { Clock, Timer } from '../../../src/runtime/clock.ts';

type Entry = { at: number; seq: number; fn: () => void; cancelled: boolean };

/** xorshift32: small, fast, and the same sequence on every machine. */
export class Rng {
  #x: number;
  constructor(seed: number) {
    this.#x = seed >>> 0 || 0x9e3779b9;
  }
  next(): number {
    let x = this.#x;
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    this.#x = x;
    return x / 4294967296;
  }
  /** An integer in [lo, hi]. */
  int(lo: number, hi: number): number {
    return lo + Math.floor(this.next() * (hi - lo + 1));
  }
  pick<T>(a: readonly T[]): T {
    return a[Math.floor(this.next() * a.length)]!;
  }
  chance(p: number): boolean {
    return this.next() < p;
  }
}

/** A binary heap on (at, seq). */
class Heap {
  readonly #a: Entry[] = [];
  get size(): number {
    return this.#a.length;
  }
  #less(i: number, j: number): boolean {
    const x = this.#a[i]!;
    const y = this.#a[j]!;
    return x.at < y.at || (x.at === y.at && x.seq < y.seq);
  }
  #swap(i: number, j: number): void {
    const t = this.#a[i]!;
    this.#a[i] = this.#a[j]!;
    this.#a[j] = t;
  }
  push(e: Entry): void {
    const a = this.#a;
    a.push(e);
    for (let i = a.length - 1; i > 0; ) {
      const p = (i - 1) >> 1;
      if (!this.#less(i, p)) break;
      this.#swap(i, p);
      i = p;
    }
  }
  pop(): Entry | undefined {
    const a = this.#a;
    const top = a[0];
    const last = a.pop();
    if (a.length > 0 && last) {
      a[0] = last;
      for (let i = 0; ; ) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && this.#less(l, m)) m = l;
        if (r < a.length && this.#less(r, m)) m = r;
        if (m === i) break;
        this.#swap(i, m);
        i = m;
      }
    }
    return top;
  }
  peek(): Entry | undefined {
    return this.#a[0];
  }
}

const settle = () => new Promise<void>((r) => setImmediate(r));

export class Scheduler implements Clock {
  readonly epochMs: number;
  #now = 0;
  #seq = 0;
  readonly #heap = new Heap();
  /** Called after every step (invariants). */
  afterStep: (() => void) | undefined;
  steps = 0;

  constructor(epochMs = Date.parse('2026-12-06T00:00:00Z')) {
    this.epochMs = epochMs;
  }

  /** Milliseconds since the start of the run. */
  get t(): number {
    return this.#now;
  }

  now(): Date {
    return new Date(this.epochMs + this.#now);
  }

  setTimer(fn: () => void, ms: number): Timer {
    const e: Entry = { at: this.#now + Math.max(0, ms), seq: this.#seq++, fn, cancelled: false };
    this.#heap.push(e);
    return e;
  }

  clearTimer(t: Timer): void {
    if (t && typeof t === 'object' && 'cancelled' in t) (t as Entry).cancelled = true;
  }

  sleep(ms: number): Promise<void> {
    return new Promise((r) => this.setTimer(r, ms));
  }

  /** Runs callbacks until virtual time `until` (ms since start) or until `stop()` says so. */
  async runUntil(until: number, stop?: () => boolean): Promise<void> {
    await settle();
    for (;;) {
      const next = this.#heap.peek();
      if (!next || next.at > until) {
        this.#now = Math.max(this.#now, until);
        return;
      }
      this.#heap.pop();
      if (next.cancelled) continue;
      this.#now = next.at;
      next.fn();
      await settle();
      this.steps++;
      this.afterStep?.();
      if (stop?.()) return;
    }
  }
}
