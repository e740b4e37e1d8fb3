/**
 * Scenario (n), neighbour latency: how much one client's commands slow down while other clients
 * on the same proxy read huge values, stop reading, or read slowly. Direct Redis, respool and
 * twemproxy run in the same rounds, target order rotated, medians over rounds.
 *
 * Phases, each a fresh proxy process (direct Redis is the benchmark's one redis-server):
 * - base:  no neighbour; the probe sends `GET bench:nb:small` one at a time for NEIGH_SECONDS;
 * - big:   one neighbour client sends 2 × `GET bench:nb:big` (NEIGH_BIG_MB, 64 MB) in one write,
 *          reads both replies at full speed and starts again; the same probe;
 * - stuck: 3 neighbours each send 2,000 × `GET bench:nb:mid` (512 KB) in one write and never
 *          read; the probe alternates PING and `GET bench:nb:small` for NEIGH_STUCK_SECONDS;
 * - slow:  as stuck, but the neighbours read at NEIGH_SLOW_KBPS (100 KB/s) each.
 *
 * The neighbours run in a child process (workers/neighbours.ts); the probe runs here, on a raw
 * socket. During each phase the proxy's VmRSS and Redis's used_memory are sampled, and a proxy
 * whose RSS passes NEIGH_KILL_MB is killed (SIGKILL) and reported as such.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import net from 'node:net'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import {
  WORKERS_DIR, hasCommand, logProblems, median, memoryKiB, percentileSorted, progress, rotated,
  startRespool, startTwemproxy, stopChild, track, type Server
} from './harness.js'
import type { RedisAdmin } from './redis-admin.js'
import { bigValueRoundTrip } from './big-value.js'
import { fmtInt, fmtMiB, fmtMs, fmtRatio, type Table } from './table.js'

export type Phase = 'base' | 'big' | 'stuck' | 'slow'
const PHASES: Phase[] = ['base', 'big', 'stuck', 'slow']

export interface NeighboursConfig {
  rounds: number
  poolSize: number
  twConnections: number
  /** Size of the large value, MB. */
  bigMB: number
  /** Large-value neighbour: GETs per write. */
  bigPipeline: number
  /** Probe duration in base and big, seconds. */
  seconds: number
  /** Stuck and slow neighbours: clients, GETs each, value size KB. */
  stuckClients: number
  stuckGets: number
  midKB: number
  /** Probe duration in stuck and slow, seconds. */
  stuckSeconds: number
  /** Read rate of each slow neighbour, KB/s. */
  slowKBps: number
  /** A proxy whose RSS passes this is killed. */
  killMB: number
  phases: Phase[]
}

export interface Anomaly { scenario: string, target: string, message: string, reproduce?: string }

