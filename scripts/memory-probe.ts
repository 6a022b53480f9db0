// Probe: one Connected pair (256 MiB file disks), fio's nbd engine against the Primary, the
// engines' memory after each step: VmRSS/VmHWM/RssAnon, the `memory` control command, and
// the Primary's anonymous mappings from smaps grouped by size.
//   node scripts/memory-probe.ts [--seconds 8] [--steps randwrite,seqwrite,randwrite] [--snapshot]
import { execFile } from 'node:child_process';
import { readFile } from 'node:fs/promises';
import { setTimeout as sleep } from 'node:timers/promises';
import { parseArgs, promisify } from 'node:util';
import { join } from 'node:path';
import { callControl } from '../src/cli/control.ts';
import { Pair } from '../test/integration/support/pair.ts';

const run = promisify(execFile);
const { values: opts } = parseArgs({
  options: {
    seconds: { type: 'string', default: '8' },
    steps: { type: 'string', default: 'randwrite' },
    snapshot: { type: 'boolean', default: false },
  },
});
const FIO: Record<string, string[]> = {
  seqwrite: ['--rw=write', '--bs=1M', '--iodepth=8'],
  randwrite: ['--rw=randwrite', '--bs=4k', '--iodepth=32'],
  randread: ['--rw=randread', '--bs=4k', '--iodepth=32'],
};
const MiB = (kib: number) => (kib / 1024).toFixed(1);
async function proc(pid: number): Promise<string> {
  const s = await readFile(`/proc/${pid}/status`, 'utf8');
  const f = (n: string) => Number(new RegExp(`^${n}:\\s+(\\d+)`, 'm').exec(s)?.[1]);
  return `rss ${MiB(f('VmRSS'))} hwm ${MiB(f('VmHWM'))} anon ${MiB(f('RssAnon'))}`;
}
async function anonMaps(pid: number): Promise<string> {
  const text = await readFile(`/proc/${pid}/smaps`, 'utf8');
  const out: string[] = [];
  let head = '';
  let size = 0;
  for (const line of text.split('\n')) {
    if (/^[0-9a-f]+-[0-9a-f]+ /.test(line)) {
      head = line;
      const [a, b] = line.split(' ')[0]!.split('-');
      size = (Number.parseInt(b!, 16) - Number.parseInt(a!, 16)) / 1024;
    } else if (line.startsWith('Anonymous:')) {
      const kib = Number(line.split(/\s+/)[1]);
      if (kib >= 512)
        out.push(
          `    ${MiB(kib)} of ${MiB(size)} ${head.split(/\s+/).slice(1, 2).join(' ')} ${head.split(/\s+/)[5] ?? ''}`,
        );
    }
  }
  return out.join('\n');
}
const pair = await Pair.create({ protocol: 'C', masterMiB: 256, backupMiB: 256 });
try {
  await pair.startBlank();
  await pair.ok('master', 'primary', 'mysql');
  const pids = { primary: await pair.pid('master'), secondary: await pair.pid('backup') };
  const report = async (label: string) => {
    console.log(`after ${label}:`);
    for (const [k, pid] of Object.entries(pids)) {
      const r = await callControl(join(pair.runDir(k === 'primary' ? 'master' : 'backup'), 'mysql.ctl'), {
        cmd: 'memory',
      });
      const m = (r.ok ? r.result : {}) as Record<string, number>;
      const M = (b: number | undefined) => ((b ?? 0) / 2 ** 20).toFixed(1);
      console.log(
        `  ${k}: ${await proc(pid)} | heap ${M(m.heapUsed)}/${M(m.heapTotal)} old ${M(m['committed:old_space'])} new ${M(m['committed:new_space'])} code ${M(m['committed:code_space'])} lo ${M(m['committed:large_object_space'])} ext ${M(m.external)} ab ${M(m.arrayBuffers)} malloc ${M(m.mallocedMemory)}`,
      );
    }
    console.log(await anonMaps(pids.primary));
  };
  await sleep(2000);
  await report('idle');
  for (const step of opts.steps.split(',')) {
    const snap =
      opts.snapshot && step === 'randwrite'
        ? sleep((Number(opts.seconds) * 1000) / 2).then(() => process.kill(pids.primary, 'SIGUSR2'))
        : undefined;
    const { stdout } = await run('fio', [
      '--name=p',
      '--ioengine=nbd',
      `--uri=${pair.nbdUri('master')}`,
      ...FIO[step]!,
      '--size=256M',
      '--norandommap',
      '--randrepeat=0',
      '--time_based',
      `--runtime=${opts.seconds}`,
      '--output-format=terse',
    ]);
    const f = stdout
      .split('\n')
      .find((l) => l.startsWith('3;'))!
      .split(';');
    await snap;
    console.log(`${step}: write IOPS ${f[48]} KiB/s ${f[47]} read IOPS ${f[7]}`);
    await report(step);
  }
} finally {
  for (const n of ['master', 'backup'] as const) await pair.adm(n, 'down', 'mysql');
  await pair.destroy();
}
