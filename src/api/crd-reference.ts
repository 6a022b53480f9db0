// docs/reference/crds.md, generated from the same CRD objects as crds/ (`npm run
// gen:crds`): every field with its type, default, limits and description, the rules the
// API server enforces, the `kubectl get` columns, and the annotations, labels and
// finalizer tandem reads or writes. crds.test.ts fails when the page is stale or a
// field has no description, so a field cannot be added without saying what it is.
import { ANNOTATIONS, FINALIZER, LABELS } from './names.ts';

type Json = Record<string, unknown>;
type Schema = {
  type?: string;
  description?: string;
  properties?: Record<string, Schema>;
  items?: Schema;
  required?: string[];
  enum?: unknown[];
  default?: unknown;
  minimum?: number;
  maximum?: number;
  minLength?: number;
  maxLength?: number;
  minItems?: number;
  maxItems?: number;
  format?: string;
  additionalProperties?: Schema | boolean;
  'x-kubernetes-validations'?: { rule: string; message: string; fieldPath?: string }[];
};

export type FieldRow = { path: string; type: string; required: boolean; description: string | undefined };
export type Rule = { at: string; message: string };

/** Every field under `schema`, depth first, as `a.b[].c`; and the CEL rules with where they sit. */
export function fieldsOf(schema: Schema, path: string): { rows: FieldRow[]; rules: Rule[] } {
  const rows: FieldRow[] = [];
  const rules: Rule[] = [];
  const visit = (s: Schema, at: string) => {
    for (const r of s['x-kubernetes-validations'] ?? [])
      rules.push({ at: `${at}${r.fieldPath ?? ''}`, message: r.message });
    for (const [name, child] of Object.entries(s.properties ?? {})) {
      const p = `${at}.${name}`;
      rows.push({
        path: p,
        type: typeOf(child),
        required: s.required?.includes(name) ?? false,
        description: child.description,
      });
      visit(child, p);
    }
    if (s.items) visit(s.items, `${at}[]`);
  };
  visit(schema, path);
  return { rows, rules };
}

function typeOf(s: Schema): string {
  const limits: string[] = [];
  if (s.enum) return `one of ${s.enum.map((v) => `\`${String(v)}\``).join(', ')}${defaultOf(s)}`;
  if (s.minimum !== undefined || s.maximum !== undefined) limits.push(`${s.minimum ?? ''}–${s.maximum ?? ''}`);
  if (s.minItems !== undefined && s.minItems === s.maxItems) limits.push(`exactly ${s.minItems}`);
  else if (s.maxItems !== undefined) limits.push(`at most ${s.maxItems}`);
  if (s.maxLength !== undefined) limits.push(`≤ ${s.maxLength} chars`);
  let t = s.type ?? 'any';
  if (t === 'array') t = `array of ${s.items?.type ?? 'any'}`;
  if (t === 'object' && s.additionalProperties && typeof s.additionalProperties === 'object')
    t = `map of ${s.additionalProperties.type ?? 'any'}`;
  if (s.format) t += ` (${s.format})`;
  return `${t}${limits.length > 0 ? ` (${limits.join(', ')})` : ''}${defaultOf(s)}`;
}

function defaultOf(s: Schema): string {
  if (s.default === undefined || (typeof s.default === 'object' && s.default !== null)) return '';
  return `; default \`${String(s.default)}\``;
}

const cell = (text: string) => text.replace(/\|/g, '\\|').replace(/\n/g, ' ');

function table(rows: FieldRow[]): string {
  const lines = ['| Field | Type | Description |', '| --- | --- | --- |'];
  for (const r of rows)
    lines.push(`| \`${r.path}\`${r.required ? ' (required)' : ''} | ${cell(r.type)} | ${cell(r.description ?? '')} |`);
  return lines.join('\n');
}

type Column = { name: string; jsonPath: string; priority?: number };