const posInt = (env: NodeJS.ProcessEnv, name: string, def: number): number => {
  const v = env[name]
  if (v === undefined || v === '') return def
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${v}`)
  return n
}

export function neighboursConfig (env: NodeJS.ProcessEnv, quick: boolean, poolSize: number, twConnections: number): NeighboursConfig {
  const phases = (env.NEIGH_PHASES ?? PHASES.join(',')).split(',').map((x) => x.trim().toLowerCase()).filter((x) => x !== '')
  for (const p of phases) if (!PHASES.includes(p as Phase)) throw new Error(`NEIGH_PHASES: some of ${PHASES.join(',')}, got ${p}`)
  return {
    rounds: Math.floor(posInt(env, 'NEIGH_ROUNDS', quick ? 1 : 3)),
    poolSize,
    twConnections,
    bigMB: posInt(env, 'NEIGH_BIG_MB', 64),
    bigPipeline: Math.floor(posInt(env, 'NEIGH_BIG_PIPELINE', 2)),
    seconds: posInt(env, 'NEIGH_SECONDS', quick ? 2 : 3),
    stuckClients: Math.floor(posInt(env, 'NEIGH_STUCK_CLIENTS', 3)),
    stuckGets: Math.floor(posInt(env, 'NEIGH_STUCK_GETS', 2000)),
    midKB: posInt(env, 'NEIGH_MID_KB', 512),
    stuckSeconds: posInt(env, 'NEIGH_STUCK_SECONDS', 2),
    slowKBps: posInt(env, 'NEIGH_SLOW_KBPS', 100),
    killMB: posInt(env, 'NEIGH_KILL_MB', 2048),
    phases: phases as Phase[]
  }
}

const KEY_SMALL = 'bench:nb:small'
const KEY_MID = 'bench:nb:mid'
const KEY_BIG = 'bench:nb:big'

function encode (args: string[]): Buffer {
  let s = `*${args.length}\r\n`
  for (const a of args) s += `$${Buffer.byteLength(a)}\r\n${a}\r\n`
  return Buffer.from(s, 'latin1')
}
const PING = encode(['PING'])
const GET_SMALL = encode(['GET', KEY_SMALL])

// ---------------------------------------------------------------------------------------------
// The probe: one command at a time on one raw socket

interface ProbeResult {
  /** Latencies in ms by command (PING, GET). */
  ms: Record<string, number[]>
  /** A reply that had not come NEIGH stall limit after it was sent: its wait so far is in ms. */
  stalled: number
  error: string | null
}

/** Length of the first complete simple reply in buf (+, -, :, or a bulk string), or -1. */
function replyLength (buf: Buffer): number {
  const nl = buf.indexOf('\r\n')
  if (nl === -1) return -1
  if (buf[0] !== 0x24) return nl + 2
  const len = Number(buf.toString('latin1', 1, nl))
  if (len < 0) return nl + 2
  return buf.length >= nl + 2 + len + 2 ? nl + 2 + len + 2 : -1
}

async function probe (port: number, commands: Array<{ name: string, bytes: Buffer }>, durationMs: number, stallMs: number): Promise<ProbeResult> {
  const res: ProbeResult = { ms: Object.fromEntries(commands.map((c) => [c.name, []])), stalled: 0, error: null }
  const socket = net.connect({ host: '127.0.0.1', port })
  socket.setNoDelay(true)
  let buf: Buffer = Buffer.alloc(0)
  let waiter: ((r: 'reply' | 'closed') => void) | null = null
  socket.on('data', (d: Buffer) => {
    buf = buf.length === 0 ? d : Buffer.concat([buf, d])
    const n = replyLength(buf)
    if (n !== -1) {
      if (buf[0] === 0x2d && res.error === null) res.error = buf.toString('latin1', 0, Math.min(n, 200)).trim()
      buf = buf.subarray(n)
      waiter?.('reply')
    }
  })
  socket.on('close', () => { waiter?.('closed') })
  socket.on('error', (err) => { res.error ??= err.message })
  try {
    await new Promise<void>((resolve, reject) => { socket.once('connect', resolve); socket.once('error', reject) })
  } catch (err) {
    res.error = (err as Error).message
    return res
  }
  const end = performance.now() + durationMs
  let i = 0
  while (performance.now() < end) {
    const c = commands[i++ % commands.length]
    const t0 = performance.now()
    const outcome = await new Promise<'reply' | 'closed' | 'stall'>((resolve) => {
      const timer = setTimeout(() => { waiter = null; resolve('stall') }, Math.max(stallMs, end - t0 + stallMs))
      waiter = (r) => { clearTimeout(timer); waiter = null; resolve(r) }
      socket.write(c.bytes)
    })
    const ms = performance.now() - t0
    if (outcome === 'reply') {
      res.ms[c.name].push(ms)
      continue
    }
    if (outcome === 'stall') {
      res.stalled++
      res.ms[c.name].push(ms)
      res.error ??= `no reply to ${c.name} within ${Math.round(ms)} ms`
    } else {
      res.error ??= `connection closed (after ${res.ms[c.name].length} ${c.name} replies)`
    }
    break
  }
  socket.destroy()
  return res
}

// ---------------------------------------------------------------------------------------------
// Neighbours (child process)

interface NeighbourSummary { mode: string, clients: number, bytesRead: number, replies: number, closedByServer: number, errors: Record<string, number>, seconds: number }

class Neighbours {
  readonly child: ChildProcess
  #out = ''
  constructor (cfg: Record<string, unknown>) {
    this.child = track(spawn(process.execPath, [join(WORKERS_DIR, 'neighbours.js'), JSON.stringify(cfg)], { stdio: ['pipe', 'pipe', 'pipe'] }))
    this.child.stdout?.on('data', (d: Buffer) => { this.#out += d.toString() })
    this.child.stderr?.on('data', (d: Buffer) => { this.#out += d.toString() })
  }

  async ready (timeoutMs: number): Promise<void> {
    const deadline = performance.now() + timeoutMs
    while (!this.#out.includes('READY')) {
      if (this.#out.includes('FAILED') || this.child.exitCode !== null) throw new Error(`neighbours failed: ${this.#out.slice(-300)}`)
      if (performance.now() > deadline) throw new Error(`neighbours not ready after ${timeoutMs} ms: ${this.#out.slice(-300)}`)
      await delay(10)
    }
  }

  async stop (): Promise<NeighbourSummary | null> {
    if (this.child.exitCode === null) this.child.stdin?.write('stop\n')
    const deadline = performance.now() + 5000
    while (!this.#out.includes('DONE ') && this.child.exitCode === null && performance.now() < deadline) await delay(10)
    await stopChild(this.child, 1000)
    const line = this.#out.split('\n').find((l) => l.startsWith('DONE '))
    return line === undefined ? null : JSON.parse(line.slice(5)) as NeighbourSummary
  }
}

