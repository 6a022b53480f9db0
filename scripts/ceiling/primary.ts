// The least a Primary can do (scripts/bench-ceiling.ts): tandem's NBD server in front of a file;
// each write goes to the file and, unless MODE=alone, to scripts/ceiling/secondary.ts, and is
// answered once both are done (protocol C). MODE=main sends from the event loop, as tandem does;
// MODE=worker sends from a worker thread.
// usage: MODE=alone|main|worker node scripts/ceiling/primary.ts FILE SOCKET PORT
import net from 'node:net';
import { Worker } from 'node:worker_threads';
import { open } from 'node:fs/promises';
import { startNbdServer, type NbdExport } from '../../src/nbd/index.ts';
import type { SendMessage } from './sender.ts';

const [file, socketPath, port] = process.argv.slice(2) as [string, string, string];
const mode = process.env.MODE ?? 'alone';
const fh = await open(file, 'r+');
const size = (await fh.stat()).size;
const waiting = new Map<number, () => void>();
const acked = (seq: number): void => {
  const r = waiting.get(seq);
  waiting.delete(seq);
  r?.();
};
let send: ((seq: number, offset: number, data: Buffer) => void) | undefined;

if (mode === 'main') {
  const s = net.connect({ host: '127.0.0.3', port: Number(port) });
  s.setNoDelay(true);
  await new Promise((r) => s.once('connect', r));
  let corked = false;
  let rest = Buffer.alloc(0);
  s.on('data', (chunk: Buffer) => {
    const b = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
    const k = b.length >> 2;
    for (let i = 0; i < k; i++) acked(b.readUInt32LE(i * 4));
    rest = Buffer.from(b.subarray(k * 4));
  });
  send = (seq, offset, data) => {
    if (!corked) {
      corked = true;
      s.cork();
      process.nextTick(() => {
        corked = false;
        s.uncork();
      });
    }
    const h = Buffer.allocUnsafe(16);
    h.writeUInt32LE(seq, 0);
    h.writeUInt32LE(data.length, 4);
    h.writeBigUInt64LE(BigInt(offset), 8);
    s.write(h);
    s.write(data);
  };
} else if (mode === 'worker') {
  const w = new Worker(new URL('./sender.ts', import.meta.url), { workerData: { port: Number(port) } });
  await new Promise<void>((resolve, reject) => {
    w.once('message', () => resolve());
    w.once('error', reject);
  });
  w.on('message', (seqs: Uint32Array) => {
    for (const q of seqs) acked(q);
  });
  send = (seq, offset, data) => {
    if (!(data.buffer instanceof SharedArrayBuffer))
      throw new Error('write payload is not in SharedArrayBuffer memory');
    const m: SendMessage = { seq, offset, memory: data.buffer, at: data.byteOffset, length: data.length };
    w.postMessage(m);
  };
} else if (mode !== 'alone') {
  throw new Error(`MODE must be alone, main or worker, not ${mode}`);
}

let nextSeq = 0;
const exp: NbdExport = {
  size,
  readOnly: false,
  read: async (offset, length) => {
    const b = Buffer.allocUnsafe(length);
    await fh.read(b, 0, length, offset);
    return b;
  },
  write: async (offset, data) => {
    let ack: Promise<void> | undefined;
    if (send) {
      const seq = nextSeq++ >>> 0;
      ack = new Promise<void>((r) => waiting.set(seq, r));
      send(seq, offset, data);
    }
    await fh.write(data, 0, data.length, offset);
    await ack;
  },
  flush: async () => {
    await fh.datasync();
  },
};
await startNbdServer({
  path: socketPath,
  lookup: () => exp,
  ...(mode === 'worker' ? { allocPayload: (n: number) => Buffer.from(new SharedArrayBuffer(n)) } : {}),
});
console.log('ready');
