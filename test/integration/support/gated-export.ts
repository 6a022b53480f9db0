// Wraps an NbdExport so a test can hold a backend call before it runs (to observe ordering,
// concurrency and backpressure through a real socket), make it fail with an errno code, and
// see the order in which calls started and finished.

import type { NbdExport } from '../../../src/nbd/index.ts';

export type BackendOp = 'read' | 'write' | 'flush' | 'trim' | 'writeZeroes';

export interface HeldCall {
  /** Resolves when the held call has reached the backend. */
  readonly started: Promise<void>;
  /** Lets the call run. */
  release(): void;
  /** Makes the call reject with an Error carrying this errno code (or a plain Error for null). */
  fail(code: string | null): void;
}

interface Gate {
  op: BackendOp;
  started: () => void;
  wait: Promise<string | null | undefined>; // undefined: release; string/null: fail
  open: (outcome: string | null | undefined) => void;
}

export class GatedExport implements NbdExport {
  readonly #inner: NbdExport;
  readonly #gates: Gate[] = [];
  #holdAll: Set<BackendOp> = new Set();
  #heldAll: Gate[] = [];
  /** `write@0 start`, `write@0 done`, `flush start` …, in the order they happened. */
  readonly events: string[] = [];
  readonly fuaSeen: boolean[] = [];
  readonly zeroFlags: { fua: boolean; noHole: boolean }[] = [];

  constructor(inner: NbdExport) {
    this.#inner = inner;
  }

  get size(): number {
    return this.#inner.size;
  }
  get readOnly(): boolean {
    return this.#inner.readOnly;
  }
  get minBlockSize(): number | undefined {
    return this.#inner.minBlockSize;
  }
  get description(): string | undefined {
    return this.#inner.description;
  }

  /** Holds the next call of `op`. */
  holdNext(op: BackendOp): HeldCall {
    let started!: () => void;
    const startedP = new Promise<void>((r) => (started = r));
    let open!: (o: string | null | undefined) => void;
    const wait = new Promise<string | null | undefined>((r) => (open = r));
    this.#gates.push({ op, started, wait, open });
    return { started: startedP, release: () => open(undefined), fail: (code) => open(code) };
  }

  /** Holds every call of `op` until releaseAll(), which also releases calls held by holdNext(). */
  holdAll(op: BackendOp): void {
    this.#holdAll.add(op);
  }

  releaseAll(): void {
    this.#holdAll.clear();
    this.#gates.length = 0;
    for (const g of this.#heldAll.splice(0)) g.open(undefined);
  }

  count(op: BackendOp, phase: 'start' | 'done' = 'start'): number {
    return this.events.filter((e) => e.startsWith(op) && e.endsWith(phase)).length;
  }

  async #gated<T>(op: BackendOp, label: string, run: () => Promise<T>): Promise<T> {
    this.events.push(`${label} start`);
    const i = this.#gates.findIndex((g) => g.op === op);
    let gate: Gate | undefined;
    if (i >= 0) {
      gate = this.#gates.splice(i, 1)[0]!;
      this.#heldAll.push(gate);
    } else if (this.#holdAll.has(op)) {
      let open!: (o: string | null | undefined) => void;
      gate = { op, started: () => {}, wait: new Promise((r) => (open = r)), open };
      this.#heldAll.push(gate);
    }
    if (gate !== undefined) {
      gate.started();
      const outcome = await gate.wait;
      if (outcome !== undefined) {
        this.events.push(`${label} failed`);
        throw outcome === null
          ? new Error('injected failure')
          : Object.assign(new Error(`injected ${outcome}`), { code: outcome });
      }
    }
    const result = await run();
    this.events.push(`${label} done`);
    return result;
  }

  read(offset: number, length: number): Promise<Buffer> {
    return this.#gated('read', `read@${offset}`, () => this.#inner.read(offset, length));
  }
  write(offset: number, data: Buffer, fua: boolean): Promise<void> {
    this.fuaSeen.push(fua);
    return this.#gated('write', `write@${offset}`, () => this.#inner.write(offset, data, fua));
  }
  flush(): Promise<void> {
    return this.#gated('flush', 'flush', () => this.#inner.flush());
  }
  trim(offset: number, length: number, fua: boolean): Promise<void> {
    return this.#gated('trim', `trim@${offset}`, () => this.#inner.trim!(offset, length, fua));
  }
  writeZeroes(offset: number, length: number, flags: { fua: boolean; noHole: boolean }): Promise<void> {
    this.zeroFlags.push(flags);
    return this.#gated('writeZeroes', `writeZeroes@${offset}`, () => this.#inner.writeZeroes!(offset, length, flags));
  }
}
