// The tutorial (drbd-mysql-tutorial.md §7-11) on one machine, narrated: two
// tandem nodes, master on 127.0.0.2 and backup on 127.0.0.3, file-backed
// "partitions" of different sizes (the tutorial's 7 GB and 9 GB, scaled to
// 448 MiB and 576 MiB) with metadata on an indexed external meta-disk, as in
// mysql.res. Every step runs the real tandemadm and prints what it printed.
import { execFileSync, spawnSync } from 'node:child_process';
import { mkdirSync, rmSync, writeFileSync, truncateSync, readFileSync } from 'node:fs';
import { createHash, randomBytes } from 'node:crypto';
import { join, resolve } from 'node:path';

const root = resolve(import.meta.dirname, '..');
const dir = process.env.TANDEM_LAB_DIR ?? join(root, '.lab');
const port = Number(process.env.TANDEM_LAB_PORT ?? 7789);
const tandemadm = join(root, 'bin/tandemadm.js');
type Node = 'master' | 'backup';

function adm(node: Node, ...args: string[]): string {
  const r = spawnSync(
    process.execPath,
    [tandemadm, '-c', join(dir, 'tandem.conf'), '--node', node, '--run-dir', join(dir, `run-${node}`), ...args],
    { encoding: 'utf8' },
  );
  if (r.status !== 0) throw new Error(`tandemadm ${args.join(' ')} on ${node} failed (${r.status}): ${r.stderr}`);
  return r.stdout;
}

function step(title: string): void {
  process.stdout.write(`\n\x1b[1m== ${title}\x1b[0m\n`);
}

function show(node: Node, cmd: string, out: string): void {
  process.stdout.write(`[root@${node} ~]# ${cmd}\n${out}${out.endsWith('\n') || out === '' ? '' : '\n'}`);
}

function run(node: Node, ...args: string[]): string {
  const out = adm(node, ...args);
  show(node, `tandemadm ${args.join(' ')}`, out);
  return out;
}

const sleep = (ms: number): Promise<void> => new Promise((r) => setTimeout(r, ms));

async function main(): Promise<void> {
  takeDown('ignore');
  rmSync(dir, { recursive: true, force: true });
  mkdirSync(dir, { recursive: true });
  const sizes: Record<Node, number> = { master: 448, backup: 576 };
  for (const n of ['master', 'backup'] as const) {
    writeFileSync(join(dir, `${n}-sdb1`), '');
    truncateSync(join(dir, `${n}-sdb1`), sizes[n] * 1024 * 1024);
    writeFileSync(join(dir, `${n}-sdb2`), '');
    truncateSync(join(dir, `${n}-sdb2`), 200 * 1024 * 1024);
  }
  const conf = `// tandem lab: the tutorial's global_common.conf and mysql.res, on 127.0.0.2/127.0.0.3
global {
\tusage-count no;
}
common {
\tprotocol C;
\tdisk { on-io-error detach; }
\tsyncer { rate 150M; }   // slow enough to watch the progress bar
}
resource mysql {
protocol C;
device /dev/drbd0;
syncer { verify-alg sha1; }
net { cram-hmac-alg sha256; shared-secret "${randomBytes(12).toString('hex')}"; }
on master {
disk ${dir}/master-sdb1;
meta-disk ${dir}/master-sdb2[0];
address 127.0.0.2:${port};
}
on backup {
disk ${dir}/backup-sdb1;
meta-disk ${dir}/backup-sdb2[0];
address 127.0.0.3:${port};
}
}
`;
  writeFileSync(join(dir, 'tandem.conf'), conf);
  process.stdout.write(`tandem lab in ${dir}\nconfig: ${join(dir, 'tandem.conf')}\n`);

  step('7.3  create-md on both nodes');
  run('master', 'create-md', 'mysql');
  run('backup', 'create-md', 'mysql');

  step('8.1  up on master; the peer is not there yet');
  run('master', 'up', 'mysql');
  run('master', 'status', 'mysql');
  step('8.1  force master to Primary: its data becomes the truth');
  run('master', '--', '--force', 'primary', 'mysql');
  run('master', 'status', 'mysql');

  step('8.2  up on backup: full initial sync from master (size = the smaller disk)');
  run('backup', 'up', 'mysql');
  for (;;) {
    const s = adm('master', 'status', 'mysql');
    show('master', 'tandemadm status mysql', s);
    if (s.includes('cs:Connected') && s.includes('ds:UpToDate/UpToDate')) break;
    await sleep(700);
  }
  run('backup', 'status', 'mysql');
  run('master', 'cstate', 'mysql');
  run('master', 'role', 'mysql');
  run('master', 'dstate', 'mysql');

  step("10   write data through the Primary's device (NBD export, as /dev/drbd0)");
  const uri = (n: Node): string => `nbd+unix:///mysql?socket=${join(dir, `run-${n}`, 'mysql.nbd')}`;
  const data = randomBytes(32 * 1024 * 1024);
  const src = join(dir, 'demo.bin');
  writeFileSync(src, data);
  execFileSync('nbdcopy', ['--flush', src, uri('master')]);
  const sum = createHash('sha256').update(data).digest('hex').slice(0, 16);
  show('master', `nbdcopy --flush demo.bin '${uri('master')}'`, `wrote 32 MiB, sha256 ${sum}…\n`);
  run('master', 'status', 'mysql');

  step('11.1 demote master');
  run('master', 'secondary', 'mysql');
  run('master', 'role', 'mysql');
  step('11.2 promote backup and read the data back there');
  run('backup', 'primary', 'mysql');
  run('backup', 'role', 'mysql');
  const out = join(dir, 'readback.bin');
  execFileSync('nbdcopy', [uri('backup'), out]);
  const back = readFileSync(out).subarray(0, data.length);
  const backSum = createHash('sha256').update(back).digest('hex').slice(0, 16);
  show(
    'backup',
    `nbdcopy '${uri('backup')}' readback.bin`,
    `read 32 MiB, sha256 ${backSum}… ${backSum === sum ? '(same bytes as written on master)' : '(MISMATCH!)'}\n`,
  );
  run('backup', 'status', 'mysql');
  if (backSum !== sum) throw new Error('the data read on backup differs from what was written on master');

  step('done');
  process.stdout.write(
    `Both engines are still running. Try:\n  node ${tandemadm} -c ${join(dir, 'tandem.conf')} --node backup --run-dir ${join(dir, 'run-backup')} status mysql\nStop them with:\n  npm run lab -- --down\n`,
  );
}

/** Stops both engines of a previous lab run: demote (closing NBD clients), then down. */
function takeDown(stdio: 'ignore' | 'inherit'): void {
  for (const n of ['master', 'backup'] as const) {
    const base = [tandemadm, '-c', join(dir, 'tandem.conf'), '--node', n, '--run-dir', join(dir, `run-${n}`)];
    spawnSync(process.execPath, [...base, '--', '--force', 'secondary', 'mysql'], { stdio: 'ignore' });
    spawnSync(process.execPath, [...base, 'down', 'mysql'], { stdio });
  }
}

if (process.argv.includes('--down')) takeDown('inherit');
else await main();
