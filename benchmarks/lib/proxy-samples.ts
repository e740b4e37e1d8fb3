/**
 * The figures of the end-to-end benchmark's redis-benchmark runs: one Sample per run, command and
 * target, gathered in a SampleBook and summed up over the rounds as medians (Agg), with the range
 * of upstream connections respool used and had open.
 */
import { median, type BenchRun } from './harness.js'
import type { UpstreamUse } from './redis-admin.js'

/** One redis-benchmark run, with respool's upstream connections during it (null for direct and twemproxy). */
export type MeasuredRun = BenchRun & { upstream: UpstreamUse | null }

/** One run's figures; `upstream` is respool's upstream connections during that run (null for direct and twemproxy). */
export interface Sample { rps: number, p50: number, p99: number, avg: number, cpu: number | null, upstream: UpstreamUse | null }
/** Upstream connections over the rounds: used (fewest and most) and the most open at once. */
export interface UpstreamRange { usedMin: number | null, usedMax: number | null, openMax: number }
export interface Agg { rps: number, p50: number, p99: number, avg: number, cpu: number | null, upstream: UpstreamRange | null, rounds: Sample[] }

export function upstreamRange (uses: Array<UpstreamUse | null>): UpstreamRange | null {
  const xs = uses.filter((u): u is UpstreamUse => u !== null)
  if (xs.length === 0) return null
  const used = xs.map((u) => u.used).filter((u): u is number => u !== null)
  return {
    usedMin: used.length > 0 ? Math.min(...used) : null,
    usedMax: used.length > 0 ? Math.max(...used) : null,
    openMax: Math.max(...xs.map((u) => u.open))
  }
}

/** "used/open", e.g. "5/6" or "4–5/6"; "—" when nothing was watched. */
export function fmtUpstream (u: UpstreamRange | null): string {
  if (u === null) return '—'
  const used = u.usedMin === null || u.usedMax === null ? '?' : u.usedMin === u.usedMax ? String(u.usedMin) : `${u.usedMin}–${u.usedMax}`
  return `${used}/${u.openMax}`
}

function aggregate (samples: Sample[]): Agg {
  const cpus = samples.map((s) => s.cpu).filter((c): c is number => c !== null)
  return {
    rps: median(samples.map((s) => s.rps)),
    p50: median(samples.map((s) => s.p50)),
    p99: median(samples.map((s) => s.p99)),
    avg: median(samples.map((s) => s.avg)),
    cpu: cpus.length > 0 ? median(cpus) : null,
    upstream: upstreamRange(samples.map((s) => s.upstream)),
    rounds: samples
  }
}

/** Samples keyed by scenario|cmd|target. */
export class SampleBook {
  readonly #m = new Map<string, Sample[]>()
  add (key: string, s: Sample): void {
    const list = this.#m.get(key) ?? []
    list.push(s)
    this.#m.set(key, list)
  }

  agg (key: string): Agg | null {
    const list = this.#m.get(key)
    return list === undefined || list.length === 0 ? null : aggregate(list)
  }
}

export function sampleOf (run: MeasuredRun, cmd: string): Sample | null {
  const l = run.lines.get(cmd.toUpperCase())
  if (l === undefined || !Number.isFinite(l.rps)) return null
  return { rps: l.rps, p50: l.p50Ms, p99: l.p99Ms, avg: l.avgMs, cpu: run.cpu, upstream: run.upstream }
}
