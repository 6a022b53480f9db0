// What the data on each node must be, kept independently of the engines, and the
// checks against it. The guarantees, as the application sees them:
//
//   no acknowledged write is lost  A read returns the last acknowledged write of
//     the block (or one issued after it). A write is given up only when every node
//     that held it lost power before it was durable there, or when a person or an
//     after-sb policy chose to discard that node's data (a split-brain victim), or
//     when every node that held it lost power before a FLUSH (or FUA) covered it: a
//     power cut of the whole pair keeps what was flushed, as on any disk with a
//     volatile cache, even where one node happened to have made a write durable by
//     itself (seed 12448: no resync direction can keep both nodes' unflushed writes).
//   split brain is always detected  Two nodes that each hold acknowledged writes
//     the other lacks never connect as if in sync, and neither silently becomes
//     the other's SyncTarget.
//   converged disks are identical  (checked by the runner at settle points).
//
// Each node has a lineage: per block, the acknowledged writes it must hold, in
// order. A write acknowledged by a Primary that replicates it joins the peer's
// lineage too (under protocol C the peer wrote it; under A/B it may not have, so
// there it is uncertain). FLUSH makes writes durable on the nodes it reached; a
// power loss makes the node's non-durable writes uncertain ("lost": they may or
// may not have survived). A finished resync copies the source's lineage to the
// target — after checking that the target held nothing the source lacks, unless
// the target was a split-brain victim by a person's or a policy's choice.
//
// Write ids grow with the issue order, and the application never has two writes
// to one block in flight on a node, so "issued later" is "larger id".

export interface Entry {
  w: number;
  /** Acknowledgement order: a FLUSH covers the writes acknowledged before it was issued. */
  a: number;
  durable: boolean;
  /** May be missing (a power loss hit it before it was durable). */
  lost: boolean;
  /** Covered by a completed FLUSH or FUA the application saw (its contract for durability). */
  flushed?: boolean;
  /** This node lost power before a FLUSH covered it. */
  cut?: boolean;
}

type Lineage = Map<number, Entry[]>;

export interface Violation {
  invariant: string;
  detail: string;
}

export class Oracle {
  readonly #lineage = new Map<string, Lineage>();
  /** Writes issued to a node and not acknowledged (in flight, or failed): a read may see them. */
  readonly #maybe = new Map<string, Map<number, Set<number>>>();
  readonly violations: Violation[] = [];
  /** Per SyncTarget whose link dropped mid-resync: its source's lineage at that moment. */
  readonly #atParting = new Map<string, { lineage: Lineage; maybe: Map<number, Set<number>> }>();

  constructor(nodes: string[]) {
    for (const n of nodes) {
      this.#lineage.set(n, new Map());
      this.#maybe.set(n, new Map());
    }
  }

  private lin(node: string): Lineage {
    return this.#lineage.get(node)!;
  }

  private entries(node: string, block: number): Entry[] {
    const l = this.lin(node);
    let e = l.get(block);
    if (!e) {
      e = [];
      l.set(block, e);
    }
    return e;
  }

  fail(invariant: string, detail: string): void {
    this.violations.push({ invariant, detail });
  }

  /** A write was issued on `node` (and may reach `peer` too). */
  issued(node: string, peer: string | undefined, block: number, w: number): void {
    for (const n of peer ? [node, peer] : [node]) {
      const m = this.#maybe.get(n)!;
      let s = m.get(block);
      if (!s) {
        s = new Set();
        m.set(block, s);
      }
      s.add(w);
    }
  }

  /**
   * Acknowledged on `node`. `peer`: the node the Primary said it replicates to at that
   * moment (Connected or SyncSource with the peer taking writes); `certain`: the protocol
   * says the peer wrote it (C), or only that it was sent/received (A/B).
   */
  acked(
    node: string,
    block: number,
    w: number,
    a: number,
    fua: boolean,
    peer: string | undefined,
    certain: boolean,
    localDisk = true,
    peerRestarted = false,
  ): void {
    // A Primary without a disk of its own (detached after an I/O error) holds nothing itself.
    if (localDisk) this.entries(node, block).push({ w, a, durable: fua, lost: false, flushed: fua });
    // The peer's copy may already be gone if its machine restarted since the write was sent.
    if (peer)
      this.entries(peer, block).push({
        w,
        a,
        durable: fua && certain,
        lost: !certain || peerRestarted,
        flushed: fua && certain,
        cut: peerRestarted,
      });
  }