// ---------------------------------------------------------------------------------------------
// One phase against one target

export interface NeighbourRun {
  phase: Phase
  target: string
  round: number
  probe: Record<string, { n: number, p50: number, p99: number, max: number }>
  stalled: number
  probeError: string | null
  neighbour: NeighbourSummary | null
  /** Neighbour read rate during the phase, MB/s (10^6). */
  neighbourMBps: number
  /** VmRSS of the measured process (proxy, or redis-server for direct) before, at the peak, at the end of the window, 1 s after the neighbours left; KiB. */
  rssBeforeKiB: number
  rssPeakKiB: number
  rssEndKiB: number
  rssAfterKiB: number
  /** Redis used_memory before and at the peak, bytes. */
  usedBefore: number
  usedPeak: number
  /** The proxy was killed for passing the RSS limit, this many ms into the phase. */
  killedAtMs: number | null
  /** After the neighbours left: how long until a GET through the target answered (ms), or null if none did within 10 s. */
  recoverMs: number | null
}

async function usedMemory (admin: RedisAdmin): Promise<number> {
  try {
    const info = await admin.redis.info('memory')
    const m = /^used_memory:(\d+)/m.exec(info)
    return m === null ? NaN : Number(m[1])
  } catch {
    return NaN
  }
}

function dist (xs: number[]): { n: number, p50: number, p99: number, max: number } {
  const s = Float64Array.from(xs).sort()
  return { n: s.length, p50: percentileSorted(s, 50), p99: percentileSorted(s, 99), max: s.length > 0 ? s[s.length - 1] : NaN }
}

