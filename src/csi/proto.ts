// The CSI protobuf, loaded at start from the CSI spec's own Go module
// (github.com/container-storage-interface/spec): scripts/csi-setup.sh takes it from
// the Go module proxy into ~/.cache/tandem, next to its LICENSE; it is not copied
// into this tree. The image build does the same. --csi-proto / TANDEM_CSI_PROTO
// name another copy.
import { homedir } from 'node:os';
import { join } from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

/** The CSI spec version csi-sanity v5.6.0 is built against (its go.mod). */
export const CSI_SPEC_VERSION = 'v1.13.0';

export function defaultProtoPath(): string {
  const cache = process.env.TANDEM_CACHE ?? join(homedir(), '.cache', 'tandem');
  return join(cache, `csi-spec-${CSI_SPEC_VERSION}`, 'csi.proto');
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
