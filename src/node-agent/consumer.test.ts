// grownDevice, shared by the agent's ensure-consumer and the CSI node service's
// NodeStageVolume: the engine and the kernel's sizes are plain functions here.
import type { AttachingEngine } from './consumer.ts';
import { blockDeviceBytes, ConsumerError, grownDevice, needsReattach, type Run } from './consumer.ts';
import type { EngineStatusView } from './engine-client.ts';

const GiB = 2 ** 30;

test('a kernel device smaller than the engine is re-attached; equal or larger is not', () => {
  expect([needsReattach(GiB, 2 * GiB), needsReattach(2 * GiB, 2 * GiB), needsReattach(3 * GiB, 2 * GiB)]).toEqual([
    true,
    false,
    false,
  ]);
});

test.each<[string, { code: number; stdout: string; stderr: string }, number | string]>([
  ['a size', { code: 0, stdout: '1073741824\n', stderr: '' }, GiB],
  ['blockdev fails', { code: 1, stdout: '', stderr: 'blockdev: cannot open /dev/x: No such file' }, 'BlockdevFailed'],
  ['not a number', { code: 0, stdout: 'lots', stderr: '' }, 'BlockdevFailed'],
])('blockDeviceBytes: %s', async (_what, result, want) => {
  const calls: string[][] = [];
  const run: Run = async (cmd, args) => {
    calls.push([cmd, ...args]);
    return result;
  };
  const got = await blockDeviceBytes(run, '/dev/x').catch((err: unknown) =>
    err instanceof ConsumerError ? err.reason : String(err),
  );
  expect(got).toBe(want);
  expect(calls).toEqual([['blockdev', '--getsize64', '/dev/x']]);
});

/** An engine of `volume` bytes whose device is `before`; a re-attach makes it `after` (null: none). */
function world(o: {
  volume?: number;
  sizes: Record<string, number | undefined>;
  after?: string | null;
  reattach?: { code: number; stderr: string };
}) {
  let device: string | null = '/dev/loop1';
  const adm: string[][] = [];
  const engine: AttachingEngine = {
    status: async () =>
      o.volume === undefined
        ? undefined
        : ({ size: o.volume, attach: { method: 'fuse', reason: '', device, lastError: null } } as EngineStatusView),
    adm: async (resource, ...args) => {
      adm.push([resource, ...args]);
      const r = o.reattach ?? { code: 0, stderr: '' };
      if (r.code === 0) device = o.after === undefined ? '/dev/loop2' : o.after;
      return { ...r, stdout: '' };
    },
  };
  const size = async (d: string) => o.sizes[d];
  const call = () =>
    grownDevice({ engine, resource: 'ns.v', device: '/dev/loop1', size, waitMs: 0 }).catch((err: unknown) =>
      err instanceof ConsumerError ? err.reason : String(err),
    );
  return { call, adm };
}

test.each<[string, Parameters<typeof world>[0], unknown, boolean]>([
  [
    'as large as the volume: as it is',
    { volume: 2 * GiB, sizes: { '/dev/loop1': 2 * GiB } },
    { device: '/dev/loop1' },
    false,
  ],
  ['larger: as it is', { volume: GiB, sizes: { '/dev/loop1': 2 * GiB } }, { device: '/dev/loop1' }, false],
  ['size unknown: as it is', { volume: 2 * GiB, sizes: {} }, { device: '/dev/loop1' }, false],
  ['no engine: as it is', { sizes: { '/dev/loop1': GiB } }, { device: '/dev/loop1' }, false],
  [
    'smaller: attached again at the size',
    { volume: 2 * GiB, sizes: { '/dev/loop1': GiB, '/dev/loop2': 2 * GiB } },
    { device: '/dev/loop2', reattached: { from: GiB, bytes: 2 * GiB, volume: 2 * GiB } },
    true,
  ],
  [
    'attached again, still short: returned for the caller to judge',
    { volume: 2 * GiB, sizes: { '/dev/loop1': GiB, '/dev/loop2': GiB } },
    { device: '/dev/loop2', reattached: { from: GiB, bytes: GiB, volume: 2 * GiB } },
    true,
  ],
  [
    're-attach refused (the device is open)',
    { volume: 2 * GiB, sizes: { '/dev/loop1': GiB }, reattach: { code: 11, stderr: '/dev/loop1 is in use' } },
    'ReattachFailed',
    true,
  ],
  [
    'attached again, no device reported',
    { volume: 2 * GiB, sizes: { '/dev/loop1': GiB }, after: null },
    'ReattachedNoDevice',
    true,
  ],
])('grownDevice: %s', async (_what, o, want, reattached) => {
  const w = world(o);
  expect(await w.call()).toEqual(want);
  expect(w.adm).toEqual(reattached ? [['ns.v', 'reattach']] : []);
});

test("grownDevice: a size reader's error passes through (the CSI node service's gRPC codes)", async () => {
  const engine: AttachingEngine = {
    status: async () => ({ size: GiB }) as EngineStatusView,
    adm: async () => ({ code: 0, stdout: '', stderr: '' }),
  };
  const size = async () => {
    throw new Error('INTERNAL: blockdev failed');
  };
  await expect(grownDevice({ engine, resource: 'ns.v', device: '/dev/x', size, waitMs: 0 })).rejects.toThrow(
    'INTERNAL: blockdev failed',
  );
});

test('grownDevice: waits for the re-attached device to show the size', async () => {
  let looks = 0;
  const engine: AttachingEngine = {
    status: async () =>
      ({
        size: 2 * GiB,
        attach: { method: 'fuse', reason: '', device: '/dev/loop2', lastError: null },
      }) as EngineStatusView,
    adm: async () => ({ code: 0, stdout: '', stderr: '' }),
  };
  const size = async (d: string) => (d === '/dev/loop1' ? GiB : ++looks < 3 ? GiB : 2 * GiB);
  const grown = await grownDevice({ engine, resource: 'ns.v', device: '/dev/loop1', size, waitMs: 5_000 });
  expect(grown).toEqual({ device: '/dev/loop2', reattached: { from: GiB, bytes: 2 * GiB, volume: 2 * GiB } });
  expect(looks).toBe(3);
});
