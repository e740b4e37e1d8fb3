/**
 * What the end-to-end benchmark's scenarios share: the record of the run (tables, anomalies, the
 * order targets ran in) with the admin connection to redis-server, and the steps every scenario
 * takes: one measured redis-benchmark run, a warm-up, stopping targets.
 */
import { setTimeout as delay } from 'node:timers/promises'
import { benchArgv, logProblems, redisBenchmark, rotated, type BenchArgs, type Server } from './harness.js'
import type { RedisAdmin } from './redis-admin.js'
import { BENCH_TIMEOUT_MS, DATA_SIZE, KEYSPACE, POOL_SIZE, REQUESTS, TESTS } from './proxy-params.js'
import type { MeasuredRun } from './proxy-samples.js'
import { fmtInt, fmtMs, fmtPct, type Table } from './table.js'

export interface Anomaly { scenario: string, target: string, message: string, reproduce?: string }

/** One round of one cell: the order its targets ran in. */
export interface ScheduleEntry { scenario: string, round: number, cell: string, order: string[] }

/** What one benchmark run collects from its scenarios, and the admin connection they all use. */
export class RunBook {
  readonly anomalies: Anomaly[] = []
  readonly tables: Table[] = []
  /** The order targets ran in, round by round (in the JSON, so the rotation can be checked). */
  readonly schedule: ScheduleEntry[] = []

  /** `admin` also lets stopAll() wait until redis-server has seen a stopped respool's connections close. */
  constructor (readonly admin: RedisAdmin) {}

  /** The targets of one round of one cell, in their rotated order, noted in the schedule. */
  roundOrder<T> (scenario: string, round: number, cell: string, cellIndex: number, xs: readonly T[], name: (x: T) => string): T[] {
    const order = rotated(xs, round + cellIndex)
    this.schedule.push({ scenario, round: round + 1, cell, order: order.map(name) })
    return order
  }

  /** One redis-benchmark run against a target, with respool's upstream connections watched. */
  async measure (target: Server, args: BenchArgs, ctx: { scenario: string, poolSize?: number }): Promise<MeasuredRun> {
    const watch = target.kind === 'respool' ? this.admin.watch(100) : null
    const run = await redisBenchmark(target.port, { ...args, keyspace: KEYSPACE, dataSize: DATA_SIZE }, target.pid, BENCH_TIMEOUT_MS)
    const upstream = watch === null ? null : await watch.stop()
    const maxUpstream = upstream?.open ?? null
    const argv = benchArgv(target.port, { ...args, keyspace: KEYSPACE, dataSize: DATA_SIZE })
    for (const note of run.notes) {
      this.anomalies.push({ scenario: ctx.scenario, target: target.name, message: `redis-benchmark: ${note}`, reproduce: reproduce(target, argv, ctx.poolSize) })
    }
    if (maxUpstream !== null && ctx.poolSize !== undefined && maxUpstream > ctx.poolSize) {
      this.anomalies.push({
        scenario: ctx.scenario,
        target: target.name,
        message: `${maxUpstream} upstream connections named respool seen during the run, more than --pool-size ${ctx.poolSize}`,
        reproduce: reproduce(target, argv, ctx.poolSize)
      })
    }
    if (target.child.exitCode !== null || target.child.signalCode !== null) {
      this.anomalies.push({ scenario: ctx.scenario, target: target.name, message: `process exited during the run (${target.child.exitCode ?? target.child.signalCode})`, reproduce: reproduce(target, argv, ctx.poolSize) })
      throw new Error(`${target.name} exited during ${ctx.scenario}`)
    }
    return { ...run, upstream }
  }

  async stopAll (scenario: string, servers: Array<Server | null>): Promise<void> {
    for (const s of servers) {
      if (s === null) continue
      this.#collectLogProblems(scenario, s)
      await s.stop()
      if (s.kind === 'respool') {
        const deadline = performance.now() + 3000
        while (performance.now() < deadline) {
          try {
            if ((await this.admin.respoolConnections()).respool === 0) break
          } catch { break }
          await delay(20)
        }
      }
    }
  }

  #collectLogProblems (scenario: string, target: Server): void {
    if (target.kind !== 'respool') return
    const { count, samples } = logProblems(target.logFile, 5)
    if (count > 0) this.anomalies.push({ scenario, target: target.name, message: `respool logged ${count} warning/error line(s), e.g. ${samples.join(' / ')}` })
  }
}

export function reproduce (target: Server, argv: string[], poolSize?: number): string {
  const bench = `redis-benchmark ${argv.map((a) => (a === '' ? "''" : a)).join(' ').replace(/-p \d+/, '-p 6380')}`
  if (target.kind === 'respool') {
    return `redis-server --port 6379 --save '' --appendonly no & npm run build && node bin/respool.js --port 6380 --upstream redis://127.0.0.1:6379 --pool-size ${poolSize ?? POOL_SIZE} --log-level warn & ${bench}`
  }
  if (target.kind === 'twemproxy') return `nutcracker -c <one-server config, see benchmarks/README.md> & ${bench}`
  return bench.replace('-p 6380', '-p 6379')
}

export function runSummary (run: MeasuredRun): string {
  return TESTS.map((t) => {
    const l = run.lines.get(t.toUpperCase())
    return l === undefined ? `${t.toUpperCase()} —` : `${t.toUpperCase()} ${fmtInt(l.rps)}/s p99 ${fmtMs(l.p99Ms)}ms`
  }).join(' | ') + (run.cpu !== null ? ` cpu ${fmtPct(run.cpu)}` : '') +
    (run.upstream !== null ? ` upstream used/open ${run.upstream.used ?? '?'}/${run.upstream.open}` : '') +
    (run.notes.length > 0 ? ` !! ${run.notes.length} note(s)` : '')
}

/**
 * A discarded run that warms a target up: 50 clients -P 1 by default, or the shape of the load that
 * follows (a fresh respool then opens the lanes that load needs before it is measured).
 */
export async function warmUp (target: Server, shape: { clients: number, pipeline: number } = { clients: 50, pipeline: 1 }): Promise<void> {
  const requests = Math.max(Math.min(REQUESTS, 20000), shape.clients * shape.pipeline * 4)
  await redisBenchmark(target.port, { ...shape, requests, tests: TESTS, keyspace: KEYSPACE, dataSize: DATA_SIZE }, null, BENCH_TIMEOUT_MS)
}

export const comboLabel = (c: { clients: number, pipeline: number }): string => `c=${c.clients} P=${c.pipeline}`

export const UPSTREAM_NOTE = 'upstream used/open = respool\'s connections to Redis during the run: used = sent commands (kernel byte counters, matched to CLIENT LIST), open = most open at once (CLIENT LIST, name=respool); a range when rounds differ. respool opens another lane only while every open one is busy, so both can stay far below --pool-size'

/** Anomalies seen more than once, once each with a count. */
export function dedupe (xs: Anomaly[]): Anomaly[] {
  const seen = new Map<string, Anomaly & { n: number }>()
  for (const x of xs) {
    const k = `${x.scenario}|${x.target}|${x.message}`
    const prev = seen.get(k)
    if (prev !== undefined) prev.n++
    else seen.set(k, { ...x, n: 1 })
  }
  return [...seen.values()].map((x) => ({ ...x, message: x.n > 1 ? `${x.message} (×${x.n})` : x.message }))
}