  /**
   * A FLUSH completed on `node`, reaching `peer` too (the pair in sync); it covers the writes
   * acknowledged (order ≤ upTo) before it was issued. The peer's disk now durably equals this
   * node's: what this node holds for certain is certain there too, and what this node may have
   * lost (a power loss before it was durable) the peer may lack as well.
   */
  flushed(node: string, upTo: number, peer: string | undefined): void {
    for (const entries of this.lin(node).values())
      for (const e of entries)
        if (e.a <= upTo && !e.lost) {
          e.durable = true;
          e.flushed = true;
        }
    if (!peer) return;
    for (const [block, entries] of this.lin(peer)) {
      const mine = new Map((this.lin(node).get(block) ?? []).map((e) => [e.w, e]));
      for (const e of entries)
        if (e.a <= upTo) {
          const m = mine.get(e.w);
          e.durable = true;
          e.flushed = true;
          e.lost = m ? m.lost : e.lost;
        }
    }
  }

  /**
   * `node`'s disk failed (an I/O error detached it): the engine no longer trusts anything on
   * it (it comes back Inconsistent and wholly out of sync), and neither does the oracle.
   */
  diskFailed(node: string): void {
    for (const entries of this.lin(node).values()) for (const e of entries) e.lost = true;
  }

  powerLoss(node: string): void {
    for (const entries of this.lin(node).values())
      for (const e of entries) {
        if (!e.durable) e.lost = true;
        if (!e.flushed) e.cut = true;
      }
  }

