// The controller's Prometheus metrics, named after DRBD's exporter (drbd-reactor's
// prometheus plugin): one series per state with value 1, bytes as bytes.
import { Counter, Gauge, Histogram, Registry, collectDefaultMetrics } from 'prom-client';
import { agentLastHeard } from './decisions/roles.ts';
import type { ReplicatedVolumeStatus } from '../api/replicated-volume.ts';

export function controllerMetrics() {
  const registry = new Registry();
  collectDefaultMetrics({ register: registry, prefix: 'tandem_controller_' });
  const labels = ['namespace', 'volume'] as const;
  const m = {
    registry,
    reconciles: new Counter({
      name: 'tandem_reconcile_total',
      help: 'Reconciles of ReplicatedVolumes by result',
      labelNames: ['result'],
      registers: [registry],
    }),
    reconcileErrors: new Counter({
      name: 'tandem_reconcile_errors_total',
      help: 'Reconciles that ended in an error',
      registers: [registry],
    }),
    reconcileSeconds: new Histogram({
      name: 'tandem_reconcile_duration_seconds',
      help: 'Time per reconcile',
      buckets: [0.01, 0.05, 0.1, 0.5, 1, 5],
      registers: [registry],
    }),
    failovers: new Counter({
      name: 'tandem_failovers_total',
      help: "Automatic promotions after the Primary's node was lost",
      labelNames: labels,
      registers: [registry],
    }),
    ready: new Gauge({
      name: 'tandem_volume_ready',
      help: '1 when the volume is Ready',
      labelNames: labels,
      registers: [registry],
    }),
    epoch: new Gauge({
      name: 'tandem_volume_epoch',
      help: "The volume's epoch (changes of Primary)",
      labelNames: labels,
      registers: [registry],
    }),
    fenced: new Gauge({
      name: 'tandem_volume_fenced',
      help: 'The fenced node of a volume (it may lack acknowledged writes and is never promoted automatically), 1 while fenced',
      labelNames: [...labels, 'node'],
      registers: [registry],
    }),
    failoverBlocked: new Gauge({
      name: 'tandem_volume_failover_blocked',
      help: "1 while the volume's Primary is lost and no failover may happen (Ready reason FailoverBlocked)",
      labelNames: labels,
      registers: [registry],
    }),
    heartbeat: new Gauge({
      name: 'tandem_replica_last_heartbeat_seconds',
      help: "When the replica's node agent was last heard from (unix seconds): its report of the replica or its Lease, the agent's sign of life",
      labelNames: [...labels, 'node'],
      registers: [registry],
    }),
    connection: new Gauge({
      name: 'tandem_connection_state',
      help: 'Connection state per replica (DRBD vocabulary), 1 for the current one',
      labelNames: [...labels, 'node', 'state'],
      registers: [registry],
    }),
    disk: new Gauge({
      name: 'tandem_disk_state',
      help: 'Disk state per replica, 1 for the current one',
      labelNames: [...labels, 'node', 'state'],
      registers: [registry],
    }),
    outOfSync: new Gauge({
      name: 'tandem_peerdevice_outofsync_bytes',
      help: 'Bytes marked out of sync',
      labelNames: [...labels, 'node'],
      registers: [registry],
    }),
    resync: new Gauge({
      name: 'tandem_resync_progress_ratio',
      help: 'Resync progress 0..1 while a resync runs',
      labelNames: [...labels, 'node'],
      registers: [registry],
    }),
  };
  // The label sets each volume has now, so that a vanished state's series goes away.
  const series = new Map<string, [Gauge, Record<string, string>][]>();
  return {
    ...m,
    /** Replaces a volume's series with the ones its status gives (undefined: the volume is gone). */
    observe(
      namespace: string,
      volume: string,
      s: ReplicatedVolumeStatus | undefined,
      /** The agents' Lease renewals by node (roles.ts agentLastHeard), at `now`. */
      agents: { renewTimes: Readonly<Record<string, string | undefined>>; now: Date } | undefined = undefined,
    ): void {
      const key = `${namespace}/${volume}`;
      for (const [g, l] of series.get(key) ?? []) g.remove(l);
      series.delete(key);
      if (!s) return;
      const now: [Gauge, Record<string, string>, number][] = [
        [m.ready, { namespace, volume }, s.conditions?.find((c) => c.type === 'Ready')?.status === 'True' ? 1 : 0],
        [m.epoch, { namespace, volume }, s.epoch ?? 0],
        [
          m.failoverBlocked,
          { namespace, volume },
          s.conditions?.find((c) => c.type === 'Ready')?.reason === 'FailoverBlocked' ? 1 : 0,
        ],
      ];
      if (s.fence) now.push([m.fenced, { namespace, volume, node: s.fence.node }, 1]);
      for (const r of s.replicas ?? []) {
        if (r.connectionState)
          now.push([m.connection, { namespace, volume, node: r.node, state: r.connectionState }, 1]);
        if (r.diskState) now.push([m.disk, { namespace, volume, node: r.node, state: r.diskState }, 1]);
        if (r.outOfSyncBytes !== undefined)
          now.push([m.outOfSync, { namespace, volume, node: r.node }, r.outOfSyncBytes]);
        const beat = agents
          ? agentLastHeard(r.lastHeartbeatTime, agents.renewTimes[r.node], agents.now)
          : r.lastHeartbeatTime
            ? Date.parse(r.lastHeartbeatTime)
            : undefined;
        if (beat !== undefined && !Number.isNaN(beat))
          now.push([m.heartbeat, { namespace, volume, node: r.node }, beat / 1000]);
        if (r.syncProgress !== undefined)
          now.push([m.resync, { namespace, volume, node: r.node }, r.syncProgress / 100]);
      }
      for (const [g, l, v] of now) g.set(l, v);
      series.set(
        key,
        now.map(([g, l]) => [g, l]),
      );
    },
  };
}
export type ControllerMetrics = ReturnType<typeof controllerMetrics>;
