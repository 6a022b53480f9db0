// Every API call the reconciler makes, behind one interface: KubeVolumeApi talks
// to the API server through @kubernetes/client-node; the control-plane simulator
// (test/sim) implements the same calls against its simulated API server, so the
// reconciler it drives is this very code. Writes that depend on what was read are
// conditional: they carry the resourceVersion read and fail with 409 if it moved.
import { randomBytes } from 'node:crypto';
import * as k8s from '@kubernetes/client-node';
import {
  agentLeaseName,
  ANNOTATIONS,
  API_VERSION,
  DEFAULT_OPERATOR_NAMESPACE,
  FIELD_MANAGERS,
  KINDS,
  LABELS,
  nodeServiceAccountName,
  CA_SECRET_NAME,
  SECRET_KEY,
  peerSecretName,
  tlsSecretName,
  replicaName,
} from '../api/names.ts';
import type { ReplicatedVolume, ReplicatedVolumeStatus } from '../api/replicated-volume.ts';
import type { ReplicatedVolumeReplica, ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import { type Issued, issueCa, issueNodeCert } from '../net/x509.ts';
import { leaseRenewTime } from './agent-lease.ts';
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
  /**
   * The node's own ServiceAccount, and a Role (bound to it) that may read exactly
   * `secretNames` (never empty: an empty resourceNames would mean every Secret);
   * true when something was created or changed.
   */
  ensureNodeAccess(node: string, secretNames: readonly string[]): Promise<boolean>;
  /**
   * The node's TLS Secret (ca.crt, tls.crt, tls.key) for peer links, issued by the
   * controller's CA (made once, kept in its own Secret); true when it was created.
   */
  ensureNodeTls(node: string): Promise<boolean>;
  /** The nodes that have access objects: the per-node ServiceAccounts this controller made. */
  listNodeAccess(): Promise<string[]>;
  /** Whether the API server has the Node now (the cache may lag behind a deletion or a return). */
  nodeExists(node: string): Promise<boolean>;
  /** Deletes the node's RoleBinding, Role, ServiceAccount and TLS Secret; what is gone already is fine. */
  deleteNodeAccess(node: string): Promise<void>;
  /** Creates a replica (409 if it exists already). */
  createReplica(rv: ReplicatedVolume, spec: ReplicatedVolumeReplicaSpec): Promise<void>;
  /** Replaces a replica's spec, conditional on the resourceVersion of `current`. */
  replaceReplica(
    rv: ReplicatedVolume,
    current: ReplicatedVolumeReplica,
    spec: ReplicatedVolumeReplicaSpec,
  ): Promise<void>;
  /**
   * The volume, its replicas, the named Nodes and their agents' Lease renewals (by node;
   * undefined: no Lease), read from the API server (not a cache).
   */
  readFresh(namespace: string, name: string, nodes: readonly string[]): Promise<FreshRead>;
  /**
   * Asks the replica's agent to report now: the tandem.dev/report-requested annotation, set
   * by an update of the replica as read (conditional on its resourceVersion: 409 if it moved;
   * the controller never patches replicas), its spec untouched.
   */
  requestReport(replica: k8s.KubernetesObject, time: string): Promise<void>;
  recordEvent(rv: ReplicatedVolume, e: EventInput): Promise<void>;
}

