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
import { ROLE_CHANGE_REASONS } from '../../../src/api/replicated-volume.ts';
import type { Change, Obj } from './api-server.ts';
import type { SimEngine } from './engine.ts';
import { NS, VOLUME, type World } from './world.ts';

type RvStatus = {
  primary?: string;
  epoch?: number;
  fence?: { node: string };
  lastFailover?: { from: string; to: string; epoch: number };
  lastRoleChange?: { from?: string; to: string; epoch: number; reason: string };
};
type RvrSpec = { node: string; role: string; epoch: number; engine: string };

export class Invariants {
  readonly violations: string[] = [];
  readonly #w: World;
  /** epoch → the node ordered Primary in it. */
  readonly #orderedPrimary = new Map<number, string>();
  /** node → its last order. */
  readonly #lastOrder = new Map<string, { role: string; epoch: number }>();
  readonly #changes: { at: number; from: string | undefined; to: string | undefined; epoch: number; why: string }[] =
    [];

  constructor(w: World) {
    this.#w = w;
    w.api.onChange = (c) => this.#onApi(c);
    w.pair.onRoleChange = (e, from, to, how) => this.#onRole(e, from, to, how);
    w.pair.onAck = (e, n) => this.#onAck(e, n);
  }

  get roleChanges(): readonly {
    at: number;
    from: string | undefined;
    to: string | undefined;
    epoch: number;
    why: string;
  }[] {
    return this.#changes;
  }

  #fail(what: string): void {
    this.#w.log(`VIOLATION: ${what}`);
    this.violations.push(`t=${(this.#w.s.t / 1000).toFixed(3)}s ${what}`);
  }

  #onApi(c: Change): void {
    if (c.kind === 'rv') this.#onVolume(c.old, c.obj, c.by);
    if (c.kind === 'rvr') this.#onReplica(c.old, c.obj, c.by);
  }

  #onVolume(old: Obj | undefined, obj: Obj, by: string): void {
    const a = (old?.status ?? {}) as RvStatus;
    const b = (obj.status ?? {}) as RvStatus;
    if ((b.epoch ?? 0) < (a.epoch ?? 0))
      this.#fail(`the volume's epoch went back from ${a.epoch} to ${b.epoch} (by ${by})`);
    if (a.primary === b.primary) return;
    const spec = obj.spec as { primary?: string };
    const force = obj.metadata.annotations?.['tandem.dev/force-primary'];
    const epoch = b.epoch ?? 0;
    const record = b.lastRoleChange;
    this.#w.log(
      `api: status.primary ${a.primary ?? '(none)'} -> ${b.primary ?? '(none)'} at epoch ${epoch}${record ? ` (${record.reason})` : ''} by ${by}`,
    );
    if (b.primary === undefined) {
      this.#fail(`the chosen Primary ${a.primary} was dropped from the volume's status (epoch ${epoch}, by ${by})`);
      return;
    }
    if (b.fence?.node === b.primary) this.#fail(`${b.primary} was chosen Primary while fenced (epoch ${epoch})`);
    const failover =
      b.lastFailover?.epoch === epoch && b.lastFailover.to === b.primary && b.lastFailover.from === a.primary;
    let why: string | undefined;
    if (a.primary === undefined) why = 'initial placement';
    else if (failover) why = 'failover';
    else if (spec.primary === b.primary) why = "the user's spec.primary";
    else if (force === b.primary) why = 'the force annotation';
    if (!why) {
      this.#fail(
        `the Primary moved from ${a.primary} to ${b.primary} at epoch ${epoch} with no cause (spec.primary ${spec.primary ?? 'unset'}, no failover record, no force; by ${by})`,
      );
      why = 'NONE';
    }
    if (!record || record.epoch !== epoch || record.to !== b.primary || record.from !== a.primary)
      this.#fail(
        `the move from ${a.primary ?? '(none)'} to ${b.primary} at epoch ${epoch} is not recorded in status.lastRoleChange (${JSON.stringify(record)})`,
      );
    else if (!(ROLE_CHANGE_REASONS as readonly string[]).includes(record.reason))
      this.#fail(`status.lastRoleChange.reason ${record.reason} is not one of ${ROLE_CHANGE_REASONS.join(', ')}`);
    else if (
      (record.reason === 'InitialPlacement') !== (a.primary === undefined) ||
      (record.reason === 'Failover' && !failover) ||
      (record.reason === 'PreferredPrimary' && spec.primary !== b.primary) ||
      (record.reason === 'ForcePrimary' && force !== b.primary)
    )
      this.#fail(`status.lastRoleChange.reason ${record.reason} does not match what happened (${why})`);
    this.#changes.push({ at: this.#w.s.t, from: a.primary, to: b.primary, epoch, why });
  }

  #onReplica(old: Obj | undefined, obj: Obj, by: string): void {
    const a = old?.spec as RvrSpec | undefined;
    const b = obj.spec as RvrSpec;
    if (a && a.role === b.role && a.epoch === b.epoch && a.engine === b.engine) return;
    if (a && b.epoch < a.epoch)
      this.#fail(`${b.node}'s replica epoch went back from ${a.epoch} to ${b.epoch} (by ${by})`);
    if (b.role === 'Primary') {
      const other = this.#orderedPrimary.get(b.epoch);
      if (other !== undefined && other !== b.node)
        this.#fail(`${b.node} ordered Primary at epoch ${b.epoch}, where ${other} was ordered Primary already`);
      this.#orderedPrimary.set(b.epoch, b.node);
    }
    const last = this.#lastOrder.get(b.node);
    if (last?.role === 'Primary' && b.role === 'Secondary' && b.epoch === last.epoch && b.engine !== 'Down')
      this.#fail(
        `${b.node}'s Primary order was withdrawn within epoch ${b.epoch} (no new epoch, no recorded cause; by ${by})`,
      );
    this.#lastOrder.set(b.node, { role: b.role, epoch: b.epoch });
    if (!a || a.role !== b.role || a.epoch !== b.epoch)
      this.#w.log(`api: replica ${b.node} ordered ${b.role} at epoch ${b.epoch} (engine ${b.engine}) by ${by}`);
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
