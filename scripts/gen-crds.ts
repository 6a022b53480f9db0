// npm run gen:crds: writes crds/*.yaml from the zod schemas in src/api, and
// renders them into the Helm chart (helm/tandem/templates/crds.yaml, behind
// installCRDs) and into the field reference (docs/reference/crds.md). src/api/crds.test.ts fails when either is stale.
import { mkdirSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { renderCrdReference } from '../src/api/crd-reference.ts';
import { customResourceDefinitions, renderCrdYaml, renderHelmCrdTemplate } from '../src/api/crds.ts';

const root = resolve(import.meta.dirname, '..');
mkdirSync(join(root, 'crds'), { recursive: true });
for (const { file, object } of customResourceDefinitions()) {
  writeFileSync(join(root, 'crds', file), renderCrdYaml(object));
  console.log(`wrote crds/${file}`);
}
writeFileSync(
  join(root, 'helm/tandem/templates/crds.yaml'),
  renderHelmCrdTemplate(customResourceDefinitions().map((c) => c.object)),
);
console.log('wrote helm/tandem/templates/crds.yaml');
writeFileSync(
  join(root, 'docs/reference/crds.md'),
  renderCrdReference(customResourceDefinitions().map((c) => c.object)),
);
console.log('wrote docs/reference/crds.md');
