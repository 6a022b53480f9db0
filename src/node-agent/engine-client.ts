// The agent's handle on engines: lifecycle through `tandemadm` (exactly what an
// operator would type on the node), status through the engine's control socket
// (`<run-dir>/<res>.ctl`, the same one `tandemadm status --json` asks). Engines
// are separate processes: they outlive the agent, and a new agent finds them
// by their control sockets. In a pod, tandemadm runs in the engine host's pod
// (src/engine-host), so the engines it starts are not processes of the agent's
// container and survive its restarts.
import { execFile } from 'node:child_process';
import { readdir } from 'node:fs/promises';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { callControl, NotRunningError } from '../cli/control.ts';
import type { EngineHostClient } from '../engine-host/client.ts';

/** The part of the engine's status JSON the agent uses (src/replication's EngineStatus). */
export const EngineStatusView = z
  .object({
    resource: z.string(),
    role: z.string(),
    peerRole: z.string(),
    cstate: z.string(),
    disk: z.string(),
    peerDisk: z.string(),
    suspended: z.boolean().optional(),
    size: z.number(),
    /** Bytes the local disk can hold for the device now (absent from engines before grow-disk). */
    capacity: z.number().optional(),
    counters: z.record(z.string(), z.number()),
    oosBytes: z.number(),
    sync: z
      .object({
        percent: z.number(),
        remainingBytes: z.number(),
        totalBytes: z.number(),
        speedKiBps: z.number().optional(),
      })
      .loose()
      .optional()
      .nullable(),
    uuids: z.object({ current: z.string() }).loose(),
    lastError: z.string().optional().nullable(),
    /** The Primary's export as a kernel block device (tandemadm's attach): /dev/nbdN or /dev/loopN. */
    attach: z
      .object({
        method: z.string(),
        reason: z.string(),
        device: z.string().nullable(),
        lastError: z.string().nullable(),
      })
      .loose()
      .optional(),
    /** The sync decision of the last connect (DRBD's uuid_compare), e.g. split-brain. */
    lastDecision: z.object({ decision: z.string(), rule: z.string() }).optional().nullable(),
    /** Where a split-brain victim's own blocks were saved before the resync overwrote them. */
    discardedBlocksSavedTo: z.string().optional().nullable(),
    /** When the engine process started (unix seconds). */
    startedAt: z.number().optional(),
    /** Application writes by latency, cumulative per bucket (src/replication/latency.ts). */
    writeLatency: z
      .object({
        buckets: z.array(z.number()),
        cumulative: z.array(z.number()),
        sumSeconds: z.number(),
        count: z.number(),
      })
      .optional(),
  })
  .loose();
export type EngineStatusView = z.infer<typeof EngineStatusView>;

export type AdmResult = { code: number; stdout: string; stderr: string };

const TANDEMADM = fileURLToPath(new URL('../../bin/tandemadm.js', import.meta.url));

export class EngineClient {
  readonly runDir: string;
  readonly node: string;
  /** Where tandemadm runs: in the engine host's pod (src/engine-host), else here as a child of the agent. */
  readonly #host: EngineHostClient | undefined;

  constructor(o: { runDir: string; node: string; engineHost?: EngineHostClient }) {
    this.runDir = o.runDir;
    this.node = o.node;
    this.#host = o.engineHost;
  }

  configPath(resource: string): string {
    return join(this.runDir, `${resource}.res`);
  }

  nbdSocket(resource: string): string {
    return join(this.runDir, `${resource}.nbd`);
  }

  /** The engine's status, or undefined when no engine runs for the resource. */
  async status(resource: string): Promise<EngineStatusView | undefined> {
    try {
      const r = await callControl(join(this.runDir, `${resource}.ctl`), { cmd: 'status' }, 10_000);
      if (!r.ok) throw new Error(`${resource}: ${r.error.message}`);
      return EngineStatusView.parse(r.result);
    } catch (err) {
      if (err instanceof NotRunningError) return undefined;
      throw err;
    }
  }

  /** Runs `tandemadm -c RUN/RES.res --node NODE --run-dir RUN ARGS… RES` (in the engine host when there is one). */
  adm(resource: string, ...args: string[]): Promise<AdmResult> {
    const admArgs = ['-c', this.configPath(resource), '--node', this.node, '--run-dir', this.runDir, ...args, resource];
    if (this.#host)
      // The host could not be asked: the action fails with why, and the next pass tries again.
      return this.#host.run(admArgs).catch((err: unknown) => ({ code: 1, stdout: '', stderr: (err as Error).message }));
    const argv = [TANDEMADM, ...admArgs];
    return new Promise((resolve) => {
      execFile(process.execPath, argv, { timeout: 120_000 }, (err, stdout, stderr) => {
        const code = err
          ? typeof (err as { code?: unknown }).code === 'number'
            ? (err as { code: number }).code
            : 1
          : 0;
        resolve({ code, stdout, stderr });
      });
    });
  }

  /** Resources with an engine control socket in the run dir (running, or left by a crash). */
  async resources(): Promise<string[]> {
    const names = await readdir(this.runDir).catch(() => [] as string[]);
    return names.filter((n) => n.endsWith('.ctl')).map((n) => n.slice(0, -4));
  }
}
