/**
 * Scenarios (a) and (d) of the end-to-end benchmark: SET/GET throughput and latency at three load
 * shapes, and one-hop latency at 1 client -P 1; direct Redis, respool (and its ALSO_* variants) and
 * twemproxy, all alive at once and measured in the same interleaved rounds.
 */
import { hasCommand, progress, startRespool, startTwemproxy, type Server } from './harness.js'
import {
  ALSO_NODE_ARGS, ALSO_WORKERS, A_COMBOS, DATA_SIZE, KEYSPACE, LAT_REQUESTS, LAT_ROUNDS, MIN_PER_CLIENT, PIPELINED_FACTOR, POOL_SIZE,
  REQUESTS, ROUNDS, TESTS, TW_CONNECTIONS, TW_MATCHED, requestsFor
} from './proxy-params.js'
import { UPSTREAM_NOTE, comboLabel, runSummary, warmUp, type RunBook } from './proxy-book.js'
import { SampleBook, fmtUpstream, sampleOf, type Agg } from './proxy-samples.js'
import { fmtInt, fmtMs, fmtPct, fmtRatio, fmtUs } from './table.js'

export interface ARow { combo: string, clients: number, pipeline: number, cmd: string, target: string, agg: Agg, ratioDirect: number, ratioTw: number }

/**
 * The most upstream connections named respool that Redis may see: --pool-size, times the
 * respool processes alive at once (the ALSO_* variants run beside the default one).
 */
function respoolBound (targets: Server[]): number {
  return POOL_SIZE * Math.max(1, targets.filter((t) => t.kind === 'respool').length)
}

export async function coreTargets (redis: Server): Promise<Server[]> {
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

export async function scenarioA (targets: Server[], book: RunBook): Promise<ARow[]> {
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

export interface LatRow { cmd: string, target: string, agg: Agg, overheadP50Us: number, overheadP99Us: number }

export async function scenarioD (targets: Server[], book: RunBook): Promise<LatRow[]> {
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
