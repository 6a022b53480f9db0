// A split-brain victim's diverged blocks are kept: before a resync (or a mirrored
// write during it) overwrites a block this node still holds its own version of,
// that version is copied to a sparse image at the same offset, and the image is
// made durable before the overwrite may land. At the end a map of the saved
// ranges is written beside it. The device as this node had it = the new device
// with those blocks laid over.
import { join } from 'node:path';
import type { Logger } from 'pino';
import { Bitmap, BLOCK_SIZE } from './bitmap.ts';
import type { BlockFile, Clock, Storage } from './world.ts';

export class DiscardSave {
  readonly path: string;
  readonly #image: BlockFile;
  readonly #saved: Bitmap;
  readonly #storage: Storage;
  readonly #log: Logger;
  #bytes = 0;

  private constructor(path: string, image: BlockFile, blocks: number, storage: Storage, log: Logger) {
    this.path = path;
    this.#image = image;
    this.#saved = new Bitmap(blocks);
    this.#storage = storage;
    this.#log = log;
  }

  static async start(
    o: { dir: string; resource: string; node: string; size: number },
    world: { storage: Storage; clock: Clock },
    log: Logger,
  ): Promise<DiscardSave> {
    await world.storage.mkdirp(o.dir);
    const stamp = new Date(world.clock.now()).toISOString().replace(/[:.]/g, '-');
    const path = join(o.dir, `${o.resource}-${o.node}-${stamp}.img`);
    const image = await world.storage.create(path, o.size);
    log.warn({ path }, "Saving this node's blocks before the resync overwrites them");
    return new DiscardSave(path, image, Math.ceil(o.size / BLOCK_SIZE), world.storage, log);
  }

  /**
   * Copies this node's version of every block of [offset, offset+length) that is still
   * out of sync (`oos`: it differs from the peer) and not saved yet, from `data` into
   * the image, durably. Call before the range is overwritten.
   */
  async saveBeforeOverwrite(offset: number, length: number, oos: Bitmap, data: BlockFile): Promise<void> {
    const from = Math.floor(offset / BLOCK_SIZE);
    const to = Math.min(Math.ceil((offset + length) / BLOCK_SIZE), this.#saved.bits);
    let saved = false;
    for (let b = from; b < to; b++) {
      if (!oos.test(b) || this.#saved.test(b)) continue;
      let e = b + 1;
      while (e < to && oos.test(e) && !this.#saved.test(e)) e++;
      const old = await data.read(b * BLOCK_SIZE, (e - b) * BLOCK_SIZE);
      await this.#image.write(b * BLOCK_SIZE, old);
      this.#saved.setRange(b, e);
      this.#bytes += old.length;
      saved = true;
      b = e;
    }
    if (saved) await this.#image.datasync();
  }

  /** Closes the image and writes the map of saved ranges; returns the image's path. */
  async finish(meta: { resource: string; node: string; deviceSize: number }): Promise<string> {
    const ranges: [number, number][] = [];
    for (let b = this.#saved.nextSet(0); b >= 0; b = this.#saved.nextSet(b)) {
      const e = this.#saved.nextClear(b);
      ranges.push([b * BLOCK_SIZE, (e - b) * BLOCK_SIZE]);
      b = e;
    }
    await this.#image.datasync();
    await this.#image.close();
    await this.#storage.writeText(
      `${this.path}.json`,
      JSON.stringify({ ...meta, blockSize: BLOCK_SIZE, ranges }, null, 1),
    );
    this.#log.warn(
      { path: this.path, bytes: this.#bytes, ranges: ranges.length },
      'Saved the blocks this node discarded',
    );
    return this.path;
  }
}
