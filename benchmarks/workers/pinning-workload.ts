/**
 * Child process for the pinning scenario, written with ioredis (one connection per client):
 *
 * - `workers` consumers loop `BRPOP <queue> <timeout>` (each BRPOP pins an upstream connection in respool);
 * - `producers` push timestamped items with LPUSH at a fixed total `rate` (open loop, shared lanes);
 * - `txClients` loop `MULTI; INCR; EXEC` sent in one write (ioredis pipelines it; respool can run such a
 *   complete transaction on a shared lane without a pin);
 * - `watchClients` loop an optimistic transaction in three round trips, `WATCH k` / `GET k` /
 *   `MULTI; SET k v+1; EXEC`, which holds a pinned connection from WATCH to EXEC.
 *
 *   node pinning-workload.js '<json config>'
 *
 * Measures, over `durationMs`: items consumed per second, the queue wait of each item (LPUSH sent →
 * BRPOP reply received, same clock), the BRPOP round trip, both transactions' round trips, and errors.
 * Prints one line `RESULT {json}` and exits. It gives up on its own after durationMs + 20 s.
 */
import { Redis } from 'ioredis'
import { setTimeout as delay } from 'node:timers/promises'

interface Config {
  port: number
  workers: number
  producers: number
  txClients: number
  watchClients: number
  /** Items per second pushed by all producers together. */
  rate: number
  durationMs: number
  /** BRPOP timeout in seconds. */
  brpopTimeout: number
  queue: string
}

const cfg = JSON.parse(process.argv[2] ?? '{}') as Config
const hardStop = setTimeout(() => {
  process.stdout.write(`RESULT ${JSON.stringify({ aborted: 'workload did not finish in time' })}\n`)
  process.exit(2)
}, cfg.durationMs + 20000)
hardStop.unref()
process.stdin.on('end', () => process.exit(3))
process.stdin.resume()

const errors: Record<string, number> = {}
function countError (err: unknown): void {
  const msg = (err instanceof Error ? err.message : String(err)).replace(/\d+/g, 'N').slice(0, 120)
  errors[msg] = (errors[msg] ?? 0) + 1
}

function client (name: string): Redis {
  const c = new Redis({
    host: '127.0.0.1',
    port: cfg.port,
    lazyConnect: true,
    enableReadyCheck: false,
    maxRetriesPerRequest: 0,
    enableOfflineQueue: false,
    retryStrategy: () => null,
    connectionName: name
  })
  c.on('error', countError)
  return c
}

const nowNs = (): bigint => process.hrtime.bigint()
const usSince = (t: bigint): number => Number(nowNs() - t) / 1000

interface Stats {
  consumed: number
  nils: number
  brpopUs: number[]
  waitUs: number[]
  tx: number
  txUs: number[]
  pushed: number
  pushUs: number[]
  watchTx: number
  watchUs: number[]
  watchAborts: number
}

