// DESIGN.md §1's dependency rule, enforced by reading every source file's imports:
//   - replication and nbd import no Kubernetes code (nor controller/node-agent);
//   - controller never imports replication, nbd or cli (it drives engines only through replicas);
//   - runtime (informer, work queue, worker loop, conditions, clock) serves both
//     reconcilers and imports neither, nor the engine;
//   - node-agent and controller share only api and runtime;
//   - engine-host (the pod the engines run in) runs tandemadm and knows nothing else;
//   - csi (the CSI driver) asks for volumes through the API and reads engines' status only;
//   - api imports nothing internal but itself.
import { readdirSync, readFileSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';

const src = resolve(import.meta.dirname);

function sources(dir: string): string[] {
  return readdirSync(dir, { withFileTypes: true }).flatMap((e) => {
    const p = join(dir, e.name);
    if (e.isDirectory()) return e.name === 'testdata' ? [] : sources(p);
    return e.name.endsWith('.ts') && !e.name.endsWith('.test.ts') ? [p] : [];
  });
}

/** Every module specifier of static and dynamic imports and re-exports. */
function importsOf(text: string): string[] {
  const found: string[] = [];
  const re =
    /(?:^|[\s;])(?:import|export)\s[^'"`;]*?from\s*['"]([^'"]+)['"]|(?:^|[\s;])import\s*['"]([^'"]+)['"]|import\(\s*['"]([^'"]+)['"]\s*\)/gm;
  for (const m of text.matchAll(re)) found.push((m[1] ?? m[2] ?? m[3])!);
  return found;
}

/** The top-level src/ directory a specifier points into, or the package name. */
function target(file: string, spec: string): { internal: string } | { pkg: string } {
  if (!spec.startsWith('.'))
    return { pkg: spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]! };
  const rel = relative(src, resolve(dirname(file), spec));
  return { internal: rel.startsWith('..') ? `../${rel}` : rel.split('/')[0]! };
}

const KUBERNETES = /^@kubernetes\//;
const RULES: Record<string, { internal: RegExp; pkg?: RegExp; why: string }> = {
  replication: {
    internal: /^(controller|node-agent|cli)$/,
    pkg: KUBERNETES,
    why: 'the engine knows nothing about Kubernetes or its callers',
  },
  nbd: {
    internal: /^(controller|node-agent|cli|replication)$/,
    pkg: KUBERNETES,
    why: 'the NBD server knows nothing about Kubernetes or the engine',
  },
  controller: {
    internal: /^(replication|nbd|cli|node-agent)$/,
    why: 'the controller drives engines only through ReplicatedVolumeReplica objects',
  },
  'engine-host': {
    internal: /^(controller|node-agent|replication|nbd|runtime)$/,
    pkg: KUBERNETES,
    why: 'the engine host only runs tandemadm for the agent: it knows no Kubernetes and no engine internals',
  },
  'node-agent': {
    internal: /^controller$/,
    why: 'the agent and the controller share only src/api and src/runtime',
  },
  runtime: {
    internal: /^(controller|node-agent|replication|nbd|cli)$/,
    why: 'the runtime serves the controller and the agent and knows neither (nor the engine)',
  },
  csi: {
    internal: /^(controller|replication|nbd|engine-host)$/,
    why: 'the CSI driver drives volumes through ReplicatedVolumes and reads engines only through their control sockets',
  },
  api: { internal: /^(?!api$).+/, why: 'src/api is imported by everyone and imports nothing internal' },
};

test('the import scanner sees every form of import', () => {
  expect(
    importsOf(
      `import a from './a.ts';\nimport type { B } from "../b.ts";\nexport { c } from './c.ts';\nimport './d.ts';\nconst e = await import('./e.ts');\nimport {\n  f,\n} from '@kubernetes/client-node';`,
    ).sort(),
  ).toEqual(['./a.ts', '../b.ts', './c.ts', './d.ts', './e.ts', '@kubernetes/client-node'].sort());
});

test.each(Object.keys(RULES))('src/%s respects the dependency rule', (layer) => {
  const rule = RULES[layer]!;
  const violations: string[] = [];
  for (const file of sources(join(src, layer))) {
    for (const spec of importsOf(readFileSync(file, 'utf8'))) {
      const t = target(file, spec);
      if ('internal' in t ? rule.internal.test(t.internal) : rule.pkg?.test(t.pkg))
        violations.push(`${relative(src, file)} imports ${spec}`);
    }
  }
  expect({ rule: rule.why, violations }).toEqual({ rule: rule.why, violations: [] });
});
