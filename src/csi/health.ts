// The driver's liveness endpoint (--health-port): GET /healthz calls the driver's own
// Identity.Probe over its unix socket, the way the kubelet's CSI calls reach it, so a
// driver whose gRPC server stopped answering fails its liveness probe and is restarted.
// A Probe answered with ready=false (the controller cannot reach the API server) is
// still alive: a restart would not bring the API server back. Upstream's livenessprobe
// sidecar does the same call; this saves a container per pod.
import { createServer, type Server } from 'node:http';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';

export type Health = { ok: boolean; ready?: boolean; error?: string };

/** One Probe over `endpoint` (unix:///path) with a deadline. */
export function probeOnce(identity: grpc.ServiceDefinition, endpoint: string, timeoutMs: number): Promise<Health> {
  const Client = grpc.makeGenericClientConstructor(identity, 'Identity');
  const client = new Client(endpoint, grpc.credentials.createInsecure()) as unknown as grpc.Client & {
    Probe: (
      req: object,
      opts: grpc.CallOptions,
      cb: (err: grpc.ServiceError | null, res?: { ready?: { value?: boolean } }) => void,
    ) => void;
  };
  return new Promise<Health>((resolve) => {
    client.Probe({}, { deadline: Date.now() + timeoutMs }, (err, res) => {
      client.close();
      resolve(err ? { ok: false, error: err.message } : { ok: true, ready: res?.ready?.value ?? true });
    });
  });
}

/** Serves GET /healthz on `port` (all addresses: the kubelet probes the pod's IP). */
export async function serveHealth(
  port: number,
  identity: grpc.ServiceDefinition,
  endpoint: string,
  log: Logger,
  timeoutMs = 3000,
): Promise<Server> {
  const server = createServer((req, res) => {
    if (req.method !== 'GET' || req.url !== '/healthz') {
      res.writeHead(404).end();
      return;
    }
    void probeOnce(identity, endpoint, timeoutMs).then((h) => {
      if (!h.ok) log.warn({ error: h.error }, 'Liveness: the driver did not answer Probe');
      res.writeHead(h.ok ? 200 : 503, { 'content-type': 'application/json' }).end(`${JSON.stringify(h)}\n`);
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, resolve);
  });
  return server;
}
