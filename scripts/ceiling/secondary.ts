// The least a Secondary can do (scripts/bench-ceiling.ts): receive [seq u32][length u32]
// [offset u64] + payload frames on 127.0.0.3, write each payload to its file, answer with its
// seq (u32). Headers are read alone and payloads straight into reused buffers, as tandem's
// peer link does; no state machine, bitmap, activity log or checks.
// usage: node scripts/ceiling/secondary.ts FILE PORT
import net from 'node:net';
import { open } from 'node:fs/promises';
import { adoptWithOnread } from '../../src/net/onread-socket.ts';

const [file, port] = process.argv.slice(2) as [string, string];
const fh = await open(file, 'r+');
const free = new Map<number, Buffer[]>();

const server = net.createServer({ pauseOnConnect: true }, (accepted) => {
  const header = Buffer.alloc(16);
  let headerFilled = 0;
  let payload: Buffer | undefined;
  let filled = 0;
  let seq = 0;
  let offset = 0;
  let corked = false;
  const s: net.Socket = adoptWithOnread(accepted, server, {
    buffer: () => (payload ? payload.subarray(filled) : header.subarray(headerFilled)),
    callback: (n) => {
      if (payload === undefined) {
        headerFilled += n;
        if (headerFilled < 16) return true;
        seq = header.readUInt32LE(0);
        const length = header.readUInt32LE(4);
        offset = Number(header.readBigUInt64LE(8));
        payload = free.get(length)?.pop() ?? Buffer.allocUnsafeSlow(length);
        filled = 0;
        return true;
      }
      filled += n;
      if (filled < payload.length) return true;
      const p = payload;
      const q = seq;
      payload = undefined;
      headerFilled = 0;
      void fh.write(p, 0, p.length, offset).then(() => {
        let list = free.get(p.length);
        if (list === undefined) {
          list = [];
          free.set(p.length, list);
        }
        list.push(p);
        if (!corked) {
          corked = true;
          s.cork();
          process.nextTick(() => {
            corked = false;
            s.uncork();
          });
        }
        const ack = Buffer.allocUnsafe(4);
        ack.writeUInt32LE(q, 0);
        s.write(ack);
      });
      return true;
    },
  });
  s.on('error', () => s.destroy());
});
server.listen(Number(port), '127.0.0.3', () => console.log('ready'));
