/**
 * End-to-end benchmark: direct Redis vs respool vs twemproxy, same machine, same run, same
 * redis-benchmark arguments, interleaved rounds with the target order rotated, medians of rounds,
 * and next to every respool figure the upstream connections it used and had open.
 *
 *   npm run bench                      # build, then node dist/benchmarks/proxy.bench.js
 *   QUICK=1 npm run bench              # a small run (≤ 2 minutes)
 *   SWEEP=1 npm run bench              # the full pool-size sweep (more rounds, more requests)
 *   SCENARIOS=a,d npm run bench        # only some scenarios (a b c d e w n)
 *
 * Scenarios (see benchmarks/README.md):
 *   a  SET/GET at 50 clients -P 1, 50 clients -P 16, 500 clients -P 1
 *   b  saturation sweep: clients × --pool-size × pipeline, load by load; and 1000 clients over 8 vs 64
 *      connections at -P 1 and -P 16
 *   c  pinning: BRPOP workers + LPUSH producers + MULTI/EXEC loops, pool smaller than the workers
 *   d  one-hop latency at low load: 1 client, -P 1
 *   e  memory: RSS with 10,000 idle clients; RSS growth while a 256 MB value passes through
 *   w  waiters: 1,000 and 10,000 clients parked in BLPOP (respool --park-blocking yes), half of them
 *      woken by tokens pushed straight to Redis; wake latency, wrong timeouts, connections on Redis
 *      (lib/waiters.ts; also on its own: npm run bench:waiters)
 *   n  neighbour latency: a small GET's latency while another client reads huge values, and PING/GET
 *      latency while 3 clients stop reading (or read at 100 KB/s) with thousands of 512 KB GETs
 *      pipelined; proxy RSS and Redis used_memory meanwhile (lib/neighbours.ts)
 *
 * Output: tables on stdout, progress on stderr, JSON + SVG + Markdown in benchmarks/results/.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { mkdirSync, writeFileSync, copyFileSync } from 'node:fs'
import { loadavg, release, totalmem } from 'node:os'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import {
  RESULTS_DIR, WORKERS_DIR, commandOutput, elapsedSeconds, fdLimit, hasCommand, installCleanup, median, memoryKiB, progress,
  revisionNote, startRedis, startRespool, startTwemproxy, stopChild, track, type Server
} from './lib/harness.js'
import { RedisAdmin, type UpstreamUse } from './lib/redis-admin.js'
import { bigValueRoundTrip, type BigValueResult } from './lib/big-value.js'
import { scenarioWaiters } from './lib/waiters.js'
import { machineMeta } from './lib/standalone.js'
import { scenarioNeighbours } from './lib/neighbours.js'
import { fmtInt, fmtMiB, fmtMs, fmtPct, fmtRatio, fmtUs, markdownTable, textTable, type Table } from './lib/table.js'
import { PALETTE, barPanel, linePanel, page, type LineSeries } from './lib/svg.js'
import {
  ALSO_NODE_ARGS, ALSO_WORKERS, A_COMBOS, BIG_CLIENTS, BIG_PIPELINES, BIG_POOLS, BIG_VALUE_MB, BRPOP_TIMEOUT,
  DATA_SIZE, FULL_SWEEP, IDLE_CLIENTS, KEYSPACE, LAT_REQUESTS, LAT_ROUNDS, MIN_PER_CLIENT, NEIGH_CONFIG, PIN_POOLS, PIN_PRODUCERS,
  PIN_RATE, PIN_ROUNDS, PIN_SECONDS, PIN_TX, PIN_WATCH, PIN_WORKERS, PIPELINED_FACTOR, POOL_SIZE, QUICK, REQUESTS, ROUNDS,
  SCENARIOS, SWEEP_CLIENTS, SWEEP_PIPELINES, SWEEP_POOLS, SWEEP_REQUESTS, SWEEP_ROUNDS, TESTS, TW_CONNECTIONS, TW_MATCHED,
  WAITERS_CONFIG, paramsRecord, requestsFor
} from './lib/proxy-params.js'
import { RunBook, UPSTREAM_NOTE, comboLabel, dedupe, runSummary, warmUp } from './lib/proxy-book.js'
import { SampleBook, fmtUpstream, sampleOf, upstreamRange, type Agg, type UpstreamRange } from './lib/proxy-samples.js'

// ---------------------------------------------------------------------------------------------
// (a) SET/GET at three load shapes, and (d) one-hop latency: direct, respool, twemproxy

interface ARow { combo: string, clients: number, pipeline: number, cmd: string, target: string, agg: Agg, ratioDirect: number, ratioTw: number }

/**
 * The most upstream connections named respool that Redis may see: --pool-size, times the
 * respool processes alive at once (the ALSO_* variants run beside the default one).
 */
function respoolBound (targets: Server[]): number {
  return POOL_SIZE * Math.max(1, targets.filter((t) => t.kind === 'respool').length)
}

async function coreTargets (redis: Server): Promise<Server[]> {
  const out: Server[] = [redis]
  out.push(await startRespool(redis.port, { poolSize: POOL_SIZE }))
  // Variants measured in the same rounds: other Node.js flags, several processes.
  if (ALSO_NODE_ARGS.length > 0) out.push(await startRespool(redis.port, { poolSize: POOL_SIZE, nodeArgs: ALSO_NODE_ARGS, name: `respool(${POOL_SIZE}) ${ALSO_NODE_ARGS.join(' ')}` }))
  if (ALSO_WORKERS > 1) out.push(await startRespool(redis.port, { poolSize: POOL_SIZE, workers: ALSO_WORKERS }))
  if (hasCommand('nutcracker')) {
    out.push(await startTwemproxy(redis.port, { serverConnections: TW_CONNECTIONS }))
    if (TW_MATCHED && POOL_SIZE !== TW_CONNECTIONS) out.push(await startTwemproxy(redis.port, { serverConnections: POOL_SIZE }))
  }
  return out
}

