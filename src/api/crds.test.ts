// crds/ is generated from the zod schemas; this fails when someone changed a
// schema without running `npm run gen:crds` (or edited the YAML by hand).
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import yaml from 'js-yaml';
import { customResourceDefinitions, renderCrdYaml, renderHelmCrdTemplate } from './crds.ts';
import { ReplicatedVolume } from './replicated-volume.ts';

const root = resolve(import.meta.dirname, '../..');

test.each(customResourceDefinitions().map((c) => [c.file, c]))(
  'crds/%s is up to date (npm run gen:crds)',
  (file, c) => {
    expect(readFileSync(join(root, 'crds', file), 'utf8')).toBe(renderCrdYaml(c.object));
  },
);

test('helm/tandem/templates/crds.yaml is up to date (npm run gen:crds)', () => {
  expect(readFileSync(join(root, 'helm/tandem/templates/crds.yaml'), 'utf8')).toBe(
    renderHelmCrdTemplate(customResourceDefinitions().map((c) => c.object)),
  );
});

test('examples/mysql-volume.yaml parses with the schema and keeps the tutorial resource', () => {
  const doc = yaml.load(readFileSync(join(root, 'examples/mysql-volume.yaml'), 'utf8'));
  const rv = ReplicatedVolume.parse({ ...(doc as object), metadata: { name: 'mysql', namespace: 'default' } });
  expect(rv.spec).toMatchObject({ protocol: 'C', verifyAlg: 'sha1', primary: 'master' });
  expect(rv.spec.replicas).toEqual([
    { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
    { node: 'backup', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
  ]);
});

test('the schemas agree with the CRD on what is invalid', () => {
  const spec = {
    replicas: [
      { node: 'master', disk: '/dev/sdb1' },
      { node: 'backup', disk: '/dev/sdb1' },
    ],
  };
  const parse = (s: object) =>
    ReplicatedVolume.safeParse({
      apiVersion: 'tandem.dev/v1alpha1',
      kind: 'ReplicatedVolume',
      metadata: { name: 'x', namespace: 'y' },
      spec: s,
    }).success;
  expect(parse(spec)).toBe(true);
  expect(parse({ ...spec, protocol: 'D' })).toBe(false);
  expect(parse({ ...spec, replicas: spec.replicas.slice(0, 1) })).toBe(false);
  expect(parse({ ...spec, size: 'big' })).toBe(false);
  expect(parse({ ...spec, replicas: [{ node: 'master', disk: 'sdb1' }, spec.replicas[1]] })).toBe(false);
});
