// The Dockerfile and `npm run image` are one recipe: the repository's Dockerfile
// parses into what the local build does, agrees with package-lock.json and the
// chart, and anything the local build could not reproduce is refused.
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { parseDockerfile, parsePackages, recipeFrom, RecipeError } from './recipe.ts';

const repo = join(import.meta.dirname, '../..');
const read = (f: string) => readFileSync(join(repo, f), 'utf8');

describe("the repository's Dockerfile", () => {
  const recipe = recipeFrom(parseDockerfile(read('Dockerfile')));

  test('builds on Debian with the shared package list, which holds the tools the agent runs', () => {
    expect(recipe.suite).toBe('bookworm');
    expect(recipe.packagesFile).toBe('image/packages.txt');
    const packages = parsePackages(read(recipe.packagesFile));
    // nbdfuse, nbd-client, fusermount3, losetup/mount/blkid, mkfs.ext4, mkfs.xfs (src/cli/attach.ts, src/node-agent/consumer.ts)
    expect(packages).toEqual(
      expect.arrayContaining(['libnbd-bin', 'nbd-client', 'fuse3', 'util-linux', 'mount', 'e2fsprogs', 'xfsprogs']),
    );
  });

  test("ships the Node of package-lock's `node` package", () => {
    const lock = JSON.parse(read('package-lock.json')) as { packages: Record<string, { version?: string }> };
    expect(recipe.nodeVersion).toBe(lock.packages['node_modules/node']?.version);
  });

  test('puts the files where the chart runs them from', () => {
    expect(recipe.copies).toEqual([
      { kind: 'node-binary', dest: '/usr/local/bin/node' },
      {
        kind: 'node-modules',
        dest: '/app/node_modules',
        npmCommand: 'npm ci --omit=dev --ignore-scripts --no-audit --no-fund',
      },
      { kind: 'context', sources: ['package.json'], dest: '/app' },
      { kind: 'context', sources: ['bin'], dest: '/app/bin' },
      { kind: 'context', sources: ['src'], dest: '/app/src' },
      { kind: 'script-output', dest: '/app/protos', script: 'scripts/fetch-protos.sh' },
    ]);
    const chart = ['controller', 'node-agent'].map((t) => read(`helm/tandem/templates/${t}.yaml`)).join('\n');
    expect(chart).toContain('command: [node, /app/bin/tandem-controller.js]');
    expect(chart).toContain('command: [node, /app/bin/tandem-node-agent.js]');
    expect(recipe.config).toMatchObject({
      workdir: '/app',
      user: 'node',
      entrypoint: ['tandemadm'],
      cmd: ['--help'],
    });
    expect(Object.fromEntries(recipe.config.env).PATH?.split(':')[0]).toBe('/app/bin');
    // The chart's controller runs as uid 1000: the user the image creates.
    expect(recipe.runs.join('\n')).toContain('useradd --uid 1000');
  });
});

describe('parseDockerfile and recipeFrom', () => {
  const base = [
    'ARG NODE_VERSION=24.1.0',
    // biome-ignore lint/suspicious/noTemplateCurlyInString: a Dockerfile ARG reference, not a template
    'FROM node:${NODE_VERSION}-bookworm-slim AS deps',
    'RUN npm ci --omit=dev',
    'FROM debian:bookworm-slim',
    'COPY image/packages.txt /tmp/p.txt',
    'RUN apt-get update \\',
    '  # a comment inside a continuation',
    ' && xargs -a /tmp/p.txt apt-get install -y',
    'COPY --from=deps /usr/local/bin/node /usr/local/bin/node',
    'WORKDIR /app',
    'COPY --from=deps /app/node_modules ./node_modules',
    'COPY a b ./',
    'ENV A=1 B="two words"',
  ];
  const recipeOf = (lines: string[]) => recipeFrom(parseDockerfile(lines.join('\n')));

  test('joins continuations, drops comments, expands global ARGs, makes destinations absolute', () => {
    const r = recipeOf(base);
    expect(r.nodeVersion).toBe('24.1.0');
    expect(r.packagesFile).toBe('image/packages.txt');
    expect(r.runs).toEqual([]);
    expect(r.copies).toEqual([
      { kind: 'node-binary', dest: '/usr/local/bin/node' },
      { kind: 'node-modules', dest: '/app/node_modules', npmCommand: 'npm ci --omit=dev' },
      { kind: 'context', sources: ['a', 'b'], dest: '/app' },
    ]);
    expect(r.config.env).toEqual([
      ['A', '1'],
      ['B', 'two words'],
    ]);
  });

  test.each([
    ['an instruction the local build cannot reproduce', [...base, 'ADD https://example.invalid/x /x'], /ADD is not/],
    ['an ENV value with a $ reference', [...base, 'ENV PATH=/x:$PATH'], /without \$ references/],
    ['a shell-form ENTRYPOINT', [...base, 'ENTRYPOINT tandemadm'], /exec form/],
    ['a base other than debian:SUITE-slim', base.map((l) => l.replace('debian:bookworm-slim', 'alpine:3')), /debian/],
    [
      'apt-get install of a list not copied just before',
      base.filter((l) => !l.startsWith('COPY image/')),
      /packages of a list/,
    ],
    ['no Node binary', base.filter((l) => !l.includes('/usr/local/bin/node')), /no Node binary/],
    ['an ARG with no default', ['ARG X', ...base.slice(1)], /default value/],
  ])('refuses %s', (_what, lines, message) => {
    expect(() => recipeOf(lines)).toThrow(RecipeError);
    expect(() => recipeOf(lines)).toThrow(message);
  });
});
