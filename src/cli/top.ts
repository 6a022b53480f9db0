// `tandemadm top`: every resource of this node at a glance, refreshed (drbdtop's job).
//
//   tandemadm [--run-dir DIR] top [--interval SECONDS] [--once] [RESOURCE…]
//
// The resources are the engines with a control socket in the run dir (no config file
// needed: it works on a node of a cluster as on the lab). Each refresh asks every
// engine for its status; throughput and latency are the differences of its counters
// and latency histogram since the last refresh.
//
// On a terminal: a full screen redrawn in place (the alternate screen, as top does),
// `q` or Ctrl-C quits and gives the terminal back as it was. Not a terminal (a pipe,
// a log, `watch`): plain lines, one block per refresh, no escape codes; --once prints
// one block and exits.
import { readdir } from 'node:fs/promises';
import { callControl, NotRunningError } from './control.ts';
import { paths } from './daemon.ts';
import type { EngineStatus } from '../replication/engine.ts';
import { formatBytes } from '../api/quantity.ts';

/** What one refresh read: per resource its status, or why there is none. */
export interface TopSample {
  at: number;
  statuses: Map<string, EngineStatus | { error: string }>;
}

export interface TopRow {
  resource: string;
  role: string;
  conn: string;
  disk: string;
  /** 0..100 while a resync or verify runs. */
  syncPercent: number | undefined;
  syncBytesPerSecond: number | undefined;
  etaSeconds: number | undefined;
  outOfSyncBytes: number;
  writeBytesPerSecond: number | undefined;
  readBytesPerSecond: number | undefined;
  sentBytesPerSecond: number | undefined;
  /** Mean latency of the writes completed since the last refresh (seconds), undefined without writes. */
  writeLatencyAvg: number | undefined;
  /** The bucket bound under which 99% of those writes completed. */
  writeLatencyP99: number | undefined;
  writesPerSecond: number | undefined;
  flags: string[];
  error: string | undefined;
}

const rate = (now: number, before: number | undefined, seconds: number): number | undefined =>
  before === undefined || seconds <= 0 ? undefined : Math.max(0, now - before) / seconds;

/** The rows of a refresh: rates from the counters' change since `prev` (undefined at the first). */
export function topRows(cur: TopSample, prev: TopSample | undefined): TopRow[] {
  const dt = prev ? (cur.at - prev.at) / 1000 : 0;
  const rows: TopRow[] = [];
  for (const [resource, s] of [...cur.statuses].sort(([a], [b]) => a.localeCompare(b))) {
    if ('error' in s) {
      rows.push({
        resource,
        role: '-',
        conn: '-',
        disk: '-',
        syncPercent: undefined,
        syncBytesPerSecond: undefined,
        etaSeconds: undefined,
        outOfSyncBytes: 0,
        writeBytesPerSecond: undefined,
        readBytesPerSecond: undefined,
        sentBytesPerSecond: undefined,
        writeLatencyAvg: undefined,
        writeLatencyP99: undefined,
        writesPerSecond: undefined,
        flags: [],
        error: s.error,
      });
      continue;
    }
    const p = prev?.statuses.get(resource);
    const before = p && !('error' in p) ? p : undefined;
    const lat = s.writeLatency;
    const latBefore = before?.writeLatency;
    const writes = lat && latBefore ? lat.count - latBefore.count : undefined;
    let p99: number | undefined;
    if (lat && latBefore && writes && writes > 0) {
      const want = Math.ceil(writes * 0.99);
      const i = lat.cumulative.findIndex((c, k) => c - (latBefore.cumulative[k] ?? 0) >= want);
      p99 = i >= 0 ? lat.buckets[i] : Number.POSITIVE_INFINITY;
    }
    const flags: string[] = [];
    if (s.suspended) flags.push('frozen');
    if (s.lastDecision?.decision.startsWith('split-brain') && s.cstate === 'StandAlone') flags.push('split-brain');
    if (s.userPaused || s.peerPaused || s.sync?.paused) flags.push('paused');
    if (s.lastError) flags.push('error');
    rows.push({
      resource,
      role: `${s.role}/${s.peerRole}`,
      conn: s.cstate,
      disk: `${s.disk}/${s.peerDisk}`,
      syncPercent: s.sync?.percent,
      syncBytesPerSecond: s.sync ? s.sync.speedKiBps * 1024 : undefined,
      etaSeconds: s.sync?.etaSeconds,
      outOfSyncBytes: s.oosBytes,
      writeBytesPerSecond: rate(s.counters.dw, before?.counters.dw, dt),
      readBytesPerSecond: rate(s.counters.dr, before?.counters.dr, dt),
      sentBytesPerSecond: rate(s.counters.ns, before?.counters.ns, dt),
      writeLatencyAvg:
        lat && latBefore && writes && writes > 0 ? (lat.sumSeconds - latBefore.sumSeconds) / writes : undefined,
      writeLatencyP99: p99,
      writesPerSecond: writes === undefined || dt <= 0 ? undefined : Math.max(0, writes) / dt,
      flags,
      error: s.lastError,
    });
  }
  return rows;
}

