// Runs a pass's plan (plan.ts): each action through the engine (tandemadm and
// the control socket), the consumer (mkfs/mount), the fencer (conditional writes
// of the volume's status) or the API (events). The first action that fails ends
// the run; its failure condition is reported in place of the plan's. Nothing
// here decides: the plan said what to do, in which order.
import type { Logger } from 'pino';
import type { ConditionInput } from '../api/condition.ts';
import { CONDITIONS, KINDS, SECRET_KEY, tlsSecretName } from '../api/names.ts';
import type { ReplicatedVolumeReplica, ReplicatedVolumeReplicaSpec } from '../api/replicated-volume-replica.ts';
import { type Clock, systemClock } from '../runtime/clock.ts';
import { describeError } from '../runtime/kube.ts';
import type { AgentApi } from './agent-api.ts';
import type { Fencer } from './fence.ts';
import { type AttachingEngine, grownDevice, needsReattach } from './consumer.ts';
import type { PathFacts } from './disk-check.ts';
import type { Action, FailureCondition, Plan } from './plan.ts';
import { ConfigValueError } from './render-config.ts';

/** The agent's handle on engines (EngineClient: tandemadm + the control socket). */
export interface EngineDriver extends AttachingEngine {
  /** Resources with an engine (or its leftovers) on this node. */
  resources(): Promise<string[]>;
}

/** The node's TLS material for peer links, PEM (from its TLS Secret, which the controller issues). */
export type NodeTls = { ca: string; cert: string; key: string };

/** The engine's configuration file (it holds the shared secret); with `tls`, the link runs over TLS. */
export interface ConfigStore {
  write(spec: ReplicatedVolumeReplicaSpec, secret: string, tls?: NodeTls): Promise<void>;
  /** Removes the configuration; true when there was one. */
  remove(resource: string): Promise<boolean>;
}

/** The consumer seam (consumer.ts): mkfs + mount on the Primary, the placeholder elsewhere. */
export interface ConsumerPort {
  /** `namespace` picks the admin's mount root (mount-path.ts). */
  ensure(
    device: string,
    filesystem: 'xfs' | 'ext4',
    mountPath: string,
    namespace: string,
  ): Promise<{ created: boolean; growError?: string }>;
  /** The kernel's size of a block device, undefined when unknown. */
  deviceBytes(device: string): Promise<number | undefined>;
  /** Unmounts (and with `placeholder` leaves the placeholder); true when it changed a mount. */
  release(mountPath: string | undefined, o?: { placeholder?: boolean; namespace?: string }): Promise<boolean>;
  /** The topmost mount's source at the path, undefined when nothing is mounted there. */
  source(mountPath: string | undefined): Promise<string | undefined>;
  exists(path: string): Promise<boolean>;
  /** What is at each path (disk-check.ts), opening nothing for writing. */
  diskFacts(paths: readonly string[], o: { engineRunning: boolean }): Promise<Map<string, PathFacts>>;
  /** Creates a new sparse backing file of `bytes` (never over an existing file). */
  createBackingFile(path: string, bytes: number): Promise<void>;
  /** Removes a deleted volume's pool file, only inside the pool directory (canonical paths). */
  removeBackingFile(path: string, directory: string): Promise<'removed' | 'absent'>;
}

export type Outcome = {
  conditions: ConditionInput[];
  /** An action changed something (the next pass should look again at once). */
  acted: boolean;
};

/** An action that could not do its job; `reason` overrides the plan's failure reason (a ConsumerError's). */
class ActionFailed extends Error {
  readonly reason: string | undefined;
  constructor(message: string, reason?: string) {
    super(message);
    this.reason = reason;
  }
}

export class PlanExecutor {
  readonly #node: string;
  readonly #api: AgentApi;
  readonly #engines: EngineDriver;
  readonly #config: ConfigStore;
  readonly #consumer: ConsumerPort;
  readonly #fencer: Fencer;
  readonly #clock: Clock;
  readonly #secrets = new Map<string, { value: string; at: number }>();
  readonly #kept = new Set<string>();
  readonly #peerTls: boolean;

  constructor(o: {
    node: string;
    api: AgentApi;
    engines: EngineDriver;
    config: ConfigStore;
    consumer: ConsumerPort;
    fencer: Fencer;
    clock?: Clock;
    /** Peer links over TLS with the node's certificate (the controller's CA); off only where no controller issues them. */
    peerTls?: boolean;
  }) {
    this.#peerTls = o.peerTls ?? false;
    this.#node = o.node;
    this.#api = o.api;
    this.#engines = o.engines;
    this.#config = o.config;
    this.#consumer = o.consumer;
    this.#fencer = o.fencer;
    this.#clock = o.clock ?? systemClock;
  }

