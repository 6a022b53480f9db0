import fc from 'fast-check';
import { deviceBytesFor } from './replicated-volume-replica.ts';

test.each([
  [0, 0],
  [4095, 0],
  [4096, 4096],
  [5000, 4096],
  [2 ** 30, 2 ** 30],
  [1e9, 999_997_440],
])('spec.sizeBytes %d: the engines reach %d bytes', (size, device) => {
  expect(deviceBytesFor(size)).toBe(device);
});

test('whole KiB first, then whole 4 KiB blocks, is whole 4 KiB blocks of the bytes', () => {
  fc.assert(fc.property(fc.maxSafeNat(), (size) => deviceBytesFor(size) === Math.floor(size / 4096) * 4096));
});
