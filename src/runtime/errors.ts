// Errors a reconcile can end with. A TerminalError is not retried with backoff:
// the object is wrong until someone changes it (the next change re-queues it).

export const CONTROLLER_ERROR_CODES = {
  terminal: 'TANDEM_ERR_TERMINAL',
  conflict: 'TANDEM_ERR_CONFLICT',
} as const;

export class TerminalError extends Error {
  readonly code = CONTROLLER_ERROR_CODES.terminal;
  readonly reason: string;
  constructor(reason: string, message: string) {
    super(message);
    this.name = 'TerminalError';
    this.reason = reason;
  }
}
