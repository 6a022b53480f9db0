// Reaching inside simulated nodes from a test (local mode only), through the
// same `cluster:exec` a person uses.
import { spawn } from 'node:child_process';
import type { ChildProcess } from 'node:child_process';
import { join } from 'node:path';
import type * as k8s from '@kubernetes/client-node';
import { repoRoot } from '../harness/paths.ts';
import { harness } from './cluster.ts';
import type { RunResult } from './cluster.ts';

const cli = join(repoRoot, 'test/e2e/harness/cli.ts');

/** Runs a command inside a node's namespaces and waits for it. */
export function execInNode(node: string, cmd: readonly string[]): Promise<RunResult> {
  return harness('exec', node, '--', ...cmd);
}

/** Starts a long-running command inside a node; its stdin is a pipe the caller may close. */
export function spawnInNode(node: string, cmd: readonly string[]): ChildProcess {
  return spawn(process.execPath, [cli, 'exec', node, '--', ...cmd], { stdio: ['pipe', 'pipe', 'pipe'] });
}

/** Resolves with the exit code or signal once the process has ended. */
export function exited(child: ChildProcess): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
  if (child.exitCode !== null || child.signalCode !== null)
    return Promise.resolve({ code: child.exitCode, signal: child.signalCode });
  return new Promise((resolve) => child.once('exit', (code, signal) => resolve({ code, signal })));
}

/** Resolves once the child has printed `text` on stdout. */
export function printed(child: ChildProcess, text: string): Promise<void> {
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout?.on('data', (d: Buffer) => {
      out += d.toString();
      if (out.includes(text)) resolve();
    });
    child.once('exit', (code) => reject(new Error(`exited (${code}) before printing ${text}: ${out}`)));
  });
}

// Listens on PORT, answers every connection with "hello from HOSTNAME", and ends
// when its stdin closes (or after two minutes, whatever happens to the test).
const serverScript = `
const net = require('node:net'), os = require('node:os');
const server = net.createServer((s) => s.end('hello from ' + os.hostname() + '\\n'));
server.listen(Number(process.argv[1]), () => console.log('listening'));
process.stdin.on('end', () => process.exit(0)).resume();
setTimeout(() => process.exit(0), 120000).unref();
`;

export function startTcpServer(node: string, port: number): ChildProcess {
  return spawnInNode(node, [process.execPath, '-e', serverScript, String(port)]);
}

// Prints what one connection attempt got: the server's line, "timeout" or "error CODE".
const probeScript = `
const s = require('node:net').connect(Number(process.argv[2]), process.argv[1]);
s.setTimeout(Number(process.argv[3]), () => { console.log('timeout'); process.exit(0); });
s.on('data', (d) => { console.log(String(d).trim()); process.exit(0); });
s.on('error', (e) => { console.log('error ' + e.code); process.exit(0); });
`;

/** One TCP connection attempt from inside `from` to ip:port. */
export async function tcpProbe(from: string, ip: string, port: number, timeoutMs = 2000): Promise<string> {
  const r = await execInNode(from, [process.execPath, '-e', probeScript, ip, String(port), String(timeoutMs)]);
  return r.stdout.trim();
}

export type NodeHealth = { ready: string; taints: string[]; internalIp: string | undefined };

export async function nodeHealth(core: k8s.CoreV1Api, name: string): Promise<NodeHealth> {
  const node = await core.readNode({ name });
  return {
    ready: node.status?.conditions?.find((c) => c.type === 'Ready')?.status ?? 'missing',
    taints: (node.spec?.taints ?? []).map((t) => `${t.key}:${t.effect}`),
    internalIp: node.status?.addresses?.find((a) => a.type === 'InternalIP')?.address,
  };
}
