// The agent's /metrics over a real engine pair: each node's metrics endpoint (the
// agent's registry and health server) reads its engine through the control socket,
// as the agent does, and is scraped over HTTP. The states it shows follow the pair
// when the replication link is cut (iptables drops the packets) and healed.
import { jest } from '@jest/globals';
import { startHealthServer } from '../../src/runtime/http.ts';
import { EngineClient } from '../../src/node-agent/engine-client.ts';
import { agentMetrics } from '../../src/node-agent/metrics.ts';
import { Pair, type NodeName } from './support/pair.ts';
import { RawNbdClient } from './support/raw-nbd-client.ts';
import { nbdWire } from '../../src/nbd/index.ts';

jest.setTimeout(120_000);

const BLOCK = 4096;

/** One node's metrics endpoint, fed as the agent feeds it: a sample per pass. */
async function endpoint(pair: Pair, n: NodeName) {
  const metrics = agentMetrics(n);
  const engines = new EngineClient({ runDir: pair.runDir(n), node: n });
  const peer = n === 'master' ? 'backup' : 'master';
  const server = await startHealthServer({ port: 0, host: '127.0.0.1', registry: metrics.registry, ready: () => true });
  return {
    /** One agent pass, then a scrape over HTTP. */
    async scrape(): Promise<string> {
      const engine = await engines.status('mysql');
      metrics.observe('db/mysql', { namespace: 'db', volume: 'mysql', peer, epoch: 1, engine });
      const res = await fetch(`http://127.0.0.1:${server.port}/metrics`);
      expect(res.status).toBe(200);
      return res.text();
    },
    close: () => server.close(),
  };
}

/** The value of the one sample line whose name and labels contain all of `parts`. */
function value(text: string, name: string, ...parts: string[]): number | undefined {
  const line = text
    .split('\n')
    .find((l) => l.startsWith(`${name}{`) && parts.every((p) => l.slice(0, l.lastIndexOf(' ')).includes(p)));
  return line === undefined ? undefined : Number(line.slice(line.lastIndexOf(' ') + 1));
}

async function writeBlocks(pair: Pair, first: number, count: number, fill: string): Promise<void> {
  const { client } = await RawNbdClient.open({ path: pair.nbdSocket('master') }, 'mysql');
  try {
    for (let b = first; b < first + count; b++) {
      client.send({ command: nbdWire.Cmd.NBD_CMD_WRITE, offset: b * BLOCK, data: Buffer.alloc(BLOCK, fill) });
      expect((await client.reply()).error).toBe(0);
    }
    // The peer acknowledges the epoch as durable: none of these writes is left to resync after a cut.
    client.send({ command: nbdWire.Cmd.NBD_CMD_FLUSH });
    expect((await client.reply()).error).toBe(0);
  } finally {
    client.destroy();
  }
}

test("each node's /metrics shows the pair's states, and follows a cut link and its healing", async () => {
  const pair = await Pair.create({ masterMiB: 32, backupMiB: 32 });
  const eps: Awaited<ReturnType<typeof endpoint>>[] = [];
  try {
    await pair.startBlank();
    await pair.ok('master', 'primary', 'mysql');
    const master = await endpoint(pair, 'master');
    const backup = await endpoint(pair, 'backup');
    eps.push(master, backup);
    await writeBlocks(pair, 0, 8, 'a');

    // Whole: Connected, UpToDate on both sides, the writes counted and timed.
    let m = await master.scrape();
    const id = 'namespace="db",volume="mysql",peer="backup"';
    expect(value(m, 'tandem_resource_role', id, 'role="Primary"', 'node="master"')).toBe(1);
    expect(value(m, 'tandem_connection_state', id, 'state="Connected"')).toBe(1);
    expect(value(m, 'tandem_peerdevice_disk_state', id, 'state="UpToDate"')).toBe(1);
    expect(value(m, 'tandem_peerdevice_outofsync_bytes', id)).toBe(0);
    expect(value(m, 'tandem_device_write_latency_seconds_count', id)).toBe(8);
    expect(value(m, 'tandem_device_write_latency_seconds_bucket', id, 'le="+Inf"')).toBe(8);
    expect(value(m, 'tandem_device_written_bytes_total', id)).toBeGreaterThanOrEqual(8 * BLOCK);
    expect(value(m, 'tandem_peerdevice_sent_bytes_total', id)).toBeGreaterThanOrEqual(8 * BLOCK);
    expect(value(m, 'tandem_engine_start_time_seconds', id)).toBeGreaterThan(1.7e9);
    let b = await backup.scrape();
    expect(value(b, 'tandem_resource_role', 'peer="master"', 'role="Secondary"', 'node="backup"')).toBe(1);
    expect(value(b, 'tandem_disk_state', 'peer="master"', 'state="UpToDate"')).toBe(1);

    // Cut: both sides see the peer gone; the Primary's new writes are out of sync.
    await pair.cutLink();
    for (const n of ['master', 'backup'] as const)
      await pair.waitFor(n, (s) => s.cstate === 'WFConnection', 30_000, 'the lost link to be noticed');
    await writeBlocks(pair, 100, 4, 'b');
    m = await master.scrape();
    expect(value(m, 'tandem_connection_state', id, 'state="Connected"')).toBeUndefined();
    expect(value(m, 'tandem_connection_state', id, 'state="WFConnection"')).toBe(1);
    expect(value(m, 'tandem_peerdevice_disk_state', id, 'state="DUnknown"')).toBe(1);
    expect(value(m, 'tandem_peerdevice_outofsync_bytes', id)).toBe(4 * BLOCK);
    expect(value(m, 'tandem_device_write_latency_seconds_count', id)).toBe(12);
    b = await backup.scrape();
    expect(value(b, 'tandem_connection_state', 'peer="master"', 'state="WFConnection"')).toBe(1);

    // Healed: the pair reconnects, resyncs the 4 blocks, and the metrics say so.
    await pair.healLink();
    await pair.waitInSync();
    m = await master.scrape();
    expect(value(m, 'tandem_connection_state', id, 'state="Connected"')).toBe(1);
    expect(value(m, 'tandem_connection_state', id, 'state="WFConnection"')).toBeUndefined();
    expect(value(m, 'tandem_peerdevice_outofsync_bytes', id)).toBe(0);
    b = await backup.scrape();
    expect(value(b, 'tandem_peerdevice_received_bytes_total', 'peer="master"')).toBeGreaterThanOrEqual(12 * BLOCK);
  } finally {
    for (const e of eps) await e.close();
    await pair.destroy();
  }
});
