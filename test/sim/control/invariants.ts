// What must hold after every step of a simulated run, checked on the API
// server's writes as they commit and on the engines as they change:
//
//   one Primary per epoch    no two nodes are ever ordered Primary at the same epoch
//   epochs only grow         the volume's epoch and each replica's never go back
//   every change has a cause the chosen Primary (status.primary) moves only with a
//                            recorded cause (status.lastRoleChange, a failover record,
//                            spec.primary, the force annotation); within an epoch a
//                            Primary order is never withdrawn; an engine is promoted or
//                            demoted only as its current order says
//   safe promotions          never a fenced node, never one without every acknowledged
//                            write, and no write is ever acknowledged by a node that
//                            lacks one acknowledged before it (no lost write, no two writers)
import { RoleAudit } from '../../lib/role-audit.ts';
import type { Change } from './api-server.ts';
import type { SimEngine } from './engine.ts';
import { NS, VOLUME, type World } from './world.ts';

type RvStatus = { primary?: string; epoch?: number; fence?: { node: string } };
type RvrSpec = { node: string; role: string; epoch: number; engine: string };

export class Invariants {
  readonly violations: string[] = [];
  readonly #w: World;
  /** The checks on the API server's writes, shared with the e2e suites. */
  readonly #audit: RoleAudit;

  constructor(w: World) {
    this.#w = w;
    this.#audit = new RoleAudit({
      log: (line) => {
        w.log(line);
        if (line.startsWith('VIOLATION: ')) this.violations.push(`t=${(w.s.t / 1000).toFixed(3)}s ${line.slice(11)}`);
      },
    });
    w.api.onChange = (c) => this.#onApi(c);
    w.pair.onRoleChange = (e, from, to, how) => this.#onRole(e, from, to, how);
    w.pair.onAck = (e, n) => this.#onAck(e, n);
  }

  get roleChanges(): RoleAudit['changes'] {
    return this.#audit.changes;
  }

  #fail(what: string): void {
    this.#w.log(`VIOLATION: ${what}`);
    this.violations.push(`t=${(this.#w.s.t / 1000).toFixed(3)}s ${what}`);
  }

  #onApi(c: Change): void {
    if (c.kind === 'rv') this.#audit.volume(c.old, c.obj, c.by);
    if (c.kind === 'rvr') this.#audit.replica(c.old, c.obj, c.by);
  }

  #onRole(e: SimEngine, from: string, to: string, how: string): void {
    const rv = this.#w.api.peek('rv', NS, VOLUME);
    const st = (rv?.status ?? {}) as RvStatus;
    const order = this.#w.api.peek('rvr', NS, `${VOLUME}-${e.node}`)?.spec as RvrSpec | undefined;
    this.#w.log(`engine ${e.node}: ${from} -> ${to} (${how}); volume: primary ${st.primary} epoch ${st.epoch}`);
    if (to === 'Primary') {
      if (order?.role !== 'Primary')
        this.#fail(`${e.node} was promoted while its current order is ${order?.role} (epoch ${order?.epoch})`);
      if (st.fence?.node === e.node && !how.includes('--force')) this.#fail(`${e.node} was promoted while fenced`);
      const missing = this.#w.pair.acked.length - (e.stored?.writes.size ?? 0);
      if (missing > 0) this.#fail(`${e.node} was promoted without ${missing} acknowledged write(s)`);
    } else if (how.startsWith('secondary')) {
      if (order?.role === 'Primary')
        this.#fail(
          `${e.node} was demoted while its current order is Primary (epoch ${order.epoch}): it acted on an old order`,
        );
      if (st.primary === e.node && order?.epoch === st.epoch)
        this.#fail(`${e.node} was demoted while the volume names it the Primary at epoch ${st.epoch}`);
    }
  }

  #onAck(e: SimEngine, n: number): void {
    // stored writes ⊆ acknowledged writes, so "has them all" is a count.
    const held = e.stored?.writes.size ?? 0;
    if (held !== n)
      this.#fail(
        `${e.node} acknowledged write ${n} holding only ${held} of the ${n} acknowledged (lost writes or two writers)`,
      );
  }
}
