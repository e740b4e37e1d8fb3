/**
 * The waiters scenario: many clients parked in a blocking command, then woken by tokens pushed
 * straight to Redis. Run by `waiters.bench.ts` on its own and by `proxy.bench.ts` as scenario w.
 *
 * One run, against direct Redis or a fresh `respool --park-blocking yes --pool-size P`:
 *
 * 1. a child process (workers/waiters.ts) opens N raw connections and, once all are open, sends
 *    `BLPOP bench:sem:<i> <T>` on each, all in one go;
 * 2. the run waits until every waiter is parked: for direct Redis, `INFO clients` blocked_clients
 *    = N; for respool, until its watcher connection is blocked in one BLPOP on all N keys
 *    (`CLIENT LIST` on Redis: `cmd=blpop`, `flags=b`, and `argv-mem` equal to the summed length
 *    of BLPOP, the N key names and 0, which Redis 7.0 reports for a blocked command's arguments).
 *    respool's admin commands do not show parked waiters, so Redis's side is what is watched;
 * 3. one raw connection straight to Redis pushes a token (`RPUSH bench:sem:<i> <i>`) for a
 *    random half of the waiters, in random order, pipelined: at a steady rate (chunks every
 *    10 ms) or as a burst (every chunk written at once). The time each chunk is written is that
 *    token's push time;
 * 4. each waiter records when its reply arrives (process.hrtime: CLOCK_MONOTONIC, one clock for
 *    both processes); wake latency = reply time − push time.
 *
 * Counted per run: waiters woken, wake latency p50/p99/max, wrong timeouts (a nil reply although
 * the token was pushed before the waiter's own timeout), waiters with no reply at all by their
 * timeout plus a grace period, error replies and other wrong replies, tokens left in Redis after
 * the waiters have gone, and the connections Redis had (`INFO clients` connected_clients minus the
 * benchmark's own two) while the waiters waited and were woken. The run ends as soon as every
 * pushed waiter has its reply; the unpushed half is then disconnected while still parked.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import net from 'node:net'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import { prng } from '../../test/helpers/prng.js'
import {
  WORKERS_DIR, fdLimit, logProblems, median, percentileSorted, progress, rotated, startRespool, stopChild, track,
  withFdLimit, type Server
} from './harness.js'
import { fmtInt, fmtMs, type Table } from './table.js'
import type { RedisAdmin } from './redis-admin.js'

export type PushMode = 'rate' | 'burst'

export interface WaitersConfig {
  /** Waiters per run. */
  counts: number[]
  /** respool --pool-size values; direct Redis runs as well. */
  pools: number[]
  rounds: number
  modes: PushMode[]
  /** Tokens per second in 'rate' mode. */
  rate: number
  /** Commands per write in 'burst' mode. */
  chunk: number
  /** The waiters' BLPOP timeout, seconds. */
  timeoutSec: number
  seed: number
}

export interface Anomaly { scenario: string, target: string, message: string, reproduce?: string }

const TICK_MS = 10
const KEY_PREFIX = 'bench:sem:'
/** The admin connection and the pusher: Redis connections that are the benchmark's own. */
const OWN_CONNECTIONS = 2

const intList = (v: string | undefined, def: number[]): number[] =>
  v === undefined || v === '' ? def : v.split(',').map((x) => Number(x.trim())).filter((x) => Number.isInteger(x) && x > 0)
const num = (name: string, v: string | undefined, def: number): number => {
  if (v === undefined || v === '') return def
  const n = Number(v)
  if (!Number.isFinite(n) || n <= 0) throw new Error(`${name} must be a positive number, got ${v}`)
  return n
}

