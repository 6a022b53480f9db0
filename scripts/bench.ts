// npm run bench: fio's nbd engine against tandem's NBD export and against `nbdkit file` on
// the same backing file, in one run, then the same workloads on a Connected protocol C pair.
//
//   npm run bench                         the table (about 4 minutes)
//   npm run bench -- --seconds 10         longer runs per workload (default 4, after 1 s of ramp)
//   npm run bench -- --repeat 5           runs per workload and server, best one kept (default 3)
//   npm run bench -- --matrix             also the StandAlone workloads under several libuv
//                                         settings (UV_THREADPOOL_SIZE, UV_USE_IO_URING)
//   npm run bench -- --env UV_USE_IO_URING=1   environment for the tandem engines
//   npm run bench -- --prof DIR           engines write V8 CPU profiles (--cpu-prof) into DIR
//   npm run bench -- --only standalone|connected
//   npm run bench -- --workloads seqwrite,qd1   a subset (seqwrite, randwrite, randread, qd1)
//   npm run bench -- --compare REV        the Connected workloads also on a second pair running
//                                         the engine of git revision REV (a temporary worktree),
//                                         runs alternating, and a table of this tree against it
//                                         (e.g. --compare a0ef30d: before epochs and barrier acks)
//   npm run bench -- --json FILE          also writes every run's figures as JSON (for tracking over
//                                         time): tables nbdkit, alone (StandAlone), conn (Connected),
//                                         other (--compare), tls; per workload its unit, every run
//                                         (value, p99, IOPS, CPU by process) and the best one
//   npm run bench -- --no-pin             let the scheduler place fio and the servers (by default
//                                         each run pins them, and the output says where: cpuFor())
//   npm run bench -- --skip-tls           without the third Connected pair whose peer link runs over
//                                         TLS 1.3 (net { tls yes; … }, certificates from
//                                         `tandemadm tls-certs`); by default it runs alternating with
//                                         the plain pair and a table prints TLS/plain ratios
//
// The engines are built exactly as the integration tests build them (test/integration/support/
// pair.ts): `tandemadm create-md` + `up` on 127.0.0.2 and 127.0.0.3, file disks in one temp dir
// on the same filesystem. StandAlone: master alone, disconnected, `primary --force`. Connected:
// backup up, master connects, full resync, then the workloads again.
//
// This machine is shared (2 cores; other jobs may run): each figure is the best of --repeat
// runs, nbdkit and tandem alternating, and the ratios are what to read, not the absolute values.
// Every run also samples the CPU time of each process (and fio's) over its middle: ms per MiB
// for the MiB/s workloads, µs per I/O for the others.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdir, mkdtemp, open, readdir, readFile, symlink, writeFile } from 'node:fs/promises';
import { availableParallelism, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs } from 'node:util';
import { Pair } from '../test/integration/support/pair.ts';
import { makeCerts } from '../src/net/certs.ts';
import { parseProcStat } from './proc-stat.ts';

const run = promisify(execFile);

const { values: args } = parseArgs({
  options: {
    seconds: { type: 'string', default: '4' },
    repeat: { type: 'string', default: '3' },
    'size-mib': { type: 'string', default: '1024' },
    matrix: { type: 'boolean', default: false },
    env: { type: 'string', multiple: true, default: [] },
    prof: { type: 'string' },
    only: { type: 'string' },
    workloads: { type: 'string' },
    compare: { type: 'string' },
    'skip-tls': { type: 'boolean', default: false },
    'no-pin': { type: 'boolean', default: false },
    json: { type: 'string' },
  },
});
const SECONDS = Number(args.seconds);
const SIZE_MIB = Number(args['size-mib']);
const REPEAT = Number(args.repeat);

interface Workload {
  readonly key: string;
  readonly title: string;
  readonly fio: string[];
  /** What the table shows and which way is better. */
  readonly metric: 'MiB/s' | 'IOPS' | 'lat µs';
}

const ALL_WORKLOADS: readonly Workload[] = [
  { key: 'seqwrite', title: '1 MiB seq write QD8', fio: ['--rw=write', '--bs=1M', '--iodepth=8'], metric: 'MiB/s' },
  {
    key: 'randwrite',
    title: '4 KiB rand write QD32',
    fio: ['--rw=randwrite', '--bs=4k', '--iodepth=32'],
    metric: 'IOPS',
  },
  { key: 'randread', title: '4 KiB rand read QD32', fio: ['--rw=randread', '--bs=4k', '--iodepth=32'], metric: 'IOPS' },
  {
    key: 'qd1',
    title: '4 KiB rand write QD1 latency',
    fio: ['--rw=randwrite', '--bs=4k', '--iodepth=1'],
    metric: 'lat µs',
  },
];

