// Pure decisions of the NBD server: what an export advertises (transmission flags,
// block size constraints) and whether a request may reach the backend at all.
// "Validate before touching storage": every bound, alignment and length is checked
// here, before the backend sees the request.

import {
  Cmd,
  CmdFlag,
  NBD_DEFAULT_MAX_BLOCK_SIZE,
  NBD_DEFAULT_PREFERRED_BLOCK_SIZE,
  NBD_MAX_MIN_BLOCK_SIZE,
  NbdErr,
  TransmissionFlag,
  type NbdErrno,
} from './constants.ts';
import { NbdError, NbdErrorCode } from './errors.ts';
import type { NbdExport } from './types.ts';

/** proto.md "Block size constraints" as advertised in NBD_INFO_BLOCK_SIZE. */
export interface BlockSizes {
  readonly minimum: number;
  readonly preferred: number;
  readonly maximum: number;
}

/** What one opened export allows; computed once per NBD_OPT_INFO / NBD_OPT_GO / NBD_OPT_EXPORT_NAME. */
export interface ExportCapabilities {
  readonly readOnly: boolean;
  readonly canTrim: boolean;
  readonly canWriteZeroes: boolean;
  readonly blockSizes: BlockSizes;
  readonly transmissionFlags: number;
}

const isPowerOfTwo = (n: number): boolean => Number.isInteger(n) && n > 0 && (n & (n - 1)) === 0;

/**
 * Describes an export for the handshake, or throws NbdError(BAD_EXPORT) if it breaks the
 * backend contract. Block sizes: minimum = minBlockSize ?? 1; preferred = max(4096, minimum)
 * (proto.md: "a power of 2 at least as large as the maximum of the minimum block size and 2^9");
 * maximum = 2^25 (proto.md: "MUST be either an integer multiple of the minimum block size ...
 * SHOULD be at least 2^20"; a power of two up to 2^16 always divides 2^25).
 */
export function describeExport(exp: NbdExport): ExportCapabilities {
  if (!Number.isSafeInteger(exp.size) || exp.size < 0)
    throw new NbdError(NbdErrorCode.BAD_EXPORT, `export size ${exp.size} is not a non-negative safe integer`);
  const minimum = exp.minBlockSize ?? 1;
  // proto.md "Block size constraints": the minimum "MUST be a power of 2, MUST NOT be larger than 2^16".
  if (!isPowerOfTwo(minimum) || minimum > NBD_MAX_MIN_BLOCK_SIZE)
    throw new NbdError(NbdErrorCode.BAD_EXPORT, `minBlockSize ${minimum} is not a power of two in [1, 65536]`);
  const blockSizes = {
    minimum,
    preferred: Math.max(NBD_DEFAULT_PREFERRED_BLOCK_SIZE, minimum),
    maximum: NBD_DEFAULT_MAX_BLOCK_SIZE,
  };
  const readOnly = exp.readOnly;
  const canTrim = !readOnly && typeof exp.trim === 'function';
  const canWriteZeroes = !readOnly && typeof exp.writeZeroes === 'function';
  return {
    readOnly,
    canTrim,
    canWriteZeroes,
    blockSizes,
    transmissionFlags: transmissionFlagsFor({ readOnly, canTrim, canWriteZeroes }),
  };
}

/**
 * proto.md "Transmission flags": "The server MUST NOT set the flag for features it does not
 * support." HAS_FLAGS always; FLUSH always (every backend has flush()); FUA, TRIM and
 * WRITE_ZEROES only for a writable export that has them; never CAN_MULTI_CONN (a flush on one
 * connection is not promised to cover writes completed on another), never structured-reply
 * features (DF, FAST_ZERO needs a fast-fail contract the backend does not have).
 */
export function transmissionFlagsFor(caps: { readOnly: boolean; canTrim: boolean; canWriteZeroes: boolean }): number {
  let flags = TransmissionFlag.NBD_FLAG_HAS_FLAGS | TransmissionFlag.NBD_FLAG_SEND_FLUSH;
  if (caps.readOnly) flags |= TransmissionFlag.NBD_FLAG_READ_ONLY;
  else flags |= TransmissionFlag.NBD_FLAG_SEND_FUA;
  if (caps.canTrim) flags |= TransmissionFlag.NBD_FLAG_SEND_TRIM;
  if (caps.canWriteZeroes) flags |= TransmissionFlag.NBD_FLAG_SEND_WRITE_ZEROES;
  return flags;
}

/**
 * Command flags valid per command. proto.md "Command flags": NBD_CMD_FLAG_FUA "is valid for all
 * commands, provided NBD_FLAG_SEND_FUA has been negotiated, in which case the server MUST accept
 * all commands with this bit set (even by ignoring the bit)"; NO_HOLE is valid during
 * WRITE_ZEROES. DF, REQ_ONE and FAST_ZERO need flags this server does not advertise.
 */
