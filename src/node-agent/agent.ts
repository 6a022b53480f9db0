// The node agent: for every ReplicatedVolumeReplica of this node, make the
// engine match the spec and report what it is. Level-based, one replica at a
// time per key (the controller runtime's work queue), every few seconds and at
// every change of the replica:
//
//   Down  → release the consumer, `tandemadm down`                (deletion; data stays)
//   disks → missing disk or meta-disk: DisksFound=False, nothing is touched
//   Probe → report DisksFound=True and stop there (the controller waits for both nodes)
//   Up    → config file from spec + Secret; no engine? `create-md` (refused, harmlessly,
//           when metadata exists) and `up`; role: `primary` (`--force` only for the
//           ordered initial sync of a fresh disk) or release consumer + `secondary`;
//           Primary with filesystem/mountPath: mkfs once + mount
//   report → the replica's status (merge patch on /status), when it changed or
//           every heartbeat interval
//
// Engines found running for resources no replica of this node names (after the
// informer has synced) are taken down: their volume is gone.
import { readFile, rm, writeFile } from 'node:fs/promises';
import type { Server } from 'node:net';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';
import { setCondition, type Condition, type ConditionInput } from '../api/condition.ts';
import { CONDITIONS, FIELD_MANAGERS, KINDS, LABELS, SECRET_KEY } from '../api/names.ts';
import {
  ReplicatedVolumeReplica,
  ReplicatedVolumeReplicaStatus,
  type ReplicatedVolumeReplicaSpec,
} from '../api/replicated-volume-replica.ts';
import { describeFence } from '../api/replicated-volume.ts';
import { SupervisedInformer } from '../controller/runtime/informer.ts';
import {
  collectionPath,
  describeError,
  isNotFound,
  listCustom,
  mergePatch,
  recordEvent,
  replicaApi,
} from '../controller/runtime/kube.ts';
import { WorkQueue } from '../controller/runtime/work-queue.ts';
import { canonicalJson } from '../controller/decisions/status.ts';
import { Consumer, ConsumerError } from './consumer.ts';
import { EngineClient, type EngineStatusView } from './engine-client.ts';
import type { AgentMetrics } from './metrics.ts';
import { Fencer, FENCE_EXIT, serveFenceRequests } from './fence.ts';
import { fenceHandlerCommand, renderConfig } from './render-config.ts';

const FENCE_SCRIPT = fileURLToPath(new URL('../../bin/tandem-fence-peer.js', import.meta.url));

export const HEARTBEAT_MS = 5_000;

export interface AgentOptions {
  kc: k8s.KubeConfig;
  node: string;
  runDir: string;
  log: Logger;
  metrics: AgentMetrics;
  /** Where the host's / is mounted (the chart's pod); '' when the agent runs in the host's mount namespace. */
  hostRoot?: string;
  now?: () => Date;
}

/** Conditions to set; `stop`: the next step must not run (the engine is not as ordered). */
type Outcome = { conditions: ConditionInput[]; mounted?: boolean; stop?: boolean };

export class NodeAgent {
  readonly #o: Required<AgentOptions>;
  readonly #custom: k8s.CustomObjectsApi;
  readonly #core: k8s.CoreV1Api;
  readonly #engines: EngineClient;
  readonly #consumer: Consumer;
  readonly #queue = new WorkQueue({ baseDelayMs: 500, maxDelayMs: 30_000 });
  readonly #informer: SupervisedInformer<k8s.KubernetesObject>;
  /** Last status written per replica key, and when. */
  readonly #reported = new Map<string, { json: string; at: number }>();
  readonly #secrets = new Map<string, { value: string; at: number }>();
  /** The newest epoch seen per replica: an older spec (a stale controller) is never acted on. */
  readonly #epochs = new Map<string, number>();
  readonly #fencer: Fencer;
  readonly #fenceCommand: string;
  #fenceServer: Server | undefined;
  #workers: Promise<void>[] = [];
  #ticker: NodeJS.Timeout | undefined;