const WORKLOADS: readonly Workload[] =
  args.workloads === undefined
    ? ALL_WORKLOADS
    : args.workloads.split(',').map((k) => {
        const w = ALL_WORKLOADS.find((x) => x.key === k);
        if (w === undefined)
          throw new Error(`--workloads: unknown workload ${k} (known: ${ALL_WORKLOADS.map((x) => x.key).join(', ')})`);
        return w;
      });

interface Result {
  readonly value: number;
  readonly p99?: number;
  /** I/Os per second fio counted (every workload), for CPU per I/O. */
  readonly iops?: number;
  /** CPU per MiB (MiB/s workloads, ms) or per I/O (the others, µs), by process, over the middle of the run. */
  readonly cpu?: CpuUse;
}

/**
 * fio --output-format=terse (version 3), lines starting with `3;`. 1-based fields:
 * 7 read KiB/s, 8 read IOPS, 48 write KiB/s, 49 write IOPS, 81 write total latency mean (µs),
 * 59..78 write latency percentiles as `P%=µs` (of the total latency: fio runs with --lat_percentiles=1).
 */
function parseTerse(out: string, w: Workload): Result {
  const line = out.split('\n').find((l) => l.startsWith('3;'));
  if (line === undefined) throw new Error(`fio printed no terse line:\n${out}`);
  const f = line.split(';');
  const n = (i: number): number => Number(f[i - 1]);
  if (n(5) !== 0) throw new Error(`fio reported error ${n(5)}`);
  const iops = w.key === 'randread' ? n(8) : n(49);
  switch (w.metric) {
    case 'MiB/s':
      return { value: n(48) / 1024, iops };
    case 'IOPS':
      return { value: iops, iops };
    case 'lat µs': {
      const p99 = f.slice(58, 78).find((x) => x.startsWith('99.000000%='));
      return { value: n(81), iops, ...(p99 ? { p99: Number(p99.split('=')[1]) } : {}) };
    }
  }
}

/**
 * Writes back the backing files' dirty pages before a run, so that every run starts from
 * the same page cache state: otherwise the kernel's periodic writeback of the previous
 * runs' data lands inside some runs and not others (StandAlone 1 MiB writes measured
 * anywhere from 2,269 to 3,704 MiB/s between runs without this).
 */
let settleFiles: string[] = [];
async function settle(): Promise<void> {
  for (const f of settleFiles) {
    const h = await open(f, 'r+');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
  }
}

/**
 * CPU time per unit of work, per process and for the whole machine, over the middle of a run:
 * ms per MiB for the MiB/s workloads, µs per I/O for the others.
 */
type CpuUse = Record<string, number>;
const cpuUnit = (w: Workload): string => (w.metric === 'MiB/s' ? 'ms/MiB' : 'µs/IO');

/**
 * Where each process runs during a fio run (--pin, the default on 2+ CPUs), so that a ratio
 * compares like with like: the scheduler otherwise moves fio and the servers between the cores
 * from run to run, and on this VM a wake-up across cores costs ~40 µs more than one on the
 * same core (a Python TCP ping-pong on loopback: 16 µs round trip on one core, 62 across two).
 *   QD1 latency: fio, the server (nbdkit or the Primary) and the Secondary all on CPU 0: the
 *     software's own cost, without the cross-core wake-ups (docs/design/2026-12-07-latency.md).
 *   Throughput: the server (nbdkit, StandAlone or Primary engine) on CPU 0, fio and the
 *     Secondary on CPU 1: the application and the server apart, the Secondary beside fio.
 * Roles are the keys of fio()'s `procs`: engine, nbdkit, primary (CPU 0), secondary.
 */
const PIN = !args['no-pin'] && availableParallelism() >= 2;
function cpuFor(w: Workload, role: 'fio' | string): number {
  if (w.metric === 'lat µs') return 0;
  return role === 'fio' || role === 'secondary' ? 1 : 0;
}
function placementText(w: Workload): string {
  if (!PIN) return 'not pinned (--no-pin or one CPU)';
  return w.metric === 'lat µs'
    ? 'fio, server and Secondary on CPU 0'
    : 'server/Primary on CPU 0; fio and Secondary on CPU 1';
}
async function pin(pid: number, cpu: string): Promise<void> {
  // -a: every thread (libuv's pool, V8's workers, nbdkit's threads); threads made later inherit it.
  await run('taskset', ['-a', '-p', '-c', cpu, String(pid)]);
}

/** utime + stime of a process (all its threads) and of its running children (fio forks its jobs), in clock ticks. */
async function cpuTicks(pid: number): Promise<number> {
  let total = 0;
  for (const entry of await readdir('/proc')) {
    if (!/^\d+$/.test(entry)) continue;
    const stat = await readFile(`/proc/${entry}/stat`, 'utf8').catch(() => undefined);
    if (stat === undefined) continue; // gone meanwhile
    const t = parseProcStat(stat);
    if (Number(entry) === pid || t.ppid === pid) total += t.user + t.system;
  }
  return total;
}

