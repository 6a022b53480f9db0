import { growFilesystemCommand } from '../node-agent/consumer.ts';
import { CODES, CsiError } from './errors.ts';
import {
  checkNodeExpansion,
  decideExpansion,
  type ExpansionSnapshot,
  expansionTarget,
  growthPending,
} from './expansion.ts';

const MiB = 1 << 20;
const GiB = 1 << 30;
const outcome = (f: () => unknown) => {
  try {
    return f();
  } catch (err) {
    return err instanceof CsiError ? CODES[err.code] : String(err);
  }
};

describe('expansionTarget', () => {
  test.each([
    [{ required_bytes: 1 }, MiB],
    [{ required_bytes: 64 * MiB + GiB }, 64 * MiB + GiB],
    [{ required_bytes: 2 * MiB + 1 }, 3 * MiB],
    [{ required_bytes: 2 * MiB + 1, limit_bytes: 3 * MiB }, 3 * MiB],
  ])('%j → %d bytes', (range, bytes) => {
    expect(expansionTarget(range)).toBe(bytes);
  });
  test.each([
    [undefined, 'INVALID_ARGUMENT'],
    [null, 'INVALID_ARGUMENT'],
    [{}, 'INVALID_ARGUMENT'],
    [{ limit_bytes: GiB }, 'INVALID_ARGUMENT'],
    [{ required_bytes: -1 }, 'INVALID_ARGUMENT'],
    [{ required_bytes: 2 * GiB, limit_bytes: GiB }, 'OUT_OF_RANGE'],
    [{ required_bytes: MiB + 1, limit_bytes: MiB + 100 }, 'OUT_OF_RANGE'],
  ])('%j is refused with %s', (range, code) => {
    expect(outcome(() => expansionTarget(range))).toBe(code);
  });
});

describe('decideExpansion', () => {
  const base: ExpansionSnapshot = {
    id: 'tandem-system.pvc-1',
    currentBytes: GiB,
    range: { required_bytes: 2 * GiB },
    publishedOn: undefined,
    deleting: false,
    pools: [],
    disks: [],
  };
  const pool = (capacity: number, usedByOthers: number) => ({ node: 'a', capacity, usedByOthers });
  test.each<[string, Partial<ExpansionSnapshot>, unknown]>([
    ['grows an unpublished volume', {}, { bytes: 2 * GiB, patch: true }],
    [
      'never shrinks: a smaller request answers with the current size',
      { range: { required_bytes: MiB } },
      {
        bytes: GiB,
        patch: false,
      },
    ],
    ['the same size again (a retry) changes nothing', { range: { required_bytes: GiB } }, { bytes: GiB, patch: false }],
    [
      'a size not in whole MiB is as large as asked for',
      { currentBytes: 1e9, range: { required_bytes: 1e9 } },
      { bytes: 1e9, patch: false },
    ],
    [
      'nothing to grow: published does not matter',
      { range: { required_bytes: GiB }, publishedOn: 'a' },
      {
        bytes: GiB,
        patch: false,
      },
    ],
    ['published: offline only', { publishedOn: 'a' }, 'FAILED_PRECONDITION'],
    ['being deleted', { deleting: true }, 'FAILED_PRECONDITION'],
    ['fits the pool exactly', { pools: [pool(10 * GiB, 8 * GiB)] }, { bytes: 2 * GiB, patch: true }],
    ['the pool is full now', { pools: [pool(10 * GiB, 9 * GiB)] }, 'RESOURCE_EXHAUSTED'],
    ['more than the pool could ever hold', { pools: [pool(GiB + GiB / 2, 0)] }, 'OUT_OF_RANGE'],
    [
      'one of two nodes is full',
      { pools: [pool(10 * GiB, 0), { node: 'b', capacity: 10 * GiB, usedByOthers: 9 * GiB }] },
      'RESOURCE_EXHAUSTED',
    ],
    ['a disk too small', { disks: [{ node: 'a', disk: '/dev/sdb', capacityBytes: GiB }] }, 'OUT_OF_RANGE'],
    [
      'a disk large enough',
      { disks: [{ node: 'a', disk: '/dev/sdb', capacityBytes: 4 * GiB }] },
      {
        bytes: 2 * GiB,
        patch: true,
      },
    ],
    [
      'a disk whose capacity is not reported yet',
      { disks: [{ node: 'a', disk: '/dev/sdb', capacityBytes: undefined }] },
      {
        bytes: 2 * GiB,
        patch: true,
      },
    ],
    ['no capacity_range', { range: undefined }, 'INVALID_ARGUMENT'],
  ])('%s', (_name, change, expected) => {
    expect(outcome(() => decideExpansion({ ...base, ...change }))).toEqual(expected);
  });
  test('the refusal while published says why and what to do', () => {
    expect(() => decideExpansion({ ...base, publishedOn: 'node-a' })).toThrow(/published on node node-a.*offline/);
  });
});

