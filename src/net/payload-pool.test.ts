import { PayloadPool, POOLED_PAYLOAD_MIN } from './payload-pool.ts';

describe('PayloadPool', () => {
  it('reuses a large payload given back, only its own buffers, within its budget', () => {
    const pool = new PayloadPool(2 * 1024 * 1024);
    const a = pool.take(1024 * 1024);
    pool.give(a);
    expect(pool.freeBytes).toBe(1024 * 1024);
    expect(pool.take(1024 * 1024)).toBe(a);
    expect(pool.freeBytes).toBe(0);
    // a view of some other buffer is never pooled: it may share memory with live data
    pool.give(Buffer.alloc(2 * 1024 * 1024).subarray(0, 1024 * 1024));
    expect(pool.freeBytes).toBe(0);
    const bufs = [pool.take(1024 * 1024), pool.take(1024 * 1024), pool.take(1024 * 1024)];
    for (const b of bufs) pool.give(b);
    expect(pool.freeBytes).toBe(2 * 1024 * 1024);
  });

  it('does not pool small payloads', () => {
    const pool = new PayloadPool(1024 * 1024);
    const small = pool.take(POOLED_PAYLOAD_MIN - 1);
    pool.give(small);
    expect(pool.freeBytes).toBe(0);
  });

  it('makes new large payloads with the allocator it was given, and reuses them', () => {
    const made: Buffer[] = [];
    const pool = new PayloadPool(4 * 1024 * 1024, (n) => {
      const b = Buffer.from(new SharedArrayBuffer(n));
      made.push(b);
      return b;
    });
    const a = pool.take(1024 * 1024);
    expect(made).toEqual([a]);
    expect(a.buffer).toBeInstanceOf(SharedArrayBuffer);
    pool.give(a);
    expect(pool.take(1024 * 1024)).toBe(a);
    expect(made.length).toBe(1);
    pool.take(POOLED_PAYLOAD_MIN - 1); // small ones come from Node's pool, not the allocator
    expect(made.length).toBe(1);
  });
});