/** Settings from the environment (WAITERS_*); QUICK=1 shrinks the defaults. */
export function waitersConfig (env: NodeJS.ProcessEnv, quick: boolean): WaitersConfig {
  const modes = (env.WAITERS_MODES ?? 'rate,burst').split(',').map((x) => x.trim().toLowerCase()).filter((x) => x !== '')
  for (const m of modes) if (m !== 'rate' && m !== 'burst') throw new Error(`WAITERS_MODES: rate and/or burst, got ${m}`)
  const pools = intList(env.WAITERS_POOLS, quick ? [4, 16] : [4, 8, 16])
  if (pools.some((p) => p < 2)) throw new Error(`WAITERS_POOLS: respool needs --pool-size 2 or more, got ${pools.join(',')}`)
  return {
    counts: intList(env.WAITERS, quick ? [1000] : [1000, 10000]),
    pools,
    rounds: Math.floor(num('WAITERS_ROUNDS', env.WAITERS_ROUNDS, quick ? 1 : 3)),
    modes: modes as PushMode[],
    rate: num('WAITERS_RATE', env.WAITERS_RATE, 2000),
    chunk: Math.floor(num('WAITERS_CHUNK', env.WAITERS_CHUNK, 100)),
    timeoutSec: Math.floor(num('WAITERS_TIMEOUT', env.WAITERS_TIMEOUT, 10)),
    seed: Math.floor(num('WAITERS_SEED', env.WAITERS_SEED, 1))
  }
}

/** What one run measured. */
export interface WaitRun {
  target: string
  pool: number | null
  waiters: number
  mode: PushMode
  round: number
  connected: number
  connectErrors: Record<string, number>
  /** Opening the N connections (200 at a time), before any BLPOP is sent. */
  connectMs: number
  /** The whole run, from starting the waiters to their results. */
  runMs: number
  /** From the first BLPOP sent until every waiter was seen parked (NaN: not seen). */
  parkMs: number
  allParked: boolean
  pushed: number
  /** From the first token written to the last. */
  pushSpanMs: number
  woken: number
  wakeMs: { p50: number, p99: number, max: number }
  /** Waiters woken per second, from the first token written to the last woken waiter's reply. */
  wakesPerSec: number
  /** nil although the token was pushed before the waiter's timeout. */
  wrongTimeouts: number
  /** Tokens pushed within 250 ms of (or after) their waiter's timeout: the benchmark was too slow, not counted as wrong. */
  latePushes: number
  /** Pushed waiters with no reply at all by their timeout plus the grace period. */
  noReply: number
  /** Error replies, closed connections, another waiter's element, an unpushed waiter's early nil. */
  wrongReplies: number
  errors: Record<string, number>
  errorSamples: string[]
  /** Keys left in Redis once the waiters were gone (each a token nobody took). */
  tokensLeft: number
  /** Most connections Redis had while the waiters waited and were woken, minus the benchmark's own. */
  redisConnectionsMax: number
  /** Redis's blocked_clients once all waiters were parked (direct: the waiters; respool: its watchers). */
  redisBlockedWhenParked: number
  pushReplyProblems: number
  logProblems: number
}

export interface WaitRow {
  waiters: number
  mode: PushMode
  target: string
  pool: number | null
  runs: WaitRun[]
  parkMs: number
  p50: number
  p99: number
  max: number
  woken: number
  pushed: number
  wrongTimeouts: number
  latePushes: number
  noReply: number
  wrongReplies: number
  tokensLeft: number
  connMin: number
  connMax: number
  blockedMin: number
  blockedMax: number
  pushSpanMs: number
  wakesPerSec: number
}

export interface WaitersReport {
  config: WaitersConfig
  rows: WaitRow[]
  tables: Table[]
  anomalies: Anomaly[]
  schedule: Array<{ scenario: string, round: number, cell: string, order: string[] }>
}

const nowUs = (): number => Number(process.hrtime.bigint() / 1000n)

function encode (args: string[]): Buffer {
  let s = `*${args.length}\r\n`
  for (const a of args) s += `$${Buffer.byteLength(a)}\r\n${a}\r\n`
  return Buffer.from(s, 'latin1')
}

function infoField (info: string, name: string): number {
  const m = new RegExp(`^${name}:(\\d+)`, 'm').exec(info)
  return m === null ? NaN : Number(m[1])
}

