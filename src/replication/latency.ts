// Application write latency as a fixed-bucket histogram: what the engine reports in
// its status (`writeLatency`), and what the agent exposes as
// tandem_device_write_latency_seconds. Fixed buckets keep the exposition bounded
// and let Prometheus add histograms of many volumes together.

/** Upper bounds in seconds, from a page-cache write (100 µs) to a frozen device (10 s). */
export const LATENCY_BUCKETS = [
  0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10,
] as const;

/** Cumulative counts per bucket (`le`), as Prometheus wants them; the last bucket is +Inf (= count). */
export interface LatencySnapshot {
  buckets: readonly number[];
  cumulative: number[];
  sumSeconds: number;
  count: number;
}

export class LatencyHistogram {
  readonly #counts = new Array<number>(LATENCY_BUCKETS.length + 1).fill(0);
  #sum = 0;
  #count = 0;

  observe(seconds: number): void {
    let i = 0;
    while (i < LATENCY_BUCKETS.length && seconds > LATENCY_BUCKETS[i]!) i++;
    this.#counts[i]!++;
    this.#sum += seconds;
    this.#count++;
  }

  snapshot(): LatencySnapshot {
    const cumulative: number[] = [];
    let run = 0;
    for (let i = 0; i < LATENCY_BUCKETS.length; i++) {
      run += this.#counts[i]!;
      cumulative.push(run);
    }
    return { buckets: LATENCY_BUCKETS, cumulative, sumSeconds: this.#sum, count: this.#count };
  }
}
