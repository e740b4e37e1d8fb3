/**
 * Allocation benchmark: bytes respool allocates per command, and where.
 *
 * p99 under load is set by V8's young-generation collections, and how often they run depends
 * on how many bytes each command leaves behind. This runs respool in this process (so V8's
 * sampling heap profiler sees it, including objects already collected), drives it with
 * redis-benchmark, and reports bytes per command, the collections seen, and the largest
 * allocation sites split into respool's own code and Node.js internals (sockets, streams).
 *
 *   npm run bench:alloc
 *   ALLOC_REQUESTS=400000 ALLOC_CLIENTS=500 npm run bench:alloc
 *
 * Sampling (every ALLOC_SAMPLE_BYTES, 1 KB by default) slows respool down: the ops/s shown here
 * are not throughput figures; proxy.bench.ts measures those.
 */
import { Session } from 'node:inspector/promises'
import { PerformanceObserver } from 'node:perf_hooks'
import { mkdirSync, writeFileSync, copyFileSync } from 'node:fs'
import { join } from 'node:path'
import { createProxy } from '../src/index.js'
import { RESULTS_DIR, installCleanup, progress, redisBenchmark, revision, revisionNote, startRedis } from './lib/harness.js'
import { fmtInt, markdownTable, textTable, type Table } from './lib/table.js'

const REQUESTS = Number(process.env.ALLOC_REQUESTS ?? 200000)
const CLIENTS = (process.env.ALLOC_CLIENTS ?? '50').split(',').map(Number)
const PIPELINE = Number(process.env.ALLOC_PIPELINE ?? 1)
const SAMPLE_BYTES = Number(process.env.ALLOC_SAMPLE_BYTES ?? 1024)
const TOP = Number(process.env.ALLOC_TOP ?? 12)

interface ProfileNode {
  callFrame: { functionName: string, url: string, lineNumber: number }
  selfSize: number
  children: ProfileNode[]
}

interface Site { site: string, owner: 'respool' | 'node', bytes: number }