async function scenarioA (targets: Server[], book: RunBook): Promise<ARow[]> {
  const samples = new SampleBook()
  for (const t of targets) await warmUp(t)
  for (let r = 0; r < ROUNDS; r++) {
    for (const [ci, combo] of A_COMBOS.entries()) {
      for (const t of book.roundOrder('a', r, comboLabel(combo), ci, targets, (x) => x.name)) {
        const args = { clients: combo.clients, pipeline: combo.pipeline, requests: requestsFor(combo.pipeline, REQUESTS, combo.clients), tests: TESTS }
        const run = await book.measure(t, args, { scenario: 'a', poolSize: t.kind === 'respool' ? respoolBound(targets) : undefined })
        for (const cmd of TESTS) {
          const s = sampleOf(run, cmd)
          if (s !== null) samples.add(`${comboLabel(combo)}|${cmd}|${t.name}`, s)
        }
        progress(`(a) round ${r + 1}/${ROUNDS} ${comboLabel(combo)} ${t.name}: ${runSummary(run)}`)
      }
    }
  }
  const twName = `twemproxy(${TW_CONNECTIONS})`
  const rows: ARow[] = []
  for (const combo of A_COMBOS) {
    for (const cmd of TESTS) {
      const key = (name: string): string => `${comboLabel(combo)}|${cmd}|${name}`
      const direct = samples.agg(key('direct'))
      const tw = samples.agg(key(twName))
      for (const t of targets) {
        const agg = samples.agg(key(t.name))
        if (agg === null) continue
        rows.push({
          combo: comboLabel(combo),
          clients: combo.clients,
          pipeline: combo.pipeline,
          cmd: cmd.toUpperCase(),
          target: t.name,
          agg,
          ratioDirect: direct === null ? NaN : agg.rps / direct.rps,
          ratioTw: tw === null ? NaN : agg.rps / tw.rps
        })
      }
    }
  }
  book.tables.push({
    title: `(a) SET/GET throughput and latency — median of ${ROUNDS} interleaved round(s), target order rotated each round, ${REQUESTS} requests (×${PIPELINED_FACTOR} when pipelined, at least ${MIN_PER_CLIENT} per client), -d ${DATA_SIZE} -r ${KEYSPACE}`,
    headers: ['load', 'cmd', 'target', 'ops/s', 'p50 ms', 'p99 ms', 'CPU', 'upstream used/open', '×direct', `×${twName}`],
    rows: rows.map((r) => [r.combo, r.cmd, r.target, fmtInt(r.agg.rps), fmtMs(r.agg.p50), fmtMs(r.agg.p99), fmtPct(r.agg.cpu), fmtUpstream(r.agg.upstream), fmtRatio(r.ratioDirect), fmtRatio(r.ratioTw)]),
    notes: [
      UPSTREAM_NOTE,
      'ratios are ops/s of the row divided by ops/s of direct Redis / of twemproxy with server_connections: 1 (its default and the setting its docs require for read-your-writes)',
      'CPU = CPU time of the measured process (redis-server for direct, the proxy otherwise) during the run, as a share of one core',
      `respool runs with --pool-size ${POOL_SIZE}; twemproxy(${POOL_SIZE}) is shown for equal upstream connections but does not keep read-your-writes`
    ]
  })
  return rows
}

interface LatRow { cmd: string, target: string, agg: Agg, overheadP50Us: number, overheadP99Us: number }

async function scenarioD (targets: Server[], book: RunBook): Promise<LatRow[]> {
  const samples = new SampleBook()
  for (let r = 0; r < LAT_ROUNDS; r++) {
    for (const t of book.roundOrder('d', r, 'c=1 P=1', 0, targets, (x) => x.name)) {
      const run = await book.measure(t, { clients: 1, pipeline: 1, requests: LAT_REQUESTS, tests: TESTS }, { scenario: 'd', poolSize: t.kind === 'respool' ? respoolBound(targets) : undefined })
      for (const cmd of TESTS) {
        const s = sampleOf(run, cmd)
        if (s !== null) samples.add(`${cmd}|${t.name}`, s)
      }
      progress(`(d) round ${r + 1}/${LAT_ROUNDS} c=1 P=1 ${t.name}: ${runSummary(run)}`)
    }
  }
  const rows: LatRow[] = []
  for (const cmd of TESTS) {
    const direct = samples.agg(`${cmd}|direct`)
    for (const t of targets) {
      const agg = samples.agg(`${cmd}|${t.name}`)
      if (agg === null) continue
      rows.push({
        cmd: cmd.toUpperCase(),
        target: t.name,
        agg,
        overheadP50Us: direct === null ? NaN : (agg.p50 - direct.p50) * 1000,
        overheadP99Us: direct === null ? NaN : (agg.p99 - direct.p99) * 1000
      })
    }
  }
  book.tables.push({
    title: `(d) one hop at low load: 1 client, -P 1, ${LAT_REQUESTS} requests — median of ${LAT_ROUNDS} round(s), target order rotated each round`,
    headers: ['cmd', 'target', 'ops/s', 'p50 µs', 'p99 µs', 'avg µs', 'p50 − direct', 'p99 − direct', 'upstream used/open'],
    rows: rows.map((r) => [r.cmd, r.target, fmtInt(r.agg.rps), fmtInt(r.agg.p50 * 1000), fmtInt(r.agg.p99 * 1000), fmtInt(r.agg.avg * 1000), fmtUs(r.overheadP50Us), fmtUs(r.overheadP99Us), fmtUpstream(r.agg.upstream)]),
    notes: ['redis-benchmark prints latencies in ms with 3 decimals, so the resolution is 1 µs', UPSTREAM_NOTE]
  })
  return rows
}

// ---------------------------------------------------------------------------------------------
// (b) saturation sweep, and 1000 clients over 8 vs 64 upstream connections

interface SweepCell { clients: number, pipeline: number, cmd: string, byPool: Record<number, Agg | null>, direct: Agg | null, tw: Agg | null, knee: number | null, best: number }

function kneeOf (pools: number[], byPool: Record<number, Agg | null>): { knee: number | null, best: number } {
  const vals = pools.map((p) => byPool[p]?.rps ?? NaN)
  const best = Math.max(...vals.filter((v) => Number.isFinite(v)))
  if (!Number.isFinite(best)) return { knee: null, best: NaN }
  const i = vals.findIndex((v) => v >= 0.95 * best)
  return { knee: i === -1 ? null : pools[i], best }
}

