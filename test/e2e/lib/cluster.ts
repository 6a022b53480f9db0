// What an e2e test needs from the cluster, whichever cluster it is:
//   - local (default): the harness's control plane and simulated nodes, driven
//     through the same CLI as `npm run cluster:*`;
//   - external (TANDEM_E2E_EXTERNAL=1): any cluster KUBECONFIG points at (kind on
//     a laptop, a real one); tests that stop nodes or restart the API server
//     are skipped there, because only the local harness can do that.
// Usage in a suite:
//   const cluster = useCluster();           // beforeAll: up (a no-op when up)
//   const ns = cluster.namespacePerTest();  // beforeEach: fresh namespace, deleted after
import { execFile, spawn } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import * as k8s from '@kubernetes/client-node';
import { bin, repoRoot, state, timing } from '../harness/paths.ts';

export const external = process.env.TANDEM_E2E_EXTERNAL === '1';
/** `test` in local mode, `test.skip` against an external cluster (node stop/partition, API server restart). */
export const localOnlyTest = external ? test.skip : test;
export { timing };

const cli = join(repoRoot, 'test/e2e/harness/cli.ts');

export type RunResult = { stdout: string; stderr: string };

function runTool(
  file: string,
  args: readonly string[],
  opts: { env?: NodeJS.ProcessEnv; input?: string; timeoutMs?: number } = {},
): Promise<RunResult> {
  return new Promise((resolve, reject) => {
    const child = execFile(
      file,
      args,
      { env: { ...process.env, ...opts.env }, timeout: opts.timeoutMs ?? 120_000, maxBuffer: 64 * 1024 * 1024 },
      (err, stdout, stderr) => {
        if (err)
          reject(new Error(`${[file, ...args].join(' ')} failed: ${err.message}\n${stderr}${stdout}`, { cause: err }));
        else resolve({ stdout, stderr });
      },
    );
    // A tool may exit without reading its input (`kubectl get` never does): the pipe
    // closing under the write is EPIPE, which must not surface as an uncaught error and
    // fail whichever test is running (seen once: failover's partition test). The exit
    // status above is what counts.
    child.stdin?.on('error', (err: NodeJS.ErrnoException) => {
      if (err.code !== 'EPIPE') reject(err);
    });
    child.stdin?.end(opts.input ?? '');
  });
}

/** Runs the harness CLI (local mode only): `harness('node', 'stop', 'master')`. */
export function harness(...args: string[]): Promise<RunResult> {
  if (external) throw new Error('The harness CLI drives only the local cluster');
  return runTool(process.execPath, [cli, ...args], { timeoutMs: 180_000 });
}

export function kubeconfigPath(): string {
  return external ? (process.env.KUBECONFIG ?? join(process.env.HOME ?? '/root', '.kube/config')) : state.kubeconfig;
}

/** The kubectl binary: on $PATH in external mode, from the cache otherwise. */
const kubectlFile = (): string => (external ? (process.env.TANDEM_KUBECTL ?? 'kubectl') : bin.kubectl);

/** kubectl against the test cluster. */
export function kubectl(args: readonly string[], opts: { input?: string } = {}): Promise<RunResult> {
  return runTool(kubectlFile(), args, { env: { KUBECONFIG: kubeconfigPath() }, ...opts });
}

/**
 * Follows a container's log (`kubectl logs -f`) from now until stop(): what a pod printed
 * while it was being deleted, which `kubectl logs` can no longer show once the pod is gone.
 */
export function followLogs(namespace: string, pod: string): { text: () => string; stop: () => void } {
  const child = spawn(kubectlFile(), ['logs', '-f', '-n', namespace, pod], {
    env: { ...process.env, KUBECONFIG: kubeconfigPath() },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const add = (b: Buffer) => {
    out += b.toString();
  };
  child.stdout.on('data', add);
  child.stderr.on('data', add);
  child.on('error', (err) => add(Buffer.from(`kubectl logs -f: ${err.message}\n`)));
  return { text: () => out, stop: () => void child.kill() };
}

export function helm(args: readonly string[]): Promise<RunResult> {
  const file = external ? (process.env.TANDEM_HELM ?? 'helm') : bin.helm;
  return runTool(file, args, { env: { KUBECONFIG: kubeconfigPath() } });
}

export type Cluster = {
  kc: k8s.KubeConfig;
  core: k8s.CoreV1Api;
  apiext: k8s.ApiextensionsV1Api;
  custom: k8s.CustomObjectsApi;
  objects: k8s.KubernetesObjectApi;
  /** A fresh namespace for each test of the suite, deleted after it; read `.name` inside a test. */
  namespacePerTest(): { readonly name: string };
};

function loadKubeConfig(): k8s.KubeConfig {
  const kc = new k8s.KubeConfig();
  kc.loadFromFile(kubeconfigPath());
  return kc;
}

/**
 * Registers a beforeAll that makes sure the cluster is up (the local harness's
 * `up` is a no-op when it is; jest's globalSetup has usually started it) and
 * builds the clients. Call at the top of a describe block or file.
 */
export function useCluster(): Cluster {
  const ctx = {} as Cluster;
  beforeAll(async () => {
    if (!external) await harness('up');
    const kc = loadKubeConfig();
    Object.assign(ctx, {
      kc,
      core: kc.makeApiClient(k8s.CoreV1Api),
      apiext: kc.makeApiClient(k8s.ApiextensionsV1Api),
      custom: kc.makeApiClient(k8s.CustomObjectsApi),
      objects: k8s.KubernetesObjectApi.makeApiClient(kc),
    });
  }, 240_000);
  ctx.namespacePerTest = () => {
    const current = { name: '' };
    beforeEach(async () => {
      current.name = `e2e-${randomBytes(4).toString('hex')}`;
      await ctx.core.createNamespace({
        body: { metadata: { name: current.name, labels: { 'tandem.dev/e2e': 'true' } } },
      });
    });
    afterEach(async () => {
      if (!current.name) return;
      // The namespace controller finishes the deletion in the background.
      await ctx.core.deleteNamespace({ name: current.name }).catch(() => undefined);
    });
    return current;
  };
  return ctx;
}

/** The API server's answer to a failed request: HTTP code and its Status message. */
export function apiError(err: unknown): { code: number; message: string; reason?: string } {
  if (!(err instanceof k8s.ApiException)) throw err;
  let body: unknown = err.body;
  if (typeof body === 'string') {
    try {
      body = JSON.parse(body);
    } catch {
      // Not a Status object; keep the text.
    }
  }
  const status = body as { message?: string; reason?: string } | string;
  return typeof status === 'string'
    ? { code: err.code, message: status }
    : { code: err.code, message: status.message ?? '', ...(status.reason ? { reason: status.reason } : {}) };
}

/** Awaits a promise that must fail with an API error, and returns that error. */
export async function expectApiError(p: Promise<unknown>): Promise<{ code: number; message: string; reason?: string }> {
  try {
    await p;
  } catch (err) {
    return apiError(err);
  }
  throw new Error('Expected the API server to refuse the request, but it succeeded');
}
