import { decideGrowth } from './growth.ts';

const GiB = 2 ** 30;
const claim = (key: string, bytes: number, created: string) => ({
  key,
  pool: 'fast',
  nodes: ['a', 'b'],
  bytes,
  created,
  placed: true,
});
const base = {
  pool: 'fast',
  poolSpec: {
    nodes: [
      { node: 'a', directory: '/pool', capacity: '10Gi' },
      { node: 'b', directory: '/pool' },
    ],
  },
  fileNodes: ['a', 'b'],
  self: { key: 'ns/v', created: '2026-12-01T00:00:00.000Z' },
};

test.each<[string, Parameters<typeof decideGrowth>[0], ReturnType<typeof decideGrowth>]>([
  [
    'a new volume gets spec.size (placement checked the capacity)',
    { ...base, wanted: 8 * GiB, given: undefined, claims: [] },
    { sizeBytes: 8 * GiB },
  ],
  [
    'growth that fits beside the other volumes is given',
    { ...base, wanted: 6 * GiB, given: 2 * GiB, claims: [claim('ns/other', 4 * GiB, '2026-11-01T00:00:00.000Z')] },
    { sizeBytes: 6 * GiB },
  ],
  [
    "growth past a node's capacity keeps the size given so far, and says why",
    { ...base, wanted: 7 * GiB, given: 2 * GiB, claims: [claim('ns/other', 4 * GiB, '2026-11-01T00:00:00.000Z')] },
    {
      sizeBytes: 2 * GiB,
      refused: { reason: 'PoolFull', message: expect.stringContaining('on node a (6442450944 bytes left') },
    },
  ],
  [
    'a device-backed replica is not counted against a directory (node a holds a device)',
    { ...base, fileNodes: ['b'], wanted: 50 * GiB, given: 2 * GiB, claims: [] },
    { sizeBytes: 50 * GiB },
  ],
  [
    'the same size, or no size, is not growth',
    { ...base, wanted: 2 * GiB, given: 2 * GiB, claims: [claim('ns/other', 9 * GiB, '2026-11-01T00:00:00.000Z')] },
    { sizeBytes: 2 * GiB },
  ],
])('%s', (_what, input, want) => {
  expect(decideGrowth(input)).toEqual(want);
});
