// The control socket between tandemadm and a running engine: one JSON request
// per line, one JSON response per line, on `<run-dir>/<resource>.ctl`.
import net from 'node:net';
import { unlink } from 'node:fs/promises';
import { z } from 'zod';

export const ControlRequest = z.object({
  cmd: z.enum([
    'status',
    'primary',
    'secondary',
    'connect',
    'disconnect',
    'attach',
    'detach',
    'down',
    'pause-sync',
    'resume-sync',
    'outdate',
    'new-current-uuid',
    'verify',
    'invalidate',
    'invalidate-remote',
    'resize',
    'grow-disk',
    'reattach',
    'resume-io',
    'memory',
  ]),
  clearBitmap: z.boolean().optional(),
  force: z.boolean().optional(),
  discardMyData: z.boolean().optional(),
  /** resize: the device's new size in bytes (a StandAlone Primary only); grow-disk: the size to hold. */
  size: z.number().int().positive().optional(),
});
export type ControlRequest = z.infer<typeof ControlRequest>;

export type ControlResponse =
  | { ok: true; result?: unknown }
  | { ok: false; error: { code: string; message: string; exitCode: number } };

export async function serveControl(
  path: string,
  handle: (req: ControlRequest) => Promise<unknown>,
): Promise<net.Server> {
  await unlink(path).catch(() => {});
  const server = net.createServer((s) => {
    let buf = '';
    s.setEncoding('utf8');
    s.on('error', () => s.destroy());
    s.on('data', (chunk: string) => {
      buf += chunk;
      if (buf.length > 64 * 1024) {
        s.destroy();
        return;
      }
      const nl = buf.indexOf('\n');
      if (nl < 0) return;
      const line = buf.slice(0, nl);
      buf = '';
      void (async () => {
        let res: ControlResponse;
        try {
          const req = ControlRequest.parse(JSON.parse(line));
          res = { ok: true, result: await handle(req) };
        } catch (err) {
          const e = err as { code?: unknown; message?: string; exitCode?: unknown };
          res = {
            ok: false,
            error: {
              code: typeof e.code === 'string' ? e.code : 'TANDEM_ERR_USAGE',
              message: e.message ?? String(err),
              exitCode: typeof e.exitCode === 'number' ? e.exitCode : 10,
            },
          };
        }
        s.end(`${JSON.stringify(res)}\n`);
      })();
    });
  });
  await new Promise<void>((resolve, reject) => {
    server.once('error', reject);
    server.listen(path, () => {
      server.off('error', reject);
      resolve();
    });
  });
  return server;
}

export class NotRunningError extends Error {
  constructor(path: string) {
    super(`no engine answers on ${path}`);
    this.name = 'NotRunningError';
  }
}

export function callControl(path: string, req: ControlRequest, timeoutMs = 60_000): Promise<ControlResponse> {
  return new Promise((resolve, reject) => {
    const s = net.connect(path);
    let buf = '';
    const timer = setTimeout(() => {
      s.destroy();
      reject(new Error(`engine on ${path} did not answer within ${timeoutMs} ms`));
    }, timeoutMs);
    s.setEncoding('utf8');
    s.on('connect', () => s.write(`${JSON.stringify(req)}\n`));
    s.on('data', (c: string) => {
      buf += c;
    });
    s.on('end', () => {
      clearTimeout(timer);
      try {
        resolve(JSON.parse(buf) as ControlResponse);
      } catch {
        reject(new Error(`engine on ${path} sent a malformed answer`));
      }
    });
    s.on('error', (err: NodeJS.ErrnoException) => {
      clearTimeout(timer);
      reject(err.code === 'ENOENT' || err.code === 'ECONNREFUSED' ? new NotRunningError(path) : err);
    });
  });
}
