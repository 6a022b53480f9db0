// tandem as a user installs it: the chart's pods on the nodes' real kubelets, with the
// image built here (npm run image) and loaded into every node. Suites that run against
// the pods install it with `installChart()` and give the nodes back with `removeChart()`;
// faults on the pods are real: SIGKILL of a container's main process, found on the host.
import { appendFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { build } from '../../../scripts/image/build.ts';
import { importImages } from '../harness/images.ts';
import { repoRoot, state } from '../harness/paths.ts';
import { helm, kubectl } from './cluster.ts';
import { eventually } from './eventually.ts';
import { execInNode } from './nodes.ts';
import { deploy, freshDisks, tearDown } from './volumes.ts';

export const release = { name: 'tandem', namespace: 'tandem-system' } as const;
export type Component = 'controller' | 'node-agent' | 'engine-host' | 'csi-controller' | 'csi-node';

export type Pod = {
  metadata: { name: string; uid: string; labels?: Record<string, string>; deletionTimestamp?: string };
  spec: { nodeName?: string; containers: { image: string }[] };
  status: {
    phase?: string;
    podIP?: string;
    conditions?: { type: string; status: string }[];
    containerStatuses?: {
      name: string;
      ready: boolean;
      restartCount: number;
      imageID?: string;
      image?: string;
      state?: { running?: { startedAt?: string } };
    }[];
  };
};

export async function pods(component: Component): Promise<Pod[]> {
  const out = await kubectl([
    'get',
    'pods',
    '-n',
    release.namespace,
    '-l',
    `app.kubernetes.io/instance=${release.name},app.kubernetes.io/component=${component}`,
    '-o',
    'json',
  ]);
  return (JSON.parse(out.stdout) as { items: Pod[] }).items.filter((p) => !p.metadata.deletionTimestamp);
}

export const podReady = (p: Pod) => p.status.conditions?.find((c) => c.type === 'Ready')?.status === 'True';

/** The image built from this tree, loaded into every node (cached by content). */
export async function localImage(): Promise<{ repository: string; tag: string }> {
  const built = await build(repoRoot, ['tandem'], () => {});
  const [repository, tag] = built.tandem!.ref.split(':') as [string, string];
  return { repository, tag };
}

/** The CSI sidecars built here (csi-setup.sh), loaded into every running node; values for the chart. */
export async function localCsiSidecars(): Promise<string[]> {
  const built = await build(repoRoot, ['csi-sidecars'], () => {});
  await importImages([built['csi-sidecars']!]);
  const ref = built['csi-sidecars']!.ref;
  return [
    '--set',
    `csi.provisioner.image=${ref}`,
    '--set',
    `csi.attacher.image=${ref}`,
    '--set',
    `csi.resizer.image=${ref}`,
  ];
}

/**
 * `helm upgrade --install` of this tree's chart with only the image values set; waits for
 * every pod Ready. The CSI driver's pods run only with `csi` (their sidecars built here):
 * suites about volumes themselves leave them out.
 */
export async function helmInstall(
  image: { repository: string; tag: string },
  o: { csi?: boolean } = {},
): Promise<void> {
  await helm([
    'upgrade',
    '--install',
    release.name,
    join(repoRoot, 'helm/tandem'),
    '--namespace',
    release.namespace,
    '--create-namespace',
    '--reset-values',
    '--set',
    `image.repository=${image.repository}`,
    '--set',
    `image.tag=${image.tag}`,
    ...(o.csi ? await localCsiSidecars() : ['--set', 'csi.enabled=false']),
    '--wait',
    '--timeout=4m',
  ]);
}

/**
 * `helm upgrade --install` with only the image values changed, after the host-process
 * shortcut (npm run cluster:deploy) is stopped so nothing competes with the pods; waits
 * until every pod is Ready and applies the tutorial's StoragePool example.
 */
export async function installChart(mountPaths: readonly string[]): Promise<{ repository: string; tag: string }> {
  await deploy('undeploy').catch(() => undefined);
  await freshDisks(mountPaths);
  const image = await localImage();
  await helmInstall(image);
  await kubectl(['apply', '-f', join(repoRoot, 'examples/storage-pool.yaml')]);
  return image;
}

/**
 * Keeps the logs of tandem's pods (and of their previous containers) in
 * .cluster/logs/pods/, before the pods go: the kubelet deletes a pod's logs with it.
 */
export async function savePodLogs(): Promise<void> {
  const dir = join(state.logs, 'pods');
  mkdirSync(dir, { recursive: true });
  const stamp = new Date().toISOString();
  for (const component of ['controller', 'node-agent', 'engine-host', 'csi-controller', 'csi-node'] as const)
    for (const pod of await pods(component).catch(() => [])) {
      for (const previous of [true, false]) {
        const out = await kubectl([
          'logs',
          '-n',
          release.namespace,
          pod.metadata.name,
          ...(previous ? ['--previous'] : []),
        ]).catch(() => undefined);
        if (out?.stdout)
          appendFileSync(
            join(dir, `${pod.metadata.name}.log`),
            `#### ${stamp} ${previous ? 'previous container' : 'container'} on ${pod.spec.nodeName}\n${out.stdout}`,
          );
      }
    }
}

/** The release back to the shortcut's shape (no pods), and the nodes as they booted. */
export async function removeChart(mountPaths: readonly string[]): Promise<void> {
  await savePodLogs();
  await deploy('deploy').catch(() => undefined);
  await deploy('undeploy').catch(() => undefined);
  await freshDisks(mountPaths).catch(() => undefined);
}

/** The agent pod on `node` is Ready (after its node came back or its process was killed). */
export async function agentPodReady(node: string, timeoutMs = 180_000): Promise<void> {
  await eventually(
    async () => {
      const p = (await pods('node-agent')).find((x) => x.spec.nodeName === node);
      expect(p && podReady(p)).toBe(true);
    },
    { timeoutMs, what: `the agent pod on ${node} Ready` },
  );
}

/** The controller's Lease, printed as `-o` says. */
export function controllerLease(output: string) {
  return kubectl(['get', 'lease', '-n', release.namespace, `${release.name}-controller`, '-o', output]);
}

/** The pod name that holds the controller's Lease (the acting controller). */
export async function leaseHolder(): Promise<string | undefined> {
  const out = await controllerLease('jsonpath={.spec.holderIdentity}').catch(() => ({ stdout: '' }));
  return out.stdout || undefined;
}

/**
 * SIGKILL of the main process of `pod`'s container, from its node (the kubelet restarts
 * the container, as after an OOM kill). The process is found by the pod's cgroup (the
 * kubelet names it after the pod's uid), so another replica on the same node is left alone.
 */
export async function killPodProcess(pod: Pod): Promise<void> {
  const node = pod.spec.nodeName!;
  const script = `for d in /proc/[0-9]*; do
  grep -q 'pod${pod.metadata.uid}' $d/cgroup 2>/dev/null || continue
  case "$(tr '\\0' ' ' < $d/cmdline)" in "node "*) kill -9 "\${d#/proc/}"; echo "\${d#/proc/}" ;; esac
done`;
  const out = (await execInNode(node, ['sh', '-c', script])).stdout.trim();
  if (!out) throw new Error(`no node process of pod ${pod.metadata.name} found on ${node}`);
}

/** SIGKILL of the acting controller (the Lease holder); the standby takes the Lease over. */
export async function killLeader(): Promise<string> {
  const holder = await leaseHolder();
  const pod = (await pods('controller')).find((p) => p.metadata.name === holder);
  if (!pod) throw new Error(`the Lease holder ${holder ?? '(none)'} is not a running controller pod`);
  await killPodProcess(pod);
  return pod.metadata.name;
}

export async function killAgent(node: string): Promise<void> {
  const pod = (await pods('node-agent')).find((p) => p.spec.nodeName === node);
  if (!pod) throw new Error(`no agent pod on ${node}`);
  await killPodProcess(pod);
}

/**
 * Where the e2e suites that take nodes down run tandem: the chart's pods (the default),
 * or, with TANDEM_E2E_DEPLOY=processes, the host-process shortcut (npm run cluster:deploy).
 */
export const onPods = process.env.TANDEM_E2E_DEPLOY !== 'processes';

/** tandem as the suite runs it: the chart's pods, or the host processes. */
export async function installTandem(mountPaths: readonly string[]): Promise<void> {
  if (onPods) await installChart(mountPaths);
  else {
    await deploy('deploy');
    await freshDisks(mountPaths);
  }
}

/** A node that was stopped (or an agent that was killed) is back with its agent. */
export async function agentBack(node: string): Promise<void> {
  if (onPods) await agentPodReady(node);
  else await deploy('start-agent', node);
}

/** After the controller exited: the kubelet restarts a pod's; the shortcut's is started again. */
export async function controllerBack(): Promise<void> {
  if (!onPods) await deploy('start-controller');
}

/** Runs `cmd` in the network namespace of `pod` (a pod that is not on the host network). */
export async function inPodNetwork(pod: Pod, cmd: string): Promise<string> {
  const script = `for d in /proc/[0-9]*; do
  grep -q 'pod${pod.metadata.uid}' $d/cgroup 2>/dev/null || continue
  exec nsenter -t "\${d#/proc/}" -n sh -c '${cmd}'
done
echo "no process of the pod" >&2; exit 1`;
  return (await execInNode(pod.spec.nodeName!, ['sh', '-c', script])).stdout;
}

/** After a suite: its volumes go while their agents run, then tandem and the nodes' leftovers. */
export async function removeTandem(ns: string, mountPaths: readonly string[]): Promise<void> {
  if (!onPods) return tearDown(ns, mountPaths);
  await kubectl(['delete', 'rv', '--all', '-n', ns, '--timeout=90s']).catch(() => undefined);
  await kubectl(['delete', 'namespace', ns, '--wait=false']).catch(() => undefined);
  await removeChart(mountPaths);
}

/**
 * A StoragePool that grants a directory on each node and a StorageClass of the CSI driver
 * that draws from it (WaitForFirstConsumer, reclaimPolicy Delete, expandable): the manifests, to apply
 * in one List with whatever else a suite needs.
 */
export function filePoolClass(
  pool: string,
  sc: string,
  nodes: readonly string[],
  dir: (node: string) => string,
): object[] {
  return [
    {
      apiVersion: 'tandem.dev/v1alpha1',
      kind: 'StoragePool',
      metadata: { name: pool },
      spec: { nodes: nodes.map((node) => ({ node, directory: dir(node) })) },
    },
    {
      apiVersion: 'storage.k8s.io/v1',
      kind: 'StorageClass',
      metadata: { name: sc },
      provisioner: 'tandem.dev',
      parameters: { pool },
      reclaimPolicy: 'Delete',
      volumeBindingMode: 'WaitForFirstConsumer',
      allowVolumeExpansion: true,
    },
  ];
}

/** After a CSI suite: its namespace, its StorageClass, the chart's pods, its pool and the pool's directories go. */
export async function removeCsiSuite(
  o: { ns: string; pool: string; sc: string; nodes: readonly string[]; dir: (node: string) => string },
  timeout = '120s',
): Promise<void> {
  await kubectl(['delete', 'namespace', o.ns, '--wait=true', `--timeout=${timeout}`]).catch(() => undefined);
  await kubectl(['delete', 'storageclass', o.sc, '--ignore-not-found']).catch(() => undefined);
  await removeChart([]).catch(() => undefined);
  await kubectl(['delete', 'storagepool', o.pool, '--ignore-not-found']).catch(() => undefined);
  for (const n of o.nodes) await execInNode(n, ['rm', '-rf', o.dir(n)]).catch(() => undefined);
}
