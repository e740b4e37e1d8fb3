/**
 * Latency histogram for the load generator: logarithmic buckets 1 % wide from 1 µs to about
 * 100 s, so any quantile is known to within 1 % whatever the number of samples, in fixed memory.
 * Counts are plain numbers, so a histogram crosses a worker boundary as an array.
 */
const GROWTH = 1.01
const LOG_GROWTH = Math.log(GROWTH)
const MIN_US = 1
const BUCKETS = Math.ceil(Math.log(1e8 / MIN_US) / LOG_GROWTH) + 1

export class LatencyHistogram {
  readonly counts: Float64Array
  count = 0
  sumMs = 0
  maxMs = 0

  constructor (counts?: ArrayLike<number>) {
    this.counts = new Float64Array(BUCKETS)
    if (counts !== undefined) {
      this.counts.set(counts)
      for (let i = 0; i < counts.length; i++) this.count += counts[i]
    }
  }

  record (ms: number): void {
    const us = ms * 1000
    const i = us <= MIN_US ? 0 : Math.min(BUCKETS - 1, Math.ceil(Math.log(us / MIN_US) / LOG_GROWTH))
    this.counts[i]++
    this.count++
    this.sumMs += ms
    if (ms > this.maxMs) this.maxMs = ms
  }

  reset (): void {
    this.counts.fill(0)
    this.count = 0
    this.sumMs = 0
    this.maxMs = 0
  }

  /** The q-quantile (0 < q ≤ 1) in ms: the upper edge of the bucket holding it; 0 when empty. */
  quantile (q: number): number {
    if (this.count === 0) return 0
    const rank = Math.max(1, Math.ceil(q * this.count))
    let seen = 0
    for (let i = 0; i < BUCKETS; i++) {
      seen += this.counts[i]
      if (seen >= rank) return Math.min(this.maxMs > 0 ? this.maxMs : Infinity, MIN_US * GROWTH ** i / 1000)
    }
    return this.maxMs
  }
}

/**
 * The q-quantile of a Prometheus-style histogram (upper bounds, per-bucket counts, the last one
 * above every bound), interpolated within its bucket as PromQL's histogram_quantile does.
 * Values above the last bound are reported as that bound. 0 when there are no observations.
 */
export function bucketQuantile (bounds: number[], counts: number[], q: number): number {
  const total = counts.reduce((a, b) => a + b, 0)
  if (total === 0) return 0
  const rank = q * total
  let seen = 0
  for (let i = 0; i < counts.length; i++) {
    if (seen + counts[i] >= rank && counts[i] > 0) {
      if (i >= bounds.length) return bounds[bounds.length - 1]
      const lower = i === 0 ? 0 : bounds[i - 1]
      return lower + (bounds[i] - lower) * ((rank - seen) / counts[i])
    }
    seen += counts[i]
  }
  return bounds[bounds.length - 1]
}

/** Per-bucket counts of `after` minus `before` (two snapshots of one cumulative histogram). */
export function bucketDelta (before: number[], after: number[]): number[] {
  return after.map((n, i) => Math.max(0, n - (before[i] ?? 0)))
}
