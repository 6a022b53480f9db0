// Who is Primary: a pure function of the volume's wishes (spec.primary, the
// force annotation), the controller's last choice (status.primary, status.epoch,
// status.fence), the replicas' orders and the agents' reports, and the health of
// the nodes.
//
// The chosen Primary (status.primary) is the anchor. It changes only for a cause
// from a closed set, recorded with the change in status.lastRoleChange by the
// same conditional write, and every change opens a new epoch (DESIGN.md §6: no
// cause, no change):
//
//   InitialPlacement  nothing was chosen yet
//   PreferredPrimary  the user's spec.primary names the other node, and it can take
//                     over at once (Connected, UpToDate, reporting)
//   Failover          the node that is or may be Primary is lost (its Node not Ready,
//                     or its agent silent, for failover.nodeNotReadySeconds), and the
//                     other has fresh, positive evidence that it can take over: a
//                     report younger than FAILOVER_EVIDENCE_MS, UpToDate, not fenced,
//                     not Connected to the lost one. The same write fences the lost node.
//   ForcePrimary      the operator's tandem.dev/force-primary
//   CsiPublish        as PreferredPrimary, when spec.primary was set by the CSI driver's
//                     ControllerPublishVolume (tandem.dev/csi-published-node names that node)
//
// Within an epoch the chosen node's Primary order is granted at most once and
// never withdrawn: a report that looks odd (a stale "Primary" from the other node,
// an engine that is gone after a reboot, a disk that is not UpToDate for a while)
// is a reason to wait, never to demote. The grant waits until the other node has
// reported Secondary on this epoch's order (its report names the epoch; a report
// older than its order proves nothing), unless the other node is fenced; so a
// planned switch demotes the old Primary first and promotes the new one only
// after it has seen the old one step down. Never a fenced node, never one without
// UpToDate data (except a fresh pair's initial sync, DRBD's `primary --force` on
// new metadata, and the operator's force).
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
  /**
   * When the node's agent last renewed its Lease (tandem-agent-NODE): the agent's liveness.
   * Never evidence about this replica: the Lease and the replica's status come on different
   * watches, so a fresh Lease may sit beside an old status.
   */
  agentRenewTime?: string | undefined;
  /** The epoch of the order the agent last carried out (status.epoch). */
  epoch?: number | undefined;
  /** What the replica's spec orders now, at which epoch. */
  ordered?: { role: DesiredRole; initialSync: boolean; epoch?: number | undefined } | undefined;
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
  /** The node the CSI driver published the volume to (tandem.dev/csi-published-node). */
  publishedTo?: string | undefined;
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
  /** The chosen Primary; undefined while none has been chosen. */
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
  /** Look again after this long: a failover clock is running, or evidence is awaited. */
  recheckAfterMs?: number | undefined;
  /** Ask this node's agent for a report of its replica now (tandem.dev/report-requested): a switch waits on it. */
  requestReport?: string | undefined;
  reason: RolesReason;
  message: string;
};

/** An agent renews its Lease every 5 s; silence is not believed below this. */
export const MIN_AGENT_SILENCE_MS = 7_000;
/**
 * An agent reports each replica at least every 60 s (REPORT_REFRESH_MS) even when nothing
 * changed: a replica's report older than this means its agent is not working on it, even if
 * the agent's Lease is fresh.
 */
export const REPORT_STALE_MS = 150_000;
/** A failover acts only on a report of the surviving node at most this old (agents report every second while apart). */
export const FAILOVER_EVIDENCE_MS = 3_000;
/** A planned switch needs the new Primary's report to be at most this old. */
export const SWITCH_EVIDENCE_MS = 7_000;
export const CONTROLLER = 'tandem-controller';
/** Below this age a sign of life is simply recent (the agent renews its Lease every 5 s). */
const HEARTBEAT_MS_HINT = 5_500;

/**
 * When a replica's agent was last heard from (ms, pure): the later of the replica's own
 * report and the agent's Lease, unless the report is older than REPORT_STALE_MS (then the
 * agent is not working on this replica, whatever its Lease says). No report yet:
 * undefined, not judged; no Lease (an agent from before Leases): the report alone.
 */