/** Busy clock ticks of the whole machine (user, nice, system, irq, softirq). */
async function machineTicks(): Promise<number> {
  const f = (await readFile('/proc/stat', 'utf8')).split('\n')[0]!.trim().split(/\s+/).map(Number);
  return f[1]! + f[2]! + f[3]! + f[6]! + f[7]!;
}

async function fio(uri: string, w: Workload, extra: string[] = [], procs?: Record<string, number>): Promise<Result> {
  await settle();
  const pinned = PIN && procs !== undefined && !extra.some((x) => x.startsWith('--cpus_allowed'));
  if (pinned) for (const [role, pid] of Object.entries(procs)) await pin(pid, String(cpuFor(w, role)));
  const a = [
    `--name=${w.key}`,
    '--ioengine=nbd',
    `--uri=${uri}`,
    ...w.fio,
    ...extra,
    ...(pinned ? [`--cpus_allowed=${cpuFor(w, 'fio')}`] : []),
    `--runtime=${SECONDS}`,
    '--time_based',
    '--ramp_time=1',
    `--size=${SIZE_MIB}M`,
    '--randrepeat=0',
    '--norandommap',
    // Percentiles of the total latency (submission + completion), the quantity of the mean
    // (field 81); without it the terse percentiles are of the completion part alone, which
    // for the nbd engine leaves out the 6-14 µs of submission (nbdkit's p99 read 8 µs
    // against a 49.7 µs mean).
    '--lat_percentiles=1',
    '--output-format=terse',
  ];
  const pending = run('fio', a, { timeout: (SECONDS + 60) * 1000, maxBuffer: 16 * 1024 * 1024 });
  let sampled: { ms: number; ticks: Record<string, number> } | undefined;
  if (procs && SECONDS >= 2) {
    // Sample from 1.5 s (after the ramp) to 0.5 s before the end: the steady state only.
    const pids: Record<string, number> = { ...procs, ...(pending.child.pid ? { fio: pending.child.pid } : {}) };
    const take = async (): Promise<Record<string, number>> => {
      const t: Record<string, number> = { machine: await machineTicks() };
      for (const [name, pid] of Object.entries(pids)) t[name] = await cpuTicks(pid);
      return t;
    };
    await sleep(1500);
    const t0 = Date.now();
    const before = await take();
    await sleep((SECONDS - 1) * 1000);
    const after = await take();
    sampled = {
      ms: Date.now() - t0,
      ticks: Object.fromEntries(Object.keys(before).map((k) => [k, after[k]! - before[k]!])),
    };
  }
  const { stdout } = await pending.finally(async () => {
    if (pinned)
      for (const pid of Object.values(procs)) await pin(pid, `0-${availableParallelism() - 1}`).catch(() => {});
  });
  const r = parseTerse(stdout, w);
  if (!sampled) return r;
  const secs = sampled.ms / 1000;
  const msPerTick = 1000 / 100; // USER_HZ is 100 on Linux
  // Per MiB (ms), or per I/O (µs).
  const units = w.metric === 'MiB/s' ? r.value * secs : ((r.iops ?? 0) * secs) / 1000;
  return { ...r, cpu: Object.fromEntries(Object.entries(sampled.ticks).map(([k, t]) => [k, (t * msPerTick) / units])) };
}

const fmtCpu = (c: CpuUse | undefined): string =>
  c === undefined
    ? 'not measured'
    : Object.entries(c)
        .map(([k, v]) => `${k} ${v >= 10 ? v.toFixed(0) : v.toFixed(2)}`)
        .join(', ');

/** The CPU line of a table: per workload, its best run's CPU use by process. */
function cpuLines(best: Map<string, Result>, label = ''): string {
  return WORKLOADS.filter((w) => best.get(w.key)?.cpu)
    .map((w) => `  CPU${label} ${cpuUnit(w)}, ${w.key} (best run): ${fmtCpu(best.get(w.key)!.cpu)}`)
    .join('\n');
}

/** Every run's figure, per table and workload key, printed next to the best one. */
const allRuns = new Map<string, number[]>();
/** The same runs whole, per table and workload, for --json. */
const allResults = new Map<string, { table: string; w: Workload; runs: Result[] }>();
function record(table: string, w: Workload, r: Result): Result {
  const k = `${table}/${w.key}`;
  allRuns.set(k, [...(allRuns.get(k) ?? []), r.value]);
  const e = allResults.get(k) ?? { table, w, runs: [] };
  e.runs.push(r);
  allResults.set(k, e);
  return r;
}

