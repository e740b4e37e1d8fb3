/**
 * Scenario (e) of the end-to-end benchmark: RSS with IDLE_CLIENTS idle clients (opened in two
 * halves by workers/idle-clients.ts), and RSS growth while a BIG_VALUE_MB value passes through.
 */
import { spawn } from 'node:child_process'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import {
  WORKERS_DIR, fdLimit, hasCommand, median, memoryKiB, progress, startRespool, startTwemproxy, stopChild, track, type Server
} from './harness.js'
import { bigValueRoundTrip, type BigValueResult } from './big-value.js'
import { BIG_VALUE_MB, IDLE_CLIENTS, POOL_SIZE, TW_CONNECTIONS } from './proxy-params.js'
import type { RunBook } from './proxy-book.js'
import { fmtInt, fmtMiB } from './table.js'

/**
 * perClientKiB is the growth from the fresh process divided by the clients; marginalKiB is the
 * growth while the second half connected, divided by those clients. The first includes what a
 * process grows by once, whatever the count (respool: V8's young generation, which starts at
 * 1 MB and grows to its cap, 2 × 4 MB as bin/respool.js starts it, under the first burst of
 * allocation); the second is what one more idle client costs.
 */
export interface IdleRow { target: string, clients: number, connected: number, ponged: number, errors: Record<string, number>, baseKiB: number, midKiB: number, loadedKiB: number, afterKiB: number, perClientKiB: number, marginalKiB: number, settleMs: number }

async function rssMedian (pid: number, n = 5, gapMs = 100): Promise<number> {
  const xs: number[] = []
  for (let i = 0; i < n; i++) {
    xs.push(memoryKiB(pid)?.rss ?? NaN)
    await delay(gapMs)
  }
  return median(xs)
}

/** Opens `count` idle clients (each sends one PING) in a child process; resolves once they are all answered or failed. */
async function openIdle (port: number, count: number): Promise<{ child: ReturnType<typeof spawn>, info: { connected: number, ponged: number, errors: Record<string, number> } }> {
  const child = track(spawn(process.execPath, [join(WORKERS_DIR, 'idle-clients.js'), String(port), String(count)], { stdio: ['pipe', 'pipe', 'pipe'] }))
  let out = ''
  child.stdout?.on('data', (d: Buffer) => { out += d.toString() })
  child.stderr?.on('data', (d: Buffer) => { out += d.toString() })
  const deadline = performance.now() + 180000
  while (!out.includes('READY') && !out.includes('FAILED') && child.exitCode === null && performance.now() < deadline) await delay(50)
  const line = out.split('\n').find((l) => l.startsWith('READY '))
  const info = line === undefined ? { connected: 0, ponged: 0, errors: { [out.slice(-200) || 'no READY line']: 1 } } : JSON.parse(line.slice(6)) as { connected: number, ponged: number, errors: Record<string, number> }
  return { child, info }
}

async function idleClients (target: Server, count: number): Promise<IdleRow> {
  await delay(500)
  const baseKiB = await rssMedian(target.pid)
  const t0 = performance.now()
  // In two halves: the RSS between them separates what one more client costs from what the
  // process grows by once.
  const first = await openIdle(target.port, Math.floor(count / 2))
  await delay(1000)
  const midKiB = await rssMedian(target.pid)
  const second = await openIdle(target.port, count - Math.floor(count / 2))
  const settleMs = performance.now() - t0
  await delay(1000)
  const loadedKiB = await rssMedian(target.pid)
  await stopChild(first.child)
  await stopChild(second.child)
  await delay(1500)
  const afterKiB = await rssMedian(target.pid, 3)
  const errors: Record<string, number> = { ...first.info.errors }
  for (const [k, v] of Object.entries(second.info.errors)) errors[k] = (errors[k] ?? 0) + v
  const ponged = first.info.ponged + second.info.ponged
  return {
    target: target.name,
    clients: count,
    connected: first.info.connected + second.info.connected,
    ponged,
    errors,
    baseKiB,
    midKiB,
    loadedKiB,
    afterKiB,
    perClientKiB: (loadedKiB - baseKiB) / Math.max(1, ponged),
    marginalKiB: (loadedKiB - midKiB) / Math.max(1, second.info.ponged),
    settleMs
  }
}

