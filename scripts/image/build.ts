// `npm run image`: the images the local cluster runs, built here without Docker or
// a registry, as OCI archives in ${TANDEM_CACHE:-~/.cache/tandem}/images:
//
//   tandem   the Dockerfile's final stage (recipe.ts reads it): a Debian root made
//            by mmdebstrap from the mirror apt uses here, with image/packages.txt and
//            the Dockerfile's other RUN lines; the Node binary of package-lock's
//            `node` package; production node_modules (`npm ci` as the Dockerfile's
//            deps stage runs it); the work tree's files as the Dockerfile COPYs them
//   pause    the pod sandbox: Debian's static catatonit in pause mode (-P), so
//            containerd never pulls registry.k8s.io/pause
//   mariadb  (on request) Debian's mariadb-server, for workloads in the e2e tests
//   csi-sidecars  (on request) external-provisioner, external-attacher and
//            external-resizer, built from their Go modules by scripts/csi-setup.sh, at
//            the paths upstream's images use (/csi-provisioner, /csi-attacher,
//            /csi-resizer): the chart's csi.*.image values
//
// Each layer is cached by a hash of its inputs; with nothing changed a build takes
// about a second. Tags are the first 12 hex digits of the manifest digest, so a
// changed image gets a new name and `helm upgrade` rolls the pods.
import { createHash } from 'node:crypto';
import {
  existsSync,
  mkdirSync,
  mkdtempSync,
  readdirSync,
  readFileSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import { homedir } from 'node:os';
import { join, relative } from 'node:path';
import { BlobStore, type Image, type Layer, runOk, tarArgs, writeImage } from './oci.ts';
import { parseDockerfile, parsePackages, recipeFrom, type Recipe } from './recipe.ts';

export const imagesDir = join(process.env.TANDEM_CACHE ?? join(homedir(), '.cache/tandem'), 'images');
export const repositories = {
  tandem: 'localhost/tandem',
  pause: 'localhost/tandem-pause',
  mariadb: 'localhost/tandem-mariadb',
  'csi-sidecars': 'localhost/tandem-csi-sidecars',
} as const;
export type ImageName = keyof typeof repositories;

// Bumped when the way a layer is made changes, so cached layers are not reused.
const BUILDER_VERSION = '1';

type Log = (msg: string) => void;

const sha = (...parts: (string | Buffer)[]) => {
  const h = createHash('sha256');
  for (const p of parts) h.update(p).update('\0');
  return h.digest('hex').slice(0, 24);
};

/** `'…'` for sh. */
const shq = (s: string) => `'${s.replace(/'/g, `'\\''`)}'`;

/** The apt sources this machine uses (deb822 .sources files, else sources.list), for mmdebstrap. */
function aptSources(): string[] {
  const dir = '/etc/apt/sources.list.d';
  const files = existsSync(dir)
    ? readdirSync(dir)
        .filter((f) => f.endsWith('.sources') || f.endsWith('.list'))
        .map((f) => join(dir, f))
    : [];
  if (existsSync('/etc/apt/sources.list') && /^\s*deb\s/m.test(readFileSync('/etc/apt/sources.list', 'utf8')))
    files.push('/etc/apt/sources.list');
  // Only Debian's own archive: a third-party source has no business in the image.
  const debian = files.filter((f) => /deb\.debian\.org|debian-security|\/debian\b/.test(readFileSync(f, 'utf8')));
  if (debian.length === 0) throw new Error('No Debian apt source found under /etc/apt to build the image from');
  return debian;
}

/** A Debian root (minbase, slimmed like the official -slim images) as a layer, with `runs` run inside it. */
async function debianLayer(
  store: BlobStore,
  o: { suite: string; packages: string[]; runs: string[] },
  log: Log,
): Promise<Layer> {
  const sources = aptSources();
  const key = `debian-${sha(BUILDER_VERSION, o.suite, o.packages.join(','), ...o.runs, ...sources.map((f) => readFileSync(f)))}`;
  const cached = store.cachedLayer(key);
  if (cached) return cached;
  log(`Building a Debian ${o.suite} root with ${o.packages.join(', ')} (mmdebstrap; about a minute)`);
  const t0 = Date.now();
  const work = mkdtempSync(join(imagesDir, 'debian-'));
  try {
    const tar = join(work, 'root.tar');
    await runOk([
      'nice',
      '-n',
      '19',
      'mmdebstrap',
      '--mode=root',
      '--variant=minbase',
      '--format=tar',
      '--quiet',
      `--include=${o.packages.join(',')}`,
      '--aptopt=APT::Install-Recommends "false"',
      ...['man', 'doc', 'info', 'locale', 'lintian', 'linda'].map((d) => `--dpkgopt=path-exclude=/usr/share/${d}/*`),
      '--dpkgopt=path-include=/usr/share/doc/*/copyright',
      ...o.runs.map((r) => `--customize-hook=chroot "$1" /bin/sh -euc ${shq(r)}`),
      // As `rm -rf /var/lib/apt/lists/*` in the Dockerfile; the image carries no apt state.
      '--customize-hook=rm -rf "$1"/var/lib/apt/lists/* "$1"/var/cache/apt/*.bin',
      o.suite,
      tar,
      ...sources,
    ]);
    const layer = await store.layer(key, ['cat', tar]);
    log(
      `Built the Debian root in ${((Date.now() - t0) / 1000).toFixed(0)} s (${(layer.size / 2 ** 20).toFixed(0)} MiB)`,
    );
    return layer;
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Every regular file and symlink under the sources, with its mode: the key of a COPY layer. */
function treeKey(root: string, paths: readonly string[]): string {
  const h = createHash('sha256');
  const walk = (p: string) => {
    const st = statSync(p, { throwIfNoEntry: false });
    if (!st) throw new Error(`COPY source ${relative(root, p)} does not exist`);
    h.update(`${relative(root, p)}\0${st.mode}\0`);
    if (st.isDirectory()) for (const e of readdirSync(p).sort()) walk(join(p, e));
    else h.update(readFileSync(p));
  };
  for (const p of paths) walk(join(root, p));
  return h.digest('hex').slice(0, 24);
}