async function scenarioSweep (redis: Server, book: RunBook, tw: Server | null): Promise<SweepCell[]> {
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

interface BigRow {
  pipeline: number
  cmd: string
  byPool: Record<number, Agg | null>
  direct: Agg | null
  ratio: number
  /** Whether the larger pool used more connections than the smaller one has: otherwise both runs compared the same thing. */
  tested: boolean | null
  verdict: string
}

async function scenarioBig (redis: Server, book: RunBook): Promise<BigRow[]> {
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

// ---------------------------------------------------------------------------------------------
// (c) pinning workload

interface PinResult {
  seconds: number
  sent: number
  pushedPerSec: number
  consumedPerSec: number
  txPerSec: number
  nils: number
  leftover: number
  queueWaitUs: Dist
  brpopUs: Dist
  txUs: Dist
  watchPerSec: number
  watchUs: Dist
  watchAborts: number
  lpushUs: Dist
  errors: Record<string, number>
  aborted?: string
}
interface Dist { n: number, p50: number, p90: number, p99: number, max: number }
interface PinRow { target: string, poolSize: number | null, maxPins: number | null, rounds: PinResult[], med: Record<string, number>, errors: Record<string, number>, upstream: UpstreamRange | null, upstreamRounds: UpstreamUse[] }

function pinConfig (port: number): Record<string, number | string> {
  return { port, workers: PIN_WORKERS, producers: PIN_PRODUCERS, txClients: PIN_TX, watchClients: PIN_WATCH, rate: PIN_RATE, durationMs: PIN_SECONDS * 1000, brpopTimeout: BRPOP_TIMEOUT, queue: 'bench:queue' }
}

async function runPinWorkload (port: number): Promise<PinResult> {
  const cfg = pinConfig(port) as { durationMs: number }
  const child = track(spawn(process.execPath, [join(WORKERS_DIR, 'pinning-workload.js'), JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] }))
  let out = ''
  let err = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { err += d.toString() })
  const timer = setTimeout(() => { child.kill('SIGKILL') }, cfg.durationMs + 40000)
  await once(child, 'exit')
  clearTimeout(timer)
  const line = out.split('\n').find((l) => l.startsWith('RESULT '))
  if (line === undefined) throw new Error(`pinning workload printed no result: ${(out + err).slice(-1000)}`)
  return JSON.parse(line.slice(7)) as PinResult
}

async function scenarioPin (redis: Server, book: RunBook): Promise<PinRow[]> {
  // One respool at a time, so CLIENT LIST on the shared redis-server counts only its connections.
  const servers: Array<{ name: string, pool: number | null }> = [{ name: redis.name, pool: null }, ...PIN_POOLS.map((pool) => ({ name: `respool(${pool})`, pool }))]
  const results = new Map<string, PinResult[]>()
  const ups = new Map<string, UpstreamUse[]>()
  for (let r = 0; r < PIN_ROUNDS; r++) {
    for (const { name, pool } of book.roundOrder('c', r, 'pinning', 0, servers, (x) => x.name)) {
      const s = pool === null ? redis : await startRespool(redis.port, { poolSize: pool })
      try {
        const watch = s.kind === 'respool' ? book.admin.watch(100) : null
        const res = await runPinWorkload(s.port)
        const up = watch === null ? null : await watch.stop()
        if (up !== null) ups.set(name, [...(ups.get(name) ?? []), up])
        if (up !== null && pool !== null && up.open > pool) {
          book.anomalies.push({ scenario: 'c', target: name, message: `${up.open} upstream connections named respool during the pinning workload, more than --pool-size ${pool}` })
        }
        if (res.aborted !== undefined) book.anomalies.push({ scenario: 'c', target: name, message: `pinning workload aborted: ${res.aborted}` })
        else if (res.consumedPerSec < 0.9 * res.pushedPerSec || res.nils > 0) {
          book.anomalies.push({
            scenario: 'c',
            target: name,
            message: `round ${r + 1}: BRPOP workers popped ${fmtInt(res.consumedPerSec)}/s of ${fmtInt(res.pushedPerSec)}/s pushed, ${res.nils} BRPOP timed out (nil), ${res.leftover} items left in the queue; WATCH…EXEC ran ${fmtInt(res.watchPerSec)}/s`,
            reproduce: pool === null ? undefined : `node bin/respool.js --port 6380 --upstream redis://127.0.0.1:6379 --pool-size ${pool} --log-level warn & node dist/benchmarks/workers/pinning-workload.js '${JSON.stringify(pinConfig(6380))}'`
          })
        }
        const list = results.get(name) ?? []
        list.push(res)
        results.set(name, list)
        const errs = Object.values(res.errors ?? {}).reduce((a, b) => a + b, 0)
        progress(`(c) round ${r + 1}/${PIN_ROUNDS} ${name}: consumed ${fmtInt(res.consumedPerSec)}/s wait p99 ${fmtUs(res.queueWaitUs?.p99 ?? NaN)}, ` +
          `BRPOP p99 ${fmtUs(res.brpopUs?.p99 ?? NaN)}, MULTI/EXEC ${fmtInt(res.txPerSec)}/s p99 ${fmtUs(res.txUs?.p99 ?? NaN)}, WATCH…EXEC ${fmtInt(res.watchPerSec)}/s p99 ${fmtUs(res.watchUs?.p99 ?? NaN)}, nil ${res.nils}, errors ${errs}${up !== null ? `, upstream used/open ${up.used ?? '?'}/${up.open}` : ''}`)
      } finally {
        if (s !== redis) await book.stopAll('c', [s])
      }
    }
  }
  const rows: PinRow[] = []
  for (const { name, pool } of servers) {
    const rs = (results.get(name) ?? []).filter((x) => x.aborted === undefined)
    const m = (f: (x: PinResult) => number): number => median(rs.map(f))
    const errors: Record<string, number> = {}
    for (const x of results.get(name) ?? []) for (const [k, v] of Object.entries(x.errors ?? {})) errors[k] = (errors[k] ?? 0) + v
    for (const [k, v] of Object.entries(errors)) book.anomalies.push({ scenario: 'c', target: name, message: `${v}× ${k}` })
    rows.push({
      target: name,
      poolSize: pool,
      maxPins: pool === null ? null : Math.max(1, pool - 1),
      rounds: results.get(name) ?? [],
      med: {
        pushedPerSec: m((x) => x.pushedPerSec),
        consumedPerSec: m((x) => x.consumedPerSec),
        waitP50: m((x) => x.queueWaitUs.p50),
        waitP99: m((x) => x.queueWaitUs.p99),
        brpopP50: m((x) => x.brpopUs.p50),
        brpopP99: m((x) => x.brpopUs.p99),
        txPerSec: m((x) => x.txPerSec),
        txP50: m((x) => x.txUs.p50),
        txP99: m((x) => x.txUs.p99),
        watchPerSec: m((x) => x.watchPerSec),
        watchP50: m((x) => x.watchUs.p50),
        watchP99: m((x) => x.watchUs.p99),
        nils: m((x) => x.nils),
        leftover: m((x) => x.leftover)
      },
      errors,
      upstream: upstreamRange(ups.get(name) ?? []),
      upstreamRounds: ups.get(name) ?? []
    })
  }
  const ms = (us: number): string => Number.isFinite(us) ? (us / 1000).toFixed(2) : '—'
  book.tables.push({
    title: `(c) pinning: ${PIN_WORKERS} BRPOP workers (BRPOP q ${BRPOP_TIMEOUT}), ${PIN_PRODUCERS} producers LPUSHing ${PIN_RATE}/s, ${PIN_TX} pipelined MULTI/INCR/EXEC loops, ${PIN_WATCH} WATCH/GET/MULTI/SET/EXEC loops, ${PIN_SECONDS} s — median of ${PIN_ROUNDS} round(s), target order rotated each round`,
    headers: ['target', 'pins', 'popped/s', 'queue wait p50 ms', 'p99 ms', 'BRPOP rtt p50 ms', 'p99 ms', 'MULTI/EXEC tx/s', 'p50 ms', 'p99 ms', 'WATCH…EXEC tx/s', 'p50 ms', 'p99 ms', 'nil', 'errors', 'upstream used/open'],
    rows: rows.map((r) => [
      r.target, r.maxPins === null ? '—' : String(r.maxPins), fmtInt(r.med.consumedPerSec), ms(r.med.waitP50), ms(r.med.waitP99),
      ms(r.med.brpopP50), ms(r.med.brpopP99), fmtInt(r.med.txPerSec), ms(r.med.txP50), ms(r.med.txP99),
      fmtInt(r.med.watchPerSec), ms(r.med.watchP50), ms(r.med.watchP99), fmtInt(r.med.nils),
      String(Object.values(r.errors).reduce((a, b) => a + b, 0)), fmtUpstream(r.upstream)
    ]),
    notes: [`producers push ${PIN_RATE} items/s open-loop (pushed/s in the JSON); popped/s below that means consumers fell behind`,
      'queue wait = LPUSH sent → BRPOP reply received for the same item (client clock); BRPOP rtt includes waiting for a pin and for an item',
      'MULTI/EXEC is sent in one write (ioredis pipelines it): respool runs such a complete transaction on a shared lane, no pin; WATCH…EXEC takes 3 round trips on a pinned connection',
      `pins = --max-pins (pool size − 1); ${PIN_WORKERS + PIN_WATCH} clients want a pin at once`,
      'upstream used/open: used = connections that sent commands during the workload (kernel byte counters, matched to CLIENT LIST), open = most named respool open at once']
  })
  return rows
}

