// Images without a registry: the OCI archives `npm run image` builds
// (scripts/image/build.ts) are loaded into each node's containerd with
// `ctr -n k8s.io images import`, the namespace the CRI plugin (and so the
// kubelet) uses. An image already there under the same name is left alone.
import { spawnSync } from 'node:child_process';
import type { Image } from '../../../scripts/image/oci.ts';
import { nsenterArgs, readState } from './nodes.ts';

const ctr = (node: string, ...args: string[]) => [
  ...nsenterArgs(node),
  'ctr',
  '--address',
  '/run/containerd/containerd.sock',
  '--namespace',
  'k8s.io',
  ...args,
];

function run(args: string[]): string {
  const r = spawnSync('nsenter', args, { encoding: 'utf8', maxBuffer: 16 * 1024 * 1024 });
  if (r.status !== 0) throw new Error(`nsenter ${args.join(' ')} exited with ${r.status}: ${r.stderr.trim()}`);
  return r.stdout;
}

/** The image names this node's containerd has in the CRI namespace. */
export function nodeImages(node: string): Set<string> {
  return new Set(
    run(ctr(node, 'images', 'list', '--quiet'))
      .split('\n')
      .filter(Boolean),
  );
}

/** Imports `images` into one node's containerd (those it lacks); returns the names imported. */
export function importIntoNode(node: string, images: readonly Image[]): string[] {
  const have = nodeImages(node);
  const imported: string[] = [];
  for (const image of images) {
    if (have.has(image.ref)) continue;
    // --no-unpack is not given: the CRI plugin runs containers from unpacked snapshots.
    run(ctr(node, 'images', 'import', '--digests', image.archive));
    if (!nodeImages(node).has(image.ref))
      throw new Error(`ctr images import ${image.archive} on ${node} did not create ${image.ref}`);
    imported.push(image.ref);
  }
  return imported;
}

/** Into every running node of the local cluster. */
export async function importImages(images: readonly Image[], log: (m: string) => void = () => {}): Promise<void> {
  for (const [node, s] of Object.entries(readState().nodes)) {
    if (s.stopped) continue;
    const t0 = Date.now();
    const done = importIntoNode(node, images);
    if (done.length) log(`Imported ${done.join(', ')} into ${node} in ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
}
