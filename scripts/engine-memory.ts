// npm run bench:memory -- [N …]: the resident memory (RSS) of the engines of one node
// holding N idle volumes. For each N, N pairs of real engines are started with
// `tandemadm up` (as the engine host starts them in a pod): "master" (127.0.0.2)
// holds the N Primaries, "backup" (127.0.0.3) the N Secondaries, Connected and
// UpToDate over file-backed disks, then left idle for a few seconds before VmRSS of
// every engine process is read from /proc. Prints one line per node and N.
// Default: N = 1 and 20. The export is not attached as a block device here (a pod's
// Primary adds one nbdfuse process; test/e2e/engine-host.test.ts prints that one).
import { execFile } from 'node:child_process';
import { mkdtemp, readFile, rm, truncate, writeFile } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { promisify } from 'node:util';
import { callControl } from '../src/cli/control.ts';

const run = promisify(execFile);
const TANDEMADM = join(resolve(import.meta.dirname, '..'), 'bin/tandemadm.js');
const nodes = { master: '127.0.0.2', backup: '127.0.0.3' } as const;
type NodeName = keyof typeof nodes;

const rssKiB = async (pid: number) =>
  Number(/^VmRSS:\s+(\d+)/m.exec(await readFile(`/proc/${pid}/status`, 'utf8'))?.[1] ?? Number.NaN);

async function measure(n: number, dir: string, basePort: number): Promise<Record<NodeName, number[]>> {
  const res = (i: number) => `vol${i}`;
  const conf = (i: number) => join(dir, `${res(i)}.res`);
  const runDir = (node: NodeName) => join(dir, `run-${node}`);
  const adm = (node: NodeName, i: number, ...args: string[]) =>
    run(process.execPath, [TANDEMADM, '-c', conf(i), '--node', node, '--run-dir', runDir(node), ...args], {
      timeout: 60_000,
    });
  for (let i = 0; i < n; i++) {
    const on = (node: NodeName) => [
      `  on ${node} {`,
      `    disk ${join(dir, `${node}-${i}.img`)};`,
      `    meta-disk ${join(dir, `${node}-${i}.md`)}[0];`,
      `    address ${nodes[node]}:${basePort + i};`,
      '  }',
    ];
    const text = [
      `resource ${res(i)} {`,
      '  protocol C;',
      '  device /dev/drbd0;',
      '  net { ping-int 2; connect-int 1; }',
      ...on('master'),
      ...on('backup'),
      '}',
      '',
    ].join('\n');
    await writeFile(conf(i), text);
    for (const node of ['master', 'backup'] as const) {
      for (const [f, mib] of [
        [`${node}-${i}.img`, 64],
        [`${node}-${i}.md`, 130],
      ] as const) {
        await writeFile(join(dir, f), '');
        await truncate(join(dir, f), mib * 1024 * 1024);
      }
      await adm(node, i, 'create-md', res(i));
      await adm(node, i, 'up', res(i));
    }
  }
  for (let i = 0; i < n; i++) {
    for (let t = 0; ; t++) {
      const r = await callControl(join(runDir('master'), `${res(i)}.ctl`), { cmd: 'status' });
      if (r.ok && (r.result as { cstate: string }).cstate === 'Connected') break;
      if (t > 300) throw new Error(`${res(i)} did not connect`);
      await sleep(100);
    }
    await adm('master', i, '--', '--clear-bitmap', 'new-current-uuid', res(i));
    await adm('master', i, 'primary', res(i));
  }
  await sleep(5000);
  const out = { master: [] as number[], backup: [] as number[] };
  for (const node of ['master', 'backup'] as const)
    for (let i = 0; i < n; i++) {
      const pid = Number((await readFile(join(runDir(node), `${res(i)}.pid`), 'utf8')).trim());
      out[node].push(await rssKiB(pid));
    }
  for (const node of ['master', 'backup'] as const)
    for (let i = 0; i < n; i++) await adm(node, i, 'down', res(i)).catch(() => undefined);
  return out;
}

const counts = process.argv
  .slice(2)
  .map(Number)
  .filter((x) => x > 0);
const mib = (kib: number) => (kib / 1024).toFixed(1);
for (const n of counts.length > 0 ? counts : [1, 20]) {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-mem-'));
  try {
    const r = await measure(n, dir, 21000 + (process.pid % 200) * 25);
    for (const [node, role] of [
      ['master', 'Primary'],
      ['backup', 'Secondary'],
    ] as const) {
      const sum = r[node].reduce((a, b) => a + b, 0);
      console.log(
        `${n} idle volume(s), ${node} (${n} ${role} engine(s)): RSS total ${mib(sum)} MiB, per engine ${mib(sum / n)} MiB (min ${mib(Math.min(...r[node]))}, max ${mib(Math.max(...r[node]))})`,
      );
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
