import fc from 'fast-check';
import { ByteQueue } from './byte-queue.ts';

const bytes = (...xs: number[]): Buffer => Buffer.from(xs);

describe('ByteQueue', () => {
  it('takes a view of the front chunk when the bytes lie in it', () => {
    const q = new ByteQueue();
    const chunk = bytes(1, 2, 3, 4);
    q.push(chunk);
    const view = q.take(3);
    expect(view).toEqual(bytes(1, 2, 3));
    expect(view.buffer).toBe(chunk.buffer);
    expect(q.length).toBe(1);
  });

  it('copies once when the bytes straddle chunks', () => {
    const q = new ByteQueue();
    q.push(bytes(1, 2));
    q.push(bytes());
    q.push(bytes(3));
    q.push(bytes(4, 5));
    expect(q.length).toBe(5);
    expect(q.take(4)).toEqual(bytes(1, 2, 3, 4));
    expect(q.contiguous()).toBe(1);
    expect(q.drain()).toEqual([bytes(5)]);
    expect(q.length).toBe(0);
  });

  it('refuses to read more than is queued (a caller bug, not input)', () => {
    const q = new ByteQueue();
    q.push(bytes(1));
    expect(() => q.take(2)).toThrow(RangeError);
    expect(() => q.skip(2)).toThrow(RangeError);
  });

  it('behaves as one contiguous stream under any mix of take, skip and copyTo', () => {
    fc.assert(
      fc.property(
        fc.array(fc.uint8Array({ maxLength: 20 }), { maxLength: 200 }),
        fc.array(fc.tuple(fc.constantFrom('take', 'skip', 'copy'), fc.nat(30)), { maxLength: 300 }),
        (chunks, ops) => {
          const q = new ByteQueue();
          const all = Buffer.concat(chunks.map((c) => Buffer.from(c)));
          for (const c of chunks) q.push(Buffer.from(c));
          let at = 0;
          for (const [op, n0] of ops) {
            const n = Math.min(n0, q.length);
            if (op === 'take') expect(q.take(n)).toEqual(all.subarray(at, at + n));
            else if (op === 'copy') {
              const dest = Buffer.alloc(n + 2);
              q.copyTo(dest, 1, n);
              expect(dest.subarray(1, 1 + n)).toEqual(all.subarray(at, at + n));
            } else q.skip(n);
            at += n;
            expect(q.length).toBe(all.length - at);
          }
          expect(Buffer.concat(q.drain())).toEqual(all.subarray(at));
        },
      ),
    );
  });
});

describe('ByteQueue with transient chunks', () => {
  it('never hands out a view of a transient chunk, and own() copies what is left', () => {
    const q = new ByteQueue();
    const staging = Buffer.alloc(6); // not from Node's shared pool
    staging.set([1, 2, 3, 4, 5, 6]);
    q.push(staging.subarray(0, 6), true);
    const taken = q.take(2);
    expect(taken.buffer).not.toBe(staging.buffer);
    expect(q.holdsTransient).toBe(true);
    q.own();
    expect(q.holdsTransient).toBe(false);
    staging.fill(0); // the caller reuses its memory
    expect(taken).toEqual(bytes(1, 2));
    expect(q.take(4)).toEqual(bytes(3, 4, 5, 6));
  });

  it('drain() copies transient bytes', () => {
    const q = new ByteQueue();
    const staging = bytes(7, 8, 9);
    q.push(bytes(1));
    q.push(staging, true);
    const out = q.drain();
    staging.fill(0);
    expect(Buffer.concat(out)).toEqual(bytes(1, 7, 8, 9));
  });
});
