// npm run bench:memory -- [N …]: the resident memory of the engines of one node
// holding N idle volumes. For each N, N pairs of real engines are started with
// `tandemadm up` (as the engine host starts them in a pod): "master" (127.0.0.2)
// holds the N Primaries, "backup" (127.0.0.3) the N Secondaries, Connected and
// UpToDate over file-backed disks, then left idle for a few seconds before the
// memory of every engine process is read. Per engine it prints, in MiB:
//   rss      VmRSS: what `ps`/top show; counts the node binary's pages in every process
//   anon     RssAnon: this process's own memory (heap, buffers, JIT code, stacks)
//   file     RssFile: mapped files, mostly the node binary, shared by every node process
//   pss      Pss from smaps_rollup: shared pages divided among the processes sharing them;
//            the sum of pss over processes is what they take together
//   hwm      VmHWM: peak RSS over the process's life
//   heap     V8 heap used/total, external (Buffers and other C++ memory V8 is told of),
//            arrayBuffers (part of external), malloc (V8's own malloc'd memory)
// A bare `node -e 'setInterval(…)'` is measured in the same run as the floor, and an
// idle engine host. "node total" counts each process's own (anonymous) memory and the
// mapped files once: the most these processes hold together on a node.
// Default: N = 1 and 20. The export is not attached as a block device here (a pod's
// Primary adds one nbdfuse process; test/e2e/engine-host.test.ts prints that one).
import { execFile, spawn } from 'node:child_process';
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

interface Mem {
  rss: number;
  anon: number;
  file: number;
  pss: number;
  hwm: number;
  /** From the engine (bytes); absent for the floor process. */
  v8?: Record<string, number>;
}

/** KiB figures of one process from /proc. */
async function procMem(pid: number): Promise<Mem> {
  const status = await readFile(`/proc/${pid}/status`, 'utf8');
  const rollup = await readFile(`/proc/${pid}/smaps_rollup`, 'utf8');
  const field = (text: string, name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+)`, 'm').exec(text)?.[1] ?? Number.NaN);
  return {
    rss: field(status, 'VmRSS'),
    anon: field(status, 'RssAnon'),
    file: field(status, 'RssFile'),
    pss: field(rollup, 'Pss'),
    hwm: field(status, 'VmHWM'),
  };
}

async function measure(n: number, dir: string, basePort: number): Promise<Record<NodeName, Mem[]>> {
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
  const out = { master: [] as Mem[], backup: [] as Mem[] };
  for (const node of ['master', 'backup'] as const)
    for (let i = 0; i < n; i++) {
      const pid = Number((await readFile(join(runDir(node), `${res(i)}.pid`), 'utf8')).trim());
      const r = await callControl(join(runDir(node), `${res(i)}.ctl`), { cmd: 'memory' });
      out[node].push({ ...(await procMem(pid)), ...(r.ok ? { v8: r.result as Record<string, number> } : {}) });
    }
  for (const node of ['master', 'backup'] as const)
    for (let i = 0; i < n; i++) await adm(node, i, 'down', res(i)).catch(() => undefined);
  return out;
}

/** An idle process of `node ARGS`, measured after 3 s. */
async function idle(args: string[]): Promise<Mem> {
  const child = spawn(process.execPath, args, { stdio: 'ignore' });
  try {
    await sleep(3000);
    return await procMem(child.pid!);
  } finally {
    child.kill();
  }
}

const counts = process.argv
  .slice(2)
  .map(Number)
  .filter((x) => x > 0);
const mib = (kib: number) => (kib / 1024).toFixed(1);
const bmib = (bytes: number | undefined) => (bytes === undefined ? '-' : (bytes / 1048576).toFixed(1));
const line = (label: string, m: Mem) =>
  `  ${label.padEnd(16)} rss ${mib(m.rss)} anon ${mib(m.anon)} file ${mib(m.file)} pss ${mib(m.pss)} hwm ${mib(m.hwm)}` +
  (m.v8
    ? ` | heap ${bmib(m.v8.heapUsed)}/${bmib(m.v8.heapTotal)} external ${bmib(m.v8.external)} arrayBuffers ${bmib(m.v8.arrayBuffers)} malloc ${bmib(m.v8.mallocedMemory)}${m.v8.typeStripperLoaded ? ' TYPESCRIPT STRIPPER LOADED (no compile cache)' : ''}`
    : '');
const hostDir = await mkdtemp(join(tmpdir(), 'tandem-mem-host-'));
const f = await idle(['-e', 'setInterval(() => {}, 1000)']);
const host = await idle([join(resolve(import.meta.dirname, '..'), 'bin/tandem-engine-host.js'), '--run-dir', hostDir]);
await rm(hostDir, { recursive: true, force: true });
console.log(`floor (bare node, ${process.version}) and the engine host (one per node), MiB:`);
console.log(line('node -e idle', f));
console.log(line('engine host', host));
for (const n of counts.length > 0 ? counts : [1, 20]) {
  const dir = await mkdtemp(join(tmpdir(), 'tandem-mem-'));
  try {
    const r = await measure(n, dir, 21000 + (process.pid % 200) * 25);
    for (const [node, role] of [
      ['master', 'Primary'],
      ['backup', 'Secondary'],
    ] as const) {
      const sum = (k: 'rss' | 'pss' | 'anon') => r[node].reduce((a, b) => a + b[k], 0);
      const rss = r[node].map((m) => m.rss);
      console.log(
        `${n} idle volume(s), ${node} (${n} ${role} engine(s)): RSS total ${mib(sum('rss'))} MiB, per engine ${mib(sum('rss') / n)} MiB (min ${mib(Math.min(...rss))}, max ${mib(Math.max(...rss))}); PSS total ${mib(sum('pss'))} MiB, per engine ${mib(sum('pss') / n)} MiB; anon total ${mib(sum('anon'))} MiB`,
      );
      // What the node holds for them: each process's own pages, and the mapped files (the
      // node binary, libraries) once, as the page cache and a cgroup count them; the engine
      // host idles next to them (the node agent is not measured here).
      const shared = Math.max(host.file, ...r[node].map((m) => m.file));
      console.log(
        `  node total: engines' anon ${mib(sum('anon'))} + engine host's anon ${mib(host.anon)} + shared files once ${mib(shared)} = ${mib(sum('anon') + host.anon + shared)} MiB`,
      );
      r[node].forEach((m, i) => {
        console.log(line(`vol${i}`, m));
      });
    }
  } finally {
    await rm(dir, { recursive: true, force: true });
  }
}