describe('growthPending', () => {
  test.each<[string, { node: string; sizeBytes?: number }[] | undefined, string[]]>([
    [
      'both grown',
      [
        { node: 'a', sizeBytes: 2 * GiB },
        { node: 'b', sizeBytes: 2 * GiB + MiB },
      ],
      [],
    ],
    [
      'one still small',
      [
        { node: 'a', sizeBytes: 2 * GiB },
        { node: 'b', sizeBytes: GiB },
      ],
      ['b at 1.0 GiB'],
    ],
    ['one not reported', [{ node: 'a', sizeBytes: 2 * GiB }], ['b at no size yet']],
    ['a size not reported', [{ node: 'a', sizeBytes: 2 * GiB }, { node: 'b' }], ['b at no size yet']],
    ['no status at all', undefined, ['a at no size yet', 'b at no size yet']],
  ])('%s', (_name, reported, pending) => {
    expect(growthPending(['a', 'b'], reported, 2 * GiB)).toEqual(pending);
  });
});

describe('node side', () => {
  const check = (o: { requiredBytes: number; engineBytes: number; deviceBytes: number }) =>
    outcome(() => checkNodeExpansion({ id: 'ns.v', device: '/dev/loop3', ...o }) ?? 'OK');
  test.each([
    ['device as large as asked', { requiredBytes: 2 * GiB, engineBytes: 2 * GiB, deviceBytes: 2 * GiB }, 'OK'],
    ['no size asked: the engine size', { requiredBytes: 0, engineBytes: 2 * GiB, deviceBytes: 2 * GiB }, 'OK'],
    ['engine not grown yet', { requiredBytes: 2 * GiB, engineBytes: GiB, deviceBytes: GiB }, 'FAILED_PRECONDITION'],
    [
      'device still the old size',
      { requiredBytes: 2 * GiB, engineBytes: 2 * GiB, deviceBytes: GiB },
      'FAILED_PRECONDITION',
    ],
    [
      'no size asked, device stale',
      { requiredBytes: 0, engineBytes: 2 * GiB, deviceBytes: GiB },
      'FAILED_PRECONDITION',
    ],
  ])('%s', (_name, o, expected) => {
    expect(check(o)).toBe(expected);
  });
  test('a stale device names the way out', () => {
    expect(() =>
      checkNodeExpansion({
        id: 'ns.v',
        device: '/dev/loop3',
        requiredBytes: 2 * GiB,
        engineBytes: 2 * GiB,
        deviceBytes: GiB,
      }),
    ).toThrow(/\/dev\/loop3.*unstaged and staged again/);
  });
  test('ext4 grows through its device, xfs through its mount point, nothing else', () => {
    expect(growFilesystemCommand('ext4', '/dev/loop3', '/mnt/v')).toEqual({ cmd: 'resize2fs', args: ['/dev/loop3'] });
    expect(growFilesystemCommand('xfs', '/dev/loop3', '/mnt/v')).toEqual({ cmd: 'xfs_growfs', args: ['/mnt/v'] });
    expect(growFilesystemCommand('btrfs', '/dev/loop3', '/mnt/v')).toBeUndefined();
  });
});
