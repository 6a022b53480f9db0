// The engine's configuration file in the run dir, written from the replica's
// spec and the peer secret (render-config.ts); mode 0600, it holds the secret.
import { readFile, rm, writeFile } from 'node:fs/promises';
import type { ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import type { EngineClient } from './engine-client.ts';
import type { ConfigStore } from './executor.ts';
import { renderConfig } from './render-config.ts';

export class FileConfigStore implements ConfigStore {
  readonly #engines: EngineClient;
  readonly #fenceCommand: string;

  constructor(engines: EngineClient, fenceCommand: string) {
    this.#engines = engines;
    this.#fenceCommand = fenceCommand;
  }

  async write(spec: ReplicatedVolumeReplicaSpec, secret: string): Promise<void> {
    const path = this.#engines.configPath(spec.resource);
    const text = renderConfig(spec, secret, { command: this.#fenceCommand });
    // The epoch is in the header comment only; rewriting for it alone is harmless.
    if ((await readFile(path, 'utf8').catch(() => '')) !== text) await writeFile(path, text, { mode: 0o600 });
  }

  async remove(resource: string): Promise<void> {
    await rm(this.#engines.configPath(resource), { force: true });
  }
}
