// tandemadm: drbdadm's command line for tandem resources (DESIGN.md §3).
//
//   tandemadm [-c FILE] [--node NAME] [--run-dir DIR] [-- --force|--overwrite-data-of-peer|--discard-my-data]
//             COMMAND RESOURCE|all
import { spawn } from 'node:child_process';
import { flushCompileCache } from 'node:module';
import { hostname } from 'node:os';
import { mkdir, readFile } from 'node:fs/promises';
import { createInterface } from 'node:readline/promises';
import { fileURLToPath } from 'node:url';
import type { ResourceConfig, TandemConfig } from '../api/config.ts';
import { ConfigError, findResource, loadConfigFile, selectHosts } from './drbd-config/index.ts';
import { parseScaled, UNIT } from './drbd-config/units.ts';
import { callControl, NotRunningError, type ControlRequest } from './control.ts';
import { paths, runDaemon } from './daemon.ts';
import { processAlive } from './process-alive.ts';
import { formatProcDrbd, formatUnconfigured, versionHeader } from './proc-drbd.ts';
import { describe as describeMd, locateMetadata, Metadata, settleGrow } from '../replication/metadata.ts';
import { realWorld } from '../replication/real-world.ts';
import type { EngineStatus } from '../replication/engine.ts';
import { ERROR_CODES, TandemError } from '../replication/errors.ts';
import { dumpResource } from './dump.ts';
import { runTop } from './top.ts';
import { CertError, makeCerts } from '../net/certs.ts';

const USAGE = `usage: tandemadm [options] [-- command-options] COMMAND {RESOURCE|all}

options:
  -c, --config FILE     configuration file (default /etc/tandem/tandem.conf, or TANDEM_CONFIG)
  --node NAME           this node's 'on' section (default: hostname, or TANDEM_NODE)
  --run-dir DIR         runtime directory for engines and sockets (default /run/tandem, or TANDEM_RUN_DIR)
  --json                with status: print JSON
  --interval SECONDS    with top: seconds between refreshes (default 2)
  --once                with top: print one refresh as plain lines and exit
command options (also accepted after '--', as drbdadm does):
  --force               primary: promote without UpToDate data (start a full sync to the peer)
                        secondary: disconnect NBD clients first; create-md: overwrite metadata
  --overwrite-data-of-peer   same as primary --force
  --discard-my-data     connect: resolve a split brain by discarding this node's changes
  --clear-bitmap        new-current-uuid: skip the initial sync of two blank (zeroed) disks
  --size SIZE           resize: set the device's size on a StandAlone Primary (sectors, or
                        with a K/M/G suffix); shrinking drops what lies past the new end
                        grow-disk: the size to grow to (default: the config's disk size)

commands:
  create-md up down attach detach connect disconnect primary secondary
  role cstate dstate status pause-sync resume-sync outdate dump new-current-uuid
  verify invalidate invalidate-remote resize resume-io

  grow-disk RESOURCE      the configured disk size went up: grow this node's file-backed
                          disk to hold it (internal metadata moves to the new end); then
                          'resize' on one node grows the device and syncs the new area
  reattach RESOURCE       on the Primary: detach and attach its kernel block device again,
                          so it shows the device's new size (refused while it is in use)

  top [RESOURCE...]       every engine of this node, refreshed: role, states, sync
                          progress, throughput, write latency ('q' quits; plain
                          lines when not on a terminal)
  tls-certs DIR NODE...   make DIR/ca.crt+ca.key (unless there) and DIR/NODE.crt+NODE.key
                          per node, for net { tls yes; tls-ca …; tls-cert …; tls-key …; }`;

const COMMANDS = [
  'create-md',
  'up',
  'down',
  'attach',
  'detach',
  'connect',
  'disconnect',
  'primary',
  'secondary',
  'role',
  'cstate',
  'dstate',
  'status',
  'verify',
  'resume-io',
  'pause-sync',
  'resume-sync',
  'invalidate',
  'invalidate-remote',
  'outdate',
  'resize',
  'grow-disk',
  'reattach',
  'dump',
  'new-current-uuid',
  'tls-certs',
  'top',
] as const;
type Command = (typeof COMMANDS)[number];

