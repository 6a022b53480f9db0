// Well-known names of tandem's Kubernetes API: group, kinds, labels, the
// finalizer, field managers. Everyone imports these; they import nothing.

import { createHash } from 'node:crypto';

export const GROUP = 'tandem.dev';
export const VERSION = 'v1alpha1';
export const API_VERSION = `${GROUP}/${VERSION}`;

export const KINDS = {
  volume: { kind: 'ReplicatedVolume', plural: 'replicatedvolumes', singular: 'replicatedvolume', shortNames: ['rv'] },
  replica: {
    kind: 'ReplicatedVolumeReplica',
    plural: 'replicatedvolumereplicas',
    singular: 'replicatedvolumereplica',
    shortNames: ['rvr'],
  },
  pool: { kind: 'StoragePool', plural: 'storagepools', singular: 'storagepool', shortNames: ['sp'] },
} as const;

export const LABELS = {
  /** On replicas and the peer Secret: the ReplicatedVolume's name. */
  volume: `${GROUP}/volume`,
  /** On the peer Secret (in the operator's namespace): the ReplicatedVolume's namespace. */
  volumeNamespace: `${GROUP}/volume-namespace`,
  /** On replicas: the node the replica lives on (the agent selects its replicas by it). */
  node: `${GROUP}/node`,
  component: 'app.kubernetes.io/component',
  managedBy: 'app.kubernetes.io/managed-by',
} as const;

export const ANNOTATIONS = {
  /** The replication port the controller allocated to the volume; written once. */
  port: `${GROUP}/port`,
  /**
   * On a volume, set by a person: promote this node now even if its data is not
   * UpToDate (the other node is lost and the loss of its newer writes is accepted).
   * The controller removes it once it has acted.
   */
  forcePrimary: `${GROUP}/force-primary`,
  /**
   * On a volume, written by the CSI driver's ControllerPublishVolume (with spec.primary):
   * the node the volume is published to. A switch toward it is recorded as CsiPublish.
   */
  csiPublishedNode: `${GROUP}/csi-published-node`,
  /**
   * On a replica, written by the controller (an ISO time): report now. A decision that
   * waits only on a fresh report of this replica (a planned switch) asks for it; the agent
   * reports at once when the request is newer than its last report.
   */
  reportRequested: `${GROUP}/report-requested`,
} as const;

/** Held by every ReplicatedVolume until its engines are down. */
export const FINALIZER = `${GROUP}/replicated-volume`;

export const FIELD_MANAGERS = { controller: 'tandem-controller', agent: 'tandem-node-agent' } as const;

/** The Secret key holding the volume's `shared-secret`. */
export const SECRET_KEY = 'shared-secret';

/** Replication ports handed out to volumes: [first, first + count). 7789 is the tutorial's. */
export const PORT_RANGE = { first: 7789, count: 1000 } as const;

/** The engine's resource name for a volume: unique per cluster (namespaces have no dots). */
export function engineResourceName(namespace: string, name: string): string {
  return `${namespace}.${name}`;
}

export function replicaName(volume: string, node: string): string {
  return `${volume}-${node}`;
}

/** Where the chart installs tandem when nobody says otherwise (POD_NAMESPACE overrides it). */
export const DEFAULT_OPERATOR_NAMESPACE = 'tandem-system';

/**
 * The volume's peer Secret, in the operator's namespace (never the user's: a user of
 * the volume's namespace must not read the link's secret, issue 15 item 4). Unique per
 * volume: namespaces have no dots. Too long a name keeps a hash of the whole.
 */
export function peerSecretName(namespace: string, volume: string): string {
  const name = `peer.${namespace}.${volume}`;
  if (name.length <= 253) return name;
  const hash = createHash('sha256').update(`${namespace}/${volume}`).digest('hex').slice(0, 16);
  return `peer.${hash}.${name.slice(5, 200)}`.replace(/[.-]+$/, '');
}

/**
 * Each node's own ServiceAccount (and its Role and RoleBinding) in the operator's
 * namespace: it may read only that node's Secrets (controller/decisions/node-access.ts).
 * The node-agent admission policy spells the same prefix.
 */
/** The Lease (release namespace) an agent renews every few seconds: its node's agent is alive. */
export function agentLeaseName(node: string): string {
  return `tandem-agent-${node}`;
}

export function nodeServiceAccountName(node: string): string {
  return `tandem-node-${node}`;
}

/** The node's TLS key and certificate for peer links (ca.crt, tls.crt, tls.key), in the operator's namespace. */
export function tlsSecretName(node: string): string {
  return `tls.${node}`;
}

/** The CA that signs every node's certificate (ca.crt and ca.key; only the controller reads it). */
export const CA_SECRET_NAME = 'tandem-peer-ca';

/** Condition types on volumes and replicas. */
export const CONDITIONS = {
  /** Volume: Primary up, Connected, UpToDate/UpToDate, agents reporting. */
  ready: 'Ready',
  /** Volume: the named nodes exist, are schedulable and have an InternalIP. */
  placed: 'Placed',
  /** Replica: the disk and meta-disk paths exist on the node. */
  disksFound: 'DisksFound',
  /** Replica: the engine runs as the spec says (role, config). */
  engineReady: 'EngineReady',
  /** Replica: the consumer filesystem is mounted at spec.mountPath (Primary only). */
  mounted: 'Mounted',
  /** Replica: the last connect found a split brain (True while it stands unresolved). */
  splitBrain: 'SplitBrain',
  /** Replica: the device has the size spec.sizeBytes asks for (False while it grows, and why). */
  sized: 'Sized',
} as const;