/** A layer with `files` (absolute path in the image → file on this machine) and nothing else. */
async function filesLayer(store: BlobStore, key: string, files: [string, string][]): Promise<Layer> {
  const cached = store.cachedLayer(key);
  if (cached) return cached;
  const stage = mkdtempSync(join(imagesDir, 'stage-'));
  try {
    for (const [inImage, from] of files) {
      const to = join(stage, inImage);
      mkdirSync(join(to, '..'), { recursive: true });
      await runOk(['cp', '-a', '--no-target-directory', from, to]);
    }
    return await store.layer(key, tarArgs(stage, readdirSync(stage).sort()));
  } finally {
    rmSync(stage, { recursive: true, force: true });
  }
}

export function readRecipe(repo: string): Recipe {
  return recipeFrom(parseDockerfile(readFileSync(join(repo, 'Dockerfile'), 'utf8')));
}

/** The tandem image, as the Dockerfile describes it. */
export async function buildTandem(repo: string, log: Log): Promise<Image> {
  const store = new BlobStore(imagesDir);
  const recipe = readRecipe(repo);
  if (process.version !== `v${recipe.nodeVersion}`)
    throw new Error(
      `The Dockerfile's NODE_VERSION is ${recipe.nodeVersion} but this Node (package-lock's) is ${process.version}: make them one`,
    );
  const packages = parsePackages(readFileSync(join(repo, recipe.packagesFile), 'utf8'));
  const layers: Layer[] = [await debianLayer(store, { suite: recipe.suite, packages, runs: recipe.runs }, log)];
  const appVersion = (JSON.parse(readFileSync(join(repo, 'package.json'), 'utf8')) as { version: string }).version;
  for (const copy of recipe.copies) {
    if (copy.kind === 'node-binary') {
      const st = statSync(process.execPath);
      layers.push(
        await filesLayer(store, `node-${sha(process.version, String(st.size), String(st.mtimeMs))}`, [
          [copy.dest, process.execPath],
        ]),
      );
    } else if (copy.kind === 'node-modules') {
      const inputs = ['package.json', 'package-lock.json'].map((f) => readFileSync(join(repo, f)));
      const key = `modules-${sha(BUILDER_VERSION, copy.npmCommand, ...inputs)}`;
      if (!store.cachedLayer(key)) {
        log(`Installing production dependencies (${copy.npmCommand})`);
        const work = mkdtempSync(join(imagesDir, 'npm-'));
        try {
          for (const f of ['package.json', 'package-lock.json'])
            writeFileSync(join(work, f), readFileSync(join(repo, f)));
          await runOk(['sh', '-c', copy.npmCommand], { cwd: work });
          layers.push(await filesLayer(store, key, [[copy.dest, join(work, 'node_modules')]]));
        } finally {
          rmSync(work, { recursive: true, force: true });
        }
      } else {
        layers.push(store.cachedLayer(key)!);
      }
    } else if (copy.kind === 'script-output') {
      // The stage's script, run here into a scratch directory (it fetches from the Go module proxy).
      const script = readFileSync(join(repo, copy.script));
      const key = `script-${sha(BUILDER_VERSION, copy.script, script)}`;
      if (!store.cachedLayer(key)) {
        log(`Running ${copy.script}`);
        const work = mkdtempSync(join(imagesDir, 'script-'));
        try {
          await runOk(['bash', join(repo, copy.script), join(work, 'out')]);
          layers.push(await filesLayer(store, key, [[copy.dest, join(work, 'out')]]));
        } finally {
          rmSync(work, { recursive: true, force: true });
        }
      } else {
        layers.push(store.cachedLayer(key)!);
      }
    } else {
      const files: [string, string][] = copy.sources.map((s) => {
        const isDir = statSync(join(repo, s)).isDirectory();
        // COPY a dir → dest is that dir's contents; COPY file… dir/ → dest/file.
        return [isDir ? copy.dest : join(copy.dest, s.split('/').at(-1)!), join(repo, s)];
      });
      layers.push(await filesLayer(store, `copy-${sha(copy.dest, treeKey(repo, copy.sources))}`, files));
    }
  }
  return writeImage(store, {
    repository: repositories.tandem,
    tagPrefix: `${appVersion}-`,
    layers,
    config: recipe.config,
    archive: join(imagesDir, 'tandem.oci.tar'),
  });
}

