// Shared by the operator and failover suites: the deploy script, volumes as JSON,
// and machines put back the way they booted.
import { spawn as spawnLocal } from 'node:child_process';
import { join } from 'node:path';
import { repoRoot } from '../harness/paths.ts';
import { kubectl } from './cluster.ts';
import { eventually } from './eventually.ts';
import { execInNode } from './nodes.ts';

const deployScript = join(repoRoot, 'scripts/cluster-deploy.ts');

/** scripts/cluster-deploy.ts ARGS (deploy, undeploy, start-controller, start-agent NODE, kill NAME …). */
export async function deploy(...args: string[]): Promise<void> {
  await new Promise<void>((resolve, reject) => {
    const child = spawnLocal(process.execPath, [deployScript, ...args]);
    let err = '';
    child.stderr?.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('exit', (code) =>
      code === 0 ? resolve() : reject(new Error(`cluster-deploy ${args.join(' ')} exited ${code}: ${err}`)),
    );
  });
}

export type Condition = { type: string; status: string; reason: string; message: string; observedGeneration?: number };
export type Rv = {
  metadata: { name: string; generation: number; finalizers?: string[]; annotations?: Record<string, string> };
  status?: {
    phase?: string;
    primary?: string;
    epoch?: number;
    connection?: string;
    disks?: string;
    observedGeneration?: number;
    replicas?: {
      node: string;
      role?: string;
      connectionState?: string;
      diskState?: string;
      sizeBytes?: number;
      capacityBytes?: number;
    }[];
    conditions?: Condition[];
    fence?: { node: string; epoch: number; by: string; reason: string };
    lastFailover?: { from: string; to: string; epoch: number; reason: string; time: string };
    lastRoleChange?: { from?: string; to: string; epoch: number; reason: string; time: string; message: string };
    lastWorkloadRelease?: { node: string; epoch: number; pods: string[]; volumeAttachments: string[]; at: string };
  };
};

export async function getRv(ns: string, name: string): Promise<Rv> {
  return JSON.parse((await kubectl(['get', 'rv', name, '-n', ns, '-o', 'json'])).stdout) as Rv;
}

export function readyCondition(rv: Rv): Condition | undefined {
  const c = rv.status?.conditions?.find((x) => x.type === 'Ready');
  return c && c.observedGeneration === rv.metadata.generation ? c : undefined;
}

/** Ready=True for the current generation, with `primary` Primary and the pair Connected UpToDate/UpToDate. */
export async function waitReady(ns: string, name: string, primary: string, timeoutMs = 120_000): Promise<Rv> {
  return eventually(
    async () => {
      const rv = await getRv(ns, name);
      expect({
        ready: readyCondition(rv)?.status,
        primary: rv.status?.primary,
        connection: rv.status?.connection,
        disks: rv.status?.disks,
      }).toEqual({ ready: 'True', primary, connection: 'Connected', disks: 'UpToDate/UpToDate' });
      expect(rv.status?.replicas?.find((r) => r.role === 'Primary')?.node).toBe(primary);
      return rv;
    },
    { timeoutMs, intervalMs: 1000, what: `${name}: Ready with ${primary} Primary` },
  );
}

/** Event reasons recorded for an object, oldest first. */
export async function eventReasons(ns: string, name: string): Promise<string[]> {
  return (
    await kubectl([
      'get',
      'events',
      '-n',
      ns,
      '--field-selector',
      `involvedObject.name=${name}`,
      '--sort-by=.metadata.creationTimestamp',
      '-o',
      'jsonpath={.items[*].reason}',
    ])
  ).stdout
    .split(' ')
    .filter(Boolean);
}

/** Blank disks and an empty /run/tandem on both nodes: no engine, no mount, no metadata left by an earlier run. */
export async function freshDisks(mountPaths: readonly string[] = ['/mydata/mysql']): Promise<void> {
  const script = [
    ...mountPaths.map((m) => `umount ${m} 2>/dev/null; umount ${m} 2>/dev/null`),
    'for d in /run/tandem/*.fuse; do [ -d "$d" ] && { losetup -j "$d/disk" -O NAME -n | xargs -r -n1 losetup -d; umount "$d"; }; done 2>/dev/null',
    // A pid file may hold a pid of a container's namespace (an agent pod's engine): kill
    // only a tandem or nbdfuse process of this node's network namespace.
    'for p in /run/tandem/*.pid; do [ -f "$p" ] || continue; pid=$(cat "$p"); [ "$(readlink /proc/$pid/ns/net)" = "$(readlink /proc/self/ns/net)" ] && grep -qaE "tandem|nbdfuse" /proc/$pid/cmdline && kill -9 "$pid"; done 2>/dev/null',
    // Everything of the volumes, not the running agent's fence socket (agent.sock and the
    // file it points to): without it every fence-peer run fails and, since a promotion
    // while alone runs fence-peer first, no failover happens.
    // Nor the socket of a running engine host (the chart's pod), through which the agent starts engines.
    'keep=/; for d in /proc/[0-9]*; do grep -qa tandem-engine-host "$d/cmdline" 2>/dev/null && [ "$(readlink $d/ns/net)" = "$(readlink /proc/self/ns/net)" ] && keep=engine-host.sock; done',
    'find /run/tandem -mindepth 1 -maxdepth 1 ! -name \'agent.sock*\' ! -name "$keep" -exec rm -rf {} +',
    // …and a stopped agent's leftovers: a link to no socket, sockets the link does not name.
    '[ -e /run/tandem/agent.sock ] || rm -f /run/tandem/agent.sock',
    't=$(readlink /run/tandem/agent.sock 2>/dev/null); for f in /run/tandem/agent.sock.*; do [ -e "$f" ] && [ "$(basename "$f")" != "$t" ] && rm -f "$f"; done',
    'blkdiscard -f /dev/sdb1 2>/dev/null && blkdiscard -f /dev/sdb2 2>/dev/null',
    'true',
  ].join('; ');
  for (const n of ['master', 'backup']) await execInNode(n, ['sh', '-c', script]);
}

/**
 * After a suite: volumes first (the controller must be up to take their engines down),
 * then the processes; later suites expect machines as they booted (empty /run/tandem,
 * blank disks).
 */
export async function tearDown(ns: string, mountPaths?: readonly string[]): Promise<void> {
  await kubectl(['delete', 'rv', '--all', '-n', ns, '--timeout=90s']).catch(() => undefined);
  await kubectl(['delete', 'namespace', ns, '--wait=false']).catch(() => undefined);
  await deploy('undeploy').catch(() => undefined);
  await freshDisks(mountPaths).catch(() => undefined);
}
