// The handler script and the agent's socket speak one line each way: a fence-peer
// run asks for a fence and exits with the agent's DRBD code; an unfence-peer run
// asks for a lift and a split-brain run for a rejoin, and both exit 0. A garbled
// request gets exit 1 (the engine stays frozen).
import { execFile } from 'node:child_process';
import { mkdtempSync, readdirSync, rmSync } from 'node:fs';
import { connect } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import pino from 'pino';
import { serveFenceRequests, type FenceAction } from './fence.ts';

const script = fileURLToPath(new URL('../../bin/tandem-fence-peer.js', import.meta.url));
const dir = mkdtempSync(join(tmpdir(), 'tandem-fence-test-'));
const sock = join(dir, 'agent.sock');
const asked: [string, FenceAction][] = [];
let server: Awaited<ReturnType<typeof serveFenceRequests>>;

beforeAll(async () => {
  server = await serveFenceRequests(
    sock,
    async (resource, action) => {
      asked.push([resource, action]);
      return action !== 'fence' ? 0 : resource === 'gone' ? 6 : 4;
    },
    pino({ level: 'silent' }),
  );
});
afterAll(async () => {
  await new Promise<void>((r) => server.close(() => r()));
  // The last agent to stop takes its socket and the name with it.
  expect(readdirSync(dir)).toEqual([]);
  rmSync(dir, { recursive: true, force: true });
});

function runHandler(env: Record<string, string>): Promise<{ code: number; out: string }> {
  return new Promise((resolve) => {
    execFile(process.execPath, [script, sock], { env: { ...process.env, ...env } }, (err, stdout, stderr) => {
      resolve({ code: err ? Number((err as { code?: number }).code ?? 1) : 0, out: stdout + stderr });
    });
  });
}

test("fence-peer: exits with the agent's code (4 fenced, 6 superseded)", async () => {
  expect(await runHandler({ DRBD_RESOURCE: 'db.mysql', TANDEM_HANDLER: 'fence-peer' })).toMatchObject({
    code: 4,
    out: expect.stringMatching(/peer fenced/),
  });
  expect(await runHandler({ DRBD_RESOURCE: 'gone', TANDEM_HANDLER: 'fence-peer' })).toMatchObject({ code: 6 });
  expect(asked.splice(0)).toEqual([
    ['db.mysql', 'fence'],
    ['gone', 'fence'],
  ]);
});

test('unfence-peer: asks for a lift and exits 0', async () => {
  expect(await runHandler({ DRBD_RESOURCE: 'db.mysql', TANDEM_HANDLER: 'unfence-peer' })).toMatchObject({
    code: 0,
    out: expect.stringMatching(/fence is lifted/),
  });
  expect(asked.splice(0)).toEqual([['db.mysql', 'unfence']]);
});

test('split-brain: asks the agent to look at the resource now and exits 0', async () => {
  expect(await runHandler({ DRBD_RESOURCE: 'db.mysql', TANDEM_HANDLER: 'split-brain' })).toMatchObject({
    code: 0,
    out: expect.stringMatching(/looks at the split brain now/),
  });
  expect(asked.splice(0)).toEqual([['db.mysql', 'rejoin']]);
});

test('no agent listening: exit 1 (stay frozen), with the reason', async () => {
  const r = await new Promise<{ code: number; out: string }>((resolve) => {
    execFile(
      process.execPath,
      [script, join(dir, 'nobody.sock')],
      { env: { ...process.env, DRBD_RESOURCE: 'db.mysql' } },
      (err, stdout, stderr) =>
        resolve({ code: err ? Number((err as { code?: number }).code) : 0, out: stdout + stderr }),
    );
  });
  expect(r.code).toBe(1);
  expect(r.out).toMatch(/cannot ask the node agent/);
});

test('a new agent started while the old one shuts down keeps the socket: the old one closing does not remove it', async () => {
  const newer = await serveFenceRequests(sock, async () => 4, pino({ level: 'silent' }));
  const older = server;
  server = newer;
  await new Promise<void>((r) => older.close(() => r()));
  expect(await runHandler({ DRBD_RESOURCE: 'db.mysql', TANDEM_HANDLER: 'fence-peer' })).toMatchObject({ code: 4 });
});

test('an unknown action or a line that is not JSON gets exit 1 and asks nothing', async () => {
  for (const line of ['{"resource":"db.mysql","action":"promote"}', 'not json']) {
    const reply = await new Promise<string>((resolve) => {
      const c = connect(sock);
      let b = '';
      c.setEncoding('utf8');
      c.on('data', (d: string) => {
        b += d;
      });
      c.on('end', () => resolve(b));
      c.write(`${line}\n`);
    });
    expect(JSON.parse(reply)).toEqual({ exit: 1 });
  }
  expect(asked).toEqual([]);
});
