// The peer socket in a worker thread (scripts/ceiling/primary.ts, MODE=worker): frames to send
// arrive by postMessage with their payload in SharedArrayBuffer memory; acks go back the same way.
import net from 'node:net';
import { parentPort, workerData } from 'node:worker_threads';

export interface SendMessage {
  seq: number;
  offset: number;
  memory: SharedArrayBuffer;
  at: number;
  length: number;
}

const port = parentPort!;
const s = net.connect({ host: '127.0.0.3', port: (workerData as { port: number }).port });
s.setNoDelay(true);
let corked = false;
let rest = Buffer.alloc(0);
port.on('message', (m: SendMessage) => {
  if (!corked) {
    corked = true;
    s.cork();
    process.nextTick(() => {
      corked = false;
      s.uncork();
    });
  }
  const h = Buffer.allocUnsafe(16);
  h.writeUInt32LE(m.seq, 0);
  h.writeUInt32LE(m.length, 4);
  h.writeBigUInt64LE(BigInt(m.offset), 8);
  s.write(h);
  s.write(Buffer.from(m.memory, m.at, m.length));
});
s.on('data', (chunk: Buffer) => {
  const b = rest.length > 0 ? Buffer.concat([rest, chunk]) : chunk;
  const k = b.length >> 2;
  const seqs = new Uint32Array(k);
  for (let i = 0; i < k; i++) seqs[i] = b.readUInt32LE(i * 4);
  rest = Buffer.from(b.subarray(k * 4));
  port.postMessage(seqs);
});
s.on('connect', () => port.postMessage('connected'));
s.on('error', (err) => {
  throw err;
});
