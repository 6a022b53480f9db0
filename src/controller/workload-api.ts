// The API calls of the workload release (decisions/workload.ts), apart from VolumeApi:
// the control-plane simulator has no pods, claims or attachments, and passes none.
// Read on demand, once per failover, never watched: a release is rare, and a cache of
// every pod in the cluster would cost the controller more than the release itself.
//
// RBAC (helm/tandem/templates/rbac.yaml): get/list/watch persistentvolumes and
// persistentvolumeclaims, list/delete pods, list/delete volumeattachments, get nodes and
// patch nodes/status (the lost node's volumesInUse, decisions/workload.ts volumesInUseWithout).
import * as k8s from '@kubernetes/client-node';
import type { ReplicatedVolume, WorkloadRelease as ReleaseRecord } from '../api/replicated-volume.ts';
import { apiCode, isConflict, isNotFound, mergePatch, volumeApi } from '../runtime/kube.ts';
import {
  type AttachmentView,
  type NodeScheduling,
  type PodView,
  type PvcView,
  type PvView,
  volumesInUseWithout,
} from './decisions/workload.ts';

export type DeleteOutcome = 'deleted' | 'gone';

const jsonPatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.JsonPatch);

export interface WorkloadApi {
  /** The node's taints and cordon as the API server has them now; undefined when it is gone. */
  readNodeScheduling(node: string): Promise<NodeScheduling | undefined>;
  listPersistentVolumes(): Promise<PvView[]>;
  /** The claims, read one by one; a claim that does not exist is left out. */
  readClaims(refs: readonly { namespace: string; name: string }[]): Promise<PvcView[]>;
  /** The pods of `namespace` bound to `node` (field selector spec.nodeName). */
  listPodsOnNode(namespace: string, node: string): Promise<PodView[]>;
  listVolumeAttachments(): Promise<AttachmentView[]>;
  /** Force-deletes (gracePeriodSeconds 0) the pod with this uid; 'gone' when it is, or a new pod has its name. */
  deletePod(p: { namespace: string; name: string; uid: string }): Promise<DeleteOutcome>;
  /** Deletes the VolumeAttachment with this uid; 'gone' as for pods. */
  deleteVolumeAttachment(a: { name: string; uid: string }): Promise<DeleteOutcome>;
  /**
   * Removes `uniqueName` from the node's status.volumesInUse, conditional on the node's
   * resourceVersion (a JSON patch whose `test` fails if anything wrote the node since it
   * was read; read again and retried). 'absent' when it is not listed, or the node is gone.
   */
  dropVolumeInUse(node: string, uniqueName: string): Promise<'dropped' | 'absent'>;
  /** A merge patch of status.lastWorkloadRelease alone (the reconcile's status writes keep it). */
  recordRelease(rv: ReplicatedVolume, record: ReleaseRecord): Promise<void>;
}

export function podView(p: k8s.V1Pod): PodView {
  const name = p.metadata?.name ?? '';
  return {
    namespace: p.metadata?.namespace ?? '',
    name,
    uid: p.metadata?.uid ?? '',
    nodeName: p.spec?.nodeName,
    phase: p.status?.phase,
    claims: (p.spec?.volumes ?? []).flatMap((v) => {
      if (v.persistentVolumeClaim?.claimName) return [v.persistentVolumeClaim.claimName];
      // A generic ephemeral volume's claim is named POD-VOLUME (KEP 1698).
      if (v.ephemeral) return [`${name}-${v.name}`];
      return [];
    }),
  };
}

/** A deletion whose object is already gone (404) or is another object by now (409: the uid precondition failed). */
async function deleteOnce(call: () => Promise<unknown>): Promise<DeleteOutcome> {
  try {
    await call();
    return 'deleted';
  } catch (err) {
    if (isNotFound(err) || isConflict(err)) return 'gone';
    throw err;
  }
}

export class KubeWorkloadApi implements WorkloadApi {
  readonly #core: k8s.CoreV1Api;
  readonly #storage: k8s.StorageV1Api;
  readonly #custom: k8s.CustomObjectsApi;

