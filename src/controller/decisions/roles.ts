// Who is Primary: a pure function of the volume's wishes (spec.primary), the
// controller's last choice (status.primary, status.epoch, status.fence), the
// agents' reports and the health of the nodes. It never promotes a node whose
// data is not UpToDate (except the initial full sync of a fresh pair, DRBD's
// `primary --force` on new metadata, and the operator's explicit force-primary),
// never a fenced node, and never orders a second Primary: a planned switch
// demotes the old Primary first and promotes the new one only once the old one
// reports Secondary. Every change of the chosen Primary bumps the epoch.
//
// Failover (issue 6): when the chosen Primary is lost — its Node not Ready, or
// its agent silent, for failover.nodeNotReadySeconds — the other node is
// promoted if and only if its agent reports fresh, its disk is UpToDate, its
// engine has lost the Primary too (it is not Connected to it), and it is not
// fenced. The same status write that records the new Primary and epoch fences
// the lost node, conditional on the resourceVersion read: if the old Primary's
// agent fenced this node first, the write fails and the next look sees the fence.
import { UUID_JUST_CREATED_HEX } from '../../api/replicated-volume-replica.ts';
import type { DesiredRole } from '../../api/replicated-volume-replica.ts';
import type { FailoverRecord, Fence, RoleChange, RoleChangeReason } from '../../api/replicated-volume.ts';

export type ObservedReplica = {
  node: string;
  /** undefined: the agent has not reported yet. */
  role?: string | undefined;
  connectionState?: string | undefined;
  diskState?: string | undefined;
  currentUuid?: string | undefined;
  lastHeartbeatTime?: string | undefined;
  /** What the replica's spec orders now. */
  ordered?: { role: DesiredRole; initialSync: boolean } | undefined;
  /** The agent has not yet reported on the current spec (status.observedGeneration < generation). */
  stale?: boolean | undefined;
};

export type NodeHealth = { ready: boolean; since?: Date | undefined };

export type RolesInput = {
  /** spec.replicas' nodes, in spec order. */
  nodes: readonly [string, string];
  preferred: string | undefined;
  chosen: string | undefined;
  epoch: number;
  observed: readonly ObservedReplica[];
  fence?: Fence | undefined;
  failover?: { enabled: boolean; nodeNotReadySeconds: number } | undefined;
  /** Node Ready conditions; a node missing here is treated as healthy (placement reports it). */
  health?: Readonly<Record<string, NodeHealth | undefined>> | undefined;
  /** The tandem.dev/force-primary annotation. */
  forcePrimary?: string | undefined;
  now?: Date | undefined;
};

export type RolesReason =
  | 'Stable'
  | 'Promoting'
  | 'Switching'
  | 'InitialSync'
  | 'WaitingForUpToDate'
  | 'WaitingForAgents'
  | 'WaitingForConnection'
  | 'Failover'
  | 'FailoverBlocked'
  | 'ForcedPrimary'
  | 'ForceRefused';

export type RolesDecision = {
  /** The node that is or is about to be Primary; undefined while none may be. */
  primary: string | undefined;
  epoch: number;
  desired: Record<string, DesiredRole>;
  /** The node to promote with --force for a fresh pair's initial sync. */
  initialSync: string | undefined;
  /** The node to promote with --force on the operator's say-so. */
  forcePrimary?: string | undefined;
  /** undefined: keep the stored fence; a value: write it (in the same conditional status write). */
  fence?: Fence | undefined;
  /** Set when this decision is a failover or a forced promotion. */
  failover?: FailoverRecord | undefined;
  /** Set when the chosen Primary changes: from, to, the new epoch and the cause (status.lastRoleChange). */
  roleChange?: RoleChange | undefined;
  /** Look again after this long: a failover clock is running. */
  recheckAfterMs?: number | undefined;
  reason: RolesReason;
  message: string;
};