/** Debian's catatonit, static, in pause mode: the pod sandbox image. */
export async function buildPause(log: Log): Promise<Image> {
  const store = new BlobStore(imagesDir);
  // Built once: a pause process has nothing to update (delete the archive to rebuild).
  const archive = join(imagesDir, 'pause.oci.tar');
  if (existsSync(archive) && existsSync(`${archive}.ref`)) {
    const [ref, manifestDigest] = readFileSync(`${archive}.ref`, 'utf8').split(' ') as [string, string];
    return { ref, manifestDigest, archive };
  }
  const work = mkdtempSync(join(imagesDir, 'pause-'));
  try {
    const candidate = async () =>
      (await runOk(['apt-cache', 'policy', 'catatonit'])).match(/Candidate:\s*(\S+)/)?.[1]?.replace('(none)', '');
    let version = await candidate();
    if (!version) {
      // A machine whose package lists were never fetched (or were cleaned).
      await runOk(['apt-get', 'update', '-qq']);
      version = await candidate();
    }
    if (!version) throw new Error('apt-cache knows no catatonit package even after apt-get update');
    const key = `pause-${sha(BUILDER_VERSION, version)}`;
    let layer = store.cachedLayer(key);
    if (!layer) {
      log(`Building the pause image from Debian's catatonit ${version}`);
      await runOk(['apt-get', 'download', `catatonit=${version}`], { cwd: work });
      const deb = readdirSync(work).find((f) => f.endsWith('.deb'))!;
      await runOk(['dpkg-deb', '-x', join(work, deb), join(work, 'x')]);
      layer = await filesLayer(store, key, [['/catatonit', join(work, 'x/usr/bin/catatonit')]]);
    }
    return await writeImage(store, {
      repository: repositories.pause,
      tagPrefix: '',
      layers: [layer],
      config: { env: [], entrypoint: ['/catatonit', '-P'], cmd: [] },
      archive,
    });
  } finally {
    rmSync(work, { recursive: true, force: true });
  }
}