  constructor(kc: k8s.KubeConfig) {
    this.#core = kc.makeApiClient(k8s.CoreV1Api);
    this.#storage = kc.makeApiClient(k8s.StorageV1Api);
    this.#custom = kc.makeApiClient(k8s.CustomObjectsApi);
  }

  async readNodeScheduling(node: string): Promise<NodeScheduling | undefined> {
    try {
      const n = await this.#core.readNode({ name: node });
      return {
        unschedulable: n.spec?.unschedulable,
        taints: (n.spec?.taints ?? []).map((t) => ({ key: t.key, effect: t.effect })),
      };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async listPersistentVolumes(): Promise<PvView[]> {
    return (await this.#core.listPersistentVolume()).items.map((pv) => ({
      name: pv.metadata?.name ?? '',
      driver: pv.spec?.csi?.driver,
      volumeHandle: pv.spec?.csi?.volumeHandle,
      claim: pv.spec?.claimRef ? { namespace: pv.spec.claimRef.namespace, name: pv.spec.claimRef.name } : undefined,
    }));
  }

  async readClaims(refs: readonly { namespace: string; name: string }[]): Promise<PvcView[]> {
    const out: PvcView[] = [];
    for (const r of refs) {
      try {
        const c = await this.#core.readNamespacedPersistentVolumeClaim({ namespace: r.namespace, name: r.name });
        out.push({ namespace: r.namespace, name: r.name, volumeName: c.spec?.volumeName });
      } catch (err) {
        if (!isNotFound(err)) throw err;
      }
    }
    return out;
  }

  async listPodsOnNode(namespace: string, node: string): Promise<PodView[]> {
    return (await this.#core.listNamespacedPod({ namespace, fieldSelector: `spec.nodeName=${node}` })).items.map(
      podView,
    );
  }

  async listVolumeAttachments(): Promise<AttachmentView[]> {
    return (await this.#storage.listVolumeAttachment()).items.map((a) => ({
      name: a.metadata?.name ?? '',
      uid: a.metadata?.uid ?? '',
      attacher: a.spec.attacher,
      nodeName: a.spec.nodeName,
      persistentVolumeName: a.spec.source.persistentVolumeName,
    }));
  }

  deletePod(p: { namespace: string; name: string; uid: string }): Promise<DeleteOutcome> {
    return deleteOnce(() =>
      this.#core.deleteNamespacedPod({
        namespace: p.namespace,
        name: p.name,
        gracePeriodSeconds: 0,
        body: { gracePeriodSeconds: 0, preconditions: { uid: p.uid } },
      }),
    );
  }

  deleteVolumeAttachment(a: { name: string; uid: string }): Promise<DeleteOutcome> {
    return deleteOnce(() =>
      this.#storage.deleteVolumeAttachment({ name: a.name, body: { preconditions: { uid: a.uid } } }),
    );
  }

  async dropVolumeInUse(node: string, uniqueName: string): Promise<'dropped' | 'absent'> {
    for (let attempt = 1; ; attempt++) {
      let n: k8s.V1Node;
      try {
        n = await this.#core.readNodeStatus({ name: node });
      } catch (err) {
        if (isNotFound(err)) return 'absent';
        throw err;
      }
      const left = volumesInUseWithout(n.status?.volumesInUse ?? [], uniqueName);
      if (!left) return 'absent';
      try {
        await this.#core.patchNodeStatus(
          {
            name: node,
            body: [
              { op: 'test', path: '/metadata/resourceVersion', value: n.metadata?.resourceVersion },
              { op: 'replace', path: '/status/volumesInUse', value: left },
            ],
          },
          jsonPatch,
        );
        return 'dropped';
      } catch (err) {
        // A failed `test` is 422 Invalid; the node was written in between: read it again.
        if (isNotFound(err)) return 'absent';
        if (attempt >= 5 || (!isConflict(err) && apiCode(err) !== 422)) throw err;
      }
    }
  }

  async recordRelease(rv: ReplicatedVolume, record: ReleaseRecord): Promise<void> {
    await this.#custom.patchNamespacedCustomObjectStatus(
      {
        ...volumeApi,
        namespace: rv.metadata.namespace,
        name: rv.metadata.name,
        body: { status: { lastWorkloadRelease: record } },
      },
      mergePatch,
    );
  }
}