interface Options {
  config: string;
  node: string;
  runDir: string;
  json: boolean;
  force: boolean;
  discardMyData: boolean;
  clearBitmap: boolean;
  size: number | undefined;
  command: Command | undefined;
  resources: string[];
  engine: boolean;
  noConnect: boolean;
  reportFd: number | undefined;
  intervalMs: number;
  once: boolean;
}

function usageError(message: string): TandemError {
  return new TandemError(ERROR_CODES.usage, `${message}\n${USAGE}`, 20);
}

/** `--size`: as drbdsetup reads it, sectors unless a K/M/G suffix says otherwise. */
function parseSize(text: string): number {
  const bytes = parseScaled(text, UNIT.sector);
  if (bytes === undefined || bytes <= 0) throw usageError(`--size: '${text}' is not a size (for example 64M)`);
  return bytes;
}

export function parseArgs(argv: string[], env: NodeJS.ProcessEnv = process.env): Options {
  const o: Options = {
    config: env.TANDEM_CONFIG ?? '/etc/tandem/tandem.conf',
    node: env.TANDEM_NODE ?? hostname(),
    runDir: env.TANDEM_RUN_DIR ?? '/run/tandem',
    json: false,
    force: false,
    discardMyData: false,
    clearBitmap: false,
    size: undefined,
    command: undefined,
    resources: [],
    engine: false,
    noConnect: false,
    reportFd: undefined,
    intervalMs: 2000,
    once: false,
  };
  const value = (i: number, flag: string): string => {
    const v = argv[i + 1];
    if (v === undefined) throw usageError(`${flag} needs a value`);
    return v;
  };
  for (let i = 0; i < argv.length; i++) {
    const a = argv[i]!;
    switch (a) {
      case '--':
        continue;
      case '-c':
      case '--config':
        o.config = value(i++, a);
        continue;
      case '--node':
        o.node = value(i++, a);
        continue;
      case '--run-dir':
        o.runDir = value(i++, a);
        continue;
      case '--json':
        o.json = true;
        continue;
      case '--force':
      case '--overwrite-data-of-peer':
        o.force = true;
        continue;
      case '--discard-my-data':
        o.discardMyData = true;
        continue;
      case '--clear-bitmap':
        o.clearBitmap = true;
        continue;
      case '--size':
        o.size = parseSize(value(i++, a));
        continue;
      case '--interval': {
        const v = Number(value(i++, a));
        if (!(v >= 0.1 && v <= 3600))
          throw usageError(`--interval: '${argv[i]}' is not a number of seconds from 0.1 to 3600`);
        o.intervalMs = Math.round(v * 1000);
        continue;
      }
      case '--once':
        o.once = true;
        continue;
      case '--__engine':
        o.engine = true;
        continue;
      case '--__no-connect':
        o.noConnect = true;
        continue;
      case '--__report-fd':
        o.reportFd = Number(value(i++, a));
        continue;
      case '-h':
      case '--help':
        throw Object.assign(new TandemError(ERROR_CODES.usage, USAGE, 0), { help: true });
    }
    if (a.startsWith('--config=')) {
      o.config = a.slice(9);
      continue;
    }
    if (a.startsWith('--node=')) {
      o.node = a.slice(7);
      continue;
    }
    if (a.startsWith('--run-dir=')) {
      o.runDir = a.slice(10);
      continue;
    }
    if (a.startsWith('--size=')) {
      o.size = parseSize(a.slice(7));
      continue;
    }
    if (a.startsWith('-')) throw usageError(`unknown option '${a}'`);
    if (!o.command) {
      if (!(COMMANDS as readonly string[]).includes(a)) throw usageError(`unknown command '${a}'`);
      o.command = a as Command;
    } else {
      o.resources.push(a);
    }
  }
  return o;
}

class Output {
  out: string[] = [];
  err: string[] = [];
}

async function loadConfig(o: Options): Promise<TandemConfig> {
  const { config, warnings } = await loadConfigFile(o.config);
  for (const w of warnings) process.stderr.write(`${o.config}: warning: ${w}\n`);
  return config;
}

