// tandem-csi --health-port: the liveness endpoint the chart's CSI pods are probed on.
// The real driver process (node role, no API server needed), its real socket, a real
// HTTP GET: 200 while the driver answers Probe over its socket, 503 once it cannot.
import { type ChildProcess, execFile, spawn } from 'node:child_process';
import { mkdtemp, rm } from 'node:fs/promises';
import { createServer } from 'node:net';
import { homedir, tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { jest } from '@jest/globals';
import { repoRoot } from '../e2e/harness/paths.ts';
import { eventually } from '../e2e/lib/eventually.ts';

jest.setTimeout(5 * 60_000);
const run = promisify(execFile);

let dir: string;
let driver: ChildProcess;
let log = '';
let port = 0;
const healthz = async (path = '/healthz') => {
  const res = await fetch(`http://127.0.0.1:${port}${path}`, { signal: AbortSignal.timeout(10_000) });
  return { status: res.status, body: res.status === 404 ? undefined : await res.json() };
};

beforeAll(async () => {
  // The CSI protobuf from its Go module, into the cache (instant when it is there).
  await run('bash', [
    join(repoRoot, 'scripts/fetch-protos.sh'),
    process.env.TANDEM_CACHE ?? join(homedir(), '.cache/tandem'),
  ]);
  dir = await mkdtemp(join(tmpdir(), 'tandem-csi-health-'));
  // A port free a moment ago; the driver fails to start (and the test says so) if it is taken since.
  const probe = createServer();
  await new Promise<void>((resolve) => probe.listen(0, resolve));
  port = (probe.address() as { port: number }).port;
  await new Promise((resolve) => probe.close(resolve));
  driver = spawn(
    process.execPath,
    [
      join(repoRoot, 'bin/tandem-csi.js'),
      '--mode',
      'node',
      '--node',
      'n1',
      '--endpoint',
      `unix://${dir}/csi.sock`,
      '--run-dir',
      dir,
      '--health-port',
      String(port),
    ],
    { stdio: ['ignore', 'pipe', 'pipe'] },
  );
  driver.stdout?.on('data', (b: Buffer) => {
    log += b.toString();
  });
  driver.stderr?.on('data', (b: Buffer) => {
    log += b.toString();
  });
  await eventually(
    async () => {
      if (driver.exitCode !== null) throw new Error(`tandem-csi exited ${driver.exitCode}: ${log}`);
      expect(log).toContain('Serving /healthz');
    },
    { timeoutMs: 60_000, what: 'tandem-csi serving /healthz' },
  );
});

afterAll(async () => {
  driver?.kill('SIGKILL');
  if (dir) await rm(dir, { recursive: true, force: true });
});

test('200 while the driver answers Probe on its socket', async () => {
  expect(await healthz()).toEqual({ status: 200, body: { ok: true, ready: true } });
});

test('any other path is 404', async () => {
  expect((await healthz('/metrics')).status).toBe(404);
});

test('503 with the reason once the socket does not answer (the kubelet would restart the pod)', async () => {
  await rm(join(dir, 'csi.sock'));
  const h = await healthz();
  expect(h.status).toBe(503);
  expect(h.body).toMatchObject({ ok: false, error: expect.any(String) });
});