async function runPhase (phase: Phase, target: Server, admin: RedisAdmin, cfg: NeighboursConfig, round: number): Promise<NeighbourRun> {
  const isProxy = target.kind !== 'direct'
  // Warm the target up and let it settle.
  await probe(target.port, [{ name: 'GET', bytes: GET_SMALL }], 200, 5000)
  await delay(300)
  const rssBefore = median([0, 1, 2].map(() => memoryKiB(target.pid)?.rss ?? NaN))
  const usedBefore = await usedMemory(admin)
  let rssPeak = rssBefore
  let usedPeak = usedBefore
  let killedAtMs: number | null = null
  const t0 = performance.now()
  const rssTimer = setInterval(() => {
    const m = memoryKiB(target.pid)
    if (m === null) return
    rssPeak = Math.max(rssPeak, m.rss)
    if (isProxy && killedAtMs === null && m.rss > cfg.killMB * 1024) {
      killedAtMs = performance.now() - t0
      target.child.kill('SIGKILL')
      progress(`(n) ${phase} ${target.name}: RSS ${fmtMiB(m.rss)} passed ${cfg.killMB} MB; killed`)
    }
  }, 25)
  let usedBusy = false
  const usedTimer = setInterval(() => {
    if (usedBusy) return
    usedBusy = true
    void usedMemory(admin).then((u) => { if (Number.isFinite(u)) usedPeak = Math.max(usedPeak, u); usedBusy = false })
  }, 200)

  const size = phase === 'big' ? cfg.bigMB * 1024 * 1024 : cfg.midKB * 1024
  const neighbours = phase === 'base'
    ? null
    : new Neighbours(phase === 'big'
      ? { port: target.port, mode: 'big', clients: 1, pipeline: cfg.bigPipeline, key: KEY_BIG, size, maxSeconds: 120 }
      : { port: target.port, mode: phase, clients: cfg.stuckClients, pipeline: cfg.stuckGets, key: KEY_MID, size, rate: cfg.slowKBps * 1024, maxSeconds: 120 })
  let result: ProbeResult
  let summary: NeighbourSummary | null = null
  let windowMs = 0
  let rssEnd = NaN
  try {
    if (neighbours !== null) {
      await neighbours.ready(20000)
      // The large-value reader is given a moment to get its first reply streaming.
      if (phase === 'big') await delay(300)
    }
    const commands = phase === 'base' || phase === 'big'
      ? [{ name: 'GET', bytes: GET_SMALL }]
      : [{ name: 'PING', bytes: PING }, { name: 'GET', bytes: GET_SMALL }]
    const seconds = phase === 'base' || phase === 'big' ? cfg.seconds : cfg.stuckSeconds
    const w0 = performance.now()
    result = await probe(target.port, commands, seconds * 1000, 5000)
    windowMs = performance.now() - w0
    rssEnd = memoryKiB(target.pid)?.rss ?? NaN
  } finally {
    if (neighbours !== null) summary = await neighbours.stop()
    clearInterval(rssTimer)
    clearInterval(usedTimer)
  }
  // After the neighbours have left: does the target answer, and how soon?
  let recoverMs: number | null = null
  const r0 = performance.now()
  if (target.child.exitCode === null && target.child.signalCode === null && killedAtMs === null) {
    const check = await probe(target.port, [{ name: 'GET', bytes: GET_SMALL }], 1, 10000)
    if (check.error === null && check.ms.GET.length > 0) recoverMs = performance.now() - r0
  }
  await delay(1000)
  const rssAfter = memoryKiB(target.pid)?.rss ?? NaN
  if (!isProxy) {
    // Let Redis free what it held for the neighbours before the next run measures its baseline.
    const deadline = performance.now() + 15000
    while (performance.now() < deadline && (await usedMemory(admin)) > usedBefore + 32 * 1024 * 1024) await delay(100)
  }
  const probeStats: NeighbourRun['probe'] = {}
  for (const [name, xs] of Object.entries(result.ms)) probeStats[name] = dist(xs)
  return {
    phase,
    target: target.name,
    round,
    probe: probeStats,
    stalled: result.stalled,
    probeError: result.error,
    neighbour: summary,
    neighbourMBps: summary === null || windowMs === 0 ? NaN : summary.bytesRead / 1e6 / summary.seconds,
    rssBeforeKiB: rssBefore,
    rssPeakKiB: rssPeak,
    rssEndKiB: rssEnd,
    rssAfterKiB: rssAfter,
    usedBefore,
    usedPeak,
    killedAtMs,
    recoverMs
  }
}

// ---------------------------------------------------------------------------------------------
// The scenario

export interface NeighbourRow {
  phase: Phase
  target: string
  rounds: NeighbourRun[]
  med: Record<string, number>
  killed: number
  stalled: number
  errors: string[]
}

export interface NeighboursReport {
  config: NeighboursConfig
  rows: NeighbourRow[]
  tables: Table[]
  anomalies: Anomaly[]
  schedule: Array<{ scenario: string, round: number, cell: string, order: string[] }>
}

interface TargetSpec { name: string, kind: Server['kind'], start: () => Promise<Server> }

