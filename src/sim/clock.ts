// Simulated time: one event queue for the whole simulated world. The clock of
// each engine, the disks' completions and the network's deliveries are events
// on it; the runner pops one event at a time, lets the promise chains it
// started run to quiescence, and checks the invariants. Nothing else schedules
// work, so the order of everything is a function of the seed.
import type { Clock, Timer } from '../replication/world.ts';

interface Event {
  at: number;
  seq: number;
  fn: () => void;
  /** The owner's incarnation: an event of a process that died since is dropped. */
  alive: () => boolean;
  cancelled: boolean;
}

/** A binary min-heap of events by (time, insertion order). */
class Heap {
  readonly #a: Event[] = [];

  get size(): number {
    return this.#a.length;
  }

  push(e: Event): void {
    const a = this.#a;
    a.push(e);
    let i = a.length - 1;
    while (i > 0) {
      const p = (i - 1) >> 1;
      if (less(a[p]!, a[i]!)) break;
      [a[p], a[i]] = [a[i]!, a[p]!];
      i = p;
    }
  }

  pop(): Event | undefined {
    const a = this.#a;
    if (a.length === 0) return undefined;
    const top = a[0]!;
    const last = a.pop()!;
    if (a.length > 0) {
      a[0] = last;
      let i = 0;
      for (;;) {
        const l = 2 * i + 1;
        const r = l + 1;
        let m = i;
        if (l < a.length && less(a[l]!, a[m]!)) m = l;
        if (r < a.length && less(a[r]!, a[m]!)) m = r;
        if (m === i) break;
        [a[m], a[i]] = [a[i]!, a[m]!];
        i = m;
      }
    }
    return top;
  }

  peek(): Event | undefined {
    return this.#a[0];
  }
}

function less(x: Event, y: Event): boolean {
  return x.at < y.at || (x.at === y.at && x.seq < y.seq);
}

const ALWAYS = (): boolean => true;

export class EventQueue {
  #now = 0;
  #seq = 0;
  readonly #heap = new Heap();
  /** Events run so far. */
  steps = 0;

  get now(): number {
    return this.#now;
  }

  /** Schedules `fn` at now + delay (ms, fractions allowed). */
  at(delay: number, fn: () => void, alive: () => boolean = ALWAYS): Timer {
    const e: Event = { at: this.#now + Math.max(0, delay), seq: this.#seq++, fn, alive, cancelled: false };
    this.#heap.push(e);
    return {
      cancel: () => {
        e.cancelled = true;
      },
    };
  }

  /** The time of the next live event, or undefined. */
  nextTime(): number | undefined {
    for (;;) {
      const e = this.#heap.peek();
      if (e === undefined) return undefined;
      if (!e.cancelled && e.alive()) return e.at;
      this.#heap.pop();
    }
  }

  /** Runs the next event (advancing time to it); false when none is left before `until`. */
  runOne(until: number): boolean {
    for (;;) {
      const e = this.#heap.peek();
      if (e === undefined || e.at > until) {
        if (this.#now < until && e === undefined) this.#now = until;
        if (e !== undefined && e.at > until) this.#now = Math.max(this.#now, until);
        return false;
      }
      this.#heap.pop();
      if (e.cancelled || !e.alive()) continue;
      this.#now = e.at;
      this.steps++;
      e.fn();
      return true;
    }
  }

  /** A Clock for one process: its timers die with its incarnation. */
  clock(alive: () => boolean): Clock {
    return {
      now: () => this.#now,
      after: (ms, fn) => this.at(ms, fn, alive),
      every: (ms, fn) => {
        let t: Timer | undefined;
        let stopped = false;
        const tick = (): void => {
          if (stopped) return;
          t = this.at(ms, tick, alive);
          fn();
        };
        t = this.at(ms, tick, alive);
        return {
          cancel: () => {
            stopped = true;
            t?.cancel();
          },
        };
      },
      sleep: (ms) =>
        new Promise<void>((resolve) => {
          this.at(ms, resolve, alive);
        }),
    };
  }
}
