// The volume's status, computed from the replicas' statuses: a pure function,
// so the reconcile can compare it with what is stored and write only a change.
import { CONDITIONS } from '../../api/names.ts';
import { findCondition } from '../../api/condition.ts';
import { canonicalJson } from '../../runtime/canonical-json.ts';
import { Conditions } from '../../runtime/conditions.ts';
import type { ReplicatedVolumeReplicaStatus } from '../../api/replicated-volume-replica.ts';
import {
  describeFence,
  type Fence,
  type Phase,
  type ReplicatedVolumeStatus,
  type ReplicaStatusSummary,
} from '../../api/replicated-volume.ts';
import { agentSilence, type RolesDecision } from './roles.ts';

/** An agent silent this long (no Lease renewal, no report: roles.ts agentSilence) is not trusted. */
export const HEARTBEAT_STALE_MS = 30_000;

export type StatusInput = {
  generation: number;
  previous: ReplicatedVolumeStatus | undefined;
  nodes: readonly string[];
  replicas: ReadonlyMap<string, { status: ReplicatedVolumeReplicaStatus | undefined; generation: number }>;
  /** When each node's agent last renewed its Lease (roles.ts agentSilence); a node missing: no Lease. */
  agentRenewTimes?: Readonly<Record<string, string | undefined>> | undefined;
  /** Outcome of placement; undefined when it succeeded. */
  placementFailure?: { reason: string; message: string } | undefined;
  /** Whether the replicas have spec.size (decisions/growth.ts); undefined: nothing to say (no growth yet). */
  sized?: { status: 'True' | 'False'; reason: string; message: string } | undefined;
  roles: RolesDecision | undefined;
  port: number | undefined;
  deleting: boolean;
  now: Date;
};

const isSyncingState = (c: string | undefined) =>
  c === 'SyncSource' || c === 'SyncTarget' || c === 'PausedSyncS' || c === 'PausedSyncT';

export function aggregateStatus(i: StatusInput): ReplicatedVolumeStatus {
  const conditions = new Conditions(i.previous?.conditions, i.generation, i.now);
  const set = (c: Parameters<Conditions['set']>[0]) => conditions.set(c);

  set(
    i.placementFailure
      ? { type: CONDITIONS.placed, status: 'False', ...i.placementFailure }
      : {
          type: CONDITIONS.placed,
          status: 'True',
          reason: 'NodesFound',
          message: `Replicas on ${i.nodes.join(' and ')}`,
        },
  );

  if (i.sized) set({ type: CONDITIONS.sized, ...i.sized });

  const summaries: ReplicaStatusSummary[] = i.nodes.map((node) => {
    const s = i.replicas.get(node)?.status;
    return {
      node,
      ...(s?.role ? { role: s.role } : {}),
      ...(s?.connectionState ? { connectionState: s.connectionState } : {}),
      ...(s?.diskState ? { diskState: s.diskState } : {}),
      ...(s?.syncProgress !== undefined ? { syncProgress: s.syncProgress } : {}),
      ...(s?.outOfSyncBytes !== undefined ? { outOfSyncBytes: s.outOfSyncBytes } : {}),
      ...(s?.sizeBytes !== undefined ? { sizeBytes: s.sizeBytes } : {}),
      ...(s?.capacityBytes !== undefined ? { capacityBytes: s.capacityBytes } : {}),
    };
  });
  // The chosen Primary is never forgotten: a look that could not decide (no placement, no port) keeps it.
  const primary = i.roles ? i.roles.primary : i.previous?.primary;
  const ordered = primary
    ? [...summaries].sort((a, b) => (a.node === primary ? -1 : b.node === primary ? 1 : 0))
    : summaries;
  const lead = ordered[0];
  const syncing = summaries.find((s) => isSyncingState(s.connectionState) && s.syncProgress !== undefined);

  const ready = readiness(i, summaries);
  set({ type: CONDITIONS.ready, ...ready });

  let phase: Phase;
  if (i.deleting) phase = 'Deleting';
  else if (
    i.placementFailure ||
    ready.reason === 'DiskMissing' ||
    ready.reason === 'EngineFailed' ||
    ready.reason === 'SplitBrain'
  )
    phase = 'Failed';
  else if (ready.status === 'True') phase = 'Ready';
  else if (syncing) phase = 'Syncing';
  else if (summaries.some((s) => s.role === 'Primary')) phase = 'Degraded';
  else if (summaries.every((s) => !s.role)) phase = 'Pending';
  else phase = 'Creating';

  return {
    phase,
    ...(primary ? { primary } : {}),
    epoch: i.roles?.epoch ?? i.previous?.epoch ?? 0,
    ...(i.port !== undefined ? { port: i.port } : {}),
    ...(lead?.connectionState ? { connection: lead.connectionState } : {}),
    ...(summaries.some((s) => s.diskState) ? { disks: ordered.map((s) => s.diskState ?? 'DUnknown').join('/') } : {}),
    ...(syncing ? { sync: `${syncing.syncProgress}%` } : {}),
    replicas: summaries,
    ...fenceOf(i),
    ...((i.roles?.failover ?? i.previous?.lastFailover)
      ? { lastFailover: i.roles?.failover ?? i.previous?.lastFailover }
      : {}),
    ...((i.roles?.roleChange ?? i.previous?.lastRoleChange)
      ? { lastRoleChange: i.roles?.roleChange ?? i.previous?.lastRoleChange }
      : {}),
    // Written only by the workload release (controller/decisions/workload.ts); kept as it is.
    ...(i.previous?.lastWorkloadRelease ? { lastWorkloadRelease: i.previous.lastWorkloadRelease } : {}),
    conditions: conditions.list,
    observedGeneration: i.generation,
  };
}

