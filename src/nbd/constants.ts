// Wire numbers of the NBD protocol, spelled exactly as the NBD project's
// doc/proto.md spells them. Closed sets are `as const` objects plus a derived
// union (no TS enum). Only what this server speaks or must recognise is here.

/** proto.md "Newstyle negotiation": S: 64 bits, `0x4e42444d41474943` (ASCII 'NBDMAGIC'). */
export const NBDMAGIC = 0x4e42444d41474943n;
/** proto.md "Newstyle negotiation": 'IHAVEOPT', sent by the server after NBDMAGIC and by the client before every option. */
export const IHAVEOPT = 0x49484156454f5054n;
/** proto.md "Fixed newstyle negotiation": magic number for option replies. */
export const NBD_REP_MAGIC = 0x3e889045565a9n;
/** proto.md "Request message": C: 32 bits, 0x25609513, magic (`NBD_REQUEST_MAGIC`). */
export const NBD_REQUEST_MAGIC = 0x25609513;
/** proto.md "Simple reply message": S: 32 bits, 0x67446698, magic (`NBD_SIMPLE_REPLY_MAGIC`). */
export const NBD_SIMPLE_REPLY_MAGIC = 0x67446698;

/** proto.md "Handshake flags" (16 bits, server → client). */
export const HandshakeFlag = {
  NBD_FLAG_FIXED_NEWSTYLE: 1 << 0,
  NBD_FLAG_NO_ZEROES: 1 << 1,
} as const;

/** proto.md "Client flags" (32 bits, client → server). */
export const ClientFlag = {
  NBD_FLAG_C_FIXED_NEWSTYLE: 1 << 0,
  NBD_FLAG_C_NO_ZEROES: 1 << 1,
} as const;

/** proto.md "Transmission flags" (16 bits). */
export const TransmissionFlag = {
  NBD_FLAG_HAS_FLAGS: 1 << 0,
  NBD_FLAG_READ_ONLY: 1 << 1,
  NBD_FLAG_SEND_FLUSH: 1 << 2,
  NBD_FLAG_SEND_FUA: 1 << 3,
  NBD_FLAG_ROTATIONAL: 1 << 4,
  NBD_FLAG_SEND_TRIM: 1 << 5,
  NBD_FLAG_SEND_WRITE_ZEROES: 1 << 6,
  NBD_FLAG_SEND_DF: 1 << 7,
  NBD_FLAG_CAN_MULTI_CONN: 1 << 8,
  NBD_FLAG_SEND_RESIZE: 1 << 9,
  NBD_FLAG_SEND_CACHE: 1 << 10,
  NBD_FLAG_SEND_FAST_ZERO: 1 << 11,
} as const;

/** proto.md "Option types". */
export const Opt = {
  NBD_OPT_EXPORT_NAME: 1,
  NBD_OPT_ABORT: 2,
  NBD_OPT_LIST: 3,
  NBD_OPT_PEEK_EXPORT: 4,
  NBD_OPT_STARTTLS: 5,
  NBD_OPT_INFO: 6,
  NBD_OPT_GO: 7,
  NBD_OPT_STRUCTURED_REPLY: 8,
  NBD_OPT_LIST_META_CONTEXT: 9,
  NBD_OPT_SET_META_CONTEXT: 10,
  NBD_OPT_EXTENDED_HEADERS: 11,
} as const;
export type OptName = keyof typeof Opt;

/** proto.md "Option reply types". Error replies have bit 31 set. */
export const Rep = {
  NBD_REP_ACK: 1,
  NBD_REP_SERVER: 2,
  NBD_REP_INFO: 3,
  NBD_REP_META_CONTEXT: 4,
  NBD_REP_ERR_UNSUP: 2 ** 31 + 1,
  NBD_REP_ERR_POLICY: 2 ** 31 + 2,
  NBD_REP_ERR_INVALID: 2 ** 31 + 3,
  NBD_REP_ERR_PLATFORM: 2 ** 31 + 4,
  NBD_REP_ERR_TLS_REQD: 2 ** 31 + 5,
  NBD_REP_ERR_UNKNOWN: 2 ** 31 + 6,
  NBD_REP_ERR_SHUTDOWN: 2 ** 31 + 7,
  NBD_REP_ERR_BLOCK_SIZE_REQD: 2 ** 31 + 8,
  NBD_REP_ERR_TOO_BIG: 2 ** 31 + 9,
} as const;
export type RepName = keyof typeof Rep;
export type RepType = (typeof Rep)[RepName];