/** --json: what ran where, and every run. */
function jsonReport(meta: Record<string, unknown>): string {
  const tables: Record<string, Record<string, unknown>> = {};
  for (const { table, w, runs } of allResults.values()) {
    tables[table] ??= {};
    tables[table][w.key] = {
      title: w.title,
      unit: w.metric,
      better: w.metric === 'lat µs' ? 'lower' : 'higher',
      best: runs.reduce<Result | undefined>((a, b) => best(w, a, b), undefined),
      runs,
    };
  }
  return `${JSON.stringify({ ...meta, tables }, null, 2)}\n`;
}
const runsOf = (table: string, w: Workload): string => (allRuns.get(`${table}/${w.key}`) ?? []).map(fmt).join(', ');

/** The better of two results of one workload. */
function best(w: Workload, a: Result | undefined, b: Result): Result {
  if (a === undefined) return b;
  return (w.metric === 'lat µs' ? b.value < a.value : b.value > a.value) ? b : a;
}

/** Higher is better for every ratio printed: latency ratios are inverted (a/b of speed). */
function ratio(w: Workload, mine: Result, base: Result): number {
  return w.metric === 'lat µs' ? base.value / mine.value : mine.value / base.value;
}

const fmt = (v: number): string => (v >= 100 ? Math.round(v).toLocaleString('en-US') : v.toFixed(1));
const pad = (s: string, n: number): string => s.padEnd(n);
const lpad = (s: string, n: number): string => s.padStart(n);

async function startNbdkit(file: string, sock: string): Promise<ChildProcess> {
  const child = spawn('nbdkit', ['--foreground', '--exit-with-parent', '-U', sock, 'file', `file=${file}`], {
    stdio: ['ignore', 'ignore', 'inherit'],
  });
  for (let i = 0; i < 100; i++) {
    try {
      await run('nbdinfo', ['--size', `nbd+unix:///?socket=${sock}`]);
      return child;
    } catch {
      await new Promise((r) => setTimeout(r, 50));
    }
  }
  throw new Error('nbdkit did not start');
}

async function engineUp(pair: Pair, n: 'master' | 'backup', env: NodeJS.ProcessEnv): Promise<void> {
  // tandemadm up spawns the engine with this process's environment (UV_*, NODE_OPTIONS).
  const saved = { ...process.env };
  Object.assign(process.env, env);
  try {
    await pair.ok(n, 'up', 'mysql');
  } finally {
    for (const k of Object.keys(env))
      if (saved[k] === undefined) delete process.env[k];
      else process.env[k] = saved[k];
  }
}

/** Each engine's peak resident set (VmHWM) so far, and its own (anonymous) memory now. */
async function peakRss(pair: Pair): Promise<string> {
  const out: string[] = [];
  for (const n of ['master', 'backup'] as const) {
    const pid = await pair.pid(n).catch(() => undefined);
    if (pid === undefined) continue; // --only standalone: no Secondary
    const status = pid === undefined ? '' : await readFile(`/proc/${pid}/status`, 'utf8').catch(() => '');
    const kib = (k: string) => Number(new RegExp(`^${k}:\\s+(\\d+) kB`, 'm').exec(status)?.[1] ?? Number.NaN);
    out.push(
      `${n} ${Math.round(kib('VmHWM') / 1024)} MiB (now: RSS ${Math.round(kib('VmRSS') / 1024)}, anon ${Math.round(kib('RssAnon') / 1024)})`,
    );
  }
  return out.join(', ');
}

async function standalonePrimary(pair: Pair, env: NodeJS.ProcessEnv): Promise<void> {
  await engineUp(pair, 'master', env);
  await pair.ok('master', 'disconnect', 'mysql');
  await pair.ok('master', '--', '--force', 'primary', 'mysql');
}

function envOf(list: string[]): NodeJS.ProcessEnv {
  const env: NodeJS.ProcessEnv = {};
  for (const kv of list) {
    const i = kv.indexOf('=');
    if (i <= 0) throw new Error(`--env wants KEY=VALUE, got ${kv}`);
    env[kv.slice(0, i)] = kv.slice(i + 1);
  }
  return env;
}

/**
 * The StandAlone 1 MiB write depends on where the scheduler puts fio: on the core of the
 * engine's event loop, the data fio wrote into the socket is still in that core's cache when
 * the engine reads it. Measured once each way (best of 2), engine's main thread pinned to CPU 0
 * and fio to CPU 0 or CPU 1, then unpinned.
 */
