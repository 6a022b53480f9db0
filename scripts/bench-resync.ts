// Resync throughput: a full initial sync of 1 GiB of random data between two
// engines on this machine (127.0.0.2 → 127.0.0.3), with the engine's default rate
// settings (no resync-rate) unless a rate is given: `npm run bench:resync [-- 500M]`.
// Prints the engine's own resync time (from the SyncTarget's log) and the wall time
// from `primary --force` to UpToDate/UpToDate.
import { execFileSync } from 'node:child_process';
import { readFileSync } from 'node:fs';
import { Pair } from '../test/integration/support/pair.ts';

const rate = process.argv[2] ?? 'none';
const MiB = 1024 * 1024;
const pair = await Pair.create({ masterMiB: 1024, backupMiB: 1024, rate });
try {
  // Real data on the source (a thin, never-written file would measure the kernel
  // filling the page cache with zeroes instead) and a different disk on the target.
  execFileSync('dd', ['if=/dev/urandom', `of=${pair.disk('master')}`, 'bs=4M', 'count=256', 'conv=notrunc,fsync'], {
    stdio: 'ignore',
  });
  execFileSync('dd', ['if=/dev/zero', `of=${pair.disk('backup')}`, 'bs=4M', 'count=256', 'conv=notrunc,fsync'], {
    stdio: 'ignore',
  });
  for (const n of ['master', 'backup'] as const) await pair.ok(n, 'create-md', 'mysql');
  for (const n of ['master', 'backup'] as const) await pair.ok(n, 'up', 'mysql');
  await pair.waitFor('master', (s) => s.cstate === 'Connected', 20_000, 'Connected');
  const t0 = Date.now();
  await pair.ok('master', '--', '--force', 'primary', 'mysql');
  await pair.waitInSync(300_000);
  const wall = (Date.now() - t0) / 1000;
  const line = readFileSync(pair.logPath('backup'), 'utf8')
    .split('\n')
    .find((l) => l.includes('"Resync finished"'));
  const engine = line ? (JSON.parse(line) as { seconds: number; bytes: number }) : undefined;
  const same = pair
    .diskBytes('master', 0, 1024 * MiB)
    .then(async (m) => m.equals(await pair.diskBytes('backup', 0, 1024 * MiB)));
  console.log(`resync-rate: ${rate === 'none' ? 'default (none configured)' : rate}`);
  if (engine)
    console.log(
      `engine resync: ${(engine.bytes / MiB).toFixed(0)} MiB in ${engine.seconds.toFixed(2)} s = ${(engine.bytes / MiB / engine.seconds).toFixed(0)} MiB/s`,
    );
  console.log(`wall, primary --force to UpToDate/UpToDate: ${wall.toFixed(2)} s = ${(1024 / wall).toFixed(0)} MiB/s`);
  console.log(`disks identical: ${await same}`);
} finally {
  for (const n of ['master', 'backup'] as const) {
    await pair.adm(n, '--', '--force', 'secondary', 'mysql');
    await pair.adm(n, 'down', 'mysql');
  }
  await pair.destroy();
}
