// Which changes of a replica or a Node can change a reconcile's outcome? Informers report
// every update; most are heartbeats. Every agent writes each replica's status every 5 s
// with a new lastHeartbeatTime (and moving I/O counters), and every kubelet posts its
// Node's status every few minutes with new lastHeartbeatTimes. Enqueuing the volume for
// each of them made the controller reconcile every volume about 20 times a minute at rest
// (issue 17 item 6, npm run bench:control), work that grows with the volumes for nothing:
// the time-driven decisions (a node or an agent silent for failover.nodeNotReadySeconds,
// a heartbeat gone stale) are rechecked by the reconcile's own requeue at the moment they
// fall due (roles.ts recheckAfterMs, VolumeReconciler's heartbeat deadline), and the caches
// still hold every heartbeat for the reconciles that run.
//
// A fingerprint is what a reconcile may read of the object, minus the heartbeat: equal
// fingerprints, no enqueue. Pure; the Controller keeps the last fingerprint per object.
import type * as k8s from '@kubernetes/client-node';
import { canonicalJson } from '../runtime/canonical-json.ts';
import { nodeView } from './reconciler.ts';

/** A replica as the reconcile reads it, without status.lastHeartbeatTime and the I/O counters. */
export function replicaFingerprint(o: k8s.KubernetesObject): string {
  const r = o as k8s.KubernetesObject & { spec?: unknown; status?: Record<string, unknown> };
  const { lastHeartbeatTime: _beat, counters: _counters, ...status } = r.status ?? {};
  const m = r.metadata ?? {};
  return canonicalJson({
    name: m.name,
    labels: m.labels,
    ownerReferences: m.ownerReferences,
    generation: m.generation,
    deletionTimestamp: m.deletionTimestamp,
    spec: r.spec,
    status,
  });
}

/** A Node as the reconcile reads it (nodeView: Ready and since when, cordon, InternalIP) and its taints (the workload release waits for them). */
export function nodeFingerprint(n: k8s.V1Node): string {
  return canonicalJson({
    view: nodeView(n),
    taints: (n.spec?.taints ?? []).map((t) => ({ key: t.key, value: t.value, effect: t.effect })),
  });
}
