// Freeing the workload after a failover (issue 16 item 2; DESIGN.md §6 "CSI"): once
// the controller has failed a volume over and the lost node's fence is recorded in
// the API, the lost node's pods that mount the volume are force-deleted and our
// driver's VolumeAttachments to that node are deleted, so a StatefulSet's pod is
// scheduled again at once and attached on the new Primary, instead of waiting for
// the node's eviction timeout and the attach-detach controller's 6-minute force detach.
//
// Two pure steps, both over data the reconciler read:
//
//   releaseDue(status)        whether a release is owed, and for which node and epoch:
//                             only for the last failover, only while its fence on the
//                             lost node stands in the status read from the API server,
//                             only while the new Primary (another node) is still the
//                             chosen one at that epoch, and only once per failover.
//   workloadToFree(due, world) which pods and VolumeAttachments those are: our driver's
//                             PersistentVolumes whose volumeHandle is this volume, their
//                             bound claims, the pods on the lost node that mount one of
//                             them (running or stuck terminating; finished pods hold no
//                             device and are left), and the attachments of those PVs to
//                             the lost node. Nothing of another volume, nothing on
//                             another node.
//
// Why it is safe: the fence is written by the same conditional status write that
// promotes the new Primary (roles.ts), so by the time it is read back the lost node's
// agent can no longer record anything of its own; a Primary that cannot record the
// fence of its peer freezes its I/O (DESIGN.md §4 failover safety). The lost node can
// no longer acknowledge a write, so deleting its pods' API objects cannot lead to two
// writers; it only lets Kubernetes start the replacement.
import type { ReplicatedVolumeStatus } from '../../api/replicated-volume.ts';

/** A release owed: free the workload on `node`, lost in the failover that opened `epoch`. */
export type ReleaseDue = { node: string; epoch: number; primary: string };

export function releaseDue(status: ReplicatedVolumeStatus | undefined): ReleaseDue | undefined {
  const f = status?.lastFailover;
  const fence = status?.fence;
  if (!f || !fence) return undefined;
  // The fence on the node the volume failed over from, no older than that failover.
  if (fence.node !== f.from || fence.epoch < f.epoch) return undefined;
  // The new Primary is another node, and still the chosen one at the failover's epoch
  // (a later role change is a new situation that this failover's release must not act on).
  if (f.to === f.from || status.primary !== f.to || status.epoch !== f.epoch) return undefined;
  const done = status.lastWorkloadRelease;
  if (done && done.node === f.from && done.epoch === f.epoch) return undefined;
  return { node: f.from, epoch: f.epoch, primary: f.to };
}

/** The parts of a PersistentVolume the decision reads. */
export type PvView = {
  name: string;
  driver?: string | undefined;
  volumeHandle?: string | undefined;
  claim?: { namespace?: string | undefined; name?: string | undefined } | undefined;
};
export type PvcView = { namespace: string; name: string; volumeName?: string | undefined };
export type PodView = {
  namespace: string;
  name: string;
  uid: string;
  nodeName?: string | undefined;
  phase?: string | undefined;
  /** The claims its volumes name: persistentVolumeClaim.claimName, and POD-VOLUME for a generic ephemeral volume. */
  claims: readonly string[];
};
export type AttachmentView = {
  name: string;
  uid: string;
  attacher?: string | undefined;
  nodeName?: string | undefined;
  persistentVolumeName?: string | undefined;
};

export type WorkloadWorld = {
  /** Our CSI driver's name (csi/identity.ts DRIVER_NAME). */
  driver: string;
  /** The volume's CSI volume_id (csi/identity.ts volumeId). */
  volumeHandle: string;
  pvs: readonly PvView[];
  pvcs: readonly PvcView[];
  pods: readonly PodView[];
  attachments: readonly AttachmentView[];
};

export type WorkloadRelease = {
  node: string;
  epoch: number;
  /** Deleted with gracePeriodSeconds 0 and a uid precondition (a StatefulSet's new pod has the same name). */
  pods: { namespace: string; name: string; uid: string }[];
  attachments: { name: string; uid: string }[];
};

/** The PVs that are this volume: our driver's, with its volume_id as their handle. */
export function volumePvs(world: Pick<WorkloadWorld, 'driver' | 'volumeHandle' | 'pvs'>): PvView[] {
  return world.pvs.filter((pv) => pv.driver === world.driver && pv.volumeHandle === world.volumeHandle);
}

