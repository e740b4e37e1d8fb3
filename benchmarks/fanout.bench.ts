/**
 * Pub/sub fan-out: N subscribers (SUBSCRIBE one of C channels, a share PSUBSCRIBE a pattern of
 * ten channels), one publisher at a fixed rate for a fixed time. Direct Redis and respool
 * (`--shared-pubsub yes`: every subscriber on one upstream subscriber connection) at one or more
 * pool sizes, same run, rounds interleaved with the target order rotated; medians of rounds.
 * The scenario itself is in lib/fanout.ts.
 *
 *   npm run bench:fanout                        # build, then node dist/benchmarks/fanout.bench.js
 *   QUICK=1 npm run bench:fanout                # 1,000 subscribers, 2 s, one round
 *   FANOUT_SUBSCRIBERS=2000 FANOUT_RATE=5000 FANOUT_POOLS=4,8 npm run bench:fanout
 *
 * Output: tables on stdout, progress on stderr, benchmarks/results/fanout-bench-<time>.{json,md}
 * and fanout-latest.*.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import {
  RESULTS_DIR, commandOutput, elapsedSeconds, hasCommand, installCleanup, progress, respoolNodeVersion, revision, revisionNote, startRedis
} from './lib/harness.js'
import { RedisAdmin } from './lib/redis-admin.js'
import { markdownTable, textTable, type Table } from './lib/table.js'
import { fanoutConfig, scenarioFanout } from './lib/fanout.js'

async function main (): Promise<void> {
  installCleanup()
  if (!hasCommand('redis-server')) throw new Error('redis-server is not on PATH (apt-get install redis-server)')
  const cfg = fanoutConfig(process.env, process.env.QUICK === '1')
  const cpuinfo = (() => { try { return readFileSync('/proc/cpuinfo', 'utf8') } catch { return '' } })()
  const meta: Record<string, string | number> = {
    nproc: availableParallelism(),
    cpuModel: /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown',
    node: respoolNodeVersion(),
    redisServer: commandOutput('redis-server', ['--version']).split(' ').slice(0, 3).join(' '),
    loadAtStart: loadavg().map((x) => x.toFixed(2)).join(' '),
    ...revision()
  }
  progress(`fan-out benchmark on ${meta.nproc} CPU(s) ${meta.cpuModel}, node ${meta.node}, load ${meta.loadAtStart}: ` +
    `${cfg.subscribers} subscribers over ${cfg.channels} channels (every ${cfg.plan.patternEvery || '—'}th on a pattern), ` +
    `${cfg.rate} messages/s for ${cfg.seconds} s, pools ${cfg.pools.join(',')}, ${cfg.rounds} round(s), ${cfg.workers} subscriber process(es)`)

  const redis = await startRedis(['--maxclients', String(Math.max(15000, cfg.subscribers + 1000))])
  const admin = new RedisAdmin(redis.port)
  await admin.connect()
  let report
  try {
    report = await scenarioFanout(redis, admin, cfg)
  } finally {
    await admin.close()
    await redis.stop()
  }

  meta.loadAtEnd = loadavg().map((x) => x.toFixed(2)).join(' ')
  meta.seconds = Math.round(elapsedSeconds())
  const tables: Table[] = [...report.tables]
  if (report.anomalies.length > 0) {
    tables.push({ title: 'Anomalies (lost, duplicated, out-of-order or wrong messages, PUBLISH counts, errors, failed runs, respool log warnings)', headers: ['target', 'what'], rows: report.anomalies.map((x) => [x.target, x.message]) })
  }
  const measuredAt = revisionNote({ commit: String(meta.commit), srcDirty: String(meta.srcDirty), benchDirty: String(meta.benchDirty) })
  for (const t of tables) t.notes = [...(t.notes ?? []), measuredAt]

  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/Z$/, '')
  mkdirSync(RESULTS_DIR, { recursive: true })
  const base = join(RESULTS_DIR, `fanout-bench-${stamp}`)
  const head = `Machine: ${meta.nproc} × ${meta.cpuModel}, node ${meta.node}, ${meta.redisServer}. respool at commit ${meta.commit} (uncommitted changes in src/bin: ${meta.srcDirty}; in benchmarks/: ${meta.benchDirty}). Load average at start ${meta.loadAtStart}, at end ${meta.loadAtEnd}; ${meta.seconds} s in all.`
  // The per-run rows are in `rows[].runs`; the JSON keeps them, with their samples.
  writeFileSync(`${base}.json`, JSON.stringify({ meta, config: cfg, rows: report.rows, schedule: report.schedule, anomalies: report.anomalies }, null, 2))
  writeFileSync(`${base}.md`, [head, '', ...tables.map(markdownTable).flatMap((t) => [t, ''])].join('\n'))
  copyFileSync(`${base}.json`, join(RESULTS_DIR, 'fanout-latest.json'))
  copyFileSync(`${base}.md`, join(RESULTS_DIR, 'fanout-latest.md'))
  process.stdout.write(`${tables.map(textTable).join('\n\n')}\n\n${head}\nWrote ${base}.json and .md (and fanout-latest.*)\n`)
}

main().then(() => { process.exit(0) }, (err: Error) => {
  process.stderr.write(`fan-out benchmark failed: ${err.stack ?? String(err)}\n`)
  process.exit(1)
})