/** Fails with a clear message when the open-files limit or Redis's maxclients cannot take `n` waiters. */
export async function checkWaiterLimits (admin: RedisAdmin, n: number): Promise<void> {
  const limit = fdLimit()
  const need = n + 200
  if (limit.hard < need) {
    throw new Error(`the open-files limit (ulimit -n: soft ${limit.soft}, hard ${limit.hard}) is too low for ${n} waiters: ` +
      `the waiter process, respool and redis-server each need about ${need}. Raise it (ulimit -n ${need} or more, or /etc/security/limits.conf) or lower WAITERS`)
  }
  const maxclients = Number((await admin.redis.config('GET', 'maxclients') as string[])[1])
  if (maxclients < n + 100) throw new Error(`redis-server runs with maxclients ${maxclients}, too low for ${n} direct waiters (needs ${n + 100}); lower WAITERS`)
}

/** The waiters' child process and its lines. */
class WaiterProcess {
  readonly child: ChildProcess
  #out = ''
  #err = ''

  constructor (port: number, count: number, timeoutSec: number) {
    const [file, argv] = withFdLimit(process.execPath, [join(WORKERS_DIR, 'waiters.js'), JSON.stringify({ port, count, prefix: KEY_PREFIX, timeoutSec })])
    this.child = track(spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'] }))
    this.child.stdout?.on('data', (d: Buffer) => { this.#out += d.toString() })
    this.child.stderr?.on('data', (d: Buffer) => { this.#err += d.toString() })
  }

  /** The JSON after `prefix` on a line of its output, once there is one. */
  async line<T> (prefix: string, timeoutMs: number): Promise<T> {
    const deadline = performance.now() + timeoutMs
    for (;;) {
      const start = this.#out.indexOf(`${prefix} `)
      if (start !== -1) {
        const end = this.#out.indexOf('\n', start)
        if (end !== -1) return JSON.parse(this.#out.slice(start + prefix.length + 1, end)) as T
      }
      const failed = /FAILED (.*)/.exec(this.#out)
      if (failed !== null) throw new Error(`waiters: ${failed[1]}`)
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`waiters exited (${this.child.exitCode ?? this.child.signalCode}): ${this.#err.slice(-500)}`)
      if (performance.now() > deadline) throw new Error(`waiters printed no ${prefix} line within ${timeoutMs} ms`)
      await delay(prefix === 'RESULT' ? 20 : 10)
    }
  }

  send (line: string): void {
    this.child.stdin?.write(`${line}\n`)
  }

  async quit (): Promise<void> {
    if (this.child.exitCode !== null || this.child.signalCode !== null) return
    const exited = once(this.child, 'exit')
    this.send('QUIT')
    const timer = setTimeout(() => { void stopChild(this.child) }, 5000)
    await exited
    clearTimeout(timer)
  }
}

/** A raw connection straight to Redis that writes tokens and counts RPUSH's replies. */
class Pusher {
  readonly socket: net.Socket
  replies = 0
  /** RPUSH replies other than :1 (the list had something already, or an error). */
  problems = 0
  #buf = ''

  constructor (port: number) {
    this.socket = net.connect({ host: '127.0.0.1', port })
    this.socket.setNoDelay(true)
    this.socket.on('data', (d: Buffer) => {
      this.#buf += d.toString('latin1')
      let nl: number
      while ((nl = this.#buf.indexOf('\r\n')) !== -1) {
        if (this.#buf.slice(0, nl) !== ':1') this.problems++
        this.replies++
        this.#buf = this.#buf.slice(nl + 2)
      }
    })
    this.socket.on('error', () => { this.problems++ })
  }

  async ready (): Promise<void> {
    await once(this.socket, 'connect')
  }

  close (): void {
    this.socket.destroy()
  }
}

/** Redis's connection count, sampled while the waiters wait. */
class ConnectionSampler {
  max = 0
  #timer: NodeJS.Timeout
  #busy = false

  constructor (readonly admin: RedisAdmin) {
    this.#timer = setInterval(() => { void this.sample() }, 100)
  }

  async sample (): Promise<string | null> {
    if (this.#busy) return null
    this.#busy = true
    try {
      const info = await this.admin.redis.info('clients')
      const n = infoField(info, 'connected_clients') - OWN_CONNECTIONS
      if (n > this.max) this.max = n
      return info
    } catch {
      return null
    } finally {
      this.#busy = false
    }
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
    while (this.#busy) await delay(5)
    await this.sample()
  }
}

/**
 * Until every waiter is parked: direct, blocked_clients reaches the waiters; respool, one of its
 * connections is blocked in BLPOP on every waiter's key (argv-mem = BLPOP + keys + "0"), or, with
 * many keys, its RESPOOL POOLS shows them all parked and read by its tracking connection.
 */
async function waitParked (admin: RedisAdmin, target: Server, connected: number[], deadlineMs: number): Promise<{ ok: boolean, blocked: number }> {
  const wantArgv = 'BLPOP'.length + 1 + connected.reduce((sum, i) => sum + KEY_PREFIX.length + String(i).length, 0)
  for (;;) {
    let blocked: number
    let ok = false
    if (target.kind === 'direct') {
      blocked = infoField(await admin.redis.info('clients'), 'blocked_clients')
      ok = blocked >= connected.length
    } else {
      // Blocked connections counted from the same CLIENT LIST snapshot as the watcher's wait.
      blocked = 0
      const list = await admin.redis.client('LIST') as string
      for (const line of list.split('\n')) {
        if (!/ flags=\S*b/.test(line)) continue
        blocked++
        if (!/ name=respool /.test(line) || !/ cmd=blpop /.test(line)) continue
        const argv = /\bargv-mem=(\d+)/.exec(line)
        if (argv !== null && Number(argv[1]) === wantArgv) ok = true
      }
      if (!ok) ok = await trackedAll(target.port, connected.length)
    }
    if (ok || performance.now() > deadlineMs) return { ok, blocked }
    await delay(20)
  }
}

/** respool watches all `n` waiters' keys through CLIENT TRACKING (RESPOOL POOLS). */
async function trackedAll (port: number, n: number): Promise<boolean> {
  const socket = net.connect({ port, host: '127.0.0.1' })
  socket.on('error', () => {})
  try {
    await once(socket, 'connect')
    socket.write('*2\r\n$7\r\nRESPOOL\r\n$5\r\nPOOLS\r\n')
    let text = ''
    while (!/\r\nparked_tracked_keys:\d+\r\n/.test(text)) text += String((await once(socket, 'data'))[0])
    const field = (name: string): number => Number(new RegExp(`\\r\\n${name}:(\\d+)\\r\\n`).exec(text)?.[1] ?? -1)
    return field('parked') >= n && field('parked_tracked_keys') >= n && /\r\nparked_tracking:ready\r\n/.test(text)
  } catch {
    return false
  } finally {
    socket.destroy()
  }
}

function shuffled (xs: number[], random: () => number): number[] {
  const out = [...xs]
  for (let i = out.length - 1; i > 0; i--) {
    const j = Math.floor(random() * (i + 1))
    const t = out[i]
    out[i] = out[j]
    out[j] = t
  }
  return out
}

interface WaiterResult { sentUs: number[], replyUs: number[], kind: number[], replies: number, errors: Record<string, number>, errorSamples: string[] }
interface SentLine { connected: number, failed: number[], errors: Record<string, number>, startUs: number, connectedUs: number, firstSentUs: number, lastSentUs: number }

const ELEMENT = 1
const NIL = 2

/** One run: N waiters on `target`, half of them woken by tokens pushed straight to Redis. */
async function oneRun (target: Server, pool: number | null, admin: RedisAdmin, n: number, mode: PushMode, round: number, cfg: WaitersConfig, seed: number): Promise<WaitRun> {
  await admin.redis.flushdb()
  const startUs = nowUs()
  const pusher = new Pusher(admin.port)
  await pusher.ready()
  const sampler = new ConnectionSampler(admin)
  const waiters = new WaiterProcess(target.port, n, cfg.timeoutSec)
  try {
    const sent = await waiters.line<SentLine>('SENT', 120000)
    const failed = new Set(sent.failed)
    const connected: number[] = []
    for (let i = 0; i < n; i++) if (!failed.has(i)) connected.push(i)

    // Parked before half the timeout has gone, or the tokens would come too late to mean anything.
    const parkWaitMs = Math.max(0, (sent.firstSentUs + cfg.timeoutSec * 500e3 - nowUs()) / 1000)
    const parked = await waitParked(admin, target, connected, performance.now() + parkWaitMs)
    const parkedAtUs = nowUs()

    const toPush = shuffled(connected, prng(seed)).slice(0, Math.floor(connected.length / 2))
    waiters.send(`EXPECT ${JSON.stringify(toPush)}`)
    const pushUs = new Float64Array(n)
    const commands = toPush.map((i) => encode(['RPUSH', `${KEY_PREFIX}${i}`, String(i)]))
    const writeChunk = (from: number, to: number): void => {
      const t = nowUs()
      for (let k = from; k < to; k++) pushUs[toPush[k]] = t
      pusher.socket.write(Buffer.concat(commands.slice(from, to)))
    }
    if (mode === 'burst') {
      for (let k = 0; k < toPush.length; k += cfg.chunk) writeChunk(k, Math.min(toPush.length, k + cfg.chunk))
    } else {
      const perTick = Math.max(1, Math.round(cfg.rate * TICK_MS / 1000))
      const t0 = performance.now()
      for (let k = 0, tick = 0; k < toPush.length; k += perTick, tick++) {
        const wait = t0 + tick * TICK_MS - performance.now()
        if (wait > 1) await delay(wait)
        writeChunk(k, Math.min(toPush.length, k + perTick))
      }
    }
    const pushSpanMs = toPush.length === 0 ? 0 : (pushUs[toPush[toPush.length - 1]] - pushUs[toPush[0]]) / 1000

    const resultWaitMs = Math.max(0, (sent.lastSentUs - nowUs()) / 1000) + cfg.timeoutSec * 1000 + 20000
    const res = await waiters.line<WaiterResult>('RESULT', resultWaitMs)
    const pushDeadline = performance.now() + 5000
    while (pusher.replies < toPush.length && performance.now() < pushDeadline) await delay(5)
    await sampler.stop()
    await waiters.quit()

    // Count the outcome of every waiter.
    const pushed = new Set(toPush)
    const lat: number[] = []
    let lastWakeUs = 0
    let wrongTimeouts = 0
    let latePushes = 0
    let noReply = 0
    let wrongReplies = 0
    for (const i of connected) {
      const k = res.kind[i]
      if (pushed.has(i)) {
        const late = pushUs[i] > res.sentUs[i] + cfg.timeoutSec * 1e6 - 250e3
        if (late) latePushes++
        if (k === ELEMENT) {
          lat.push((res.replyUs[i] - pushUs[i]) / 1000)
          if (res.replyUs[i] > lastWakeUs) lastWakeUs = res.replyUs[i]
        }
        else if (k === NIL) { if (!late) wrongTimeouts++ } else if (k === 0) noReply++
        else wrongReplies++
      } else if (k === NIL) {
        // An unpushed waiter times out after its T seconds; earlier than that is wrong.
        if (res.replyUs[i] < res.sentUs[i] + cfg.timeoutSec * 1e6 - 50e3) wrongReplies++
      } else if (k !== 0) {
        wrongReplies++
      }
    }
    lat.sort((a, b) => a - b)

    // Tokens nobody took (each a key still in Redis), once respool has had 300 ms to put back
    // anything it took for a waiter that left.
    await delay(target.kind === 'respool' ? 300 : 100)
    const tokensLeft = await admin.redis.dbsize()
    const log = target.kind === 'respool' ? logProblems(target.logFile, 5) : { count: 0, samples: [] }
    return {
      target: target.name,
      pool,
      waiters: n,
      mode,
      round,
      connected: connected.length,
      connectErrors: sent.errors,
      connectMs: (sent.connectedUs - sent.startUs) / 1000,
      runMs: (nowUs() - startUs) / 1000,
      parkMs: parked.ok ? (parkedAtUs - sent.firstSentUs) / 1000 : NaN,
      allParked: parked.ok,
      pushed: toPush.length,
      pushSpanMs,
      woken: lat.length,
      wakeMs: { p50: percentileSorted(lat, 50), p99: percentileSorted(lat, 99), max: lat.length === 0 ? NaN : lat[lat.length - 1] },
      wakesPerSec: lat.length === 0 ? NaN : lat.length / ((lastWakeUs - pushUs[toPush[0]]) / 1e6),
      wrongTimeouts,
      latePushes,
      noReply,
      wrongReplies,
      errors: res.errors,
      errorSamples: [...res.errorSamples, ...log.samples],
      tokensLeft,
      redisConnectionsMax: sampler.max,
      redisBlockedWhenParked: parked.blocked,
      pushReplyProblems: pusher.problems + (toPush.length - pusher.replies),
      logProblems: log.count
    }
  } finally {
    await sampler.stop()
    pusher.close()
    await waiters.quit()
  }
}

const cellLabel = (n: number, mode: PushMode): string => `${n} waiters, ${mode}`

/**
 * Every run of the scenario: for each number of waiters and push mode, `rounds` rounds of direct
 * Redis and each pool size, in an order rotated every round. Each respool run is a fresh process.
 */
export async function scenarioWaiters (redisServer: Server, admin: RedisAdmin, cfg: WaitersConfig, scenario = 'w'): Promise<WaitersReport> {
  const anomalies: Anomaly[] = []
  const schedule: WaitersReport['schedule'] = []
  const runs: WaitRun[] = []
  for (const n of cfg.counts) await checkWaiterLimits(admin, n)
  const entries: Array<{ name: string, pool: number | null }> = [{ name: 'direct', pool: null }, ...cfg.pools.map((pool) => ({ name: `respool(${pool})`, pool }))]
  const cells = cfg.counts.flatMap((n) => cfg.modes.map((mode) => ({ n, mode })))
  for (const [ci, cell] of cells.entries()) {
    for (let r = 0; r < cfg.rounds; r++) {
      const order = rotated(entries, r + ci)
      schedule.push({ scenario, round: r + 1, cell: cellLabel(cell.n, cell.mode), order: order.map((e) => e.name) })
      // The same waiters get tokens on every target of a round.
      const seed = cfg.seed * 1000003 + ci * 1009 + r
      for (const e of order) {
        const target = e.pool === null
          ? redisServer
          : await startRespool(redisServer.port, { poolSize: e.pool, extra: ['--park-blocking', 'yes', '--max-clients', String(cell.n + 100)] })
        try {
          const run = await oneRun(target, e.pool, admin, cell.n, cell.mode, r + 1, cfg, seed)
          runs.push(run)
          progress(`(${scenario}) ${cellLabel(cell.n, cell.mode)} round ${r + 1}/${cfg.rounds} ${target.name}: ` +
            `connected in ${fmtInt(run.connectMs)} ms, parked in ${fmtInt(run.parkMs)} ms, woken ${run.woken}/${run.pushed} (tokens over ${fmtInt(run.pushSpanMs)} ms, ${fmtInt(run.wakesPerSec)}/s), ` +
            `wake p50 ${fmtMs(run.wakeMs.p50)} p99 ${fmtMs(run.wakeMs.p99)} max ${fmtMs(run.wakeMs.max)} ms, wrong timeouts ${run.wrongTimeouts}, ` +
            `no reply ${run.noReply}, wrong replies ${run.wrongReplies}, tokens left ${run.tokensLeft}, Redis connections ≤ ${run.redisConnectionsMax}, blocked ${run.redisBlockedWhenParked}; run ${(run.runMs / 1000).toFixed(1)} s`)
          noteAnomalies(scenario, run, cfg, anomalies)
        } catch (err) {
          anomalies.push({ scenario, target: e.name, message: `${cellLabel(cell.n, cell.mode)} round ${r + 1}: run failed: ${(err as Error).message}` })
          progress(`(${scenario}) ${cellLabel(cell.n, cell.mode)} round ${r + 1} ${e.name} failed: ${(err as Error).stack ?? String(err)}`)
        } finally {
          if (target !== redisServer) {
            await target.stop()
            await untilRespoolGone(admin)
          }
        }
      }
    }
  }
  const rows = aggregate(runs, cells, entries)
  return { config: cfg, rows, tables: tablesOf(rows, cfg), anomalies, schedule }
}

async function untilRespoolGone (admin: RedisAdmin): Promise<void> {
  const deadline = performance.now() + 3000
  while (performance.now() < deadline) {
    try {
      if ((await admin.respoolConnections()).respool === 0) return
    } catch { return }
    await delay(20)
  }
}

function noteAnomalies (scenario: string, run: WaitRun, cfg: WaitersConfig, out: Anomaly[]): void {
  const at = `${cellLabel(run.waiters, run.mode)} round ${run.round}`
  const add = (message: string): void => { out.push({ scenario, target: run.target, message: `${at}: ${message}`, reproduce: reproduceLine(run, cfg) }) }
  if (run.connected < run.waiters) add(`only ${run.connected}/${run.waiters} waiters connected: ${JSON.stringify(run.connectErrors)}`)
  if (!run.allParked) add(`not every waiter was seen parked within ${cfg.timeoutSec / 2} s; tokens were pushed anyway`)
  if (run.wrongTimeouts > 0) {
    add(`${run.wrongTimeouts} wrong timeouts (nil although the token was pushed before the waiter's timeout)` +
      (run.tokensLeft === run.wrongTimeouts ? `; their ${run.tokensLeft} tokens were left in Redis` : ''))
  }
  if (run.noReply > 0) add(`${run.noReply} pushed waiters had no reply at all ${cfg.timeoutSec} s + 3 s after their BLPOP`)
  if (run.wrongReplies > 0) add(`${run.wrongReplies} wrong replies: ${JSON.stringify(run.errors)} ${run.errorSamples.join(' / ')}`)
  if (run.latePushes > 0) add(`${run.latePushes} tokens were pushed within 250 ms of their waiter's timeout (the run was too slow; not counted as wrong timeouts)`)
  if (run.tokensLeft > 0 && run.tokensLeft !== run.wrongTimeouts) add(`${run.tokensLeft} tokens left in Redis after the run (pushed but taken by nobody, or put back)`)
  if (run.pushReplyProblems > 0) add(`${run.pushReplyProblems} RPUSH replies other than :1 (or missing)`)
  if (run.logProblems > 0) add(`respool logged ${run.logProblems} warning/error line(s), e.g. ${run.errorSamples.slice(-1).join('')}`)
  if (run.pool !== null && run.redisConnectionsMax > run.pool) add(`${run.redisConnectionsMax} connections on Redis during the wait, more than --pool-size ${run.pool}`)
}

function reproduceLine (run: WaitRun, cfg: WaitersConfig): string {
  return `WAITERS=${run.waiters} WAITERS_MODES=${run.mode} WAITERS_POOLS=${run.pool ?? cfg.pools[0]} WAITERS_TIMEOUT=${cfg.timeoutSec} WAITERS_SEED=${cfg.seed} npm run bench:waiters`
}

function aggregate (runs: WaitRun[], cells: Array<{ n: number, mode: PushMode }>, entries: Array<{ name: string, pool: number | null }>): WaitRow[] {
  const rows: WaitRow[] = []
  for (const cell of cells) {
    for (const e of entries) {
      const rs = runs.filter((x) => x.waiters === cell.n && x.mode === cell.mode && x.target === e.name)
      if (rs.length === 0) continue
      const sum = (f: (x: WaitRun) => number): number => rs.reduce((a, x) => a + f(x), 0)
      rows.push({
        waiters: cell.n,
        mode: cell.mode,
        target: e.name,
        pool: e.pool,
        runs: rs,
        parkMs: median(rs.map((x) => x.parkMs)),
        p50: median(rs.map((x) => x.wakeMs.p50)),
        p99: median(rs.map((x) => x.wakeMs.p99)),
        max: median(rs.map((x) => x.wakeMs.max)),
        woken: sum((x) => x.woken),
        pushed: sum((x) => x.pushed),
        wrongTimeouts: sum((x) => x.wrongTimeouts),
        latePushes: sum((x) => x.latePushes),
        noReply: sum((x) => x.noReply),
        wrongReplies: sum((x) => x.wrongReplies),
        tokensLeft: sum((x) => x.tokensLeft),
        connMin: Math.min(...rs.map((x) => x.redisConnectionsMax)),
        connMax: Math.max(...rs.map((x) => x.redisConnectionsMax)),
        blockedMin: Math.min(...rs.map((x) => x.redisBlockedWhenParked)),
        blockedMax: Math.max(...rs.map((x) => x.redisBlockedWhenParked)),
        pushSpanMs: median(rs.map((x) => x.pushSpanMs)),
        wakesPerSec: median(rs.map((x) => x.wakesPerSec))
      })
    }
  }
  return rows
}

const range = (a: number, b: number): string => a === b ? fmtInt(a) : `${fmtInt(a)}–${fmtInt(b)}`

function tablesOf (rows: WaitRow[], cfg: WaitersConfig): Table[] {
  const modeText = (m: PushMode): string => m === 'rate'
    ? `tokens at ${fmtInt(cfg.rate)}/s (a chunk every ${TICK_MS} ms)`
    : `tokens as a burst (${cfg.chunk} per write, all written at once)`
  const tables: Table[] = []
  for (const n of cfg.counts) {
    for (const mode of cfg.modes) {
      const rs = rows.filter((r) => r.waiters === n && r.mode === mode)
      if (rs.length === 0) continue
      tables.push({
        title: `(w) ${fmtInt(n)} waiters (BLPOP, ${cfg.timeoutSec} s timeout), a random half woken by ${modeText(mode)} — median of ${cfg.rounds} round(s), target order rotated each round`,
        headers: ['target', 'parked in ms', 'woken', 'tokens over ms', 'woken/s', 'wake p50 ms', 'p99 ms', 'max ms', 'wrong timeouts', 'no reply', 'wrong replies', 'tokens left', 'Redis connections', 'Redis blocked clients'],
        rows: rs.map((r) => [
          r.target, fmtInt(r.parkMs), `${fmtInt(r.woken)}/${fmtInt(r.pushed)}`, fmtInt(r.pushSpanMs), fmtInt(r.wakesPerSec), fmtMs(r.p50), fmtMs(r.p99), fmtMs(r.max),
          fmtInt(r.wrongTimeouts), fmtInt(r.noReply), fmtInt(r.wrongReplies), fmtInt(r.tokensLeft), range(r.connMin, r.connMax), range(r.blockedMin, r.blockedMax)
        ]),
        notes: tables.length > 0 ? ['columns as under the first (w) table'] : [
          'wake latency = time the waiter read its reply − time the token\'s chunk was written to Redis (one monotonic clock, two processes); p50/p99/max, woken/s and "parked in" are medians over rounds, counts are sums over rounds',
          'tokens over = first token written → last; woken/s = waiters woken ÷ (first token written → last woken waiter\'s reply): the rate of the tokens when the wake-ups keep up, lower when they do not',
          'parked in = first BLPOP sent → every waiter seen parked (direct: INFO blocked_clients; respool: its watcher blocked in BLPOP on every key, from CLIENT LIST, or, from 256 keys on, every key read by its tracking connection, from RESPOOL POOLS)',
          `wrong timeouts = nil although the token was pushed before the waiter's ${cfg.timeoutSec} s timeout (must be 0); no reply = nothing by the timeout + 3 s; wrong replies = errors, closed connections, another waiter's element, or an early nil for an unpushed waiter`,
          'tokens left = keys still in Redis after the waiters left (a token nobody took)',
          'Redis connections = most connections Redis had during the wait and the wake-ups (INFO clients), minus the benchmark\'s admin and pusher connections; Redis blocked clients = blocked connections on Redis once all were parked (direct: INFO blocked_clients; respool: connections with flag b in the same CLIENT LIST, i.e. its watchers)',
          'respool runs with --park-blocking yes --max-clients N+100; a fresh process for every run'
        ]
      })
    }
  }
  return tables
}
