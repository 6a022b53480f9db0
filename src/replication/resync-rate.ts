// How fast a resync may go right now: DRBD's fixed `resync-rate`, or its dynamic
// controller (c-plan-ahead > 0), reduced to what matters for the application:
// full speed (up to c-max-rate) while the application is idle, c-min-rate while it
// is doing I/O.
//
// Defaults, and why they differ from DRBD's: DRBD throttles to c-min-rate 250 KiB/s
// under application load, which on today's disks means a busy database's resync of
// 100 GiB takes about five days, all of it spent with a single copy of the data.
// tandem's floor is 64 MiB/s: that 100 GiB resync takes under half an hour, and
// on an SSD or NVMe device (1–3 GB/s) it is a few percent of the bandwidth, so
// the application's latency stays close to its unloaded value.
import type { DiskOptions } from '../api/config.ts';

export const DEFAULT_C_PLAN_AHEAD = 20;
export const DEFAULT_C_MIN_RATE = 64 * 1024 * 1024;
/** Application I/O within this window counts as "the application is busy". */
export const APP_ACTIVE_WINDOW_MS = 200;

/** Bytes per second the resync may use now; undefined means no limit. */
export function resyncRateNow(
  o: Pick<DiskOptions, 'resyncRate' | 'cPlanAhead' | 'cMinRate' | 'cMaxRate'>,
  appActive: boolean,
): number | undefined {
  const dynamic = (o.cPlanAhead ?? DEFAULT_C_PLAN_AHEAD) > 0;
  if (!dynamic) return o.resyncRate || undefined;
  // A configured resync-rate still caps the dynamic controller (the tutorial's
  // `syncer { rate 1024M; }` means what it says).
  const max = o.cMaxRate || o.resyncRate || undefined;
  const min = o.cMinRate ?? DEFAULT_C_MIN_RATE;
  if (!appActive || min === 0) return max;
  return max === undefined ? min : Math.min(min, max);
}
