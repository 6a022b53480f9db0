// OCI images without a container engine: layers are gzip'd tar streams of
// directories (GNU tar, made reproducible: sorted, fixed mtime, root-owned), the
// image is an OCI image layout (image-spec "image-layout.md": oci-layout,
// index.json, blobs/sha256/…) packed as one tar, which `ctr images import` reads.
//
// Blobs are kept in a content-addressed cache, so an unchanged layer is neither
// tarred nor compressed twice: a layer is looked up by a key its caller computes
// from its inputs.
import { spawn } from 'node:child_process';
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { pipeline } from 'node:stream/promises';
import { Transform } from 'node:stream';
import { createGzip } from 'node:zlib';

export const MEDIA = {
  layer: 'application/vnd.oci.image.layer.v1.tar+gzip',
  config: 'application/vnd.oci.image.config.v1+json',
  manifest: 'application/vnd.oci.image.manifest.v1+json',
  index: 'application/vnd.oci.image.index.v1+json',
} as const;

/** A layer blob: `digest` of the gzip'd bytes, `diffId` of the tar (image-spec config.md "rootfs"). */
export type Layer = { digest: string; diffId: string; size: number };

export type ImageConfig = {
  env: [string, string][];
  workdir?: string;
  user?: string;
  entrypoint: string[];
  cmd: string[];
};

export type Image = { ref: string; manifestDigest: string; archive: string };

export class BlobStore {
  readonly dir: string;
  constructor(dir: string) {
    this.dir = dir;
    mkdirSync(join(dir, 'blobs/sha256'), { recursive: true });
    mkdirSync(join(dir, 'layers'), { recursive: true });
  }

  blobPath(digest: string): string {
    return join(this.dir, 'blobs/sha256', digest.replace(/^sha256:/, ''));
  }

  /** The layer recorded under `key` whose blob is still there, if any. */
  cachedLayer(key: string): Layer | undefined {
    const f = join(this.dir, 'layers', `${key}.json`);
    if (!existsSync(f)) return undefined;
    const layer = JSON.parse(readFileSync(f, 'utf8')) as Layer;
    return existsSync(this.blobPath(layer.digest)) ? layer : undefined;
  }

