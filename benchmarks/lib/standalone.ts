/**
 * The frame of a benchmark scenario run on its own (`npm run bench:waiters`, `bench:fanout`): a
 * redis-server of its own, the machine described, the scenario run, and its tables written to
 * stdout and to benchmarks/results/<name>-bench-<time>.{json,md} (and <name>-latest.*).
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs'
import { availableParallelism, cpus, loadavg } from 'node:os'
import { join } from 'node:path'
import {
  RESULTS_DIR, commandOutput, elapsedSeconds, hasCommand, installCleanup, progress, respoolNodeVersion, revision, revisionNote, startRedis, type Server
} from './harness.js'
import { RedisAdmin } from './redis-admin.js'
import { markdownTable, textTable, type Table } from './table.js'

export interface StandaloneReport {
  tables: Table[]
  anomalies: Array<{ target: string, message: string, scenario?: string }>
  /** Everything else the JSON keeps (rows with their samples, the schedule …). */
  data: Record<string, unknown>
}

export interface Standalone<C> {
  /** File-name stem and the name in messages ("waiters", "fanout"). */
  name: string
  config: C
  /** One line saying what runs, after the machine description. */
  describe: string
  /** Clients the benchmark's redis-server must accept. */
  maxClients: number
  anomaliesTitle: string
  run: (redis: Server, admin: RedisAdmin) => Promise<StandaloneReport>
}

/** The machine, node, redis-server and commit: the head of every results file. */
export function machineMeta (): Record<string, string | number> {
  const cpuinfo = (() => { try { return readFileSync('/proc/cpuinfo', 'utf8') } catch { return '' } })()
  return {
    nproc: availableParallelism(),
    cpuModel: /model name\s*:\s*(.+)/.exec(cpuinfo)?.[1] ?? cpus()[0]?.model ?? 'unknown',
    node: respoolNodeVersion(),
    redisServer: commandOutput('redis-server', ['--version']).split(' ').slice(0, 3).join(' '),
    loadAtStart: loadavg().map((x) => x.toFixed(2)).join(' '),
    ...revision()
  }
}

export async function runStandalone<C> (bench: Standalone<C>): Promise<void> {
  installCleanup()
  if (!hasCommand('redis-server')) throw new Error('redis-server is not on PATH (apt-get install redis-server)')
  const meta = machineMeta()
  progress(`${bench.name} benchmark on ${meta.nproc} CPU(s) ${meta.cpuModel}, node ${meta.node}, load ${meta.loadAtStart}: ${bench.describe}`)
  const redis = await startRedis(['--maxclients', String(Math.max(15000, bench.maxClients + 1000))])
  const admin = new RedisAdmin(redis.port)
  await admin.connect()
  let report: StandaloneReport
  try {
    report = await bench.run(redis, admin)
  } finally {
    await admin.close()
    await redis.stop()
  }

  meta.loadAtEnd = loadavg().map((x) => x.toFixed(2)).join(' ')
  meta.seconds = Math.round(elapsedSeconds())
  const tables: Table[] = [...report.tables]
  if (report.anomalies.length > 0) {
    tables.push({ title: bench.anomaliesTitle, headers: ['scenario', 'target', 'what'], rows: report.anomalies.map((x) => [x.scenario ?? bench.name, x.target, x.message]) })
  }
  const measuredAt = revisionNote({ commit: String(meta.commit), srcDirty: String(meta.srcDirty), benchDirty: String(meta.benchDirty) })
  for (const t of tables) t.notes = [...(t.notes ?? []), measuredAt]

  const stamp = new Date().toISOString().replace(/[:.]/g, '-').replace(/Z$/, '')
  mkdirSync(RESULTS_DIR, { recursive: true })
  const base = join(RESULTS_DIR, `${bench.name}-bench-${stamp}`)
  const head = `Machine: ${meta.nproc} × ${meta.cpuModel}, node ${meta.node}, ${meta.redisServer}. respool at commit ${meta.commit} (uncommitted changes in src/bin: ${meta.srcDirty}; in benchmarks/: ${meta.benchDirty}). Load average at start ${meta.loadAtStart}, at end ${meta.loadAtEnd}; ${meta.seconds} s in all.`
  writeFileSync(`${base}.json`, JSON.stringify({ meta, config: bench.config, ...report.data, anomalies: report.anomalies }, null, 2))
  writeFileSync(`${base}.md`, [head, '', ...tables.map(markdownTable).flatMap((t) => [t, ''])].join('\n'))
  copyFileSync(`${base}.json`, join(RESULTS_DIR, `${bench.name}-latest.json`))
  copyFileSync(`${base}.md`, join(RESULTS_DIR, `${bench.name}-latest.md`))
  process.stdout.write(`${tables.map(textTable).join('\n\n')}\n\n${head}\nWrote ${base}.json and .md (and ${bench.name}-latest.*)\n`)
}

/** Runs `main` and exits: 0, or 1 with the error on stderr. */
export function exitWith (name: string, main: () => Promise<void>): void {
  main().then(() => { process.exit(0) }, (err: Error) => {
    process.stderr.write(`${name} benchmark failed: ${err.stack ?? String(err)}\n`)
    process.exit(1)
  })
}
