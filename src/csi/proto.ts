// The CSI protobuf and the kubelet's plugin registration API, loaded at start from their
// projects' own Go modules (github.com/container-storage-interface/spec, k8s.io/kubelet):
// scripts/fetch-protos.sh takes them from the Go module proxy, each next to its LICENSE,
// into ~/.cache/tandem (scripts/csi-setup.sh) or into the image's /app/protos (the
// Dockerfile's `protos` stage); they are not copied into this tree. --csi-proto /
// TANDEM_CSI_PROTO name another copy.
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** The CSI spec version csi-sanity v5.6.0 is built against (its go.mod). */
export const CSI_SPEC_VERSION = 'v1.13.0';
/** The k8s.io/kubelet module the registration API is taken from (scripts/fetch-protos.sh). */
export const KUBELET_MODULE_VERSION = 'v0.34.4';

/** `rel` under the image's /app/protos when there, else under the cache. */
function protoFile(rel: string): string {
  const image = fileURLToPath(new URL(`../../protos/${rel}`, import.meta.url));
  if (existsSync(image)) return image;
  return join(process.env.TANDEM_CACHE ?? join(homedir(), '.cache', 'tandem'), rel);
}

export function defaultProtoPath(): string {
  return protoFile(`csi-spec-${CSI_SPEC_VERSION}/csi.proto`);
}

export function defaultRegistrationProtoPath(): string {
  return protoFile(`kubelet-${KUBELET_MODULE_VERSION}/api.proto`);
}

/** The kubelet's plugin registration service (package pluginregistration). */
export function loadRegistration(path = defaultRegistrationProtoPath()): grpc.ServiceDefinition {
  const def = protoLoader.loadSync(path, { keepCase: true, defaults: true });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    pluginregistration: { Registration: { service: grpc.ServiceDefinition } };
  };
  return pkg.pluginregistration.Registration.service;
}

export type CsiServices = {
  Identity: grpc.ServiceDefinition;
  Controller: grpc.ServiceDefinition;
  Node: grpc.ServiceDefinition;
};

/**
 * keepCase: the handlers see the spec's field names (volume_id); enums as their
 * names (SINGLE_NODE_WRITER); int64 as Number (sizes stay below 2^53); oneofs
 * tell which of access_type's `block`/`mount` is set.
 */
export function loadCsi(path = defaultProtoPath()): CsiServices {
  const def = protoLoader.loadSync(path, {
    keepCase: true,
    longs: Number,
    enums: String,
    defaults: true,
    oneofs: true,
  });
  const pkg = grpc.loadPackageDefinition(def) as unknown as {
    csi: { v1: Record<'Identity' | 'Controller' | 'Node', { service: grpc.ServiceDefinition }> };
  };
  const v1 = pkg.csi.v1;
  return { Identity: v1.Identity.service, Controller: v1.Controller.service, Node: v1.Node.service };
}