  /**
   * A layer from a tar stream on `argv`'s stdout (tar, or anything that writes
   * one), recorded under `key`; reused when `key` was built before.
   */
  async layer(key: string, argv: readonly string[]): Promise<Layer> {
    const cached = this.cachedLayer(key);
    if (cached) return cached;
    const tmp = join(this.dir, `tmp-${process.pid}-${Date.now()}.tar.gz`);
    const diff = createHash('sha256');
    const blob = createHash('sha256');
    let size = 0;
    const child = spawn(argv[0]!, argv.slice(1), { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => {
      stderr += d.toString();
    });
    const exited = new Promise<number | null>((resolve) => child.on('close', resolve));
    const tap = (hash: ReturnType<typeof createHash>, count = false) =>
      new Transform({
        transform(chunk: Buffer, _enc, done) {
          hash.update(chunk);
          if (count) size += chunk.length;
          done(null, chunk);
        },
      });
    try {
      await pipeline(child.stdout, tap(diff), createGzip({ level: 6 }), tap(blob, true), createWriteStream(tmp));
      const code = await exited;
      if (code !== 0) throw new Error(`${argv.join(' ')} exited with ${code}: ${stderr.trim()}`);
    } catch (err) {
      rmSync(tmp, { force: true });
      throw err;
    }
    const layer = { digest: `sha256:${blob.digest('hex')}`, diffId: `sha256:${diff.digest('hex')}`, size };
    renameSync(tmp, this.blobPath(layer.digest));
    writeFileSync(join(this.dir, 'layers', `${key}.json`), `${JSON.stringify(layer)}\n`);
    return layer;
  }

  /** Writes a JSON blob; returns its descriptor fields. */
  json(value: unknown): { digest: string; size: number; bytes: Buffer } {
    const bytes = Buffer.from(JSON.stringify(value));
    const digest = `sha256:${createHash('sha256').update(bytes).digest('hex')}`;
    if (!existsSync(this.blobPath(digest))) writeFileSync(this.blobPath(digest), bytes);
    return { digest, size: bytes.length, bytes };
  }
}

/**
 * GNU tar arguments for a reproducible layer of `dir`'s contents: entries sorted,
 * one mtime, root-owned, no atime/ctime; `paths` relative to `dir` (default: all).
 */
export function tarArgs(dir: string, paths: readonly string[] = ['.']): string[] {
  return [
    'tar',
    '--create',
    '--file=-',
    `--directory=${dir}`,
    '--sort=name',
    '--mtime=@0',
    '--owner=0',
    '--group=0',
    '--numeric-owner',
    '--format=posix',
    '--pax-option=exthdr.name=%d/PaxHeaders/%f,delete=atime,delete=ctime',
    '--',
    ...paths,
  ];
}

/** Writes the image's config, manifest and an OCI layout archive naming it `ref`. */
export async function writeImage(
  store: BlobStore,
  o: { repository: string; tagPrefix: string; layers: Layer[]; config: ImageConfig; archive: string },
): Promise<Image> {
  const arch = process.arch === 'x64' ? 'amd64' : process.arch;
  const config = store.json({
    architecture: arch,
    os: 'linux',
    config: {
      Env: o.config.env.map(([k, v]) => `${k}=${v}`),
      ...(o.config.entrypoint.length ? { Entrypoint: o.config.entrypoint } : {}),
      ...(o.config.cmd.length ? { Cmd: o.config.cmd } : {}),
      ...(o.config.workdir ? { WorkingDir: o.config.workdir } : {}),
      ...(o.config.user ? { User: o.config.user } : {}),
    },
    rootfs: { type: 'layers', diff_ids: o.layers.map((l) => l.diffId) },
  });
  const manifest = store.json({
    schemaVersion: 2,
    mediaType: MEDIA.manifest,
    config: { mediaType: MEDIA.config, digest: config.digest, size: config.size },
    layers: o.layers.map((l) => ({ mediaType: MEDIA.layer, digest: l.digest, size: l.size })),
  });
  // The tag names the content: a changed image is a new name.
  const ref = `${o.repository}:${o.tagPrefix}${manifest.digest.slice('sha256:'.length, 'sha256:'.length + 12)}`;
  const index = {
    schemaVersion: 2,
    mediaType: MEDIA.index,
    manifests: [
      {
        mediaType: MEDIA.manifest,
        digest: manifest.digest,
        size: manifest.size,
        platform: { architecture: arch, os: 'linux' },
        // containerd's import names the image after the first; other tools read the second.
        annotations: { 'io.containerd.image.name': ref, 'org.opencontainers.image.ref.name': ref },
      },
    ],
  };
  // Unchanged since the last build: the archive is already this image.
  const stamp = `${o.archive}.ref`;
  const stamped = `${ref} ${manifest.digest}`;
  if (existsSync(o.archive) && existsSync(stamp) && readFileSync(stamp, 'utf8') === stamped)
    return { ref, manifestDigest: manifest.digest, archive: o.archive };
  // The layout is a directory of hard links into the store, packed once.
  const layout = `${o.archive}.layout`;
  rmSync(layout, { recursive: true, force: true });
  mkdirSync(join(layout, 'blobs/sha256'), { recursive: true });
  writeFileSync(join(layout, 'oci-layout'), '{"imageLayoutVersion":"1.0.0"}');
  writeFileSync(join(layout, 'index.json'), JSON.stringify(index));
  for (const d of [config.digest, manifest.digest, ...o.layers.map((l) => l.digest)]) {
    const hex = d.replace(/^sha256:/, '');
    const target = join(layout, 'blobs/sha256', hex);
    if (!existsSync(target)) await linkOrCopy(store.blobPath(d), target);
  }
  const tmp = `${o.archive}.tmp`;
  await runOk(['tar', '--create', `--file=${tmp}`, `--directory=${layout}`, '--sort=name', '.']);
  renameSync(tmp, o.archive);
  writeFileSync(stamp, stamped);
  rmSync(layout, { recursive: true, force: true });
  return { ref, manifestDigest: manifest.digest, archive: o.archive };
}

async function linkOrCopy(from: string, to: string): Promise<void> {
  await runOk(['cp', '--link', from, to]).catch(() => runOk(['cp', from, to]));
}

export function runOk(argv: readonly string[], opts: { cwd?: string; env?: NodeJS.ProcessEnv } = {}): Promise<string> {
  return new Promise((resolve, reject) => {
    const child = spawn(argv[0]!, argv.slice(1), {
      stdio: ['ignore', 'pipe', 'pipe'],
      ...(opts.cwd ? { cwd: opts.cwd } : {}),
      env: opts.env ?? process.env,
    });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => {
      out += d.toString();
    });
    child.stderr.on('data', (d: Buffer) => {
      err += d.toString();
    });
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve(out)
        : reject(new Error(`${argv.join(' ')} exited with ${code}: ${err.trim().slice(-2000)}`)),
    );
  });
}
