// The agent's Prometheus metrics: every volume this node holds a replica of, in the
// style of DRBD's exporter (drbd-reactor's prometheus plugin): a state is a series
// with value 1 whose label names the current state, bytes are bytes, the /proc/drbd
// counters are counters. Every volume series carries namespace, volume, peer and
// (the registry's default label) node.
//
// Cardinality is bounded: one label set per replica of this node, state labels only
// from DRBD's closed vocabularies (anything else is reported as Unknown), latency in
// fixed buckets. A replica that leaves the node takes its series with it.
//
// The families are computed at scrape time from the newest sample of each replica
// (`volumeFamilies`, pure, tested on the exposition text).
import { Registry, collectDefaultMetrics } from 'prom-client';
import { CONNECTION_STATES, DISK_STATES, ROLES } from '../replication/states.ts';
import type { EngineStatusView } from './engine-client.ts';

/** What one pass of the agent read about one replica of this node. */
export interface VolumeSample {
  namespace: string;
  volume: string;
  /** The peer's node name. */
  peer: string;
  /** The epoch of the spec the agent acted on. */
  epoch: number;
  /** The engine's status; undefined when no engine runs for the replica. */
  engine: EngineStatusView | undefined;
}

type MetricType = 'gauge' | 'counter' | 'histogram';
export interface Family {
  name: string;
  help: string;
  type: MetricType;
  values: { metricName?: string; labels: Record<string, string | number>; value: number }[];
}

/** The /proc/drbd counters: [counter name, help, bytes?]. Byte counters are kept in bytes by the engine. */
const COUNTERS = [
  ['dw', 'tandem_device_written_bytes_total', 'Bytes written to the local disk (dw)'],
  ['dr', 'tandem_device_read_bytes_total', 'Bytes read from the local disk (dr)'],
  ['ns', 'tandem_peerdevice_sent_bytes_total', 'Bytes sent to the peer: mirrored writes and resync data (ns)'],
  ['nr', 'tandem_peerdevice_received_bytes_total', 'Bytes received from the peer (nr)'],
  ['al', 'tandem_device_al_writes_total', 'Activity log transactions written (al)'],
  ['bm', 'tandem_device_bm_writes_total', 'Bitmap pages written (bm)'],
] as const;
const PENDING = [
  ['lo', 'tandem_device_lower_pending', 'Local disk requests in flight (lo)'],
  ['pe', 'tandem_peerdevice_pending', 'Requests sent to the peer and not yet answered (pe)'],
  ['ua', 'tandem_peerdevice_unacked', 'Requests received from the peer and not yet answered (ua)'],
  ['ap', 'tandem_device_application_pending', 'Application requests not yet completed (ap)'],
] as const;

const ROLE_SET = new Set<string>(ROLES);
const CONN_SET = new Set<string>(CONNECTION_STATES);
const DISK_SET = new Set<string>(DISK_STATES);
const known = (set: Set<string>, v: string): string => (set.has(v) ? v : 'Unknown');

/** An unresolved split brain: the last connect found diverged data and the pair stays StandAlone (plan.ts). */
export function unresolvedSplitBrain(e: EngineStatusView): boolean {
  return (e.lastDecision?.decision.startsWith('split-brain') ?? false) && e.cstate === 'StandAlone';
}