async function placement(pair: Pair): Promise<{ same: number; other: number } | undefined> {
  const cpus = availableParallelism();
  if (cpus < 2) {
    console.log('placement: one CPU, fio and the engine always share it (not measured)\n');
    return undefined;
  }
  const w = ALL_WORKLOADS.find((x) => x.key === 'seqwrite')!;
  const pid = await pair.pid('master');
  const pinned = async (fioCpu: number): Promise<number> => {
    let b: Result | undefined;
    for (let i = 0; i < 2; i++) b = best(w, b, await fio(pair.nbdUri('master'), w, [`--cpus_allowed=${fioCpu}`]));
    return b!.value;
  };
  await run('taskset', ['-p', '-c', '0', String(pid)]);
  try {
    const same = await pinned(0);
    const other = await pinned(1);
    console.log(
      `StandAlone 1 MiB seq write QD8 by placement (engine's event loop on CPU 0): fio on CPU 0 ${fmt(same)} MiB/s, on CPU 1 ${fmt(other)} MiB/s\n`,
    );
    return { same, other };
  } finally {
    await run('taskset', ['-p', '-c', `0-${cpus - 1}`, String(pid)]);
  }
}

/** A Connected pair running another revision's engine, in a temporary worktree of this repository. */
async function comparePair(rev: string): Promise<{ pair: Pair; label: string; cleanup: () => Promise<void> }> {
  const root = new URL('..', import.meta.url).pathname;
  const label = (await run('git', ['-C', root, 'rev-parse', '--short', rev])).stdout.trim();
  const wt = join(await mkdtemp(join(tmpdir(), 'tandem-bench-')), label);
  await run('git', ['-C', root, 'worktree', 'add', '--detach', wt, rev]);
  await symlink(join(root, 'node_modules'), join(wt, 'node_modules'));
  const pair = await Pair.create({
    protocol: 'C',
    masterMiB: SIZE_MIB,
    backupMiB: SIZE_MIB,
    tandemadm: join(wt, 'bin/tandemadm.js'),
  });
  await run(
    'fio',
    [
      '--name=fill',
      `--filename=${pair.disk('master')}`,
      '--rw=write',
      '--bs=1M',
      `--size=${SIZE_MIB}M`,
      '--ioengine=psync',
    ],
    { timeout: 120_000 },
  );
  await pair.startBlank();
  await pair.ok('master', 'primary', 'mysql');
  settleFiles.push(pair.disk('master'), pair.disk('backup'));
  return {
    pair,
    label,
    cleanup: async () => {
      for (const n of ['master', 'backup'] as const) await pair.adm(n, 'down', 'mysql');
      await pair.destroy();
      await run('git', ['-C', root, 'worktree', 'remove', '--force', wt]);
    },
  };
}

/** A Connected pair of this tree whose peer link runs over TLS 1.3 (certificates made for it). */
async function tlsPair(): Promise<{ pair: Pair; cleanup: () => Promise<void> }> {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-bench-tls-'));
  const c = await makeCerts(dir, ['master', 'backup']);
  const net = (n: 'master' | 'backup'): string =>
    `tls yes; tls-ca ${c.ca}; tls-cert ${c.cert(n)}; tls-key ${c.key(n)};`;
  const pair = await Pair.create({
    protocol: 'C',
    masterMiB: SIZE_MIB,
    backupMiB: SIZE_MIB,
    perNodeNet: { master: net('master'), backup: net('backup') },
  });
  await run(
    'fio',
    [
      '--name=fill',
      `--filename=${pair.disk('master')}`,
      '--rw=write',
      '--bs=1M',
      `--size=${SIZE_MIB}M`,
      '--ioengine=psync',
    ],
    { timeout: 120_000 },
  );
  await pair.startBlank();
  await pair.ok('master', 'primary', 'mysql');
  settleFiles.push(pair.disk('master'), pair.disk('backup'));
  return {
    pair,
    cleanup: async () => {
      for (const n of ['master', 'backup'] as const) await pair.adm(n, 'down', 'mysql');
      await pair.destroy();
      await run('rm', ['-rf', dir]);
    },
  };
}

