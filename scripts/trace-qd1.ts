// One 4 KiB write at QD1, looked at from outside the engines (docs/design/2026-12-07-latency.md):
//
//   node scripts/trace-qd1.ts connected|standalone [--pin FIO,PRIMARY[,SECONDARY]] [--runs 3]
//                             [--strace] [--perf] [--bs 4k] [--iodepth 1] [--rw randwrite]
//
// Starts a pair as the integration tests do (256 MiB file disks; Connected: `startBlank`, no
// initial sync; StandAlone: the master alone, `primary --force`), pins the processes where
// --pin says (taskset -a: every thread; fio --cpus_allowed), and runs fio's nbd engine at QD1
// for 3 s per run (--bs, --iodepth and --rw change the workload: the 1 MiB writes are
// `--bs 1m --iodepth 8 --rw write`). Per run it prints fio's mean latency and, per engine, CPU per write (µs,
// user/system from /proc/PID/stat). --strace: then one run under `strace -f -c` of each engine
// (system calls per write; strace slows everything, so only the counts mean anything), into
// /tmp/trace-qd1/strace-*.txt. --perf: one run under `perf record -g` of each engine into
// /tmp/trace-qd1/perf-*.data (start it with NODE_OPTIONS=--perf-basic-prof for JavaScript names).
import { execFile, spawn } from 'node:child_process';
import { mkdir, readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs, promisify } from 'node:util';
import { Pair } from '../test/integration/support/pair.ts';
import { parseProcStat, TICKS_PER_SECOND } from './proc-stat.ts';

const run = promisify(execFile);
const { values: opts, positionals } = parseArgs({
  allowPositionals: true,
  options: {
    pin: { type: 'string' },
    runs: { type: 'string', default: '3' },
    strace: { type: 'boolean', default: false },
    perf: { type: 'boolean', default: false },
    bs: { type: 'string', default: '4k' },
    iodepth: { type: 'string', default: '1' },
    rw: { type: 'string', default: 'randwrite' },
  },
});
const mode = positionals[0];
if (mode !== 'connected' && mode !== 'standalone')
  throw new Error(
    'usage: node scripts/trace-qd1.ts connected|standalone [--pin F,P[,S]] [--runs N] [--strace] [--perf] [--bs B] [--iodepth N] [--rw RW]',
  );
const OUT = '/tmp/trace-qd1';
const SECONDS = 3;

/** utime and stime of a process (all its threads), in clock ticks. */
async function ticks(pid: number): Promise<[number, number]> {
  const t = parseProcStat(await readFile(`/proc/${pid}/stat`, 'utf8'));
  return [t.user, t.system];
}

const pair = await Pair.create({ protocol: 'C', masterMiB: 256, backupMiB: 256 });
try {
  await mkdir(OUT, { recursive: true });
  if (mode === 'connected') {
    await pair.startBlank();
    await pair.ok('master', 'primary', 'mysql');
  } else {
    await pair.ok('master', 'create-md', 'mysql');
    await pair.ok('master', 'up', 'mysql');
    await pair.ok('master', 'disconnect', 'mysql');
    await pair.ok('master', '--', '--force', 'primary', 'mysql');
  }
  const engines: Record<string, number> = { primary: await pair.pid('master') };
  if (mode === 'connected') engines.secondary = await pair.pid('backup');
  const fioArgs = [
    '--name=qd1',
    '--ioengine=nbd',
    `--uri=${pair.nbdUri('master')}`,
    `--rw=${opts.rw}`,
    `--bs=${opts.bs}`,
    `--iodepth=${opts.iodepth}`,
    '--size=256M',
    '--norandommap',
    '--randrepeat=0',
    '--time_based',
    `--runtime=${SECONDS}`,
    '--output-format=terse',
  ];
  if (opts.pin) {
    const [f, p, s] = opts.pin.split(',');
    fioArgs.push(`--cpus_allowed=${f}`);
    await run('taskset', ['-a', '-p', '-c', p!, String(engines.primary)]);
    if (engines.secondary !== undefined) await run('taskset', ['-a', '-p', '-c', s ?? p!, String(engines.secondary)]);
  }
  const fio = async (): Promise<{ latUs: number; writes: number }> => {
    const { stdout } = await run('fio', fioArgs);
    const f = stdout
      .split('\n')
      .find((l) => l.startsWith('3;'))!
      .split(';');
    // terse v3: field 49 write IOPS, 81 write total latency mean (µs)
    return { latUs: Number(f[80]), writes: Number(f[48]) * SECONDS };
  };
  const perWrite = (t: number, writes: number): string => ((t * 1e6) / TICKS_PER_SECOND / writes).toFixed(1);
  await fio(); // warm-up
  console.log(`${mode}, placement ${opts.pin ?? 'not pinned'} (fio,primary[,secondary])`);
  for (let i = 0; i < Number(opts.runs); i++) {
    const before = Object.fromEntries(
      await Promise.all(Object.entries(engines).map(async ([k, p]) => [k, await ticks(p)])),
    );
    const r = await fio();
    const cpu: string[] = [];
    for (const [k, p] of Object.entries(engines)) {
      const [u, s] = await ticks(p);
      const [u0, s0] = before[k] as [number, number];
      cpu.push(
        `${k} ${perWrite(u - u0 + s - s0, r.writes)} (user ${perWrite(u - u0, r.writes)}, sys ${perWrite(s - s0, r.writes)})`,
      );
    }
    console.log(`  mean ${r.latUs.toFixed(1)} µs; CPU µs per write: ${cpu.join('; ')}`);
  }
  for (const [tool, args] of [
    ['strace', opts.strace ? ['-f', '-c', '-o'] : undefined],
    ['perf', opts.perf ? ['record', '-g', '-o'] : undefined],
  ] as const) {
    if (args === undefined) continue;
    const tracers = Object.entries(engines).map(([k, p]) =>
      spawn(tool, [...args, `${OUT}/${tool}-${mode}-${k}.${tool === 'perf' ? 'data' : 'txt'}`, '-p', String(p)], {
        stdio: 'ignore',
      }),
    );
    await sleep(500);
    const r = await fio();
    for (const t of tracers) t.kill('SIGINT');
    await sleep(1500);
    console.log(`  under ${tool}: ${r.writes} writes (divide its counts by this), files in ${OUT}`);
  }
} finally {
  for (const n of ['master', 'backup'] as const) await pair.adm(n, 'down', 'mysql');
  await pair.destroy();
}
