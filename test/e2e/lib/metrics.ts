// A node agent's Prometheus metrics as a person's Prometheus would scrape them
// (docs/how-to/monitoring.md): over HTTP from the node's InternalIP, port 9942, in
// the text exposition format. The e2e suites watch them through a failover and
// assert that they tell the story the volume's status tells.
import { kubectl } from './cluster.ts';

export const AGENT_METRICS_PORT = 9942;

/** One volume's states from one agent: the label of each state family whose value is 1. */
export type VolumeStates = {
  role?: string;
  connection?: string;
  disk?: string;
  peerDisk?: string;
  suspended?: number;
  epoch?: number;
};

type Sample = { name: string; labels: Record<string, string>; value: number };

/** The samples of a text exposition (comments skipped); label values unescaped. */
export function parseExposition(text: string): Sample[] {
  const out: Sample[] = [];
  for (const line of text.split('\n')) {
    if (line === '' || line.startsWith('#')) continue;
    const m = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(?:\{(.*)\})?\s+(\S+)/.exec(line);
    if (!m) throw new Error(`not a sample line: ${line}`);
    const labels: Record<string, string> = {};
    for (const l of (m[2] ?? '').matchAll(/([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"/g))
      labels[l[1]!] = l[2]!.replace(/\\(.)/g, (_, c: string) => (c === 'n' ? '\n' : c));
    out.push({ name: m[1]!, labels, value: Number(m[3]) });
  }
  return out;
}

export function statesOf(text: string, namespace: string, volume: string): VolumeStates {
  const mine = parseExposition(text).filter((s) => s.labels.namespace === namespace && s.labels.volume === volume);
  const current = (name: string, label: string) => mine.find((s) => s.name === name && s.value === 1)?.labels[label];
  const value = (name: string) => mine.find((s) => s.name === name)?.value;
  const states: VolumeStates = {};
  const set = <K extends keyof VolumeStates>(k: K, v: VolumeStates[K] | undefined) => {
    if (v !== undefined) states[k] = v;
  };
  set('role', current('tandem_resource_role', 'role'));
  set('connection', current('tandem_connection_state', 'state'));
  set('disk', current('tandem_disk_state', 'state'));
  set('peerDisk', current('tandem_peerdevice_disk_state', 'state'));
  set('suspended', value('tandem_device_io_suspended'));
  set('epoch', value('tandem_resource_epoch'));
  return states;
}

export async function internalIP(node: string): Promise<string> {
  const ip = (
    await kubectl(['get', 'node', node, '-o', 'jsonpath={.status.addresses[?(@.type=="InternalIP")].address}'])
  ).stdout.trim();
  if (!ip) throw new Error(`node ${node} has no InternalIP`);
  return ip;
}

/** The agent's /metrics on `node`, fetched the way Prometheus would. */
export async function scrapeAgent(node: string, timeoutMs = 2000): Promise<string> {
  const res = await fetch(`http://${await internalIP(node)}:${AGENT_METRICS_PORT}/metrics`, {
    signal: AbortSignal.timeout(timeoutMs),
  });
  if (!res.ok) throw new Error(`GET /metrics on ${node}: HTTP ${res.status}`);
  return res.text();
}

/**
 * Scrapes one node's agent every `intervalMs` and keeps each change of the volume's
 * states, with when it was seen. A failed scrape is kept as `{ error }`, once per run of
 * failures, so a gap shows where it was.
 */
export class MetricsWatch {
  readonly seen: { t: number; states?: VolumeStates; error?: string }[] = [];
  #stop = false;
  #loop: Promise<void> | undefined;

  readonly node: string;
  readonly namespace: string;
  readonly volume: string;
  readonly intervalMs: number;

  constructor(node: string, namespace: string, volume: string, intervalMs = 500) {
    this.node = node;
    this.namespace = namespace;
    this.volume = volume;
    this.intervalMs = intervalMs;
  }

  start(): void {
    this.#loop = (async () => {
      while (!this.#stop) {
        const t = Date.now();
        let entry: { t: number; states?: VolumeStates; error?: string };
        try {
          entry = { t, states: statesOf(await scrapeAgent(this.node), this.namespace, this.volume) };
        } catch (err) {
          entry = { t, error: (err as Error).message };
        }
        const last = this.seen.at(-1);
        if (!last || JSON.stringify(last.states ?? last.error) !== JSON.stringify(entry.states ?? entry.error))
          this.seen.push(entry);
        await new Promise((r) => setTimeout(r, this.intervalMs));
      }
    })();
  }

  async stop(): Promise<{ t: number; states?: VolumeStates; error?: string }[]> {
    this.#stop = true;
    await this.#loop;
    return this.seen;
  }

  /** The changes, one per line, times relative to `t0`. */
  describe(t0: number): string {
    return this.seen
      .map(
        (e) =>
          `+${((e.t - t0) / 1000).toFixed(1)} s ${e.error ? `scrape failed: ${e.error}` : JSON.stringify(e.states)}`,
      )
      .join('\n');
  }
}
