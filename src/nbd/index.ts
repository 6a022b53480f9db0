// tandem's NBD server: fixed newstyle handshake, simple replies, one backend (NbdExport)
// per export name. See server.ts, connection.ts, and the NBD project's doc/proto.md.

export type { ExportLookup, ExportRefusal, NbdExport, NbdServer, StartNbdServerOptions } from './types.ts';
export {
  startNbdServer,
  DEFAULT_HANDSHAKE_TIMEOUT_MS,
  DEFAULT_MAX_IN_FLIGHT,
  DEFAULT_MAX_IN_FLIGHT_BYTES,
} from './server.ts';
export { NbdError, NbdErrorCode } from './errors.ts';
export {
  describeExport,
  checkRequest,
  nbdErrnoFor,
  transmissionFlagsFor,
  type BlockSizes,
  type ExportCapabilities,
} from './policy.ts';
export * as nbdWire from './constants.ts';
export * as nbdCodec from './codec.ts';
