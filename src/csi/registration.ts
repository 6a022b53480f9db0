// The kubelet's plugin registration, which node-driver-registrar does for other CSI
// drivers (its module is not on the Go module proxy; the API is four fields). The
// kubelet watches its plugins_registry directory; a socket appearing there is asked
// GetInfo, the kubelet then dials the endpoint it names (the driver's csi.sock as the
// kubelet sees it), calls NodeGetInfo, records the node's CSINode entry and reports
// back with NotifyRegistrationStatus. Removing the socket unregisters the driver.
import { rm } from 'node:fs/promises';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import type { Logger } from 'pino';
import { DRIVER_NAME } from './identity.ts';

/** CSI versions this driver speaks (the kubelet picks one it knows). */
export const SUPPORTED_VERSIONS = ['1.0.0'];

export type RegistrationOptions = {
  /** The kubelet's plugins_registry directory as this process sees it. */
  registryDir: string;
  /** The driver's csi.sock as the kubelet sees it (a host path). */
  kubeletEndpoint: string;
  service: grpc.ServiceDefinition;
  log: Logger;
};

export type RegistrationState = { registered: boolean; error?: string; at?: Date };

export class Registration {
  #server: grpc.Server | undefined;
  #state: RegistrationState = { registered: false };
  readonly socket: string;
  private readonly o: RegistrationOptions;

  constructor(o: RegistrationOptions) {
    this.o = o;
    if (!o.kubeletEndpoint.startsWith('/'))
      throw new Error(`kubelet endpoint ${o.kubeletEndpoint}: an absolute path, as the kubelet sees it`);
    this.socket = join(o.registryDir, `${DRIVER_NAME}-reg.sock`);
  }

  /** What the kubelet last said; registered false until it has. */
  get state(): RegistrationState {
    return this.#state;
  }

  async start(): Promise<void> {
    await rm(this.socket, { force: true });
    const server = new grpc.Server();
    server.addService(this.o.service, {
      GetInfo: (_call: grpc.ServerUnaryCall<unknown, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.o.log.debug('The kubelet asked for the plugin info');
        cb(null, {
          type: 'CSIPlugin',
          name: DRIVER_NAME,
          endpoint: this.o.kubeletEndpoint,
          supported_versions: SUPPORTED_VERSIONS,
        });
      },
      NotifyRegistrationStatus: (
        call: grpc.ServerUnaryCall<{ plugin_registered?: boolean; error?: string }, unknown>,
        cb: grpc.sendUnaryData<unknown>,
      ) => {
        const registered = call.request.plugin_registered === true;
        const error = call.request.error ?? '';
        this.#state = { registered, ...(error ? { error } : {}), at: new Date() };
        if (registered) this.o.log.info({ endpoint: this.o.kubeletEndpoint }, 'Registered with the kubelet');
        else this.o.log.error({ error }, 'The kubelet refused the registration');
        cb(null, {});
      },
    });
    await new Promise<void>((resolve, reject) =>
      server.bindAsync(`unix://${this.socket}`, grpc.ServerCredentials.createInsecure(), (err) =>
        err ? reject(err) : resolve(),
      ),
    );
    this.#server = server;
  }

  /** Removes the socket (the kubelet unregisters the driver) and stops serving. */
  async stop(): Promise<void> {
    await rm(this.socket, { force: true });
    const s = this.#server;
    this.#server = undefined;
    if (s) await new Promise<void>((resolve) => s.tryShutdown(() => resolve()));
  }
}
