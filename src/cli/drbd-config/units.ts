// Numbers in drbd.conf. Each DRBD option has a default unit (drbd_limits.h calls it
// the scale); a suffix overrides it: `s` sectors (512 bytes), `K`/`M`/`G` binary
// kibi/mebi/gibibytes (drbdsetup(8): "K = 2^10 = 1024, M = 1024 K, G = 1024 M").

export const UNIT = { byte: 1, sector: 512, kib: 1024 } as const;

const SUFFIXES: Record<string, number> = { s: 512, k: 1024, m: 1024 ** 2, g: 1024 ** 3 };

/** A plain non-negative decimal integer, or undefined. */
export function parseInteger(text: string): number | undefined {
  if (!/^\d+$/.test(text)) return undefined;
  const n = Number(text);
  return Number.isSafeInteger(n) ? n : undefined;
}

/**
 * A number with an optional unit suffix, in bytes (or bytes per second for rates).
 * A bare number is in `defaultUnit`: `rate 1024M` is 1073741824, `rate 100` (KiB/s) is 102400.
 */
export function parseScaled(text: string, defaultUnit: number): number | undefined {
  const match = /^(\d+)([sSkKmMgG]?)$/.exec(text);
  if (!match) return undefined;
  const unit = match[2] ? SUFFIXES[match[2].toLowerCase()] : defaultUnit;
  const n = Number(match[1]) * (unit ?? defaultUnit);
  return Number.isSafeInteger(n) ? n : undefined;
}
