// Kubernetes resource quantities (`1Gi`, `500M`, `1073741824`) as byte counts.
// Only the forms a size or a rate takes: integer or decimal with a binary or
// decimal suffix; no exponents, no milli.

export const QUANTITY_PATTERN = '^[0-9]+(\\.[0-9]+)?(Ki|Mi|Gi|Ti|Pi|k|M|G|T|P)?$';

const FACTORS: Record<string, number> = {
  '': 1,
  Ki: 2 ** 10,
  Mi: 2 ** 20,
  Gi: 2 ** 30,
  Ti: 2 ** 40,
  Pi: 2 ** 50,
  k: 1e3,
  M: 1e6,
  G: 1e9,
  T: 1e12,
  P: 1e15,
};

/** Bytes for a quantity, rounded down; undefined when it is not one. */
export function parseQuantity(text: string): number | undefined {
  const m = new RegExp(QUANTITY_PATTERN).exec(text);
  if (!m) return undefined;
  const suffix = m[2] ?? '';
  const n = Math.floor(Number(text.slice(0, text.length - suffix.length)) * FACTORS[suffix]!);
  return Number.isSafeInteger(n) ? n : undefined;
}

/** Bytes the way people read them: 1.5 MiB. */
export function formatBytes(n: number): string {
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB', 'PiB'];
  let u = 0;
  while (n >= 1024 && u < units.length - 1) {
    n /= 1024;
    u++;
  }
  return u === 0 ? `${Math.round(n)} B` : `${n.toFixed(1)} ${units[u]}`;
}
