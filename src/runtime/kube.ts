// Small helpers over @kubernetes/client-node 2.x shared by the controller and the agent.
import * as k8s from '@kubernetes/client-node';
import { API_VERSION, GROUP, KINDS, VERSION } from '../api/names.ts';

export const mergePatch = k8s.setHeaderOptions('Content-Type', k8s.PatchStrategy.MergePatch);

export function apiCode(err: unknown): number | undefined {
  return err instanceof k8s.ApiException ? err.code : undefined;
}
export const isNotFound = (err: unknown) => apiCode(err) === 404;
export const isConflict = (err: unknown) => apiCode(err) === 409;

export const volumeApi = { group: GROUP, version: VERSION, plural: KINDS.volume.plural } as const;
export const replicaApi = { group: GROUP, version: VERSION, plural: KINDS.replica.plural } as const;

export function collectionPath(plural: string, namespace?: string): string {
  return namespace
    ? `/apis/${GROUP}/${VERSION}/namespaces/${namespace}/${plural}`
    : `/apis/${GROUP}/${VERSION}/${plural}`;
}

/** An informer's list function for one of tandem's kinds, all namespaces. */
export function listCustom<T extends k8s.KubernetesObject>(
  custom: k8s.CustomObjectsApi,
  plural: string,
  labelSelector?: string,
): () => Promise<k8s.KubernetesListObject<T>> {
  return async () =>
    (await custom.listCustomObjectForAllNamespaces({
      group: GROUP,
      version: VERSION,
      resourcePlural: plural,
      ...(labelSelector ? { labelSelector } : {}),
    })) as k8s.KubernetesListObject<T>;
}

export { API_VERSION };

export type EventInput = { type: 'Normal' | 'Warning'; reason: string; message: string };

/** A core/v1 Event about a tandem object (kubectl describe shows it). */
export async function recordEvent(
  core: k8s.CoreV1Api,
  component: string,
  host: string | undefined,
  obj: { kind: string; name: string; namespace: string; uid?: string | undefined },
  e: EventInput,
): Promise<void> {
  const now = new Date();
  await core.createNamespacedEvent({
    namespace: obj.namespace,
    body: {
      metadata: { generateName: `${obj.name}.`, namespace: obj.namespace },
      involvedObject: {
        apiVersion: API_VERSION,
        kind: obj.kind,
        name: obj.name,
        namespace: obj.namespace,
        ...(obj.uid ? { uid: obj.uid } : {}),
      },
      type: e.type,
      reason: e.reason,
      message: e.message.slice(0, 1024),
      source: { component, ...(host ? { host } : {}) },
      firstTimestamp: now,
      lastTimestamp: now,
      count: 1,
      reportingComponent: component,
      reportingInstance: host ?? component,
    },
  });
}

/** A short, loggable form of an API error: the HTTP code and the Status message, not the whole response. */
export function describeError(err: unknown): { code?: number; message: string } {
  if (err instanceof k8s.ApiException) {
    let msg = String(err.body);
    try {
      const b = (typeof err.body === 'string' ? JSON.parse(err.body) : err.body) as { message?: string };
      if (b?.message) msg = b.message;
    } catch {
      /* not a Status */
    }
    return { code: err.code, message: msg };
  }
  return { message: err instanceof Error ? err.message : String(err) };
}
