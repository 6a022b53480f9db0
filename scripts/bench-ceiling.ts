// What a Connected pair could reach on this machine at best, with tandem's design but none of
// its logic: `npm run bench:ceiling`. The 1 MiB sequential write QD8 of `npm run bench`, against
// scripts/ceiling/: tandem's NBD server in front of a file, mirroring every write to a Secondary
// that writes it to its own file and acknowledges it (protocol C), with no state machine, bitmap,
// activity log or checks. Three variants, run in turns, best of --repeat each:
//   alone   no Secondary (the StandAlone figure of this run)
//   main    the peer socket on the event loop, as tandem does
//   worker  the peer socket in a worker thread, payloads shared with it (SharedArrayBuffer)
// If `main` stays well below half of `alone`, so does any design that copies the data through
// one Node event loop per node on these two cores; if `worker` is not faster than `main`,
// a second thread does not help here.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { mkdtemp, open, rm } from 'node:fs/promises';
import net from 'node:net';
import { join } from 'node:path';
import { parseArgs, promisify } from 'node:util';

const run = promisify(execFile);
const { values: args } = parseArgs({
  options: { repeat: { type: 'string', default: '3' }, seconds: { type: 'string', default: '4' } },
});
const REPEAT = Number(args.repeat);
const SECONDS = Number(args.seconds);
const SIZE_MIB = 1024;
const MODES = ['alone', 'main', 'worker'] as const;
type Mode = (typeof MODES)[number];
const here = new URL('./ceiling/', import.meta.url).pathname;

function started(child: ChildProcess, what: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (c: Buffer) => {
      out += c.toString();
      if (out.includes('ready')) resolve();
    });
    child.stderr!.on('data', (c: Buffer) => process.stderr.write(`[${what}] ${c.toString()}`));
    child.once('exit', (code) => reject(new Error(`${what} exited with code ${code} before it was ready`)));
  });
}

async function freePort(): Promise<number> {
  const s = net.createServer();
  await new Promise<void>((r) => s.listen(0, '127.0.0.3', r));
  const port = (s.address() as net.AddressInfo).port;
  await new Promise<void>((r) => s.close(() => r()));
  return port;
}

async function stop(child: ChildProcess | undefined): Promise<void> {
  if (!child || child.exitCode !== null) return;
  const exited = new Promise((r) => child.once('exit', r));
  child.kill('SIGKILL');
  await exited;
}

async function settle(files: string[]): Promise<void> {
  for (const f of files) {
    const h = await open(f, 'r+');
    try {
      await h.sync();
    } finally {
      await h.close();
    }
  }
}

async function once(dir: string, mode: Mode): Promise<number> {
  const port = await freePort();
  const sock = join(dir, `${mode}.sock`);
  let secondary: ChildProcess | undefined;
  let primary: ChildProcess | undefined;
  try {
    if (mode !== 'alone') {
      secondary = spawn(process.execPath, [join(here, 'secondary.ts'), join(dir, 'secondary.img'), String(port)], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      await started(secondary, 'secondary');
    }
    primary = spawn(process.execPath, [join(here, 'primary.ts'), join(dir, 'primary.img'), sock, String(port)], {
      stdio: ['ignore', 'pipe', 'pipe'],
      env: { ...process.env, MODE: mode, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' },
    });
    await started(primary, 'primary');
    await settle([join(dir, 'primary.img'), join(dir, 'secondary.img')]);
    const { stdout } = await run(
      'fio',
      [
        '--name=seqwrite',
        '--ioengine=nbd',
        `--uri=nbd+unix:///?socket=${sock}`,
        '--rw=write',
        '--bs=1M',
        '--iodepth=8',
        `--runtime=${SECONDS}`,
        '--time_based',
        '--ramp_time=1',
        `--size=${SIZE_MIB}M`,
        '--norandommap',
        '--output-format=terse',
      ],
      { timeout: (SECONDS + 60) * 1000 },
    );
    // terse v3: field 48 is the write bandwidth in KiB/s
    const fields = stdout.trim().split('\n').at(-1)!.split(';');
    const kib = Number(fields[47]);
    if (!Number.isFinite(kib) || kib <= 0) throw new Error(`fio printed no write bandwidth: ${stdout}`);
    return kib / 1024;
  } finally {
    await stop(primary);
    await stop(secondary);
  }
}

const dir = await mkdtemp('/tmp/tandem-ceiling-');
try {
  const fioVersion = (await run('fio', ['--version'])).stdout.trim();
  console.log(
    `bench:ceiling on Node ${process.version}, ${fioVersion}; 1 MiB sequential write QD8, ${SECONDS} s after 1 s ramp, best of ${REPEAT}`,
  );
  for (const f of ['primary.img', 'secondary.img']) {
    await run(
      'fio',
      [
        '--name=fill',
        `--filename=${join(dir, f)}`,
        '--rw=write',
        '--bs=1M',
        `--size=${SIZE_MIB}M`,
        '--ioengine=psync',
        '--end_fsync=1',
      ],
      { timeout: 120_000 },
    );
  }
  const runs = new Map<Mode, number[]>(MODES.map((m) => [m, []]));
  for (let i = 0; i < REPEAT; i++) {
    for (const m of MODES) {
      const v = await once(dir, m);
      runs.get(m)!.push(v);
      process.stderr.write(`  ${m}: ${Math.round(v)} MiB/s\n`);
    }
  }
  const best = (m: Mode): number => Math.max(...runs.get(m)!);
  const alone = best('alone');
  console.log(`  ${'variant'.padEnd(42)}${'best'.padStart(8)}${'ratio'.padStart(8)}   runs (MiB/s)`);
  const titles: Record<Mode, string> = {
    alone: 'alone (no Secondary)',
    main: 'Connected, peer socket on the event loop',
    worker: 'Connected, peer socket in a worker thread',
  };
  for (const m of MODES) {
    console.log(
      `  ${titles[m].padEnd(42)}${String(Math.round(best(m))).padStart(8)}${(best(m) / alone).toFixed(2).padStart(8)}   ${runs
        .get(m)!
        .map((v) => Math.round(v))
        .join(', ')}`,
    );
  }
} finally {
  await rm(dir, { recursive: true, force: true });
}
