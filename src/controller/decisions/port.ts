// The replication port of a volume (issue 15 item 4: controller-owned fields are
// not user-settable). The controller allocates a port and records it twice: first
// in the annotation tandem.dev/port (written with the allocation, before anything
// else), then in status.port (the status subresource, which users cannot write).
// The annotation is metadata, so a user can write it too: a pre-set or edited
// annotation must never move a volume onto another volume's port, or off the range.
//
//   status.port set      → that port (the controller's own record)
//   else the annotation  → trusted only inside the range, and only when no other
//                          volume holds that port: not in its status, and not in
//                          the annotation of an older volume still without a status
//   else                 → none: the controller allocates one and overwrites the annotation
import { ANNOTATIONS, PORT_RANGE } from '../../api/names.ts';

export type PortClaim = {
  key: string;
  created: string;
  annotation?: string | undefined;
  statusPort?: number | undefined;
};

const inRange = (p: number, range: { first: number; count: number }) =>
  Number.isInteger(p) && p >= range.first && p < range.first + range.count;

/** `a` is older than `b` (creation time, then key). */
const older = (a: PortClaim, b: PortClaim) => a.created < b.created || (a.created === b.created && a.key < b.key);

export function trustedPort(
  me: PortClaim,
  all: readonly PortClaim[],
  range: { first: number; count: number } = PORT_RANGE,
): number | undefined {
  if (me.statusPort !== undefined && inRange(me.statusPort, range)) return me.statusPort;
  if (me.annotation === undefined || !/^[0-9]{1,5}$/.test(me.annotation)) return undefined;
  const p = Number(me.annotation);
  if (!inRange(p, range)) return undefined;
  for (const o of all) {
    if (o.key === me.key) continue;
    if (o.statusPort === p) return undefined;
    if (o.statusPort === undefined && o.annotation === me.annotation && older(o, me)) return undefined;
  }
  return p;
}

/** Every port some volume may hold (status or annotation): a new allocation avoids them all. */
export function portsInUse(all: readonly PortClaim[]): Set<number> {
  const used = new Set<number>();
  for (const o of all) {
    if (o.statusPort !== undefined) used.add(o.statusPort);
    const a = Number(o.annotation);
    if (o.annotation !== undefined && Number.isInteger(a)) used.add(a);
  }
  return used;
}

/** A volume object's claim (from a cache: raw objects). */
export function portClaim(o: {
  metadata?: {
    name?: string;
    namespace?: string;
    creationTimestamp?: Date | string;
    annotations?: Record<string, string> | undefined;
  };
  status?: unknown;
}): PortClaim {
  const created = o.metadata?.creationTimestamp;
  const statusPort = (o.status as { port?: unknown } | undefined)?.port;
  return {
    key: `${o.metadata?.namespace}/${o.metadata?.name}`,
    created: created instanceof Date ? created.toISOString() : (created ?? ''),
    annotation: o.metadata?.annotations?.[ANNOTATIONS.port],
    statusPort: typeof statusPort === 'number' ? statusPort : undefined,
  };
}
