import { mkdtemp, open, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { BackingIo } from './backing.ts';

describe('BackingIo', () => {
  let dir: string;
  beforeAll(async () => {
    dir = await mkdtemp(join(tmpdir(), 'tandem-backing-'));
  });
  afterAll(async () => {
    await rm(dir, { recursive: true, force: true });
  });

  it('reads back what it wrote, inline for small requests and through the threadpool for large ones', async () => {
    const h = await open(join(dir, 'a.img'), 'w+');
    try {
      const io = new BackingIo(h, { inlineMaxBytes: 8192, slowReadMicros: 1e9, slowWriteMicros: 1e9 });
      const small = Buffer.alloc(4096, 7);
      const large = Buffer.alloc(65536, 9);
      await io.write(4096, small);
      await io.write(65536, large);
      expect(io.inlineCalls).toBe(1);
      expect(await io.read(4096, 4096)).toEqual(small);
      expect(await io.read(65536, 65536)).toEqual(large);
      // past the end of the file: zeroes, like readExact
      expect(await io.read(1 << 20, 4096)).toEqual(Buffer.alloc(4096));
      expect(io.inlineCalls).toBe(3);
    } finally {
      await h.close();
    }
  });

  it('stops going inline for a while after slow calls in a row (not after one), longer while probes stay slow', async () => {
    const h = await open(join(dir, 'b.img'), 'w+');
    try {
      let now = 1000;
      // every call counts as slow
      const io = new BackingIo(h, {
        slowReadMicros: 0,
        slowWriteMicros: 0,
        backoffMs: 10,
        maxBackoffMs: 40,
        now: () => now,
      });
      const data = Buffer.alloc(4096, 1);
      await io.write(0, data); // one slow call: could be a preemption, the gate stays open
      expect([io.inlineCalls, io.slowInlineCalls]).toEqual([1, 1]);
      await io.write(0, data); // the second in a row: closed for 10 ms
      expect([io.inlineCalls, io.slowInlineCalls]).toEqual([2, 2]);
      await io.write(0, data); // threadpool
      expect(io.inlineCalls).toBe(2);
      now += 10;
      await io.write(0, data); // probe, slow again: closed for 20 ms
      expect(io.inlineCalls).toBe(3);
      now += 15;
      await io.write(0, data);
      expect(io.inlineCalls).toBe(3);
      now += 5;
      await io.write(0, data);
      expect(io.inlineCalls).toBe(4);
      // reads have their own gate
      await io.read(0, 4096);
      expect(io.inlineCalls).toBe(5);
      await io.read(0, 4096);
      expect(io.inlineCalls).toBe(6);
      await io.read(0, 4096); // two slow reads in a row closed the read gate
      expect(io.inlineCalls).toBe(6);
    } finally {
      await h.close();
    }
  });
});
