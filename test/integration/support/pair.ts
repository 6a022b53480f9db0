// Two tandem nodes on one machine, as the tutorial's master and backup:
// real engine processes started by `tandemadm up`, real TCP between 127.0.0.2
// and 127.0.0.3, file-backed disks of different sizes with indexed external
// metadata (`meta-disk …sdb2[0]`), each node with its own run dir.
import { execFile, spawn } from 'node:child_process';
import { randomUUID } from 'node:crypto';
import { createServer } from 'node:net';
import { mkdtemp, open, readFile, rm, writeFile, truncate } from 'node:fs/promises';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { promisify } from 'node:util';
import { processAlive } from '../../../src/cli/process-alive.ts';
import type { EngineStatus } from '../../../src/replication/engine.ts';
import { callControl } from '../../../src/cli/control.ts';

const run = promisify(execFile);
const ROOT = resolve(import.meta.dirname, '../../..');
export const TANDEMADM = join(ROOT, 'bin/tandemadm.js');
export const NODE = process.execPath;

/**
 * A TCP port free on both nodes' addresses. Other test processes (and other jobs on the
 * machine) pick ports at the same time, so a port is tried by binding it on 127.0.0.2 and
 * 127.0.0.3 before a pair gets it; a fixed per-process range collided when one process
 * created more pairs than its range held.
 */
let nextPort = 17000 + Math.floor(Math.random() * 20000);
export async function allocPort(): Promise<number> {
  for (let tries = 0; tries < 200; tries++) {
    nextPort = nextPort >= 40000 ? 17000 : nextPort + 1;
    const port = nextPort;
    if ((await bindable('127.0.0.2', port)) && (await bindable('127.0.0.3', port))) return port;
  }
  throw new Error('no free TCP port for a test pair');
}

function bindable(host: string, port: number): Promise<boolean> {
  return new Promise((resolve) => {
    const srv = createServer();
    srv.once('error', () => resolve(false));
    srv.listen({ host, port, exclusive: true }, () => srv.close(() => resolve(true)));
  });
}

export interface PairOptions {
  protocol?: 'A' | 'B' | 'C';
  masterMiB?: number;
  backupMiB?: number;
  net?: string;
  /** Extra text inside `net {}` per node, to give one node a wrong secret. */
  perNodeNet?: Partial<Record<'master' | 'backup', string>>;
  /** Resource name per node (a wrong one for the refusal test). */
  perNodeResource?: Partial<Record<'master' | 'backup', string>>;
  rate?: string;
  /** Extra text inside `disk {}` (e.g. `al-extents 7;`). */
  disk?: string;
  /** A node's backing device, when it is not a file the pair creates (e.g. an nbdfuse file). */
  diskPath?: Partial<Record<NodeName, string>>;
  /** A node's metadata device, when it is not a file the pair creates. */
  metaPath?: Partial<Record<NodeName, string>>;
  /** `meta-disk internal` on both nodes (a pool file's layout) instead of an indexed meta device. */
  internalMeta?: boolean;
  /** Another build's tandemadm (npm run bench -- --compare REV). */
  tandemadm?: string;
}

export type NodeName = 'master' | 'backup';

export interface CmdResult {
  code: number;
  stdout: string;
  stderr: string;
}

export class Pair {
  readonly dir: string;
  readonly port: number;
  readonly opts: PairOptions;

  private constructor(dir: string, port: number, opts: PairOptions) {
    this.dir = dir;
    this.port = port;
    this.opts = opts;
  }

  static async create(opts: PairOptions = {}): Promise<Pair> {
    const dir = await mkdtemp(join(tmpdir(), 'tandem-pair-'));
    const p = new Pair(dir, await allocPort(), opts);
    const sizes: Record<NodeName, number> = { master: opts.masterMiB ?? 48, backup: opts.backupMiB ?? 64 };
    for (const n of ['master', 'backup'] as const) {
      if (!opts.diskPath?.[n]) {
        await writeFile(p.disk(n), '');
        await truncate(p.disk(n), sizes[n] * 1024 * 1024);
      }
      if (!opts.metaPath?.[n] && !opts.internalMeta) {
        await writeFile(p.metaDisk(n), '');
        await truncate(p.metaDisk(n), 130 * 1024 * 1024);
      }
      await writeFile(p.configPath(n), p.configText(n));
      await p.reboot(n);
    }
    return p;
  }

