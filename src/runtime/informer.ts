// An informer (list + watch + cache) that keeps running: @kubernetes/client-node's
// ListWatch stops for good on an error (a refused connection, an API server
// restart), so a supervisor starts it again with capped exponential backoff. The cap
// is short (5 s): after an API outage the controller must see nodes and volumes again
// within seconds to fail over, and a retry every 5 s per informer costs the API nothing.
// Callbacks only tell the owner that something changed; the owner enqueues keys.
//
// The cache holds every object as the API server sent it, metadata.managedFields too:
// server-side apply's per-manager field sets, often larger than the spec and status
// together (a Node's, written by the kubelet, runs to kilobytes), read by nothing
// here. They are dropped as each object arrives (client-go's informers do the same
// with a transform, SetTransform/TransformStripManagedFields). An object written back
// without managedFields keeps the server's: the API server only replaces them when a
// request sets them.
import * as k8s from '@kubernetes/client-node';
import type { Logger } from 'pino';

/** A cache the reconcilers read: the real SupervisedInformer, or the simulator's lagging one. */
export interface ObjectCache<T> {
  list(namespace?: string): readonly T[];
  get(name: string, namespace?: string): T | undefined;
  /** The first list has been received. */
  readonly synced: boolean;
  start(): Promise<void>;
  stop(): Promise<void>;
}

/** Builds a cache whose changes are reported to `onChange` (and reconnects to `onResync`). */
export type CacheFactory<T> = (handlers: { onChange: (obj: T) => void; onResync?: () => void }) => ObjectCache<T>;

export interface SupervisedInformerOptions<T extends k8s.KubernetesObject> {
  kc: k8s.KubeConfig;
  /** Collection path for the watch, e.g. /apis/tandem.dev/v1alpha1/replicatedvolumes. */
  path: string;
  list: () => Promise<k8s.KubernetesListObject<T>>;
  labelSelector?: string;
  log: Logger;
  /** Called for add, update and delete. */
  onChange: (obj: T) => void;
  /** Called after every (re)connect: the owner should resync everything it derives. */
  onResync?: () => void;
}

const MAX_RESTART_DELAY_MS = 5000;

export class SupervisedInformer<T extends k8s.KubernetesObject> implements ObjectCache<T> {
  readonly #informer: k8s.Informer<T> & k8s.ObjectCache<T>;
  readonly #o: SupervisedInformerOptions<T>;
  #stopped = false;
  #restartDelay = 0;
  #timer: NodeJS.Timeout | undefined;
  synced = false;
  restarts = 0;

  constructor(o: SupervisedInformerOptions<T>) {
    this.#o = o;
    this.#informer = k8s.makeInformer(o.kc, o.path, o.list, o.labelSelector);
    // ListWatch stores the very object it hands to its callbacks: stripping it here strips the cache's.
    this.#informer.on('change', (obj) => {
      stripManagedFields(obj);
      o.onChange(obj);
    });
    this.#informer.on('connect', () => o.onResync?.());
    this.#informer.on('error', (err) => this.#restart(err));
  }

  async start(): Promise<void> {
    try {
      await this.#informer.start();
      this.synced = true;
      this.#restartDelay = 0;
    } catch (err) {
      this.#restart(err);
    }
  }

  #restart(err: unknown): void {
    if (this.#stopped || this.#timer) return;
    this.#restartDelay = Math.min(MAX_RESTART_DELAY_MS, this.#restartDelay ? this.#restartDelay * 2 : 500);
    this.#o.log.warn({ err, path: this.#o.path, delayMs: this.#restartDelay }, 'Informer failed; restarting');
    this.restarts++;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      void this.start();
    }, this.#restartDelay);
  }

  list(namespace?: string): readonly T[] {
    return this.#informer.list(namespace);
  }

  get(name: string, namespace?: string): T | undefined {
    return this.#informer.get(name, namespace);
  }

  async stop(): Promise<void> {
    this.#stopped = true;
    clearTimeout(this.#timer);
    await this.#informer.stop();
  }
}

/** Drops metadata.managedFields in place (nothing in tandem reads them from a cache). */
export function stripManagedFields(obj: k8s.KubernetesObject): void {
  if (obj.metadata?.managedFields) delete obj.metadata.managedFields;
}
