// One connection pool per KubeConfig. @kubernetes/client-node 2.0 builds a new undici
// Agent for every API call (KubeConfig.applySecurityAuthentication → createDispatcher;
// its agentCache serves only the WebSocket paths), so no connection is ever reused:
// each GET, PATCH, list and watch opens its own TCP + TLS connection, parses the CA,
// client certificate and key into a fresh TLS context, and leaves the idle socket
// open until a keep-alive timeout closes it. The controller's leader election alone
// (a GET and a PUT of its Lease every 2 s) made 60 connections a minute; the TLS
// contexts' churn is what grew glibc's heap to ~100 MiB at 20 volumes
// (docs/design/2026-12-07-controller-memory.md).
//
// Here the dispatcher is built once and kept while the TLS material it was built from
// stays the same; certificates read from files are read on every call as before, so a
// rotated certificate or key gives a new dispatcher, and the old one closes once its
// requests (a watch included) have ended.
import { createHash, type Hash } from 'node:crypto';
import type * as https from 'node:https';
import type * as k8s from '@kubernetes/client-node';

type Dispatcher = NonNullable<ReturnType<k8s.RequestContext['getDispatcher']>>;
type BuildDispatcher = (cluster: k8s.Cluster | null, agentOptions: https.AgentOptions) => Dispatcher | undefined;

/** Makes `kc` reuse one dispatcher (and so its connections) across API calls; returns `kc`. */
export function shareConnections<T extends k8s.KubeConfig>(kc: T): T {
  // createDispatcher is private in client-node's types; shareConnections' test fails when it moves.
  const target = kc as unknown as { createDispatcher?: BuildDispatcher };
  const build = target.createDispatcher;
  if (typeof build !== 'function')
    throw new Error('@kubernetes/client-node has no KubeConfig.createDispatcher: review src/runtime/kube-config.ts');
  let shared: { key: string; dispatcher: Dispatcher } | undefined;
  target.createDispatcher = (cluster, agentOptions) => {
    const key = fingerprint(kc.createDispatcherOptions(cluster, agentOptions));
    if (shared?.key === key) return shared.dispatcher;
    const dispatcher = build.call(kc, cluster, agentOptions);
    // undefined: plain HTTP without TLS options; fetch's global dispatcher pools already.
    if (!dispatcher) return undefined;
    const old = shared?.dispatcher;
    shared = { key, dispatcher };
    // close() lets the requests in flight (a watch too) run to their end, then closes the
    // connections; nothing waits for it, and it has nothing to report that matters here.
    old?.close().catch(() => {});
    return dispatcher;
  };
  return kc;
}

/** A digest of the dispatcher's options: buffers (CA, certificate, key) by content. */
function fingerprint(options: unknown): string {
  const h = createHash('sha256');
  feed(h, options);
  return h.digest('base64');
}

function feed(h: Hash, v: unknown): void {
  if (v instanceof Uint8Array) {
    h.update(`b${v.length}:`);
    h.update(v);
  } else if (Array.isArray(v)) {
    h.update(`a${v.length}[`);
    for (const x of v) feed(h, x);
    h.update(']');
  } else if (v !== null && typeof v === 'object') {
    const entries = Object.entries(v).filter(([, x]) => x !== undefined);
    entries.sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    h.update(`o${entries.length}{`);
    for (const [k, x] of entries) {
      h.update(`${JSON.stringify(k)}=`);
      feed(h, x);
    }
    h.update('}');
  } else {
    h.update(`${typeof v}:${JSON.stringify(v) ?? ''};`);
  }
}