// ---------------------------------------------------------------------------------------------
// (e) memory

/**
 * perClientKiB is the growth from the fresh process divided by the clients; marginalKiB is the
 * growth while the second half connected, divided by those clients. The first includes what a
 * process grows by once, whatever the count (respool: V8's young generation, which starts at
 * 1 MB and grows to its cap, 2 × 4 MB as bin/respool.js starts it, under the first burst of
 * allocation); the second is what one more idle client costs.
 */
interface IdleRow { target: string, clients: number, connected: number, ponged: number, errors: Record<string, number>, baseKiB: number, midKiB: number, loadedKiB: number, afterKiB: number, perClientKiB: number, marginalKiB: number, settleMs: number }

async function rssMedian (pid: number, n = 5, gapMs = 100): Promise<number> {
  const xs: number[] = []
  for (let i = 0; i < n; i++) {
    xs.push(memoryKiB(pid)?.rss ?? NaN)
    await delay(gapMs)
  }
  return median(xs)
}

/** Opens `count` idle clients (each sends one PING) in a child process; resolves once they are all answered or failed. */
async function openIdle (port: number, count: number): Promise<{ child: ReturnType<typeof spawn>, info: { connected: number, ponged: number, errors: Record<string, number> } }> {
  const child = track(spawn(process.execPath, [join(WORKERS_DIR, 'idle-clients.js'), String(port), String(count)], { stdio: ['pipe', 'pipe', 'pipe'] }))
  let out = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
  const deadline = performance.now() + 180000
  while (!out.includes('READY') && !out.includes('FAILED') && child.exitCode === null && performance.now() < deadline) await delay(50)
  const line = out.split('\n').find((l) => l.startsWith('READY '))
  const info = line === undefined ? { connected: 0, ponged: 0, errors: { [out.slice(-200) || 'no READY line']: 1 } } : JSON.parse(line.slice(6)) as { connected: number, ponged: number, errors: Record<string, number> }
  return { child, info }
}

async function idleClients (target: Server, count: number): Promise<IdleRow> {
  await delay(500)
  const baseKiB = await rssMedian(target.pid)
  const t0 = performance.now()
  // In two halves: the RSS between them separates what one more client costs from what the
  // process grows by once.
  const first = await openIdle(target.port, Math.floor(count / 2))
  await delay(1000)
  const midKiB = await rssMedian(target.pid)
  const second = await openIdle(target.port, count - Math.floor(count / 2))
  const settleMs = performance.now() - t0
  await delay(1000)
  const loadedKiB = await rssMedian(target.pid)
  await stopChild(first.child)
  await stopChild(second.child)
  await delay(1500)
  const afterKiB = await rssMedian(target.pid, 3)
  const errors: Record<string, number> = { ...first.info.errors }
  for (const [k, v] of Object.entries(second.info.errors)) errors[k] = (errors[k] ?? 0) + v
  const ponged = first.info.ponged + second.info.ponged
  return {
    target: target.name,
    clients: count,
    connected: first.info.connected + second.info.connected,
    ponged,
    errors,
    baseKiB,
    midKiB,
    loadedKiB,
    afterKiB,
    perClientKiB: (loadedKiB - baseKiB) / Math.max(1, ponged),
    marginalKiB: (loadedKiB - midKiB) / Math.max(1, second.info.ponged),
    settleMs
  }
}

interface MemResult { idle: IdleRow[], big: Array<BigValueResult & { target: string }>, fdLimit: { soft: number, hard: number } }

