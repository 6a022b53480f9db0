// npm run image [-- tandem|pause|mariadb ...] [--import]
//   Builds the images (default: tandem and pause) as OCI archives in
//   ~/.cache/tandem/images (scripts/image/build.ts) and prints one line per image:
//   NAME REF ARCHIVE. With --import, and a local cluster up, loads them into every
//   node's containerd (`ctr -n k8s.io images import`), as cluster:up does.
import { build, type ImageName, repositories } from './image/build.ts';
import { repoRoot } from '../test/e2e/harness/paths.ts';

const args = process.argv.slice(2);
const names = args.filter((a) => !a.startsWith('--')) as ImageName[];
for (const n of names)
  if (!(n in repositories)) throw new Error(`No image ${n}; known: ${Object.keys(repositories).join(', ')}`);
const images = await build(repoRoot, names.length ? names : ['tandem', 'pause'], (m) => console.error(`[image] ${m}`));
if (args.includes('--import')) {
  const { importImages } = await import('../test/e2e/harness/images.ts');
  await importImages(Object.values(images), (m) => console.error(`[image] ${m}`));
}
for (const [n, i] of Object.entries(images)) console.log(`${n} ${i.ref} ${i.archive}`);
