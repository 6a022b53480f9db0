// Resync moves only what changed: after a short disconnect (bitmap), and after a
// crash (activity log), never the whole device; and no acknowledged write is lost.
import { createHash, randomInt } from 'node:crypto';
import { jest } from '@jest/globals';
import { Pair, type NodeName } from './support/pair.ts';
import { RawNbdClient, type SimpleReply } from './support/raw-nbd-client.ts';
import { BLOCK, blockContent as content } from './support/blocks.ts';
import { nbdWire } from '../../src/nbd/index.ts';

jest.setTimeout(900_000);

const MiB = 1024 * 1024;

async function sha(pair: Pair, n: NodeName, bytes: number): Promise<string> {
  return createHash('sha256')
    .update(await pair.diskBytes(n, 0, bytes))
    .digest('hex');
}

/** Writes `count` random 4 KiB blocks with `depth` in flight; returns when all are acknowledged. */
async function writeRandom(socket: string, sizeBytes: number, count: number, depth = 16): Promise<void> {
  const { client } = await RawNbdClient.open({ path: socket }, 'mysql');
  let sent = 0;
  let inflight = 0;
  const next = (): void => {
    client.send({
      command: nbdWire.Cmd.NBD_CMD_WRITE,
      offset: randomInt(sizeBytes / BLOCK) * BLOCK,
      data: content(sent),
    });
    sent++;
    inflight++;
  };
  while (sent < count && inflight < depth) next();
  while (inflight > 0) {
    const r = await client.reply(() => 0, 30_000);
    expect(r.error).toBe(0);
    inflight--;
    if (sent < count) next();
  }
  client.destroy();
}

describe('bitmap resync after a short disconnect', () => {
  let pair: Pair;
  beforeAll(async () => {
    pair = await Pair.create({ masterMiB: 1024, backupMiB: 1024 });
  });
  afterAll(async () => {
    await pair.destroy();
  });

  test('8 MiB written during a 10 s disconnect of a 1 GiB volume moves less than 10 MiB', async () => {
    await pair.startBlank();
    await pair.ok('master', 'primary', 'mysql');
    await pair.ok('backup', 'disconnect', 'mysql');
    expect((await pair.ok('backup', 'cstate', 'mysql')).trim()).toBe('StandAlone');
    const started = Date.now();
    await writeRandom(pair.nbdSocket('master'), 1024 * MiB, 2048);
    const during = await pair.status('master');
    expect(during.cstate).toBe('WFConnection');
    expect(during.oosBytes).toBeGreaterThan(7 * MiB);
    expect(during.oosBytes).toBeLessThanOrEqual(8 * MiB);
    await new Promise((r) => setTimeout(r, Math.max(0, 10_000 - (Date.now() - started))));
    const nsBefore = during.counters.ns;
    const nrBefore = (await pair.status('backup')).counters.nr;
    await pair.ok('backup', 'connect', 'mysql');
    await pair.waitInSync();
    const m = await pair.status('master');
    const b = await pair.status('backup');
    expect(m.lastDecision?.decision).toBe('bitmap-source');
    const moved = b.counters.nr - nrBefore;
    process.stdout.write(
      `bitmap resync moved ${(moved / MiB).toFixed(2)} MiB (master sent ${((m.counters.ns - nsBefore) / MiB).toFixed(2)} MiB) for ${(during.oosBytes / MiB).toFixed(2)} MiB out of sync\n`,
    );
    expect(moved).toBeLessThan(10 * MiB);
    expect(moved).toBeGreaterThanOrEqual(during.oosBytes);
    expect(await sha(pair, 'backup', 1024 * MiB)).toBe(await sha(pair, 'master', 1024 * MiB));
  });
});