async function scenarioMemory (redis: Server, book: RunBook): Promise<MemResult> {
  const limit = fdLimit()
  const res: MemResult = { idle: [], big: [], fdLimit: limit }
  let idleCount = IDLE_CLIENTS
  if (Math.max(limit.soft, limit.hard) < idleCount + 200) {
    idleCount = Math.max(100, Math.max(limit.soft, limit.hard) - 500)
    book.anomalies.push({ scenario: 'e', target: '-', message: `open-files limit ${limit.soft}/${limit.hard} too low for ${IDLE_CLIENTS} idle clients; used ${idleCount}` })
  }
  const maxClients = ['--max-clients', String(Math.max(10000, idleCount + 100))]
  // Idle clients: a fresh process each, so the baseline is the same for all.
  const idleTargets: Array<() => Promise<Server>> = [
    async () => await startRespool(redis.port, { poolSize: POOL_SIZE, extra: maxClients }),
    ...(hasCommand('nutcracker') ? [async () => await startTwemproxy(redis.port, { serverConnections: TW_CONNECTIONS })] : [])
  ]
  for (const start of idleTargets) {
    const s = await start()
    try {
      const row = await idleClients(s, idleCount)
      res.idle.push(row)
      if (row.ponged < idleCount) book.anomalies.push({ scenario: 'e', target: s.name, message: `only ${row.ponged}/${idleCount} idle clients got PONG: ${JSON.stringify(row.errors)}` })
      progress(`(e) ${idleCount} idle clients on ${s.name}: RSS ${fmtMiB(row.baseKiB)} → ${fmtMiB(row.midKiB)} (half) → ${fmtMiB(row.loadedKiB)} (${row.perClientKiB.toFixed(2)} KB/client from start, ${row.marginalKiB.toFixed(2)} KB per further client), after disconnect ${fmtMiB(row.afterKiB)}`)
    } finally {
      await book.stopAll('e', [s])
    }
  }
  const directRow = await idleClients(redis, idleCount)
  res.idle.push(directRow)
  progress(`(e) ${idleCount} idle clients on redis-server (reference): ${directRow.perClientKiB.toFixed(2)} KB/client from start, ${directRow.marginalKiB.toFixed(2)} per further client`)

  // A large value through a fresh proxy.
  // respool runs with its default settings (--max-output-buffer 1024 MB, room for the reply).
  const size = BIG_VALUE_MB * 1024 * 1024
  const bigTargets: Array<{ start: () => Promise<Server>, set: boolean, label: string }> = [
    { start: async () => await startRespool(redis.port, { poolSize: POOL_SIZE }), set: true, label: `respool(${POOL_SIZE}), SET then GET` },
    // GET alone on a fresh process (the value is still in Redis), so its peak is not mixed with the SET's.
    { start: async () => await startRespool(redis.port, { poolSize: POOL_SIZE }), set: false, label: `respool(${POOL_SIZE}), GET only (fresh process)` },
    ...(hasCommand('nutcracker') ? [{ start: async () => await startTwemproxy(redis.port, { serverConnections: TW_CONNECTIONS }), set: true, label: `twemproxy(${TW_CONNECTIONS}), SET then GET` }] : [])
  ]
  for (const bt of bigTargets) {
    const s = await bt.start()
    try {
      await delay(500)
      const r = await bigValueRoundTrip(s.port, s.pid, size, 'bench:big', 180000, { set: bt.set, get: true })
      res.big.push({ ...r, target: bt.label })
      if (r.error !== undefined || !r.getOk || (bt.set && r.setReply !== '+OK')) {
        book.anomalies.push({
          scenario: 'e',
          target: bt.label,
          message: `${BIG_VALUE_MB} MB value: SET reply ${JSON.stringify(r.setReply.slice(0, 120))}, GET ${r.getOk ? 'ok' : 'failed'} (${r.getBytes} bytes)${r.error !== undefined ? `: ${r.error}` : ''}`,
          reproduce: s.kind === 'respool' ? `redis-server --port 6379 --save '' & node bin/respool.js --port 6380 --upstream redis://127.0.0.1:6379 --pool-size ${POOL_SIZE} --log-level warn & then SET bench:big <${size} bytes> and GET bench:big on 127.0.0.1:6380, reading the reply as a stream (benchmarks/lib/big-value.ts)` : undefined
        })
      }
      progress(`(e) ${BIG_VALUE_MB} MB value through ${bt.label}: SET ${r.setReply.slice(0, 40)} in ${Math.round(r.setMs)} ms (peak +${fmtMiB(r.setPeakRssKiB - r.baselineRssKiB)}), GET ${r.getOk ? 'ok' : 'FAILED'} in ${Math.round(r.getMs)} ms (peak +${fmtMiB(r.getPeakRssKiB - r.baselineRssKiB)}), VmHWM +${fmtMiB(r.hwmKiB - r.baselineRssKiB)}`)
    } finally {
      await book.stopAll('e', [s])
      await delay(300)
    }
  }
  try { await book.admin.redis.del('bench:big') } catch { /* best effort */ }

  book.tables.push({
    title: `(e) memory with ${idleCount} idle clients (each sent one PING) — RSS from /proc/<pid>/status`,
    headers: ['target', 'clients answered', 'RSS before', 'RSS with half', 'RSS with all', 'KB per client from start', 'KB per further client', 'RSS after they left', 'connect time'],
    rows: res.idle.map((r) => [r.target === 'direct' ? 'redis-server (reference)' : r.target, `${r.ponged}/${r.clients}`, fmtMiB(r.baseKiB), fmtMiB(r.midKiB), fmtMiB(r.loadedKiB), r.perClientKiB.toFixed(2), r.marginalKiB.toFixed(2), fmtMiB(r.afterKiB), `${(r.settleMs / 1000).toFixed(1)} s`]),
    notes: ['KB = KiB; per client from start = (RSS with all − RSS before) / clients answered; per further client = (RSS with all − RSS with half) / clients answered in the second half',
      'from start includes what the process grows by once (respool: V8\'s young generation growing from 1 MB to its cap, 2 × 4 MB as bin/respool.js starts it, 2 × 16 MB uncapped, under the first burst of allocation); per further client is what one more idle client costs', `respool ran with --max-clients ${maxClients[1]}; twemproxy with its default 16 KB mbufs (its docs suggest -m 512…1024 for many connections)`]
  })
  book.tables.push({
    title: `(e) RSS growth while a ${BIG_VALUE_MB} MB value passes through (SET streamed in 64 KB chunks, then GET read as a stream)`,
    headers: ['target', 'RSS before', 'peak during SET', 'peak during GET', 'VmHWM − before', 'SET ms', 'GET ms', 'result'],
    rows: res.big.map((r) => [r.target, fmtMiB(r.baselineRssKiB), r.setReply === '(not run)' ? '—' : `+${fmtMiB(r.setPeakRssKiB - r.baselineRssKiB)}`, `+${fmtMiB(r.getPeakRssKiB - r.baselineRssKiB)}`, `+${fmtMiB(r.hwmKiB - r.baselineRssKiB)}`,
      fmtInt(r.setMs), fmtInt(r.getMs), r.error !== undefined ? `error: ${r.error}` : `${r.setReply === '(not run)' ? '' : `SET ${r.setReply}; `}GET ${r.getOk ? `${r.getBytes} bytes ok` : 'failed'}`]),
    notes: ['peaks are RSS sampled every 10 ms minus RSS before; VmHWM is the kernel\'s own peak of the fresh process',
      `respool runs with its default settings (--max-output-buffer 1024 MB); each row is a fresh process`]
  })
  return res
}