async function main(): Promise<void> {
  const baseEnv = envOf(args.env);
  if (args.prof) {
    await mkdir(args.prof, { recursive: true });
    baseEnv.NODE_OPTIONS = `${process.env.NODE_OPTIONS ?? ''} --cpu-prof --cpu-prof-dir=${args.prof}`.trim();
  }
  const pair = await Pair.create({ protocol: 'C', masterMiB: SIZE_MIB, backupMiB: SIZE_MIB });
  let nbdkit: ChildProcess | undefined;
  try {
    const nbdkitSock = join(pair.dir, 'nbdkit.sock');
    const nbdkitUri = `nbd+unix:///?socket=${nbdkitSock}`;
    const nbdkitVersion = (await run('nbdkit', ['--version'])).stdout.trim();
    const fioVersion = (await run('fio', ['--version'])).stdout.trim();
    const tandemVersion = (
      JSON.parse(await readFile(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }
    ).version;
    const gitRev = (await run('git', ['rev-parse', '--short', 'HEAD']).catch(() => ({ stdout: '?' }))).stdout.trim();
    console.log(`tandem ${tandemVersion} (git ${gitRev}) on Node ${process.version}; ${nbdkitVersion}; ${fioVersion}`);
    console.log(
      `backing: ${pair.disk('master')} (${SIZE_MIB} MiB file), peer backing ${pair.disk('backup')}; ${SECONDS} s per workload after 1 s ramp, best of ${REPEAT}`,
    );
    console.log(
      `tandem engine env: ${Object.entries({
        UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16 (tandemadm default)',
        ...baseEnv,
      })
        .map(([k, v]) => `${k}=${v}`)
        .join(' ')}`,
    );
    console.log(`nbdkit:  nbdkit --foreground -U ${nbdkitSock} file file=${pair.disk('master')}`);
    console.log(
      `tandem:  tandemadm -c ${pair.configPath('master')} --node master up mysql; disconnect; -- --force primary  → ${pair.nbdUri('master')}`,
    );
    console.log(
      `fio:     fio --ioengine=nbd --uri=URI --rw=… --bs=… --iodepth=… --runtime=${SECONDS} --time_based --ramp_time=1 --size=${SIZE_MIB}M --norandommap --output-format=terse\n`,
    );

    for (const n of ['master', 'backup'] as const) await pair.ok(n, 'create-md', 'mysql');
    settleFiles = [pair.disk('master'), pair.disk('backup')];
    // Fill the file once so that reads read data, not holes, for both servers.
    await run(
      'fio',
      [
        '--name=fill',
        `--filename=${pair.disk('master')}`,
        '--rw=write',
        '--bs=1M',
        `--size=${SIZE_MIB}M`,
        '--ioengine=psync',
        '--end_fsync=1',
      ],
      { timeout: 120_000 },
    );
    nbdkit = await startNbdkit(pair.disk('master'), nbdkitSock);
    await standalonePrimary(pair, baseEnv);

    const nbdkitRes = new Map<string, Result>();
    const alone = new Map<string, Result>();
    if (args.only !== 'connected') {
      for (const w of WORKLOADS) {
        // Alternate the two servers per workload so drift (page cache, other load on the
        // machine) hits both alike; keep the best of REPEAT runs of each.
        for (let i = 0; i < REPEAT; i++) {
          nbdkitRes.set(
            w.key,
            best(w, nbdkitRes.get(w.key), record('nbdkit', w, await fio(nbdkitUri, w, [], { nbdkit: nbdkit!.pid! }))),
          );
          alone.set(
            w.key,
            best(
              w,
              alone.get(w.key),
              record('alone', w, await fio(pair.nbdUri('master'), w, [], { engine: await pair.pid('master') })),
            ),
          );
        }
        process.stderr.write(
          `  ${w.key}: nbdkit ${fmt(nbdkitRes.get(w.key)!.value)}, tandem ${fmt(alone.get(w.key)!.value)} ${w.metric}\n`,
        );
      }
      console.log(
        'StandAlone Primary vs nbdkit file (ratio tandem/nbdkit; for latency nbdkit/tandem, so ≥ 1.0 is as good):',
      );
      console.log(`  ${pad('workload', 30)}${lpad('nbdkit', 12)}${lpad('tandem', 12)}${lpad('ratio', 8)}   unit`);
      for (const w of WORKLOADS) {
        const a = nbdkitRes.get(w.key)!;
        const b = alone.get(w.key)!;
        const extra = w.metric === 'lat µs' ? `   (p99 ${a.p99 ?? '?'} / ${b.p99 ?? '?'} µs)` : '';
        console.log(
          `  ${pad(w.title, 30)}${lpad(fmt(a.value), 12)}${lpad(fmt(b.value), 12)}${lpad(ratio(w, b, a).toFixed(2), 8)}   ${w.metric}${extra}`,
        );
      }
      console.log(
        `  every run: ${WORKLOADS.map((w) => `${w.key} nbdkit ${runsOf('nbdkit', w)}; tandem ${runsOf('alone', w)}`).join(' | ')}`,
      );
      console.log(cpuLines(nbdkitRes, ' (nbdkit runs)'));
      console.log(cpuLines(alone, ' (tandem runs)'));
      console.log(`  placement: ${[...new Set(WORKLOADS.map(placementText))].join('; ')} (by workload kind)`);
      console.log('');
    }
    nbdkit.kill();
    const placed =
      WORKLOADS.some((w) => w.key === 'seqwrite') && args.only !== 'connected' ? await placement(pair) : undefined;
    nbdkit = undefined;

    if (args.matrix) {
      const variants: NodeJS.ProcessEnv[] = [
        { UV_THREADPOOL_SIZE: '4' },
        { UV_THREADPOOL_SIZE: '16' },
        { UV_THREADPOOL_SIZE: '64' },
        { UV_THREADPOOL_SIZE: '4', UV_USE_IO_URING: '1' },
        { UV_THREADPOOL_SIZE: '16', UV_USE_IO_URING: '1' },
      ];
      console.log('StandAlone tandem under libuv settings:');
      console.log(`  ${pad('env', 42)}${WORKLOADS.map((w) => lpad(w.key, 11)).join('')}`);
      for (const v of variants) {
        await pair.ok('master', 'down', 'mysql');
        await engineUp(pair, 'master', { ...baseEnv, ...v });
        await pair.ok('master', 'disconnect', 'mysql');
        await pair.ok('master', 'primary', 'mysql');
        const row: string[] = [];
        for (const w of WORKLOADS) row.push(lpad(fmt((await fio(pair.nbdUri('master'), w)).value), 11));
        console.log(
          `  ${pad(
            Object.entries(v)
              .map(([k, x]) => `${k}=${x}`)
              .join(' '),
            42,
          )}${row.join('')}`,
        );
      }
      console.log('');
    }

    if (args.only !== 'standalone') {
      const t0 = Date.now();
      await engineUp(pair, 'backup', baseEnv);
      await pair.ok('master', 'connect', 'mysql');
      await pair.waitInSync(300_000);
      process.stderr.write(`  resync of ${SIZE_MIB} MiB took ${((Date.now() - t0) / 1000).toFixed(1)} s\n`);
      const conn = new Map<string, Result>();
      const other = new Map<string, Result>();
      const secure = new Map<string, Result>();
      const cmp = args.compare ? await comparePair(args.compare) : undefined;
      const tp = args['skip-tls'] ? undefined : await tlsPair();
      try {
        for (const w of WORKLOADS) {
          const pids = { primary: await pair.pid('master'), secondary: await pair.pid('backup') };
          const cmpPids = cmp && { primary: await cmp.pair.pid('master'), secondary: await cmp.pair.pid('backup') };
          const tlsPids = tp && { primary: await tp.pair.pid('master'), secondary: await tp.pair.pid('backup') };
          for (let i = 0; i < REPEAT; i++) {
            conn.set(w.key, best(w, conn.get(w.key), record('conn', w, await fio(pair.nbdUri('master'), w, [], pids))));
            if (cmp)
              other.set(
                w.key,
                best(w, other.get(w.key), record('other', w, await fio(cmp.pair.nbdUri('master'), w, [], cmpPids))),
              );
            if (tp)
              secure.set(
                w.key,
                best(w, secure.get(w.key), record('tls', w, await fio(tp.pair.nbdUri('master'), w, [], tlsPids))),
              );
          }
          process.stderr.write(
            `  ${w.key}: connected ${fmt(conn.get(w.key)!.value)}${cmp ? `, ${cmp.label} ${fmt(other.get(w.key)!.value)}` : ''}${tp ? `, TLS ${fmt(secure.get(w.key)!.value)}` : ''} ${w.metric}\n`,
          );
        }
      } finally {
        if (cmp) console.log(`Engine peak RSS (VmHWM) of git ${cmp.label}'s pair: ${await peakRss(cmp.pair)}`);
        if (tp) console.log(`Engine peak RSS (VmHWM) of the TLS pair: ${await peakRss(tp.pair)}`);
        await cmp?.cleanup();
        await tp?.cleanup();
      }
      if (tp) {
        console.log('Connected protocol C pair, peer link over TLS 1.3 vs plain TCP (same run, runs alternating):');
        console.log(`  ${pad('workload', 30)}${lpad('plain', 12)}${lpad('TLS', 12)}${lpad('TLS/plain', 11)}   unit`);
        for (const w of WORKLOADS) {
          const a = conn.get(w.key)!;
          const b = secure.get(w.key)!;
          const extra = w.metric === 'lat µs' ? `   (+${(b.value - a.value).toFixed(0)} µs; ratio of speeds)` : '';
          console.log(
            `  ${pad(w.title, 30)}${lpad(fmt(a.value), 12)}${lpad(fmt(b.value), 12)}${lpad(ratio(w, b, a).toFixed(2), 11)}   ${w.metric}${extra}`,
          );
        }
        console.log(
          `  every run: ${WORKLOADS.map((w) => `${w.key} plain ${runsOf('conn', w)}; TLS ${runsOf('tls', w)}`).join(' | ')}`,
        );
        console.log(cpuLines(conn, ' (plain)'));
        console.log(cpuLines(secure, ' (TLS)'));
        console.log('');
      }
      if (cmp) {
        console.log(
          `Connected protocol C pair, this tree (${gitRev}) vs git ${cmp.label} (same run, runs alternating):`,
        );
        console.log(`  ${pad('workload', 30)}${lpad(cmp.label, 12)}${lpad(gitRev, 12)}${lpad('ratio', 8)}   unit`);
        for (const w of WORKLOADS) {
          const a = other.get(w.key)!;
          const b = conn.get(w.key)!;
          const extra = w.metric === 'lat µs' ? `   (p99 ${a.p99 ?? '?'} / ${b.p99 ?? '?'} µs)` : '';
          console.log(
            `  ${pad(w.title, 30)}${lpad(fmt(a.value), 12)}${lpad(fmt(b.value), 12)}${lpad(ratio(w, b, a).toFixed(2), 8)}   ${w.metric}${extra}`,
          );
        }
        console.log(
          `  every run: ${WORKLOADS.map((w) => `${w.key} ${cmp.label} ${runsOf('other', w)}; ${gitRev} ${runsOf('conn', w)}`).join(' | ')}`,
        );
        console.log(cpuLines(other, ` (${cmp.label})`));
        console.log(cpuLines(conn, ` (${gitRev})`));
        console.log('');
      }
      console.log(
        'Connected protocol C pair (peer on 127.0.0.3, same disk) vs StandAlone (ratio; latency as nbdkit-style speed ratio and delta):',
      );
      console.log(
        `  ${pad('workload', 30)}${lpad('StandAlone', 12)}${lpad('Connected', 12)}${lpad('ratio', 8)}   unit`,
      );
      for (const w of WORKLOADS) {
        const a = alone.get(w.key);
        const b = conn.get(w.key)!;
        if (a === undefined) {
          // --only connected: nothing to compare with.
          console.log(`  ${pad(w.title, 30)}${lpad('-', 12)}${lpad(fmt(b.value), 12)}${lpad('-', 8)}   ${w.metric}`);
          continue;
        }
        const extra =
          w.metric === 'lat µs'
            ? `   (+${(b.value - a.value).toFixed(0)} µs; p99 ${a.p99 ?? '?'} / ${b.p99 ?? '?'} µs)`
            : '';
        console.log(
          `  ${pad(w.title, 30)}${lpad(fmt(a.value), 12)}${lpad(fmt(b.value), 12)}${lpad(ratio(w, b, a).toFixed(2), 8)}   ${w.metric}${extra}`,
        );
      }
      console.log(`  every run: ${WORKLOADS.map((w) => `${w.key} ${runsOf('conn', w)}`).join(' | ')}`);
      console.log(cpuLines(conn, ' (Connected)'));
      // The CPU goal: both nodes' engines together against the StandAlone engine, per unit of work.
      for (const w of WORKLOADS) {
        const a = alone.get(w.key)?.cpu;
        const b = conn.get(w.key)?.cpu;
        if (a?.engine === undefined || b?.primary === undefined || b.secondary === undefined) continue;
        console.log(
          `  CPU of both engines against the StandAlone engine, ${w.key}: (${fmtCpu({ primary: b.primary })} + ${fmtCpu({ secondary: b.secondary })}) / ${fmtCpu({ engine: a.engine })} = ${((b.primary + b.secondary) / a.engine).toFixed(2)}×`,
        );
      }
      console.log(`  placement: ${[...new Set(WORKLOADS.map(placementText))].join('; ')} (by workload kind)`);
      const seq = conn.get('seqwrite');
      if (placed && seq) {
        console.log(
          `  1 MiB seq write against the StandAlone figure by placement: ${(seq.value / placed.same).toFixed(2)} (fio on the engine's core), ${(seq.value / placed.other).toFixed(2)} (fio on the other core)`,
        );
      }
    }
    // Memory: each engine's peak resident set over the whole run (payload pools included).
    const rss = await peakRss(pair);
    console.log(`\nEngine peak RSS (VmHWM): ${rss}`);
    if (args.json) {
      await writeFile(
        args.json,
        jsonReport({
          at: new Date().toISOString(),
          tandem: tandemVersion,
          git: gitRev,
          node: process.version,
          nbdkit: nbdkitVersion,
          fio: fioVersion,
          cpus: availableParallelism(),
          seconds: SECONDS,
          repeat: REPEAT,
          sizeMiB: SIZE_MIB,
          peakRss: rss,
        }),
      );
      console.log(`Wrote ${args.json}`);
    }
    for (const n of ['master', 'backup'] as const) await pair.adm(n, 'down', 'mysql');
  } finally {
    nbdkit?.kill();
    await pair.destroy();
  }
}

await main();