describe('a Secondary that comes back with nothing to resync', () => {
  // The resync ends before the target's preparation does; its end (UpToDate, the
  // Primary's generation) once lost to the preparation's superblock write, and a
  // later failover then found no common bitmap generation: a full resync.
  test("holds the Primary's generation after each of 6 restarts, and a split brain after it is repaired by a bitmap resync", async () => {
    const pair = await Pair.create({ masterMiB: 64, backupMiB: 64 });
    try {
      await pair.startBlank();
      await pair.ok('master', 'primary', 'mysql');
      for (let round = 1; round <= 6; round++) {
        await pair.kill9('backup');
        await pair.waitFor('master', (s) => s.cstate !== 'Connected', 20_000, 'the lost peer to be noticed');
        await pair.ok('backup', 'up', 'mysql');
        await pair.waitInSync();
        const [m, b] = [await pair.status('master'), await pair.status('backup')];
        expect({ round, backup: b.uuids.current, bitmap: b.uuids.bitmap }).toEqual({
          round,
          backup: m.uuids.current,
          bitmap: '0000000000000000',
        });
        expect(b.uuids.history[0]).toBe(m.uuids.history[0]);
      }
      // The failover of the tutorial's §12: both sides start a new generation from the
      // same one, so the split brain is repaired from the bitmaps, not by a full sync.
      await pair.cutLink();
      for (const n of ['master', 'backup'] as const)
        await pair.waitFor(n, (s) => s.cstate === 'WFConnection', 20_000, 'the lost link to be noticed');
      await pair.ok('backup', 'primary', 'mysql');
      await writeRandom(pair.nbdSocket('backup'), 64 * MiB, 16);
      await pair.ok('master', 'secondary', 'mysql');
      await pair.healLink();
      await pair.waitFor('master', (s) => s.cstate === 'StandAlone', 20_000, 'the split brain to be detected');
      expect((await pair.status('master')).lastDecision?.decision).toBe('split-brain');
      await pair.waitFor('backup', (s) => s.cstate === 'StandAlone', 20_000, 'the split brain to be detected');
      await pair.ok('master', '--', '--discard-my-data', 'connect', 'mysql');
      await pair.ok('backup', 'connect', 'mysql');
      await pair.waitInSync();
      const m = await pair.status('master');
      expect(m.lastDecision?.decision).toBe('bitmap-target');
      expect(await sha(pair, 'master', 64 * MiB)).toBe(await sha(pair, 'backup', 64 * MiB));
    } finally {
      await pair.destroy();
    }
  });
});