function resourcesFor(o: Options, config: TandemConfig): ResourceConfig[] {
  if (o.resources.length === 0) {
    if (o.command === 'status') return config.resources;
    throw usageError(`${o.command}: missing resource name (or 'all')`);
  }
  if (o.resources.includes('all')) return config.resources;
  return o.resources.map((r) => findResource(config, r));
}

async function control(o: Options, res: ResourceConfig, req: ControlRequest): Promise<unknown> {
  const p = paths(o.runDir, res.name);
  const r = await callControl(p.ctl, req);
  if (!r.ok) throw new TandemError(r.error.code as never, `${res.name}: ${r.error.message}`, r.error.exitCode);
  return r.result;
}

async function tryStatus(o: Options, res: ResourceConfig): Promise<EngineStatus | undefined> {
  try {
    return (await control(o, res, { cmd: 'status' })) as EngineStatus;
  } catch (err) {
    if (err instanceof NotRunningError) return undefined;
    throw err;
  }
}

async function confirm(question: string): Promise<boolean> {
  if (!process.stdin.isTTY) return false;
  const rl = createInterface({ input: process.stdin, output: process.stdout });
  try {
    return (await rl.question(`${question} [need to type 'yes' to confirm] `)).trim() === 'yes';
  } finally {
    rl.close();
  }
}

async function createMd(o: Options, res: ResourceConfig, out: Output): Promise<void> {
  const { self } = selectHosts(res, o.node);
  if (await tryStatus(o, res))
    throw new TandemError(
      ERROR_CODES.alreadyUp,
      `${res.name}: the resource is up; run 'tandemadm down ${res.name}' before create-md`,
      10,
    );
  // A grow interrupted by a crash is finished or undone first: until then the metadata
  // is not where the file's size says, and this must never write fresh metadata over it.
  if (self.metaDisk.kind === 'internal') {
    const settled = await settleGrow(realWorld.storage, self.disk, res.name);
    if (settled !== 'none') out.out.push(`an interrupted grow of ${self.disk} was ${settled}`);
  }
  const location = await locateMetadata(realWorld.storage, self.disk, self.metaDisk);
  const existing = await Metadata.readSuperblock(realWorld.storage, location);
  if (existing && !o.force) {
    const ok = await confirm(
      `You want me to create a v1 style tandem meta data block on ${describeMd(location)}.\nValid tandem meta data (resource '${existing.resource}') already exists. Do you really want to overwrite it?`,
    );
    if (!ok)
      throw new TandemError(
        ERROR_CODES.metadataExists,
        `${describeMd(location)}: valid tandem metadata for resource '${existing.resource}' already exists; refusing to overwrite it (use 'tandemadm -- --force create-md ${res.name}' to confirm)`,
        10,
      );
  }
  out.out.push('initializing activity log');
  const { bitmapBytes } = await Metadata.create(realWorld.storage, location, res.name);
  out.out.push(
    `initializing bitmap (${Math.ceil(bitmapBytes / 1024)} KB) to all zero`,
    'Writing meta data...',
    'New tandem meta data block successfully created.',
  );
}

/**
 * V8 flags of each engine process: none for now. `--max-semi-space-size=2` keeps ~4 MiB
 * less in an idle engine (the young generation stays at 1–4 MiB instead of 8+), but two
 * same-run benches put the Connected 4 KiB random writes at 0.83 and 0.84 of the engine
 * without it (docs/design/2026-12-07-engine-memory.md): not worth 4 MiB.
 */
export const ENGINE_NODE_FLAGS: readonly string[] = [];

