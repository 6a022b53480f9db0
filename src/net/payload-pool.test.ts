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
});