/** Debian's MariaDB server, for database workloads in the e2e tests. */
export async function buildMariadb(log: Log): Promise<Image> {
  const store = new BlobStore(imagesDir);
  const base = await debianLayer(
    store,
    {
      suite: 'bookworm',
      packages: ['mariadb-server'],
      runs: ['mkdir -p /run/mysqld /var/lib/mysql && chown mysql:mysql /run/mysqld /var/lib/mysql'],
    },
    log,
  );
  return writeImage(store, {
    repository: repositories.mariadb,
    tagPrefix: '',
    layers: [base],
    config: {
      env: [['PATH', '/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin']],
      // /run is empty in the image; a blank data directory (a fresh volume) is initialised once.
      entrypoint: [
        '/bin/sh',
        '-euc',
        [
          'mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld /var/lib/mysql',
          '[ -d /var/lib/mysql/mysql ] || mariadb-install-db --user=mysql --datadir=/var/lib/mysql --skip-test-db >/dev/null',
          'exec mariadbd "$@"',
        ].join('\n'),
        'mariadbd',
      ],
      cmd: ['--user=mysql', '--datadir=/var/lib/mysql', '--bind-address=0.0.0.0'],
    },
    archive: join(imagesDir, 'mariadb.oci.tar'),
  });
}

/** The CSI sidecars csi-setup.sh built (static binaries), in one image without a base. */
export async function buildCsiSidecars(repo: string, log: Log): Promise<Image> {
  const store = new BlobStore(imagesDir);
  const out = await runOk(['bash', join(repo, 'scripts/csi-setup.sh')]);
  const paths = Object.fromEntries(
    out
      .trim()
      .split('\n')
      .map((l) => l.split('=', 2) as [string, string]),
  );
  const files: [string, string][] = [
    ['/csi-provisioner', paths.CSI_PROVISIONER!],
    ['/csi-attacher', paths.CSI_ATTACHER!],
    ['/csi-resizer', paths.CSI_RESIZER!],
  ];
  const key = `csi-sidecars-${sha(BUILDER_VERSION, ...files.map(([, f]) => `${f}:${statSync(f).size}:${statSync(f).mtimeMs}`))}`;
  if (!store.cachedLayer(key)) log('Packing the CSI sidecars');
  const layer = await filesLayer(store, key, files);
  return writeImage(store, {
    repository: repositories['csi-sidecars'],
    tagPrefix: '',
    layers: [layer],
    config: { env: [], workdir: '/', entrypoint: ['/csi-provisioner'], cmd: [] },
    archive: join(imagesDir, 'csi-sidecars.oci.tar'),
  });
}

export async function build(repo: string, names: readonly ImageName[], log: Log): Promise<Record<string, Image>> {
  mkdirSync(imagesDir, { recursive: true });
  const out: Record<string, Image> = {};
  for (const n of names) {
    const t0 = Date.now();
    out[n] =
      n === 'tandem'
        ? await buildTandem(repo, log)
        : n === 'pause'
          ? await buildPause(log)
          : n === 'csi-sidecars'
            ? await buildCsiSidecars(repo, log)
            : await buildMariadb(log);
    log(`${out[n].ref} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  }
  return out;
}
