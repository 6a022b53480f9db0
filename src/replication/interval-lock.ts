// Conflict detection for block ranges. Overlapping requests run strictly in
// arrival order; disjoint ones run concurrently. The Primary takes a range
// before it submits a write locally and sends it to the peer, so the peer
// receives overlapping writes in the order the Primary applied them; the
// Secondary takes the range as each DATA frame arrives, so it applies them in
// that same order. This is what keeps both disks byte-identical when a client
// has several overlapping writes in flight (DRBD: "conflicting requests").

interface Entry {
  start: number;
  end: number;
  done: Promise<void>;
  release: () => void;
}

export class IntervalLock {
  private readonly entries: Entry[] = [];

  get size(): number {
    return this.entries.length;
  }

  /**
   * Registers [offset, offset+length) now (synchronously, so arrival order is
   * the call order) and resolves with a release function once every earlier
   * overlapping range has been released.
   */
  acquire(offset: number, length: number): Promise<() => void> {
    const start = offset;
    const end = offset + length;
    const deps: Promise<void>[] = [];
    for (const e of this.entries) if (e.start < end && start < e.end) deps.push(e.done);
    let release!: () => void;
    const done = new Promise<void>((r) => {
      release = r;
    });
    const entry: Entry = { start, end, done, release };
    this.entries.push(entry);
    const unlock = (): void => {
      const i = this.entries.indexOf(entry);
      if (i >= 0) this.entries.splice(i, 1);
      entry.release();
    };
    if (deps.length === 0) return Promise.resolve(unlock);
    return Promise.all(deps).then(() => unlock);
  }

  /** Resolves when every range registered so far has been released. */
  async drain(): Promise<void> {
    await Promise.all(this.entries.map((e) => e.done));
  }
}