/** An agent reports at least every 5 s; silence is not believed below this. */
export const MIN_AGENT_SILENCE_MS = 7_000;
export const CONTROLLER = 'tandem-controller';

const isFresh = (r: ObservedReplica | undefined) =>
  r?.currentUuid === UUID_JUST_CREATED_HEX && r.diskState === 'Inconsistent';

export function decideRoles(i: RolesInput): RolesDecision {
  const now = i.now ?? new Date();
  const obs = new Map(i.observed.map((r) => [r.node, r]));
  const secondaries = Object.fromEntries(i.nodes.map((n) => [n, 'Secondary' as DesiredRole]));
  const stamp = now.toISOString().replace(/\.\d+Z$/, 'Z');
  const decide = (
    primary: string | undefined,
    reason: RolesReason,
    message: string,
    extra: Partial<RolesDecision> = {},
    cause?: RoleChangeReason,
  ): RolesDecision => {
    const changes = primary !== undefined && primary !== i.chosen;
    const epoch = changes ? i.epoch + 1 : i.epoch;
    const why =
      cause ?? (i.chosen === undefined ? 'InitialPlacement' : primary === i.preferred ? 'PreferredPrimary' : undefined);
    const roleChange: RoleChange | undefined =
      changes && why
        ? { ...(i.chosen ? { from: i.chosen } : {}), to: primary, epoch, reason: why, time: stamp, message }
        : undefined;
    return {
      primary,
      epoch,
      desired: { ...secondaries },
      initialSync: undefined,
      reason,
      message,
      ...(roleChange ? { roleChange } : {}),
      ...extra,
    };
  };
  const withPrimary = (d: RolesDecision): RolesDecision =>
    d.primary ? { ...d, desired: { ...d.desired, [d.primary]: 'Primary' } } : d;
  const otherOf = (n: string) => i.nodes.find((x) => x !== n)!;

  // --- health -----------------------------------------------------------------
  const failoverOn = i.failover?.enabled ?? false;
  const graceMs = (i.failover?.nodeNotReadySeconds ?? 10) * 1000;
  const silenceMs = Math.max(graceMs, MIN_AGENT_SILENCE_MS);
  const heartbeatAge = (n: string): number | undefined => {
    const t = obs.get(n)?.lastHeartbeatTime;
    return t ? now.getTime() - Date.parse(t) : undefined;
  };
  /** Why n counts as lost, or how long until it would (undefined: it is healthy). */
  const loss = (n: string): { lost: true; why: string } | { lost: false; inMs: number | undefined } => {
    const h = i.health?.[n];
    let inMs: number | undefined;
    if (h && !h.ready) {
      const gone = now.getTime() - (h.since?.getTime() ?? now.getTime());
      if (gone >= graceMs) return { lost: true, why: `node ${n} has not been Ready for ${Math.round(gone / 1000)} s` };
      inMs = graceMs - gone;
    }
    const age = heartbeatAge(n);
    if (age !== undefined && age > HEARTBEAT_MS_HINT) {
      if (age >= silenceMs)
        return { lost: true, why: `the agent on ${n} has been silent for ${Math.round(age / 1000)} s` };
      inMs = Math.min(inMs ?? Infinity, silenceMs - age);
    }
    return { lost: false, inMs };
  };
  const lost = (n: string) => failoverOn && loss(n).lost;
  const fenced = (n: string) => i.fence?.node === n;
  const ok = (n: string) => !lost(n) && !fenced(n);
  const describe = (n: string) => {
    const o = obs.get(n);
    return `${o?.diskState ?? 'unknown'}${o?.connectionState ? `, ${o.connectionState}` : ''}`;
  };

  // --- the operator's override ------------------------------------------------------
  if (i.forcePrimary !== undefined && i.nodes.includes(i.forcePrimary)) {
    const f = i.forcePrimary;
    const o = otherOf(f);
    if (obs.get(f)?.role === 'Primary' && i.chosen === f)
      return withPrimary(decide(f, 'Stable', `${f} is Primary (forced)`));
    if (obs.get(o)?.role === 'Primary' && !loss(o).lost && !fenced(o)) {
      return withPrimary(
        decide(
          i.chosen ?? o,
          'ForceRefused',
          `${i.forcePrimary} was not forced: ${o} is Primary and reachable; move the role with spec.primary instead`,
        ),
      );
    }
    const why = `forced by the ${'tandem.dev/force-primary'} annotation (${f}'s disk was ${describe(f)}); writes only ${o} had are given up`;
    // Already chosen (the agent has not promoted yet): the order stands, the record is written.
    if (i.chosen === f)
      return withPrimary(
        decide(f, 'ForcedPrimary', `Waiting for ${f} to be promoted with --force`, { forcePrimary: f }),
      );
    const epoch = i.epoch + 1;
    return withPrimary(
      decide(
        f,
        'ForcedPrimary',
        `Promoting ${f} with --force: ${why}`,
        {
          forcePrimary: f,
          fence: {
            node: o,
            epoch,
            by: CONTROLLER,
            time: stamp,
            reason: `${f} was forced Primary; ${o}'s data is no longer the reference`,
          },
          failover: { from: i.chosen ?? o, to: f, epoch, time: stamp, reason: why },
        },
        'ForcePrimary',
      ),
    );
  }

  // --- target: preferred, else the last choice, else whoever has UpToDate data ----------
  const upToDate = i.nodes.filter((n) => obs.get(n)?.diskState === 'UpToDate' && ok(n));
  const chosen = i.chosen && i.nodes.includes(i.chosen) ? i.chosen : undefined;
  // A lost Primary makes the other node the target: promoted, or the reason why not.
  const lostChosen = chosen && lost(chosen) && !fenced(chosen) ? chosen : undefined;
  const target =
    (lostChosen ? otherOf(lostChosen) : undefined) ??
    (i.preferred && ok(i.preferred) ? i.preferred : undefined) ??
    (chosen && ok(chosen) ? chosen : undefined) ??
    i.nodes.find((n) => ok(n) && obs.get(n)?.diskState === 'UpToDate') ??
    i.preferred ??
    chosen ??
    upToDate[0] ??
    i.nodes[0];
  const other = otherOf(target);
  const t = obs.get(target);
  const o = obs.get(other);

  // Primaries that must step down before the target may be promoted. A fenced one is
  // superseded already (its agent demotes it when it sees the newer epoch).
  const strays = i.nodes.filter(
    (n) =>
      n !== target &&
      (obs.get(n)?.role === 'Primary' || (n === chosen && obs.get(n)?.ordered?.role === 'Primary')) &&
      !fenced(n),
  );
  const liveStray = strays.find((n) => !lost(n));
  if (liveStray) {
    // A planned switch (or fail-back) only toward a node that can take over at once.
    if (liveStray === chosen && (t?.diskState !== 'UpToDate' || fenced(target) || t.connectionState !== 'Connected')) {
      return withPrimary(
        decide(
          chosen,
          'Stable',
          `${chosen} stays Primary until ${target} is Connected and UpToDate (it is ${describe(target)}${fenced(target) ? ', fenced' : ''})`,
        ),
      );
    }
    return decide(target, 'Switching', `Demoting ${liveStray} before ${target} becomes Primary`);
  }
  const lostStray = strays.find((n) => lost(n));
  if (lostStray) {
    // Failover: the Primary is lost. Promote the target only on fresh, positive evidence.
    const l = loss(lostStray);
    const why = l.lost ? l.why : `${lostStray} is lost`;
    const age = heartbeatAge(target);
    let blocked: string | undefined;
    if (fenced(target)) blocked = `${target} is fenced (${i.fence?.reason ?? 'it may lack acknowledged writes'})`;
    else if (t?.diskState !== 'UpToDate') blocked = `${target}'s disk is ${t?.diskState ?? 'unknown'}, not UpToDate`;
    else if (age === undefined || age >= silenceMs) blocked = `the agent on ${target} is not reporting either`;
    else if (t.connectionState === 'Connected')
      blocked = `${target}'s engine is still Connected to ${lostStray}; waiting for it to notice the loss`;
    if (blocked) {
      const d = decide(
        chosen,
        'FailoverBlocked',
        `${lostStray} is lost (${why}) but ${blocked}; not failing over${t?.diskState && t.diskState !== 'UpToDate' ? ` (to accept the loss: kubectl annotate rv <name> tandem.dev/force-primary=${target})` : ''}`,
      );
      // The lost Primary keeps its order: nothing changes hands.
      return { ...d, desired: { ...d.desired, [lostStray]: 'Primary' }, recheckAfterMs: 1000 };
    }
    const epoch = i.epoch + 1;
    return withPrimary({
      ...decide(target, 'Failover', `Failing over from ${lostStray} to ${target}: ${why}`, {}, 'Failover'),
      epoch,
      fence: { node: lostStray, epoch, by: CONTROLLER, time: stamp, reason: `failover from ${lostStray} (${why})` },
      failover: { from: lostStray, to: target, epoch, time: stamp, reason: why },
    });
  }
  if (t?.role === 'Primary') {
    const l = failoverOn && chosen ? loss(chosen) : undefined;
    return withPrimary({
      ...decide(target, 'Stable', `${target} is Primary`),
      ...(l && !l.lost && l.inMs !== undefined ? { recheckAfterMs: Math.max(250, l.inMs) } : {}),
    });
  }

  // An order the agent has not answered yet stands: its last report predates it, and
  // withdrawing it would make the roles flap (the engine itself refuses a promotion
  // without UpToDate data, and the agent forces only a fresh Inconsistent disk).
  if (t?.stale && t.ordered?.role === 'Primary' && i.chosen === target) {
    return withPrimary(
      decide(
        target,
        t.ordered.initialSync ? 'InitialSync' : 'Promoting',
        `Waiting for ${target} to act on its promotion`,
        t.ordered.initialSync ? { initialSync: target } : {},
      ),
    );
  }
  if (!t?.role || t.role === 'Unconfigured')
    return decide(i.chosen, 'WaitingForAgents', `Waiting for the engine on ${target} to come up`);
  if (t.diskState === 'UpToDate' && !fenced(target))
    return withPrimary(decide(target, 'Promoting', `Promoting ${target}`));
  if (i.preferred === undefined && o?.diskState === 'UpToDate' && !fenced(other))
    return withPrimary(decide(other, 'Promoting', `Promoting ${other}, the node with UpToDate data`));
  if (isFresh(t) && isFresh(o)) {
    if (t.connectionState !== 'Connected' || o?.connectionState !== 'Connected') {
      return decide(
        i.chosen,
        'WaitingForConnection',
        `Both disks are new; waiting for ${target} and ${other} to connect before the initial sync`,
      );
    }
    return withPrimary(
      decide(target, 'InitialSync', `Both disks are new: ${target} becomes Primary and fully syncs ${other}`, {
        initialSync: target,
      }),
    );
  }
  if (fenced(target))
    return decide(
      i.chosen,
      'FailoverBlocked',
      `${target} is fenced (${i.fence?.reason ?? 'it may lack acknowledged writes'}) and ${other} is ${describe(other)}; no node may become Primary (to accept the loss: kubectl annotate rv <name> tandem.dev/force-primary=${target})`,
    );
  return decide(
    i.chosen,
    'WaitingForUpToDate',
    `${target}'s disk is ${t.diskState ?? 'unknown'}; a Primary needs UpToDate data`,
  );
}

/** Below this age a heartbeat is simply recent (the agent reports every 5 s). */
const HEARTBEAT_MS_HINT = 5_500;
