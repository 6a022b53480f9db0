// crds/ is generated from the zod schemas; this fails when someone changed a
// schema without running `npm run gen:crds` (or edited the YAML by hand).
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import yaml from 'js-yaml';
import { fieldsOf, renderCrdReference } from './crd-reference.ts';
import { customResourceDefinitions, renderCrdYaml, renderHelmCrdTemplate } from './crds.ts';
import { placeStorage } from '../controller/decisions/placement.ts';
import { ReplicatedVolume } from './replicated-volume.ts';
import { StoragePool } from './storage-pool.ts';

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

test('docs/reference/crds.md is up to date (npm run gen:crds)', () => {
  expect(readFileSync(join(root, 'docs/reference/crds.md'), 'utf8')).toBe(
    renderCrdReference(customResourceDefinitions().map((c) => c.object)),
  );
});

test.each(customResourceDefinitions().map((c) => [c.file, c]))('every field of %s says what it is', (_file, c) => {
  type S = Parameters<typeof fieldsOf>[0];
  const root = (c.object.spec as { versions: { schema: { openAPIV3Schema: { properties: Record<string, S> } } }[] })
    .versions[0]!.schema.openAPIV3Schema.properties;
  const bare = ['spec', 'status'].flatMap((part) =>
    fieldsOf(root[part]!, part)
      .rows.filter((r) => !r.description)
      .map((r) => r.path),
  );
  expect(bare).toEqual([]);
});

test('examples/mysql-volume.yaml parses with the schema, keeps the tutorial resource and draws from the example pool', () => {
  const doc = yaml.load(readFileSync(join(root, 'examples/mysql-volume.yaml'), 'utf8'));
  const rv = ReplicatedVolume.parse({ ...(doc as object), metadata: { name: 'mysql', namespace: 'default' } });
  expect(rv.spec).toMatchObject({ pool: 'tutorial', protocol: 'C', verifyAlg: 'sha1', primary: 'master' });
  const pool = StoragePool.parse(yaml.load(readFileSync(join(root, 'examples/storage-pool.yaml'), 'utf8')));
  expect(pool.metadata.name).toBe(rv.spec.pool);
  for (const r of rv.spec.replicas)
    expect(placeStorage(r, { namespace: 'default', name: 'mysql', pool: pool.metadata.name }, pool.spec)).toMatchObject(
      { ok: true, disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
    );
  expect(rv.spec.replicas).toEqual([
    { node: 'master', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
    { node: 'backup', disk: '/dev/sdb1', metaDisk: '/dev/sdb2[0]' },
  ]);
});

test('the schemas agree with the CRD on what is invalid', () => {
  const spec = {
    pool: 'tutorial',
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
  expect(parse({ ...spec, pool: undefined })).toBe(false);
  expect(parse({ ...spec, pool: 'Not_A_Name' })).toBe(false);
  expect(parse({ ...spec, replicas: spec.replicas.slice(0, 1) })).toBe(false);
  expect(parse({ ...spec, size: 'big' })).toBe(false);
  expect(parse({ ...spec, replicas: [{ node: 'master', disk: 'sdb1' }, spec.replicas[1]] })).toBe(false);
});

test.each([
  ['a relative disk', { disk: 'sdb1' }],
  ['a disk with ..', { disk: '/dev/../etc/shadow' }],
  ['a disk with a . segment', { disk: '/dev/./sdb1' }],
  ['a disk with //', { disk: '/dev//sdb1' }],
  ['a disk with a trailing slash', { disk: '/dev/sdb1/' }],
  ['a disk that would end a config statement', { disk: '/dev/x;}handlers{split-brain"id";}' }],
  ['a disk with a quote', { disk: '/dev/x"y' }],
  ['a disk with a control character', { disk: '/dev/x\u0001' }],
  ['a meta-disk with ..', { disk: '/dev/sdb1', metaDisk: '/dev/../sdb2[0]' }],
  ['a meta-disk with a brace', { disk: '/dev/sdb1', metaDisk: '/dev/sdb2}[0]' }],
  ['a meta-disk with a huge index', { disk: '/dev/sdb1', metaDisk: '/dev/sdb2[12345678901]' }],
])('the schema refuses %s', (_what, replica) => {
  const parsed = ReplicatedVolume.safeParse({
    apiVersion: 'tandem.dev/v1alpha1',
    kind: 'ReplicatedVolume',
    metadata: { name: 'x', namespace: 'y' },
    spec: {
      replicas: [
        { node: 'master', ...replica },
        { node: 'backup', disk: '/dev/sdb1' },
      ],
    },
  });
  expect(parsed.success).toBe(false);
});

test.each([
  ['/dev/sdb1'],
  ['/dev/disk/by-id/wwn-0x5000c500a0b1c2d3-part1'],
  ['/dev/disk/by-path/pci-0000:00:1f.2-ata-1.0'],
  ['/dev/mapper/vg0-lv_data'],
  ['/var/lib/tandem/pools/files/ns.vol.img'],
])('the schema accepts the device path %s', (disk) => {
  const parsed = ReplicatedVolume.safeParse({
    apiVersion: 'tandem.dev/v1alpha1',
    kind: 'ReplicatedVolume',
    metadata: { name: 'x', namespace: 'y' },
    spec: {
      pool: 'p',
      replicas: [
        { node: 'master', disk, metaDisk: `${disk}[3]` },
        { node: 'backup', disk },
      ],
    },
  });
  expect(parsed.success).toBe(true);
});

test('kubectl get rv: the columns people read first, and -o wide adds why and since when', () => {
  const columns = (file: string, wide: boolean) => {
    const c = customResourceDefinitions().find((d) => d.file === file)!.object as {
      spec: { versions: { additionalPrinterColumns: { name: string; priority?: number }[] }[] };
    };
    return c.spec.versions[0]!.additionalPrinterColumns.filter((x) => wide || !x.priority).map((x) => x.name);
  };
  // The default table stays what the README and the tutorial show.
  expect(columns('tandem.dev_replicatedvolumes.yaml', false)).toEqual([
    'Primary',
    'Protocol',
    'Connection',
    'Disks',
    'Sync',
    'Ready',
    'Age',
  ]);
  expect(columns('tandem.dev_replicatedvolumes.yaml', true)).toEqual([
    'Primary',
    'Epoch',
    'Changed',
    'Protocol',
    'Connection',
    'Disks',
    'Sync',
    'Ready',
    'Reason',
    'Fenced',
    'Age',
  ]);
  expect(columns('tandem.dev_replicatedvolumereplicas.yaml', true)).toEqual([
    'Node',
    'Desired',
    'Role',
    'Connection',
    'Disk',
    'Peer Disk',
    'Sync %',
    'Out Of Sync',
    'Epoch',
    'Reported',
    'Age',
  ]);
});