export async function scenarioNeighbours (redis: Server, admin: RedisAdmin, cfg: NeighboursConfig, scenario = 'n'): Promise<NeighboursReport> {
  const anomalies: Anomaly[] = []
  const schedule: NeighboursReport['schedule'] = []
  const runs: NeighbourRun[] = []
  const respoolName = `respool(${cfg.poolSize})`
  const twName = `twemproxy(${cfg.twConnections})`
  const targets: TargetSpec[] = [
    { name: 'direct', kind: 'direct', start: async () => redis },
    { name: respoolName, kind: 'respool', start: async () => await startRespool(redis.port, { poolSize: cfg.poolSize }) },
    ...(hasCommand('nutcracker') ? [{ name: twName, kind: 'twemproxy' as const, start: async () => await startTwemproxy(redis.port, { serverConnections: cfg.twConnections }) }] : [])
  ]

  // The values: written straight to Redis.
  await admin.redis.set(KEY_SMALL, 'x'.repeat(16))
  await admin.redis.set(KEY_MID, Buffer.alloc(cfg.midKB * 1024, 0x62))
  if (cfg.phases.includes('big')) {
    const r = await bigValueRoundTrip(redis.port, redis.pid, cfg.bigMB * 1024 * 1024, KEY_BIG, 120000, { set: true, get: false })
    if (r.setReply !== '+OK') throw new Error(`SET of the ${cfg.bigMB} MB value failed: ${r.setReply} ${r.error ?? ''}`)
  }

  try {
    for (let round = 0; round < cfg.rounds; round++) {
      for (const [pi, phase] of cfg.phases.entries()) {
        const order = rotated(targets, round + pi)
        schedule.push({ scenario, round: round + 1, cell: phase, order: order.map((t) => t.name) })
        for (const spec of order) {
          const server = await spec.start()
          try {
            const run = await runPhase(phase, server, admin, cfg, round + 1)
            runs.push(run)
            const p = Object.entries(run.probe).map(([k, d]) => `${k} ${d.n} p50 ${fmtMs(d.p50)} p99 ${fmtMs(d.p99)} max ${fmtMs(d.max)} ms`).join(' | ')
            progress(`(n) round ${round + 1}/${cfg.rounds} ${phase} ${spec.name}: ${p}; RSS +${fmtMiB(run.rssPeakKiB - run.rssBeforeKiB)} peak, Redis used_memory +${fmtMiB((run.usedPeak - run.usedBefore) / 1024)}` +
              (run.neighbour !== null ? `; neighbours read ${(run.neighbour.bytesRead / 1e6).toFixed(1)} MB, ${run.neighbour.closedByServer} closed by the server` : '') +
              (run.killedAtMs !== null ? `; KILLED at ${Math.round(run.killedAtMs)} ms` : '') +
              (run.probeError !== null ? `; probe: ${run.probeError}` : '') +
              (run.recoverMs === null ? '; no GET answered after the neighbours left' : ''))
            if (run.probeError !== null && run.killedAtMs === null) anomalies.push({ scenario, target: spec.name, message: `${phase}: probe ${run.probeError}` })
            if (run.recoverMs === null && run.killedAtMs === null) anomalies.push({ scenario, target: spec.name, message: `${phase}: no GET answered within 10 s after the neighbours left` })
            if (run.neighbour !== null) {
              for (const [k, v] of Object.entries(run.neighbour.errors)) anomalies.push({ scenario, target: spec.name, message: `${phase}: neighbours saw ${v}× ${k}` })
              if (run.neighbour.closedByServer > 0) anomalies.push({ scenario, target: spec.name, message: `${phase}: ${run.neighbour.closedByServer} neighbour connection(s) closed by the server` })
            } else if (phase !== 'base') anomalies.push({ scenario, target: spec.name, message: `${phase}: the neighbour process gave no summary` })
          } finally {
            if (server !== redis) {
              if (server.kind === 'respool') {
                const { count, samples } = logProblems(server.logFile, 3)
                if (count > 0) anomalies.push({ scenario, target: spec.name, message: `${phase}: respool logged ${count} warning/error line(s), e.g. ${samples.join(' / ')}` })
              }
              await server.stop()
              await waitNoRespool(admin)
            }
          }
        }
      }
    }
  } finally {
    try { await admin.redis.del(KEY_SMALL, KEY_MID, KEY_BIG) } catch { /* best effort */ }
  }

  const rows: NeighbourRow[] = []
  for (const phase of cfg.phases) {
    for (const t of targets) {
      const rs = runs.filter((r) => r.phase === phase && r.target === t.name)
      if (rs.length === 0) continue
      const m = (f: (r: NeighbourRun) => number): number => median(rs.map(f))
      rows.push({
        phase,
        target: t.name,
        rounds: rs,
        med: {
          getN: m((r) => r.probe.GET?.n ?? NaN),
          getP50: m((r) => r.probe.GET?.p50 ?? NaN),
          getP99: m((r) => r.probe.GET?.p99 ?? NaN),
          getMax: m((r) => r.probe.GET?.max ?? NaN),
          pingN: m((r) => r.probe.PING?.n ?? NaN),
          pingP50: m((r) => r.probe.PING?.p50 ?? NaN),
          pingP99: m((r) => r.probe.PING?.p99 ?? NaN),
          pingMax: m((r) => r.probe.PING?.max ?? NaN),
          rssGrowthKiB: m((r) => r.rssPeakKiB - r.rssBeforeKiB),
          rssGrowthMaxKiB: Math.max(...rs.map((r) => r.rssPeakKiB - r.rssBeforeKiB)),
          rssAfterGrowthKiB: m((r) => r.rssAfterKiB - r.rssBeforeKiB),
          usedGrowth: m((r) => r.usedPeak - r.usedBefore),
          neighbourMBps: m((r) => r.neighbourMBps),
          neighbourReplies: m((r) => r.neighbour?.replies ?? NaN),
          recoverMs: m((r) => r.recoverMs ?? NaN)
        },
        killed: rs.filter((r) => r.killedAtMs !== null).length,
        stalled: rs.reduce((a, r) => a + r.stalled, 0),
        errors: rs.map((r) => r.probeError).filter((e): e is string => e !== null)
      })
    }
  }
  return { config: cfg, rows, tables: tablesOf(rows, cfg), anomalies, schedule }
}