export interface MemResult { idle: IdleRow[], big: Array<BigValueResult & { target: string }>, fdLimit: { soft: number, hard: number } }

export async function scenarioMemory (redis: Server, book: RunBook): Promise<MemResult> {
  const limit = fdLimit()
  const res: MemResult = { idle: [], big: [], fdLimit: limit }
  let idleCount = IDLE_CLIENTS
  if (Math.max(limit.soft, limit.hard) < idleCount + 200) {
    idleCount = Math.max(100, Math.max(limit.soft, limit.hard) - 500)
    book.anomalies.push({ scenario: 'e', target: '-', message: `open-files limit ${limit.soft}/${limit.hard} too low for ${IDLE_CLIENTS} idle clients; used ${idleCount}` })
  }
  const maxClients = ['--max-clients', String(Math.max(10000, idleCount + 100))]
  // Idle clients: a fresh process each, so the baseline is the same for all.
  const idleTargets: Array<() => Promise<Server>> = [
    async () => await startRespool(redis.port, { poolSize: POOL_SIZE, extra: maxClients }),
    ...(hasCommand('nutcracker') ? [async () => await startTwemproxy(redis.port, { serverConnections: TW_CONNECTIONS })] : [])
  ]
  for (const start of idleTargets) {
    const s = await start()
    try {
      const row = await idleClients(s, idleCount)
      res.idle.push(row)
      if (row.ponged < idleCount) book.anomalies.push({ scenario: 'e', target: s.name, message: `only ${row.ponged}/${idleCount} idle clients got PONG: ${JSON.stringify(row.errors)}` })
      progress(`(e) ${idleCount} idle clients on ${s.name}: RSS ${fmtMiB(row.baseKiB)} → ${fmtMiB(row.midKiB)} (half) → ${fmtMiB(row.loadedKiB)} (${row.perClientKiB.toFixed(2)} KB/client from start, ${row.marginalKiB.toFixed(2)} KB per further client), after disconnect ${fmtMiB(row.afterKiB)}`)
    } finally {
      await book.stopAll('e', [s])
    }
  }
  const directRow = await idleClients(redis, idleCount)
  res.idle.push(directRow)
  progress(`(e) ${idleCount} idle clients on redis-server (reference): ${directRow.perClientKiB.toFixed(2)} KB/client from start, ${directRow.marginalKiB.toFixed(2)} per further client`)

  // A large value through a fresh proxy.
  // respool runs with its default settings (--max-output-buffer 1024 MB, room for the reply).
  const size = BIG_VALUE_MB * 1024 * 1024
  const bigTargets: Array<{ start: () => Promise<Server>, set: boolean, label: string }> = [
    { start: async () => await startRespool(redis.port, { poolSize: POOL_SIZE }), set: true, label: `respool(${POOL_SIZE}), SET then GET` },
    // GET alone on a fresh process (the value is still in Redis), so its peak is not mixed with the SET's.
    { start: async () => await startRespool(redis.port, { poolSize: POOL_SIZE }), set: false, label: `respool(${POOL_SIZE}), GET only (fresh process)` },
    ...(hasCommand('nutcracker') ? [{ start: async () => await startTwemproxy(redis.port, { serverConnections: TW_CONNECTIONS }), set: true, label: `twemproxy(${TW_CONNECTIONS}), SET then GET` }] : [])
  ]
  for (const bt of bigTargets) {
    const s = await bt.start()
    try {
      await delay(500)
      const r = await bigValueRoundTrip(s.port, s.pid, size, 'bench:big', 180000, { set: bt.set, get: true })
      res.big.push({ ...r, target: bt.label })
      if (r.error !== undefined || !r.getOk || (bt.set && r.setReply !== '+OK')) {
        book.anomalies.push({
          scenario: 'e',
          target: bt.label,
          message: `${BIG_VALUE_MB} MB value: SET reply ${JSON.stringify(r.setReply.slice(0, 120))}, GET ${r.getOk ? 'ok' : 'failed'} (${r.getBytes} bytes)${r.error !== undefined ? `: ${r.error}` : ''}`,
          reproduce: s.kind === 'respool' ? `redis-server --port 6379 --save '' & node bin/respool.js --port 6380 --upstream redis://127.0.0.1:6379 --pool-size ${POOL_SIZE} --log-level warn & then SET bench:big <${size} bytes> and GET bench:big on 127.0.0.1:6380, reading the reply as a stream (benchmarks/lib/big-value.ts)` : undefined
        })
      }
      progress(`(e) ${BIG_VALUE_MB} MB value through ${bt.label}: SET ${r.setReply.slice(0, 40)} in ${Math.round(r.setMs)} ms (peak +${fmtMiB(r.setPeakRssKiB - r.baselineRssKiB)}), GET ${r.getOk ? 'ok' : 'FAILED'} in ${Math.round(r.getMs)} ms (peak +${fmtMiB(r.getPeakRssKiB - r.baselineRssKiB)}), VmHWM +${fmtMiB(r.hwmKiB - r.baselineRssKiB)}`)
    } finally {
      await book.stopAll('e', [s])
      await delay(300)
    }
  }
  try { await book.admin.redis.del('bench:big') } catch { /* best effort */ }

  book.tables.push({
    title: `(e) memory with ${idleCount} idle clients (each sent one PING) — RSS from /proc/<pid>/status`,
    headers: ['target', 'clients answered', 'RSS before', 'RSS with half', 'RSS with all', 'KB per client from start', 'KB per further client', 'RSS after they left', 'connect time'],
    rows: res.idle.map((r) => [r.target === 'direct' ? 'redis-server (reference)' : r.target, `${r.ponged}/${r.clients}`, fmtMiB(r.baseKiB), fmtMiB(r.midKiB), fmtMiB(r.loadedKiB), r.perClientKiB.toFixed(2), r.marginalKiB.toFixed(2), fmtMiB(r.afterKiB), `${(r.settleMs / 1000).toFixed(1)} s`]),
    notes: ['KB = KiB; per client from start = (RSS with all − RSS before) / clients answered; per further client = (RSS with all − RSS with half) / clients answered in the second half',
      'from start includes what the process grows by once (respool: V8\'s young generation growing from 1 MB to its cap, 2 × 4 MB as bin/respool.js starts it, 2 × 16 MB uncapped, under the first burst of allocation); per further client is what one more idle client costs', `respool ran with --max-clients ${maxClients[1]}; twemproxy with its default 16 KB mbufs (its docs suggest -m 512…1024 for many connections)`]
  })
  book.tables.push({
    title: `(e) RSS growth while a ${BIG_VALUE_MB} MB value passes through (SET streamed in 64 KB chunks, then GET read as a stream)`,
    headers: ['target', 'RSS before', 'peak during SET', 'peak during GET', 'VmHWM − before', 'SET ms', 'GET ms', 'result'],
    rows: res.big.map((r) => [r.target, fmtMiB(r.baselineRssKiB), r.setReply === '(not run)' ? '—' : `+${fmtMiB(r.setPeakRssKiB - r.baselineRssKiB)}`, `+${fmtMiB(r.getPeakRssKiB - r.baselineRssKiB)}`, `+${fmtMiB(r.hwmKiB - r.baselineRssKiB)}`,
      fmtInt(r.setMs), fmtInt(r.getMs), r.error !== undefined ? `error: ${r.error}` : `${r.setReply === '(not run)' ? '' : `SET ${r.setReply}; `}GET ${r.getOk ? `${r.getBytes} bytes ok` : 'failed'}`]),
    notes: ['peaks are RSS sampled every 10 ms minus RSS before; VmHWM is the kernel\'s own peak of the fresh process',
      `respool runs with its default settings (--max-output-buffer 1024 MB); each row is a fresh process`]
  })
  return res
}
