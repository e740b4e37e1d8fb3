/**
 * Scenario (b) of the end-to-end benchmark: the saturation sweep (clients × --pool-size ×
 * pipeline, load by load, a fresh respool for every run), and BIG_CLIENTS clients over the smallest
 * vs the largest of BIG_POOLS upstream connections.
 */
import { progress, startRespool, type Server } from './harness.js'
import {
  BIG_CLIENTS, BIG_PIPELINES, BIG_POOLS, MIN_PER_CLIENT, PIPELINED_FACTOR, POOL_SIZE, REQUESTS, ROUNDS, SWEEP_CLIENTS,
  SWEEP_PIPELINES, SWEEP_POOLS, SWEEP_REQUESTS, SWEEP_ROUNDS, TESTS, TW_CONNECTIONS, requestsFor
} from './proxy-params.js'
import { UPSTREAM_NOTE, comboLabel, runSummary, warmUp, type RunBook } from './proxy-book.js'
import { SampleBook, fmtUpstream, sampleOf, type Agg } from './proxy-samples.js'
import { fmtInt, fmtMs, fmtRatio } from './table.js'

export interface SweepCell { clients: number, pipeline: number, cmd: string, byPool: Record<number, Agg | null>, direct: Agg | null, tw: Agg | null, knee: number | null, best: number }

function kneeOf (pools: number[], byPool: Record<number, Agg | null>): { knee: number | null, best: number } {
  const vals = pools.map((p) => byPool[p]?.rps ?? NaN)
  const best = Math.max(...vals.filter((v) => Number.isFinite(v)))
  if (!Number.isFinite(best)) return { knee: null, best: NaN }
  const i = vals.findIndex((v) => v >= 0.95 * best)
  return { knee: i === -1 ? null : pools[i], best }
}

export async function scenarioSweep (redis: Server, book: RunBook, tw: Server | null): Promise<SweepCell[]> {
  // Load by load: each round of a load runs direct, twemproxy and every pool size in turn (order
  // rotated), so a pool size is never measured in a different stretch of time than the others.
  // Each respool run gets a fresh process, warmed up with the same load: only one respool is
  // connected to redis-server at a time, so the connections CLIENT LIST shows are that run's.
  const samples = new SampleBook()
  const combos = SWEEP_CLIENTS.flatMap((c) => SWEEP_PIPELINES.map((p) => ({ clients: c, pipeline: p })))
  const entries: Array<{ name: string, key: string, server: Server | null, pool: number | null }> = [
    { name: redis.name, key: 'direct', server: redis, pool: null },
    ...(tw !== null ? [{ name: tw.name, key: 'twemproxy', server: tw, pool: null }] : []),
    ...SWEEP_POOLS.map((pool) => ({ name: `respool(${pool})`, key: `pool${pool}`, server: null, pool }))
  ]
  for (const e of entries) if (e.server !== null) await warmUp(e.server)
  for (const [ci, combo] of combos.entries()) {
    const args = { ...combo, requests: requestsFor(combo.pipeline, SWEEP_REQUESTS, combo.clients), tests: TESTS }
    for (let r = 0; r < SWEEP_ROUNDS; r++) {
      for (const e of book.roundOrder('b', r, comboLabel(combo), ci, entries, (x) => x.name)) {
        const t = e.server ?? await startRespool(redis.port, { poolSize: e.pool ?? POOL_SIZE })
        try {
          if (e.server === null) await warmUp(t, combo)
          const run = await book.measure(t, args, { scenario: 'b', poolSize: e.pool ?? undefined })
          for (const cmd of TESTS) {
            const s = sampleOf(run, cmd)
            if (s !== null) samples.add(`${comboLabel(combo)}|${cmd}|${e.key}`, s)
          }
          progress(`(b) sweep ${comboLabel(combo)} round ${r + 1}/${SWEEP_ROUNDS} ${t.name}: ${runSummary(run)}`)
        } finally {
          if (e.server === null) await book.stopAll('b', [t])
        }
      }
    }
  }
  const cells: SweepCell[] = []
  for (const combo of combos) {
    for (const cmd of TESTS) {
      const byPool: Record<number, Agg | null> = {}
      for (const pool of SWEEP_POOLS) byPool[pool] = samples.agg(`${comboLabel(combo)}|${cmd}|pool${pool}`)
      const { knee, best } = kneeOf(SWEEP_POOLS, byPool)
      cells.push({ ...combo, cmd: cmd.toUpperCase(), byPool, direct: samples.agg(`${comboLabel(combo)}|${cmd}|direct`), tw: samples.agg(`${comboLabel(combo)}|${cmd}|twemproxy`), knee, best })
    }
  }
  const how = `median of ${SWEEP_ROUNDS} round(s), each load's rounds run back to back with every pool size in turn (order rotated), ${SWEEP_REQUESTS} requests (×${PIPELINED_FACTOR} when pipelined, at least ${MIN_PER_CLIENT} per client)`
  book.tables.push({
    title: `(b) saturation sweep: respool ops/s by --pool-size — ${how}`,
    headers: ['load', 'cmd', ...SWEEP_POOLS.map((p) => `pool ${p}`), 'direct', `twemproxy(${TW_CONNECTIONS})`, 'best ×direct', 'knee'],
    rows: cells.map((c) => [
      `c=${c.clients} P=${c.pipeline}`, c.cmd, ...SWEEP_POOLS.map((p) => fmtInt(c.byPool[p]?.rps ?? NaN)),
      fmtInt(c.direct?.rps ?? NaN), fmtInt(c.tw?.rps ?? NaN), fmtRatio(c.best / (c.direct?.rps ?? NaN)), c.knee === null ? '—' : `pool ${c.knee}`
    ]),
    notes: ['knee = smallest --pool-size whose median ops/s is within 5% of the best pool size for that row (beyond it, more connections add < 5%); read it with the table of connections used below: a pool size whose extra connections were never used cannot make a difference',
      'every respool run is a fresh process warmed up with the same load; direct and twemproxy run throughout',
      'p50/p99 and CPU for every cell are in the JSON file']
  })
  book.tables.push({
    title: `(b) saturation sweep: respool's upstream connections used/open by --pool-size — same runs as above`,
    headers: ['load', ...SWEEP_POOLS.map((p) => `pool ${p}`)],
    // One redis-benchmark run carries every test, so the counts are per load, not per command.
    rows: combos.map((combo) => [comboLabel(combo), ...SWEEP_POOLS.map((p) => fmtUpstream(samples.agg(`${comboLabel(combo)}|${TESTS[0]}|pool${p}`)?.upstream ?? null))]),
    notes: [UPSTREAM_NOTE, `one redis-benchmark run carries all of ${TESTS.join(', ')}, so the counts are for the whole run`]
  })
  return cells
}

