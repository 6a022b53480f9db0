// The engine host (src/engine-host) with real engines: the node agent's tandemadm
// command lines run in the host's process tree, their exit codes and messages come
// back unchanged, requests that are not a tandemadm command line are refused, and
// the host's SIGTERM (its pod deleted) stops its engines cleanly while the engine of
// the other node keeps running. The pod side (agent restarts while a writer streams)
// is test/e2e/engine-host.test.ts.
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import { setTimeout as sleep } from 'node:timers/promises';
import { jest } from '@jest/globals';
import { processAlive } from '../../src/cli/process-alive.ts';
import { EngineHostClient } from '../../src/engine-host/client.ts';
import { ENGINE_HOST_ERRORS, EngineHostError } from '../../src/engine-host/protocol.ts';
import { NODE, Pair } from './support/pair.ts';

jest.setTimeout(120_000);

const HOST = join(import.meta.dirname, '../../bin/tandem-engine-host.js');

describe('the engine host runs tandemadm for the agent', () => {
  let pair: Pair;
  let host: ChildProcess;
  let hostLog = '';
  let client: EngineHostClient;
  const socket = () => join(pair.runDir('master'), 'engine-host.sock');
  /** tandemadm ARGS as the agent sends it for master: `-c CONF --node master --run-dir RUN …`. */
  const inHost = (...args: string[]) =>
    client.run(['-c', pair.configPath('master'), '--node', 'master', '--run-dir', pair.runDir('master'), ...args]);

  beforeAll(async () => {
    pair = await Pair.create({ protocol: 'C', masterMiB: 16, backupMiB: 16 });
    host = spawn(NODE, [HOST, '--run-dir', pair.runDir('master'), '--stop-grace-seconds', '10'], {
      env: { ...process.env, TANDEM_BOOT_ID_FILE: pair.bootIdFile('master') },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    host.stdout?.on('data', (d: Buffer) => {
      hostLog += d.toString();
    });
    for (let i = 0; i < 200 && !existsSync(socket()); i++) await sleep(50);
    client = new EngineHostClient(socket());
  });

  afterAll(async () => {
    if (host.exitCode === null) host.kill('SIGKILL');
    await pair.destroy();
  });

  test('up, primary and status run in the host; tandemadm refusals come back with their code and text', async () => {
    expect(await inHost('create-md', 'mysql')).toMatchObject({ code: 0 });
    expect(await inHost('up', 'mysql')).toMatchObject({ code: 0, stderr: '' });
    await pair.ok('backup', 'create-md', 'mysql');
    await pair.ok('backup', 'up', 'mysql');
    await pair.waitFor('master', (s) => s.cstate === 'Connected', 20_000, 'Connected');
    expect(await inHost('--', '--overwrite-data-of-peer', 'primary', 'mysql')).toMatchObject({ code: 0 });
    await pair.waitInSync();

    // The engine the host started answers on its control socket, as any engine does.
    const status = await inHost('status', 'mysql');
    expect(status.code).toBe(0);
    expect(status.stdout).toContain('ro:Primary/Secondary');
    expect(processAlive(await pair.pid('master'))).toBe(true);

    // DRBD's refusal, unchanged: create-md over the metadata of a running resource.
    const refused = await inHost('create-md', 'mysql');
    expect(refused.code).not.toBe(0);
    expect(refused.stderr).toContain("run 'tandemadm down mysql' before create-md");
    expect(hostLog).toContain('Ran tandemadm');
  });

  test('anything but a tandemadm command line is refused with the reason; no host is a clear error', async () => {
    await expect(client.run(['--__engine', 'up', 'mysql'])).rejects.toThrow(/internal flags/);
    await expect(client.run([])).rejects.toThrow(/the engine host refused: run: Too small/);
    const none = new EngineHostClient(join(pair.dir, 'no-such.sock'));
    const err = await none.run(['status', 'mysql']).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(EngineHostError);
    expect((err as EngineHostError).code).toBe(ENGINE_HOST_ERRORS.unavailable);
    expect((err as Error).message).toContain('not running on this node');
  });

  test("the host's SIGTERM stops its engines cleanly; the peer's engine keeps running", async () => {
    const pid = await pair.pid('master');
    // Demote first, as an operator moving the Primary away before an engine-host upgrade would.
    expect(await inHost('secondary', 'mysql')).toMatchObject({ code: 0 });
    const exited = new Promise<number | null>((r) => host.on('exit', (code) => r(code)));
    host.kill('SIGTERM');
    expect(await exited).toBe(0);
    expect(processAlive(pid)).toBe(false);
    // A clean shutdown: the engine's own SIGTERM path ran and removed its control socket.
    expect(existsSync(join(pair.runDir('master'), 'mysql.ctl'))).toBe(false);
    expect(await readFile(pair.logPath('master'), 'utf8')).toContain('"why":"SIGTERM"');
    expect(hostLog).toContain('Stopping an engine');
    const backup = await pair.waitFor('backup', (s) => s.cstate !== 'Connected', 20_000, 'the peer gone');
    expect(backup.disk).toBe('UpToDate');
  });
});

test('a zombie is not a running engine: tandemadm down does not wait on one', async () => {
  // `sleep 30` (exec'd by sh) never collects its child `sleep 0.1`: a zombie, as an engine
  // is in a container whose first process does not collect orphans.
  const parent = spawn('sh', ['-c', 'sleep 0.1 & echo $!; exec sleep 30'], { stdio: ['ignore', 'pipe', 'ignore'] });
  try {
    const pid = Number(
      await new Promise<string>((r) => parent.stdout?.once('data', (d: Buffer) => r(d.toString().trim()))),
    );
    let state = '';
    for (let i = 0; i < 100 && state !== 'Z'; i++) {
      await sleep(50);
      const stat = await readFile(`/proc/${pid}/stat`, 'utf8');
      state = stat.charAt(stat.lastIndexOf(')') + 2);
    }
    expect(state).toBe('Z');
    expect(() => process.kill(pid, 0)).not.toThrow(); // what `down` used to wait on
    expect(processAlive(pid)).toBe(false);
    expect(processAlive(parent.pid!)).toBe(true);
  } finally {
    parent.kill('SIGKILL');
  }
});
