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
 *   a  SET/GET at 50 clients -P 1, 50 clients -P 16, 500 clients -P 1 (lib/proxy-core.ts)
 *   b  saturation sweep: clients × --pool-size × pipeline, load by load; and 1000 clients over 8 vs 64
 *      connections at -P 1 and -P 16 (lib/proxy-sweep.ts)
 *   c  pinning: BRPOP workers + LPUSH producers + MULTI/EXEC loops, pool smaller than the workers
 *      (lib/proxy-pinning.ts)
 *   d  one-hop latency at low load: 1 client, -P 1 (lib/proxy-core.ts)
 *   e  memory: RSS with 10,000 idle clients; RSS growth while a 256 MB value passes through
 *      (lib/proxy-memory.ts)
 *   w  waiters: 1,000 and 10,000 clients parked in BLPOP (respool --park-blocking yes), half of them
 *      woken by tokens pushed straight to Redis; wake latency, wrong timeouts, connections on Redis
 *      (lib/waiters.ts; also on its own: npm run bench:waiters)
 *   n  neighbour latency: a small GET's latency while another client reads huge values, and PING/GET
 *      latency while 3 clients stop reading (or read at 100 KB/s) with thousands of 512 KB GETs
 *      pipelined; proxy RSS and Redis used_memory meanwhile (lib/neighbours.ts)
 *
 * Output: tables on stdout, progress on stderr, JSON + SVG + Markdown in benchmarks/results/.
 * This file runs the scenarios and writes the results; the parameters are read from the
 * environment in lib/proxy-params.ts, what the scenarios share (the tables, anomalies and schedule
 * of the run, one measured redis-benchmark run) is in lib/proxy-book.ts and lib/proxy-samples.ts,
 * and the targets table and the chart are in lib/proxy-report.ts.
 */
import { mkdirSync, writeFileSync, copyFileSync } from 'node:fs'
import { loadavg, release, totalmem } from 'node:os'
import { join } from 'node:path'
import {
  RESULTS_DIR, commandOutput, elapsedSeconds, hasCommand, installCleanup, progress, revisionNote, startRedis, startTwemproxy
} from './lib/harness.js'
import { RedisAdmin } from './lib/redis-admin.js'
import { scenarioWaiters } from './lib/waiters.js'
import { machineMeta } from './lib/standalone.js'
import { scenarioNeighbours } from './lib/neighbours.js'
import { markdownTable, textTable } from './lib/table.js'
import { FULL_SWEEP, NEIGH_CONFIG, QUICK, SCENARIOS, TW_CONNECTIONS, WAITERS_CONFIG, paramsRecord } from './lib/proxy-params.js'
import { RunBook, dedupe } from './lib/proxy-book.js'
import { coreTargets, scenarioA, scenarioD, type ARow, type LatRow } from './lib/proxy-core.js'
import { scenarioBig, scenarioSweep, type BigRow, type SweepCell } from './lib/proxy-sweep.js'
import { scenarioPin } from './lib/proxy-pinning.js'
import { scenarioMemory, type MemResult } from './lib/proxy-memory.js'
import { chart, targetsTable } from './lib/proxy-report.js'

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
