// Running commands and keeping daemons: the harness starts long-lived processes
// (etcd, kube-apiserver, kube-controller-manager, kubelets…) detached from the
// CLI that started them, and finds them again through pid files.
import { spawn, spawnSync } from 'node:child_process';
import { closeSync, existsSync, mkdirSync, openSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { state } from './paths.ts';

export class CommandError extends Error {
  readonly code = 'TANDEM_ERR_E2E_COMMAND';
  readonly status: number | null;
  readonly stderr: string;
  constructor(cmd: string, status: number | null, stderr: string) {
    super(`${cmd} exited with ${status}: ${stderr.trim()}`);
    this.status = status;
    this.stderr = stderr;
  }
}

/** Runs a command to completion; throws CommandError on a non-zero exit unless `allowFail`. */
export function run(
  cmd: string,
  args: readonly string[],
  opts: { allowFail?: boolean } = {},
): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(cmd, args, { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], maxBuffer: 64 * 1024 * 1024 });
  if (r.error) throw r.error;
  if (r.status !== 0 && !opts.allowFail) throw new CommandError([cmd, ...args].join(' '), r.status, r.stderr);
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

const pidFile = (name: string) => join(state.run, `${name}.pid`);

export function isAlive(pid: number): boolean {
  try {
    process.kill(pid, 0);
  } catch {
    return false;
  }
  // A zombie still answers kill(0); it is not running.
  try {
    return !/^\d+ \(.*\) Z/.test(readFileSync(`/proc/${pid}/stat`, 'utf8'));
  } catch {
    return false;
  }
}

/** Field 22 of /proc/PID/stat: start time in clock ticks since boot. */
function startTime(pid: number): string | undefined {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2).split(' ')[19];
  } catch {
    return undefined;
  }
}

/** The pid of a daemon started by `startDaemon`, if it still runs the same executable. */
export function daemonPid(name: string): number | undefined {
  if (!existsSync(pidFile(name))) return undefined;
  const [pidText, started] = readFileSync(pidFile(name), 'utf8').split('\n');
  const pid = Number(pidText);
  if (!Number.isInteger(pid) || pid <= 0 || !isAlive(pid)) return undefined;
  // Guards against a recycled pid: the start time is fixed at fork and survives exec.
  return startTime(pid) === started ? pid : undefined;
}

/**
 * Starts a detached daemon (its own session, so it outlives the CLI and can be
 * killed as a group), output to .cluster/logs/NAME.log, pid to .cluster/run/NAME.pid.
 */
export function startDaemon(
  name: string,
  cmd: string,
  args: readonly string[],
  env: NodeJS.ProcessEnv = process.env,
): number {
  mkdirSync(state.run, { recursive: true });
  mkdirSync(state.logs, { recursive: true });
  const log = openSync(join(state.logs, `${name}.log`), 'a');
  const child = spawn(cmd, args, { detached: true, stdio: ['ignore', log, log], env });
  closeSync(log);
  if (child.pid === undefined) throw new Error(`Failed to start ${name} (${cmd})`);
  child.unref();
  writeFileSync(pidFile(name), `${child.pid}\n${startTime(child.pid) ?? ''}\n`);
  return child.pid;
}

/** SIGTERM, then SIGKILL after `graceMs`; resolves once the daemon is gone. */
export async function stopDaemon(name: string, graceMs = 5000): Promise<void> {
  const pid = daemonPid(name);
  rmSync(pidFile(name), { force: true });
  if (pid === undefined) return;
  await killAndWait(pid, graceMs);
}

export async function killAndWait(pid: number, graceMs: number): Promise<void> {
  try {
    process.kill(pid, graceMs > 0 ? 'SIGTERM' : 'SIGKILL');
  } catch {
    return;
  }
  const deadline = Date.now() + graceMs;
  while (isAlive(pid)) {
    if (Date.now() > deadline) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        return;
      }
    }
    await sleep(50);
  }
}

export function logTail(name: string, lines = 30): string {
  try {
    return readFileSync(join(state.logs, `${name}.log`), 'utf8')
      .split('\n')
      .slice(-lines)
      .join('\n');
  } catch {
    return '(no log)';
  }
}

/** Polls `check` until it returns true; throws with `describe()` after `timeoutMs`. */
export async function waitFor(
  what: string,
  check: () => Promise<boolean> | boolean,
  timeoutMs: number,
  describe: () => string = () => '',
): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (await check()) return;
    if (Date.now() > deadline) throw new Error(`Timed out after ${timeoutMs} ms waiting for ${what}\n${describe()}`);
    await sleep(200);
  }
}
