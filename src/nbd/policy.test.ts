import { Cmd, CmdFlag, NbdErr, TransmissionFlag as TF } from './constants.ts';
import { NbdError } from './errors.ts';
import { checkRequest, describeExport, nbdErrnoFor, type ExportCapabilities } from './policy.ts';
import type { NbdExport } from './types.ts';

const MiB = 1024 * 1024;
const fail = (): Promise<never> => Promise.reject(new Error('not called in these tests'));
const backend = (over: Partial<NbdExport> = {}): NbdExport => ({
  size: 64 * MiB,
  readOnly: false,
  read: fail,
  write: fail,
  flush: fail,
  ...over,
});
const full = describeExport(backend({ trim: fail, writeZeroes: fail }));
const plain = describeExport(backend());
const ro = describeExport(backend({ readOnly: true, trim: fail, writeZeroes: fail }));
const aligned = describeExport(backend({ minBlockSize: 4096, trim: fail, writeZeroes: fail }));
const SIZE = 64 * MiB;
const {
  NBD_CMD_READ: READ,
  NBD_CMD_WRITE: WRITE,
  NBD_CMD_FLUSH: FLUSH,
  NBD_CMD_TRIM: TRIM,
  NBD_CMD_WRITE_ZEROES: ZEROES,
} = Cmd;
const { NBD_CMD_FLAG_FUA: FUA, NBD_CMD_FLAG_NO_HOLE: NO_HOLE } = CmdFlag;
const { NBD_EINVAL: EINVAL, NBD_ENOSPC: ENOSPC, NBD_EPERM: EPERM } = NbdErr;

describe('describeExport', () => {
  it('advertises exactly what the export supports, never CAN_MULTI_CONN', () => {
    expect(full.transmissionFlags).toBe(
      TF.NBD_FLAG_HAS_FLAGS |
        TF.NBD_FLAG_SEND_FLUSH |
        TF.NBD_FLAG_SEND_FUA |
        TF.NBD_FLAG_SEND_TRIM |
        TF.NBD_FLAG_SEND_WRITE_ZEROES,
    );
    expect(plain.transmissionFlags).toBe(TF.NBD_FLAG_HAS_FLAGS | TF.NBD_FLAG_SEND_FLUSH | TF.NBD_FLAG_SEND_FUA);
    expect(ro.transmissionFlags).toBe(TF.NBD_FLAG_HAS_FLAGS | TF.NBD_FLAG_SEND_FLUSH | TF.NBD_FLAG_READ_ONLY);
    for (const caps of [full, plain, ro]) expect(caps.transmissionFlags & TF.NBD_FLAG_CAN_MULTI_CONN).toBe(0);
  });

  it('derives block sizes: 1/4096/32 MiB by default, preferred never below the minimum', () => {
    expect(full.blockSizes).toEqual({ minimum: 1, preferred: 4096, maximum: 32 * MiB });
    expect(describeExport(backend({ minBlockSize: 65536 })).blockSizes).toEqual({
      minimum: 65536,
      preferred: 65536,
      maximum: 32 * MiB,
    });
  });

  it.each([[3], [0], [131072], [0.5]])('rejects minBlockSize %p', (minBlockSize) => {
    expect(() => describeExport(backend({ minBlockSize }))).toThrow(NbdError);
  });

  it.each([[-1], [1.5], [2 ** 53]])('rejects size %p', (size) => {
    expect(() => describeExport(backend({ size }))).toThrow(NbdError);
  });
});