/** proto.md "NBD_REP_INFO": information types. */
export const Info = {
  NBD_INFO_EXPORT: 0,
  NBD_INFO_NAME: 1,
  NBD_INFO_DESCRIPTION: 2,
  NBD_INFO_BLOCK_SIZE: 3,
} as const;
export type InfoType = (typeof Info)[keyof typeof Info];

/** proto.md "Command flags". */
export const CmdFlag = {
  NBD_CMD_FLAG_FUA: 1 << 0,
  NBD_CMD_FLAG_NO_HOLE: 1 << 1,
  NBD_CMD_FLAG_DF: 1 << 2,
  NBD_CMD_FLAG_REQ_ONE: 1 << 3,
  NBD_CMD_FLAG_FAST_ZERO: 1 << 4,
} as const;

/** proto.md "Request types". */
export const Cmd = {
  NBD_CMD_READ: 0,
  NBD_CMD_WRITE: 1,
  NBD_CMD_DISC: 2,
  NBD_CMD_FLUSH: 3,
  NBD_CMD_TRIM: 4,
  NBD_CMD_CACHE: 5,
  NBD_CMD_WRITE_ZEROES: 6,
  NBD_CMD_BLOCK_STATUS: 7,
  NBD_CMD_RESIZE: 8,
} as const;
export type CmdName = keyof typeof Cmd;

/** proto.md "Error values". */
export const NbdErr = {
  NBD_EPERM: 1,
  NBD_EIO: 5,
  NBD_ENOMEM: 12,
  NBD_EINVAL: 22,
  NBD_ENOSPC: 28,
  NBD_EOVERFLOW: 75,
  NBD_ENOTSUP: 95,
  NBD_ESHUTDOWN: 108,
} as const;
export type NbdErrName = keyof typeof NbdErr;
/** A value for the error field of a simple reply: 0 for success or one of {@link NbdErr}. */
export type NbdErrno = 0 | (typeof NbdErr)[NbdErrName];

/** Fixed sizes of the wire structures, in bytes. */
export const WireSize = {
  /** NBDMAGIC + IHAVEOPT + 16-bit handshake flags. */
  GREETING: 18,
  CLIENT_FLAGS: 4,
  /** IHAVEOPT + option + length. */
  OPTION_HEADER: 16,
  /** magic + option + reply type + length. */
  OPTION_REPLY_HEADER: 20,
  /** magic + flags + type + handle + offset + length. */
  REQUEST_HEADER: 28,
  /** magic + error + handle. */
  SIMPLE_REPLY_HEADER: 16,
  /** proto.md "Newstyle negotiation": 124 bytes, zeroes (reserved) after an NBD_OPT_EXPORT_NAME reply. */
  EXPORT_NAME_ZEROES: 124,
} as const;

/** proto.md "Conventions": a string ... MUST be no longer than 4096 bytes. */
export const NBD_MAX_STRING_LENGTH = 4096;

/**
 * proto.md "Block size constraints": "any *length* less than 2^25 (33,554,432) bytes SHOULD NOT be
 * considered a denial of service attack"; clients desiring maximum interoperability limit READ and
 * WRITE to 2^25. This server advertises it as its maximum block size.
 */
export const NBD_DEFAULT_MAX_BLOCK_SIZE = 2 ** 25;
/** proto.md "Block size constraints": the default preferred block size, 2^12. */
export const NBD_DEFAULT_PREFERRED_BLOCK_SIZE = 2 ** 12;
/** proto.md "Block size constraints": the minimum block size MUST NOT be larger than 2^16. */
export const NBD_MAX_MIN_BLOCK_SIZE = 2 ** 16;

const repNames = new Map<number, string>(Object.entries(Rep).map(([k, v]) => [v, k]));
const optNames = new Map<number, string>(Object.entries(Opt).map(([k, v]) => [v, k]));
const cmdNames = new Map<number, string>(Object.entries(Cmd).map(([k, v]) => [v, k]));

/** Names for logs: `NBD_OPT_GO`, or the number for values this server does not know. */
export function optName(option: number): string {
  return optNames.get(option) ?? `NBD_OPT_${option}`;
}
export function repName(rep: number): string {
  return repNames.get(rep) ?? `NBD_REP_${rep}`;
}
export function cmdName(cmd: number): string {
  return cmdNames.get(cmd) ?? `NBD_CMD_${cmd}`;
}