  disk(n: NodeName): string {
    return this.opts.diskPath?.[n] ?? join(this.dir, `${n}-sdb1`);
  }
  metaDisk(n: NodeName): string {
    return this.opts.metaPath?.[n] ?? join(this.dir, `${n}-sdb2`);
  }
  /** The meta-disk line's value: `internal`, or the indexed slot 0 of the meta device. */
  private metaSpec(n: NodeName): string {
    return this.opts.internalMeta ? 'internal' : `${this.metaDisk(n)}[0]`;
  }
  /** Writes both nodes' configs again from the (changed) options, e.g. a bigger `disk { size }`. */
  async rewriteConfigs(): Promise<void> {
    for (const n of ['master', 'backup'] as const) await writeFile(this.configPath(n), this.configText(n));
  }
  /** Each node's own kernel boot id, so that one node can "reboot" while the other does not. */
  bootIdFile(n: NodeName): string {
    return join(this.dir, `${n}-boot_id`);
  }
  /** A new boot id for a node: what its engine sees after a power cut, when it starts again. */
  async reboot(n: NodeName): Promise<void> {
    await writeFile(this.bootIdFile(n), `${randomUUID()}\n`);
  }
  configPath(n: NodeName): string {
    return join(this.dir, `${n}.conf`);
  }
  runDir(n: NodeName): string {
    return join(this.dir, `run-${n}`);
  }
  nbdSocket(n: NodeName, resource = 'mysql'): string {
    return join(this.runDir(n), `${resource}.nbd`);
  }
  nbdUri(n: NodeName): string {
    return `nbd+unix:///mysql?socket=${this.nbdSocket(n)}`;
  }
  logPath(n: NodeName): string {
    return join(this.runDir(n), `${this.resourceOf(n)}.log`);
  }

  resourceOf(n: NodeName): string {
    return this.opts.perNodeResource?.[n] ?? 'mysql';
  }

  /** The tutorial's global_common.conf + mysql.res, with this machine's addresses and files. */
  configText(n: NodeName): string {
    const o = this.opts;
    return `// written by the tandem integration tests, after the tutorial's mysql.res
global { usage-count no; }
common {
  protocol ${o.protocol ?? 'C'};
  disk { on-io-error detach; ${o.disk ?? ''} }
  ${o.rate === 'none' ? '' : `syncer { rate ${o.rate ?? '1024M'}; }`}
}
resource ${this.resourceOf(n)} {
  protocol ${o.protocol ?? 'C'};
  device /dev/drbd0;
  meta-disk ${this.metaSpec('master')};
  syncer { verify-alg sha1; }
  net { ping-int 2; connect-int 1; ${o.net ?? ''} ${o.perNodeNet?.[n] ?? ''} }
  on master {
    disk ${this.disk('master')};
    meta-disk ${this.metaSpec('master')};
    address 127.0.0.2:${this.port};
  }
  on backup {
    disk ${this.disk('backup')};
    meta-disk ${this.metaSpec('backup')};
    address 127.0.0.3:${this.port};
  }
}
`;
  }

  async adm(n: NodeName, ...args: string[]): Promise<CmdResult> {
    try {
      const r = await run(
        NODE,
        [this.opts.tandemadm ?? TANDEMADM, '-c', this.configPath(n), '--node', n, '--run-dir', this.runDir(n), ...args],
        { timeout: 60_000, env: { ...process.env, TANDEM_BOOT_ID_FILE: this.bootIdFile(n) } },
      );
      return { code: 0, stdout: r.stdout, stderr: r.stderr };
    } catch (err) {
      const e = err as { code?: number; stdout?: string; stderr?: string };
      return { code: typeof e.code === 'number' ? e.code : 1, stdout: e.stdout ?? '', stderr: e.stderr ?? '' };
    }
  }

  /** Runs a command that must succeed. */
  async ok(n: NodeName, ...args: string[]): Promise<string> {
    const r = await this.adm(n, ...args);
    if (r.code !== 0) throw new Error(`tandemadm ${args.join(' ')} on ${n} exited ${r.code}: ${r.stderr}`);
    return r.stdout;
  }

  /** The engine's status over its control socket (what `status --json` prints, without a process spawn). */
  async status(n: NodeName): Promise<EngineStatus> {
    const r = await callControl(join(this.runDir(n), `${this.resourceOf(n)}.ctl`), { cmd: 'status' });
    if (!r.ok) throw new Error(`${n}: status failed: ${r.error.message}`);
    return r.result as EngineStatus;
  }

