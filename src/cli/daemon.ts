// The per-resource engine process that `tandemadm up` leaves running: the
// engine, its NBD export (`<run-dir>/<res>.nbd`, export name = resource name)
// and its control socket (`<run-dir>/<res>.ctl`).
import { writeFileSync, closeSync, writeSync } from 'node:fs';
import { unlink } from 'node:fs/promises';
import { flushCompileCache } from 'node:module';
import { join } from 'node:path';
import { getHeapSpaceStatistics, getHeapStatistics } from 'node:v8';
import pino from 'pino';
import type { HostConfig, ResourceConfig } from '../api/config.ts';
import { Engine } from '../replication/engine.ts';
import { realWorld } from '../replication/real-world.ts';
import { ERROR_CODES, TandemError } from '../replication/errors.ts';
import { startNbdServer, type NbdExport, type NbdServer } from '../nbd/index.ts';
import { chooseAttach, DeviceAttachment, hasNbdModule } from './attach.ts';
import { serveControl, type ControlRequest } from './control.ts';

export interface DaemonOptions {
  resource: ResourceConfig;
  self: HostConfig;
  peer: HostConfig | undefined;
  runDir: string;
  configFile?: string;
  connect: boolean;
  /** fd on which to report READY or the startup error to the waiting `tandemadm up`. */
  reportFd?: number;
}

export function paths(runDir: string, resource: string): { ctl: string; nbd: string; log: string; pid: string } {
  return {
    ctl: join(runDir, `${resource}.ctl`),
    nbd: join(runDir, `${resource}.nbd`),
    log: join(runDir, `${resource}.log`),
    pid: join(runDir, `${resource}.pid`),
  };
}

/** Where this engine's memory is, for `npm run bench:memory` (bytes). */
export function engineMemory(): Record<string, number> {
  const m = process.memoryUsage();
  const h = getHeapStatistics();
  return {
    rss: m.rss,
    heapUsed: m.heapUsed,
    heapTotal: m.heapTotal,
    external: m.external,
    arrayBuffers: m.arrayBuffers,
    heapCommitted: h.total_physical_size,
    heapLimit: h.heap_size_limit,
    mallocedMemory: h.malloced_memory,
    peakMallocedMemory: h.peak_malloced_memory,
    // 1 when Node's TypeScript stripper (amaro, ≈ 25 MiB) is in this process: the engine
    // did not start from the compile cache (bin/compile-cache.js).
    typeStripperLoaded: (process as unknown as { moduleLoadList: string[] }).moduleLoadList.some((m) =>
      m.includes('amaro'),
    )
      ? 1
      : 0,
    ...Object.fromEntries(getHeapSpaceStatistics().map((sp) => [`committed:${sp.space_name}`, sp.physical_space_size])),
  };
}

