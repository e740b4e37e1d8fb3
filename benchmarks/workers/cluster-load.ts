/**
 * Child process for the cluster benchmark: one load generator for both sides, so they are
 * compared with the same client library, concurrency and pipeline depth.
 *
 *   node cluster-load.js '{"target":"respool","port":6380,"clients":50,"depth":16,"keyspace":100000}'
 *   node cluster-load.js '{"target":"cluster","seeds":["127.0.0.1:7000"],"clients":50,"depth":1,"keyspace":100000}'
 *
 * `respool`: ioredis in non-cluster mode connected to respool; `cluster`: ioredis's Cluster client
 * connected to the cluster directly (one connection per node per client). Both with
 * enableAutoPipelining, so the `depth` commands a client issues at once leave in one write per
 * node. Each client loops: `depth` commands at once (alternately SET and GET of random keys of
 * the keyspace), then waits for all of their replies, as `redis-benchmark -P depth` does.
 *
 * Prints `READY` once every client is connected. On stdin, `mark <name>` starts a new segment
 * and `stop` ends the run: it prints `DONE {json}` with, per segment, commands, seconds,
 * commands/s, latency percentiles (each command from issue to reply) and errors; then exits.
 */
import { Cluster, Redis } from 'ioredis'
import { createInterface } from 'node:readline'

interface Config {
  target: 'respool' | 'cluster'
  port?: number
  seeds?: string[]
  clients: number
  depth: number
  keyspace: number
  maxSeconds?: number
}

interface Segment {
  name: string
  startedAt: number
  endedAt: number
  latenciesUs: number[]
  errors: Record<string, number>
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config
const segments: Segment[] = []
let current: Segment = { name: 'warmup', startedAt: performance.now(), endedAt: 0, latenciesUs: [], errors: {} }
let running = true
const value = 'xxx' // redis-benchmark's default 3-byte value

type Client = Redis | Cluster
function connect (): Client {
  if (cfg.target === 'respool') {
    return new Redis({ host: '127.0.0.1', port: cfg.port, enableAutoPipelining: true, maxRetriesPerRequest: 0, lazyConnect: true })
  }
  const nodes = (cfg.seeds ?? []).map((s) => ({ host: s.slice(0, s.lastIndexOf(':')), port: Number(s.slice(s.lastIndexOf(':') + 1)) }))
  return new Cluster(nodes, { enableAutoPipelining: true, lazyConnect: true, redisOptions: { maxRetriesPerRequest: 0 } })
}

async function loop (client: Client): Promise<void> {
  let n = 0
  const batch: Array<Promise<void>> = []
  while (running) {
    batch.length = 0
    for (let i = 0; i < cfg.depth; i++, n++) {
      const key = `key:${Math.floor(Math.random() * cfg.keyspace)}`
      const segment = current
      const t0 = performance.now()
      const sent = n % 2 === 0 ? client.set(key, value) : client.get(key)
      batch.push(sent.then(() => {
        segment.latenciesUs.push((performance.now() - t0) * 1000)
      }, (err: Error) => {
        const what = err.message.slice(0, 80)
        segment.errors[what] = (segment.errors[what] ?? 0) + 1
      }))
    }
    await Promise.all(batch)
  }
}

function percentile (sorted: number[], p: number): number {
  if (sorted.length === 0) return NaN
  return sorted[Math.min(sorted.length - 1, Math.max(0, Math.ceil((p / 100) * sorted.length) - 1))]
}

function summary (s: Segment): Record<string, unknown> {
  const sorted = Float64Array.from(s.latenciesUs).sort()
  const list = Array.from(sorted)
  const seconds = (s.endedAt - s.startedAt) / 1000
  return {
    name: s.name,
    seconds,
    commands: list.length,
    rps: list.length / seconds,
    p50Us: percentile(list, 50),
    p99Us: percentile(list, 99),
    maxUs: list.length > 0 ? list[list.length - 1] : NaN,
    errors: s.errors
  }
}

async function main (): Promise<void> {
  const clients = Array.from({ length: cfg.clients }, connect)
  await Promise.all(clients.map(async (c) => { await c.connect() }))
  if (cfg.target === 'cluster') {
    // The Cluster client opens its per-node connections on first use: one command each before READY.
    await Promise.all(clients.map(async (c) => { await Promise.all(Array.from({ length: 64 }, async (_, i) => await c.get(`warm:${i}`))) }))
  }
  const loops = clients.map(loop)
  process.stdout.write('READY\n')
  const finish = async (): Promise<void> => {
    if (!running) return
    current.endedAt = performance.now()
    segments.push(current)
    running = false
    await Promise.all(loops)
    for (const c of clients) c.disconnect()
    process.stdout.write(`DONE ${JSON.stringify({ segments: segments.filter((s) => s.name !== 'warmup').map(summary) })}\n`)
    process.exit(0)
  }
  createInterface({ input: process.stdin }).on('line', (line) => {
    const [word, name] = line.trim().split(/\s+/)
    if (word === 'mark') {
      const now = performance.now()
      current.endedAt = now
      segments.push(current)
      current = { name: name ?? `segment${segments.length}`, startedAt: now, endedAt: 0, latenciesUs: [], errors: {} }
    } else if (word === 'stop') {
      void finish()
    }
  }).on('close', () => { void finish() })
  setTimeout(() => { void finish() }, (cfg.maxSeconds ?? 120) * 1000).unref()
}

main().catch((err: Error) => {
  process.stderr.write(`cluster-load failed: ${err.stack ?? String(err)}\n`)
  process.exit(1)
})
