// The engine host's server: runs the tandemadm command lines the node agent sends
// (protocol.ts), as children of this process, in this pod. `tandemadm up` starts the
// engine as a detached process and exits once it reports READY, so every engine is a
// process of the engine host's pod: the agent's container can restart, be upgraded
// or be killed without taking one engine down. A new agent finds the engines by
// their control sockets in the shared run dir, as the old one did.
//
// Nothing here keeps state about engines: the run dir (pid files, control sockets)
// is the state, and tandemadm is the only thing that reads or changes it.
import { execFile } from 'node:child_process';
import { chmod, unlink } from 'node:fs/promises';
import net from 'node:net';
import { fileURLToPath } from 'node:url';
import type { Logger } from 'pino';
import {
  COMMAND_TIMEOUT_MS,
  type EngineHostError,
  type HostAnswer,
  MAX_REQUEST_BYTES,
  parseRequest,
  type RunResult,
} from './protocol.ts';

const TANDEMADM = fileURLToPath(new URL('../../bin/tandemadm.js', import.meta.url));

/** Runs `node tandemadm ARGS…`; the exit code and output, whatever they are. */
export type Runner = (args: readonly string[]) => Promise<RunResult>;

export const runTandemadm: Runner = (args) =>
  new Promise((resolve) => {
    execFile(process.execPath, [TANDEMADM, ...args], { timeout: COMMAND_TIMEOUT_MS }, (err, stdout, stderr) => {
      const code = err
        ? typeof (err as { code?: unknown }).code === 'number'
          ? (err as { code: number }).code
          : 1
        : 0;
      resolve({ code, stdout, stderr });
    });
  });

export async function serveEngineHost(o: { socket: string; log: Logger; run?: Runner }): Promise<net.Server> {
  const run = o.run ?? runTandemadm;
  await unlink(o.socket).catch(() => undefined);
  const server = net.createServer((s) => {
    let buf = '';
    let answered = false;
    s.setEncoding('utf8');
    s.on('error', () => s.destroy());
    const answer = (a: HostAnswer) => {
      answered = true;
      s.end(`${JSON.stringify(a)}\n`);
    };
    s.on('data', (chunk: string) => {
      if (answered) return;
      buf += chunk;
      const nl = buf.indexOf('\n');
      if (nl < 0) {
        if (buf.length > MAX_REQUEST_BYTES)
          answer({ ok: false, error: { code: 'TANDEM_ERR_ENGINE_HOST_REQUEST', message: 'the request is too long' } });
        return;
      }
      const line = buf.slice(0, nl);
      let args: string[];
      try {
        args = parseRequest(line).run;
      } catch (err) {
        const e = err as EngineHostError;
        o.log.warn({ error: e.message }, 'Refused a request');
        answer({ ok: false, error: { code: e.code, message: e.message } });
        return;
      }
      answered = true;
      const started = Date.now();
      void run(args).then(
        (result) => {
          o.log.info({ args, code: result.code, ms: Date.now() - started }, 'Ran tandemadm');
          s.end(`${JSON.stringify({ ok: true, result } satisfies HostAnswer)}\n`);
        },
        (err: unknown) => {
          o.log.error({ err, args }, 'Could not run tandemadm');
          s.end(
            `${JSON.stringify({ ok: false, error: { code: 'TANDEM_ERR_ENGINE_HOST_PROTOCOL', message: String(err) } } satisfies HostAnswer)}\n`,
          );
        },
      );
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(o.socket, () => {
      server.off('error', reject);
      resolve();
    });
  });
  // Root only: whoever reaches this socket starts and stops engines.
  await chmod(o.socket, 0o600);
  return server;
}
