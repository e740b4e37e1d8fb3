/**
 * Scenario (c) of the end-to-end benchmark: the pinning workload (BRPOP workers, LPUSH producers,
 * MULTI/EXEC and WATCH…EXEC loops, in a child process: workers/pinning-workload.ts) against direct
 * Redis and respool at pool sizes smaller and larger than the number of workers.
 */
import { spawn } from 'node:child_process'
import { once } from 'node:events'
import { join } from 'node:path'
import { WORKERS_DIR, median, progress, startRespool, track, type Server } from './harness.js'
import type { UpstreamUse } from './redis-admin.js'
import {
  BRPOP_TIMEOUT, PIN_POOLS, PIN_PRODUCERS, PIN_RATE, PIN_ROUNDS, PIN_SECONDS, PIN_TX, PIN_WATCH, PIN_WORKERS
} from './proxy-params.js'
import type { RunBook } from './proxy-book.js'
import { fmtUpstream, upstreamRange, type UpstreamRange } from './proxy-samples.js'
import { fmtInt, fmtUs } from './table.js'

export interface PinResult {
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
export interface Dist { n: number, p50: number, p90: number, p99: number, max: number }
export interface PinRow { target: string, poolSize: number | null, maxPins: number | null, rounds: PinResult[], med: Record<string, number>, errors: Record<string, number>, upstream: UpstreamRange | null, upstreamRounds: UpstreamUse[] }

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

export async function scenarioPin (redis: Server, book: RunBook): Promise<PinRow[]> {
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
