// How big the replicas are told to be. A volume's spec.size may grow (never shrink, the
// CRD refuses that), but a file-backed replica may not outgrow its pool directory's
// capacity: the administrator's limit holds for growth as it does at placement. The
// size the replicas were given so far stays until the new one fits on every node.
import { parseQuantity } from '../../api/quantity.ts';
import { type FileClaim, poolUsed, type StoragePoolSpec } from '../../api/storage-pool.ts';

export type GrowthDecision =
  | { sizeBytes: number | undefined; refused?: undefined }
  | { sizeBytes: number; refused: { reason: 'PoolFull'; message: string } };

export function decideGrowth(i: {
  /** spec.size in bytes (undefined: the smaller disk). */
  wanted: number | undefined;
  /** The size the replicas were told so far (their specs' largest sizeBytes); undefined for a new volume. */
  given: number | undefined;
  pool: string;
  poolSpec: StoragePoolSpec | undefined;
  /** Nodes whose replica is a file in the pool's directory. */
  fileNodes: readonly string[];
  /** Every volume's claim on pool directories (storage-pool.ts fileClaimsOf), and this volume's key. */
  claims: readonly FileClaim[];
  self: Pick<FileClaim, 'key' | 'created'>;
}): GrowthDecision {
  const { wanted, given } = i;
  if (wanted === undefined || given === undefined || wanted <= given) return { sizeBytes: wanted };
  for (const node of i.fileNodes) {
    const grant = i.poolSpec?.nodes.find((g) => g.node === node);
    const capacity = grant?.capacity !== undefined ? parseQuantity(grant.capacity) : undefined;
    if (capacity === undefined) continue;
    const used = poolUsed(i.claims, i.pool, node, capacity, i.self);
    if (used + wanted > capacity)
      return {
        sizeBytes: given,
        refused: {
          reason: 'PoolFull',
          message: `spec.size ${wanted} bytes does not fit StoragePool ${i.pool}'s capacity ${grant!.capacity} on node ${node} (${capacity - used} bytes left beside the other volumes); the replicas stay at ${given} bytes`,
        },
      };
  }
  return { sizeBytes: wanted };
}