// ---------------------------------------------------------------------------------------------
// Targets: every figure here is taken from the tables above, in the same run

const kOps = (n: number): string => Number.isFinite(n) ? `${(n / 1000).toFixed(1)} k` : '—'

function targetsTable (a: ARow[] | null, big: BigRow[] | null, mem: MemResult | null): Table | null {
  const rows: string[][] = []
  const respool = `respool(${POOL_SIZE})`
  const twName = `twemproxy(${TW_CONNECTIONS})`
  const find = (combo: string, cmd: string, target: string): ARow | undefined => a?.find((r) => r.combo === combo && r.cmd === cmd && r.target === target)
  const cmds = TESTS.map((t) => t.toUpperCase())
  for (const combo of A_COMBOS) {
    const label = comboLabel(combo)
    const pairs = cmds.map((cmd) => ({ cmd, rp: find(label, cmd, respool), tw: find(label, cmd, twName) }))
    if (pairs.some((p) => p.rp === undefined || p.tw === undefined)) continue
    const ratios = pairs.map((p) => (p.rp?.agg.rps ?? NaN) / (p.tw?.agg.rps ?? NaN))
    rows.push([
      `throughput ≥ 1.0× ${twName}, ${label}`,
      `${pairs.map((p, i) => `${p.cmd} ${fmtRatio(ratios[i])}`).join(', ')} (${pairs.map((p) => kOps(p.rp?.agg.rps ?? NaN)).join(' / ')} vs ${pairs.map((p) => kOps(p.tw?.agg.rps ?? NaN)).join(' / ')} ops/s); ${respool} upstream used/open ${fmtUpstream(pairs[0].rp?.agg.upstream ?? null)}`,
      ratios.every((x) => x >= 1) ? 'met' : 'not met'
    ])
    if (combo.clients === 50 && combo.pipeline === 1) {
      rows.push([
        `p99 at ${label} ≤ ${twName}'s`,
        `${pairs.map((p) => fmtMs(p.rp?.agg.p99 ?? NaN)).join(' / ')} ms vs ${pairs.map((p) => fmtMs(p.tw?.agg.p99 ?? NaN)).join(' / ')} ms (${cmds.join(' / ')})`,
        pairs.every((p) => (p.rp?.agg.p99 ?? NaN) <= (p.tw?.agg.p99 ?? NaN)) ? 'met' : 'not met'
      ])
    }
  }
  if (big !== null && big.length > 0) {
    const [small, large] = [BIG_POOLS[0], BIG_POOLS[BIG_POOLS.length - 1]]
    for (const pipeline of BIG_PIPELINES) {
      const rs = big.filter((r) => r.pipeline === pipeline)
      if (rs.length === 0) continue
      const verdict = rs.some((r) => r.tested === false)
        ? `not tested: respool(${large}) used ≤ ${small} connections`
        : rs.every((r) => r.ratio >= 0.9) ? 'met' : 'not met'
      rows.push([
        `${BIG_CLIENTS} clients -P ${pipeline} over ${small} connections ≥ 0.9× over ${large}`,
        `${rs.map((r) => `${r.cmd} ${fmtRatio(r.ratio)}`).join(', ')}; upstream used/open ${fmtUpstream(rs[0].byPool[small]?.upstream ?? null)} (pool ${small}) vs ${fmtUpstream(rs[0].byPool[large]?.upstream ?? null)} (pool ${large})`,
        verdict
      ])
    }
  }
  const idle = mem?.idle.find((r) => r.target === respool)
  if (idle !== undefined) {
    rows.push([`≤ 10 KB RSS per idle client`, `${idle.perClientKiB.toFixed(2)} KB from start, ${idle.marginalKiB.toFixed(2)} KB per further client (${idle.ponged} clients)`, idle.perClientKiB <= 10 ? 'met' : 'not met'])
  }
  const bigRs = (mem?.big ?? []).filter((r) => r.target.startsWith(`${respool},`))
  if (bigRs.length > 0) {
    const growth = (r: BigValueResult): number => Math.max(r.hwmKiB, r.setPeakRssKiB, r.getPeakRssKiB) - r.baselineRssKiB
    const tw = mem?.big.find((r) => r.target.startsWith(`${twName},`))
    rows.push([
      `RSS grows ≤ 64 MB while a ${BIG_VALUE_MB} MB value passes`,
      bigRs.map((r) => `${r.target.slice(respool.length + 2)}: VmHWM +${fmtMiB(r.hwmKiB - r.baselineRssKiB)}${r.setReply === '(not run)' ? '' : `, sampled peak +${fmtMiB(r.setPeakRssKiB - r.baselineRssKiB)} during SET`}, +${fmtMiB(r.getPeakRssKiB - r.baselineRssKiB)} during GET`).join('; ') +
        (tw !== undefined ? ` (${twName}: VmHWM +${fmtMiB(tw.hwmKiB - tw.baselineRssKiB)})` : ''),
      bigRs.every((r) => r.error === undefined && r.getOk && growth(r) <= 64 * 1024) ? 'met' : 'not met'
    ])
  }
  if (rows.length === 0) return null
  return {
    title: 'Targets — every figure is from the tables below, same run',
    headers: ['target', 'measured', ''],
    rows,
    notes: ['the memory target is judged on the larger of VmHWM (the kernel\'s own peak) and the sampled peaks, each minus RSS before']
  }
}

