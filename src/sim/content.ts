// Block contents the simulated application writes: every 512-byte sector names
// the write it came from and where it belongs, so a read (or a disk compared
// sector by sector) says exactly which write each sector holds, torn or not.
import { SECTOR } from './disk.ts';

export const BLOCK = 4096;
const MAGIC = 0x314d5354; // "TSM1"

const fillByte = (w: number, block: number, sector: number): number => (w * 31 + block * 7 + sector) & 0xff;

/** The contents of write `w` for `blocks` blocks starting at `block`. */
export function writeContent(w: number, block: number, blocks: number): Buffer {
  const out = Buffer.alloc(blocks * BLOCK);
  for (let i = 0; i < out.length / SECTOR; i++) {
    const at = i * SECTOR;
    const b = block + Math.floor((i * SECTOR) / BLOCK);
    const s = i % (BLOCK / SECTOR);
    out.writeUInt32LE(w, at);
    out.writeUInt32LE(b, at + 4);
    out.writeUInt32LE(s, at + 8);
    out.writeUInt32LE(MAGIC, at + 12);
    out.fill(fillByte(w, b, s), at + 16, at + SECTOR);
  }
  return out;
}

/**
 * The write id of each sector of one block (0: never written), or a string saying
 * why a sector is garbage (misplaced, corrupted).
 */
export function decodeBlock(data: Buffer, block: number): number[] | string {
  const ids: number[] = [];
  for (let s = 0; s < BLOCK / SECTOR; s++) {
    const at = s * SECTOR;
    const w = data.readUInt32LE(at);
    if (w === 0 && data.subarray(at, at + SECTOR).every((b) => b === 0)) {
      ids.push(0);
      continue;
    }
    if (data.readUInt32LE(at + 12) !== MAGIC) return `sector ${s} holds no write stamp`;
    if (data.readUInt32LE(at + 4) !== block || data.readUInt32LE(at + 8) !== s)
      return `sector ${s} holds block ${data.readUInt32LE(at + 4)} sector ${data.readUInt32LE(at + 8)} (misplaced)`;
    const fill = fillByte(w, block, s);
    for (let i = at + 16; i < at + SECTOR; i++) if (data[i] !== fill) return `sector ${s} of write ${w} is corrupt`;
    ids.push(w);
  }
  return ids;
}
