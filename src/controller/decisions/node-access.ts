// Which Secrets each node's agent may read (issue 15 item 4): the peer Secrets of the
// volumes with a replica on that node, and the node's own TLS Secret. RBAC cannot say
// "the Secrets of your node" to one ServiceAccount shared by every agent, so each node
// has its own ServiceAccount (`tandem-node-<node>`) whose Role names exactly these
// Secrets (resourceNames); the agent reads Secrets only with a token of its node's
// ServiceAccount, and the node-agent admission policy lets it request a token for
// that ServiceAccount only. A pure function of the volumes the controller's cache holds.
import { peerSecretName, tlsSecretName } from '../../api/names.ts';

export type VolumeOnNodes = {
  namespace: string;
  name: string;
  nodes: readonly string[];
  /** The volume is gone but for our finalizer's work: its Secret is still read until the engines are down. */
  gone?: boolean;
};

/**
 * The nodes whose access objects (ServiceAccount, Role, RoleBinding, TLS Secret) can
 * go: the Node is gone from the cluster and no volume, not even one being deleted,
 * has a replica there. A node that comes back gets them made again by its volumes.
 */
export function staleNodeAccess(
  withAccess: readonly string[],
  liveNodes: ReadonlySet<string>,
  volumes: readonly VolumeOnNodes[],
): string[] {
  const used = new Set(volumes.flatMap((v) => v.nodes));
  return [...new Set(withAccess)].filter((n) => !liveNodes.has(n) && !used.has(n)).sort();
}

/** The Secret names node `node`'s agent may read, sorted; never empty (the node's TLS Secret is always there). */
export function nodeSecretNames(node: string, volumes: readonly VolumeOnNodes[]): string[] {
  const names = new Set<string>([tlsSecretName(node)]);
  for (const v of volumes) if (!v.gone && v.nodes.includes(node)) names.add(peerSecretName(v.namespace, v.name));
  return [...names].sort();
}