  async run(rvr: ReplicatedVolumeReplica, plan: Plan, log: Logger): Promise<Outcome> {
    let acted = false;
    // An event reports the action before it; it is not recorded when that action did nothing.
    let lastDidSomething = true;
    for (const a of plan.actions) {
      if (a.kind === 'event') {
        if (lastDidSomething) await this.event(rvr, a.type, a.reason, a.message);
        continue;
      }
      if (a.kind === 'confirm-order') {
        const why = await this.#confirm(rvr, a);
        if (why) {
          log.info({ ordered: `${a.role}@${a.epoch}`, why }, 'Not acting on the order; looking again');
          return { conditions: plan.conditions, acted: true };
        }
        continue;
      }
      try {
        lastDidSomething = await this.#run(rvr, a, log);
        if (lastDidSomething && a.kind !== 'write-config') acted = true;
      } catch (err) {
        const failure: FailureCondition =
          'failure' in a ? a.failure : { type: CONDITIONS.engineReady, reason: 'SyncError' };
        const reason = err instanceof ActionFailed && err.reason ? err.reason : failure.reason;
        const message = describeError(err).message;
        log.warn({ action: a.kind, reason, error: message }, 'Could not converge');
        const conditions = plan.conditions.filter((c) => c.type !== failure.type && c.type !== CONDITIONS.mounted);
        return { conditions: [...conditions, { type: failure.type, status: 'False', reason, message }], acted };
      }
    }
    return { conditions: plan.conditions, acted };
  }

