// The role audit the control-plane simulator and the e2e suites share: fed with
// every version of the volumes and replicas in commit order, it says whether a
// role ever changed without a cause (DESIGN.md §6):
//
//   one Primary per epoch      no two replicas ordered Primary at the same epoch
//   epochs only grow           the volume's epoch and each replica's order's never go back
//   a recorded cause           status.primary moves only with status.lastRoleChange
//                              {from, to, epoch, reason} of that write, the reason
//                              one of the closed set and true of what happened (a
//                              failover record, spec.primary, the force annotation,
//                              nothing chosen before); never onto a fenced node; the
//                              chosen Primary is never dropped
//   no order withdrawn         within an epoch a replica's Primary order never turns
//                              Secondary (a demotion needs a new epoch, i.e. a cause)
//   no demotion against orders a replica never reports going from Primary to Secondary
//                              while its current order (the one it reports on) is Primary
import { ROLE_CHANGE_REASONS } from '../../src/api/replicated-volume.ts';

type Meta = {
  name: string;
  namespace?: string;
  uid?: string;
  annotations?: Record<string, string>;
  generation?: number;
  ownerReferences?: { uid?: string }[];
};
export type AuditObject = { metadata: Meta; spec?: unknown; status?: unknown };

type RvStatus = {
  primary?: string;
  epoch?: number;
  fence?: { node: string };
  lastFailover?: { from: string; to: string; epoch: number };
  lastRoleChange?: { from?: string; to: string; epoch: number; reason: string };
};
type RvrSpec = { node: string; role: string; epoch: number; engine: string };
type RvrStatus = { role?: string; observedGeneration?: number };

export type RoleChangeSeen = { volume: string; from?: string; to: string; epoch: number; reason: string };

export class RoleAudit {
  readonly violations: string[] = [];
  readonly changes: RoleChangeSeen[] = [];
  readonly #log: (line: string) => void;
  /** volume/epoch → the node ordered Primary in it. */
  readonly #orderedPrimary = new Map<string, string>();
  /** volume/node → its last order. */
  readonly #lastOrder = new Map<string, { role: string; epoch: number }>();

  constructor(o: { log?: (line: string) => void } = {}) {
    this.#log = o.log ?? (() => undefined);
  }

