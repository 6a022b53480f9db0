// tandem-engine-host: the long-lived per-node process (a DaemonSet pod with
// updateStrategy OnDelete) in which every engine of the node runs.
//
//   tandem-engine-host [--run-dir /run/tandem] [--stop-grace-seconds 20]
//   env: TANDEM_RUN_DIR, LOG_LEVEL
//
// The node agent sends it tandemadm command lines on <run-dir>/engine-host.sock
// (protocol.ts). It does nothing else: no Kubernetes client, no decisions, nothing
// that would make it need an upgrade when the agent changes.
//
// SIGTERM (its pod deleted: an upgrade of the engine host, a node drain) stops the
// engines cleanly first — each takes its device away and says goodbye to its peer,
// so the peer sees a clean disconnect, not a crash — then the host exits.
import { readdir, readFile } from 'node:fs/promises';
import { mkdir } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import pino, { type Logger } from 'pino';
import { processAlive } from '../cli/process-alive.ts';
import { serveEngineHost } from './server.ts';

export const SOCKET_NAME = 'engine-host.sock';

function flag(argv: string[], name: string, fallback: string): string {
  const i = argv.indexOf(name);
  return i >= 0 && argv[i + 1] !== undefined ? argv[i + 1]! : fallback;
}

/** Engines of the run dir (their pid files) that run in this pid namespace. */
export async function runningEngines(runDir: string): Promise<{ resource: string; pid: number }[]> {
  const out: { resource: string; pid: number }[] = [];
  for (const name of await readdir(runDir).catch(() => [] as string[])) {
    if (!name.endsWith('.pid') || name.endsWith('.nbdfuse.pid')) continue;
    const pid = Number((await readFile(join(runDir, name), 'utf8').catch(() => '')).trim());
    if (!Number.isInteger(pid) || pid <= 1 || !processAlive(pid)) continue;
    // Only an engine: a pid file may be stale and its number reused by another process.
    const cmdline = await readFile(`/proc/${pid}/cmdline`, 'utf8').catch(() => '');
    if (cmdline.split('\0').includes('--__engine')) out.push({ resource: name.slice(0, -4), pid });
  }
  return out;
}

/** SIGTERM to every engine (a clean `down` of each), then waits for them, at most graceMs. */
export async function stopEngines(runDir: string, graceMs: number, log: Logger): Promise<void> {
  const engines = await runningEngines(runDir);
  for (const e of engines) {
    log.info(e, 'Stopping an engine');
    try {
      process.kill(e.pid, 'SIGTERM');
    } catch {
      /* gone already */
    }
  }
  const deadline = Date.now() + graceMs;
  let left = engines;
  while (left.length > 0 && Date.now() < deadline) {
    await sleep(100);
    left = left.filter((e) => processAlive(e.pid));
  }
  if (left.length > 0) log.warn({ left }, 'Engines still running at the end of the grace period');
}

export async function main(argv: string[]): Promise<void> {
  const runDir = flag(argv, '--run-dir', process.env.TANDEM_RUN_DIR ?? '/run/tandem');
  const graceMs = Number(flag(argv, '--stop-grace-seconds', '20')) * 1000;
  const log = pino({ base: { component: 'engine-host' }, level: process.env.LOG_LEVEL ?? 'info' });
  await mkdir(runDir, { recursive: true });
  const socket = join(runDir, SOCKET_NAME);
  const adopted = await runningEngines(runDir);
  const server = await serveEngineHost({ socket, log });
  let stopping = false;
  const stop = async (why: string): Promise<void> => {
    if (stopping) return;
    stopping = true;
    log.info({ why }, 'Shutting down: stopping the engines');
    await new Promise<void>((r) => server.close(() => r()));
    await stopEngines(runDir, graceMs, log);
    process.exit(0);
  };
  process.on('SIGTERM', () => void stop('SIGTERM'));
  process.on('SIGINT', () => void stop('SIGINT'));
  log.info({ socket, engines: adopted.map((e) => e.resource) }, 'Engine host started');
}
