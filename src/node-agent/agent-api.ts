// Every API call the agent makes, behind one interface (as the controller's
// VolumeApi): KubeAgentApi talks to the API server; the control-plane simulator
// (test/sim) implements the same calls against its simulated one.
import * as k8s from '@kubernetes/client-node';
import {
  agentLeaseName,
  DEFAULT_OPERATOR_NAMESPACE,
  FIELD_MANAGERS,
  GROUP,
  KINDS,
  nodeServiceAccountName,
  SECRET_KEY,
  tlsSecretName,
  VERSION,
} from '../api/names.ts';
import { StoragePool } from '../api/storage-pool.ts';
import { type Fence, ReplicatedVolume } from '../api/replicated-volume.ts';
import { type EventInput, isNotFound, mergePatch, recordEvent, replicaApi, volumeApi } from '../runtime/kube.ts';
import type { FenceApi } from './fence.ts';
import { shareConnections } from '../runtime/kube-config.ts';

/** The agent Lease's stated duration (informational: the controller judges silence by failover.nodeNotReadySeconds). */
const AGENT_LEASE_SECONDS = 15;

/** Life of the node ServiceAccount's tokens (TokenRequest's minimum). */
const NODE_TOKEN_SECONDS = 600;

export type ObjectRef = { kind: string; name: string; namespace: string; uid?: string | undefined };

export interface AgentApi extends FenceApi {
  /** Merge patch on the replica's /status (not conditional: the agent is its only writer); false when the replica is gone. */
  reportStatus(namespace: string, name: string, status: Record<string, unknown>): Promise<boolean>;
  recordEvent(obj: ObjectRef, e: EventInput): Promise<void>;
  /** The replica's spec as the API server has it now (not the cache); undefined when it is gone. */
  readReplica(namespace: string, name: string): Promise<{ role: string; epoch: number } | undefined>;
  /** A peer Secret's shared-secret (operator's namespace), or undefined when the Secret or the key is missing. */
  readPeerSecret(name: string): Promise<string | undefined>;
  /** This node's TLS Secret (ca.crt, tls.crt, tls.key as PEM), undefined when it is missing or incomplete. */
  readNodeTls(): Promise<{ ca: string; cert: string; key: string } | undefined>;
  /** A StoragePool (cluster-scoped); undefined when there is none of that name. */
  readPool(name: string): Promise<StoragePool | undefined>;
  /** Renews this node's agent Lease (tandem-agent-NODE, operator's namespace) at `at`; creates it if missing. */
  renewLease(at: Date): Promise<void>;
}

export class KubeAgentApi implements AgentApi {
  readonly #custom: k8s.CustomObjectsApi;
  readonly #core: k8s.CoreV1Api;
  readonly #leases: k8s.CoordinationV1Api;
  readonly #node: string;
  /** Peer Secrets live here (the operator's namespace); the agent's RBAC reads Secrets nowhere else. */
  readonly #operatorNamespace: string;
  readonly #kc: k8s.KubeConfig;
  readonly #nodeIdentity: boolean;
  #nodeToken: { core: k8s.CoreV1Api; renewAt: number } | undefined;

  constructor(kc: k8s.KubeConfig, node: string, o: { operatorNamespace?: string; nodeIdentity?: boolean } = {}) {
    this.#kc = kc;
    this.#custom = kc.makeApiClient(k8s.CustomObjectsApi);
    this.#core = kc.makeApiClient(k8s.CoreV1Api);
    this.#leases = kc.makeApiClient(k8s.CoordinationV1Api);
    this.#node = node;
    this.#operatorNamespace = o.operatorNamespace ?? DEFAULT_OPERATOR_NAMESPACE;
    this.#nodeIdentity = o.nodeIdentity ?? true;
  }

