// A list+watch that survives broken connections the way an informer must:
// when the stream ends it watches again from the last resourceVersion it saw,
// and when the API server answers 410 Gone (that version is no longer in its
// window, e.g. after a restart) it lists again and replaces its view.
// Tests use it to show that the control plane supports exactly that.
import { setTimeout as sleep } from 'node:timers/promises';
import * as k8s from '@kubernetes/client-node';

export type WatchEvent = { type: string; name: string; resourceVersion: string };

type Obj = { metadata?: { name?: string; resourceVersion?: string } };

export class ResumableWatch {
  /** Current view: name → object. */
  readonly objects = new Map<string, k8s.KubernetesObject>();
  readonly events: WatchEvent[] = [];
  connections = 0;
  lists = 0;
  /** Called with every object listed (type LISTED) and every watch event, in arrival order. */
  onEvent: ((type: string, obj: k8s.KubernetesObject) => void) | undefined;
  readonly #kc: k8s.KubeConfig;
  readonly #apiVersion: string;
  readonly #kind: string;
  readonly #namespace: string;
  readonly #path: string;
  readonly #labelSelector: string | undefined;
  #resourceVersion = '';
  #abort: AbortController | undefined;
  #stopped = false;

  /** `path` is the collection's watch path, e.g. /api/v1/namespaces/NS/configmaps. */
  constructor(
    kc: k8s.KubeConfig,
    apiVersion: string,
    kind: string,
    namespace: string,
    path: string,
    labelSelector?: string,
  ) {
    this.#kc = kc;
    this.#apiVersion = apiVersion;
    this.#kind = kind;
    this.#namespace = namespace;
    this.#path = path;
    this.#labelSelector = labelSelector;
  }

  async start(): Promise<void> {
    await this.#list();
    await this.#watch();
  }

  stop(): void {
    this.#stopped = true;
    this.#abort?.abort();
  }

  async #list(): Promise<void> {
    const api = k8s.KubernetesObjectApi.makeApiClient(this.#kc);
    const list = await api.list(
      this.#apiVersion,
      this.#kind,
      this.#namespace,
      undefined,
      undefined,
      undefined,
      undefined,
      this.#labelSelector,
    );
    this.lists++;
    this.objects.clear();
    for (const item of list.items) {
      this.objects.set(item.metadata?.name ?? '', item);
      this.onEvent?.('LISTED', item);
    }
    this.#resourceVersion = list.metadata?.resourceVersion ?? '';
  }

  async #watch(): Promise<void> {
    if (this.#stopped) return;
    this.connections++;
    let gone = false;
    const watch = new k8s.Watch(this.#kc);
    this.#abort = await watch.watch(
      this.#path,
      { resourceVersion: this.#resourceVersion, allowWatchBookmarks: true, labelSelector: this.#labelSelector },
      (type: string, obj: Obj & { code?: number }) => {
        if (type === 'ERROR') {
          // A Status in the stream; 410 means our resourceVersion is gone.
          if (obj.code === 410) gone = true;
          return;
        }
        const rv = obj.metadata?.resourceVersion ?? '';
        this.#resourceVersion = rv;
        if (type === 'BOOKMARK') return;
        const name = obj.metadata?.name ?? '';
        this.events.push({ type, name, resourceVersion: rv });
        this.onEvent?.(type, obj as k8s.KubernetesObject);
        if (type === 'DELETED') this.objects.delete(name);
        else this.objects.set(name, obj as k8s.KubernetesObject);
      },
      // Called once when the stream ends, fails, or cannot be opened (API server down).
      (err: unknown) => void this.#resume(gone || (err as { statusCode?: number } | null)?.statusCode === 410),
    );
  }

  async #resume(relist: boolean): Promise<void> {
    if (this.#stopped) return;
    await sleep(200);
    try {
      if (relist) await this.#list();
      await this.#watch();
    } catch {
      // Listing failed (still restarting): the next round tries again.
      void this.#resume(relist);
    }
  }
}
