// Where CreateVolume puts a new volume's two replicas: a pure function of the
// StoragePool's grants, the Nodes and CSI's accessibility_requirements, table-tested
// in placement.test.ts. The controller checks the placement again (Placed) and the
// agent checks the paths (issue 15); this only chooses.
//
// CSI: the volume must be accessible from at least one requisite topology, and the
// preferred ones come first (with WaitForFirstConsumer, preferred[0] is the node the
// scheduler picked for the pod: a replica must be there). Then the nodes carrying
// the fewest volumes, so new volumes spread.
import { formatBytes } from '../api/quantity.ts';
import { TOPOLOGY_KEY } from './identity.ts';

export type Topology = { segments?: Record<string, string> | null | undefined };
export type TopologyRequirement = {
  requisite?: Topology[] | null | undefined;
  preferred?: Topology[] | null | undefined;
};

export type CandidateNode = {
  name: string;
  ready: boolean;
  unschedulable: boolean;
  hasInternalIP: boolean;
  /** The pool grants a directory for file-backed volumes on it. */
  poolDirectory: boolean;
  /** Replicas of existing volumes on this node. */
  replicas: number;
  /** Bytes left under the pool directory's capacity on this node; undefined: the pool sets none. */
  roomBytes?: number | undefined;
};

export type ReplicaChoice =
  | { ok: true; nodes: [string, string] }
  | { ok: false; code: 'RESOURCE_EXHAUSTED' | 'INVALID_ARGUMENT'; message: string };

function nodesOf(list: readonly Topology[] | null | undefined): string[] | { bad: string } {
  const out: string[] = [];
  for (const t of list ?? []) {
    const keys = Object.keys(t.segments ?? {});
    const node = t.segments?.[TOPOLOGY_KEY];
    if (node === undefined || keys.length !== 1)
      return { bad: `topology ${JSON.stringify(t.segments ?? {})}: tandem's only segment is ${TOPOLOGY_KEY}` };
    out.push(node);
  }
  return out;
}

export function chooseReplicaNodes(
  pool: string,
  nodes: readonly CandidateNode[],
  req?: TopologyRequirement | null,
  bytes = 0,
): ReplicaChoice {
  const requisite = nodesOf(req?.requisite);
  const preferred = nodesOf(req?.preferred);
  if (!Array.isArray(requisite)) return { ok: false, code: 'INVALID_ARGUMENT', message: requisite.bad };
  if (!Array.isArray(preferred)) return { ok: false, code: 'INVALID_ARGUMENT', message: preferred.bad };
  const usable = nodes.filter(
    (n) =>
      n.poolDirectory &&
      n.ready &&
      !n.unschedulable &&
      n.hasInternalIP &&
      (n.roomBytes === undefined || n.roomBytes >= bytes),
  );
  const rank = (n: CandidateNode) => {
    const p = preferred.indexOf(n.name);
    if (p >= 0) return p;
    return requisite.includes(n.name) ? preferred.length : preferred.length + 1;
  };
  const ordered = [...usable].sort(
    (a, b) => rank(a) - rank(b) || a.replicas - b.replicas || (a.name < b.name ? -1 : a.name > b.name ? 1 : 0),
  );
  if (ordered.length < 2)
    return {
      ok: false,
      code: 'RESOURCE_EXHAUSTED',
      message: `storage pool ${pool} has ${ordered.length} usable node(s) with a directory (Ready, schedulable, with an InternalIP, with room for ${formatBytes(bytes)} under its capacity); a volume needs 2`,
    };
  const first = ordered[0]!;
  if (requisite.length > 0 && !requisite.includes(first.name))
    return {
      ok: false,
      code: 'RESOURCE_EXHAUSTED',
      message: `storage pool ${pool} has no usable node among the requisite topology (${requisite.join(', ')})`,
    };
  return { ok: true, nodes: [first.name, ordered[1]!.name] };
}
