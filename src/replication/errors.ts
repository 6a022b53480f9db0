// Typed errors with stable codes. Callers match on `code`, never on message text.
// `exitCode` is what tandemadm exits with, following drbdsetup where it has one.

export const ERROR_CODES = {
  config: 'TANDEM_ERR_CONFIG',
  metadata: 'TANDEM_ERR_METADATA',
  metadataExists: 'TANDEM_ERR_METADATA_EXISTS',
  backing: 'TANDEM_ERR_BACKING',
  stateChange: 'TANDEM_ERR_STATE_CHANGE',
  notUp: 'TANDEM_ERR_NOT_UP',
  alreadyUp: 'TANDEM_ERR_ALREADY_UP',
  protocol: 'TANDEM_ERR_PROTOCOL',
  auth: 'TANDEM_ERR_AUTH',
  notImplemented: 'TANDEM_ERR_NOT_IMPLEMENTED',
  io: 'TANDEM_ERR_IO',
  usage: 'TANDEM_ERR_USAGE',
} as const;
export type ErrorCode = (typeof ERROR_CODES)[keyof typeof ERROR_CODES];

export class TandemError extends Error {
  readonly code: ErrorCode;
  readonly exitCode: number;
  constructor(code: ErrorCode, message: string, exitCode = 10, options?: ErrorOptions) {
    super(message, options);
    this.name = 'TandemError';
    this.code = code;
    this.exitCode = exitCode;
  }
}

/**
 * A refused state change, worded as drbdsetup words it:
 * `State change failed: (-2) Need access to UpToDate data`.
 */
export class StateChangeError extends TandemError {
  readonly drbdCode: number;
  constructor(drbdCode: number, reason: string) {
    super(ERROR_CODES.stateChange, `State change failed: (${drbdCode}) ${reason}`, 11);
    this.name = 'StateChangeError';
    this.drbdCode = drbdCode;
  }
}

/** DRBD's SS_* refusal codes, the ones tandem can return. */
export const REFUSALS = {
  twoPrimaries: [-1, 'Multiple primaries not allowed by config'],
  noUpToDateDisk: [-2, 'Need access to UpToDate data'],
  diskless: [-11, 'Device is diskless, the requested operation requires a disk'],
  deviceInUse: [-12, 'Device is held open by someone'],
  noNetConfig: [-10, 'Need a connection to start verify or resync'],
  needConnection: [-15, 'Need a connection to start verify or resync'],
  primaryNop: [-8, 'Refusing to be Primary while peer is not outdated'],
  inTransientState: [-18, 'In transient state, retry after next state change'],
  lowerThanOutdated: [-3, 'Refusing to be Outdated while Connected'],
  syncing: [-16, 'Refusing to change role while a resync is running'],
} as const;

export function refuse(r: readonly [number, string], detail?: string): StateChangeError {
  return new StateChangeError(r[0], detail ? `${r[1]} (${detail})` : r[1]);
}