  constructor(o: AgentOptions) {
    this.#o = { now: () => new Date(), hostRoot: '', ...o };
    this.#custom = o.kc.makeApiClient(k8s.CustomObjectsApi);
    this.#core = o.kc.makeApiClient(k8s.CoreV1Api);
    this.#engines = new EngineClient({ runDir: o.runDir, node: o.node });
    this.#consumer = new Consumer({ hostRoot: o.hostRoot ?? '' });
    this.#fencer = new Fencer({
      custom: this.#custom,
      node: o.node,
      log: o.log.child({ component: 'fence' }),
      onChange: (what, rv, f) =>
        recordEvent(
          this.#core,
          FIELD_MANAGERS.agent,
          o.node,
          { kind: KINDS.volume.kind, name: rv.metadata.name, namespace: rv.metadata.namespace, uid: rv.metadata.uid },
          what === 'fenced'
            ? { type: 'Warning', reason: 'Fenced', message: describeFence(f) }
            : {
                type: 'Normal',
                reason: 'Unfenced',
                message: `${f.node} is UpToDate again; ${o.node} lifted its fence`,
              },
        ),
    });
    this.#fenceCommand = fenceHandlerCommand(process.execPath, FENCE_SCRIPT, this.fenceSocket);
    const selector = `${LABELS.node}=${o.node}`;
    this.#informer = new SupervisedInformer({
      kc: o.kc,
      log: o.log,
      path: collectionPath(KINDS.replica.plural),
      labelSelector: selector,
      list: listCustom(this.#custom, KINDS.replica.plural, selector),
      onChange: (r) => this.#queue.add(`${r.metadata?.namespace}/${r.metadata?.name}`),
      onResync: () => this.#enqueueAll(),
    });
  }

  get synced(): boolean {
    return this.#informer.synced;
  }

  get fenceSocket(): string {
    return join(this.#o.runDir, 'agent.sock');
  }

  async start(workers = 2): Promise<void> {
    this.#fenceServer = await serveFenceRequests(
      this.fenceSocket,
      (res, action) =>
        action === 'unfence'
          ? this.#onUnfenceRequest(res)
          : action === 'rejoin'
            ? this.#onSplitBrain(res)
            : this.#onFenceRequest(res),
      this.#o.log,
    );
    await this.#informer.start();
    for (let i = 0; i < workers; i++) this.#workers.push(this.#work());
    this.#enqueueAll();
    this.#ticker = setInterval(() => this.#enqueueAll(), HEARTBEAT_MS);
  }

  async stop(): Promise<void> {
    clearInterval(this.#ticker);
    this.#queue.shutDown();
    await Promise.race([Promise.all(this.#workers), new Promise((r) => setTimeout(r, 10_000))]);
    await this.#informer.stop();
    await new Promise<void>((r) => {
      if (this.#fenceServer) this.#fenceServer.close(() => r());
      else r();
    });
  }

  /** This node's replica of an engine's resource, from the informer's cache. */
  #replicaOf(resource: string): ReplicatedVolumeReplica | undefined {
    const raw = this.#informer
      .list()
      .find((r) => (r as { spec?: { resource?: string; node?: string } }).spec?.resource === resource);
    const parsed = raw ? ReplicatedVolumeReplica.safeParse(raw) : undefined;
    return parsed?.success && parsed.data.spec.node === this.#o.node ? parsed.data : undefined;
  }

  /** The fence-peer handler of one of our engines asks: fence its peer in the API. */
  async #onFenceRequest(resource: string): Promise<number> {
    const rvr = this.#replicaOf(resource);
    if (!rvr) {
      this.#o.log.error(
        { resource },
        'Fence request for a resource no replica of this node names; the engine stays frozen',
      );
      return FENCE_EXIT.unreachable;
    }
    this.#queue.add(`${rvr.metadata.namespace}/${rvr.metadata.name}`);
    if (rvr.spec.role !== 'Primary') return FENCE_EXIT.superseded;
    return FENCE_EXIT[await this.#fencer.fencePeer(rvr.metadata.namespace, rvr.spec)];
  }

  /** The unfence-peer handler: the Primary's engine is Connected with an UpToDate peer again. */
  async #onUnfenceRequest(resource: string): Promise<number> {
    const rvr = this.#replicaOf(resource);
    if (rvr?.spec.role !== 'Primary') return 0;
    await this.#liftPeerFence(rvr.metadata.namespace, rvr.spec);
    return 0;
  }

  /**
   * The split-brain handler: the engine has just refused a connection. Look at the
   * replica now (the rejoin step reconnects a StandAlone Primary, and a Secondary
   * superseded by a failover with --discard-my-data), and once more a moment later,
   * when the engine is surely StandAlone.
   */
  async #onSplitBrain(resource: string): Promise<number> {
    const rvr = this.#replicaOf(resource);
    if (!rvr) return 1;
    const key = `${rvr.metadata.namespace}/${rvr.metadata.name}`;
    this.#queue.add(key);
    this.#queue.addAfter(key, 1000);
    return 0;
  }

  /** Lifts a fence on the peer while this Primary's engine is Connected with an UpToDate peer (checked again under the fence lock). */
  #liftPeerFence(ns: string, spec: ReplicatedVolumeReplicaSpec): Promise<boolean> {
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

  #enqueueAll(): void {
    for (const r of this.#informer.list()) this.#queue.add(`${r.metadata?.namespace}/${r.metadata?.name}`);
    this.#queue.add('*orphans*');
  }

  async #work(): Promise<void> {
    for (let key = await this.#queue.get(); key !== undefined; key = await this.#queue.get()) {
      try {
        if (key === '*orphans*') await this.#downOrphans();
        else await this.#sync(key);
        this.#queue.forget(key);
      } catch (err) {
        const delayMs = this.#queue.addRateLimited(key);
        this.#o.log.warn({ rvr: key, error: describeError(err), delayMs }, 'Sync failed; retrying');
      } finally {
        this.#queue.done(key);
      }
    }
  }

  async #sync(key: string): Promise<void> {
    const [namespace, name] = key.split('/') as [string, string];
    const raw = this.#informer.get(name, namespace);
    if (!raw) return;
    const parsed = ReplicatedVolumeReplica.safeParse(raw);
    if (!parsed.success) {
      this.#o.log.error({ rvr: key, error: parsed.error.message }, 'Replica spec does not parse; ignoring it');
      return;
    }
    const rvr = parsed.data;
    if (rvr.spec.node !== this.#o.node) return;
    const log = this.#o.log.child({ rvr: key, resource: rvr.spec.resource });
    const seen = this.#epochs.get(key) ?? 0;
    if (rvr.spec.epoch < seen) {
      log.warn({ epoch: rvr.spec.epoch, seen }, 'Ignoring a replica spec from an older epoch');
      return;
    }
    this.#epochs.set(key, rvr.spec.epoch);
    // The engine first and reported at once; the consumer (mkfs can take a while) after.
    for (const step of [
      (r: ReplicatedVolumeReplica, l: Logger) => this.#converge(r, l),
      (r: ReplicatedVolumeReplica, l: Logger) => this.#convergeConsumer(r, l),
    ]) {
      let outcome: Outcome | undefined;
      try {
        outcome = await step(rvr, log);
      } catch (err) {
        const reason = err instanceof ConsumerError ? err.reason : 'SyncError';
        outcome = {
          conditions: [
            {
              type: err instanceof ConsumerError ? CONDITIONS.mounted : CONDITIONS.engineReady,
              status: 'False',
              reason,
              message: describeError(err).message,
            },
          ],
          stop: true,
        };
        log.warn({ reason, error: describeError(err) }, 'Could not converge');
      }
      if (!outcome) return;
      const engine = await this.#engines.status(rvr.spec.resource).catch(() => undefined);
      this.#o.metrics.observe(rvr.spec.resource, engine);
      await this.#report(rvr, engine, outcome, log);
      if (outcome.stop) return;
    }
  }

  async #converge(rvr: ReplicatedVolumeReplica, log: Logger): Promise<Outcome> {
    const spec = rvr.spec;
    const res = spec.resource;
    if (spec.engine === 'Down') {
      await this.#consumer.release(spec.mountPath);
      if (await this.#engines.status(res)) {
        const r = await this.#engines.adm(res, 'down');
        if (r.code !== 0)
          return {
            conditions: [
              { type: CONDITIONS.engineReady, status: 'False', reason: 'DownFailed', message: r.stderr.trim() },
            ],
            stop: true,
          };
        log.info('Took the engine down');
      }
      await rm(this.#engines.configPath(res), { force: true }); // it holds the shared secret
      return {
        conditions: [
          {
            type: CONDITIONS.engineReady,
            status: 'False',
            reason: 'Down',
            message: 'The engine is down (the volume is being deleted)',
          },
        ],
        stop: true,
      };
    }

    const missing: string[] = [];
    for (const p of [
      spec.self.disk,
      ...(spec.self.metaDisk === 'internal' ? [] : [spec.self.metaDisk.replace(/\[\d+\]$/, '')]),
    ]) {
      if (!(await Consumer.exists(p))) missing.push(p);
    }
    if (missing.length > 0) {
      return {
        conditions: [
          {
            type: CONDITIONS.disksFound,
            status: 'False',
            reason: 'DiskMissing',
            message: `${missing.join(' and ')} ${missing.length > 1 ? 'do' : 'does'} not exist on node ${spec.node}; nothing was touched`,
          },
        ],
        stop: true,
      };
    }
    const disks: ConditionInput = {
      type: CONDITIONS.disksFound,
      status: 'True',
      reason: 'Found',
      message: `${spec.self.disk} and meta-disk ${spec.self.metaDisk}`,
    };
    if (spec.engine === 'Probe')
      return {
        conditions: [
          disks,
          {
            type: CONDITIONS.engineReady,
            status: 'False',
            reason: 'Probing',
            message: 'Waiting for the controller to start the engines',
          },
        ],
        stop: true,
      };

    const secret = await this.#secret(rvr);
    if (secret === undefined)
      return {
        conditions: [
          disks,
          {
            type: CONDITIONS.engineReady,
            status: 'False',
            reason: 'SecretMissing',
            message: `Secret ${spec.secretName} has no ${SECRET_KEY}`,
          },
        ],
        stop: true,
      };
    await this.#writeConfig(spec, secret);
    const ns = rvr.metadata.namespace;

    let engine = await this.#engines.status(res);
    if (!engine) {
      const md = await this.#engines.adm(res, 'create-md');
      if (md.code === 0) log.info({ disk: spec.self.disk, metaDisk: spec.self.metaDisk }, 'Created metadata');
      const up = await this.#engines.adm(res, 'up');
      if (up.code !== 0) {
        const message = [up.stderr.trim(), md.code !== 0 ? `(create-md: ${md.stderr.trim()})` : '']
          .filter(Boolean)
          .join(' ');
        return {
          conditions: [disks, { type: CONDITIONS.engineReady, status: 'False', reason: 'EngineFailed', message }],
          stop: true,
        };
      }
      log.info('Started the engine');
      engine = await this.#engines.status(res);
      if (!engine)
        return {
          conditions: [
            disks,
            {
              type: CONDITIONS.engineReady,
              status: 'False',
              reason: 'EngineFailed',
              message: 'The engine exited after up',
            },
          ],
          stop: true,
        };
    }

    if (spec.role === 'Primary' && engine.role !== 'Primary') {
      const force = (spec.initialSync && engine.disk === 'Inconsistent') || spec.forcePrimary;
      const r = await this.#engines.adm(res, ...(force ? ['--', '--force'] : []), 'primary');
      if (r.code !== 0)
        return {
          conditions: [
            disks,
            { type: CONDITIONS.engineReady, status: 'False', reason: 'PromotionRefused', message: r.stderr.trim() },
          ],
          stop: true,
        };
      log.info({ epoch: spec.epoch, force }, 'Promoted');
      await this.#event(
        rvr,
        spec.forcePrimary ? 'Warning' : 'Normal',
        'Promoted',
        `${spec.node} is Primary (epoch ${spec.epoch}${spec.forcePrimary ? ', forced by the operator: writes only the peer had are given up' : force ? ', initial full sync' : ''})`,
      );
    } else if (spec.role === 'Primary' && engine.suspended) {
      // Frozen by fencing and the handler's answer did not thaw it (the API was
      // unreachable, or the agent was away): fence now, then resume.
      const outcome = await this.#fencer.fencePeer(ns, spec);
      if (outcome !== 'fenced') {
        const message =
          outcome === 'superseded'
            ? 'I/O is frozen: this node lost its peer and is no longer the rightful Primary (a newer epoch exists); it will be demoted'
            : 'I/O is frozen: this node lost its peer and cannot reach the API server to fence it; writes wait until the peer returns or the fence is recorded';
        return {
          conditions: [disks, { type: CONDITIONS.engineReady, status: 'False', reason: 'Frozen', message }],
          stop: true,
        };
      }
      const r = await this.#engines.adm(res, 'resume-io');
      if (r.code !== 0) throw new Error(`resume-io: ${r.stderr.trim()}`);
      log.warn({ epoch: spec.epoch }, 'Fenced the peer; resumed I/O');
    } else if (spec.role === 'Secondary' && engine.role === 'Primary' && engine.suspended) {
      // Superseded while frozen (the other node was promoted at a newer epoch): the
      // frozen writes fail, they were never acknowledged; then the consumer goes.
      const r = await this.#engines.adm(res, '--', '--force', 'secondary');
      if (r.code !== 0)
        return {
          conditions: [
            disks,
            { type: CONDITIONS.engineReady, status: 'False', reason: 'DemotionRefused', message: r.stderr.trim() },
          ],
          stop: true,
        };
      log.warn({ epoch: spec.epoch }, 'Demoted while frozen: the frozen I/O failed');
      await this.#event(
        rvr,
        'Warning',
        'Superseded',
        `${spec.node} was Primary but ${spec.peer.node} took over at epoch ${spec.epoch}; its frozen, unacknowledged writes failed and it is Secondary now`,
      );
      // The filesystem on the dead device goes in the consumer step, which follows.
    } else if (spec.role === 'Secondary' && engine.role === 'Primary') {
      await this.#consumer.release(spec.mountPath, { placeholder: true });
      const r = await this.#engines.adm(res, 'secondary');
      if (r.code !== 0)
        return {
          conditions: [
            disks,
            { type: CONDITIONS.engineReady, status: 'False', reason: 'DemotionRefused', message: r.stderr.trim() },
          ],
          stop: true,
        };
      log.info({ epoch: spec.epoch }, 'Demoted');
      await this.#event(rvr, 'Normal', 'Demoted', `${spec.node} is Secondary (epoch ${spec.epoch})`);
    }
    await this.#rejoin(rvr, log);
    return {
      conditions: [
        disks,
        { type: CONDITIONS.engineReady, status: 'True', reason: 'Running', message: `Engine runs as ${spec.role}` },
      ],
      mounted: await this.#consumer.mounted(spec.mountPath),
    };
  }

  /**
   * Back together without a manual step. StandAlone after a refused connect: the
   * Primary (the survivor) connects again; a Secondary whose peer is the volume's
   * Primary at our epoch or later connects with --discard-my-data after a split
   * brain (it was the old Primary; its blocks are saved to discarded-data-dir). On
   * the Primary, Connected with an UpToDate peer, a fence on the peer is lifted.
   */
  async #rejoin(rvr: ReplicatedVolumeReplica, log: Logger): Promise<void> {
    const spec = rvr.spec;
    const res = spec.resource;
    const ns = rvr.metadata.namespace;
    const e = await this.#engines.status(res);
    if (!e) return;
    if (e.role === 'Primary' && spec.role === 'Primary') {
      if (e.cstate === 'StandAlone') {
        const r = await this.#engines.adm(res, 'connect');
        log.info({ code: r.code }, 'StandAlone Primary: connecting to the peer again');
      } else if (e.cstate === 'Connected' && e.peerDisk === 'UpToDate' && e.disk === 'UpToDate' && !e.suspended) {
        await this.#liftPeerFence(ns, spec);
      }
      return;
    }
    if (e.role !== 'Secondary' || spec.role !== 'Secondary') return;
    const apart = e.cstate === 'StandAlone' || e.cstate === 'WFConnection' || e.cstate === 'Unconnected';
    if (!apart) return;
    const rv = await this.#fencer.readVolume(ns, spec.volume);
    if (rv?.status?.fence?.node === spec.node && (e.disk === 'UpToDate' || e.disk === 'Consistent')) {
      // DRBD's fence-peer outdates the peer: our disk may lack acknowledged writes, so
      // the engine itself refuses a promotion (a person's `tandemadm primary` included)
      // until a resync has made it UpToDate again.
      const r = await this.#engines.adm(res, 'outdate');
      if (r.code === 0) {
        log.warn(
          { fencedBy: rv.status.fence.by, epoch: rv.status.fence.epoch },
          "Fenced in the API: outdated this node's disk",
        );
        await this.#event(
          rvr,
          'Warning',
          'Outdated',
          `${spec.node}'s disk is Outdated: ${rv.status.fence.by} fenced it at epoch ${rv.status.fence.epoch} (${rv.status.fence.reason})`,
        );
      }
    }
    if (e.cstate !== 'StandAlone') return;
    if (rv?.status?.primary !== spec.peer.node || (rv.status.epoch ?? 0) < spec.epoch) return;
    if (e.lastDecision?.decision.startsWith('split-brain')) {
      const r = await this.#engines.adm(res, '--', '--discard-my-data', 'connect');
      log.warn(
        { code: r.code, epoch: spec.epoch },
        "Split brain after a failover: discarding this node's changes (they are saved) and resyncing from the Primary",
      );
      await this.#event(
        rvr,
        'Warning',
        'DiscardingOwnChanges',
        `${spec.node} diverged from the Primary ${spec.peer.node} (split brain after a change of Primary, epoch ${spec.epoch}); its own changes are discarded and saved under /var/lib/tandem/discarded/${spec.node}, then it resyncs as SyncTarget`,
      );
    } else {
      const r = await this.#engines.adm(res, 'connect');
      log.info({ code: r.code }, 'StandAlone Secondary: connecting to the Primary again');
    }
  }

  /** On the Primary: filesystem (once) and mount. Runs only after the engine step succeeded. */
  async #convergeConsumer(rvr: ReplicatedVolumeReplica, log: Logger): Promise<Outcome | undefined> {
    const spec = rvr.spec;
    const res = spec.resource;
    if (spec.role === 'Primary' && spec.filesystem && spec.mountPath) {
      const attach = (await this.#engines.status(res))?.attach;
      if (!attach?.device) {
        const why = attach?.lastError ?? attach?.reason ?? 'the engine reports no attached device';
        return {
          conditions: [
            {
              type: CONDITIONS.mounted,
              status: 'False',
              reason: 'NoDevice',
              message: `No block device for the Primary's export: ${why}`,
            },
          ],
          mounted: false,
        };
      }
      const m = await this.#consumer.ensure(attach.device, spec.filesystem, spec.mountPath);
      if (m.created) {
        log.info({ device: attach.device, filesystem: spec.filesystem }, 'Created filesystem');
        await this.#event(
          rvr,
          'Normal',
          'FilesystemCreated',
          `mkfs.${spec.filesystem} on ${attach.device} (the volume was blank)`,
        );
      }
      return {
        conditions: [
          {
            type: CONDITIONS.mounted,
            status: 'True',
            reason: 'Mounted',
            message: `${attach.device} (${spec.filesystem}) on ${spec.mountPath}`,
          },
        ],
        mounted: true,
      };
    }
    let mounted = await this.#consumer.mounted(spec.mountPath);
    const engine = await this.#engines.status(res);
    if (engine?.role !== 'Primary') {
      if (spec.mountPath) {
        // Not Primary: the mount path holds a read-only placeholder. A filesystem left
        // mounted by a forced demotion (a superseded Primary whose application still held
        // files; its I/O fails) goes as soon as it is free, every pass, never lazily: a
        // process reopening a path would write into the directory underneath.
        try {
          await this.#consumer.release(spec.mountPath, { placeholder: true });
          if (mounted) log.info({ mountPath: spec.mountPath }, 'Unmounted the filesystem left on this Secondary');
          mounted = false;
        } catch (err) {
          return {
            conditions: [
              {
                type: CONDITIONS.mounted,
                status: 'False',
                reason: 'StaleMount',
                message: `${spec.mountPath} is still mounted on this Secondary and in use; every I/O on it fails; it is unmounted as soon as nothing holds it (${describeError(err).message})`,
              },
            ],
            mounted,
          };
        }
      }
      // A Secondary still holding a block device (left by a forced demotion): let it go.
      if (engine?.attach?.device) await this.#engines.adm(res, 'secondary');
    }
    return {
      conditions: [
        {
          type: CONDITIONS.mounted,
          status: 'False',
          reason: spec.mountPath ? 'NotPrimary' : 'NoMountPath',
          message: spec.mountPath
            ? 'Mounted only on the Primary; here the mount path holds a read-only placeholder'
            : 'spec.mountPath is not set',
        },
      ],
      mounted,
    };
  }

  /** The peer secret, read at most once a minute per Secret (the loop runs every few seconds). */
  async #secret(rvr: ReplicatedVolumeReplica): Promise<string | undefined> {
    const key = `${rvr.metadata.namespace}/${rvr.spec.secretName}`;
    const cached = this.#secrets.get(key);
    if (cached && Date.now() - cached.at < 60_000) return cached.value;
    let value: string | undefined;
    try {
      const s = await this.#core.readNamespacedSecret({ name: rvr.spec.secretName, namespace: rvr.metadata.namespace });
      const v = s.data?.[SECRET_KEY];
      value = v ? Buffer.from(v, 'base64').toString('utf8') : undefined;
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
    if (value !== undefined) this.#secrets.set(key, { value, at: Date.now() });
    return value;
  }

  async #writeConfig(spec: ReplicatedVolumeReplicaSpec, secret: string): Promise<void> {
    const path = this.#engines.configPath(spec.resource);
    const text = renderConfig(spec, secret, { command: this.#fenceCommand });
    // The epoch is in the header comment only; rewriting for it alone is harmless.
    if ((await readFile(path, 'utf8').catch(() => '')) !== text) await writeFile(path, text, { mode: 0o600 });
  }

  async #report(
    rvr: ReplicatedVolumeReplica,
    e: EngineStatusView | undefined,
    outcome: Outcome,
    log: Logger,
  ): Promise<void> {
    const key = `${rvr.metadata.namespace}/${rvr.metadata.name}`;
    const now = this.#o.now();
    let conditions: Condition[] = rvr.status?.conditions ?? [];
    const split = e ? splitBrainCondition(e) : undefined;
    for (const c of [...outcome.conditions, ...(split ? [split] : [])])
      conditions = setCondition(conditions, { ...c, observedGeneration: rvr.metadata.generation ?? 0 }, now);
    const status: ReplicatedVolumeReplicaStatus = {
      role: e?.role ?? 'Unconfigured',
      ...(e
        ? {
            peerRole: e.peerRole,
            connectionState: e.cstate,
            diskState: e.disk,
            peerDiskState: e.peerDisk,
            ...(e.sync ? { syncProgress: e.sync.percent } : {}),
            outOfSyncBytes: e.oosBytes,
            sizeBytes: e.size,
            currentUuid: e.uuids.current,
            counters: e.counters,
          }
        : {}),
      epoch: rvr.spec.epoch,
      mounted: outcome.mounted ?? false,
      conditions,
      observedGeneration: rvr.metadata.generation ?? 0,
    };
    // Counters move with every write; they alone do not make a report due before the heartbeat.
    const json = canonicalJson({ ...status, counters: undefined });
    const last = this.#reported.get(key);
    if (last && last.json === json && now.getTime() - last.at < HEARTBEAT_MS - 500) return;
    // A merge patch keeps fields it does not name: name every field, null for "gone".
    const body: Record<string, unknown> = Object.fromEntries(
      Object.keys(ReplicatedVolumeReplicaStatus.shape).map((k) => [k, null]),
    );
    Object.assign(body, status, { lastHeartbeatTime: now.toISOString().replace(/\.\d+Z$/, 'Z') });
    try {
      await this.#custom.patchNamespacedCustomObjectStatus(
        { ...replicaApi, namespace: rvr.metadata.namespace, name: rvr.metadata.name, body: { status: body } },
        mergePatch,
      );
      if (last?.json !== json)
        log.debug({ role: status.role, cstate: status.connectionState, disk: status.diskState }, 'Reported status');
      this.#reported.set(key, { json, at: now.getTime() });
    } catch (err) {
      if (!isNotFound(err)) throw err;
    }
  }

  async #event(
    rvr: ReplicatedVolumeReplica,
    type: 'Normal' | 'Warning',
    reason: string,
    message: string,
  ): Promise<void> {
    await recordEvent(
      this.#core,
      FIELD_MANAGERS.agent,
      this.#o.node,
      { kind: KINDS.replica.kind, name: rvr.metadata.name, namespace: rvr.metadata.namespace, uid: rvr.metadata.uid },
      { type, reason, message },
    ).catch((err: unknown) => this.#o.log.warn({ error: describeError(err) }, 'Could not record event'));
  }

  /** Engines of this node that no replica names any more: their volume is gone. */
  async #downOrphans(): Promise<void> {
    if (!this.#informer.synced) return;
    const wanted = new Set(this.#informer.list().map((r) => (r as { spec?: { resource?: string } }).spec?.resource));
    for (const res of await this.#engines.resources()) {
      if (wanted.has(res) || !(await this.#engines.status(res))) continue;
      this.#o.log.info({ resource: res }, 'Taking down an engine no replica names');
      await this.#engines.adm(res, 'down');
    }
  }
}

/**
 * SplitBrain from the engine's last connect decision: True while the pair stays apart
 * (StandAlone, DRBD's answer when no after-sb policy resolved it), False once connected.
 */
export function splitBrainCondition(e: EngineStatusView): ConditionInput | undefined {
  const d = e.lastDecision;
  if (!d?.decision.startsWith('split-brain'))
    return {
      type: CONDITIONS.splitBrain,
      status: 'False',
      reason: 'NoSplitBrain',
      message: 'The generation identifiers agreed at the last connect',
    };
  if (e.cstate === 'StandAlone') {
    return {
      type: CONDITIONS.splitBrain,
      status: 'True',
      reason: 'SplitBrain',
      message: `Split brain detected (${d.rule}); the pair stays StandAlone until resolved: tandemadm -- --discard-my-data connect on the victim`,
    };
  }
  const saved = e.discardedBlocksSavedTo
    ? `; this node's own diverged blocks were saved to ${e.discardedBlocksSavedTo}`
    : '';
  return {
    type: CONDITIONS.splitBrain,
    status: 'False',
    reason: 'Resolved',
    message: `Split brain resolved at connect: ${d.rule}${saved}`,
  };
}
