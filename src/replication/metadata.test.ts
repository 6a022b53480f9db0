// The superblock is rewritten by several paths at once (a resync's end, a flag the
// agent sets, a new generation at peer loss); every change must survive, on disk
// and in memory, whatever the order the writes complete in.
import { mkdtempSync, rmSync, writeFileSync, truncateSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { locateMetadata, Metadata } from './metadata.ts';
import { newCurrent } from './uuids.ts';
import { realWorld } from './real-world.ts';

const storage = realWorld.storage;

let dir: string;
beforeEach(() => {
  dir = mkdtempSync(join(tmpdir(), 'tandem-md-test-'));
});
afterEach(() => rmSync(dir, { recursive: true, force: true }));

async function fresh(): Promise<Metadata> {
  const disk = join(dir, 'disk');
  writeFileSync(disk, '');
  truncateSync(disk, 64 * 1024 * 1024);
  const location = await locateMetadata(storage, disk, { kind: 'internal' });
  await Metadata.create(storage, location, 'r0');
  return Metadata.open(storage, location, 'r0');
}

test('concurrent updates all land, in call order, each on the superblock the previous one left', async () => {
  const md = await fresh();
  const seq0 = md.sb.seq;
  const generation = newCurrent(md.sb.uuids, realWorld.random);
  // As at a resync's end on a SyncTarget: the preparation clears "consistent" while
  // the new generation and "consistent" are written, without waiting for each other.
  await Promise.all([
    md.update({ set: ['outdated'] }),
    md.update({ uuids: generation, set: ['consistent', 'wasUpToDate'] }),
    md.update({ clear: ['outdated'] }),
    md.update((sb) => ({ uuids: { ...sb.uuids, bitmap: 0n } })),
  ]);
  const want = { current: generation.current, bitmap: 0n, history: generation.history };
  expect(md.sb.seq).toBe(seq0 + 4n);
  expect(md.sb.uuids).toEqual(want);
  expect([md.has('consistent'), md.has('wasUpToDate'), md.has('outdated')]).toEqual([true, true, false]);
  const location = md.location;
  await md.close();
  const again = await Metadata.open(storage, location, 'r0');
  expect(again.sb.seq).toBe(seq0 + 4n);
  expect(again.sb.uuids).toEqual(want);
  expect([again.has('consistent'), again.has('wasUpToDate'), again.has('outdated')]).toEqual([true, true, false]);
  await again.close();
});

test('a failed update does not stop the ones after it', async () => {
  const md = await fresh();
  const bad = md.update(() => {
    throw new Error('boom');
  });
  const good = md.update({ set: ['outdated'] });
  await expect(bad).rejects.toThrow('boom');
  await good;
  expect(md.has('outdated')).toBe(true);
  await md.close();
});
