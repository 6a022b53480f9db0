// DRBD's handlers: user commands run at well-defined moments, with DRBD's
// environment variables, so scripts written for DRBD (notify-split-brain.sh …)
// keep working. A handler that hangs is killed after its timeout; its exit code
// is logged and, where DRBD defines it, acted upon by the caller.
import { spawn } from 'node:child_process';
import type { Logger } from 'pino';

export const HANDLER_NAMES = [
  'split-brain',
  'pri-lost-after-sb',
  'pri-on-incon-degr',
  'local-io-error',
  'fence-peer',
  'before-resync-target',
  'after-resync-target',
  'out-of-sync',
  'unfence-peer',
] as const;
export type HandlerName = (typeof HANDLER_NAMES)[number];

export interface HandlerContext {
  resource: string;
  minor: number;
  peerAddress: string | undefined;
  peerAf: 'ipv4' | 'ipv6' | undefined;
  peerName: string | undefined;
  configFile: string | undefined;
  logger: Logger;
  timeoutMs?: number;
}

/** Runs `command` with /bin/sh; resolves with the exit code (undefined when not configured, -1 on timeout). */
export function runHandler(
  name: HandlerName,
  command: string | undefined,
  ctx: HandlerContext,
  extraEnv: Record<string, string> = {},
): Promise<number | undefined> {
  if (!command) return Promise.resolve(undefined);
  const env: NodeJS.ProcessEnv = {
    ...process.env,
    DRBD_RESOURCE: ctx.resource,
    DRBD_MINOR: String(ctx.minor),
    DRBD_VOLUME: '0',
    ...(ctx.peerAddress ? { DRBD_PEER_ADDRESS: ctx.peerAddress, DRBD_PEER_AF: ctx.peerAf ?? 'ipv4' } : {}),
    ...(ctx.peerName ? { DRBD_PEERS: ctx.peerName, DRBD_PEER: ctx.peerName } : {}),
    ...(ctx.configFile ? { DRBD_CONF: ctx.configFile } : {}),
    TANDEM_HANDLER: name,
    ...extraEnv,
  };
  const log = ctx.logger.child({ handler: name });
  log.info({ command }, `Running the ${name} handler`);
  return new Promise((resolve) => {
    const child = spawn('/bin/sh', ['-c', command], { env, stdio: ['ignore', 'pipe', 'pipe'] });
    let output = '';
    const collect = (b: Buffer): void => {
      if (output.length < 4096) output += b.toString('utf8');
    };
    child.stdout.on('data', collect);
    child.stderr.on('data', collect);
    const timer = setTimeout(() => {
      child.kill('SIGKILL');
    }, ctx.timeoutMs ?? 60_000);
    child.on('error', (err) => {
      clearTimeout(timer);
      log.error({ err }, `The ${name} handler could not be started`);
      resolve(-1);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      const exit = signal ? -1 : (code ?? -1);
      log[exit === 0 ? 'info' : 'warn'](
        { exit, signal, output: output.trim() },
        `The ${name} handler exited with ${signal ?? exit}`,
      );
      resolve(exit);
    });
  });
}