async function up(o: Options, res: ResourceConfig, connect: boolean): Promise<void> {
  selectHosts(res, o.node);
  const running = await tryStatus(o, res);
  if (running) {
    if (connect && running.cstate === 'StandAlone') await control(o, res, { cmd: 'connect' });
    if (running.disk === 'Diskless') await control(o, res, { cmd: 'attach' });
    return;
  }
  await mkdir(o.runDir, { recursive: true });
  const script = fileURLToPath(new URL('../../bin/tandemadm.js', import.meta.url));
  const args = [
    ...ENGINE_NODE_FLAGS,
    script,
    '--__engine',
    '--__report-fd',
    '3',
    '-c',
    o.config,
    '--node',
    o.node,
    '--run-dir',
    o.runDir,
    ...(connect ? [] : ['--__no-connect']),
    'up',
    res.name,
  ];
  // This process has loaded the engine's modules: write them to the compile cache
  // (bin/compile-cache.js) before the engine starts, or the first engine after a fresh
  // install or pod loads Node's TypeScript stripper (≈ 25 MiB) for its whole life.
  flushCompileCache();
  const child = spawn(process.execPath, args, {
    detached: true,
    stdio: ['ignore', 'ignore', 'ignore', 'pipe'],
    env: { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' },
  });
  const pipe = child.stdio[3] as NodeJS.ReadableStream;
  const answer = await new Promise<string>((resolve) => {
    let buf = '';
    pipe.setEncoding('utf8');
    pipe.on('data', (c: string) => {
      buf += c;
    });
    pipe.on('end', () => resolve(buf.trim()));
    child.on('exit', (code) =>
      resolve(buf.trim() || `ERROR engine exited with code ${code}; see ${paths(o.runDir, res.name).log}`),
    );
  });
  child.unref();
  (pipe as unknown as { destroy(): void }).destroy();
  if (answer !== 'READY')
    throw new TandemError(ERROR_CODES.backing, `${res.name}: ${answer.replace(/^ERROR /, '')}`, 10);
}

async function down(o: Options, res: ResourceConfig): Promise<void> {
  const p = paths(o.runDir, res.name);
  let pid: number | undefined;
  try {
    pid = Number((await readFile(p.pid, 'utf8')).trim());
  } catch {
    /* not running */
  }
  try {
    await control(o, res, { cmd: 'down' });
  } catch (err) {
    if (err instanceof NotRunningError) return;
    throw err;
  }
  // Wait for the engine to exit, so a following `up` or `create-md` finds the disk free.
  for (let i = 0; pid && i < 200; i++) {
    if (!processAlive(pid)) return;
    await new Promise((r) => setTimeout(r, 50));
  }
}

async function offlineOutdate(o: Options, res: ResourceConfig): Promise<void> {
  const { self } = selectHosts(res, o.node);
  const md = await Metadata.open(
    realWorld.storage,
    await locateMetadata(realWorld.storage, self.disk, self.metaDisk),
    res.name,
  );
  try {
    if (md.has('consistent')) await md.update({ set: ['outdated'] });
  } finally {
    await md.close();
  }
}

async function runOne(o: Options, res: ResourceConfig, out: Output): Promise<void> {
  const cmd = o.command!;
  switch (cmd) {
    case 'create-md':
      return createMd(o, res, out);
    case 'up':
      return up(o, res, true);
    case 'attach': {
      if (await tryStatus(o, res)) {
        await control(o, res, { cmd: 'attach' });
        return;
      }
      return up(o, res, false);
    }
    case 'down':
      return down(o, res);
    case 'dump':
      out.out.push(dumpResource(res));
      return;
    case 'outdate': {
      if (await tryStatus(o, res)) {
        await control(o, res, { cmd: 'outdate' });
        return;
      }
      return offlineOutdate(o, res);
    }
    case 'role':
    case 'cstate':
    case 'dstate':
    case 'status': {
      const s = await tryStatus(o, res);
      if (cmd === 'status') {
        if (o.json) out.out.push(JSON.stringify(s ?? { resource: res.name, cstate: 'Unconfigured' }, null, 2));
        else out.out.push(s ? formatProcDrbd(s) : formatUnconfigured(selectHosts(res, o.node).self.minor));
        return;
      }
      if (!s) {
        out.out.push('Unconfigured');
        return;
      }
      out.out.push(
        cmd === 'role' ? `${s.role}/${s.peerRole}` : cmd === 'cstate' ? s.cstate : `${s.disk}/${s.peerDisk}`,
      );
      return;
    }
    case 'connect':
    case 'disconnect':
    case 'primary':
    case 'secondary':
    case 'detach':
    case 'pause-sync':
    case 'resume-sync':
    case 'new-current-uuid':
    case 'verify':
    case 'invalidate':
    case 'invalidate-remote':
    case 'resize':
    case 'grow-disk':
    case 'reattach':
    case 'resume-io': {
      // grow-disk: the config's size (KiB) in whole 4 KiB blocks, as the device is sized at attach.
      const configured = res.disk.size !== undefined ? res.disk.size - (res.disk.size % 4096) : undefined;
      const size = cmd === 'grow-disk' ? (o.size ?? configured) : o.size;
      if (cmd === 'grow-disk' && size === undefined)
        throw usageError(`grow-disk: ${res.name} has no 'size' in its disk section, and --size was not given`);
      try {
        await control(o, res, {
          cmd,
          force: o.force,
          discardMyData: o.discardMyData,
          clearBitmap: o.clearBitmap,
          ...(size !== undefined ? { size } : {}),
        });
      } catch (err) {
        if (err instanceof NotRunningError)
          throw new TandemError(
            ERROR_CODES.notUp,
            `${res.name}: resource is not up (run 'tandemadm up ${res.name}')`,
            10,
          );
        throw err;
      }
      return;
    }
    default:
      throw usageError(`unknown command '${String(cmd)}'`);
  }
}

export async function main(argv: string[]): Promise<number> {
  let o: Options;
  try {
    o = parseArgs(argv);
  } catch (err) {
    const e = err as TandemError & { help?: boolean };
    (e.help ? process.stdout : process.stderr).write(`${e.message}\n`);
    return e.exitCode;
  }
  try {
    if (!o.command) throw usageError('missing command');
    if (o.command === 'tls-certs') {
      const [dir, ...nodes] = o.resources;
      if (dir === undefined || nodes.length === 0)
        throw usageError('tls-certs: usage: tandemadm tls-certs DIR NODE...');
      try {
        const p = await makeCerts(dir, nodes);
        for (const n of nodes) process.stdout.write(`${n}: tls-cert ${p.cert(n)}; tls-key ${p.key(n)};\n`);
        process.stdout.write(`tls-ca ${p.ca}; (keep ${p.caKey} secret: it signs new nodes)\n`);
        return 0;
      } catch (err) {
        if (!(err instanceof CertError)) throw err;
        process.stderr.write(`tls-certs: ${err.message}\n`);
        return 10;
      }
    }
    // top reads the run directory's control sockets: no configuration needed.
    if (o.command === 'top')
      return await runTop({
        runDir: o.runDir,
        node: o.node,
        resources: o.resources,
        intervalMs: o.intervalMs,
        once: o.once,
      });
    const config = await loadConfig(o);
    if (o.engine) {
      const res = findResource(config, o.resources[0] ?? '');
      const { self, peer } = selectHosts(res, o.node);
      await runDaemon({
        resource: res,
        self,
        peer,
        runDir: o.runDir,
        configFile: o.config,
        connect: !o.noConnect,
        ...(o.reportFd !== undefined ? { reportFd: o.reportFd } : {}),
      });
      return -1;
    }
    const out = new Output();
    const resources = resourcesFor(o, config);
    if (o.command === 'status' && !o.json) out.out.push(versionHeader());
    let code = 0;
    for (const res of resources) {
      try {
        await runOne(o, res, out);
      } catch (err) {
        if (!(err instanceof TandemError || err instanceof ConfigError)) throw err;
        process.stdout.write(out.out.map((l) => `${l}\n`).join(''));
        out.out = [];
        process.stderr.write(`${err.message}\n`);
        code = err instanceof TandemError ? err.exitCode : 10;
      }
    }
    process.stdout.write(out.out.map((l) => `${l}\n`).join(''));
    return code;
  } catch (err) {
    if (err instanceof ConfigError) {
      process.stderr.write(`${err.message}\n`);
      return 10;
    }
    if (err instanceof TandemError) {
      process.stderr.write(`${err.message}\n`);
      return err.exitCode;
    }
    process.stderr.write(`tandemadm: ${(err as Error).stack ?? String(err)}\n`);
    return 1;
  }
}

const code = await main(process.argv.slice(2));
if (code >= 0) process.exit(code);