/** The metric families of the replicas' newest samples (the node label is the registry's). */
export function volumeFamilies(samples: Iterable<VolumeSample>): Family[] {
  const fam = new Map<string, Family>();
  const put = (
    name: string,
    type: MetricType,
    help: string,
    labels: Record<string, string | number>,
    value: number,
    metricName?: string,
  ): void => {
    let f = fam.get(name);
    if (!f) {
      f = { name, help, type, values: [] };
      fam.set(name, f);
    }
    f.values.push({ labels, value, ...(metricName ? { metricName } : {}) });
  };
  // Families present even with no volume, so a dashboard finds them on an idle node.
  put('tandem_agent_volumes', 'gauge', 'Replicas this node holds', {}, 0);
  let count = 0;
  for (const s of samples) {
    count++;
    const id = { namespace: s.namespace, volume: s.volume, peer: s.peer };
    const e = s.engine;
    put('tandem_engine_up', 'gauge', '1 when an engine runs for the replica', id, e ? 1 : 0);
    put(
      'tandem_resource_epoch',
      'gauge',
      'The epoch (changes of Primary) of the spec the agent last acted on',
      id,
      s.epoch,
    );
    put(
      'tandem_resource_role',
      'gauge',
      "The engine's role, 1 for the current one (Unconfigured: no engine runs)",
      { ...id, role: e ? known(ROLE_SET, e.role) : 'Unconfigured' },
      1,
    );
    if (!e) continue;
    put(
      'tandem_peer_role',
      'gauge',
      "The peer's role as this engine knows it, 1 for the current one",
      { ...id, role: known(ROLE_SET, e.peerRole) },
      1,
    );
    put(
      'tandem_connection_state',
      'gauge',
      'Connection state, 1 for the current one',
      { ...id, state: known(CONN_SET, e.cstate) },
      1,
    );
    put(
      'tandem_disk_state',
      'gauge',
      'Local disk state, 1 for the current one',
      { ...id, state: known(DISK_SET, e.disk) },
      1,
    );
    put(
      'tandem_peerdevice_disk_state',
      'gauge',
      "The peer's disk state as this engine knows it, 1 for the current one",
      { ...id, state: known(DISK_SET, e.peerDisk) },
      1,
    );
    put('tandem_device_size_bytes', 'gauge', 'Usable size of the device', id, e.size);
    put('tandem_peerdevice_outofsync_bytes', 'gauge', 'Bytes marked out of sync (oos)', id, e.oosBytes);
    put(
      'tandem_resync_progress_ratio',
      'gauge',
      'Resync (or verify) progress 0..1; 0 when none runs',
      id,
      e.sync ? e.sync.percent / 100 : 0,
    );
    put(
      'tandem_resync_remaining_bytes',
      'gauge',
      'Bytes the running resync has still to copy; 0 when none runs',
      id,
      e.sync?.remainingBytes ?? 0,
    );
    put(
      'tandem_resync_rate_bytes_per_second',
      'gauge',
      "The running resync's recent speed; 0 when none runs",
      id,
      (e.sync?.speedKiBps ?? 0) * 1024,
    );
    put(
      'tandem_device_io_suspended',
      'gauge',
      '1 while application I/O is frozen (fencing, or no up-to-date data reachable)',
      id,
      e.suspended ? 1 : 0,
    );
    put(
      'tandem_resource_split_brain',
      'gauge',
      '1 while an unresolved split brain keeps the pair StandAlone',
      id,
      unresolvedSplitBrain(e) ? 1 : 0,
    );
    if (e.startedAt !== undefined)
      put(
        'tandem_engine_start_time_seconds',
        'gauge',
        'When the engine process started (unix seconds)',
        id,
        e.startedAt,
      );
    for (const [k, name, help] of COUNTERS) put(name, 'counter', help, id, e.counters[k] ?? 0);
    for (const [k, name, help] of PENDING) put(name, 'gauge', help, id, e.counters[k] ?? 0);
    const h = e.writeLatency;
    if (h) {
      const name = 'tandem_device_write_latency_seconds';
      const help = 'Application writes from submission to completion';
      h.buckets.forEach((le, i) => {
        put(name, 'histogram', help, { ...id, le }, h.cumulative[i] ?? 0, `${name}_bucket`);
      });
      put(name, 'histogram', help, { ...id, le: '+Inf' }, h.count, `${name}_bucket`);
      put(name, 'histogram', help, id, h.sumSeconds, `${name}_sum`);
      put(name, 'histogram', help, id, h.count, `${name}_count`);
    }
  }
  fam.get('tandem_agent_volumes')!.values[0]!.value = count;
  return [...fam.values()];
}

/** Every family name volumeFamilies may give: registered once, empty while no replica has one. */
const FAMILY_NAMES = (() => {
  const full: EngineStatusView = {
    resource: 'x',
    role: 'Primary',
    peerRole: 'Secondary',
    cstate: 'Connected',
    disk: 'UpToDate',
    peerDisk: 'UpToDate',
    size: 0,
    counters: {},
    oosBytes: 0,
    uuids: { current: '0' },
    startedAt: 0,
    writeLatency: { buckets: [], cumulative: [], sumSeconds: 0, count: 0 },
  };
  return volumeFamilies([{ namespace: 'x', volume: 'x', peer: 'x', epoch: 0, engine: full }]).map((f) => ({
    name: f.name,
    help: f.help,
    type: f.type,
  }));
})();

export function agentMetrics(node: string) {
  const registry = new Registry();
  registry.setDefaultLabels({ node });
  collectDefaultMetrics({ register: registry, prefix: 'tandem_agent_' });
  /** The newest sample per replica key (namespace/name of the ReplicatedVolumeReplica). */
  const samples = new Map<string, VolumeSample>();
  // One scrape computes the families once; each registered family reads its part.
  let cached: { at: number; byName: Map<string, Family> } | undefined;
  const current = (): Map<string, Family> => {
    const now = Date.now();
    if (!cached || now - cached.at > 100)
      cached = { at: now, byName: new Map(volumeFamilies(samples.values()).map((f) => [f.name, f])) };
    return cached.byName;
  };
  for (const f of FAMILY_NAMES) {
    // prom-client's registry takes any object with name, help, type and get() (a custom collector).
    const metric = {
      ...f,
      get: async () => ({ ...f, aggregator: 'sum', values: current().get(f.name)?.values ?? [] }),
      reset: () => {},
    };
    registry.registerMetric(metric as unknown as Parameters<Registry['registerMetric']>[0]);
  }
  return {
    registry,
    /** The newest sample of a replica; undefined: the replica left this node (its series go). */
    observe(key: string, s: VolumeSample | undefined): void {
      cached = undefined;
      if (s) samples.set(key, s);
      else samples.delete(key);
    },
  };
}
export type AgentMetrics = ReturnType<typeof agentMetrics>;
