// Who is Primary: a pure function of the volume's wishes (spec.primary), the
// controller's last choice (status.primary, status.epoch) and what the agents
// report. It never promotes a node whose data is not UpToDate, except for the
// initial full sync of a fresh pair (DRBD's `primary --force` on new metadata,
// tutorial §8), and it never orders a second Primary: a switch demotes the old
// Primary first and promotes the new one only once the old one reports
// Secondary. Every change of the chosen Primary bumps the epoch (issue 6 adds
// failover on top: a lost node's replica is demoted by epoch, not by its
// agent's cooperation).
import { UUID_JUST_CREATED_HEX } from '../../api/replicated-volume-replica.ts';
import type { DesiredRole } from '../../api/replicated-volume-replica.ts';

export type ObservedReplica = {
  node: string;
  /** undefined: the agent has not reported yet. */
  role?: string | undefined;
  connectionState?: string | undefined;
  diskState?: string | undefined;
  currentUuid?: string | undefined;
  /** What the replica's spec orders now. */
  ordered?: { role: DesiredRole; initialSync: boolean } | undefined;
  /** The agent has not yet reported on the current spec (status.observedGeneration < generation). */
  stale?: boolean | undefined;
};

export type RolesInput = {
  /** spec.replicas' nodes, in spec order. */
  nodes: readonly [string, string];
  preferred: string | undefined;
  chosen: string | undefined;
  epoch: number;
  observed: readonly ObservedReplica[];
};

export type RolesDecision = {
  /** The node that is or is about to be Primary; undefined while none may be. */
  primary: string | undefined;
  epoch: number;
  desired: Record<string, DesiredRole>;
  /** The node to promote with --force for a fresh pair's initial sync. */
  initialSync: string | undefined;
  reason: 'Stable' | 'Promoting' | 'Switching' | 'InitialSync' | 'WaitingForUpToDate' | 'WaitingForAgents' | 'WaitingForConnection';
  message: string;
};

const isFresh = (r: ObservedReplica | undefined) => r?.currentUuid === UUID_JUST_CREATED_HEX && r.diskState === 'Inconsistent';

export function decideRoles(i: RolesInput): RolesDecision {
  const obs = new Map(i.observed.map((r) => [r.node, r]));
  const secondaries = Object.fromEntries(i.nodes.map((n) => [n, 'Secondary' as DesiredRole]));
  const decide = (primary: string | undefined, reason: RolesDecision['reason'], message: string, extra: Partial<RolesDecision> = {}): RolesDecision => {
    const epoch = primary !== undefined && primary !== i.chosen ? i.epoch + 1 : i.epoch;
    return { primary, epoch, desired: { ...secondaries }, initialSync: undefined, reason, message, ...extra };
  };
  const withPrimary = (d: RolesDecision): RolesDecision => (d.primary ? { ...d, desired: { ...d.desired, [d.primary]: 'Primary' } } : d);

  const upToDate = i.nodes.filter((n) => obs.get(n)?.diskState === 'UpToDate');
  const target = i.preferred ?? (i.chosen && i.nodes.includes(i.chosen) ? i.chosen : undefined) ?? upToDate[0] ?? i.nodes[0];
  const other = i.nodes.find((n) => n !== target)!;
  const runningPrimaries = i.nodes.filter((n) => obs.get(n)?.role === 'Primary');

  // A Primary that is not the target steps down first; nobody is promoted meanwhile.
  const stray = runningPrimaries.find((n) => n !== target);
  if (stray) return decide(target, 'Switching', `Demoting ${stray} before ${target} becomes Primary`);
  if (runningPrimaries.includes(target)) return withPrimary(decide(target, 'Stable', `${target} is Primary`));

  const t = obs.get(target);
  const o = obs.get(other);
  // An order the agent has not answered yet stands: its last report predates it, and
  // withdrawing it would make the roles flap (the engine itself refuses a promotion
  // without UpToDate data, and the agent forces only a fresh Inconsistent disk).
  if (t?.stale && t.ordered?.role === 'Primary' && i.chosen === target) {
    return withPrimary(decide(target, t.ordered.initialSync ? 'InitialSync' : 'Promoting', `Waiting for ${target} to act on its promotion`, t.ordered.initialSync ? { initialSync: target } : {}));
  }
  if (!t?.role || t.role === 'Unconfigured') return decide(i.chosen, 'WaitingForAgents', `Waiting for the engine on ${target} to come up`);
  if (t.diskState === 'UpToDate') return withPrimary(decide(target, 'Promoting', `Promoting ${target}`));
  if (i.preferred === undefined && o?.diskState === 'UpToDate') return withPrimary(decide(other, 'Promoting', `Promoting ${other}, the node with UpToDate data`));
  if (isFresh(t) && isFresh(o)) {
    if (t.connectionState !== 'Connected' || o?.connectionState !== 'Connected') {
      return decide(i.chosen, 'WaitingForConnection', `Both disks are new; waiting for ${target} and ${other} to connect before the initial sync`);
    }
    return withPrimary(decide(target, 'InitialSync', `Both disks are new: ${target} becomes Primary and fully syncs ${other}`, { initialSync: target }));
  }
  return decide(i.chosen, 'WaitingForUpToDate', `${target}'s disk is ${t.diskState ?? 'unknown'}; a Primary needs UpToDate data`);
}