/** Self bytes per allocation site, with the nearest respool frame that led to it. */
function sites (root: ProfileNode): { total: number, bySite: Site[] } {
  const bySite = new Map<string, Site>()
  let total = 0
  const label = (n: ProfileNode): string => {
    const f = n.callFrame
    const file = f.url === '' ? '(native)' : f.url.replace(/^.*\/dist\//, '').replace(/^node:/, '')
    return `${f.functionName === '' ? '(anonymous)' : f.functionName} ${file}${f.url === '' ? '' : `:${f.lineNumber + 1}`}`
  }
  const inRespool = (n: ProfileNode | null): boolean => n !== null && n.callFrame.url.includes('/dist/src/')
  const walk = (n: ProfileNode, parent: ProfileNode | null, nearestOwn: string | null): void => {
    const own = inRespool(n) ? label(n) : nearestOwn
    if (n.selfSize > 0) {
      total += n.selfSize
      // respool's own: its code, and what it allocates by calling a built-in directly (a Buffer view).
      const mine = inRespool(n) || (inRespool(parent) && !n.callFrame.url.startsWith('node:internal/'))
      const key = mine ? label(n) : `${label(n)}${own !== null ? `  (from ${own})` : ''}`
      const site = bySite.get(key) ?? { site: key, owner: mine ? 'respool' as const : 'node' as const, bytes: 0 }
      site.bytes += n.selfSize
      bySite.set(key, site)
    }
    for (const c of n.children) walk(c, n, own)
  }
  walk(root, null, null)
  return { total, bySite: [...bySite.values()].sort((a, b) => b.bytes - a.bytes) }
}

async function main (): Promise<void> {
  installCleanup()
  const redis = await startRedis()
  const proxy = await createProxy({ port: 0, upstream: `redis://127.0.0.1:${redis.port}`, poolSize: 8, logLevel: 'warn' })
  const session = new Session()
  session.connect()
  const results: unknown[] = []
  const tables: Table[] = []
  try {
    for (const clients of CLIENTS) {
      for (const test of ['set', 'get']) {
        progress(`alloc: ${test.toUpperCase()} with ${clients} clients, -P ${PIPELINE}, ${REQUESTS} requests`)
        let minorGcs = 0
        let minorGcMs = 0
        let majorGcs = 0
        const gcs = new PerformanceObserver((list) => {
          for (const e of list.getEntries()) {
            // kind 1 = minor (scavenge), 2 = major (mark-compact)
            const kind = (e as unknown as { detail?: { kind?: number } }).detail?.kind
            if (kind === 1) { minorGcs++; minorGcMs += e.duration } else majorGcs++
          }
        })
        gcs.observe({ entryTypes: ['gc'] })
        await session.post('HeapProfiler.startSampling', { samplingInterval: SAMPLE_BYTES, includeObjectsCollectedByMajorGC: true, includeObjectsCollectedByMinorGC: true })
        const commandsBefore = proxy.stats.downstreamRqTotal
        const run = await redisBenchmark(proxy.address.port, { clients, pipeline: PIPELINE, requests: REQUESTS, tests: [test] }, null, 300000)
        const { profile } = await session.post('HeapProfiler.stopSampling') as unknown as { profile: { head: ProfileNode } }
        gcs.disconnect()
        const commands = proxy.stats.downstreamRqTotal - commandsBefore
        const { total, bySite } = sites(profile.head)
        const ownBytes = bySite.filter((s) => s.owner === 'respool').reduce((sum, s) => sum + s.bytes, 0)
        const perCommand = total / commands
        results.push({ test, clients, pipeline: PIPELINE, commands, bytesTotal: total, bytesPerCommand: perCommand, respoolBytesPerCommand: ownBytes / commands, minorGcs, minorGcMs, majorGcs, notes: run.notes, top: bySite.slice(0, 30) })
        tables.push({
          title: `${test.toUpperCase()}, ${clients} clients, -P ${PIPELINE}: ${fmtInt(commands)} commands, ${fmtInt(perCommand)} bytes allocated per command (${fmtInt(ownBytes / commands)} in respool's code), ${minorGcs} scavenges (${minorGcMs.toFixed(0)} ms), ${majorGcs} major GCs`,
          headers: ['bytes/command', 'share', 'where', 'allocation site (nearest respool caller)'],
          rows: bySite.slice(0, TOP).map((s) => [fmtInt(s.bytes / commands), `${(100 * s.bytes / total).toFixed(1)} %`, s.owner, s.site]),
          notes: run.notes
        })
      }
    }
  } finally {
    session.disconnect()
    await proxy.close(0)
    await redis.stop()
  }
  const rev = revision()
  for (const t of tables) t.notes = [...(t.notes ?? []), `${revisionNote(rev)}; node ${process.version}`]
  const stamp = new Date().toISOString().replace(/[:.]/g, '-')
  mkdirSync(RESULTS_DIR, { recursive: true })
  const json = join(RESULTS_DIR, `alloc-bench-${stamp}.json`)
  const md = join(RESULTS_DIR, `alloc-bench-${stamp}.md`)
  writeFileSync(json, JSON.stringify({ node: process.version, ...rev, sampleBytes: SAMPLE_BYTES, results }, null, 2))
  writeFileSync(md, tables.map(markdownTable).join('\n\n') + '\n')
  copyFileSync(json, join(RESULTS_DIR, 'alloc-latest.json'))
  copyFileSync(md, join(RESULTS_DIR, 'alloc-latest.md'))
  process.stdout.write(`Node.js ${process.version}, sampling every ${SAMPLE_BYTES} bytes\n\n${tables.map(textTable).join('\n\n')}\n\nwritten: ${json}\n`)
}

main().catch((err: Error) => {
  process.stderr.write(`${err.stack ?? String(err)}\n`)
  process.exit(1)
})
