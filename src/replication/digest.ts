// Block digests for online verify (`verify-alg`) and checksum-based resync
// (`csums-alg`): any hash Node's crypto offers (sha1, sha256, md5 …) plus
// crc32c, which DRBD users often pick and Node does not ship.
import { createHash, getHashes } from 'node:crypto';

const CRC32C_TABLE = (() => {
  const t = new Int32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0x82f63b78 ^ (c >>> 1) : c >>> 1;
    t[n] = c;
  }
  return t;
})();

export function crc32c(data: Uint8Array): number {
  let c = ~0;
  for (let i = 0; i < data.length; i++) c = CRC32C_TABLE[(c ^ data[i]!) & 0xff]! ^ (c >>> 8);
  return ~c >>> 0;
}

export function isSupportedAlg(alg: string): boolean {
  const a = alg.toLowerCase();
  return a === 'crc32c' || getHashes().includes(a);
}

export function digestSize(alg: string): number {
  return alg.toLowerCase() === 'crc32c' ? 4 : createHash(alg.toLowerCase()).digest().length;
}

/** Digests of each `blockSize` block of `data`, concatenated. */
export function blockDigests(alg: string, data: Buffer, blockSize: number): Buffer {
  const a = alg.toLowerCase();
  const n = Math.ceil(data.length / blockSize);
  const size = digestSize(a);
  const out = Buffer.allocUnsafe(n * size);
  for (let i = 0; i < n; i++) {
    const block = data.subarray(i * blockSize, (i + 1) * blockSize);
    if (a === 'crc32c') out.writeUInt32LE(crc32c(block), i * 4);
    else
      createHash(a)
        .update(block)
        .digest()
        .copy(out, i * size);
  }
  return out;
}