// ---------------------------------------------------------------------------------------------
// Chart

function chart (a: ARow[] | null, sweep: SweepCell[] | null, big: BigRow[] | null, lat: LatRow[] | null, subtitle: string): string {
  const W = 1200
  const body: string[] = []
  let y = 56
  if (a !== null && a.length > 0) {
    const targets = [...new Set(a.map((r) => r.target))]
    const groups = [...new Set(a.map((r) => `${r.combo} ${r.cmd}`))]
    body.push(barPanel({ x: 0, y, w: W, h: 330 }, {
      title: `(a) ops/s by load — median of ${ROUNDS} round(s); label on respool bars = respool/direct`,
      yLabel: 'ops/s',
      series: targets.map((t, i) => ({ label: t, color: PALETTE[i % PALETTE.length] })),
      groups: groups.map((g) => ({ label: g, values: targets.map((t) => a.find((r) => `${r.combo} ${r.cmd}` === g && r.target === t)?.agg.rps ?? null) })),
      annotations: groups.map((g) => targets.map((t) => {
        const r = a.find((x) => `${x.combo} ${x.cmd}` === g && x.target === t)
        return r !== undefined && t.startsWith('respool') ? fmtRatio(r.ratioDirect) : null
      }))
    }))
    y += 340
  }
  if (sweep !== null && sweep.length > 0) {
    const panels = [...new Set(sweep.map((c) => `${c.pipeline}|${c.cmd}`))]
    const clients = [...new Set(sweep.map((c) => c.clients))]
    panels.forEach((key, i) => {
      const [pipeline, cmd] = key.split('|')
      const cells = sweep.filter((c) => `${c.pipeline}|${c.cmd}` === key)
      const series: LineSeries[] = cells.map((c) => {
        const ci = clients.indexOf(c.clients)
        return {
          label: `respool, ${c.clients} clients`,
          color: PALETTE[ci % PALETTE.length],
          points: SWEEP_POOLS.map((p) => c.byPool[p]?.rps ?? null),
          mark: c.knee === null ? undefined : SWEEP_POOLS.indexOf(c.knee)
        }
      })
      const hlines = cells.flatMap((c) => {
        const color = PALETTE[clients.indexOf(c.clients) % PALETTE.length]
        return [
          { label: `direct, ${c.clients}`, color, value: c.direct?.rps ?? NaN, dash: '2,3' },
          { label: `twemproxy(${TW_CONNECTIONS}), ${c.clients}`, color, value: c.tw?.rps ?? NaN, dash: '8,3,2,3' }
        ]
      })
      const col = i % 2
      body.push(linePanel({ x: col * (W / 2), y, w: W / 2, h: 340 }, {
        title: `(b) ${cmd}, -P ${pipeline}: respool ops/s vs --pool-size (ring = knee)`,
        xLabel: '--pool-size (upstream connections)',
        yLabel: 'ops/s',
        xTicks: SWEEP_POOLS.map(String),
        series,
        hlines
      }))
      if (col === 1 || i === panels.length - 1) y += 350
    })
  }
  if (big !== null && big.length > 0) {
    body.push(barPanel({ x: 0, y, w: W / 2, h: 300 }, {
      title: `(b) ${BIG_CLIENTS} clients: pool ${BIG_POOLS.join(' vs ')} (label = ratio to the largest)`,
      yLabel: 'ops/s',
      series: [{ label: 'direct', color: PALETTE[0] }, ...BIG_POOLS.map((p, i) => ({ label: `respool(${p})`, color: PALETTE[(i + 1) % PALETTE.length] }))],
      groups: big.map((r) => ({ label: `${r.cmd} -P ${r.pipeline}`, values: [r.direct?.rps ?? null, ...BIG_POOLS.map((p) => r.byPool[p]?.rps ?? null)] })),
      annotations: big.map((r) => [null, ...BIG_POOLS.map((p) => fmtRatio((r.byPool[p]?.rps ?? NaN) / (r.byPool[BIG_POOLS[BIG_POOLS.length - 1]]?.rps ?? NaN)))])
    }))
  }
  if (lat !== null && lat.length > 0) {
    const targets = [...new Set(lat.map((r) => r.target))]
    const groups = [...new Set(lat.map((r) => r.cmd))].flatMap((c) => [`${c} p50`, `${c} p99`])
    body.push(barPanel({ x: W / 2, y, w: W / 2, h: 300 }, {
      title: '(d) 1 client -P 1 latency (µs)',
      yLabel: 'µs',
      series: targets.map((t, i) => ({ label: t, color: PALETTE[i % PALETTE.length] })),
      groups: groups.map((g) => {
        const [cmd, p] = g.split(' ')
        return { label: g, values: targets.map((t) => { const r = lat.find((x) => x.cmd === cmd && x.target === t); return r === undefined ? null : (p === 'p50' ? r.agg.p50 : r.agg.p99) * 1000 }) }
      })
    }))
  }
  if ((big !== null && big.length > 0) || (lat !== null && lat.length > 0)) y += 310
  return page(W, y + 10, 'respool benchmark: direct Redis vs respool vs twemproxy', subtitle, body)
}

// ---------------------------------------------------------------------------------------------
// Main

function machine (): Record<string, string | number> {
  return {
    ...machineMeta(),
    kernel: release(),
    memoryGiB: +(totalmem() / 2 ** 30).toFixed(1),
    redisServer: commandOutput('redis-server', ['--version']),
    redisBenchmark: commandOutput('redis-benchmark', ['--version']),
    nutcracker: hasCommand('nutcracker') ? commandOutput('nutcracker', ['--version']).split('\n')[0].replace(/^This is /, '') : 'not installed'
  }
}

