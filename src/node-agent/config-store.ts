// The engine's configuration file in the run dir, written from the replica's
// spec and the peer secret (render-config.ts); mode 0600, it holds the secret.
import { access, mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import type { EngineClient } from './engine-client.ts';
import type { ConfigStore, NodeTls } from './executor.ts';
import { renderConfig, type TlsFiles } from './render-config.ts';

export class FileConfigStore implements ConfigStore {
  readonly #engines: EngineClient;
  readonly #fenceCommand: string;

  constructor(engines: EngineClient, fenceCommand: string) {
    this.#engines = engines;
    this.#fenceCommand = fenceCommand;
  }

  async write(spec: ReplicatedVolumeReplicaSpec, secret: string, tls?: NodeTls): Promise<void> {
    const path = this.#engines.configPath(spec.resource);
    const files = tls ? await this.#writeTls(dirname(path), tls) : undefined;
    const text = renderConfig(spec, secret, { command: this.#fenceCommand }, files);
    // The epoch is in the header comment only; rewriting for it alone is harmless.
    if ((await readFile(path, 'utf8').catch(() => '')) !== text) await writeFile(path, text, { mode: 0o600 });
  }

  /**
   * The node's TLS key, certificate and CA, beside the configurations (the engines,
   * wherever they run, see the same run dir); the key mode 0600, in a 0700 directory.
   * One set per node, shared by its volumes; rewritten only when it changed.
   */
  async #writeTls(runDir: string, tls: NodeTls): Promise<TlsFiles> {
    const dir = join(runDir, 'tls');
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const files: TlsFiles = { ca: join(dir, 'ca.crt'), cert: join(dir, 'tls.crt'), key: join(dir, 'tls.key') };
    for (const [path, text] of [
      [files.ca, tls.ca],
      [files.cert, tls.cert],
      [files.key, tls.key],
    ] as const)
      if ((await readFile(path, 'utf8').catch(() => '')) !== text) await writeFile(path, text, { mode: 0o600 });
    return files;
  }

  async remove(resource: string): Promise<boolean> {
    const path = this.#engines.configPath(resource);
    const there = await access(path).then(
      () => true,
      () => false,
    );
    await rm(path, { force: true });
    return there;
  }
}