/** The fence to store: the decision's new one, else the stored one (only the Primary's agent lifts it). */
function fenceOf(i: StatusInput): { fence?: Fence } {
  const f = i.roles?.fence ?? i.previous?.fence;
  return f ? { fence: f } : {};
}

const ROLE_REASONS_FIRST = new Set(['Failover', 'FailoverBlocked', 'ForcedPrimary', 'ForceRefused']);

function readiness(
  i: StatusInput,
  summaries: readonly ReplicaStatusSummary[],
): { status: 'True' | 'False'; reason: string; message: string } {
  if (i.deleting)
    return { status: 'False', reason: 'Deleting', message: 'The volume is being deleted; engines are going down' };
  if (i.placementFailure)
    return { status: 'False', reason: i.placementFailure.reason, message: i.placementFailure.message };
  for (const node of i.nodes) {
    const r = i.replicas.get(node);
    const disks = findCondition(r?.status?.conditions, CONDITIONS.disksFound);
    if (disks?.status === 'False')
      // The agent's reason as it is: DiskMissing, or a refusal of its checks (NotGranted, InUse, Mounted …).
      return { status: 'False', reason: disks.reason || 'DiskMissing', message: `${node}: ${disks.message}` };
    const split = findCondition(r?.status?.conditions, CONDITIONS.splitBrain);
    if (split?.status === 'True')
      return { status: 'False', reason: 'SplitBrain', message: `${node}: ${split.message}` };
    const engine = findCondition(r?.status?.conditions, CONDITIONS.engineReady);
    if (engine?.status === 'False' && engine.reason === 'EngineFailed')
      return { status: 'False', reason: 'EngineFailed', message: `${node}: ${engine.message}` };
  }
  if (i.roles && ROLE_REASONS_FIRST.has(i.roles.reason))
    return { status: 'False', reason: i.roles.reason, message: i.roles.message };
  for (const node of i.nodes) {
    const s = i.replicas.get(node)?.status;
    if (!s?.lastHeartbeatTime)
      return { status: 'False', reason: 'WaitingForAgents', message: `No status from the agent on ${node} yet` };
    const age = agentSilence(s.lastHeartbeatTime, i.agentRenewTimes?.[node], i.now) ?? 0;
    if (age > HEARTBEAT_STALE_MS)
      return {
        status: 'False',
        reason: 'AgentSilent',
        message: `The agent on ${node} was last heard from ${Math.round(age / 1000)} s ago`,
      };
  }
  const primary = summaries.find((s) => s.role === 'Primary');
  if (!primary)
    return {
      status: 'False',
      reason: i.roles?.reason ?? 'NoPrimary',
      message: i.roles?.message ?? 'No replica is Primary',
    };
  const syncing = summaries.find((s) => isSyncingState(s.connectionState));
  if (syncing)
    return {
      status: 'False',
      reason: 'Syncing',
      message: `Resync ${syncing.connectionState} on ${syncing.node}: ${syncing.syncProgress ?? 0}% done`,
    };
  const notConnected = summaries.find((s) => s.connectionState !== 'Connected');
  if (notConnected)
    return {
      status: 'False',
      reason: 'Disconnected',
      message: `${notConnected.node} is ${notConnected.connectionState ?? 'not reporting'}`,
    };
  const notUpToDate = summaries.find((s) => s.diskState !== 'UpToDate');
  if (notUpToDate)
    return {
      status: 'False',
      reason: 'NotUpToDate',
      message: `${notUpToDate.node}'s disk is ${notUpToDate.diskState ?? 'unknown'}`,
    };
  // Ready promises that the Secondary can take over: not while a fence on it stands
  // (the controller refuses to promote a fenced node; the Primary's agent lifts it).
  const fence = fenceOf(i).fence;
  if (fence && i.nodes.includes(fence.node)) {
    return {
      status: 'False',
      reason: 'PeerFenced',
      message: `${fence.node} is in sync but still fenced (${fence.reason}); ${primary.node}'s agent lifts the fence, and until then no failover to ${fence.node}`,
    };
  }
  return { status: 'True', reason: 'Replicated', message: `${primary.node} is Primary, Connected, UpToDate/UpToDate` };
}