  #fail(what: string): void {
    this.#log(`VIOLATION: ${what}`);
    this.violations.push(what);
  }

  /** A new version of a ReplicatedVolume (old: the version before, undefined when created). */
  volume(old: AuditObject | undefined, obj: AuditObject, by = 'someone'): void {
    const name = `${obj.metadata.namespace}/${obj.metadata.name}`;
    const a = (old?.status ?? {}) as RvStatus;
    const b = (obj.status ?? {}) as RvStatus;
    if ((b.epoch ?? 0) < (a.epoch ?? 0))
      this.#fail(`${name}: the epoch went back from ${a.epoch} to ${b.epoch} (by ${by})`);
    if (a.primary === b.primary) return;
    const spec = (obj.spec ?? {}) as { primary?: string };
    const force = obj.metadata.annotations?.['tandem.dev/force-primary'];
    const epoch = b.epoch ?? 0;
    const record = b.lastRoleChange;
    this.#log(
      `api: ${name} status.primary ${a.primary ?? '(none)'} -> ${b.primary ?? '(none)'} at epoch ${epoch}${record ? ` (${record.reason})` : ''} by ${by}`,
    );
    if (b.primary === undefined) {
      this.#fail(`${name}: the chosen Primary ${a.primary} was dropped from the status (epoch ${epoch}, by ${by})`);
      return;
    }
    if (b.fence?.node === b.primary)
      this.#fail(`${name}: ${b.primary} was chosen Primary while fenced (epoch ${epoch})`);
    const failover =
      b.lastFailover?.epoch === epoch && b.lastFailover.to === b.primary && b.lastFailover.from === a.primary;
    let why: string | undefined;
    if (a.primary === undefined) why = 'initial placement';
    else if (failover) why = 'failover';
    else if (spec.primary === b.primary) why = "the user's spec.primary";
    else if (force === b.primary) why = 'the force annotation';
    if (!why)
      this.#fail(
        `${name}: the Primary moved from ${a.primary} to ${b.primary} at epoch ${epoch} with no cause (spec.primary ${spec.primary ?? 'unset'}, no failover record, no force; by ${by})`,
      );
    if (!record || record.epoch !== epoch || record.to !== b.primary || record.from !== a.primary)
      this.#fail(
        `${name}: the move from ${a.primary ?? '(none)'} to ${b.primary} at epoch ${epoch} is not recorded in status.lastRoleChange (${JSON.stringify(record)})`,
      );
    else if (!(ROLE_CHANGE_REASONS as readonly string[]).includes(record.reason))
      this.#fail(
        `${name}: status.lastRoleChange.reason ${record.reason} is not one of ${ROLE_CHANGE_REASONS.join(', ')}`,
      );
    else if (
      (record.reason === 'InitialPlacement') !== (a.primary === undefined) ||
      (record.reason === 'Failover' && !failover) ||
      (record.reason === 'PreferredPrimary' && spec.primary !== b.primary) ||
      (record.reason === 'ForcePrimary' && force !== b.primary)
    )
      this.#fail(
        `${name}: status.lastRoleChange.reason ${record.reason} does not match what happened (${why ?? 'nothing'})`,
      );
    this.changes.push({
      volume: name,
      ...(a.primary ? { from: a.primary } : {}),
      to: b.primary,
      epoch,
      reason: record?.reason ?? 'NONE',
    });
  }

  /** A new version of a ReplicatedVolumeReplica. */
  replica(old: AuditObject | undefined, obj: AuditObject, by = 'someone'): void {
    const a = old?.spec as RvrSpec | undefined;
    const b = obj.spec as RvrSpec;
    const volume = `${obj.metadata.namespace}/${obj.metadata.name.slice(0, -(b.node.length + 1))}`;
    // Epochs start again with a volume of the same name: orders are the owner's (its uid).
    const owner = `${volume}#${obj.metadata.ownerReferences?.[0]?.uid ?? ''}`;
    const sa = (old?.status ?? {}) as RvrStatus;
    const sb = (obj.status ?? {}) as RvrStatus;
    if (
      sa.role === 'Primary' &&
      sb.role === 'Secondary' &&
      b.role === 'Primary' &&
      sb.observedGeneration === obj.metadata.generation
    )
      this.#fail(
        `${volume}: ${b.node} reported Primary -> Secondary under its current Primary order (epoch ${b.epoch})`,
      );
    if (a && a.role === b.role && a.epoch === b.epoch && a.engine === b.engine) return;
    if (a && b.epoch < a.epoch)
      this.#fail(`${volume}: ${b.node}'s order's epoch went back from ${a.epoch} to ${b.epoch} (by ${by})`);
    if (b.role === 'Primary') {
      const k = `${owner}/${b.epoch}`;
      const other = this.#orderedPrimary.get(k);
      if (other !== undefined && other !== b.node)
        this.#fail(
          `${volume}: ${b.node} ordered Primary at epoch ${b.epoch}, where ${other} was ordered Primary already`,
        );
      this.#orderedPrimary.set(k, b.node);
    }
    const key = `${owner}/${b.node}`;
    const last = this.#lastOrder.get(key);
    if (last?.role === 'Primary' && b.role === 'Secondary' && b.epoch === last.epoch && b.engine !== 'Down')
      this.#fail(`${volume}: ${b.node}'s Primary order was withdrawn within epoch ${b.epoch} (by ${by})`);
    this.#lastOrder.set(key, { role: b.role, epoch: b.epoch });
    if (!a || a.role !== b.role || a.epoch !== b.epoch)
      this.#log(`api: ${volume} replica ${b.node} ordered ${b.role} at epoch ${b.epoch} (engine ${b.engine}) by ${by}`);
  }
}
