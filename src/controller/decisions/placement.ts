// Placement: may the volume's replicas live on the nodes it names? A pure
// function of the spec and a snapshot of the Nodes; the reconcile writes the
// answer into the `Placed` condition and creates no replica while it is no.
import type { ReplicaPlacement } from '../../api/replicated-volume.ts';

export type NodeView = {
  name: string;
  ready: boolean;
  /** Since when the Ready condition has its current status (for failover, issue 6). */
  readySince?: Date | undefined;
  unschedulable: boolean;
  internalIP: string | undefined;
};

export type PlacedReplica = ReplicaPlacement & { address: string };

export type Placement =
  | { ok: true; replicas: [PlacedReplica, PlacedReplica] }
  | { ok: false; reason: 'NodeNotFound' | 'NodeUnschedulable' | 'NoInternalIP'; message: string };

/**
 * Named nodes must exist and have an InternalIP. A cordoned (unschedulable) node
 * is refused only for a volume that has no replicas yet: cordoning must not tear
 * down a running volume.
 */
export function decidePlacement(
  replicas: readonly ReplicaPlacement[],
  nodes: ReadonlyMap<string, NodeView>,
  existing: boolean,
): Placement {
  const placed: PlacedReplica[] = [];
  for (const r of replicas) {
    const n = nodes.get(r.node);
    if (!n) return { ok: false, reason: 'NodeNotFound', message: `node ${r.node} does not exist` };
    if (n.unschedulable && !existing)
      return { ok: false, reason: 'NodeUnschedulable', message: `node ${r.node} is cordoned (unschedulable)` };
    if (!n.internalIP)
      return {
        ok: false,
        reason: 'NoInternalIP',
        message: `node ${r.node} has no InternalIP address for the replication link`,
      };
    placed.push({ ...r, address: n.internalIP });
  }
  return { ok: true, replicas: placed as [PlacedReplica, PlacedReplica] };
}

/** The lowest free port of the range, or undefined when all are taken. */
export function allocatePort(used: ReadonlySet<number>, range: { first: number; count: number }): number | undefined {
  for (let p = range.first; p < range.first + range.count; p++) if (!used.has(p)) return p;
  return undefined;
}