  async waitFor(
    n: NodeName,
    pred: (s: EngineStatus) => boolean,
    timeoutMs = 30_000,
    what = 'condition',
  ): Promise<EngineStatus> {
    const deadline = Date.now() + timeoutMs;
    let last: EngineStatus | undefined;
    while (Date.now() < deadline) {
      last = await this.status(n);
      if (pred(last)) return last;
      await new Promise((r) => setTimeout(r, 50));
    }
    throw new Error(`${n}: timed out waiting for ${what}; last status ${JSON.stringify(last)}`);
  }

  /** create-md on both, up on both, and skip the initial sync of the blank pair. */
  async startBlank(): Promise<void> {
    for (const n of ['master', 'backup'] as const) await this.ok(n, 'create-md', this.resourceOf(n));
    for (const n of ['master', 'backup'] as const) await this.ok(n, 'up', this.resourceOf(n));
    await this.waitFor('master', (s) => s.cstate === 'Connected', 20_000, 'Connected');
    await this.ok('master', '--', '--clear-bitmap', 'new-current-uuid', 'mysql');
    await this.waitInSync();
  }

  async waitInSync(timeoutMs = 60_000): Promise<void> {
    for (const n of ['master', 'backup'] as const) {
      await this.waitFor(
        n,
        (s) => s.cstate === 'Connected' && s.disk === 'UpToDate' && s.peerDisk === 'UpToDate',
        timeoutMs,
        'Connected UpToDate/UpToDate',
      );
    }
  }

  async pid(n: NodeName): Promise<number> {
    return Number((await readFile(join(this.runDir(n), `${this.resourceOf(n)}.pid`), 'utf8')).trim());
  }

  async kill9(n: NodeName): Promise<void> {
    const pid = await this.pid(n);
    process.kill(pid, 'SIGKILL');
    // Dead includes a zombie: its files and sockets are closed. Here the engine's parent is
    // PID 1, which collects it only after a second or two: waiting for kill(0) to fail cost
    // the crash loop 1-2 s per kill, 40% of its time.
    for (let i = 0; i < 100; i++) {
      if (!processAlive(pid)) return;
      await new Promise((r) => setTimeout(r, 20));
    }
  }

  /** Bytes [offset, offset+length) of a node's backing file, read directly. */
  async diskBytes(n: NodeName, offset: number, length: number): Promise<Buffer> {
    const h = await open(this.disk(n), 'r');
    try {
      const b = Buffer.alloc(length);
      await h.read(b, 0, length, offset);
      return b;
    } finally {
      await h.close();
    }
  }

  /** iptables rules that drop this pair's replication traffic (and only it) both ways. */
  private linkRules(): string[][] {
    const port = String(this.port);
    return [
      ['INPUT', '-p', 'tcp', '-s', '127.0.0.2', '-d', '127.0.0.3', '--dport', port, '-j', 'DROP'],
      ['INPUT', '-p', 'tcp', '-s', '127.0.0.3', '-d', '127.0.0.2', '--sport', port, '-j', 'DROP'],
    ];
  }

  /** Cuts the link between the nodes, as `ifdown` does in the tutorial §12: packets vanish, sockets stay open. */
  async cutLink(): Promise<void> {
    for (const r of this.linkRules()) await run('iptables', ['-I', ...r]);
    this.cut = true;
  }

  async healLink(): Promise<void> {
    for (const r of this.linkRules()) await run('iptables', ['-D', ...r]).catch(() => {});
    this.cut = false;
  }

  private cut = false;

  async destroy(): Promise<void> {
    if (this.cut) await this.healLink();
    for (const n of ['master', 'backup'] as const) {
      try {
        process.kill(await this.pid(n), 'SIGKILL');
      } catch {
        /* not running */
      }
    }
    // An invariant of every test with a pair: the engines never hit a state change their own
    // rules refuse ("Refused a state fact" is logged, applied anyway, and is always a bug).
    const refused: string[] = [];
    for (const n of ['master', 'backup'] as const) {
      const log = await readFile(this.logPath(n), 'utf8').catch(() => '');
      for (const line of log.split('\n')) if (line.includes('Refused a state fact')) refused.push(`${n}: ${line}`);
    }
    if (!process.env.TANDEM_KEEP_TEST_DIRS) await rm(this.dir, { recursive: true, force: true });
    if (refused.length > 0) throw new Error(`an engine refused a state fact:\n${refused.join('\n')}`);
  }
}

/** Runs an external tool; resolves with its output or rejects with stderr. */
export async function tool(cmd: string, args: string[], timeoutMs = 120_000): Promise<string> {
  const r = await run(cmd, args, { timeout: timeoutMs, maxBuffer: 64 * 1024 * 1024 });
  return r.stdout;
}

export function spawnTool(cmd: string, args: string[]): ReturnType<typeof spawn> {
  return spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'] });
}
