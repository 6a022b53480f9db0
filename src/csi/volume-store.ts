// The controller service's view of the Kubernetes API: ReplicatedVolumes in the
// driver's namespace, StoragePools and Nodes. Behind an interface so the service's
// decisions read as a sequence of API calls; KubeVolumeStore is the only
// implementation (csi-sanity runs the driver against a real API server).
import * as k8s from '@kubernetes/client-node';
import { API_VERSION, GROUP, KINDS, VERSION } from '../api/names.ts';
import type { ReplicatedVolumeSpec } from '../api/replicated-volume.ts';
import type { StoragePoolSpec } from '../api/storage-pool.ts';
import { isNotFound, mergePatch } from '../runtime/kube.ts';

/** The parts of a ReplicatedVolume the driver reads. */
export type StoredVolume = {
  metadata: {
    name: string;
    namespace: string;
    resourceVersion?: string;
    creationTimestamp?: string;
    deletionTimestamp?: string;
    annotations?: Record<string, string>;
    labels?: Record<string, string>;
  };
  spec: { pool: string; size?: string; primary?: string; replicas: { node: string; disk?: string }[] };
  status?: {
    primary?: string;
    epoch?: number;
    phase?: string;
    replicas?: { node: string; role?: string; diskState?: string; sizeBytes?: number; capacityBytes?: number }[];
    conditions?: { type: string; status: string }[];
  };
};

export type NodeFacts = { name: string; ready: boolean; unschedulable: boolean; hasInternalIP: boolean };

export interface VolumeStore {
  readonly namespace: string;
  getVolume(name: string): Promise<StoredVolume | undefined>;
  createVolume(o: {
    name: string;
    labels: Record<string, string>;
    annotations: Record<string, string>;
    spec: Partial<ReplicatedVolumeSpec> & Pick<ReplicatedVolumeSpec, 'pool' | 'replicas'>;
  }): Promise<StoredVolume>;
  deleteVolume(name: string): Promise<void>;
  /** A JSON merge patch of annotations and spec; conditional on `resourceVersion` when given (409 if it moved). */
  patchVolume(
    name: string,
    patch: { annotations?: Record<string, string | null>; spec?: Record<string, unknown> },
    resourceVersion?: string,
  ): Promise<StoredVolume>;
  listVolumes(labelSelector?: string): Promise<StoredVolume[]>;
  /** Every namespace's volumes (a pool's capacity counts them all). */
  listAllVolumes(): Promise<StoredVolume[]>;
  getPool(name: string): Promise<StoragePoolSpec | undefined>;
  getNode(name: string): Promise<NodeFacts | undefined>;
  listNodes(): Promise<NodeFacts[]>;
}

function nodeFacts(n: k8s.V1Node): NodeFacts {
  return {
    name: n.metadata?.name ?? '',
    ready: n.status?.conditions?.some((c) => c.type === 'Ready' && c.status === 'True') ?? false,
    unschedulable: n.spec?.unschedulable === true,
    hasInternalIP: n.status?.addresses?.some((a) => a.type === 'InternalIP') ?? false,
  };
}

export class KubeVolumeStore implements VolumeStore {
  readonly namespace: string;
  readonly #custom: k8s.CustomObjectsApi;
  readonly #core: k8s.CoreV1Api;

  constructor(kc: k8s.KubeConfig, namespace: string) {
    this.namespace = namespace;
    this.#custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.#core = kc.makeApiClient(k8s.CoreV1Api);
  }

  #rv = () => ({ group: GROUP, version: VERSION, namespace: this.namespace, plural: KINDS.volume.plural });

  async getVolume(name: string): Promise<StoredVolume | undefined> {
    try {
      return (await this.#custom.getNamespacedCustomObject({ ...this.#rv(), name })) as StoredVolume;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async createVolume(o: Parameters<VolumeStore['createVolume']>[0]): Promise<StoredVolume> {
    return (await this.#custom.createNamespacedCustomObject({
      ...this.#rv(),
      body: {
        apiVersion: API_VERSION,
        kind: KINDS.volume.kind,
        metadata: { name: o.name, namespace: this.namespace, labels: o.labels, annotations: o.annotations },
        spec: o.spec,
      },
    })) as StoredVolume;
  }

  async deleteVolume(name: string): Promise<void> {
    try {
      await this.#custom.deleteNamespacedCustomObject({ ...this.#rv(), name });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async patchVolume(
    name: string,
    patch: { annotations?: Record<string, string | null>; spec?: Record<string, unknown> },
    resourceVersion?: string,
  ): Promise<StoredVolume> {
    const body: Record<string, unknown> = {
      metadata: {
        ...(patch.annotations ? { annotations: patch.annotations } : {}),
        ...(resourceVersion ? { resourceVersion } : {}),
      },
      ...(patch.spec ? { spec: patch.spec } : {}),
    };
    return (await this.#custom.patchNamespacedCustomObject({ ...this.#rv(), name, body }, mergePatch)) as StoredVolume;
  }

  async listVolumes(labelSelector?: string): Promise<StoredVolume[]> {
    const list = (await this.#custom.listNamespacedCustomObject({
      ...this.#rv(),
      ...(labelSelector ? { labelSelector } : {}),
    })) as { items: StoredVolume[] };
    return list.items;
  }

  async listAllVolumes(): Promise<StoredVolume[]> {
    const list = (await this.#custom.listClusterCustomObject({
      group: GROUP,
      version: VERSION,
      plural: KINDS.volume.plural,
    })) as { items: StoredVolume[] };
    return list.items;
  }

  async getPool(name: string): Promise<StoragePoolSpec | undefined> {
    try {
      const p = (await this.#custom.getClusterCustomObject({
        group: GROUP,
        version: VERSION,
        plural: KINDS.pool.plural,
        name,
      })) as { spec: StoragePoolSpec };
      return p.spec;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async getNode(name: string): Promise<NodeFacts | undefined> {
    try {
      return nodeFacts(await this.#core.readNode({ name }));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async listNodes(): Promise<NodeFacts[]> {
    return (await this.#core.listNode()).items.map(nodeFacts);
  }
}
