// Every API call the reconciler makes, behind one interface: KubeVolumeApi talks
// to the API server through @kubernetes/client-node; the control-plane simulator
// (test/sim) implements the same calls against its simulated API server, so the
// reconciler it drives is this very code. Writes that depend on what was read are
// conditional: they carry the resourceVersion read and fail with 409 if it moved.
import { randomBytes } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import {
  API_VERSION,
  DEFAULT_OPERATOR_NAMESPACE,
  FIELD_MANAGERS,
  KINDS,
  LABELS,
  SECRET_KEY,
  peerSecretName,
  replicaName,
} from '../api/names.ts';
import type { ReplicatedVolume, ReplicatedVolumeStatus } from '../api/replicated-volume.ts';
import type { ReplicatedVolumeReplica, ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import { isNotFound, mergePatch, recordEvent, type EventInput, replicaApi, volumeApi } from '../runtime/kube.ts';

export interface VolumeApi {
  /** Merge patch of finalizers/annotations (null removes an annotation); conditional when `conditional`. */
  patchVolumeMeta(
    rv: ReplicatedVolume,
    meta: { finalizers?: string[]; annotations?: Record<string, string | null> },
    conditional: boolean,
  ): Promise<unknown>;
  /** PUT /status with the resourceVersion read: the whole status, refused (409) if the volume moved. */
  replaceVolumeStatus(rv: ReplicatedVolume, status: ReplicatedVolumeStatus): Promise<unknown>;
  /** Creates the volume's peer Secret (in the operator's namespace) unless it exists; true when created. */
  ensurePeerSecret(rv: ReplicatedVolume): Promise<boolean>;
  /** Deletes the volume's peer Secret (no owner reference reaches across namespaces); fine when it is gone. */
  deletePeerSecret(rv: ReplicatedVolume): Promise<void>;
  /** Creates a replica (409 if it exists already). */
  createReplica(rv: ReplicatedVolume, spec: ReplicatedVolumeReplicaSpec): Promise<void>;
  /** Replaces a replica's spec, conditional on the resourceVersion of `current`. */
  replaceReplica(
    rv: ReplicatedVolume,
    current: ReplicatedVolumeReplica,
    spec: ReplicatedVolumeReplicaSpec,
  ): Promise<void>;
  /** The volume, its replicas and the named Nodes, read from the API server (not a cache). */
  readFresh(
    namespace: string,
    name: string,
    nodes: readonly string[],
  ): Promise<{ volume: unknown; replicas: unknown[]; nodes: k8s.V1Node[] }>;
  recordEvent(rv: ReplicatedVolume, e: EventInput): Promise<void>;
}

export function ownerRef(rv: ReplicatedVolume): k8s.V1OwnerReference {
  return {
    apiVersion: API_VERSION,
    kind: KINDS.volume.kind,
    name: rv.metadata.name,
    uid: rv.metadata.uid ?? '',
    controller: true,
    blockOwnerDeletion: true,
  };
}

export function replicaMetadata(rv: ReplicatedVolume, node: string) {
  return {
    name: replicaName(rv.metadata.name, node),
    namespace: rv.metadata.namespace,
    labels: {
      [LABELS.volume]: rv.metadata.name,
      [LABELS.node]: node,
      [LABELS.managedBy]: FIELD_MANAGERS.controller,
    },
    ownerReferences: [ownerRef(rv)],
  };
}

export class KubeVolumeApi implements VolumeApi {
  readonly #custom: k8s.CustomObjectsApi;
  readonly #core: k8s.CoreV1Api;
  /** Where peer Secrets live: the controller's own namespace, never a user's. */
  readonly #operatorNamespace: string;

  constructor(kc: k8s.KubeConfig, operatorNamespace: string = DEFAULT_OPERATOR_NAMESPACE) {
    this.#custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.#core = kc.makeApiClient(k8s.CoreV1Api);
    this.#operatorNamespace = operatorNamespace;
  }

  patchVolumeMeta(
    rv: ReplicatedVolume,
    meta: { finalizers?: string[]; annotations?: Record<string, string | null> },
    conditional: boolean,
  ): Promise<unknown> {
    return this.#custom.patchNamespacedCustomObject(
      {
        ...volumeApi,
        namespace: rv.metadata.namespace,
        name: rv.metadata.name,
        body: { metadata: { ...meta, ...(conditional ? { resourceVersion: rv.metadata.resourceVersion } : {}) } },
      },
      mergePatch,
    );
  }

  replaceVolumeStatus(rv: ReplicatedVolume, status: ReplicatedVolumeStatus): Promise<unknown> {
    return this.#custom.replaceNamespacedCustomObjectStatus({
      ...volumeApi,
      namespace: rv.metadata.namespace,
      name: rv.metadata.name,
      body: {
        apiVersion: rv.apiVersion,
        kind: rv.kind,
        metadata: {
          name: rv.metadata.name,
          namespace: rv.metadata.namespace,
          resourceVersion: rv.metadata.resourceVersion,
        },
        spec: rv.spec,
        status,
      },
    });
  }

  async ensurePeerSecret(rv: ReplicatedVolume): Promise<boolean> {
    const name = peerSecretName(rv.metadata.namespace, rv.metadata.name);
    const namespace = this.#operatorNamespace;
    try {
      await this.#core.readNamespacedSecret({ name, namespace });
      return false;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    await this.#core.createNamespacedSecret({
      namespace,
      body: {
        metadata: {
          name,
          namespace,
          // No owner reference: it would have to cross namespaces. The controller deletes it (deletePeerSecret).
          labels: {
            [LABELS.volumeNamespace]: rv.metadata.namespace,
            [LABELS.managedBy]: FIELD_MANAGERS.controller,
          },
          annotations: { [LABELS.volume]: rv.metadata.name },
        },
        type: 'Opaque',
        stringData: { [SECRET_KEY]: randomBytes(32).toString('base64url') },
      },
    });
    return true;
  }

  async deletePeerSecret(rv: ReplicatedVolume): Promise<void> {
    await this.#core
      .deleteNamespacedSecret({
        name: peerSecretName(rv.metadata.namespace, rv.metadata.name),
        namespace: this.#operatorNamespace,
      })
      .catch((err: unknown) => {
        if (!isNotFound(err)) throw err;
      });
  }

  async createReplica(rv: ReplicatedVolume, spec: ReplicatedVolumeReplicaSpec): Promise<void> {
    await this.#custom.createNamespacedCustomObject({
      ...replicaApi,
      namespace: rv.metadata.namespace,
      body: { apiVersion: API_VERSION, kind: KINDS.replica.kind, metadata: replicaMetadata(rv, spec.node), spec },
    });
  }

  async replaceReplica(
    rv: ReplicatedVolume,
    current: ReplicatedVolumeReplica,
    spec: ReplicatedVolumeReplicaSpec,
  ): Promise<void> {
    await this.#custom.replaceNamespacedCustomObject({
      ...replicaApi,
      namespace: rv.metadata.namespace,
      name: current.metadata.name,
      body: {
        apiVersion: API_VERSION,
        kind: KINDS.replica.kind,
        metadata: { ...replicaMetadata(rv, spec.node), resourceVersion: current.metadata.resourceVersion },
        spec,
      },
    });
  }

  async readFresh(
    namespace: string,
    name: string,
    nodes: readonly string[],
  ): Promise<{ volume: unknown; replicas: unknown[]; nodes: k8s.V1Node[] }> {
    const [volume, replicas, ...nodeObjects] = await Promise.all([
      this.#custom.getNamespacedCustomObject({ ...volumeApi, namespace, name }),
      this.#custom.listNamespacedCustomObject({
        ...replicaApi,
        namespace,
        labelSelector: `${LABELS.volume}=${name}`,
      }) as Promise<{ items: unknown[] }>,
      ...nodes.map((n) =>
        this.#core.readNode({ name: n }).catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err))),
      ),
    ]);
    return { volume, replicas: replicas.items, nodes: nodeObjects.filter((n): n is k8s.V1Node => n !== undefined) };
  }

  recordEvent(rv: ReplicatedVolume, e: EventInput): Promise<void> {
    return recordEvent(
      this.#core,
      FIELD_MANAGERS.controller,
      undefined,
      { kind: KINDS.volume.kind, name: rv.metadata.name, namespace: rv.metadata.namespace, uid: rv.metadata.uid },
      e,
    );
  }
}
