// A refusal with its gRPC status code (CSI spec "Error Scheme"): handlers throw
// CsiError; the server turns it into the call's status. Anything else thrown is
// INTERNAL with its message.
import { status } from '@grpc/grpc-js';

export const CODES = status;

export class CsiError extends Error {
  readonly code: status;
  constructor(code: status, message: string) {
    super(message);
    this.name = 'CsiError';
    this.code = code;
  }
}

export const invalid = (m: string) => new CsiError(status.INVALID_ARGUMENT, m);
export const notFound = (m: string) => new CsiError(status.NOT_FOUND, m);
export const precondition = (m: string) => new CsiError(status.FAILED_PRECONDITION, m);
export const alreadyExists = (m: string) => new CsiError(status.ALREADY_EXISTS, m);
export const unavailable = (m: string) => new CsiError(status.UNAVAILABLE, m);
export const aborted = (m: string) => new CsiError(status.ABORTED, m);
