// The driver's gRPC server: Identity always, Controller and/or Node by mode, on
// a unix socket (CSI: "unix:///path"). Handlers are async functions of the decoded
// request; a CsiError becomes its status code, anything else INTERNAL. Every call
// is logged with its outcome.
import { rm } from 'node:fs/promises';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { CsiError } from './errors.ts';
import { DRIVER_NAME } from './identity.ts';
import type { CsiServices } from './proto.ts';

type Handler = (req: Record<string, unknown>) => Promise<unknown>;
type Handlers = Record<string, Handler>;

export type DriverParts = {
  controller?: Handlers | undefined;
  node?: Handlers | undefined;
  /** Probe's answer: false while the driver cannot serve (e.g. the API server is unreachable). */
  ready?: () => Promise<boolean>;
  version: string;
};

export function identityHandlers(parts: DriverParts): Handlers {
  return {
    GetPluginInfo: async () => ({ name: DRIVER_NAME, vendor_version: parts.version, manifest: {} }),
    GetPluginCapabilities: async () => ({
      capabilities: [
        ...(parts.controller ? [{ service: { type: 'CONTROLLER_SERVICE' } }] : []),
        { service: { type: 'VOLUME_ACCESSIBILITY_CONSTRAINTS' } },
        // Offline only: the Primary's kernel device shows a grown volume after a
        // re-attach, which needs it unmounted (src/csi/expansion.ts).
        { volume_expansion: { type: 'OFFLINE' } },
      ],
    }),
    Probe: async () => ({ ready: { value: parts.ready ? await parts.ready() : true } }),
  };
}

function implementation(
  def: grpc.ServiceDefinition,
  handlers: Handlers,
  log: Logger,
): grpc.UntypedServiceImplementation {
  const impl: grpc.UntypedServiceImplementation = {};
  for (const method of Object.keys(def)) {
    const h = handlers[method];
    impl[method] = (call: grpc.ServerUnaryCall<Record<string, unknown>, unknown>, cb: grpc.sendUnaryData<unknown>) => {
      if (!h) {
        cb({ code: grpc.status.UNIMPLEMENTED, details: `${method} is not implemented by ${DRIVER_NAME}` });
        return;
      }
      const started = Date.now();
      h(call.request).then(
        (res) => {
          log.debug({ method, ms: Date.now() - started }, 'Served');
          cb(null, res);
        },
        (err: unknown) => {
          const code = err instanceof CsiError ? err.code : grpc.status.INTERNAL;
          const details = err instanceof Error ? err.message : String(err);
          if (code === grpc.status.INTERNAL) log.error({ method, err }, 'Failed');
          else log.info({ method, code: grpc.status[code], details }, 'Refused');
          cb({ code, details });
        },
      );
    };
  }
  return impl;
}

/** Serves on `endpoint` (unix:///path or a path); a stale socket file is removed first. */
export async function serve(
  endpoint: string,
  services: CsiServices,
  parts: DriverParts,
  log: Logger,
): Promise<grpc.Server> {
  const path = endpoint.replace(/^unix:\/\//, '');
  if (!path.startsWith('/')) throw new Error(`endpoint ${endpoint}: expected unix:///absolute/path`);
  await rm(path, { force: true });
  const server = new grpc.Server();
  server.addService(services.Identity, implementation(services.Identity, identityHandlers(parts), log));
  if (parts.controller)
    server.addService(services.Controller, implementation(services.Controller, parts.controller, log));
  if (parts.node) server.addService(services.Node, implementation(services.Node, parts.node, log));
  await new Promise<void>((resolve, reject) =>
    server.bindAsync(`unix://${path}`, grpc.ServerCredentials.createInsecure(), (err) =>
      err ? reject(err) : resolve(),
    ),
  );
  return server;
}
