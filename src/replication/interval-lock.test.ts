import { IntervalLock } from './interval-lock.ts';

describe('IntervalLock', () => {
  test('overlapping ranges run in arrival order, even when a later one could jump a waiting one', async () => {
    const lock = new IntervalLock();
    const order: string[] = [];
    const a = await lock.acquire(0, 8192);
    const b = lock.acquire(4096, 8192).then((rel) => {
      order.push('b');
      return rel;
    });
    // c overlaps only b (which waits), so it must wait for b, not run before it.
    const c = lock.acquire(8192, 4096).then((rel) => {
      order.push('c');
      rel();
    });
    await new Promise((r) => setImmediate(r));
    expect(order).toEqual([]);
    a();
    (await b)();
    await c;
    expect(order).toEqual(['b', 'c']);
    expect(lock.size).toBe(0);
  });

  test('disjoint ranges do not wait for each other', async () => {
    const lock = new IntervalLock();
    const a = await lock.acquire(0, 4096);
    const b = await lock.acquire(4096, 4096);
    expect(lock.size).toBe(2);
    a();
    b();
    await lock.drain();
    expect(lock.size).toBe(0);
  });
});