export async function runDaemon(o: DaemonOptions): Promise<void> {
  const p = paths(o.runDir, o.resource.name);
  const logger = pino(
    { base: { resource: o.resource.name, node: o.self.name } },
    pino.destination({ dest: p.log, sync: true, mkdir: true }),
  );
  const report = (msg: string): void => {
    if (o.reportFd === undefined) return;
    try {
      writeSync(o.reportFd, `${msg}\n`);
      closeSync(o.reportFd);
    } catch {
      /* the waiting CLI is gone */
    }
    o.reportFd = undefined;
  };
  let nbd: NbdServer | undefined;
  /** When this engine process started (unix seconds): a change is an engine restart (the agent's metrics). */
  const startedAt = Math.round(Date.now() / 1000);
  // The Primary's export as a kernel block device (nbd-client, or nbdfuse + losetup): see attach.ts.
  const attachment = new DeviceAttachment({
    choice: chooseAttach({
      setting: o.resource.options.attach,
      device: o.self.device,
      hasNbdModule: hasNbdModule(),
    }),
    socket: p.nbd,
    resource: o.resource.name,
    device: o.self.device,
    runDir: o.runDir,
  });
  const attachDevice = async (): Promise<void> => {
    try {
      await attachment.attach();
    } catch (err) {
      logger.error({ err, attach: attachment.choice }, 'Failed to attach the device');
    }
  };
  const engine = new Engine({
    world: realWorld,
    config: o.resource,
    self: o.self,
    peer: o.peer,
    logger,
    ...(o.configFile ? { configFile: o.configFile } : {}),
    openCount: () => nbd?.clientCount ?? 0,
    closeClients: async () => {
      await nbd?.disconnectAll();
    },
  });
  const exportOf: NbdExport = {
    get size() {
      return engine.size;
    },
    readOnly: false,
    description: `tandem resource ${o.resource.name} on ${o.self.name}`,
    read: (off, len) => engine.read(off, len),
    write: (off, data, fua) => engine.write(off, data, fua),
    flush: () => engine.flush(),
    // Both replicated, as DRBD replicates discards; a trim reads back as zeroes on both
    // nodes (so the two disks stay identical), and gives the space back where it can.
    trim: (off, len, fua) => engine.zero(off, len, fua, true),
    writeZeroes: (off, len, f) => engine.zero(off, len, f.fua, !f.noHole),
  };
  try {
    await engine.attach();
    nbd = await startNbdServer({
      path: p.nbd,
      logger: logger.child({ component: 'nbd' }),
      listExports: () => [o.resource.name],
      lookup: (name) => {
        if (name !== o.resource.name && name !== '')
          return { refuse: 'unknown', message: `no export named '${name}' (this is ${o.resource.name})` };
        if (engine.state.role !== 'Primary')
          return {
            refuse: 'policy',
            message: `${o.resource.name} is ${engine.state.role}: wrong medium type, promote it with 'tandemadm primary ${o.resource.name}' first`,
          };
        return exportOf;
      },
    });
    if (o.connect && o.peer) await engine.connect();
    let shuttingDown = false;
    const shutdown = async (why: string): Promise<void> => {
      if (shuttingDown) return;
      shuttingDown = true;
      logger.info({ why }, 'Shutting down');
      try {
        await attachment.detach().catch((err: unknown) => logger.error({ err }, 'Failed to detach the device'));
        await nbd?.close();
        await engine.down();
      } catch (err) {
        logger.error({ err }, 'Unclean shutdown');
      }
      ctl.close();
      await unlink(p.ctl).catch(() => {});
      await unlink(p.pid).catch(() => {});
      logger.flush();
      process.exit(0);
    };
    const ctl = await serveControl(p.ctl, async (req: ControlRequest) => {
      switch (req.cmd) {
        case 'status':
          return { ...engine.status(), attach: attachment.status(), startedAt };
        case 'memory':
          return engineMemory();
        case 'primary': {
          const was = engine.state.role;
          await engine.promote({ force: req.force === true });
          // A device left from an earlier time as Primary (a forced demotion whose
          // filesystem was still mounted) is dead: start over with a fresh one.
          if (was !== 'Primary')
            await attachment
              .detach({ abort: true })
              .catch((err: unknown) => logger.warn({ err }, 'An old block device could not be released'));
          await attachDevice();
          return undefined;
        }
        case 'secondary': {
          if (req.force === true) {
            // --force: fail frozen I/O and close the clients first; the block device goes
            // when nothing holds it (a mounted filesystem keeps it until it is unmounted).
            await engine.demote({ force: true });
            // In the background: the answer must not wait on a dead filesystem's device.
            void attachment
              .detach({ abort: true })
              .catch((err: unknown) => logger.warn({ err }, 'Demoted; the block device stays until it is released'));
            return undefined;
          }
          await attachment.detach();
          return engine.demote({ force: false });
        }
        case 'connect':
          return engine.connect({ discardMyData: req.discardMyData === true });
        case 'disconnect':
          return engine.disconnect();
        case 'attach':
          return engine.attach();
        case 'detach':
          return engine.detach();
        case 'pause-sync':
          return engine.pauseSync();
        case 'resume-sync':
          return engine.resumeSync();
        case 'outdate':
          return engine.outdate();
        case 'verify':
          return engine.verify();
        case 'invalidate':
          return engine.invalidate();
        case 'invalidate-remote':
          return engine.invalidateRemote();
        case 'resize':
          if (req.size !== undefined && req.size < engine.size && (nbd?.clientCount ?? 0) > 0)
            throw new TandemError(
              ERROR_CODES.stateChange,
              `resize --size: ${nbd?.clientCount} NBD client(s) have the device open; shrinking under them would cut off data they can see (detach them first)`,
              11,
            );
          return engine.resize({ size: req.size });
        case 'grow-disk':
          if (req.size === undefined)
            throw new TandemError(ERROR_CODES.usage, 'grow-disk: the size to grow to is missing', 20);
          return engine.growDisk(req.size);
        case 'reattach':
          if (engine.state.role !== 'Primary')
            throw new TandemError(
              ERROR_CODES.stateChange,
              `reattach: ${o.resource.name} is ${engine.state.role}; only a Primary has a block device`,
              11,
            );
          return attachment.reattach();
        case 'resume-io':
          return engine.resumeIo('resume-io');
        case 'new-current-uuid':
          return engine.newCurrentUuid({ clearBitmap: req.clearBitmap === true });
        case 'down': {
          await attachment.detach();
          if (engine.state.role === 'Primary' && (nbd?.clientCount ?? 0) > 0) await engine.demote();
          setImmediate(() => void shutdown('down'));
          return undefined;
        }
      }
    });
    writeFileSync(p.pid, `${process.pid}\n`);
    process.on('SIGTERM', () => void shutdown('SIGTERM'));
    process.on('SIGINT', () => void shutdown('SIGINT'));
    process.on('uncaughtException', (err) => {
      logger.fatal({ err }, 'Uncaught exception');
      logger.flush();
      process.exit(70);
    });
    logger.info({ nbd: p.nbd, ctl: p.ctl }, 'Engine is up');
    report('READY');
    // Node writes its compile cache at exit; an engine lives long, so write what it
    // compiled now (bin/compile-cache.js): the next engine starts from it.
    flushCompileCache();
  } catch (err) {
    logger.error({ err }, 'Engine failed to start');
    report(`ERROR ${(err as Error).message}`);
    logger.flush();
    process.exit(1);
  }
}