/** What each annotation, label and the finalizer mean: a new one in names.ts needs its line here (tsc). */
const ANNOTATION_DOCS: Record<keyof typeof ANNOTATIONS, string> = {
  port: 'On a volume, written once by the controller: the TCP port of its peer link. Not read from users: the controller allocates it and keeps its own record.',
  forcePrimary:
    'On a volume, set by a person to a node name: promote that node now even though its data is not known to be UpToDate (the other node is lost and the loss of its newer writes is accepted). The controller removes it once it has acted. `kubectl annotate rv NAME tandem.dev/force-primary=NODE`.',
  csiPublishedNode:
    "On a volume, written by the CSI driver's ControllerPublishVolume together with spec.primary: the node the volume is published to; a switch toward it is recorded as CsiPublish.",
  reportRequested:
    "On a replica, written by the controller (a time): report this replica's status now. At rest an agent reports a replica only when it changes and once a minute; a planned switch needs a report of its new Primary younger than a few seconds and asks for one (at most every 2 s). A person may set it too, for fresh `status.counters` (counters alone do not make a report due): `kubectl annotate rvr NAME tandem.dev/report-requested=$(date +%s) --overwrite`. Live counters are also on the agent's `/metrics`.",
};
const LABEL_DOCS: Record<keyof typeof LABELS, string> = {
  volume:
    "On replicas: the ReplicatedVolume's name (on the peer Secret it is an annotation: the name may be longer than a label allows).",
  volumeNamespace: "On the peer Secret (in the operator's namespace): the ReplicatedVolume's namespace.",
  node: "On replicas, and on a node's ServiceAccount and TLS Secret: the node; each agent selects its replicas by it.",
  component:
    "On the chart's objects: which part of tandem they are (controller, node-agent, engine-host, csi-controller, csi-node).",
  managedBy:
    'On what the controller creates (replicas, peer and TLS Secrets, per-node ServiceAccounts): tandem-controller; on PersistentVolumes the CSI driver made: tandem-csi.',
};

export function renderCrdReference(crds: readonly Json[]): string {
  const out: string[] = [
    '# Reference: custom resources, annotations and labels',
    '',
    'Generated by `npm run gen:crds` from the schemas in `src/api`; do not edit. The same',
    'descriptions are in `kubectl explain` (for example `kubectl explain rv.spec.failover`).',
    "The CSI driver's StorageClass parameters are in [csi-driver.md](csi-driver.md).",
  ];
  for (const crd of crds) {
    const spec = crd.spec as Json;
    const names = spec.names as { kind: string; plural: string; shortNames: string[] };
    const version = (spec.versions as Json[])[0]!;
    const root = (version.schema as Json).openAPIV3Schema as Schema;
    out.push(
      '',
      `## ${names.kind}`,
      '',
      `\`${spec.group as string}/${version.name as string}\`, ${spec.scope === 'Cluster' ? 'cluster-scoped' : 'namespaced'}; \`kubectl get ${names.plural}\` or \`kubectl get ${names.shortNames.join('`, `kubectl get ')}\`.`,
      '',
      root.description ?? '',
    );
    for (const part of ['spec', 'status'] as const) {
      const { rows, rules } = fieldsOf(root.properties![part]!, part);
      const about = root.properties![part]!.description;
      out.push('', `### ${part}`, '', ...(about ? [about, ''] : []), table(rows));
      if (rules.length > 0) {
        out.push('', 'The API server refuses an object that breaks one of these rules, with this message:', '');
        for (const r of rules) out.push(`- \`${r.at}\`: ${r.message}`);
      }
    }
    const columns = (version.additionalPrinterColumns as Column[] | undefined) ?? [];
    if (columns.length > 0) {
      const shown = (wide: boolean) =>
        columns
          .filter((c) => (c.priority ?? 0) === 0 || wide)
          .map((c) => c.name)
          .join(', ');
      out.push(
        '',
        '### Columns',
        '',
        `\`kubectl get ${names.shortNames[0] ?? names.plural}\`: ${shown(false)}. With \`-o wide\`: ${shown(true)}.`,
        '',
        '| Column | From |',
        '| --- | --- |',
        ...columns.map((c) => `| ${c.name}${(c.priority ?? 0) > 0 ? ' (wide)' : ''} | \`${cell(c.jsonPath)}\` |`),
      );
    }
  }
  out.push('', '## Annotations', '', '| Annotation | Meaning |', '| --- | --- |');
  for (const [k, v] of Object.entries(ANNOTATIONS))
    out.push(`| \`${v}\` | ${cell(ANNOTATION_DOCS[k as keyof typeof ANNOTATIONS])} |`);
  out.push('', '## Labels', '', '| Label | Meaning |', '| --- | --- |');
  for (const [k, v] of Object.entries(LABELS)) out.push(`| \`${v}\` | ${cell(LABEL_DOCS[k as keyof typeof LABELS])} |`);
  out.push(
    '',
    '## Finalizer',
    '',
    `\`${FINALIZER}\` is on every ReplicatedVolume until the engines on both nodes are down and pool files are removed; a volume being deleted shows phase Deleting until then.`,
    '',
  );
  return out.join('\n');
}
