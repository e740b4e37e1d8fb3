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
import { mkdirSync, writeFileSync, copyFileSync } from 'node:fs'
import { loadavg, release, totalmem } from 'node:os'
import { join } from 'node:path'
import {
  RESULTS_DIR, commandOutput, elapsedSeconds, hasCommand, installCleanup, progress, revisionNote, startRedis, startTwemproxy
} from './lib/harness.js'
import { RedisAdmin } from './lib/redis-admin.js'
import type { BigValueResult } from './lib/big-value.js'
import { scenarioWaiters } from './lib/waiters.js'
import { machineMeta } from './lib/standalone.js'
import { scenarioNeighbours } from './lib/neighbours.js'
import { fmtMiB, fmtMs, fmtRatio, markdownTable, textTable, type Table } from './lib/table.js'
import { PALETTE, barPanel, linePanel, page, type LineSeries } from './lib/svg.js'
import {
  A_COMBOS, BIG_CLIENTS, BIG_PIPELINES, BIG_POOLS, BIG_VALUE_MB, FULL_SWEEP, NEIGH_CONFIG, POOL_SIZE, QUICK, ROUNDS, SCENARIOS,
  SWEEP_POOLS, TESTS, TW_CONNECTIONS, WAITERS_CONFIG, paramsRecord
} from './lib/proxy-params.js'
import { RunBook, comboLabel, dedupe } from './lib/proxy-book.js'
import { fmtUpstream } from './lib/proxy-samples.js'
import { coreTargets, scenarioA, scenarioD, type ARow, type LatRow } from './lib/proxy-core.js'
import { scenarioBig, scenarioSweep, type BigRow, type SweepCell } from './lib/proxy-sweep.js'
import { scenarioPin } from './lib/proxy-pinning.js'
import { scenarioMemory, type MemResult } from './lib/proxy-memory.js'

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
