// CSI Node service, on the node: the volume's block device is the one the
// Primary's engine attaches itself after promotion (tandemadm's attach: the kernel's
// nbd driver where there is one, nbdfuse + losetup otherwise, src/cli/attach.ts),
// read from the engine's status on its control socket. ControllerPublish made this
// node Primary; the node service only does what a person does next:
//
//   NodeStage     mount volume: mkfs once (never over data, consumer.ts), mount on the
//                 staging path (nosuid,nodev); block volume: nothing to stage
//   NodePublish   mount: bind mount of the staging path, read-only when asked;
//                 block: the device bind-mounted onto a file at the target path
//   NodeUnpublish / NodeUnstage   unmount (and remove the target), idempotent
//   NodeExpand    the mounted filesystem grows to its device (resize2fs, xfs_growfs);
//                 the device itself shows a grown volume only after a re-attach,
//                 which NodeStage does while nothing is mounted (expansion.ts)
//
// Every step looks at the mount table first, so a retried call finds its work done.
import { constants } from 'node:fs';
import { mkdir, open, readFile, rm, stat, statfs } from 'node:fs/promises';
import { dirname } from 'node:path';
import type { Logger } from 'pino';
import {
  type AttachingEngine,
  blockDeviceBytes,
  ConsumerError,
  growFilesystem,
  growFilesystemCommand,
  grownDevice,
  makeFilesystemOnce,
  needsReattach,
  run as runCommand,
  type Run,
} from '../node-agent/consumer.ts';
import { alreadyExists, CsiError, invalid, notFound, precondition, unavailable } from './errors.ts';
import { checkNodeExpansion } from './expansion.ts';
import { TOPOLOGY_KEY } from './identity.ts';
import { checkCapabilities, DEFAULT_FS, isBlock, unsupportedCapability, type VolumeCapability } from './requests.ts';
import { status } from '@grpc/grpc-js';

type Req = Record<string, unknown>;

/** The engine's status for a resource (undefined when none runs on this node) and `tandemadm … ARGS RESOURCE` (here: `reattach`). */
export type EngineView = AttachingEngine;

export type NodeOptions = {
  node: string;
  engines: EngineView;
  run?: Run;
  /** How long NodeStage/NodePublish wait for the Primary's device to be attached. */
  deviceWaitMs?: number;
  log?: Logger;
};

type Mount = { source: string; fstype: string };

/** Mount point → source and filesystem type, in this mount namespace (the plugin runs in the node's). */
async function mountTable(): Promise<Map<string, Mount>> {
  const out = new Map<string, Mount>();
  for (const line of (await readFile('/proc/self/mountinfo', 'utf8')).split('\n')) {
    const f = line.split(' ');
    const sep = f.indexOf('-');
    if (f[4] && sep > 0) out.set(f[4].replace(/\\040/g, ' '), { source: f[sep + 2] ?? '', fstype: f[sep + 1] ?? '' });
  }
  return out;
}

const exists = (p: string) =>
  stat(p).then(
    () => true,
    () => false,
  );

function str(req: Req, key: string): string {
  const v = req[key];
  return typeof v === 'string' ? v : '';
}

function need(req: Req, key: string, what: string): string {
  const v = str(req, key);
  if (!v) throw invalid(`${what}: ${key} is required`);
  return v;
}

export class NodeService {
  readonly #node: string;
  readonly #engines: EngineView;
  readonly #run: Run;
  readonly #deviceWaitMs: number;
  readonly #log: Logger | undefined;

  constructor(o: NodeOptions) {
    this.#node = o.node;
    this.#engines = o.engines;
    this.#run = o.run ?? runCommand;
    this.#deviceWaitMs = o.deviceWaitMs ?? 30_000;
    this.#log = o.log;
  }

  NodeGetInfo = async () => ({
    node_id: this.#node,
    max_volumes_per_node: 0,
    accessible_topology: { segments: { [TOPOLOGY_KEY]: this.#node } },
  });

  NodeGetCapabilities = async () => ({
    capabilities: ['STAGE_UNSTAGE_VOLUME', 'GET_VOLUME_STATS', 'EXPAND_VOLUME'].map((type) => ({ rpc: { type } })),
  });

  /** The Primary's attached device: FAILED_PRECONDITION when this node is not Primary, UNAVAILABLE while it attaches. */
  async #device(id: string, what: string): Promise<string> {
    const deadline = Date.now() + this.#deviceWaitMs;
    for (;;) {
      const s = await this.#engines.status(id);
      if (!s) throw precondition(`${what}: no engine of volume ${id} runs on ${this.#node} (is it published here?)`);
      if (s.role !== 'Primary')
        throw precondition(`${what}: volume ${id} is ${s.role} on ${this.#node}; ControllerPublish makes it Primary`);
      if (s.attach?.device) return s.attach.device;
      if (s.attach?.method === 'none')
        throw new CsiError(
          status.INTERNAL,
          `${what}: the engine of ${id} does not attach a device (${s.attach.reason})`,
        );
      if (Date.now() > deadline)
        throw unavailable(
          `${what}: volume ${id} is Primary on ${this.#node} but its device is not attached yet${s.attach?.lastError ? ` (${s.attach.lastError})` : ''}`,
        );
      await new Promise((r) => setTimeout(r, 250));
    }
  }

  async #mount(args: string[], what: string): Promise<void> {
    const m = await this.#run('mount', args);
    if (m.code !== 0) throw new CsiError(status.INTERNAL, `${what}: mount ${args.join(' ')}: ${m.stderr.trim()}`);
  }