/** Bytes the way people read them: 1.5 MiB. */
export const bytes = formatBytes;

/** A latency: 250µs, 3.1ms, 1.20s. */
export function seconds(s: number): string {
  if (!Number.isFinite(s)) return '>10s';
  if (s < 0.001) return `${Math.round(s * 1e6)}µs`;
  if (s < 1) return `${(s * 1000).toFixed(1)}ms`;
  return `${s.toFixed(2)}s`;
}

function hms(s: number): string {
  const h = Math.floor(s / 3600);
  const m = Math.floor((s % 3600) / 60);
  return `${h}:${String(m).padStart(2, '0')}:${String(Math.floor(s % 60)).padStart(2, '0')}`;
}

/** [=====>......] 42.1%: the progress bar of /proc/drbd, `width` characters between the brackets. */
export function progressBar(percent: number, width = 20): string {
  const done = Math.max(0, Math.min(width, Math.floor((percent / 100) * width)));
  const bar = done >= width ? '='.repeat(width) : `${'='.repeat(done)}>${'.'.repeat(width - done - 1)}`;
  return `[${bar}] ${percent.toFixed(1)}%`;
}

const perSecond = (n: number | undefined): string => (n === undefined ? '-' : `${bytes(n)}/s`);

/** The lines of one refresh: a header, a table, and a second line per resource that syncs or has something to say. */
export function renderTop(
  rows: TopRow[],
  o: { node: string; at: Date; width: number; interactive: boolean },
): string[] {
  const time = o.at.toISOString().replace('T', ' ').slice(0, 19);
  const head = `tandem top - node ${o.node} - ${time} UTC - ${rows.length} resource${rows.length === 1 ? '' : 's'}${o.interactive ? ' - q quits' : ''}`;
  const lines = [head];
  if (rows.length === 0) {
    lines.push('', 'No engine runs on this node (no control socket in the run directory).');
    return lines.map((l) => l.slice(0, o.width));
  }
  const table: string[][] = [
    ['RESOURCE', 'ROLE', 'CONN', 'DISK', 'OOS', 'WRITE', 'READ', 'REPL', 'W/S', 'LAT AVG', 'P99'],
  ];
  const extra = new Map<number, string>();
  rows.forEach((r, i) => {
    table.push([
      r.resource,
      r.role,
      r.conn,
      r.disk,
      bytes(r.outOfSyncBytes),
      perSecond(r.writeBytesPerSecond),
      perSecond(r.readBytesPerSecond),
      perSecond(r.sentBytesPerSecond),
      r.writesPerSecond === undefined ? '-' : String(Math.round(r.writesPerSecond)),
      r.writeLatencyAvg === undefined ? '-' : seconds(r.writeLatencyAvg),
      r.writeLatencyP99 === undefined
        ? '-'
        : Number.isFinite(r.writeLatencyP99)
          ? `<${seconds(r.writeLatencyP99)}`
          : seconds(r.writeLatencyP99),
    ]);
    const more: string[] = [];
    if (r.syncPercent !== undefined) {
      more.push(
        `${r.conn.startsWith('Verify') ? 'verify' : 'sync'} ${progressBar(r.syncPercent)} ${perSecond(r.syncBytesPerSecond)}${r.etaSeconds === undefined ? '' : ` eta ${hms(r.etaSeconds)}`}`,
      );
    }
    if (r.flags.length) more.push(r.flags.join(' '));
    if (r.error) more.push(`last error: ${r.error}`);
    if (more.length) extra.set(i, more.join('  '));
  });
  const widths = table[0]!.map((_, c) => Math.max(...table.map((row) => row[c]!.length)));
  const fmt = (row: string[]): string =>
    row
      .map((cell, c) => (c >= 4 ? cell.padStart(widths[c]!) : cell.padEnd(widths[c]!)))
      .join('  ')
      .trimEnd();
  lines.push('', fmt(table[0]!));
  table.slice(1).forEach((row, i) => {
    lines.push(fmt(row));
    const x = extra.get(i);
    if (x) lines.push(`  ${x}`);
  });
  return lines.map((l) => (l.length > o.width ? l.slice(0, o.width) : l));
}

