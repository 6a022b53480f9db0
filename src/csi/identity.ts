// CSI names tandem answers to: the driver's name, the topology key, the volume id.
import { createHash } from 'node:crypto';
import { ANNOTATIONS } from '../api/names.ts';

/** The CSIDriver object's name and GetPluginInfo's answer. */
export const DRIVER_NAME = 'tandem.dev';
/** The one topology segment: the node a replica lives on (NodeGetInfo, CreateVolume's accessible_topology). */
export const TOPOLOGY_KEY = 'tandem.dev/node';
/** On a ReplicatedVolume the driver created: the CSI name it was created for (CreateVolume is idempotent on it). */
export const CSI_NAME_ANNOTATION = 'tandem.dev/csi-name';
/** On a ReplicatedVolume: the node ControllerPublishVolume published it to (removed by ControllerUnpublish). */
export const PUBLISHED_ANNOTATION = ANNOTATIONS.csiPublishedNode;
/** The label the driver puts on its volumes (ListVolumes selects on it). */
export const CSI_LABEL = 'tandem.dev/csi';

const LABEL_SAFE = /^[a-z0-9]([-a-z0-9]*[a-z0-9])?$/;

/**
 * The ReplicatedVolume's name for a CSI volume name. The provisioner's `pvc-<uid>` is
 * kept as it is; any other name (upper case, dots, up to 128 characters in the CSI
 * spec) becomes `csi-` and 32 hex digits of its SHA-256, so the volume name stays a
 * label value and its replica and Secret names stay valid.
 */
export function volumeNameFor(csiName: string): string {
  if (LABEL_SAFE.test(csiName) && csiName.length <= 40) return csiName;
  return `csi-${createHash('sha256').update(csiName).digest('hex').slice(0, 32)}`;
}

/** volume_id = NAMESPACE.NAME, the engine's resource name for the volume (namespaces have no dots). */
export function volumeId(namespace: string, name: string): string {
  return `${namespace}.${name}`;
}

/** The namespace and name in a volume_id, or undefined when it is not one of ours. */
export function parseVolumeId(id: string): { namespace: string; name: string } | undefined {
  const m = /^([a-z0-9]([-a-z0-9]*[a-z0-9])?)\.([a-z0-9]([-a-z0-9.]*[a-z0-9])?)$/.exec(id);
  if (!m || m[1]!.length > 63 || m[3]!.length > 253) return undefined;
  return { namespace: m[1]!, name: m[3]! };
}