/** What VolumeApi.readFresh returns: agents maps a node to its agent's Lease renewTime (undefined: no Lease). */
export type FreshRead = {
  volume: unknown;
  replicas: unknown[];
  nodes: k8s.V1Node[];
  agents: Record<string, string | undefined>;
};

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
  readonly #rbac: k8s.RbacAuthorizationV1Api;
  readonly #leases: k8s.CoordinationV1Api;
  #caCache: Issued | undefined;
  /** Where peer Secrets live: the controller's own namespace, never a user's. */
  readonly #operatorNamespace: string;

  constructor(kc: k8s.KubeConfig, operatorNamespace: string = DEFAULT_OPERATOR_NAMESPACE) {
    this.#custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.#core = kc.makeApiClient(k8s.CoreV1Api);
    this.#rbac = kc.makeApiClient(k8s.RbacAuthorizationV1Api);
    this.#leases = kc.makeApiClient(k8s.CoordinationV1Api);
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

  async ensureNodeAccess(node: string, secretNames: readonly string[]): Promise<boolean> {
    if (secretNames.length === 0)
      throw new Error(`refusing an empty resourceNames for node ${node}: it would grant every Secret`);
    const namespace = this.#operatorNamespace;
    const name = nodeServiceAccountName(node);
    const metadata = {
      name,
      namespace,
      labels: { [LABELS.node]: node, [LABELS.managedBy]: FIELD_MANAGERS.controller },
    };
    const orUndefined = <T>(p: Promise<T>): Promise<T | undefined> =>
      p.catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)));
    let changed = false;
    if (!(await orUndefined(this.#core.readNamespacedServiceAccount({ name, namespace })))) {
      await this.#core.createNamespacedServiceAccount({
        namespace,
        body: { metadata, automountServiceAccountToken: false },
      });
      changed = true;
    }
    const rules: k8s.V1PolicyRule[] = [
      { apiGroups: [''], resources: ['secrets'], verbs: ['get'], resourceNames: [...secretNames] },
    ];
    const role = await orUndefined(this.#rbac.readNamespacedRole({ name, namespace }));
    const same =
      role?.rules?.length === 1 &&
      JSON.stringify(role.rules[0]?.resourceNames ?? []) === JSON.stringify(secretNames) &&
      JSON.stringify(role.rules[0]?.verbs) === '["get"]' &&
      JSON.stringify(role.rules[0]?.resources) === '["secrets"]';
    if (!role) {
      await this.#rbac.createNamespacedRole({ namespace, body: { metadata, rules } });
      changed = true;
    } else if (!same) {
      // Conditional on what was read: two workers never undo each other's names.
      await this.#rbac.replaceNamespacedRole({
        name,
        namespace,
        body: { metadata: { ...metadata, resourceVersion: role.metadata?.resourceVersion }, rules },
      });
      changed = true;
    }
    if (!(await orUndefined(this.#rbac.readNamespacedRoleBinding({ name, namespace })))) {
      await this.#rbac.createNamespacedRoleBinding({
        namespace,
        body: {
          metadata,
          roleRef: { apiGroup: 'rbac.authorization.k8s.io', kind: 'Role', name },
          subjects: [{ kind: 'ServiceAccount', name, namespace }],
        },
      });
      changed = true;
    }
    return changed;
  }

  /** The CA: read from its Secret, or made and stored once (of two controllers racing, the first write wins). */
  async #ca(): Promise<Issued> {
    if (this.#caCache) return this.#caCache;
    const namespace = this.#operatorNamespace;
    const read = async (): Promise<Issued | undefined> => {
      const d = await this.#core
        .readNamespacedSecret({ name: CA_SECRET_NAME, namespace })
        .then((s) => s.data)
        .catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)));
      const text = (k: string) => (d?.[k] ? Buffer.from(d[k], 'base64').toString('utf8') : undefined);
      const [certPem, keyPem] = [text('ca.crt'), text('ca.key')];
      return certPem && keyPem ? { certPem, keyPem } : undefined;
    };
    let ca = await read();
    if (!ca) {
      const made = issueCa(`tandem peer CA ${randomBytes(4).toString('hex')}`);
      try {
        await this.#core.createNamespacedSecret({
          namespace,
          body: {
            metadata: { name: CA_SECRET_NAME, namespace, labels: { [LABELS.managedBy]: FIELD_MANAGERS.controller } },
            type: 'Opaque',
            stringData: { 'ca.crt': made.certPem, 'ca.key': made.keyPem },
          },
        });
        ca = made;
      } catch (err) {
        if ((err as { code?: number }).code !== 409) throw err;
        ca = await read();
        if (!ca) throw new Error(`Secret ${CA_SECRET_NAME} exists but holds no ca.crt and ca.key`);
      }
    }
    this.#caCache = ca;
    return ca;
  }

  async listNodeAccess(): Promise<string[]> {
    const list = await this.#core.listNamespacedServiceAccount({
      namespace: this.#operatorNamespace,
      labelSelector: `${LABELS.managedBy}=${FIELD_MANAGERS.controller},${LABELS.node}`,
    });
    return list.items.flatMap((sa) => {
      const node = sa.metadata?.labels?.[LABELS.node];
      // Only the names this controller gives them: a look-alike is not ours to delete.
      return node && sa.metadata?.name === nodeServiceAccountName(node) ? [node] : [];
    });
  }

  async nodeExists(node: string): Promise<boolean> {
    return this.#core.readNode({ name: node }).then(
      () => true,
      (err: unknown) => (isNotFound(err) ? false : Promise.reject(err)),
    );
  }

  async deleteNodeAccess(node: string): Promise<void> {
    const namespace = this.#operatorNamespace;
    const name = nodeServiceAccountName(node);
    const gone = (err: unknown) => {
      if (!isNotFound(err)) throw err;
    };
    // Binding first: the account never holds a grant to a Role being deleted under it.
    await this.#rbac.deleteNamespacedRoleBinding({ name, namespace }).catch(gone);
    await this.#rbac.deleteNamespacedRole({ name, namespace }).catch(gone);
    await this.#core.deleteNamespacedServiceAccount({ name, namespace }).catch(gone);
    await this.#core.deleteNamespacedSecret({ name: tlsSecretName(node), namespace }).catch(gone);
  }

  async ensureNodeTls(node: string): Promise<boolean> {
    const namespace = this.#operatorNamespace;
    const name = tlsSecretName(node);
    const have = await this.#core
      .readNamespacedSecret({ name, namespace })
      .catch((err: unknown) => (isNotFound(err) ? undefined : Promise.reject(err)));
    if (have) return false;
    const ca = await this.#ca();
    const issued = issueNodeCert(ca, node);
    await this.#core.createNamespacedSecret({
      namespace,
      body: {
        metadata: {
          name,
          namespace,
          labels: { [LABELS.node]: node, [LABELS.managedBy]: FIELD_MANAGERS.controller },
        },
        type: 'kubernetes.io/tls',
        stringData: { 'ca.crt': ca.certPem, 'tls.crt': issued.certPem, 'tls.key': issued.keyPem },
      },
    });
    return true;
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

  async readFresh(namespace: string, name: string, nodes: readonly string[]): Promise<FreshRead> {
    const agents = Promise.all(
      nodes.map((n) =>
        this.#leases.readNamespacedLease({ name: agentLeaseName(n), namespace: this.#operatorNamespace }).then(
          (l) => [n, leaseRenewTime(l)] as const,
          (err: unknown) => (isNotFound(err) ? ([n, undefined] as const) : Promise.reject(err)),
        ),
      ),
    );
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
    return {
      volume,
      replicas: replicas.items,
      nodes: nodeObjects.filter((n): n is k8s.V1Node => n !== undefined),
      agents: Object.fromEntries(await agents),
    };
  }

  async requestReport(replica: k8s.KubernetesObject, time: string): Promise<void> {
    const { managedFields: _m, ...metadata } = replica.metadata ?? {};
    await this.#custom.replaceNamespacedCustomObject({
      ...replicaApi,
      namespace: metadata.namespace ?? '',
      name: metadata.name ?? '',
      body: {
        ...replica,
        metadata: { ...metadata, annotations: { ...metadata.annotations, [ANNOTATIONS.reportRequested]: time } },
      },
    });
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