/** Engines with a control socket in the run dir, or the ones named. */
async function resourcesOf(runDir: string, named: string[]): Promise<string[]> {
  if (named.length && !named.includes('all')) return named;
  const names = await readdir(runDir).catch(() => [] as string[]);
  return names.filter((n) => n.endsWith('.ctl')).map((n) => n.slice(0, -4));
}

async function sample(runDir: string, named: string[]): Promise<TopSample> {
  const statuses = new Map<string, EngineStatus | { error: string }>();
  await Promise.all(
    (await resourcesOf(runDir, named)).map(async (res) => {
      try {
        const r = await callControl(paths(runDir, res).ctl, { cmd: 'status' }, 5_000);
        statuses.set(res, r.ok ? (r.result as EngineStatus) : { error: r.error.message });
      } catch (err) {
        // A socket left by a crashed engine: the engine is not running.
        statuses.set(res, { error: err instanceof NotRunningError ? 'not running' : (err as Error).message });
      }
    }),
  );
  return { at: Date.now(), statuses };
}

export interface TopOptions {
  runDir: string;
  node: string;
  resources: string[];
  intervalMs: number;
  once: boolean;
}

/** Runs until `q` (terminal) or forever (plain lines), or one block with `once`. */
export async function runTop(o: TopOptions): Promise<number> {
  const out = process.stdout;
  const interactive = out.isTTY === true && process.stdin.isTTY === true && !o.once;
  let prev: TopSample | undefined;
  const frame = async (): Promise<string[]> => {
    const cur = await sample(o.runDir, o.resources);
    const lines = renderTop(topRows(cur, prev), {
      node: o.node,
      at: new Date(cur.at),
      width: interactive ? (out.columns ?? 120) : Number.MAX_SAFE_INTEGER,
      interactive,
    });
    prev = cur;
    return lines;
  };
  if (!interactive) {
    // The first block has no rates yet: with --once, measure over one interval first.
    if (o.once) {
      await frame();
      await new Promise((r) => setTimeout(r, o.intervalMs));
      out.write(`${(await frame()).join('\n')}\n`);
      return 0;
    }
    for (;;) {
      out.write(`${(await frame()).join('\n')}\n\n`);
      await new Promise((r) => setTimeout(r, o.intervalMs));
    }
  }
  // The alternate screen and a hidden cursor, given back however we leave.
  out.write('\x1b[?1049h\x1b[?25l');
  const restore = (): void => {
    out.write('\x1b[?25h\x1b[?1049l');
    if (process.stdin.isTTY) process.stdin.setRawMode(false);
  };
  process.stdin.setRawMode(true);
  process.stdin.resume();
  return new Promise<number>((resolve) => {
    let timer: NodeJS.Timeout | undefined;
    let done = false;
    const quit = (): void => {
      if (done) return;
      done = true;
      clearTimeout(timer);
      restore();
      process.stdin.pause();
      resolve(0);
    };
    let drawing = false;
    const draw = async (): Promise<void> => {
      if (drawing) return;
      drawing = true;
      clearTimeout(timer);
      try {
        const lines = await frame();
        if (done) return;
        const rows = out.rows ?? 24;
        out.write(`\x1b[H\x1b[2J${lines.slice(0, rows).join('\r\n')}`);
      } finally {
        drawing = false;
        if (!done) timer = setTimeout(() => void draw(), o.intervalMs);
      }
    };
    process.stdin.on('data', (d: Buffer) => {
      const k = d.toString();
      // q, Q, Ctrl-C, Ctrl-D quit; any other key redraws now.
      if (k === 'q' || k === 'Q' || k === '\x03' || k === '\x04') return quit();
      void draw();
    });
    out.on('resize', () => void draw());
    process.once('SIGTERM', quit);
    void draw();
  });
}