describe('checkRequest', () => {
  const cases: [string, ExportCapabilities, number, number, number, number, number][] = [
    // name, caps, command, flags, offset, length, expected
    ['read inside', full, READ, 0, 0, 4096, 0],
    ['read ending at the end', full, READ, 0, SIZE - 1, 1, 0],
    ['read past the end → EINVAL', full, READ, 0, SIZE - 1, 2, EINVAL],
    ['read at a 2^64-ish offset → EINVAL', full, READ, 0, 2 ** 64, 1, EINVAL],
    ['read above the maximum block size → EINVAL', full, READ, 0, 0, 32 * MiB + 1, EINVAL],
    ['read of exactly the maximum', full, READ, 0, 0, 32 * MiB, 0],
    ['read with FUA is accepted (and ignored)', full, READ, FUA, 0, 1, 0],
    ['read with DF (not advertised) → EINVAL', full, READ, CmdFlag.NBD_CMD_FLAG_DF, 0, 1, EINVAL],
    ['read with an unknown flag → EINVAL', full, READ, 0x8000, 0, 1, EINVAL],
    ['write inside with FUA', full, WRITE, FUA, 512, 512, 0],
    ['write past the end → ENOSPC', full, WRITE, 0, SIZE, 1, ENOSPC],
    ['write above the maximum block size → EINVAL', full, WRITE, 0, 0, 32 * MiB + 1, EINVAL],
    ['write with NO_HOLE → EINVAL', full, WRITE, NO_HOLE, 0, 1, EINVAL],
    ['write to a read-only export → EPERM', ro, WRITE, 0, 0, 1, EPERM],
    ['write past the end of a read-only export → EPERM', ro, WRITE, 0, SIZE, 1, EPERM],
    ['read from a read-only export', ro, READ, 0, 0, 1, 0],
    ['flush', full, FLUSH, 0, 0, 0, 0],
    ['flush with FUA', full, FLUSH, FUA, 0, 0, 0],
    ['flush on a read-only export', ro, FLUSH, 0, 0, 0, 0],
    ['flush with a nonzero offset → EINVAL', full, FLUSH, 0, 1, 0, EINVAL],
    ['trim inside', full, TRIM, FUA, 0, SIZE, 0],
    ['trim longer than the maximum block size is fine', full, TRIM, 0, 0, 64 * MiB, 0],
    ['trim past the end → EINVAL', full, TRIM, 0, 1, SIZE, EINVAL],
    ['trim without backend support → EINVAL', plain, TRIM, 0, 0, 1, EINVAL],
    ['trim on a read-only export → EPERM', ro, TRIM, 0, 0, 1, EPERM],
    ['write zeroes with FUA and NO_HOLE', full, ZEROES, FUA | NO_HOLE, 0, MiB, 0],
    ['write zeroes past the end → ENOSPC', full, ZEROES, 0, SIZE - 1, 2, ENOSPC],
    [
      'write zeroes with FAST_ZERO (not advertised) → EINVAL',
      full,
      ZEROES,
      CmdFlag.NBD_CMD_FLAG_FAST_ZERO,
      0,
      1,
      EINVAL,
    ],
    ['write zeroes longer than the maximum block size is fine', full, ZEROES, 0, 0, 64 * MiB, 0],
    ['write zeroes without backend support → EINVAL', plain, ZEROES, 0, 0, 1, EINVAL],
    ['write zeroes on a read-only export → EPERM', ro, ZEROES, 0, 0, 1, EPERM],
    ['NBD_CMD_CACHE (not advertised) → EINVAL', full, Cmd.NBD_CMD_CACHE, 0, 0, 1, EINVAL],
    ['NBD_CMD_BLOCK_STATUS (no structured replies) → EINVAL', full, Cmd.NBD_CMD_BLOCK_STATUS, 0, 0, 1, EINVAL],
    ['unknown command → EINVAL', full, 0x4242, 0, 0, 1, EINVAL],
    ['aligned read on a 4 KiB export', aligned, READ, 0, 8192, 4096, 0],
    ['misaligned offset on a 4 KiB export → EINVAL', aligned, READ, 0, 512, 4096, EINVAL],
    ['misaligned length on a 4 KiB export → EINVAL', aligned, WRITE, 0, 0, 512, EINVAL],
    ['misaligned trim on a 4 KiB export → EINVAL', aligned, TRIM, 0, 4096, 100, EINVAL],
  ];
  it.each(cases)('%s', (_, caps, command, flags, offset, length, expected) => {
    expect(checkRequest({ command, flags, offset, length }, caps, SIZE)).toBe(expected);
  });

  it('checks bounds against the size passed now, not the size at open', () => {
    expect(checkRequest({ command: READ, flags: 0, offset: SIZE, length: 1 }, full, SIZE + 4096)).toBe(0);
  });
});

describe('nbdErrnoFor', () => {
  it.each([
    ['EIO', NbdErr.NBD_EIO],
    ['EPERM', NbdErr.NBD_EPERM],
    ['EROFS', NbdErr.NBD_EPERM],
    ['ENOSPC', NbdErr.NBD_ENOSPC],
    ['EDQUOT', NbdErr.NBD_ENOSPC],
    ['EFBIG', NbdErr.NBD_ENOSPC],
    ['EINVAL', NbdErr.NBD_EINVAL],
    ['ENOTSUP', NbdErr.NBD_EINVAL],
    ['ENOMEM', NbdErr.NBD_ENOMEM],
    ['ESHUTDOWN', NbdErr.NBD_ESHUTDOWN],
    ['EWHATEVER', NbdErr.NBD_EIO],
  ])('maps code %s', (code, expected) => {
    expect(nbdErrnoFor(Object.assign(new Error('x'), { code }))).toBe(expected);
  });

  it.each([[new Error('plain')], ['a string'], [null], [undefined], [{ code: 42 }]])('maps %p to NBD_EIO', (err) => {
    expect(nbdErrnoFor(err)).toBe(NbdErr.NBD_EIO);
  });
});
