// The desired ReplicatedVolumeReplica specs: a pure function of the volume,
// its placement, its port and the role decision.
import { CONDITIONS, engineResourceName, peerSecretName, PORT_RANGE } from '../../api/names.ts';
import { findCondition } from '../../api/condition.ts';
import { parseQuantity } from '../../api/quantity.ts';
import type {
  EngineState,
  ReplicatedVolumeReplicaSpec,
  ReplicatedVolumeReplicaStatus,
} from '../../api/replicated-volume-replica.ts';
import type { ReplicatedVolume } from '../../api/replicated-volume.ts';
import type { PlacedReplica } from './placement.ts';
import type { RolesDecision } from './roles.ts';

/**
 * Probe until both agents found their disks (a volume naming a missing disk
 * touches no disk, not even the good one); Up from then on (never back to Probe:
 * a running engine is not stopped because a report went missing); Down while deleting.
 */
export function decideEngineState(
  deleting: boolean,
  current: readonly (EngineState | undefined)[],
  observed: readonly (ReplicatedVolumeReplicaStatus | undefined)[],
): EngineState {
  if (deleting) return 'Down';
  if (current.includes('Up')) return 'Up';
  const found = observed.every((s) => findCondition(s?.conditions, CONDITIONS.disksFound)?.status === 'True');
  return observed.length > 0 && found ? 'Up' : 'Probe';
}

export function desiredReplicaSpecs(
  rv: ReplicatedVolume,
  placed: readonly [PlacedReplica, PlacedReplica],
  port: number,
  roles: RolesDecision,
  engine: EngineState,
  /** The size the replicas are given (decisions/growth.ts); spec.size when not said. */
  sizeBytes?: number,
): ReplicatedVolumeReplicaSpec[] {
  const s = rv.spec;
  const size = sizeBytes ?? (s.size ? parseQuantity(s.size) : undefined);
  const rate = s.resyncRate ? parseQuantity(s.resyncRate) : undefined;
  const endpoint = (p: PlacedReplica) => ({ node: p.node, address: p.address, disk: p.disk, metaDisk: p.metaDisk });
  return placed.map((self, i) => {
    const peer = placed[1 - i]!;
    const role = engine === 'Up' ? (roles.desired[self.node] ?? 'Secondary') : 'Secondary';
    return {
      volume: rv.metadata.name,
      engine,
      resource: engineResourceName(rv.metadata.namespace, rv.metadata.name),
      node: self.node,
      role,
      initialSync: role === 'Primary' && roles.initialSync === self.node,
      forcePrimary: role === 'Primary' && roles.forcePrimary === self.node,
      epoch: roles.epoch,
      port,
      minor: port - PORT_RANGE.first,
      self: endpoint(self),
      peer: endpoint(peer),
      protocol: s.protocol,
      ...(size !== undefined ? { sizeBytes: size } : {}),
      ...(s.verifyAlg ? { verifyAlg: s.verifyAlg } : {}),
      ...(rate !== undefined ? { resyncRateBytes: rate } : {}),
      onIoError: s.onIoError,
      splitBrain: s.splitBrain,
      pool: s.pool,
      secretName: peerSecretName(rv.metadata.namespace, rv.metadata.name),
      ...(s.filesystem ? { filesystem: s.filesystem } : {}),
      ...(s.mountPath ? { mountPath: s.mountPath } : {}),
    };
  });
}