  async reportStatus(namespace: string, name: string, status: Record<string, unknown>): Promise<boolean> {
    try {
      await this.#custom.patchNamespacedCustomObjectStatus(
        { ...replicaApi, namespace, name, body: { status } },
        mergePatch,
      );
      return true;
    } catch (err) {
      if (isNotFound(err)) return false;
      throw err;
    }
  }

  recordEvent(obj: ObjectRef, e: EventInput): Promise<void> {
    return recordEvent(this.#core, FIELD_MANAGERS.agent, this.#node, obj, e);
  }

  async readReplica(namespace: string, name: string): Promise<{ role: string; epoch: number } | undefined> {
    try {
      const r = (await this.#custom.getNamespacedCustomObject({ ...replicaApi, namespace, name })) as {
        spec?: { role?: string; epoch?: number };
      };
      return { role: String(r.spec?.role), epoch: Number(r.spec?.epoch) };
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  /**
   * The client that reads Secrets: with `nodeIdentity`, a token of this node's own
   * ServiceAccount (TokenRequest, renewed at two thirds of its life), whose Role names
   * only this node's Secrets (controller/decisions/node-access.ts); else the agent's own.
   */
  async #secretsClient(): Promise<k8s.CoreV1Api> {
    if (!this.#nodeIdentity) return this.#core;
    const now = Date.now();
    if (this.#nodeToken && now < this.#nodeToken.renewAt) return this.#nodeToken.core;
    const tr = await this.#core.createNamespacedServiceAccountToken({
      name: nodeServiceAccountName(this.#node),
      namespace: this.#operatorNamespace,
      body: { spec: { audiences: [], expirationSeconds: NODE_TOKEN_SECONDS } },
    });
    const token = tr.status?.token;
    if (!token) throw new Error(`TokenRequest for ${nodeServiceAccountName(this.#node)} returned no token`);
    const cluster = this.#kc.getCurrentCluster();
    if (!cluster) throw new Error('the kubeconfig has no current cluster');
    const kc = shareConnections(new k8s.KubeConfig());
    kc.loadFromOptions({
      clusters: [cluster],
      users: [{ name: 'node', token }],
      contexts: [{ name: 'node', cluster: cluster.name, user: 'node' }],
      currentContext: 'node',
    });
    const core = kc.makeApiClient(k8s.CoreV1Api);
    this.#nodeToken = { core, renewAt: now + (NODE_TOKEN_SECONDS * 1000 * 2) / 3 };
    return core;
  }

  async readPeerSecret(name: string): Promise<string | undefined> {
    try {
      const core = await this.#secretsClient();
      const s = await core.readNamespacedSecret({ name, namespace: this.#operatorNamespace });
      const v = s.data?.[SECRET_KEY];
      return v ? Buffer.from(v, 'base64').toString('utf8') : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async readNodeTls(): Promise<{ ca: string; cert: string; key: string } | undefined> {
    try {
      const core = await this.#secretsClient();
      const d = (
        await core.readNamespacedSecret({ name: tlsSecretName(this.#node), namespace: this.#operatorNamespace })
      ).data;
      const text = (k: string) => (d?.[k] ? Buffer.from(d[k], 'base64').toString('utf8') : undefined);
      const [ca, cert, key] = [text('ca.crt'), text('tls.crt'), text('tls.key')];
      return ca && cert && key ? { ca, cert, key } : undefined;
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async renewLease(at: Date): Promise<void> {
    const name = agentLeaseName(this.#node);
    const namespace = this.#operatorNamespace;
    const renewTime = new k8s.V1MicroTime(at.getTime());
    const spec = { holderIdentity: this.#node, leaseDurationSeconds: AGENT_LEASE_SECONDS };
    // A merge patch: no read first, one request per renewal (the agent is the Lease's only writer).
    // MicroTime wants six fractional digits: V1MicroTime's toISOString writes them.
    try {
      await this.#leases.patchNamespacedLease(
        { name, namespace, body: { spec: { ...spec, renewTime: renewTime.toISOString() } } },
        mergePatch,
      );
    } catch (err) {
      if (!isNotFound(err)) throw err;
      await this.#leases.createNamespacedLease({
        namespace,
        body: { metadata: { name, namespace }, spec: { ...spec, renewTime } },
      });
    }
  }

  async readPool(name: string): Promise<StoragePool | undefined> {
    try {
      return StoragePool.parse(
        await this.#custom.getClusterCustomObject({ group: GROUP, version: VERSION, plural: KINDS.pool.plural, name }),
      );
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async readVolume(namespace: string, name: string): Promise<ReplicatedVolume | undefined> {
    try {
      return ReplicatedVolume.parse(await this.#custom.getNamespacedCustomObject({ ...volumeApi, namespace, name }));
    } catch (err) {
      if (isNotFound(err)) return undefined;
      throw err;
    }
  }

  async patchVolumeStatus(rv: ReplicatedVolume, status: { fence: Fence | null }): Promise<void> {
    await this.#custom.patchNamespacedCustomObjectStatus(
      {
        ...volumeApi,
        namespace: rv.metadata.namespace,
        name: rv.metadata.name,
        body: { metadata: { resourceVersion: rv.metadata.resourceVersion }, status },
      },
      mergePatch,
    );
  }
}
