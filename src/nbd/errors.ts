// Typed errors of the NBD server, with stable codes. Callers match on `code`,
// never on the message text.

export const NbdErrorCode = {
  /** A magic number on the wire was wrong: the stream is broken, the connection is dropped. */
  BAD_MAGIC: 'TANDEM_ERR_NBD_BAD_MAGIC',
  /** The options passed to startNbdServer() are inconsistent. */
  BAD_SERVER_OPTIONS: 'TANDEM_ERR_NBD_BAD_SERVER_OPTIONS',
  /** An NbdExport returned by the lookup violates the backend contract (size, block sizes). */
  BAD_EXPORT: 'TANDEM_ERR_NBD_BAD_EXPORT',
  /** A read from the backend returned the wrong number of bytes. */
  SHORT_READ: 'TANDEM_ERR_NBD_SHORT_READ',
} as const;
export type NbdErrorCode = (typeof NbdErrorCode)[keyof typeof NbdErrorCode];

export class NbdError extends Error {
  readonly code: NbdErrorCode;
  constructor(code: NbdErrorCode, message: string) {
    super(message);
    this.name = 'NbdError';
    this.code = code;
  }
}