export interface BigRow {
  pipeline: number
  cmd: string
  byPool: Record<number, Agg | null>
  direct: Agg | null
  ratio: number
  /** Whether the larger pool used more connections than the smaller one has: otherwise both runs compared the same thing. */
  tested: boolean | null
  verdict: string
}

export async function scenarioBig (redis: Server, book: RunBook): Promise<BigRow[]> {
  // Load by load, rounds back to back, order rotated; a fresh respool for each run, warmed up with
  // the same load, so the connections on redis-server are that run's. At -P 1 respool needs only a
  // few lanes, whatever the pool size; -P 16 keeps enough commands in flight to need the large pool.
  const samples = new SampleBook()
  const [small, large] = [BIG_POOLS[0], BIG_POOLS[BIG_POOLS.length - 1]]
  for (const [pi, pipeline] of BIG_PIPELINES.entries()) {
    const shape = { clients: BIG_CLIENTS, pipeline }
    const args = { ...shape, requests: requestsFor(pipeline, REQUESTS, BIG_CLIENTS), tests: TESTS }
    for (let r = 0; r < ROUNDS; r++) {
      for (const pool of book.roundOrder('b-big', r, comboLabel(shape), pi, [null, ...BIG_POOLS], (p) => p === null ? 'direct' : `respool(${p})`)) {
        const t = pool === null ? redis : await startRespool(redis.port, { poolSize: pool })
        try {
          if (t !== redis || (r === 0 && pi === 0)) await warmUp(t, shape)
          const run = await book.measure(t, args, { scenario: 'b', poolSize: pool ?? undefined })
          for (const cmd of TESTS) {
            const s = sampleOf(run, cmd)
            if (s !== null) samples.add(`${pipeline}|${cmd}|${pool ?? 'direct'}`, s)
          }
          progress(`(b) ${comboLabel(shape)} round ${r + 1}/${ROUNDS} ${t.name}: ${runSummary(run)}`)
        } finally {
          if (t !== redis) await book.stopAll('b', [t])
        }
      }
    }
  }
  const rows: BigRow[] = BIG_PIPELINES.flatMap((pipeline) => TESTS.map((cmd) => {
    const byPool: Record<number, Agg | null> = {}
    for (const p of BIG_POOLS) byPool[p] = samples.agg(`${pipeline}|${cmd}|${p}`)
    const ratio = (byPool[small]?.rps ?? NaN) / (byPool[large]?.rps ?? NaN)
    const largeUsed = byPool[large]?.upstream?.usedMax ?? null
    const tested = largeUsed === null ? null : largeUsed > small
    const verdict = !Number.isFinite(ratio)
      ? '—'
      : tested === false
        ? `not tested: pool ${large} used ≤ ${small} connections`
        : `${ratio >= 0.9 ? 'met' : 'not met'}${tested === null ? ' (connections used unknown)' : ''}`
    return { pipeline, cmd: cmd.toUpperCase(), byPool, direct: samples.agg(`${pipeline}|${cmd}|direct`), ratio, tested, verdict }
  }))
  book.tables.push({
    title: `(b) ${BIG_CLIENTS} clients over ${small} vs ${large} upstream connections — median of ${ROUNDS} round(s), target order rotated each round, ${REQUESTS} requests (×${PIPELINED_FACTOR} when pipelined, at least ${MIN_PER_CLIENT} per client)`,
    headers: ['load', 'cmd', ...BIG_POOLS.flatMap((p) => [`pool ${p} ops/s`, `pool ${p} p99 ms`]), 'direct ops/s', `${small}/${large}`, ...BIG_POOLS.map((p) => `pool ${p} upstream used/open`), 'target ≥ 0.9×'],
    rows: rows.map((r) => [
      comboLabel({ clients: BIG_CLIENTS, pipeline: r.pipeline }), r.cmd, ...BIG_POOLS.flatMap((p) => [fmtInt(r.byPool[p]?.rps ?? NaN), fmtMs(r.byPool[p]?.p99 ?? NaN)]),
      fmtInt(r.direct?.rps ?? NaN), fmtRatio(r.ratio), ...BIG_POOLS.map((p) => fmtUpstream(r.byPool[p]?.upstream ?? null)), r.verdict
    ]),
    notes: [UPSTREAM_NOTE,
      `the target compares ${small} against ${large} connections only where respool(${large}) used more than ${small}: where it did not, both runs carried the load on the same few connections and the ratio is noise`,
      'every respool run is a fresh process warmed up with the same load']
  })
  return rows
}