function allowedFlags(command: number): number {
  return command === Cmd.NBD_CMD_WRITE_ZEROES
    ? CmdFlag.NBD_CMD_FLAG_FUA | CmdFlag.NBD_CMD_FLAG_NO_HOLE
    : CmdFlag.NBD_CMD_FLAG_FUA;
}

export interface RequestShape {
  readonly command: number;
  readonly flags: number;
  readonly offset: number;
  readonly length: number;
}

/**
 * Decides whether a transmission request may reach the backend: 0, or the NBD error to reply
 * with. `size` is the export size now. NBD_CMD_DISC is not a request to validate (no reply).
 *
 * proto.md "Error values": "The server SHOULD return NBD_ENOSPC if it receives a write request
 * including one or more sectors beyond the size of the device ... SHOULD return NBD_EINVAL if
 * it receives a read or trim request including one or more sectors beyond the size of the
 * device, or if a read or write request is not aligned to advertised minimum block sizes ...
 * SHOULD return NBD_EPERM if it receives a write or trim request on a read-only export ...
 * SHOULD return NBD_EINVAL if it receives an unknown command ... an unknown command flag".
 * NBD_CMD_WRITE_ZEROES: "SHOULD return NBD_ENOSPC ... beyond the size of the device ...
 * NBD_EPERM ... on a read-only export".
 */
export function checkRequest(req: RequestShape, caps: ExportCapabilities, size: number): NbdErrno {
  const { command, flags, offset, length } = req;
  const isWrite = command === Cmd.NBD_CMD_WRITE || command === Cmd.NBD_CMD_WRITE_ZEROES;
  const isTrim = command === Cmd.NBD_CMD_TRIM;

  switch (command) {
    case Cmd.NBD_CMD_READ:
    case Cmd.NBD_CMD_WRITE:
    case Cmd.NBD_CMD_FLUSH:
      break;
    case Cmd.NBD_CMD_TRIM:
      if (!caps.canTrim && !caps.readOnly) return NbdErr.NBD_EINVAL;
      break;
    case Cmd.NBD_CMD_WRITE_ZEROES:
      if (!caps.canWriteZeroes && !caps.readOnly) return NbdErr.NBD_EINVAL;
      break;
    default:
      return NbdErr.NBD_EINVAL; // CACHE, BLOCK_STATUS, RESIZE, and anything unknown: not advertised
  }
  if ((flags & ~allowedFlags(command)) !== 0) return NbdErr.NBD_EINVAL;
  if ((isWrite || isTrim) && caps.readOnly) return NbdErr.NBD_EPERM;

  if (command === Cmd.NBD_CMD_FLUSH) {
    // proto.md "NBD_CMD_FLUSH": "length and offset are reserved, and MUST be set to all-zero".
    return offset === 0 && length === 0 ? 0 : NbdErr.NBD_EINVAL;
  }

  // proto.md "Block size constraints": the maximum bounds what a request carries or asks to be
  // carried. TRIM and WRITE_ZEROES carry no payload: a server MAY refuse long ones ("SHOULD
  // merely fail the command with an NBD_EINVAL"), but libnbd clients send one zero request per
  // hole (nbdcopy: 48 MiB and more), and backends split them, so both are accepted at any length.
  if (!isTrim && command !== Cmd.NBD_CMD_WRITE_ZEROES && length > caps.blockSizes.maximum) return NbdErr.NBD_EINVAL;
  const min = caps.blockSizes.minimum;
  if (min > 1 && (offset % min !== 0 || length % min !== 0)) return NbdErr.NBD_EINVAL;
  if (offset + length > size) return isWrite ? NbdErr.NBD_ENOSPC : NbdErr.NBD_EINVAL;
  return 0;
}

/**
 * Maps a backend failure to the error field of the reply. An Error with a Node-style `code`
 * ('EIO', 'ENOSPC', 'EPERM' ...) picks the matching NBD error; anything else is NBD_EIO.
 * proto.md "Error values": "SHOULD map the EDQUOT and EFBIG errors to NBD_ENOSPC";
 * "SHOULD NOT return NBD_EOVERFLOW" (no DF) "nor NBD_ENOTSUP" (no FAST_ZERO): those become EINVAL.
 */
export function nbdErrnoFor(err: unknown): Exclude<NbdErrno, 0> {
  const code = typeof err === 'object' && err !== null && 'code' in err ? (err as { code: unknown }).code : undefined;
  switch (code) {
    case 'EPERM':
    case 'EACCES':
    case 'EROFS':
      return NbdErr.NBD_EPERM;
    case 'ENOMEM':
      return NbdErr.NBD_ENOMEM;
    case 'EINVAL':
    case 'EOVERFLOW':
    case 'ENOTSUP':
    case 'EOPNOTSUPP':
      return NbdErr.NBD_EINVAL;
    case 'ENOSPC':
    case 'EDQUOT':
    case 'EFBIG':
      return NbdErr.NBD_ENOSPC;
    case 'ESHUTDOWN':
      return NbdErr.NBD_ESHUTDOWN;
    default:
      return NbdErr.NBD_EIO;
  }
}
