// /proc/drbd (8.4) rendering of engine status, so `tandemadm status` reads the
// way `cat /proc/drbd` does in the tutorial:
//  0: cs:SyncSource ro:Primary/Secondary ds:UpToDate/Inconsistent C r-----
//     ns:3757056 nr:0 dw:0 dr:3759178 al:8 bm:0 lo:0 pe:1 ua:0 ap:0 ep:1 wo:f oos:3079892
// 	[==========>.........] sync'ed: 55.1% (3004/6672)M
// 	finish: 0:05:53 speed: 8,696 (9,180) K/sec
import type { EngineStatus, SyncProgress } from '../replication/engine.ts';

export const TANDEM_VERSION = '0.1.0';

export function versionHeader(): string {
  return `version: ${TANDEM_VERSION} (api:1/proto:1-1)\nGIT-hash: tandem userspace engine`;
}

const kib = (bytes: number): number => Math.floor(bytes / 1024);

/** DRBD prints numbers with thousands separators in the speed line. */
function grouped(n: number): string {
  return String(Math.round(n)).replace(/\B(?=(\d{3})+(?!\d))/g, ',');
}

function hms(seconds: number): string {
  const h = Math.floor(seconds / 3600);
  const m = Math.floor((seconds % 3600) / 60);
  const s = Math.floor(seconds % 60);
  return `${h}:${String(m).padStart(2, '0')}:${String(s).padStart(2, '0')}`;
}

export function progressLines(p: SyncProgress, label = "sync'ed"): string[] {
  const permille = Math.floor(p.percent * 10);
  const x = Math.floor(permille / 50);
  const bar = `${'='.repeat(Math.max(0, x - 1))}>${'.'.repeat(20 - Math.max(1, x))}`;
  // DRBD switches from K to M above 4 GiB.
  const inMiB = p.totalBytes > 4 * 1024 ** 3;
  const unit = inMiB ? 1024 * 1024 : 1024;
  const left = Math.floor(p.remainingBytes / unit);
  const total = Math.floor(p.totalBytes / unit);
  const pct = `${Math.floor(permille / 10)}.${permille % 10}`;
  const finish = p.etaSeconds === undefined ? '?:??:??' : hms(p.etaSeconds);
  return [
    `\t[${bar}] ${label}:${pct.padStart(5)}% (${left}/${total})${inMiB ? 'M' : 'K'}`,
    `\tfinish: ${finish} speed: ${grouped(p.speedKiBps)} (${grouped(p.averageKiBps)}) K/sec${p.paused ? ' (paused)' : ''}`,
  ];
}

export function formatProcDrbd(s: EngineStatus): string {
  const c = s.counters;
  const flags = `${s.suspended ? 's' : 'r'}-${s.peerPaused ? 'p' : '-'}${s.userPaused ? 'u' : '-'}--`;
  const lines = [
    `${String(s.minor).padStart(2)}: cs:${s.cstate} ro:${s.role}/${s.peerRole} ds:${s.disk}/${s.peerDisk} ${s.protocol} ${flags}`,
    `    ns:${kib(c.ns)} nr:${kib(c.nr)} dw:${kib(c.dw)} dr:${kib(c.dr)} al:${c.al} bm:${c.bm} lo:${c.lo} pe:${c.pe} ua:${c.ua} ap:${c.ap} ep:${c.ep} wo:f oos:${kib(s.oosBytes)}`,
  ];
  if (s.sync)
    lines.push(...progressLines(s.sync, s.cstate === 'VerifyS' || s.cstate === 'VerifyT' ? 'verified' : "sync'ed"));
  return lines.join('\n');
}

export function formatUnconfigured(minor: number): string {
  return `${String(minor).padStart(2)}: cs:Unconfigured`;
}