export type VolumeEvent = { type: 'Normal' | 'Warning'; reason: string; message: string };

/** Events for what changed between two statuses (role changes, sync start/finish, placement, readiness). */
export function eventsBetween(prev: ReplicatedVolumeStatus | undefined, next: ReplicatedVolumeStatus): VolumeEvent[] {
  const out: VolumeEvent[] = [];
  const before = new Map((prev?.replicas ?? []).map((r) => [r.node, r]));
  for (const r of next.replicas ?? []) {
    const b = before.get(r.node);
    if (r.role && b?.role !== r.role && (r.role === 'Primary' || b?.role === 'Primary')) {
      out.push({
        type: 'Normal',
        reason: r.role === 'Primary' ? 'Promoted' : 'Demoted',
        message: `${r.node} is ${r.role} (epoch ${next.epoch ?? 0})`,
      });
    }
    if (isSyncingState(r.connectionState) && !isSyncingState(b?.connectionState)) {
      out.push({ type: 'Normal', reason: 'SyncStarted', message: `${r.node} is ${r.connectionState}` });
    }
    if (!isSyncingState(r.connectionState) && isSyncingState(b?.connectionState) && r.diskState === 'UpToDate') {
      out.push({ type: 'Normal', reason: 'SyncFinished', message: `${r.node} finished resync: ${r.diskState}` });
    }
    if (r.connectionState === 'StandAlone' && b?.connectionState !== 'StandAlone') {
      out.push({
        type: 'Warning',
        reason: 'StandAlone',
        message: `${r.node} is StandAlone: a split brain or a refused peer; see its replica's conditions`,
      });
    }
  }
  const cond = (s: ReplicatedVolumeStatus | undefined, t: string) => findCondition(s?.conditions, t);
  const placedBefore = cond(prev, CONDITIONS.placed);
  const placedNow = cond(next, CONDITIONS.placed);
  if (placedNow?.status === 'False' && (placedBefore?.status !== 'False' || placedBefore.reason !== placedNow.reason)) {
    out.push({ type: 'Warning', reason: placedNow.reason, message: placedNow.message });
  }
  const readyBefore = cond(prev, CONDITIONS.ready);
  const readyNow = cond(next, CONDITIONS.ready);
  if (
    readyNow &&
    readyNow.status !== readyBefore?.status &&
    (readyNow.status === 'True' || readyBefore?.status === 'True')
  ) {
    out.push({
      type: readyNow.status === 'True' ? 'Normal' : 'Warning',
      reason: readyNow.status === 'True' ? 'Ready' : 'NotReady',
      message: readyNow.message,
    });
  }
  const rc = next.lastRoleChange;
  if (rc && (rc.epoch !== prev?.lastRoleChange?.epoch || rc.to !== prev.lastRoleChange.to)) {
    out.push({
      type: rc.reason === 'Failover' || rc.reason === 'ForcePrimary' ? 'Warning' : 'Normal',
      reason: 'RoleChanged',
      message: `Primary ${rc.from ?? '(none)'} -> ${rc.to} at epoch ${rc.epoch} (${rc.reason}): ${rc.message}`,
    });
  }
  if (next.lastFailover && next.lastFailover.epoch !== prev?.lastFailover?.epoch) {
    const f = next.lastFailover;
    out.push({
      type: 'Warning',
      reason: 'FailedOver',
      message: `${f.to} is the Primary now (epoch ${f.epoch}), was ${f.from}: ${f.reason}`,
    });
  }
  // A fence the controller writes (agents record their own fences and lifts as events).
  const fb = prev?.fence;
  const fn = next.fence;
  if (fn && (fn.node !== fb?.node || fn.epoch !== fb.epoch || fn.time !== fb.time)) {
    out.push({ type: 'Warning', reason: 'Fenced', message: describeFence(fn) });
  }
  for (const reason of ['DiskMissing', 'SplitBrain', 'EngineFailed', 'FailoverBlocked', 'ForceRefused']) {
    if (readyNow?.reason === reason && readyBefore?.reason !== reason)
      out.push({ type: 'Warning', reason, message: readyNow.message });
  }
  return out;
}

/** Status equality for "write only when changed". */
export function sameStatus(a: ReplicatedVolumeStatus | undefined, b: ReplicatedVolumeStatus): boolean {
  return canonicalJson(a ?? {}) === canonicalJson(b);
}