describe('crash loop: SIGKILL the Primary, the Secondary or both mid-stream', () => {
  const iterations = Number(process.env.TANDEM_CRASH_ITERATIONS ?? 100);
  const size = 256 * MiB;
  const alExtents = 7;
  let pair: Pair;
  beforeAll(async () => {
    pair = await Pair.create({ masterMiB: 256, backupMiB: 256, disk: `al-extents ${alExtents};` });
  });
  afterAll(async () => {
    await pair.destroy();
  });

  test(`${iterations} iterations: no acknowledged write lost, disks identical, crash resync bounded by the activity log`, async () => {
    await pair.startBlank();
    await pair.ok('master', 'primary', 'mysql');
    // What each block may hold: its last acknowledged write, or any write issued after it and never acknowledged.
    const acked = new Map<number, number>();
    const maybe = new Map<number, number[]>();
    let seq = 0;
    let worstResync = 0;
    const faults = { primary: 0, secondary: 0, both: 0 };
    for (let it = 0; it < iterations; it++) {
      const mode = (['primary', 'secondary', 'both'] as const)[it % 3]!;
      const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
      const inflight = new Map<bigint, { block: number; seq: number }>();
      const send = (): void => {
        const block = randomInt(size / BLOCK);
        const h = client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: block * BLOCK, data: content(seq) });
        inflight.set(h, { block, seq });
        maybe.set(block, [...(maybe.get(block) ?? []), seq]);
        seq++;
      };
      const killAfter = randomInt(20, 300);
      for (let i = 0; i < 8; i++) send();
      let done = 0;
      let killed = false;
      while (inflight.size > 0) {
        let r: SimpleReply;
        try {
          r = await client.reply(() => 0, 10_000);
        } catch {
          break; // the Primary died: whatever is in flight stays "maybe"
        }
        const w = inflight.get(r.handle)!;
        inflight.delete(r.handle);
        expect(r.error).toBe(0);
        acked.set(w.block, w.seq);
        maybe.set(
          w.block,
          (maybe.get(w.block) ?? []).filter((s) => s > w.seq),
        );
        done++;
        if (done === killAfter && !killed) {
          killed = true;
          if (mode !== 'primary') await pair.kill9('backup');
          if (mode !== 'secondary') await pair.kill9('master');
        }
        if (!(killed && mode !== 'secondary') && done < killAfter + (mode === 'secondary' ? 100 : 0)) send();
      }
      client.destroy();
      faults[mode]++;
      if (mode !== 'primary') await pair.ok('backup', 'up', 'mysql');
      if (mode !== 'secondary') await pair.ok('master', 'up', 'mysql');
      await pair.waitInSync();
      if (mode !== 'secondary') {
        // The restarted Primary was the SyncSource of its own activity log, and (mode
        // 'both', where the Secondary died first) of the writes its transfer log held
        // when it noticed: the peer had not made their epochs durable, so they became
        // bits. Those writes kept their extents hot until then, so they lie in at most
        // al-extents extents too.
        const m = await pair.status('master');
        worstResync = Math.max(worstResync, m.counters.ns);
        expect(m.counters.ns).toBeLessThanOrEqual((mode === 'both' ? 2 : 1) * alExtents * 4 * MiB);
        await pair.ok('master', 'primary', 'mysql');
      }
      // Every block holds its last acknowledged write or a later unacknowledged one, on both disks.
      const [mDisk, bDisk] = [await pair.diskBytes('master', 0, size), await pair.diskBytes('backup', 0, size)];
      if (!mDisk.equals(bDisk)) throw new Error(`iteration ${it} (${mode}): the two disks differ`);
      for (const [block, s] of acked) {
        const allowed = [s, ...(maybe.get(block) ?? [])];
        const got = bDisk.readUInt32LE(block * BLOCK);
        if (!allowed.includes(got))
          throw new Error(
            `iteration ${it} (${mode}): block ${block} holds write ${got}, expected one of ${allowed.join(',')}`,
          );
        if (got === s && !bDisk.subarray(block * BLOCK, (block + 1) * BLOCK).equals(content(s)))
          throw new Error(`iteration ${it}: block ${block} is torn`);
      }
    }
    process.stdout.write(
      `crash loop: ${iterations} iterations, faults ${JSON.stringify(faults)}, ${acked.size} blocks checked, worst crash resync ${(worstResync / MiB).toFixed(1)} MiB of a ${size / MiB} MiB device\n`,
    );
  });
});

describe('an interrupted resync resumes where it stopped', () => {
  test.each(['backup', 'master'] as const)(
    'full initial sync, %s killed at ~40%%, moves about one device in total',
    async (victim) => {
      const size = 256 * MiB;
      const pair = await Pair.create({ masterMiB: 256, backupMiB: 256, rate: '48M' });
      try {
        for (const n of ['master', 'backup'] as const) await pair.ok(n, 'create-md', 'mysql');
        for (const n of ['master', 'backup'] as const) await pair.ok(n, 'up', 'mysql');
        await pair.waitFor('master', (s) => s.cstate === 'Connected', 20_000, 'Connected');
        await pair.ok('master', '--', '--force', 'primary', 'mysql');
        const mid = await pair.waitFor('backup', (s) => (s.sync?.percent ?? 0) >= 40, 60_000, '40% synced');
        const movedBefore = (await pair.status('backup')).counters.nr;
        expect(mid.cstate).toBe('SyncTarget');
        await pair.kill9(victim);
        await new Promise((r) => setTimeout(r, 1200));
        await pair.ok(victim, 'up', 'mysql');
        await pair.waitInSync(120_000);
        const b = await pair.status('backup');
        const movedAfter = victim === 'backup' ? b.counters.nr : b.counters.nr - movedBefore;
        process.stdout.write(
          `resume after killing ${victim}: ${(movedBefore / MiB).toFixed(0)} MiB before, ${(movedAfter / MiB).toFixed(0)} MiB after, device ${size / MiB} MiB\n`,
        );
        expect(b.lastDecision?.decision).toBe('bitmap-target');
        expect(movedBefore + movedAfter).toBeLessThan(size * 1.25);
        expect((await pair.diskBytes('backup', 0, size)).equals(await pair.diskBytes('master', 0, size))).toBe(true);
      } finally {
        await pair.destroy();
      }
    },
  );
});

