/**
 * Parked blocking commands: N clients wait in `BLPOP bench:sem:<i> 10`, then a random half is
 * woken by tokens pushed straight to Redis, at a steady rate and as a burst. Direct Redis and
 * `respool --park-blocking yes` at several pool sizes, same run, rounds interleaved with the
 * target order rotated; medians of rounds. The scenario itself is in lib/waiters.ts
 * (proxy.bench.ts runs it too, as scenario w).
 *
 *   npm run bench:waiters                       # build, then node dist/benchmarks/waiters.bench.js
 *   QUICK=1 npm run bench:waiters               # 1,000 waiters, pools 4 and 16, one round
 *   WAITERS=1000 WAITERS_POOLS=8 WAITERS_ROUNDS=1 npm run bench:waiters
 *
 * Output: tables on stdout, progress on stderr, benchmarks/results/waiters-bench-<time>.{json,md}
 * and waiters-latest.*.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import {
  RESULTS_DIR, commandOutput, elapsedSeconds, hasCommand, installCleanup, progress, respoolNodeVersion, revision, revisionNote, startRedis
} from './lib/harness.js'
import { RedisAdmin } from './lib/redis-admin.js'
import { markdownTable, textTable, type Table } from './lib/table.js'
import { scenarioWaiters, waitersConfig } from './lib/waiters.js'

async function main (): Promise<void> {
  installCleanup()
  if (!hasCommand('redis-server')) throw new Error('redis-server is not on PATH (apt-get install redis-server)')
  const cfg = waitersConfig(process.env, process.env.QUICK === '1')
  const cpuinfo = (() => { try { return readFileSync('/proc/cpuinfo', 'utf8') } catch { return '' } })()
  const meta: Record<string, string | number> = {
    nproc: availableParallelism(),
    cpuModel: /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown',
    node: respoolNodeVersion(),
    redisServer: commandOutput('redis-server', ['--version']).split(' ').slice(0, 3).join(' '),
    loadAtStart: loadavg().map((x) => x.toFixed(2)).join(' '),
    ...revision()
  }
  progress(`waiters benchmark on ${meta.nproc} CPU(s) ${meta.cpuModel}, node ${meta.node}, load ${meta.loadAtStart}: ` +
    `waiters ${cfg.counts.join(',')}, pools ${cfg.pools.join(',')}, ${cfg.modes.join(' and ')}, ${cfg.rounds} round(s)`)

  const maxWaiters = Math.max(...cfg.counts)
  const redis = await startRedis(['--maxclients', String(Math.max(15000, maxWaiters + 1000))])
  const admin = new RedisAdmin(redis.port)
  await admin.connect()
  let report
  try {
    report = await scenarioWaiters(redis, admin, cfg)
  } finally {
    await admin.close()
    await redis.stop()
  }

  meta.loadAtEnd = loadavg().map((x) => x.toFixed(2)).join(' ')
  meta.seconds = Math.round(elapsedSeconds())
  const tables: Table[] = [...report.tables]
  if (report.anomalies.length > 0) {
    tables.push({ title: 'Anomalies (wrong timeouts, missing or wrong replies, tokens left, failed runs, respool log warnings)', headers: ['scenario', 'target', 'what'], rows: report.anomalies.map((x) => [x.scenario, x.target, x.message]) })
  }
  const measuredAt = revisionNote({ commit: String(meta.commit), srcDirty: String(meta.srcDirty), benchDirty: String(meta.benchDirty) })
  for (const t of tables) t.notes = [...(t.notes ?? []), measuredAt]

  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/Z$/, '')
  mkdirSync(RESULTS_DIR, { recursive: true })
  const base = join(RESULTS_DIR, `waiters-bench-${stamp}`)
  const head = `Machine: ${meta.nproc} × ${meta.cpuModel}, node ${meta.node}, ${meta.redisServer}. respool at commit ${meta.commit} (uncommitted changes in src/bin: ${meta.srcDirty}; in benchmarks/: ${meta.benchDirty}). Load average at start ${meta.loadAtStart}, at end ${meta.loadAtEnd}; ${meta.seconds} s in all.`
  writeFileSync(`${base}.json`, JSON.stringify({ meta, config: cfg, rows: report.rows, schedule: report.schedule, anomalies: report.anomalies }, null, 2))
  writeFileSync(`${base}.md`, [head, '', ...tables.map(markdownTable).flatMap((t) => [t, ''])].join('\n'))
  copyFileSync(`${base}.json`, join(RESULTS_DIR, 'waiters-latest.json'))
  copyFileSync(`${base}.md`, join(RESULTS_DIR, 'waiters-latest.md'))
  process.stdout.write(`${tables.map(textTable).join('\n\n')}\n\n${head}\nWrote ${base}.json and .md (and waiters-latest.*)\n`)
}

main().then(() => { process.exit(0) }, (err: Error) => {
  process.stderr.write(`waiters benchmark failed: ${err.stack ?? String(err)}\n`)
  process.exit(1)
})
