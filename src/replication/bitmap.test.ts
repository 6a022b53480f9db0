import fc from 'fast-check';
import { BITMAP_PAGE_BYTES, Bitmap, decodeRle, encodeRle } from './bitmap.ts';

describe('Bitmap', () => {
  test('set/clear ranges count exactly and report what changed', () => {
    const bm = new Bitmap(1000);
    expect(bm.setRange(10, 100)).toBe(90);
    expect(bm.setRange(50, 150)).toBe(50);
    expect(bm.count).toBe(140);
    expect(bm.clearRange(0, 60)).toBe(50);
    expect(bm.count).toBe(90);
    expect(bm.nextSet(0)).toBe(60);
    expect(bm.nextClear(60)).toBe(150);
    expect(bm.setRange(990, 5000)).toBe(10); // clipped at the end
    expect(bm.nextSet(151)).toBe(990);
    expect(bm.takeDirtyPages()).toEqual([0]);
  });

  test('matches a naive model for random operations, and RLE round-trips', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 70000 }),
        fc.array(fc.tuple(fc.boolean(), fc.nat(), fc.nat({ max: 5000 })), { maxLength: 30 }),
        (bits, ops) => {
          const bm = new Bitmap(bits);
          const model = new Uint8Array(bits);
          for (const [set, a, len] of ops) {
            const from = a % bits;
            const to = Math.min(bits, from + len);
            let changed = 0;
            for (let i = from; i < to; i++) {
              if (model[i] !== (set ? 1 : 0)) changed++;
              model[i] = set ? 1 : 0;
            }
            expect(set ? bm.setRange(from, to) : bm.clearRange(from, to)).toBe(changed);
          }
          expect(bm.count).toBe(model.reduce((n, v) => n + v, 0));
          const firstSet = model.indexOf(1);
          expect(bm.nextSet(0)).toBe(firstSet);
          const back = decodeRle(encodeRle(bm), bits);
          for (let i = 0; i < bits; i += 97) expect(back.test(i)).toBe(model[i] === 1);
          expect(back.count).toBe(bm.count);
          // Only the first part (the device of a larger disk): a peer with a shorter bitmap takes it.
          const part = Math.floor(bits / 3);
          const head = decodeRle(encodeRle(bm, part), part);
          expect(head.count).toBe(model.slice(0, part).reduce((n, v) => n + v, 0));
        },
      ),
      { numRuns: 200 },
    );
  });

  test('grow keeps the object, its bits, count and dirty pages; the new bits start clear', () => {
    const bm = new Bitmap(100);
    bm.setRange(90, 100);
    bm.takeDirtyPages();
    bm.setRange(3, 5);
    const same = bm;
    bm.grow(BITMAP_PAGE_BYTES * 8 * 2 + 7);
    expect(same).toBe(bm);
    expect(bm.bits).toBe(BITMAP_PAGE_BYTES * 8 * 2 + 7);
    expect(bm.count).toBe(12);
    expect(bm.nextSet(10)).toBe(90);
    expect(bm.nextSet(100)).toBe(-1);
    expect(bm.takeDirtyPages()).toEqual([0]);
    expect(bm.setRange(0, bm.bits)).toBe(bm.bits - 12);
    expect(bm.pageCount).toBe(3);
  });

  test('a clean bitmap of a 1 TiB device encodes in a few bytes', () => {
    const bm = new Bitmap(1024 ** 4 / 4096);
    bm.setRange(1000, 3000);
    expect(encodeRle(bm).length).toBeLessThan(16);
  });

  test('touchRange dirties the pages of a range without changing a bit', () => {
    const bm = new Bitmap(BITMAP_PAGE_BYTES * 8 * 3);
    bm.setRange(0, 10);
    bm.takeDirtyPages();
    bm.touchRange(5, BITMAP_PAGE_BYTES * 8 + 1);
    expect(bm.takeDirtyPages()).toEqual([0, 1]);
    expect(bm.count).toBe(10);
    bm.touchRange(7, 7);
    expect(bm.takeDirtyPages()).toEqual([]);
  });

  test('rejects malformed run lengths', () => {
    expect(() => decodeRle(Buffer.from([0x80]), 100)).toThrow(RangeError);
    expect(() => decodeRle(Buffer.from([50, 60]), 100)).toThrow(/exceed/);
  });
});