describe('pause-sync / resume-sync', () => {
  test('a paused resync shows PausedSyncS/PausedSyncT, moves nothing, and finishes after resume', async () => {
    const pair = await Pair.create({ masterMiB: 128, backupMiB: 128, rate: '32M' });
    try {
      for (const n of ['master', 'backup'] as const) await pair.ok(n, 'create-md', 'mysql');
      for (const n of ['master', 'backup'] as const) await pair.ok(n, 'up', 'mysql');
      await pair.waitFor('master', (s) => s.cstate === 'Connected', 20_000, 'Connected');
      await pair.ok('master', '--', '--force', 'primary', 'mysql');
      await pair.waitFor('backup', (s) => (s.sync?.percent ?? 0) >= 10, 30_000, '10% synced');
      await pair.ok('backup', 'pause-sync', 'mysql');
      const m = await pair.waitFor('master', (s) => s.cstate === 'PausedSyncS', 5_000, 'PausedSyncS');
      expect(m.peerPaused).toBe(true);
      expect(await pair.ok('backup', 'status', 'mysql')).toMatch(/cs:PausedSyncT .* r--u--/);
      await new Promise((r) => setTimeout(r, 500));
      const a = (await pair.status('backup')).counters.nr;
      await new Promise((r) => setTimeout(r, 1500));
      expect((await pair.status('backup')).counters.nr).toBe(a);
      await pair.ok('backup', 'resume-sync', 'mysql');
      await pair.waitInSync(60_000);
      expect((await pair.diskBytes('backup', 0, 128 * MiB)).equals(await pair.diskBytes('master', 0, 128 * MiB))).toBe(
        true,
      );
    } finally {
      await pair.destroy();
    }
  });
});

describe('dynamic resync controller', () => {
  test('a resync slows to c-min-rate while the application writes, and speeds up when it stops', async () => {
    const pair = await Pair.create({ masterMiB: 256, backupMiB: 256, rate: 'none', disk: 'c-min-rate 8M;' });
    try {
      const { execFileSync } = await import('node:child_process');
      execFileSync('dd', ['if=/dev/urandom', `of=${pair.disk('master')}`, 'bs=4M', 'count=64', 'conv=notrunc'], {
        stdio: 'ignore',
      });
      for (const n of ['master', 'backup'] as const) await pair.ok(n, 'create-md', 'mysql');
      for (const n of ['master', 'backup'] as const) await pair.ok(n, 'up', 'mysql');
      await pair.waitFor('master', (s) => s.cstate === 'Connected', 20_000, 'Connected');
      await pair.ok('master', '--', '--force', 'primary', 'mysql');
      // The application writes continuously (one 4 KiB write in flight); the
      // resync is measured over 2.5 s once the application has been busy for 0.5 s.
      const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
      let writes = 0;
      const writeFor = async (ms: number): Promise<void> => {
        const until = Date.now() + ms;
        while (Date.now() < until) {
          client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: randomInt(1024) * BLOCK, data: content(writes++) });
          expect((await client.reply()).error).toBe(0);
        }
      };
      await writeFor(500);
      const start = (await pair.status('backup')).counters.nr;
      const writesBefore = writes;
      await writeFor(2500);
      const busy = (await pair.status('backup')).counters.nr - start;
      writes -= writesBefore;
      client.destroy();
      process.stdout.write(
        `resync under application load: ${((busy - writes * BLOCK) / MiB).toFixed(1)} MiB resynced in 2.5 s with c-min-rate 8M, beside ${writes} application writes\n`,
      );
      // nr counts the application's mirrored writes too; the rest is resync, about
      // 8 MiB/s × 2.5 s plus the bucket. Unthrottled, all 256 MiB would have gone
      // in well under a second.
      const resync = busy - writes * BLOCK;
      expect(resync).toBeLessThan(32 * MiB);
      expect((await pair.status('master')).cstate).toBe('SyncSource');
      // Idle again: the rest goes at full speed.
      await pair.waitInSync(30_000);
      expect((await pair.diskBytes('backup', 0, size256)).equals(await pair.diskBytes('master', 0, size256))).toBe(
        true,
      );
    } finally {
      await pair.destroy();
    }
  });
});

const size256 = 256 * MiB;
