import { blockDigests, crc32c, digestSize, isSupportedAlg } from './digest.ts';

describe('digests', () => {
  test('crc32c matches the standard check value', () => {
    expect(crc32c(Buffer.from('123456789'))).toBe(0xe3069283);
  });
  test('one digest per block, for sha1, sha256 and crc32c', () => {
    const data = Buffer.alloc(3 * 4096, 7);
    data[5000] = 1;
    for (const alg of ['sha1', 'sha256', 'crc32c']) {
      const d = blockDigests(alg, data, 4096);
      const n = digestSize(alg);
      expect(d.length).toBe(3 * n);
      expect(d.subarray(0, n).equals(d.subarray(2 * n, 3 * n))).toBe(true);
      expect(d.subarray(0, n).equals(d.subarray(n, 2 * n))).toBe(false);
    }
    expect(isSupportedAlg('sha1')).toBe(true);
    expect(isSupportedAlg('no-such-hash')).toBe(false);
  });
});
