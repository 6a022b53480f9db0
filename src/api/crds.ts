// The CustomResourceDefinitions, built from the zod schemas: zod → JSON Schema
// (input side, so defaults and optional fields are what a user may write) →
// the structural OpenAPI v3 subset the API server accepts. `npm run gen:crds`
// writes them to crds/; a unit test fails when crds/ is stale.
import { z } from 'zod';
import yaml from 'js-yaml';
import { GROUP, KINDS, VERSION } from './names.ts';
import { ReplicatedVolumeSpec, ReplicatedVolumeStatus } from './replicated-volume.ts';
import { ReplicatedVolumeReplicaSpec, ReplicatedVolumeReplicaStatus } from './replicated-volume-replica.ts';
import { StoragePoolSpec, StoragePoolStatus } from './storage-pool.ts';

type Json = Record<string, unknown>;

/** JSON Schema → structural OpenAPI: drop what apiextensions rejects or does not need. */
function structural(node: unknown): unknown {
  if (Array.isArray(node)) return node.map(structural);
  if (node === null || typeof node !== 'object') return node;
  const out: Json = {};
  for (const [k, v] of Object.entries(node as Json)) {
    if (k === '$schema' || (k === 'additionalProperties' && v === false)) continue;
    // zod spells "any safe integer" with these bounds; an int64 needs none.
    if ((k === 'maximum' && v === Number.MAX_SAFE_INTEGER) || (k === 'minimum' && v === Number.MIN_SAFE_INTEGER))
      continue;
    out[k] =
      k === 'x-kubernetes-validations' || k === 'enum' || k === 'required' || k === 'default' ? v : structural(v);
  }
  return out;
}

function schemaOf(t: z.ZodType): Json {
  return structural(z.toJSONSchema(t, { io: 'input', target: 'openapi-3.0', unrepresentable: 'throw' })) as Json;
}

function crd(
  names: { kind: string; plural: string; singular: string; shortNames: readonly string[] },
  spec: z.ZodType,
  status: z.ZodType,
  columns: Json[],
  description: string,
  scope: 'Namespaced' | 'Cluster' = 'Namespaced',
): Json {
  return {
    apiVersion: 'apiextensions.k8s.io/v1',
    kind: 'CustomResourceDefinition',
    metadata: { name: `${names.plural}.${GROUP}`, labels: { 'app.kubernetes.io/part-of': 'tandem' } },
    spec: {
      group: GROUP,
      names: {
        kind: names.kind,
        listKind: `${names.kind}List`,
        plural: names.plural,
        singular: names.singular,
        shortNames: [...names.shortNames],
        categories: ['tandem'],
      },
      scope,
      versions: [
        {
          name: VERSION,
          served: true,
          storage: true,
          subresources: { status: {} },
          additionalPrinterColumns: columns,
          schema: {
            openAPIV3Schema: {
              description,
              type: 'object',
              required: ['spec'],
              properties: {
                apiVersion: { type: 'string' },
                kind: { type: 'string' },
                metadata: { type: 'object' },
                spec: schemaOf(spec),
                status: schemaOf(status),
              },
            },
          },
        },
      ],
    },
  };
}

export function customResourceDefinitions(): { file: string; object: Json }[] {
  return [
    {
      file: `${GROUP}_${KINDS.volume.plural}.yaml`,
      object: crd(
        KINDS.volume,
        ReplicatedVolumeSpec,
        ReplicatedVolumeStatus,
        [
          { name: 'Primary', type: 'string', jsonPath: '.status.primary' },
          { name: 'Epoch', type: 'integer', jsonPath: '.status.epoch', priority: 1 },
          { name: 'Changed', type: 'string', jsonPath: '.status.lastRoleChange.reason', priority: 1 },
          { name: 'Protocol', type: 'string', jsonPath: '.spec.protocol' },
          { name: 'Connection', type: 'string', jsonPath: '.status.connection' },
          { name: 'Disks', type: 'string', jsonPath: '.status.disks' },
          { name: 'Sync', type: 'string', jsonPath: '.status.sync' },
          { name: 'Ready', type: 'string', jsonPath: '.status.conditions[?(@.type=="Ready")].status' },
          // -o wide: why it is not Ready (FailoverBlocked, SplitBrain, DiskMissing …) and who is fenced.
          {
            name: 'Reason',
            type: 'string',
            jsonPath: '.status.conditions[?(@.type=="Ready")].reason',
            priority: 1,
          },
          { name: 'Fenced', type: 'string', jsonPath: '.status.fence.node', priority: 1 },
          { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
        ],
        'A block volume mirrored between two nodes, DRBD style (tandem).',
      ),
    },
    {
      file: `${GROUP}_${KINDS.replica.plural}.yaml`,
      object: crd(
        KINDS.replica,
        ReplicatedVolumeReplicaSpec,
        ReplicatedVolumeReplicaStatus,
        [
          { name: 'Node', type: 'string', jsonPath: '.spec.node' },
          { name: 'Desired', type: 'string', jsonPath: '.spec.role' },
          { name: 'Role', type: 'string', jsonPath: '.status.role' },
          { name: 'Connection', type: 'string', jsonPath: '.status.connectionState' },
          { name: 'Disk', type: 'string', jsonPath: '.status.diskState' },
          { name: 'Peer Disk', type: 'string', jsonPath: '.status.peerDiskState', priority: 1 },
          { name: 'Sync %', type: 'number', jsonPath: '.status.syncProgress', priority: 1 },
          { name: 'Out Of Sync', type: 'integer', jsonPath: '.status.outOfSyncBytes', priority: 1 },
          { name: 'Epoch', type: 'integer', jsonPath: '.spec.epoch' },
          // -o wide: how long ago the node's agent last reported (at a change, else every minute).
          { name: 'Reported', type: 'date', jsonPath: '.status.lastHeartbeatTime', priority: 1 },
          { name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' },
        ],
        "One node's replica of a ReplicatedVolume: spec by the controller, status by that node's agent.",
      ),
    },
    {
      file: `${GROUP}_${KINDS.pool.plural}.yaml`,
      object: crd(
        KINDS.pool,
        StoragePoolSpec,
        StoragePoolStatus,
        [{ name: 'Age', type: 'date', jsonPath: '.metadata.creationTimestamp' }],
        'Where tandem may store data, per node: granted block devices and a directory for file-backed volumes. Defined by administrators; volumes name a pool.',
        'Cluster',
      ),
    },
  ];
}

export function renderCrdYaml(object: Json): string {
  return `# Generated by \`npm run gen:crds\` from src/api (zod schemas). Do not edit.\n${yaml.dump(object, { noRefs: true, lineWidth: -1 })}`;
}

/** The chart's template: the same CRDs, rendered only when installCRDs is true (so `helm upgrade` updates them). */
export function renderHelmCrdTemplate(objects: readonly Json[]): string {
  const body = objects.map((o) => yaml.dump(o, { noRefs: true, lineWidth: -1 })).join('---\n');
  return `# Generated by \`npm run gen:crds\` from src/api (zod schemas). Do not edit.\n{{- if .Values.installCRDs }}\n${body}{{- end }}\n`;
}