  /** The size of a block device (or of the device a file is bind-mounted from), in bytes. */
  #blockBytes(device: string, what: string): Promise<number> {
    return blockDeviceBytes(this.#run, device).catch((err: Error) => {
      throw new CsiError(status.INTERNAL, `${what}: ${err.message}`);
    });
  }

  /**
   * The Primary's device with the engine's size (consumer.ts grownDevice: attached again
   * when it is smaller). Called only while nothing of ours has it mounted. A device the
   * kernel gives no size for is INTERNAL; a refused re-attach FAILED_PRECONDITION (the
   * device is open); no device, or one still short, by the time the device wait is over
   * UNAVAILABLE: the kubelet calls again.
   */
  async #grownDevice(id: string, device: string, what: string): Promise<string> {
    const grown = await grownDevice({
      engine: this.#engines,
      resource: id,
      device,
      size: (d) => this.#blockBytes(d, what),
      waitMs: this.#deviceWaitMs,
    }).catch((err: unknown) => {
      if (err instanceof ConsumerError)
        throw err.reason === 'ReattachFailed'
          ? precondition(`${what}: ${err.message}`)
          : unavailable(`${what}: ${err.message}`);
      throw err;
    });
    const r = grown.reattached;
    if (!r) return grown.device;
    if (r.bytes === undefined || needsReattach(r.bytes, r.volume))
      throw unavailable(
        `${what}: ${id} was re-attached but ${grown.device} still has ${r.bytes} bytes, not ${r.volume}`,
      );
    this.#log?.info({ volume: id, from: device, to: grown.device, bytes: r.bytes }, 'Re-attached the grown device');
    return grown.device;
  }

  /** Unmounts every layer mounted at `path`. */
  async #unmountAll(path: string, what: string): Promise<void> {
    for (let n = 0; (await mountTable()).has(path); n++) {
      const u = await this.#run('umount', [path]);
      if (u.code !== 0 || n > 8)
        throw new CsiError(status.INTERNAL, `${what}: umount ${path}: ${u.stderr.trim()} (still in use?)`);
    }
  }

  NodeStageVolume = async (req: Req) => {
    const what = 'NodeStageVolume';
    const id = need(req, 'volume_id', what);
    const staging = need(req, 'staging_target_path', what);
    const cap = req.volume_capability as VolumeCapability | undefined;
    if (!cap) throw invalid(`${what}: volume_capability is required`);
    checkCapabilities([cap], what);
    const attached = await this.#device(id, what);
    const mounted = isBlock(cap) ? undefined : (await mountTable()).get(staging)?.source;
    if (mounted === attached) return {};
    if (mounted !== undefined) throw alreadyExists(`${what}: ${staging} already has ${mounted} mounted`);
    // A volume that grew since its device was attached (offline expansion): attached again first.
    const device = await this.#grownDevice(id, attached, what);
    if (isBlock(cap)) return {};
    const fs = (cap.mount?.fs_type || DEFAULT_FS) as 'ext4' | 'xfs';
    await makeFilesystemOnce(this.#run, device, fs).catch((err: Error) => {
      throw new CsiError(status.INTERNAL, `${what}: ${err.message}`);
    });
    await mkdir(staging, { recursive: true });
    // nosuid,nodev: the volume's content is the tenant's. nouuid: both replicas hold the
    // same XFS; a kernel that still has the other copy mounted must mount this one.
    const options = ['nosuid', 'nodev', ...(fs === 'xfs' ? ['nouuid'] : []), ...(cap.mount?.mount_flags ?? [])];
    await this.#mount(['-t', fs, '-o', options.join(','), device, staging], what);
    return {};
  };

  NodeUnstageVolume = async (req: Req) => {
    const what = 'NodeUnstageVolume';
    need(req, 'volume_id', what);
    const staging = need(req, 'staging_target_path', what);
    await this.#unmountAll(staging, what);
    return {};
  };

  NodePublishVolume = async (req: Req) => {
    const what = 'NodePublishVolume';
    const id = need(req, 'volume_id', what);
    const staging = need(req, 'staging_target_path', what);
    const target = need(req, 'target_path', what);
    const cap = req.volume_capability as VolumeCapability | undefined;
    if (!cap) throw invalid(`${what}: volume_capability is required`);
    checkCapabilities([cap], what);
    const readonly = req.readonly === true || cap.access_mode?.mode === 'SINGLE_NODE_READER_ONLY';
    const table = await mountTable();
    if (isBlock(cap)) {
      const device = await this.#device(id, what);
      if (table.has(target)) return {};
      await mkdir(dirname(target), { recursive: true });
      // The target is a file the device is bind-mounted onto (CSI: the SP creates it).
      const h = await open(target, constants.O_WRONLY | constants.O_CREAT | constants.O_NOFOLLOW, 0o600);
      await h.close();
      await this.#mount(['--bind', device, target], what);
    } else {
      if (!table.has(staging)) throw precondition(`${what}: ${staging} is not staged (NodeStageVolume first)`);
      if (table.has(target)) return {};
      await mkdir(target, { recursive: true });
      await this.#mount(['--bind', '-o', 'nosuid,nodev', staging, target], what);
    }
    if (readonly) await this.#mount(['-o', 'remount,bind,ro,nosuid,nodev', target], what);
    return {};
  };

  NodeUnpublishVolume = async (req: Req) => {
    const what = 'NodeUnpublishVolume';
    need(req, 'volume_id', what);
    const target = need(req, 'target_path', what);
    await this.#unmountAll(target, what);
    // CSI: the SP removes the file or directory it made at the target path.
    await rm(target, { recursive: false, force: true }).catch(async (err: NodeJS.ErrnoException) => {
      if (err.code === 'EISDIR' || err.code === 'ERR_FS_EISDIR') await rm(target, { recursive: true, force: true });
      else throw err;
    });
    return {};
  };

  NodeExpandVolume = async (req: Req) => {
    const what = 'NodeExpandVolume';
    const id = need(req, 'volume_id', what);
    const path = need(req, 'volume_path', what);
    const cap = req.volume_capability as VolumeCapability | undefined;
    if (cap) {
      const why = unsupportedCapability(cap);
      if (why) throw invalid(`${what}: ${why}`);
    }
    const engine = await this.#engines.status(id);
    if (!engine) throw notFound(`${what}: volume ${id} has no engine on ${this.#node}`);
    if (!(await exists(path))) throw notFound(`${what}: ${path} does not exist`);
    // The kubelet names the mount (staging or target path) of a filesystem volume and the
    // device (or the file it is bind-mounted on) of a raw block volume.
    const block = cap ? isBlock(cap) : !(await stat(path)).isDirectory();
    const mount = block ? undefined : (await mountTable()).get(path);
    if (!block && !mount) throw precondition(`${what}: nothing is mounted at ${path} (NodeStageVolume first)`);
    const device = mount?.source ?? path;
    const deviceBytes = await this.#blockBytes(device, what);
    const range = req.capacity_range as { required_bytes?: number } | null | undefined;
    checkNodeExpansion({
      id,
      device,
      requiredBytes: Number(range?.required_bytes ?? 0),
      engineBytes: engine.size,
      deviceBytes,
    });
    if (mount) {
      const fs = cap?.mount?.fs_type || mount.fstype;
      if (!growFilesystemCommand(fs, device, path))
        throw invalid(`${what}: ${path} holds ${fs}; tandem grows ext4 and xfs`);
      // Both grow a mounted filesystem online, and do nothing when it already fills its device.
      const failed = await growFilesystem(this.#run, device, fs, path);
      if (failed) throw new CsiError(status.INTERNAL, `${what}: ${failed}`);
    }
    return { capacity_bytes: deviceBytes };
  };

  NodeGetVolumeStats = async (req: Req) => {
    const what = 'NodeGetVolumeStats';
    const id = need(req, 'volume_id', what);
    const path = need(req, 'volume_path', what);
    if (!(await this.#engines.status(id))) throw notFound(`${what}: volume ${id} has no engine on ${this.#node}`);
    if (!(await exists(path))) throw notFound(`${what}: ${path} does not exist`);
    const st = await stat(path);
    if (!st.isDirectory()) {
      // A raw block volume: its size is all there is to say.
      return { usage: [{ unit: 'BYTES', total: await this.#blockBytes(path, what) }] };
    }
    const s = await statfs(path);
    return {
      usage: [
        {
          unit: 'BYTES',
          total: s.blocks * s.bsize,
          available: s.bavail * s.bsize,
          used: (s.blocks - s.bfree) * s.bsize,
        },
        { unit: 'INODES', total: s.files, available: s.ffree, used: s.files - s.ffree },
      ],
    };
  };
}