async function main (): Promise<void> {
  installCleanup()
  for (const tool of ['redis-server', 'redis-benchmark']) {
    if (!hasCommand(tool)) throw new Error(`${tool} is not on PATH (apt-get install redis-server redis-tools)`)
  }
  if (!hasCommand('nutcracker')) progress('nutcracker not on PATH: twemproxy columns will be empty')
  const meta = machine()
  const config = paramsRecord()
  progress(`respool benchmark on ${meta.nproc} CPU(s) ${meta.cpuModel}, node ${meta.node}, load ${meta.loadAtStart}; scenarios ${[...SCENARIOS].join(',')}${QUICK ? ' (QUICK)' : ''}${FULL_SWEEP ? ' (full sweep)' : ''}`)

  const redis = await startRedis()
  const admin = new RedisAdmin(redis.port)
  await admin.connect()
  const book = new RunBook(admin)
  const out: Record<string, unknown> = {}
  let aRows: ARow[] | null = null
  let latRows: LatRow[] | null = null
  let sweep: SweepCell[] | null = null
  let big: BigRow[] | null = null
  const loads: Record<string, string> = {}
  const attempt = async <T>(name: string, fn: () => Promise<T>): Promise<T | null> => {
    const t0 = elapsedSeconds()
    try {
      const r = await fn()
      loads[name] = `${loadavg()[0].toFixed(2)} after ${(elapsedSeconds() - t0).toFixed(0)} s`
      return r
    } catch (err) {
      progress(`scenario ${name} failed: ${(err as Error).stack ?? String(err)}`)
      book.anomalies.push({ scenario: name, target: '-', message: `scenario failed: ${(err as Error).message}` })
      return null
    }
  }
  try {
    if (SCENARIOS.has('a') || SCENARIOS.has('d')) {
      const targets = await coreTargets(redis)
      try {
        if (SCENARIOS.has('a')) aRows = await attempt('a', async () => await scenarioA(targets, book))
        if (SCENARIOS.has('d')) latRows = await attempt('d', async () => await scenarioD(targets, book))
      } finally {
        await book.stopAll('a', targets.filter((t) => t !== redis))
      }
      out.a = aRows
      out.d = latRows
    }
    if (SCENARIOS.has('b')) {
      const tw = hasCommand('nutcracker') ? await startTwemproxy(redis.port, { serverConnections: TW_CONNECTIONS }) : null
      try {
        sweep = await attempt('b', async () => await scenarioSweep(redis, book, tw))
      } finally {
        if (tw !== null) await tw.stop()
      }
      big = await attempt('b-1000', async () => await scenarioBig(redis, book))
      out.sweep = sweep
      out.big = big
    }
    if (SCENARIOS.has('c')) out.pin = await attempt('c', async () => await scenarioPin(redis, book))
    if (SCENARIOS.has('e')) out.memory = await attempt('e', async () => await scenarioMemory(redis, book))
    if (SCENARIOS.has('w')) {
      const report = await attempt('w', async () => await scenarioWaiters(redis, admin, WAITERS_CONFIG))
      if (report !== null) {
        book.tables.push(...report.tables)
        book.anomalies.push(...report.anomalies)
        book.schedule.push(...report.schedule)
        out.waiters = report.rows
      }
    }
    if (SCENARIOS.has('n')) {
      const report = await attempt('n', async () => await scenarioNeighbours(redis, admin, NEIGH_CONFIG))
      if (report !== null) {
        book.tables.push(...report.tables)
        book.anomalies.push(...report.anomalies)
        book.schedule.push(...report.schedule)
        out.neighbours = report.rows
      }
    }
  } finally {
    await admin.close()
    await redis.stop()
  }

  meta.loadAtEnd = loadavg().map((x) => x.toFixed(2)).join(' ')
  meta.seconds = Math.round(elapsedSeconds())
  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/Z$/, '')
  mkdirSync(RESULTS_DIR, { recursive: true })
  const base = join(RESULTS_DIR, `proxy-bench-${stamp}`)
  const subtitle = `${meta.nproc} CPU ${meta.cpuModel}, node ${meta.node}, ${meta.redisServer.toString().split(' ').slice(0, 3).join(' ')}; medians of interleaved rounds; ${new Date().toISOString()}`

  const targets = targetsTable(aRows, big, (out.memory ?? null) as MemResult | null)
  if (targets !== null) book.tables.unshift(targets)
  if (book.anomalies.length > 0) {
    book.tables.push({
      title: 'Anomalies (errors in redis-benchmark output, connection counts above --pool-size, failed scenarios, respool log warnings, waiters with a wrong or missing reply)',
      headers: ['scenario', 'target', 'what'],
      rows: dedupe(book.anomalies).map((x) => [x.scenario, x.target, x.message])
    })
  }
  const measuredAt = revisionNote({ commit: String(meta.commit), srcDirty: String(meta.srcDirty), benchDirty: String(meta.benchDirty) })
  for (const t of book.tables) t.notes = [...(t.notes ?? []), measuredAt]
  const text = book.tables.map(textTable).join('\n\n')
  const md = [
    `Machine: ${meta.nproc} × ${meta.cpuModel}, ${meta.memoryGiB} GiB, Linux ${meta.kernel}, node ${meta.node}, ${meta.redisServer.toString().split(' ').slice(0, 3).join(' ')}, ${meta.redisBenchmark}, ${meta.nutcracker}. respool at commit ${meta.commit} (uncommitted changes in src/bin: ${meta.srcDirty}; in benchmarks/: ${meta.benchDirty}).`,
    `Load average at start ${meta.loadAtStart}, at end ${meta.loadAtEnd}; ${meta.seconds} s in all.`,
    '',
    ...book.tables.map(markdownTable).flatMap((t) => [t, ''])
  ].join('\n')
  writeFileSync(`${base}.json`, JSON.stringify({ meta, config, loads, results: out, schedule: book.schedule, anomalies: book.anomalies, reproduce: dedupe(book.anomalies).filter((x) => x.reproduce !== undefined) }, null, 2))
  writeFileSync(`${base}.md`, md)
  writeFileSync(`${base}.svg`, chart(aRows, sweep, big, latRows, subtitle))
  for (const ext of ['json', 'md', 'svg']) copyFileSync(`${base}.${ext}`, join(RESULTS_DIR, `latest.${ext}`))
  process.stdout.write(`${text}\n\nMachine: ${meta.nproc} CPU(s) ${meta.cpuModel}, node ${meta.node}; load ${meta.loadAtStart} → ${meta.loadAtEnd}; ${meta.seconds} s.\n` +
    'All numbers are medians of interleaved rounds on a small shared machine: expect run-to-run noise of 10-20%.\n' +
    `Wrote ${base}.json, .md and .svg (and latest.*)\n`)
}

main().then(() => { process.exit(0) }, (err: Error) => {
  process.stderr.write(`benchmark failed: ${err.stack ?? String(err)}\n`)
  process.exit(1)
})
