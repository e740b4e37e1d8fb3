/**
 * The pool size to recommend, from measured cells. Pure: the same cells always give the same
 * answer, and it is unit-tested on cells whose answer is known.
 *
 * Rule: the smallest pool size that, at every concurrency measured, reaches at least
 * (1 - tolerance) of the best throughput any pool size reached at that concurrency, and whose p99
 * meets the target (when one is given). A concurrency at which no pool size meets the target is
 * left out of the p99 condition (no pool size can fix it) and named in the answer.
 */

export interface MeasuredCell {
  poolSize: number
  clients: number
  opsPerSec: number
  p99Ms: number
  /** Commands answered with an error; a cell with errors never qualifies. */
  errors: number
}

export interface Recommendation {
  /** The pool size to use; null only when nothing was measured. */
  poolSize: number | null
  /** One sentence: why this size. */
  reason: string
  /** Every pool size that met the rule (smallest first). */
  qualifying: number[]
  /** Concurrencies at which no pool size met --target-p99. */
  p99Unattainable: number[]
}

export interface DecideOptions {
  /** p99 in ms each concurrency should meet (none: throughput alone decides). */
  targetP99Ms?: number
  /** How far below the best throughput still counts as "as good" (default 0.05). */
  tolerance?: number
}

export function recommendPoolSize (cells: MeasuredCell[], options: DecideOptions = {}): Recommendation {
  const tolerance = options.tolerance ?? 0.05
  const target = options.targetP99Ms
  const pools = [...new Set(cells.map((c) => c.poolSize))].sort((a, b) => a - b)
  const concurrencies = [...new Set(cells.map((c) => c.clients))].sort((a, b) => a - b)
  if (pools.length === 0) return { poolSize: null, reason: 'Nothing was measured.', qualifying: [], p99Unattainable: [] }
  const cell = (pool: number, clients: number): MeasuredCell | undefined => cells.find((c) => c.poolSize === pool && c.clients === clients)
  const ok = (c: MeasuredCell | undefined): c is MeasuredCell => c !== undefined && c.errors === 0 && Number.isFinite(c.opsPerSec) && c.opsPerSec > 0
  const best = new Map(concurrencies.map((n) => [n, Math.max(0, ...pools.map((p) => cell(p, n)).filter(ok).map((c) => c.opsPerSec))]))
  const meets = (c: MeasuredCell): boolean => target === undefined || c.p99Ms <= target
  const p99Unattainable = target === undefined ? [] : concurrencies.filter((n) => !pools.some((p) => { const c = cell(p, n); return ok(c) && meets(c) }))
  const share = (c: MeasuredCell): number => { const b = best.get(c.clients) ?? 0; return b > 0 ? c.opsPerSec / b : 0 }
  const fastEnough = (p: number): boolean => concurrencies.every((n) => { const c = cell(p, n); return ok(c) && share(c) >= 1 - tolerance })
  const quickEnough = (p: number): boolean => concurrencies.every((n) => { const c = cell(p, n); return ok(c) && (meets(c) || p99Unattainable.includes(n)) })
  const qualifying = pools.filter((p) => fastEnough(p) && quickEnough(p))
  const pct = Math.round((1 - tolerance) * 100)
  const clientsText = concurrencies.length === 1 ? `${concurrencies[0]} clients` : `${concurrencies.join(', ')} clients`
  const p99Text = target === undefined ? '' : ` with p99 ≤ ${target} ms${p99Unattainable.length > 0 ? ` (no pool size met it at ${p99Unattainable.join(', ')} clients)` : ''}`
  if (qualifying.length > 0) {
    const chosen = qualifying[0]
    if (pools.length === 1) {
      return { poolSize: chosen, reason: `Only pool size ${chosen} was measured; it ran without errors at ${clientsText}${p99Text}.`, qualifying, p99Unattainable }
    }
    const smaller = pools.filter((p) => p < chosen)
    const shortfall = smaller.length === 0 ? '' : `; ${describeShortfall(smaller[smaller.length - 1], concurrencies, cell, ok, share, meets, p99Unattainable, tolerance)}`
    return { poolSize: chosen, reason: `Pool size ${chosen} is the smallest that reaches ${pct}% of the best throughput at ${clientsText}${p99Text}${shortfall}.`, qualifying, p99Unattainable }
  }
  // Nothing meets both: prefer meeting the latency target, then throughput.
  const latencyOk = pools.filter(quickEnough)
  const pool = (latencyOk.length > 0 ? latencyOk : pools).reduce((a, b) => totalShare(b, concurrencies, cell, ok, share) > totalShare(a, concurrencies, cell, ok, share) ? b : a)
  const why = latencyOk.length > 0
    ? `no pool size reached ${pct}% of the best throughput at every concurrency while meeting p99 ≤ ${target} ms, and ${pool} has the most throughput of those meeting it`
    : target !== undefined && pools.some(fastEnough)
      ? `no pool size met p99 ≤ ${target} ms at every concurrency, and ${pool} has the most throughput overall`
      : `no pool size ran without errors and within ${100 - pct}% of the best at every concurrency; ${pool} has the most throughput overall`
  return { poolSize: pool, reason: `Pool size ${pool}: ${why}.`, qualifying, p99Unattainable }
}

function totalShare (pool: number, concurrencies: number[], cell: (p: number, n: number) => MeasuredCell | undefined, ok: (c: MeasuredCell | undefined) => c is MeasuredCell, share: (c: MeasuredCell) => number): number {
  let sum = 0
  for (const n of concurrencies) { const c = cell(pool, n); if (ok(c)) sum += share(c) }
  return sum
}

/** Why the next smaller pool size was not enough, e.g. "4 reaches only 71% at 200 clients". */
function describeShortfall (pool: number, concurrencies: number[], cell: (p: number, n: number) => MeasuredCell | undefined,
  ok: (c: MeasuredCell | undefined) => c is MeasuredCell, share: (c: MeasuredCell) => number, meets: (c: MeasuredCell) => boolean,
  unattainable: number[], tolerance: number): string {
  for (const n of [...concurrencies].reverse()) {
    const c = cell(pool, n)
    if (!ok(c)) return `${pool} had errors at ${n} clients`
    if (share(c) < 1 - tolerance) return `${pool} reaches only ${Math.floor(share(c) * 100)}% at ${n} clients`
    if (!meets(c) && !unattainable.includes(n)) return `${pool} has p99 ${c.p99Ms.toFixed(2)} ms at ${n} clients`
  }
  return `${pool} falls short`
}