  /**
   * Before a mount: a kernel device smaller than the volume (it grew since the device was
   * attached) is attached again, while nothing holds it (consumer.ts grownDevice). A size
   * the kernel does not tell leaves the device as it is; one still short after the
   * re-attach is mounted all the same, with a warning: the volume is usable at its old size.
   */
  async #grownDevice(rvr: ReplicatedVolumeReplica, device: string, log: Logger): Promise<string> {
    const grown = await grownDevice({
      engine: this.#engines,
      resource: rvr.spec.resource,
      device,
      size: (d) => this.#consumer.deviceBytes(d),
      waitMs: 0,
    }).catch((err: unknown) => {
      throw new ActionFailed(describeError(err).message, (err as { reason?: string }).reason);
    });
    const r = grown.reattached;
    if (!r) return grown.device;
    log.info(
      { from: r.from, to: r.volume, device: grown.device },
      'Attached the grown device again before mounting it',
    );
    if (r.bytes !== undefined && needsReattach(r.bytes, r.volume)) {
      const message = `the re-attached device ${grown.device} has ${r.bytes} bytes, the volume ${r.volume}`;
      log.warn(
        { device: grown.device, bytes: r.bytes, volume: r.volume },
        'Mounting a device still short of the volume',
      );
      await this.event(rvr, 'Warning', 'FilesystemNotGrown', `Mounted at its old size: ${message}`);
    }
    return grown.device;
  }

  /** Runs one action; false when it found nothing to do (or did not succeed, harmlessly). */
  async #run(
    rvr: ReplicatedVolumeReplica,
    a: Exclude<Action, { kind: 'event' | 'confirm-order' }>,
    log: Logger,
  ): Promise<boolean> {
    const spec = rvr.spec;
    const res = spec.resource;
    const ns = rvr.metadata.namespace;
    const adm = async (...args: string[]) => {
      const r = await this.#engines.adm(res, ...args);
      if (r.code !== 0) throw new ActionFailed(r.stderr.trim() || `tandemadm ${args.join(' ')} exited ${r.code}`);
      return r;
    };
    switch (a.kind) {
      // Each action says whether it changed anything: a pass whose actions change nothing has
      // converged and reports at once (a pass that acted defers its report to the next pass,
      // so actions that always "acted" held a deleted volume's report off for a minute).
      case 'release-consumer':
        return await this.#consumer
          .release(spec.mountPath, { placeholder: a.placeholder, namespace: ns })
          .catch((err: unknown) => {
            throw new ActionFailed(
              a.failure.reason === 'StaleMount'
                ? `${spec.mountPath} is still mounted on this Secondary and in use; every I/O on it fails; it is unmounted as soon as nothing holds it (${describeError(err).message})`
                : describeError(err).message,
            );
          });
      case 'down':
        await adm('down');
        log.info('Took the engine down');
        return true;
      case 'remove-config':
        return await this.#config.remove(res);
      case 'write-config': {
        const secret = await this.#secret(spec.secretName);
        if (secret === undefined) throw new ActionFailed(`Secret ${spec.secretName} has no ${SECRET_KEY}`);
        let tls: NodeTls | undefined;
        if (this.#peerTls) {
          // Never without TLS when it is on: the engine waits for the controller to issue the node's certificate.
          tls = await this.#api.readNodeTls();
          if (!tls)
            throw new ActionFailed(
              `the node's TLS Secret ${tlsSecretName(this.#node)} is missing or incomplete; the controller issues it`,
              'TlsMissing',
            );
        }
        await this.#config.write(spec, secret, tls).catch((err: unknown) => {
          // A value the configuration syntax cannot carry: nothing was written, the engine is not started.
          if (err instanceof ConfigValueError) throw new ActionFailed(err.message, 'InvalidConfigValue');
          throw err;
        });
        return true;
      }
      case 'up': {
        const md = await this.#engines.adm(res, 'create-md');
        if (md.code === 0) log.info({ disk: spec.self.disk, metaDisk: spec.self.metaDisk }, 'Created metadata');
        const up = await this.#engines.adm(res, 'up');
        if (up.code !== 0)
          throw new ActionFailed(
            [up.stderr.trim(), md.code !== 0 ? `(create-md: ${md.stderr.trim()})` : ''].filter(Boolean).join(' '),
          );
        log.info('Started the engine');
        return true;
      }
      case 'promote':
        await adm(...(a.force ? ['--', '--force'] : []), 'primary');
        log.info({ epoch: spec.epoch, force: a.force }, 'Promoted');
        return true;
      case 'demote':
        await adm(...(a.force ? ['--', '--force'] : []), 'secondary');
        if (a.force) log.warn({ epoch: spec.epoch }, 'Demoted while frozen: the frozen I/O failed');
        else log.info({ epoch: spec.epoch }, 'Demoted');
        return true;
      case 'fence-peer-and-resume': {
        const outcome = await this.#fencer.fencePeer(ns, spec);
        if (outcome !== 'fenced')
          throw new ActionFailed(
            outcome === 'superseded'
              ? 'I/O is frozen: this node lost its peer and is no longer the rightful Primary (a newer epoch exists); it will be demoted'
              : 'I/O is frozen: this node lost its peer and cannot reach the API server to fence it; writes wait until the peer returns or the fence is recorded',
            'Frozen',
          );
        const r = await this.#engines.adm(res, 'resume-io');
        if (r.code !== 0) throw new ActionFailed(`resume-io: ${r.stderr.trim()}`, 'SyncError');
        log.warn({ epoch: spec.epoch }, 'Fenced the peer; resumed I/O');
        return true;
      }
      case 'connect': {
        const r = await this.#engines.adm(res, ...(a.discardMyData ? ['--', '--discard-my-data'] : []), 'connect');
        if (a.discardMyData)
          log.warn(
            { code: r.code, epoch: spec.epoch },
            "Split brain after a failover: discarding this node's changes (they are saved) and resyncing from the Primary",
          );
        else log.info({ code: r.code, role: spec.role }, 'StandAlone: connecting to the peer again');
        return r.code === 0;
      }
      case 'outdate': {
        const r = await this.#engines.adm(res, 'outdate');
        if (r.code === 0) log.warn({ epoch: spec.epoch }, "Fenced in the API: outdated this node's disk");
        return r.code === 0;
      }
      case 'lift-peer-fence':
        return this.liftPeerFence(ns, spec);
      case 'ensure-consumer': {
        const device = await this.#grownDevice(rvr, a.device, log);
        const m = await this.#consumer.ensure(device, spec.filesystem!, spec.mountPath!, ns).catch((err: unknown) => {
          throw new ActionFailed(describeError(err).message, (err as { reason?: string }).reason);
        });
        if (m.growError) {
          log.warn({ device, error: m.growError }, 'Mounted; the filesystem could not grow to the device');
          await this.event(rvr, 'Warning', 'FilesystemNotGrown', `Mounted at its old size: ${m.growError}`);
        }
        if (m.created) {
          log.info({ device: a.device, filesystem: spec.filesystem }, 'Created filesystem');
          await this.event(
            rvr,
            'Normal',
            'FilesystemCreated',
            `mkfs.${spec.filesystem} on ${a.device} (the volume was blank)`,
          );
        }
        log.info({ device: a.device, mountPath: spec.mountPath }, 'Mounted the filesystem');
        return true;
      }
      case 'grow-disk': {
        // The config written earlier in this pass carries the new size; grow-disk reads it.
        await adm('--', '--size', `${a.bytes / 1024}K`, 'grow-disk');
        log.info({ bytes: a.bytes, disk: spec.self.disk }, 'Grew the disk');
        await this.event(rvr, 'Normal', 'DiskGrown', `${spec.self.disk} on ${spec.node} holds ${a.bytes} bytes now`);
        return true;
      }
      case 'resize':
        await adm('resize');
        log.info({ bytes: a.bytes }, 'Resized the device');
        await this.event(
          rvr,
          'Normal',
          'Resized',
          `The device grows to ${a.bytes} bytes on ${spec.node} and ${spec.peer.node}; the new area is synced`,
        );
        return true;
      case 'create-backing-file':
        await this.#consumer.createBackingFile(a.path, a.bytes);
        log.info({ path: a.path, bytes: a.bytes }, 'Created the sparse backing file');
        await this.event(rvr, 'Normal', 'BackingFileCreated', `${a.path} (${a.bytes} bytes, sparse)`);
        return true;
      case 'remove-backing-file': {
        const r = await this.#consumer.removeBackingFile(a.path, a.directory).catch(async (err: unknown) => {
          // Refused (not a regular file in the pool directory): the volume still goes, the path stays.
          if ((err as { reason?: string }).reason !== 'NotInPool') throw err;
          await this.#keep(rvr, describeError(err).message, log);
          return 'absent' as const;
        });
        if (r === 'absent') return false;
        log.info({ path: a.path }, 'Removed the backing file of the deleted volume');
        await this.event(rvr, 'Normal', 'BackingFileRemoved', `${a.path} (data and internal metadata)`);
        return true;
      }
      case 'keep-backing-file':
        await this.#keep(rvr, a.message, log);
        return false;
      case 'release-device':
        await this.#engines.adm(res, 'secondary');
        return true;
    }
  }

  /** A deleted volume's disk stays: said once per replica (Down passes repeat until the replica is gone). */
  async #keep(rvr: ReplicatedVolumeReplica, message: string, log: Logger): Promise<void> {
    const key = `${rvr.metadata.uid}:${message}`;
    if (this.#kept.has(key)) return;
    this.#kept.add(key);
    log.warn({ disk: rvr.spec.self.disk, why: message }, 'Left the backing file as it is');
    await this.event(rvr, 'Warning', 'BackingFileKept', message);
  }

  /**
   * An engine's role moves only on the volume's current order: the replica as the API
   * server has it now must still say this role at this epoch (the cache may lag), and
   * the volume must be at that epoch (a controller that stopped between writing the
   * volume's status and the replicas leaves orders of an older epoch behind), naming
   * this node Primary, unfenced, for a promotion. Why not, or undefined.
   */
  async #confirm(rvr: ReplicatedVolumeReplica, a: { role: string; epoch: number }): Promise<string | undefined> {
    const [now, rv] = await Promise.all([
      this.#api.readReplica(rvr.metadata.namespace, rvr.metadata.name),
      this.#fencer.readVolume(rvr.metadata.namespace, rvr.spec.volume),
    ]);
    if (now?.role !== a.role || now.epoch !== a.epoch)
      return `the replica now orders ${now ? `${now.role} at epoch ${now.epoch}` : 'nothing (it is gone)'}`;
    const st = rv?.status;
    if ((st?.epoch ?? 0) !== a.epoch) return `the volume is at epoch ${st?.epoch ?? 0}`;
    if (a.role === 'Primary' && st?.primary !== this.#node) return `the volume's Primary is ${st?.primary ?? 'none'}`;
    if (a.role === 'Primary' && st?.fence?.node === this.#node) return 'this node is fenced';
    return undefined;
  }

  /** Lifts a fence on the peer while this Primary's engine is Connected with an UpToDate peer (checked again under the fence lock). */
  liftPeerFence(ns: string, spec: ReplicatedVolumeReplicaSpec): Promise<boolean> {
    const whole = async () => {
      const e = await this.#engines.status(spec.resource);
      return (
        e?.role === 'Primary' &&
        e.cstate === 'Connected' &&
        e.disk === 'UpToDate' &&
        e.peerDisk === 'UpToDate' &&
        e.suspended !== true
      );
    };
    return this.#fencer.liftFence(ns, spec, whole);
  }

  async event(
    rvr: ReplicatedVolumeReplica,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): Promise<void> {
    await this.#api
      .recordEvent(
        { kind: KINDS.replica.kind, name: rvr.metadata.name, namespace: rvr.metadata.namespace, uid: rvr.metadata.uid },
        { type, reason, message },
      )
      .catch(() => undefined);
  }

  /** The peer secret, read at most once a minute per Secret (passes run every few seconds). */
  async #secret(name: string): Promise<string | undefined> {
    const key = name;
    const now = this.#clock.now().getTime();
    const cached = this.#secrets.get(key);
    if (cached && now - cached.at < 60_000) return cached.value;
    const value = await this.#api.readPeerSecret(name);
    if (value !== undefined) this.#secrets.set(key, { value, at: now });
    return value;
  }

  get node(): string {
    return this.#node;
  }
}