  /** The last entry that must be there, and the ids a read may also return. */
  acceptable(node: string, block: number): { must: number; also: number[] } {
    const entries = this.lin(node).get(block) ?? [];
    let i = entries.length - 1;
    while (i >= 0 && entries[i]!.lost) i--;
    const must = i >= 0 ? entries[i]!.w : 0;
    const also = entries.slice(i + 1).map((e) => e.w);
    for (const m of this.#maybe.get(node)!.get(block) ?? []) if (m > must) also.push(m);
    return { must, also };
  }

  /** Writes that were TRIM or WRITE_ZEROES: their sectors read as zeroes, which decode as id 0. */
  readonly #zeroWrites = new Set<number>();

  /** Write `w` zeroes its blocks (a sector read back as zeroes may be it). */
  zeroWrite(w: number): void {
    this.#zeroWrites.add(w);
  }

  /** A read of `block` on `node` returned, per 512-byte sector, these write ids (0: never written, or zeroed). */
  read(node: string, block: number, sectors: number[], what: string): void {
    const { must, also } = this.acceptable(node, block);
    const ok = new Set([must, ...also]);
    // A zeroed sector cannot say which write zeroed it: 0 stands for any acceptable zero write.
    if ([must, ...also].some((w) => this.#zeroWrites.has(w))) ok.add(0);
    const bad = sectors.filter((s) => !ok.has(s));
    if (bad.length > 0)
      this.fail(
        'no acknowledged write is lost',
        `${what}: ${node} block ${block} read sectors of write(s) ${[...new Set(bad)].join(',')}; it must hold write ${must}${also.length ? ` or a later one of ${also.join(',')}` : ''}`,
      );
  }

  /** Writes `node` holds that `other` does not (ignoring ones `node` may have lost). */
  private unique(node: string, other: string): { block: number; w: number }[] {
    const out: { block: number; w: number }[] = [];
    const theirs = this.lin(other);
    for (const [block, entries] of this.lin(node)) {
      const known = new Set((theirs.get(block) ?? []).map((e) => e.w));
      for (const e of entries) if (!e.lost && !known.has(e.w)) out.push({ block, w: e.w });
    }
    return out;
  }

  /** `a` and `b` connected and agreed they hold the same data (no resync). */
  connectedInSync(a: string, b: string): void {
    for (const [x, y] of [
      [a, b],
      [b, a],
    ] as const) {
      const u = this.unique(x, y);
      if (u.length > 0)
        this.fail(
          'split brain is always detected',
          `${x} and ${y} connected without a resync, but ${x} holds acknowledged write(s) ${y} lacks: ${fmt(u)}`,
        );
    }
    // They are the same from here: keep, per block, the longer history (the other is a prefix or a lost copy).
    for (const block of new Set([...this.lin(a).keys(), ...this.lin(b).keys()])) {
      const ea = this.lin(a).get(block) ?? [];
      const eb = this.lin(b).get(block) ?? [];
      const merged = mergeEntries(ea, eb);
      this.lin(a).set(
        block,
        merged.map((e) => ({ ...e })),
      );
      this.lin(b).set(
        block,
        merged.map((e) => ({ ...e })),
      );
    }
  }

  /**
   * `target` is about to be overwritten from `source` (a resync decided at connect).
   * `victim`: the target's own writes are discarded by a person's or a policy's choice.
   */
  resyncStarts(target: string, source: string, victim: boolean, why: string): void {
    // Until it finishes, the target holds a mix of its own and the source's blocks.
    const maybe = this.#maybe.get(target)!;
    for (const [block, entries] of this.lin(source)) {
      let s = maybe.get(block);
      if (!s) {
        s = new Set();
        maybe.set(block, s);
      }
      for (const e of entries) s.add(e.w);
    }
    if (victim) {
      // Chosen: the target's own writes are given up now, even if this resync is cut short
      // and a later one finishes the job (seed 15030: the victim of after-sb-1pri lost its
      // link mid-resync, and the next connect's bitmap resync was not a new victim choice).
      const theirs = this.lin(source);
      for (const [block, entries] of this.lin(target)) {
        const known = new Set((theirs.get(block) ?? []).map((e) => e.w));
        for (const e of entries) if (!known.has(e.w)) e.lost = true;
      }
      return;
    }
    const u = this.unique(target, source);
    if (u.length > 0)
      this.fail(
        'split brain is always detected',
        `${target} became SyncTarget of ${source} (${why}) and would lose acknowledged write(s) ${source} lacks: ${fmt(u)}`,
      );
  }

  /** The resync finished: the target holds the source's data, durably. */
  /**
   * `target`'s resync finished: it holds `source`'s data now, durably. `connected`: the link
   * still stood. If it had dropped (SYNC_DONE and the last blocks were already in), the
   * target holds what the source held when they parted, not what the source wrote since;
   * and of the writes mirrored to it, only what its own lineage says it got for certain.
   */
  resyncDone(target: string, source: string, connected: boolean): void {
    const from = connected
      ? { lineage: this.lin(source), maybe: this.#maybe.get(source)! }
      : this.#atParting.get(target);
    if (!from) {
      this.fail('the simulator is consistent', `${target} finished a resync from ${source} it never parted from`);
      return;
    }
    const own = this.lin(target);
    const copy: Lineage = new Map();
    for (const [block, entries] of from.lineage) {
      const mine = new Map((own.get(block) ?? []).map((e) => [e.w, e]));
      copy.set(
        block,
        entries.map((e) => {
          const m = connected ? undefined : mine.get(e.w);
          return m ? { ...m } : { ...e, durable: !e.lost, cut: false };
        }),
      );
    }
    this.#lineage.set(target, copy);
    this.#maybe.set(target, cloneMaybe(from.maybe));
  }

  /** A resync toward `target` was running when its link to `source` dropped: remember what the source held. */
  partedDuringResync(target: string, source: string): void {
    this.#atParting.set(target, {
      lineage: new Map([...this.lin(source)].map(([b, es]) => [b, es.map((e) => ({ ...e }))])),
      maybe: cloneMaybe(this.#maybe.get(source)!),
    });
  }

  /**
   * A person forced `node` Primary while its disk was Inconsistent (no whole copy was left):
   * from here it holds whatever its disk holds; none of its writes is certain any more.
   */
  forcedInconsistent(node: string): void {
    for (const entries of this.lin(node).values()) for (const e of entries) e.lost = true;
  }

  /** The latest write of `block` that some node still holds for certain. */
  latestAlive(block: number): number {
    // Writes every holder lost power with before a FLUSH covered them may be gone (see the top).
    const uncut = new Set<number>();
    for (const l of this.#lineage.values()) for (const e of l.get(block) ?? []) if (!e.cut) uncut.add(e.w);
    let best = 0;
    for (const l of this.#lineage.values())
      for (const e of l.get(block) ?? []) if (!e.lost && uncut.has(e.w) && e.w > best) best = e.w;
    return best;
  }

  /**
   * Managed mode: `node` became Primary; it must hold every acknowledged write some node
   * still holds for certain. `read` says what the node's disk holds now (sector write ids).
   */
  promoted(node: string, read: (block: number) => number[] | string): void {
    const missing: { block: number; w: number }[] = [];
    for (const block of this.blocks()) {
      const latest = this.latestAlive(block);
      if (latest === 0) continue;
      const ids = read(block);
      if (typeof ids === 'string') {
        this.fail('no acknowledged write is lost', `${node} was promoted with block ${block} unreadable: ${ids}`);
        continue;
      }
      // Older than the latest write another node holds: that write would be lost. (A zeroed
      // sector reads as 0: fine when a zero write at least as new may be what it holds.)
      const { must, also } = this.acceptable(node, block);
      const zeroOk = [must, ...also].some((w) => w >= latest && this.#zeroWrites.has(w));
      if (ids.some((id) => id < latest && !(id === 0 && zeroOk))) missing.push({ block, w: latest });
    }
    if (missing.length > 0)
      this.fail(
        'no acknowledged write is lost',
        `${node} was promoted without acknowledged write(s) another node holds: ${fmt(missing)}; block ${missing[0]!.block}: ${this.describe(missing[0]!.block)}`,
      );
  }

  /** Each node's history of one block, for failure reports: w<id>[d: durable][?: may be lost]. */
  describe(block: number): string {
    return [...this.#lineage]
      .map(
        ([n, l]) =>
          `${n} [${(l.get(block) ?? []).map((e) => `w${e.w}${e.durable ? 'd' : ''}${e.lost ? '?' : ''}`).join(' ')}]`,
      )
      .join(', ');
  }

  /** Blocks that any node's lineage mentions. */
  blocks(): number[] {
    const out = new Set<number>();
    for (const l of this.#lineage.values()) for (const b of l.keys()) out.add(b);
    return [...out].sort((x, y) => x - y);
  }
}

function fmt(u: { block: number; w: number }[]): string {
  const shown = u.slice(0, 6).map((x) => `block ${x.block} write ${x.w}`);
  return shown.join(', ') + (u.length > 6 ? ` and ${u.length - 6} more` : '');
}

/** Two histories of one block that should describe the same data: the longer, certain where either is. */
function mergeEntries(a: Entry[], b: Entry[]): Entry[] {
  const byId = new Map<number, Entry>();
  for (const e of [...a, ...b]) {
    const old = byId.get(e.w);
    byId.set(
      e.w,
      old
        ? {
            ...old,
            durable: old.durable || e.durable,
            lost: old.lost && e.lost,
            flushed: (old.flushed ?? false) || (e.flushed ?? false),
            cut: (old.cut ?? false) && (e.cut ?? false),
          }
        : { ...e },
    );
  }
  return [...byId.values()].sort((x, y) => x.w - y.w);
}

function cloneMaybe(m: Map<number, Set<number>>): Map<number, Set<number>> {
  return new Map([...m].map(([k, v]) => [k, new Set(v)]));
}