export function agentLastHeard(
  lastHeartbeatTime: string | undefined,
  agentRenewTime: string | undefined,
  now: Date,
): number | undefined {
  if (!lastHeartbeatTime) return undefined;
  const beat = Date.parse(lastHeartbeatTime);
  const renew = agentRenewTime ? Date.parse(agentRenewTime) : Number.NaN;
  if (Number.isNaN(renew) || now.getTime() - beat >= REPORT_STALE_MS) return beat;
  return Math.max(beat, renew);
}

/** How long a replica's agent has been silent (agentLastHeard); undefined: not judged. */
export function agentSilence(
  lastHeartbeatTime: string | undefined,
  agentRenewTime: string | undefined,
  now: Date,
): number | undefined {
  const heard = agentLastHeard(lastHeartbeatTime, agentRenewTime, now);
  return heard === undefined ? undefined : now.getTime() - heard;
}

const isFresh = (r: ObservedReplica | undefined) =>
  r?.currentUuid === UUID_JUST_CREATED_HEX && r.diskState === 'Inconsistent';

export function decideRoles(i: RolesInput): RolesDecision {
  const now = i.now ?? new Date();
  const stamp = now.toISOString().replace(/\.\d+Z$/, 'Z');
  const obs = new Map(i.observed.map((r) => [r.node, r]));
  const otherOf = (n: string) => i.nodes.find((x) => x !== n)!;
  const chosen = i.chosen && i.nodes.includes(i.chosen) ? i.chosen : undefined;
  const E = i.epoch;

  // --- evidence ------------------------------------------------------------------------
  const failoverOn = i.failover?.enabled ?? false;
  const graceMs = (i.failover?.nodeNotReadySeconds ?? 10) * 1000;
  const silenceMs = Math.max(graceMs, MIN_AGENT_SILENCE_MS);
  /** How old n's own report is: the evidence about its replica (never the Lease). */
  const heartbeatAge = (n: string): number | undefined => {
    const t = obs.get(n)?.lastHeartbeatTime;
    return t ? now.getTime() - Date.parse(t) : undefined;
  };
  const silentFor = (n: string): number | undefined =>
    agentSilence(obs.get(n)?.lastHeartbeatTime, obs.get(n)?.agentRenewTime, now);
  /** Why n counts as lost, or how long until it would (inMs undefined: it is healthy). */
  const loss = (n: string): { lost: true; why: string } | { lost: false; inMs: number | undefined } => {
    const h = i.health?.[n];
    let inMs: number | undefined;
    if (h && !h.ready) {
      const gone = now.getTime() - (h.since?.getTime() ?? now.getTime());
      if (gone >= graceMs) return { lost: true, why: `node ${n} has not been Ready for ${Math.round(gone / 1000)} s` };
      inMs = graceMs - gone;
    }
    const age = silentFor(n);
    if (age !== undefined && age > HEARTBEAT_MS_HINT) {
      if (age >= silenceMs)
        return { lost: true, why: `the agent on ${n} has been silent for ${Math.round(age / 1000)} s` };
      inMs = Math.min(inMs ?? Infinity, silenceMs - age);
    }
    return { lost: false, inMs };
  };
  const lost = (n: string) => failoverOn && loss(n).lost;
  const fenced = (n: string) => i.fence?.node === n;
  const describe = (n: string) => {
    const o = obs.get(n);
    return `${o?.diskState ?? 'unknown'}${o?.connectionState ? `, ${o.connectionState}` : ''}`;
  };
  /** Has n's order been Primary at this epoch (or is n Primary)? Then it stays so within the epoch. */
  const granted = (n: string) => {
    const o = obs.get(n);
    return o?.role === 'Primary' || (o?.ordered?.role === 'Primary' && (o.ordered.epoch ?? E) === E);
  };
  /**
   * Might n be Primary, or become it on an order it has not carried out? Only a
   * report of Secondary on this epoch's order, newer than n's spec, says no.
   */
  const mayBePrimary = (n: string) => {
    const o = obs.get(n);
    if (!o?.role) return o?.ordered?.role === 'Primary';
    return o.role === 'Primary' || o.ordered?.role === 'Primary' || o.stale === true || (o.epoch ?? 0) < E;
  };

  // --- the decision's shape --------------------------------------------------------------
  const orders = (primary: string | undefined): Record<string, DesiredRole> =>
    Object.fromEntries(i.nodes.map((n) => [n, n === primary ? 'Primary' : 'Secondary']));
  /** A switch that waits only on a fresh report of its target asks for one, and looks again soon. */
  let asking: string | undefined;
  /** Keep the chosen node (or none): its order is granted, or not yet. */
  const keep = (
    grant: boolean,
    reason: RolesReason,
    message: string,
    extra: Partial<RolesDecision> = {},
  ): RolesDecision => ({
    primary: chosen,
    epoch: E,
    desired: orders(grant ? chosen : undefined),
    initialSync: undefined,
    reason,
    message,
    ...extra,
    ...(asking ? { requestReport: asking, recheckAfterMs: Math.min(extra.recheckAfterMs ?? Infinity, 1000) } : {}),
  });
  /** A new chosen Primary, for a cause: a new epoch, recorded. */
  const change = (
    to: string,
    cause: RoleChangeReason,
    grant: boolean,
    reason: RolesReason,
    message: string,
    extra: Partial<RolesDecision> = {},
  ): RolesDecision => ({
    primary: to,
    epoch: E + 1,
    desired: orders(grant ? to : undefined),
    initialSync: undefined,
    reason,
    message,
    roleChange: { ...(chosen ? { from: chosen } : {}), to, epoch: E + 1, reason: cause, time: stamp, message },
    ...extra,
  });
  /**
   * Failover from `from` (lost, may be Primary) to `to`, or why not. The fence on `from`
   * is written by the same conditional write that records the new epoch.
   */
  const failoverTo = (from: string, to: string, why: string): RolesDecision | { blocked: string } => {
    const t = obs.get(to);
    const age = heartbeatAge(to);
    if (fenced(to)) return { blocked: `${to} is fenced (${i.fence?.reason ?? 'it may lack acknowledged writes'})` };
    if (t?.diskState !== 'UpToDate') return { blocked: `${to}'s disk is ${t?.diskState ?? 'unknown'}, not UpToDate` };
    // Its agent's liveness (report or Lease); the evidence below is its own report alone.
    const silent = silentFor(to);
    if (silent === undefined || silent >= silenceMs) return { blocked: `the agent on ${to} is not reporting either` };
    if (t.connectionState === 'Connected')
      return { blocked: `${to}'s engine is still Connected to ${from}; waiting for it to notice the loss` };
    if (age === undefined) return { blocked: `${to} has not reported yet` };
    if (age >= FAILOVER_EVIDENCE_MS)
      return { blocked: `the last report from ${to} is ${Math.round(age / 1000)} s old; waiting for a fresh one` };
    const epoch = E + 1;
    const message = `Failing over from ${from} to ${to}: ${why}`;
    const d = chosen === to ? keep(true, 'Failover', message) : change(to, 'Failover', true, 'Failover', message);
    return {
      ...d,
      epoch,
      roleChange: { from, to, epoch, reason: 'Failover', time: stamp, message },
      fence: { node: from, epoch, by: CONTROLLER, time: stamp, reason: `failover from ${from} (${why})` },
      failover: { from, to, epoch, time: stamp, reason: why },
    };
  };
  const blockedFailover = (from: string, to: string, why: string, blocked: string): RolesDecision => {
    const t = obs.get(to);
    return keep(
      chosen !== undefined && granted(chosen),
      'FailoverBlocked',
      `${from} is lost (${why}) but ${blocked}; not failing over${t?.diskState && t.diskState !== 'UpToDate' ? ` (to accept the loss: kubectl annotate rv <name> tandem.dev/force-primary=${to})` : ''}`,
      { recheckAfterMs: 1000 },
    );
  };

  // --- the operator's override ----------------------------------------------------------
  if (i.forcePrimary !== undefined && i.nodes.includes(i.forcePrimary)) {
    const f = i.forcePrimary;
    const o = otherOf(f);
    if (chosen === f && obs.get(f)?.role === 'Primary') return keep(true, 'Stable', `${f} is Primary (forced)`);
    if (chosen === f)
      return keep(true, 'ForcedPrimary', `Waiting for ${f} to be promoted with --force`, { forcePrimary: f });
    if (obs.get(o)?.role === 'Primary' && !loss(o).lost && !fenced(o))
      return keep(
        chosen !== undefined && granted(chosen),
        'ForceRefused',
        `${f} was not forced: ${o} is Primary and reachable; move the role with spec.primary instead`,
      );
    const why = `forced by the ${'tandem.dev/force-primary'} annotation (${f}'s disk was ${describe(f)}); writes only ${o} had are given up`;
    const epoch = E + 1;
    return change(f, 'ForcePrimary', true, 'ForcedPrimary', `Promoting ${f} with --force: ${why}`, {
      forcePrimary: f,
      fence: {
        node: o,
        epoch,
        by: CONTROLLER,
        time: stamp,
        reason: `${f} was forced Primary; ${o}'s data is no longer the reference`,
      },
      failover: { from: chosen ?? o, to: f, epoch, time: stamp, reason: why },
    });
  }

  // --- nothing chosen yet: the first choice ------------------------------------------------
  if (chosen === undefined) {
    const ok = (n: string) => !lost(n) && !fenced(n);
    const upToDate = (n: string) => ok(n) && obs.get(n)?.diskState === 'UpToDate';
    // The user's spec.primary, if it can be chosen at all, is waited for rather than passed over.
    const preferred = i.preferred && i.nodes.includes(i.preferred) && ok(i.preferred) ? i.preferred : undefined;
    const target = preferred ? (upToDate(preferred) ? preferred : undefined) : i.nodes.find(upToDate);
    if (target)
      return change(target, 'InitialPlacement', false, 'Promoting', `Choosing ${target}, the node with UpToDate data`);
    const [a, b] = i.nodes.map((n) => obs.get(n));
    if (!a?.role || a.role === 'Unconfigured' || !b?.role || b.role === 'Unconfigured')
      return keep(false, 'WaitingForAgents', `Waiting for the engines on ${i.nodes.join(' and ')} to come up`);
    if (isFresh(a) && isFresh(b)) {
      if (a.connectionState !== 'Connected' || b.connectionState !== 'Connected')
        return keep(
          false,
          'WaitingForConnection',
          `Both disks are new; waiting for ${i.nodes.join(' and ')} to connect before the initial sync`,
        );
      const first = preferred ?? i.nodes[0];
      return change(
        first,
        'InitialPlacement',
        false,
        'InitialSync',
        `Both disks are new: ${first} becomes Primary and fully syncs ${otherOf(first)}`,
      );
    }
    const fencedOne = i.nodes.find(fenced);
    return keep(
      false,
      fencedOne ? 'FailoverBlocked' : 'WaitingForUpToDate',
      preferred
        ? `${preferred}'s disk is ${describe(preferred)}; a Primary needs UpToDate data (spec.primary names ${preferred})`
        : `No node has UpToDate data (${i.nodes.map((n) => `${n}: ${describe(n)}${fenced(n) ? ', fenced' : ''}`).join('; ')}); a Primary needs UpToDate data`,
    );
  }

  // --- a chosen Primary: it stays unless a cause moves it ----------------------------------
  const C = chosen;
  const O = otherOf(C);
  const c = obs.get(C);
  const o = obs.get(O);

  // Failover: the chosen node is lost.
  if (lost(C) && !fenced(C)) {
    const l = loss(C);
    const why = l.lost ? l.why : `${C} is lost`;
    const d = failoverTo(C, O, why);
    return 'blocked' in d ? blockedFailover(C, O, why, d.blocked) : d;
  }

  // The user's spec.primary names the other node: a planned switch, only toward a node
  // that can take over at once. The old Primary is demoted first (nothing granted).
  if (i.preferred === O) {
    const age = heartbeatAge(O);
    const ready =
      o?.diskState === 'UpToDate' &&
      o.connectionState === 'Connected' &&
      !fenced(O) &&
      !lost(O) &&
      age !== undefined &&
      age < SWITCH_EVIDENCE_MS;
    // Only the report is too old: the agent reports at rest every minute, so ask it for one.
    if (
      !ready &&
      o?.diskState === 'UpToDate' &&
      o.connectionState === 'Connected' &&
      !fenced(O) &&
      !lost(O) &&
      (age === undefined || age >= SWITCH_EVIDENCE_MS)
    )
      asking = O;
    if (ready)
      return change(
        O,
        i.publishedTo === O ? 'CsiPublish' : 'PreferredPrimary',
        false,
        'Switching',
        `Demoting ${C} before ${O} becomes Primary (${i.publishedTo === O ? `the CSI driver published the volume on ${O}` : 'spec.primary'})`,
      );
  }
  const waitingForPreferred =
    i.preferred === O
      ? `; spec.primary names ${O}, which takes over once it is Connected and UpToDate (it is ${describe(O)}${fenced(O) ? ', fenced' : ''})`
      : '';

  // The chosen node's order, granted once per epoch.
  if (granted(C)) {
    if (c?.role === 'Primary') {
      const l = failoverOn ? loss(C) : undefined;
      return keep(true, 'Stable', `${C} is Primary${waitingForPreferred}`, {
        ...(l && !l.lost && l.inMs !== undefined ? { recheckAfterMs: Math.max(250, l.inMs) } : {}),
      });
    }
    const initial = c?.ordered?.initialSync === true;
    return keep(
      true,
      initial ? 'InitialSync' : 'Promoting',
      `Waiting for ${C} to act on its promotion (it is ${describe(C)})`,
      {
        ...(initial ? { initialSync: C } : {}),
      },
    );
  }
  if (fenced(C))
    return keep(
      false,
      'FailoverBlocked',
      `${C} is fenced (${i.fence?.reason ?? 'it may lack acknowledged writes'}) and ${O} is ${describe(O)}; no node may become Primary (to accept the loss: kubectl annotate rv <name> tandem.dev/force-primary=${C})`,
    );
  // The other node may still be Primary (or about to be): it steps down first. If it is lost,
  // that is a failover from it, with its fence.
  if (mayBePrimary(O) && !fenced(O)) {
    if (lost(O)) {
      const l = loss(O);
      const why = l.lost ? l.why : `${O} is lost`;
      const d = failoverTo(O, C, why);
      return 'blocked' in d ? blockedFailover(O, C, why, d.blocked) : d;
    }
    return keep(
      false,
      'Switching',
      `Waiting for ${O} to report Secondary at epoch ${E} before ${C} becomes Primary (it reports ${o?.role ?? 'nothing'} at epoch ${o?.epoch ?? '-'})`,
      { recheckAfterMs: 1000 },
    );
  }
  if (!c?.role || c.role === 'Unconfigured')
    return keep(false, 'WaitingForAgents', `Waiting for the engine on ${C} to come up`);
  if (c.diskState === 'UpToDate') return keep(true, 'Promoting', `Promoting ${C}`);
  if (isFresh(c) && isFresh(o)) {
    if (c.connectionState !== 'Connected' || o?.connectionState !== 'Connected')
      return keep(
        false,
        'WaitingForConnection',
        `Both disks are new; waiting for ${C} and ${O} to connect before the initial sync`,
      );
    return keep(true, 'InitialSync', `Both disks are new: ${C} becomes Primary and fully syncs ${O}`, {
      initialSync: C,
    });
  }
  return keep(false, 'WaitingForUpToDate', `${C}'s disk is ${c.diskState ?? 'unknown'}; a Primary needs UpToDate data`);
}