async function main (): Promise<void> {
  const workers = Array.from({ length: cfg.workers }, (_, i) => client(`bench-worker-${i}`))
  const producers = Array.from({ length: cfg.producers }, (_, i) => client(`bench-producer-${i}`))
  const txClients = Array.from({ length: cfg.txClients }, (_, i) => client(`bench-tx-${i}`))
  const watchClients = Array.from({ length: cfg.watchClients ?? 0 }, (_, i) => client(`bench-watch-${i}`))
  const all = [...workers, ...producers, ...txClients, ...watchClients]
  await Promise.all(all.map(async (c) => { await c.connect() }))
  await producers[0].del(cfg.queue)

  const s: Stats = { consumed: 0, nils: 0, brpopUs: [], waitUs: [], tx: 0, txUs: [], pushed: 0, pushUs: [], watchTx: 0, watchUs: [], watchAborts: 0 }
  let running = true
  const t0 = nowNs()
  const inWindow = (): boolean => Number(nowNs() - t0) / 1e6 <= cfg.durationMs

  const workerLoops = workers.map(async (w) => {
    while (running) {
      const t = nowNs()
      try {
        const r = await w.brpop(cfg.queue, cfg.brpopTimeout)
        if (!inWindow()) continue
        s.brpopUs.push(usSince(t))
        if (r === null) {
          s.nils++
        } else {
          s.consumed++
          s.waitUs.push(Number(nowNs() - BigInt(r[1])) / 1000)
        }
      } catch (err) {
        countError(err)
        await delay(5)
      }
    }
  })

  const txLoops = txClients.map(async (c) => {
    while (running) {
      const t = nowNs()
      try {
        const r = await c.multi().incr('bench:tx').exec()
        if (r === null) throw new Error('EXEC aborted')
        for (const [err] of r) if (err !== null) throw err
        if (!inWindow()) continue
        s.tx++
        s.txUs.push(usSince(t))
      } catch (err) {
        countError(err)
        await delay(5)
      }
    }
  })

  const watchLoops = watchClients.map(async (c, i) => {
    const key = `bench:watch:${i}`
    while (running) {
      const t = nowNs()
      try {
        await c.watch(key)
        const v = await c.get(key)
        const r = await c.multi().set(key, String(Number(v ?? '0') + 1)).exec()
        if (!inWindow()) continue
        if (r === null) {
          s.watchAborts++
          continue
        }
        for (const [err] of r) if (err !== null) throw err
        s.watchTx++
        s.watchUs.push(usSince(t))
      } catch (err) {
        countError(err)
        await delay(5)
      }
    }
  })

  // Open-loop producers: every few ms, push whatever the target rate says is due.
  let sent = 0
  let rr = 0
  const pushes: Array<Promise<void>> = []
  while (inWindow()) {
    const due = Math.floor(cfg.rate * Number(nowNs() - t0) / 1e9)
    while (sent < due) {
      sent++
      const p = producers[rr++ % producers.length]
      const t = nowNs()
      pushes.push(p.lpush(cfg.queue, String(t)).then(() => {
        if (inWindow()) {
          s.pushed++
          s.pushUs.push(usSince(t))
        }
      }, countError))
      if (pushes.length > 10000) await Promise.all(pushes.splice(0))
    }
    await delay(2)
  }
  running = false
  const elapsedS = Number(nowNs() - t0) / 1e9
  await Promise.all(pushes)
  // Consumers finish their BRPOP (at most brpopTimeout plus any pin wait).
  await Promise.race([Promise.all([...workerLoops, ...txLoops, ...watchLoops]), delay(cfg.brpopTimeout * 1000 + 5000)])
  let leftover = -1
  try { leftover = await producers[0].llen(cfg.queue) } catch (err) { countError(err) }
  for (const c of all) c.disconnect()

  const summary = (xs: number[]): { n: number, p50: number, p90: number, p99: number, max: number } => {
    const v = Float64Array.from(xs).sort()
    const at = (p: number): number => v.length === 0 ? NaN : v[Math.min(v.length - 1, Math.max(0, Math.ceil(p / 100 * v.length) - 1))]
    return { n: v.length, p50: at(50), p90: at(90), p99: at(99), max: v.length === 0 ? NaN : v[v.length - 1] }
  }
  process.stdout.write(`RESULT ${JSON.stringify({
    seconds: elapsedS,
    sent,
    pushedPerSec: s.pushed / elapsedS,
    consumedPerSec: s.consumed / elapsedS,
    txPerSec: s.tx / elapsedS,
    nils: s.nils,
    leftover,
    queueWaitUs: summary(s.waitUs),
    brpopUs: summary(s.brpopUs),
    txUs: summary(s.txUs),
    watchPerSec: s.watchTx / elapsedS,
    watchUs: summary(s.watchUs),
    watchAborts: s.watchAborts,
    lpushUs: summary(s.pushUs),
    errors
  })}\n`)
  clearTimeout(hardStop)
  process.exit(0)
}

main().catch((err: Error) => {
  process.stdout.write(`RESULT ${JSON.stringify({ aborted: err.message, errors })}\n`)
  process.exit(1)
})
