// npm run gen:crds: writes crds/*.yaml from the zod schemas in src/api, and
// copies them into the Helm chart (helm/tandem/crds-templates is rendered
// behind installCRDs). src/api/crds.test.ts fails when either is stale.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { customResourceDefinitions, renderCrdYaml } from '../src/api/crds.ts';

const root = resolve(import.meta.dirname, '..');
mkdirSync(join(root, 'crds'), { recursive: true });
for (const { file, object } of customResourceDefinitions()) {
  writeFileSync(join(root, 'crds', file), renderCrdYaml(object));
  console.log(`wrote crds/${file}`);
}