async function waitNoRespool (admin: RedisAdmin): Promise<void> {
  const deadline = performance.now() + 3000
  while (performance.now() < deadline) {
    try {
      if ((await admin.respoolConnections()).respool === 0) return
    } catch { return }
    await delay(20)
  }
}

// ---------------------------------------------------------------------------------------------
// Tables

const killedNote = (r: NeighbourRow, cfg: NeighboursConfig): string => {
  if (r.killed === 0) return ''
  const at = r.rounds.filter((x) => x.killedAtMs !== null).map((x) => `${((x.killedAtMs ?? 0) / 1000).toFixed(1)} s`)
  return `killed at > ${cfg.killMB} MB in ${r.killed}/${r.rounds.length} round(s) (at ${at.join(', ')})`
}

function tablesOf (rows: NeighbourRow[], cfg: NeighboursConfig): Table[] {
  const tables: Table[] = []
  const find = (phase: Phase, target: string): NeighbourRow | undefined => rows.find((r) => r.phase === phase && r.target === target)
  const growth = (kib: number): string => Number.isFinite(kib) ? `${kib >= 0 ? '+' : ''}${fmtMiB(kib)}` : '—'
  const usedGrowth = (bytes: number): string => growth(bytes / 1024)
  const rounds = `median of ${cfg.rounds} round(s), target order rotated each round, each proxy a fresh process`

  const big = rows.filter((r) => r.phase === 'base' || r.phase === 'big')
  if (big.length > 0) {
    tables.push({
      title: `(n) neighbour latency, large values: one client GETs a 16-byte value one at a time for ${cfg.seconds} s, alone (none) or while another client reads ${cfg.bigPipeline} × GET of a ${cfg.bigMB} MB value at full speed in a loop — ${rounds}`,
      headers: ['neighbour', 'target', 'GETs', 'p50 ms', 'p99 ms', 'max ms', 'p50 ×direct', 'p99 ×direct', 'p99 ×alone', 'neighbour MB/s', 'RSS growth', 'note'],
      rows: big.map((r) => {
        const direct = find(r.phase, 'direct')
        const alone = find('base', r.target)
        return [
          r.phase === 'base' ? 'none' : `${cfg.bigPipeline} × ${cfg.bigMB} MB GET`, r.target, fmtInt(r.med.getN), fmtMs(r.med.getP50), fmtMs(r.med.getP99), fmtMs(r.med.getMax),
          fmtRatio(r.med.getP50 / (direct?.med.getP50 ?? NaN)), fmtRatio(r.med.getP99 / (direct?.med.getP99 ?? NaN)),
          r.phase === 'base' ? '—' : fmtRatio(r.med.getP99 / (alone?.med.getP99 ?? NaN)),
          r.phase === 'base' ? '—' : (r.med.neighbourMBps).toFixed(0), growth(r.med.rssGrowthKiB),
          [killedNote(r, cfg), r.stalled > 0 ? `${r.stalled} probe reply stalled > 5 s` : ''].filter((x) => x !== '').join('; ')
        ]
      }),
      notes: [
        'latencies are the client\'s own (send → whole reply, performance.now()), medians over rounds of each run\'s p50, p99 and max',
        'neighbour MB/s = bytes the large-value reader received during the phase ÷ its time (1 MB = 10^6 bytes): a proxy that kept the probe fast by starving the neighbour would show here',
        'RSS growth = peak VmRSS during the phase (sampled every 25 ms) − VmRSS before, of the proxy, or of redis-server for direct'
      ]
    })
  }
  for (const phase of ['stuck', 'slow'] as const) {
    const rs = rows.filter((r) => r.phase === phase)
    if (rs.length === 0) continue
    const who = phase === 'stuck'
      ? `${cfg.stuckClients} clients each pipeline ${fmtInt(cfg.stuckGets)} GETs of a ${cfg.midKB} KB value and never read`
      : `${cfg.stuckClients} clients each pipeline ${fmtInt(cfg.stuckGets)} GETs of a ${cfg.midKB} KB value and read ${cfg.slowKBps} KB/s each`
    tables.push({
      title: `(n) neighbour latency, ${phase === 'stuck' ? 'stuck' : 'slow'} readers: ${who}; a 4th client alternates PING and GET of a 16-byte value, one at a time, for ${cfg.stuckSeconds} s — ${rounds}`,
      headers: ['target', 'PINGs', 'PING p50 ms', 'PING p99 ms', 'GETs', 'GET p50 ms', 'GET p99 ms', 'GET max ms', 'proxy RSS growth', 'Redis used_memory growth', 'RSS 1 s after they left', ...(phase === 'slow' ? ['neighbours read MB/s'] : []), 'note'],
      rows: rs.map((r) => {
        const isDirect = r.target === 'direct'
        return [
          r.target, fmtInt(r.med.pingN), fmtMs(r.med.pingP50), fmtMs(r.med.pingP99), fmtInt(r.med.getN), fmtMs(r.med.getP50), fmtMs(r.med.getP99), fmtMs(r.med.getMax),
          isDirect ? '—' : `${growth(r.med.rssGrowthKiB)}${r.med.rssGrowthMaxKiB > r.med.rssGrowthKiB + 64 * 1024 ? ` (max ${growth(r.med.rssGrowthMaxKiB)})` : ''}`,
          usedGrowth(r.med.usedGrowth),
          r.killed > 0 ? '—' : growth(r.med.rssAfterGrowthKiB),
          ...(phase === 'slow' ? [(r.med.neighbourMBps).toFixed(2)] : []),
          [killedNote(r, cfg), r.stalled > 0 ? `${r.stalled} probe reply stalled > 5 s` : '', r.errors.length > 0 && r.killed === 0 ? `probe: ${r.errors[0]}` : ''].filter((x) => x !== '').join('; ')
        ]
      }),
      notes: [
        'proxy RSS growth = peak VmRSS during the phase (sampled every 25 ms) − VmRSS before; Redis used_memory growth = peak of INFO memory used_memory (polled every 200 ms) − before: for direct that is where the unread replies pile up',
        `a proxy whose RSS passes ${cfg.killMB} MB is killed (SIGKILL); its probe then ends with the connection closed, and its figures are those up to then`,
        'twemproxy answers PING itself, without Redis; respool sends PING to Redis, like GET: compare GET across targets',
        'the window starts as soon as the neighbours have written their commands; a run whose probe waited most of the window has few samples, so its p50/p99 are that wait: read the count and the max with them (no ratio to direct here, for that reason; every run is in the JSON)',
        'RSS 1 s after they left = VmRSS 1 s after the neighbours closed their connections − VmRSS before (redis-server\'s for direct)'
      ]
    })
  }
  return tables
}
