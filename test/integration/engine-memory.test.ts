// An engine's memory (issue 17 item 3, docs/design/2026-12-07-engine-memory.md): the
// engine that `tandemadm up` starts runs from Node's compile cache, so it never loads
// Node's TypeScript stripper (≈ 25 MiB per engine), even when the cache was empty just
// before that `up` (a fresh install, a new engine-host pod). The `memory` control
// command says so from inside the engine. With the cache turned off the same check
// sees the stripper: it can fail.
import { mkdtemp, rm } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { jest } from '@jest/globals';
import { callControl } from '../../src/cli/control.ts';
import { Pair } from './support/pair.ts';

jest.setTimeout(120_000);

describe('an engine starts lean', () => {
  let pair: Pair;
  let cache: string;
  const saved = { cache: process.env.NODE_COMPILE_CACHE, off: process.env.NODE_DISABLE_COMPILE_CACHE };

  const memory = async (): Promise<Record<string, number>> => {
    const r = await callControl(join(pair.runDir('master'), 'mysql.ctl'), { cmd: 'memory' });
    if (!r.ok) throw new Error(r.error.message);
    return r.result as Record<string, number>;
  };

  beforeAll(async () => {
    pair = await Pair.create({ protocol: 'C', masterMiB: 16, backupMiB: 16 });
    await pair.ok('master', 'create-md', 'mysql');
  });

  afterEach(async () => {
    await pair.adm('master', 'down', 'mysql');
    for (const [k, v] of [
      ['NODE_COMPILE_CACHE', saved.cache],
      ['NODE_DISABLE_COMPILE_CACHE', saved.off],
    ] as const)
      if (v === undefined) delete process.env[k];
      else process.env[k] = v;
    await rm(cache, { recursive: true, force: true });
  });

  afterAll(async () => {
    await pair.destroy();
  });

  test('the first engine after an empty compile cache runs without the TypeScript stripper', async () => {
    cache = await mkdtemp(join(tmpdir(), 'tandem-compile-cache-'));
    process.env.NODE_COMPILE_CACHE = cache;
    await pair.ok('master', 'up', 'mysql');
    const m = await memory();
    expect(m.typeStripperLoaded).toBe(0);
    expect(m.rss).toBeGreaterThan(m.heapUsed ?? Number.POSITIVE_INFINITY);
  });

  test('with the compile cache off, the same engine loads it', async () => {
    cache = await mkdtemp(join(tmpdir(), 'tandem-compile-cache-'));
    delete process.env.NODE_COMPILE_CACHE;
    process.env.NODE_DISABLE_COMPILE_CACHE = '1';
    await pair.ok('master', 'up', 'mysql');
    expect((await memory()).typeStripperLoaded).toBe(1);
  });
});