/** What to delete for a release that is due, from what was read; empty lists when nothing uses the volume there. */
export function workloadToFree(due: ReleaseDue, world: WorkloadWorld): WorkloadRelease {
  const pvs = volumePvs(world);
  const pvNames = new Set(pvs.map((pv) => pv.name));
  // A claim counts when it is bound both ways: the PV's claimRef names it and it names the PV.
  const claims = new Set(
    world.pvcs
      .filter(
        (c) =>
          c.volumeName !== undefined &&
          pvNames.has(c.volumeName) &&
          pvs.some((pv) => pv.name === c.volumeName && pv.claim?.namespace === c.namespace && pv.claim.name === c.name),
      )
      .map((c) => `${c.namespace}/${c.name}`),
  );
  const pods = world.pods
    .filter(
      (p) =>
        p.nodeName === due.node &&
        p.phase !== 'Succeeded' &&
        p.phase !== 'Failed' &&
        p.claims.some((c) => claims.has(`${p.namespace}/${c}`)),
    )
    .map((p) => ({ namespace: p.namespace, name: p.name, uid: p.uid }))
    .sort((a, b) => `${a.namespace}/${a.name}`.localeCompare(`${b.namespace}/${b.name}`));
  const attachments = world.attachments
    .filter(
      (a) =>
        a.attacher === world.driver &&
        a.nodeName === due.node &&
        a.persistentVolumeName !== undefined &&
        pvNames.has(a.persistentVolumeName),
    )
    .map((a) => ({ name: a.name, uid: a.uid }))
    .sort((a, b) => a.name.localeCompare(b.name));
  return { node: due.node, epoch: due.epoch, pods, attachments };
}

/** The whole decision: nothing unless a release is due, then exactly what to delete. */
export function decideWorkloadRelease(
  status: ReplicatedVolumeStatus | undefined,
  world: WorkloadWorld,
): WorkloadRelease | undefined {
  const due = releaseDue(status);
  return due ? workloadToFree(due, world) : undefined;
}

/** What the scheduler sees of a node: its taints and whether it is cordoned. */
export type NodeScheduling = { unschedulable?: boolean | undefined; taints: { key: string; effect: string }[] };

const LOST_NODE_TAINTS = new Set(['node.kubernetes.io/unreachable', 'node.kubernetes.io/not-ready']);

/**
 * Whether a pod freed from the lost node cannot be scheduled back onto it: the node
 * lifecycle controller's NoSchedule taint for an unreachable or not-ready node is there
 * (or the node is cordoned, or gone). It comes a moment after the NotReady mark; a pod
 * freed before it could land on the dead node again and wait there (seen in CI: the
 * StatefulSet's new pod scheduled to the stopped node 0.2 s after the release).
 */
export function keepsPodsOff(node: NodeScheduling | undefined): boolean {
  if (!node) return true;
  if (node.unschedulable) return true;
  return node.taints.some((t) => LOST_NODE_TAINTS.has(t.key) && t.effect === 'NoSchedule');
}

/**
 * How the kubelet and the attach/detach controller name a CSI volume in a node's status
 * (volumesInUse, volumesAttached): the plugin name, then DRIVER^VOLUME_HANDLE.
 */
export function csiUniqueVolumeName(driver: string, volumeHandle: string): string {
  return `kubernetes.io/csi/${driver}^${volumeHandle}`;
}

/**
 * The lost node's status.volumesInUse without this volume; undefined when it is not listed.
 *
 * Why the controller writes a list the kubelet owns: the attach/detach controller will
 * not detach a volume its node reports in use, and a dead kubelet reports it forever.
 * Until the volume is detached from the lost node the replacement pod waits on
 * "Multi-Attach error", and the attach/detach controller only notices the
 * VolumeAttachment we deleted at its next resync (--attach-detach-reconcile-sync-period,
 * 1 min by default): measured 37 s and 68 s of a failover's time. Once the entry is gone
 * it detaches (its own safe-to-detach check reads the same list) and attaches on the new
 * Primary within its 100 ms loop. Only this volume's entry goes, only on the fenced node,
 * so nothing else's safety check changes; a kubelet that comes back writes its own list.
 */
export function volumesInUseWithout(inUse: readonly string[], uniqueName: string): string[] | undefined {
  if (!inUse.includes(uniqueName)) return undefined;
  return inUse.filter((v) => v !== uniqueName);
}
