// Test data for write streams: block N's content says which write it was (its
// first four bytes are N), so a check can tell an old write from a new one.
import { createHash } from 'node:crypto';

export const BLOCK = 4096;

export function blockContent(seq: number): Buffer {
  const b = Buffer.alloc(BLOCK);
  const h = createHash('sha256').update(`write ${seq}`).digest();
  for (let o = 0; o < BLOCK; o += h.length) h.copy(b, o);
  b.writeUInt32LE(seq, 0);
  return b;
}
