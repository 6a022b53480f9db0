// The agent's Prometheus metrics: this node's engines, in DRBD exporter style.
import { Gauge, Registry, collectDefaultMetrics } from 'prom-client';
import type { EngineStatusView } from './engine-client.ts';

export function agentMetrics(node: string) {
  const registry = new Registry();
  registry.setDefaultLabels({ node });
  collectDefaultMetrics({ register: registry, prefix: 'tandem_agent_' });
  const g = {
    role: new Gauge({
      name: 'tandem_resource_role',
      help: "Role of this node's engine, 1 for the current one",
      labelNames: ['resource', 'role'],
      registers: [registry],
    }),
    connection: new Gauge({
      name: 'tandem_connection_state',
      help: "Connection state of this node's engine, 1 for the current one",
      labelNames: ['resource', 'state'],
      registers: [registry],
    }),
    disk: new Gauge({
      name: 'tandem_disk_state',
      help: "Disk state of this node's engine, 1 for the current one",
      labelNames: ['resource', 'state'],
      registers: [registry],
    }),
    outOfSync: new Gauge({
      name: 'tandem_peerdevice_outofsync_bytes',
      help: 'Bytes marked out of sync',
      labelNames: ['resource'],
      registers: [registry],
    }),
    resync: new Gauge({
      name: 'tandem_resync_progress_ratio',
      help: 'Resync progress 0..1 while a resync runs',
      labelNames: ['resource'],
      registers: [registry],
    }),
    written: new Gauge({
      name: 'tandem_device_written_bytes',
      help: 'Bytes written to the local disk (dw)',
      labelNames: ['resource'],
      registers: [registry],
    }),
    sent: new Gauge({
      name: 'tandem_peerdevice_sent_bytes',
      help: 'Bytes sent to the peer (ns)',
      labelNames: ['resource'],
      registers: [registry],
    }),
  };
  return {
    registry,
    observe(resource: string, e: EngineStatusView | undefined): void {
      for (const m of [g.role, g.connection, g.disk]) m.reset();
      if (!e) return;
      g.role.set({ resource, role: e.role }, 1);
      g.connection.set({ resource, state: e.cstate }, 1);
      g.disk.set({ resource, state: e.disk }, 1);
      g.outOfSync.set({ resource }, e.oosBytes);
      g.resync.set({ resource }, e.sync ? e.sync.percent / 100 : 0);
      g.written.set({ resource }, e.counters.dw ?? 0);
      g.sent.set({ resource }, e.counters.ns ?? 0);
    },
  };
}
export type AgentMetrics = ReturnType<typeof agentMetrics>;
