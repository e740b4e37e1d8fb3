/**
 * The pub/sub fan-out scenario, run by `fanout.bench.ts`: many subscribers on a few channels and
 * patterns, one publisher at a fixed rate, against direct Redis and respool (`--shared-pubsub yes`,
 * all subscribers on one upstream subscriber connection).
 *
 * One run, against direct Redis or a fresh respool:
 *
 * 1. the publisher's raw connection is opened (to the target: respool sees PUBLISH and adjusts
 *    its receiver count);
 * 2. child processes (workers/fanout-subscribers.ts) open the N subscribers' connections and send
 *    each its SUBSCRIBE or PSUBSCRIBE (see lib/fanout-plan.ts: C channels, every k-th subscriber
 *    on one of C/10 patterns that each match ten channels); the run waits for every confirmation;
 * 3. the publisher publishes at R messages/s for S seconds, round-robin over the channels, in
 *    10 ms ticks; each message's payload is `<g>:<send time>`, the send time taken as its tick is
 *    written (process.hrtime, µs: CLOCK_MONOTONIC, one clock for every process);
 * 4. each subscriber checks every message: its own channel or pattern, not seen before, after
 *    the ones it already had; latency = time read − send time. Once every subscriber has every
 *    message it must get (or a grace period has passed), the workers report.
 *
 * Counted per run: deliveries (against those expected), delivery latency p50/p99/max, deliveries
 * per second, messages lost / duplicated / out of order / wrong (each must be 0), PUBLISH's
 * receiver count against the number of subscribers of the channel and its pattern, the most
 * connections Redis had (INFO clients connected_clients minus the benchmark's own), the channel
 * subscriptions Redis held (Σ PUBSUB NUMSUB), respool's RSS, and the CPU each process used
 * while the messages were published and delivered.
 */
import { spawn, type ChildProcess } from 'node:child_process'
import { once } from 'node:events'
import net from 'node:net'
import { join } from 'node:path'
import { setTimeout as delay } from 'node:timers/promises'
import {
  WORKERS_DIR, cpuSeconds, fdLimit, logProblems, median, memoryKiB, progress, rotated, startRespool, stopChild, track,
  withFdLimit, type Server
} from './harness.js'
import { channelName, channelOfMessage, covers, patternCount, subscriptionOf, type FanoutPlan } from './fanout-plan.js'
import { fmtInt, fmtMiB, fmtPct, type Table } from './table.js'
import type { RedisAdmin } from './redis-admin.js'

export interface FanoutConfig {
  subscribers: number
  channels: number
  /** Share of subscribers on a pattern, as asked; `plan.patternEvery` is what it rounds to. */
  patternShare: number
  plan: FanoutPlan
  /** Messages per second. */
  rate: number
  seconds: number
  pools: number[]
  rounds: number
  /** Subscriber child processes (the subscribers are split between them). */
  workers: number
  /** After the last message is published, how long to wait for deliveries still missing. */
  graceMs: number
}

export interface Anomaly { scenario: string, target: string, message: string, reproduce?: string }

const TICK_MS = 10
const PREFIX = 'bench:fan:'

const intList = (v: string | undefined, def: number[]): number[] =>
  v === undefined || v === '' ? def : v.split(',').map((x) => Number(x.trim())).filter((x) => Number.isInteger(x) && x > 0)
const num = (name: string, v: string | undefined, def: number, min = Number.MIN_VALUE): number => {
  if (v === undefined || v === '') return def
  const n = Number(v)
  if (!Number.isFinite(n) || n < min) throw new Error(`${name} must be a number ≥ ${min}, got ${v}`)
  return n
}

/** Settings from the environment (FANOUT_*); QUICK=1 shrinks the defaults. */
export function fanoutConfig (env: NodeJS.ProcessEnv, quick: boolean): FanoutConfig {
  const subscribers = Math.floor(num('FANOUT_SUBSCRIBERS', env.FANOUT_SUBSCRIBERS, quick ? 1000 : 10000, 1))
  const channels = Math.floor(num('FANOUT_CHANNELS', env.FANOUT_CHANNELS, 100, 10))
  if (channels % 10 !== 0) throw new Error(`FANOUT_CHANNELS must be a multiple of 10 (each pattern matches 10 channels), got ${channels}`)
  const patternShare = num('FANOUT_PATTERN_SHARE', env.FANOUT_PATTERN_SHARE, 0.1, 0)
  if (patternShare > 0.5) throw new Error(`FANOUT_PATTERN_SHARE must be between 0 and 0.5, got ${patternShare}`)
  const pools = intList(env.FANOUT_POOLS, [8])
  if (pools.some((p) => p < 2)) throw new Error(`FANOUT_POOLS: respool needs --pool-size 2 or more, got ${pools.join(',')}`)
  return {
    subscribers,
    channels,
    patternShare,
    plan: { subscribers, channels, patternEvery: patternShare === 0 ? 0 : Math.max(2, Math.round(1 / patternShare)), prefix: PREFIX },
    rate: num('FANOUT_RATE', env.FANOUT_RATE, 1000),
    seconds: num('FANOUT_SECONDS', env.FANOUT_SECONDS, quick ? 2 : 5),
    pools,
    rounds: Math.floor(num('FANOUT_ROUNDS', env.FANOUT_ROUNDS, quick ? 1 : 3, 1)),
    workers: Math.floor(num('FANOUT_WORKERS', env.FANOUT_WORKERS, 1, 1)),
    graceMs: Math.floor(num('FANOUT_GRACE_MS', env.FANOUT_GRACE_MS, 10000, 0))
  }
}

/** What one run measured. */
export interface FanoutRun {
  target: string
  pool: number | null
  round: number
  connected: number
  confirmed: number
  connectErrors: Record<string, number>
  /** First connection started → every subscriber confirmed. */
  subscribeMs: number
  published: number
  /** First message written → last. */
  publishSpanMs: number
  deliveries: number
  expectedDeliveries: number
  /** Deliveries ÷ (first message written → last delivery). */
  deliveriesPerSec: number
  latencyMs: { p50: number, p99: number, max: number }
  /** First message written → last delivery. */
  drainMs: number
  lost: number
  duplicates: number
  outOfOrder: number
  wrong: number
  closed: number
  subsLost: number
  subsDup: number
  subsDisorder: number
  subsWrong: number
  lossSamples: string[]
  errors: Record<string, number>
  errorSamples: string[]
  /** PUBLISH replies equal to the subscribers of the channel plus those of its pattern. */
  publishCountOk: number
  publishReplies: number
  publishErrors: number
  publishCountSamples: string[]
  publishCountGot: { min: number, max: number }
  publishCountWant: { min: number, max: number }
  publishRttMs: { p50: number, p99: number }
  /** Most connections Redis had during the run, minus the benchmark's own. */
  redisConnectionsMax: number
  /** Σ PUBSUB NUMSUB over the channels, asked of Redis once everyone was subscribed. */
  redisChannelSubscriptions: number
  /** respool's VmRSS after start, once everyone was subscribed, and its VmHWM at the end (KiB). */
  rssIdleKiB: number
  rssSubscribedKiB: number
  rssPeakKiB: number
  /** redis-server's VmRSS growth from before the subscribers to once they were all subscribed (KiB). */
  redisRssGrowthKiB: number
  /** CPU used from the first message to the last delivery, as a share of one core. */
  cpu: { target: number, redis: number, subscribers: number }
  logProblems: number
  logSamples: string[]
}

export interface FanoutRow {
  target: string
  pool: number | null
  runs: FanoutRun[]
  subscribeMs: number
  published: number
  publishSpanMs: number
  deliveries: number
  expectedDeliveries: number
  deliveriesPerSec: number
  p50: number
  p99: number
  max: number
  lost: number
  duplicates: number
  outOfOrder: number
  wrong: number
  closed: number
  publishCountOk: number
  publishReplies: number
  publishCountGot: { min: number, max: number }
  publishCountWant: { min: number, max: number }
  publishRttP50: number
  publishRttP99: number
  connMin: number
  connMax: number
  numsubMin: number
  numsubMax: number
  rssIdleKiB: number
  rssSubscribedKiB: number
  rssPeakKiB: number
  redisRssGrowthKiB: number
  cpuTarget: number
  cpuRedis: number
  cpuSubscribers: number
}

export interface FanoutReport {
  config: FanoutConfig
  rows: FanoutRow[]
  tables: Table[]
  anomalies: Anomaly[]
  schedule: Array<{ round: number, order: string[] }>
}

const nowUs = (): number => Number(process.hrtime.bigint() / 1000n)

function infoField (info: string, name: string): number {
  const m = new RegExp(`^${name}:(\\d+)`, 'm').exec(info)
  return m === null ? NaN : Number(m[1])
}

/** Fails with a clear message when the open-files limit or Redis's maxclients cannot take `n` subscribers. */
async function checkLimits (admin: RedisAdmin, n: number, workers: number): Promise<void> {
  const limit = fdLimit()
  const need = Math.ceil(n / workers) + 200
  if (limit.hard < n + 200) {
    throw new Error(`the open-files limit (ulimit -n: soft ${limit.soft}, hard ${limit.hard}) is too low for ${n} subscribers: ` +
      `respool and redis-server each need about ${n + 200} (each subscriber process ${need}). Raise it or lower FANOUT_SUBSCRIBERS`)
  }
  const maxclients = Number((await admin.redis.config('GET', 'maxclients') as string[])[1])
  if (maxclients < n + 100) throw new Error(`redis-server runs with maxclients ${maxclients}, too low for ${n} direct subscribers (needs ${n + 100}); lower FANOUT_SUBSCRIBERS`)
}

/** One subscriber child process and its lines. */
class SubscriberProcess {
  readonly child: ChildProcess
  #out = ''
  #err = ''

  constructor (port: number, first: number, count: number, cfg: FanoutConfig) {
    const arg = JSON.stringify({ port, first, count, plan: cfg.plan, graceMs: cfg.graceMs })
    const [file, argv] = withFdLimit(process.execPath, [join(WORKERS_DIR, 'fanout-subscribers.js'), arg])
    this.child = track(spawn(file, argv, { stdio: ['pipe', 'pipe', 'pipe'] }))
    this.child.stdout?.on('data', (d: Buffer) => { this.#out += d.toString() })
    this.child.stderr?.on('data', (d: Buffer) => { this.#err += d.toString() })
  }

  get pid (): number {
    return this.child.pid ?? 0
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
      if (failed !== null) throw new Error(`subscribers: ${failed[1]}`)
      if (this.child.exitCode !== null || this.child.signalCode !== null) throw new Error(`subscribers exited (${this.child.exitCode ?? this.child.signalCode}): ${this.#err.slice(-500)}`)
      if (performance.now() > deadline) throw new Error(`subscribers printed no ${prefix} line within ${timeoutMs} ms`)
      await delay(10)
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

/** A raw connection that publishes `<g>:<send µs>` to channel g % C and checks PUBLISH's replies. */
class Publisher {
  readonly socket: net.Socket
  sent = 0
  replies = 0
  errors = 0
  countOk = 0
  readonly countSamples: string[] = []
  readonly errorSamples: string[] = []
  got = { min: Infinity, max: -Infinity }
  want = { min: Infinity, max: -Infinity }
  readonly rttUs: number[] = []
  readonly #sentUs: number[] = []
  #rest: Buffer | null = null

  constructor (port: number, readonly plan: FanoutPlan, readonly expected: number[]) {
    this.socket = net.connect({ host: '127.0.0.1', port })
    this.socket.setNoDelay(true)
    this.socket.on('error', () => { /* counted as missing replies */ })
    this.socket.on('data', (d: Buffer) => { this.#onData(d, nowUs()) })
  }

  async ready (): Promise<void> {
    if (this.socket.readyState !== 'open') await once(this.socket, 'connect')
  }

  /** Publishes messages sent … upTo−1 in one write. */
  publishUpTo (upTo: number): void {
    if (upTo <= this.sent) return
    const t = nowUs()
    let s = ''
    for (let g = this.sent; g < upTo; g++) {
      const channel = channelName(this.plan, channelOfMessage(this.plan, g))
      const payload = `${g}:${t}`
      s += `*3\r\n$7\r\nPUBLISH\r\n$${channel.length}\r\n${channel}\r\n$${payload.length}\r\n${payload}\r\n`
      this.#sentUs.push(t)
    }
    this.sent = upTo
    this.socket.write(s, 'latin1')
  }

  #onData (d: Buffer, atUs: number): void {
    const buf = this.#rest === null ? d : Buffer.concat([this.#rest, d])
    let pos = 0
    for (;;) {
      const eol = buf.indexOf('\r\n', pos)
      if (eol === -1) break
      const line = buf.toString('latin1', pos, eol)
      pos = eol + 2
      const g = this.replies++
      this.rttUs.push(atUs - (this.#sentUs[g] ?? atUs))
      if (line[0] !== ':') {
        this.errors++
        if (this.errorSamples.length < 5) this.errorSamples.push(line.slice(0, 200))
        continue
      }
      const n = Number(line.slice(1))
      const c = channelOfMessage(this.plan, g)
      const want = this.expected[c]
      if (n < this.got.min) this.got.min = n
      if (n > this.got.max) this.got.max = n
      if (want < this.want.min) this.want.min = want
      if (want > this.want.max) this.want.max = want
      if (n === want) this.countOk++
      else if (this.countSamples.length < 5) this.countSamples.push(`message ${g} to ${channelName(this.plan, c)}: ${n}, expected ${want}`)
    }
    this.#rest = pos >= buf.length ? null : buf.subarray(pos)
  }

  close (): void {
    this.socket.destroy()
  }
}

/** Redis's connection count, sampled every 100 ms. */
class ConnectionSampler {
  max = 0
  #timer: NodeJS.Timeout
  #busy = false

  constructor (readonly admin: RedisAdmin, readonly own: number) {
    this.#timer = setInterval(() => { void this.sample() }, 100)
  }

  async sample (): Promise<void> {
    if (this.#busy) return
    this.#busy = true
    try {
      const n = infoField(await this.admin.redis.info('clients'), 'connected_clients') - this.own
      if (n > this.max) this.max = n
    } catch { /* the next sample */ } finally {
      this.#busy = false
    }
  }

  async stop (): Promise<void> {
    clearInterval(this.#timer)
    while (this.#busy) await delay(5)
    await this.sample()
  }
}

interface ReadyLine {
  connected: number
  failed: number[]
  confirmed: number
  unconfirmedCount: number
  errors: Record<string, number>
  errorSamples: string[]
  badConfirmations: string[]
  startUs: number
  connectedUs: number
  lastConfirmedUs: number
  deliveriesBefore: number
}

interface ResultLine {
  deliveries: number
  expectedDeliveries: number
  lost: number
  duplicates: number
  outOfOrder: number
  wrong: number
  closed: number
  subsLost: number
  subsDup: number
  subsDisorder: number
  subsWrong: number
  firstDeliveryUs: number
  lastDeliveryUs: number
  maxLatencyUs: number
  hist: Array<[number, number]>
  errors: Record<string, number>
  errorSamples: string[]
  lossSamples: string[]
  badConfirmations: string[]
}

/** p-th percentile (nearest rank) of a histogram of [value, count]. */
function histPercentile (hist: Map<number, number>, total: number, p: number): number {
  if (total === 0) return NaN
  const rank = Math.max(1, Math.ceil((p / 100) * total))
  let seen = 0
  for (const k of [...hist.keys()].sort((a, b) => a - b)) {
    seen += hist.get(k) ?? 0
    if (seen >= rank) return k
  }
  return NaN
}

function percentile (xs: number[], p: number): number {
  if (xs.length === 0) return NaN
  const v = [...xs].sort((a, b) => a - b)
  return v[Math.min(v.length - 1, Math.max(0, Math.ceil((p / 100) * v.length) - 1))]
}

function mergeCounts (into: Record<string, number>, from: Record<string, number>): void {
  for (const [k, v] of Object.entries(from)) into[k] = (into[k] ?? 0) + v
}

async function redisConnections (admin: RedisAdmin): Promise<number> {
  return infoField(await admin.redis.info('clients'), 'connected_clients')
}

/** Until Redis has only the benchmark's admin connection (the last run's sockets are gone). */
async function untilQuiet (admin: RedisAdmin): Promise<void> {
  const deadline = performance.now() + 10000
  while (performance.now() < deadline) {
    try {
      if (await redisConnections(admin) <= 1) return
    } catch { return }
    await delay(50)
  }
}

/** One run: N subscribers and one publisher on `target`. */
async function oneRun (target: Server, redis: Server, pool: number | null, admin: RedisAdmin, round: number, cfg: FanoutConfig): Promise<FanoutRun> {
  const plan = cfg.plan
  const n = cfg.subscribers
  const rssIdle = target.kind === 'respool' ? memoryKiB(target.pid) : null
  const redisRssBefore = memoryKiB(redis.pid)
  // Expected receivers per channel, corrected below for subscribers that could not connect.
  const expected = new Array<number>(plan.channels).fill(0)
  const publisher = new Publisher(target.port, plan, expected)
  await publisher.ready()
  // The benchmark's own connections on Redis: the admin, and the publisher when it goes straight there.
  const sampler = new ConnectionSampler(admin, target.kind === 'direct' ? 2 : 1)
  const procs: SubscriberProcess[] = []
  try {
    const per = Math.ceil(n / cfg.workers)
    for (let first = 0; first < n; first += per) procs.push(new SubscriberProcess(target.port, first, Math.min(per, n - first), cfg))
    const ready = await Promise.all(procs.map(async (p) => await p.line<ReadyLine>('READY', 180000)))
    const failed = new Set(ready.flatMap((r) => r.failed))
    for (let i = 0; i < n; i++) {
      if (failed.has(i)) continue
      const sub = subscriptionOf(plan, i)
      for (let c = 0; c < plan.channels; c++) if (covers(sub, c)) expected[c]++
    }
    const startUs = Math.min(...ready.map((r) => r.startUs))
    const subscribedUs = Math.max(...ready.map((r) => r.lastConfirmedUs))
    const numsub = await admin.redis.call('PUBSUB', 'NUMSUB', ...Array.from({ length: plan.channels }, (_, c) => channelName(plan, c))) as Array<string | number>
    let redisChannelSubscriptions = 0
    for (let k = 1; k < numsub.length; k += 2) redisChannelSubscriptions += Number(numsub[k])
    const rssSubscribed = target.kind === 'respool' ? memoryKiB(target.pid) : null
    const redisRssSubscribed = memoryKiB(redis.pid)

    // Publish: R/s for S seconds, in ticks of TICK_MS (behind schedule: the backlog goes in one write).
    const total = Math.round(cfg.rate * cfg.seconds)
    const pids = { target: target.pid, redis: redis.pid }
    const cpu0 = { target: cpuSeconds(pids.target) ?? NaN, redis: cpuSeconds(pids.redis) ?? NaN, subs: procs.reduce((a, p) => a + (cpuSeconds(p.pid) ?? NaN), 0) }
    const wall0 = performance.now()
    const firstUs = nowUs()
    let lastWriteUs = firstUs
    for (;;) {
      const due = Math.min(total, Math.floor(cfg.rate * (performance.now() - wall0) / 1000) + 1)
      if (due > publisher.sent) {
        lastWriteUs = nowUs()
        publisher.publishUpTo(due)
      }
      if (publisher.sent >= total) break
      await delay(TICK_MS)
    }
    for (const p of procs) p.send(`EXPECT ${JSON.stringify({ total })}`)
    const results = await Promise.all(procs.map(async (p) => await p.line<ResultLine>('RESULT', cfg.graceMs + 30000)))
    const cpu1 = { target: cpuSeconds(pids.target) ?? NaN, redis: cpuSeconds(pids.redis) ?? NaN, subs: procs.reduce((a, p) => a + (cpuSeconds(p.pid) ?? NaN), 0) }
    const wallS = (performance.now() - wall0) / 1000
    const replyDeadline = performance.now() + 5000
    while (publisher.replies < total && performance.now() < replyDeadline) await delay(5)
    await sampler.stop()
    const rssEnd = target.kind === 'respool' ? memoryKiB(target.pid) : null
    const log = target.kind === 'respool' ? logProblems(target.logFile, 5) : { count: 0, samples: [] }

    const hist = new Map<number, number>()
    // A worker's RESULT errors include those of its READY line.
    const errors: Record<string, number> = {}
    let deliveries = 0
    for (const r of results) {
      deliveries += r.deliveries
      for (const [k, v] of r.hist) hist.set(k, (hist.get(k) ?? 0) + v)
      mergeCounts(errors, r.errors)
    }
    const sum = (f: (x: ResultLine) => number): number => results.reduce((a, x) => a + f(x), 0)
    const lastDeliveryUs = Math.max(...results.map((r) => r.lastDeliveryUs))
    const drainUs = lastDeliveryUs - firstUs
    const connectErrors: Record<string, number> = {}
    for (const r of ready) mergeCounts(connectErrors, r.errors)
    return {
      target: target.name,
      pool,
      round,
      connected: sum0(ready, (r) => r.connected),
      confirmed: sum0(ready, (r) => r.confirmed),
      connectErrors,
      subscribeMs: (subscribedUs - startUs) / 1000,
      published: publisher.sent,
      publishSpanMs: (lastWriteUs - firstUs) / 1000,
      deliveries,
      expectedDeliveries: sum((r) => r.expectedDeliveries),
      deliveriesPerSec: drainUs > 0 ? deliveries / (drainUs / 1e6) : NaN,
      latencyMs: {
        p50: histPercentile(hist, deliveries, 50) / 1000,
        p99: histPercentile(hist, deliveries, 99) / 1000,
        max: Math.max(...results.map((r) => r.maxLatencyUs)) / 1000
      },
      drainMs: drainUs / 1000,
      lost: sum((r) => r.lost),
      duplicates: sum((r) => r.duplicates),
      outOfOrder: sum((r) => r.outOfOrder),
      wrong: sum((r) => r.wrong),
      closed: sum((r) => r.closed),
      subsLost: sum((r) => r.subsLost),
      subsDup: sum((r) => r.subsDup),
      subsDisorder: sum((r) => r.subsDisorder),
      subsWrong: sum((r) => r.subsWrong),
      lossSamples: results.flatMap((r) => r.lossSamples).slice(0, 8),
      errors,
      errorSamples: [...ready.flatMap((r) => [...r.badConfirmations, ...r.errorSamples]), ...results.flatMap((r) => [...r.badConfirmations, ...r.errorSamples]), ...publisher.errorSamples].slice(0, 10),
      publishCountOk: publisher.countOk,
      publishReplies: publisher.replies,
      publishErrors: publisher.errors,
      publishCountSamples: publisher.countSamples,
      publishCountGot: publisher.got,
      publishCountWant: publisher.want,
      publishRttMs: { p50: percentile(publisher.rttUs, 50) / 1000, p99: percentile(publisher.rttUs, 99) / 1000 },
      redisConnectionsMax: sampler.max,
      redisChannelSubscriptions,
      rssIdleKiB: rssIdle?.rss ?? NaN,
      rssSubscribedKiB: rssSubscribed?.rss ?? NaN,
      rssPeakKiB: rssEnd?.hwm ?? NaN,
      redisRssGrowthKiB: redisRssBefore !== null && redisRssSubscribed !== null ? redisRssSubscribed.rss - redisRssBefore.rss : NaN,
      cpu: { target: (cpu1.target - cpu0.target) / wallS, redis: (cpu1.redis - cpu0.redis) / wallS, subscribers: (cpu1.subs - cpu0.subs) / wallS },
      logProblems: log.count,
      logSamples: log.samples
    }
  } finally {
    await sampler.stop()
    publisher.close()
    await Promise.all(procs.map(async (p) => { await p.quit() }))
  }
}

function sum0<T> (xs: T[], f: (x: T) => number): number {
  return xs.reduce((a, x) => a + f(x), 0)
}

/**
 * Every run: `rounds` rounds of direct Redis and each pool size, the order rotated every round.
 * Each respool run is a fresh process.
 */
export async function scenarioFanout (redis: Server, admin: RedisAdmin, cfg: FanoutConfig): Promise<FanoutReport> {
  const anomalies: Anomaly[] = []
  const schedule: FanoutReport['schedule'] = []
  const runs: FanoutRun[] = []
  await checkLimits(admin, cfg.subscribers, cfg.workers)
  const entries: Array<{ name: string, pool: number | null }> = [{ name: 'direct', pool: null }, ...cfg.pools.map((pool) => ({ name: `respool(${pool})`, pool }))]
  for (let r = 0; r < cfg.rounds; r++) {
    const order = rotated(entries, r)
    schedule.push({ round: r + 1, order: order.map((e) => e.name) })
    for (const e of order) {
      await untilQuiet(admin)
      const target = e.pool === null
        ? redis
        : await startRespool(redis.port, { poolSize: e.pool, extra: ['--shared-pubsub', 'yes', '--max-clients', String(cfg.subscribers + 100)] })
      try {
        const run = await oneRun(target, redis, e.pool, admin, r + 1, cfg)
        runs.push(run)
        progress(`(fan-out) round ${r + 1}/${cfg.rounds} ${target.name}: ${fmtInt(run.confirmed)}/${fmtInt(cfg.subscribers)} subscribed in ${fmtInt(run.subscribeMs)} ms, ` +
          `${fmtInt(run.published)} published over ${fmtInt(run.publishSpanMs)} ms, ${fmtInt(run.deliveries)}/${fmtInt(run.expectedDeliveries)} delivered (${fmtInt(run.deliveriesPerSec)}/s), ` +
          `latency p50 ${fmtLat(run.latencyMs.p50)} p99 ${fmtLat(run.latencyMs.p99)} max ${fmtLat(run.latencyMs.max)} ms, lost ${run.lost}, dup ${run.duplicates}, out of order ${run.outOfOrder}, wrong ${run.wrong}, ` +
          `PUBLISH count ok ${run.publishCountOk}/${run.publishReplies}, Redis connections ≤ ${run.redisConnectionsMax}, ` +
          `CPU target ${fmtPct(run.cpu.target)} redis ${fmtPct(run.cpu.redis)} subscribers ${fmtPct(run.cpu.subscribers)}` +
          (target.kind === 'respool' ? `, RSS ${fmtMiB(run.rssIdleKiB)} → ${fmtMiB(run.rssSubscribedKiB)}, peak ${fmtMiB(run.rssPeakKiB)}` : ''))
        noteAnomalies(run, cfg, anomalies)
      } catch (err) {
        anomalies.push({ scenario: 'fan-out', target: e.name, message: `round ${r + 1}: run failed: ${(err as Error).message}` })
        progress(`(fan-out) round ${r + 1} ${e.name} failed: ${(err as Error).stack ?? String(err)}`)
      } finally {
        if (target !== redis) await target.stop()
      }
    }
  }
  await untilQuiet(admin)
  const rows = aggregate(runs, entries)
  return { config: cfg, rows, tables: tablesOf(rows, cfg), anomalies, schedule }
}

function noteAnomalies (run: FanoutRun, cfg: FanoutConfig, out: Anomaly[]): void {
  const add = (message: string): void => {
    out.push({ scenario: 'fan-out', target: run.target, message: `round ${run.round}: ${message}`, reproduce: `FANOUT_SUBSCRIBERS=${cfg.subscribers} FANOUT_RATE=${cfg.rate} FANOUT_SECONDS=${cfg.seconds} FANOUT_POOLS=${run.pool ?? cfg.pools[0]} FANOUT_ROUNDS=1 npm run bench:fanout` })
  }
  if (run.connected < cfg.subscribers) add(`only ${run.connected}/${cfg.subscribers} subscribers connected: ${JSON.stringify(run.connectErrors)}`)
  if (run.confirmed < run.connected) add(`${run.connected - run.confirmed} subscribers had no confirmation`)
  if (run.lost > 0) add(`${run.lost} messages lost (${run.subsLost} subscribers), e.g. ${run.lossSamples.slice(0, 3).join('; ')}`)
  if (run.duplicates > 0) add(`${run.duplicates} messages duplicated (${run.subsDup} subscribers)`)
  if (run.outOfOrder > 0) add(`${run.outOfOrder} messages out of order (${run.subsDisorder} subscribers)`)
  if (run.wrong > 0) add(`${run.wrong} wrong messages (${run.subsWrong} subscribers)`)
  if (run.closed > 0) add(`${run.closed} subscriber connections closed by the server during the run`)
  if (Object.keys(run.errors).length > 0) add(`errors: ${JSON.stringify(run.errors)} ${run.errorSamples.slice(0, 3).join(' / ')}`)
  if (run.publishReplies < run.published) add(`${run.published - run.publishReplies} PUBLISH replies missing`)
  if (run.publishErrors > 0) add(`${run.publishErrors} PUBLISH error replies`)
  if (run.publishCountOk < run.publishReplies - run.publishErrors) add(`${run.publishReplies - run.publishErrors - run.publishCountOk} PUBLISH receiver counts differ from the subscribers, e.g. ${run.publishCountSamples.slice(0, 3).join('; ')}`)
  if (run.publishSpanMs > cfg.seconds * 1000 * 1.1) add(`publishing took ${fmtInt(run.publishSpanMs)} ms instead of ${cfg.seconds * 1000} (the benchmark fell behind its schedule)`)
  if (run.logProblems > 0) add(`respool logged ${run.logProblems} warning/error line(s), e.g. ${run.logSamples.slice(-1).join('')}`)
  if (run.pool !== null && run.redisConnectionsMax > run.pool) add(`${run.redisConnectionsMax} connections on Redis, more than --pool-size ${run.pool}`)
}

function aggregate (runs: FanoutRun[], entries: Array<{ name: string, pool: number | null }>): FanoutRow[] {
  const rows: FanoutRow[] = []
  for (const e of entries) {
    const rs = runs.filter((x) => x.target === e.name)
    if (rs.length === 0) continue
    const sum = (f: (x: FanoutRun) => number): number => rs.reduce((a, x) => a + f(x), 0)
    const med = (f: (x: FanoutRun) => number): number => median(rs.map(f))
    rows.push({
      target: e.name,
      pool: e.pool,
      runs: rs,
      subscribeMs: med((x) => x.subscribeMs),
      published: sum((x) => x.published),
      publishSpanMs: med((x) => x.publishSpanMs),
      deliveries: sum((x) => x.deliveries),
      expectedDeliveries: sum((x) => x.expectedDeliveries),
      deliveriesPerSec: med((x) => x.deliveriesPerSec),
      p50: med((x) => x.latencyMs.p50),
      p99: med((x) => x.latencyMs.p99),
      max: med((x) => x.latencyMs.max),
      lost: sum((x) => x.lost),
      duplicates: sum((x) => x.duplicates),
      outOfOrder: sum((x) => x.outOfOrder),
      wrong: sum((x) => x.wrong),
      closed: sum((x) => x.closed),
      publishCountOk: sum((x) => x.publishCountOk),
      publishReplies: sum((x) => x.publishReplies),
      publishCountGot: { min: Math.min(...rs.map((x) => x.publishCountGot.min)), max: Math.max(...rs.map((x) => x.publishCountGot.max)) },
      publishCountWant: { min: Math.min(...rs.map((x) => x.publishCountWant.min)), max: Math.max(...rs.map((x) => x.publishCountWant.max)) },
      publishRttP50: med((x) => x.publishRttMs.p50),
      publishRttP99: med((x) => x.publishRttMs.p99),
      connMin: Math.min(...rs.map((x) => x.redisConnectionsMax)),
      connMax: Math.max(...rs.map((x) => x.redisConnectionsMax)),
      numsubMin: Math.min(...rs.map((x) => x.redisChannelSubscriptions)),
      numsubMax: Math.max(...rs.map((x) => x.redisChannelSubscriptions)),
      rssIdleKiB: med((x) => x.rssIdleKiB),
      rssSubscribedKiB: med((x) => x.rssSubscribedKiB),
      rssPeakKiB: med((x) => x.rssPeakKiB),
      redisRssGrowthKiB: med((x) => x.redisRssGrowthKiB),
      cpuTarget: med((x) => x.cpu.target),
      cpuRedis: med((x) => x.cpu.redis),
      cpuSubscribers: med((x) => x.cpu.subscribers)
    })
  }
  return rows
}

/** Milliseconds with three significant digits at most below 100 ms, whole above (latencies come from a 3-digit histogram). */
const fmtLat = (ms: number): string => !Number.isFinite(ms) ? '—' : ms >= 100 ? fmtInt(ms) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(3)

const range = (a: number, b: number): string => !Number.isFinite(a) ? '—' : a === b ? fmtInt(a) : `${fmtInt(a)}–${fmtInt(b)}`

function tablesOf (rows: FanoutRow[], cfg: FanoutConfig): Table[] {
  const patternSubs = cfg.plan.patternEvery === 0 ? 0 : Math.floor(cfg.subscribers / cfg.plan.patternEvery)
  const what = `${fmtInt(cfg.subscribers)} subscribers (${fmtInt(cfg.subscribers - patternSubs)} SUBSCRIBE one of ${cfg.channels} channels, ` +
    `${fmtInt(patternSubs)} PSUBSCRIBE one of ${patternCount(cfg.plan)} patterns of 10 channels), ${fmtInt(cfg.rate)} messages/s for ${cfg.seconds} s`
  const isRespool = (r: FanoutRow): boolean => r.pool !== null
  return [
    {
      title: `(f) Pub/sub fan-out: ${what} — median of ${cfg.rounds} round(s), target order rotated each round`,
      headers: ['target', 'subscribed in ms', 'published', 'delivered', 'deliveries/s', 'latency p50 ms', 'p99 ms', 'max ms', 'CPU proxy', 'CPU redis-server', 'CPU subscribers'],
      rows: rows.map((r) => [
        r.target, fmtInt(r.subscribeMs), fmtInt(r.published), `${fmtInt(r.deliveries)}/${fmtInt(r.expectedDeliveries)}`, fmtInt(r.deliveriesPerSec),
        fmtLat(r.p50), fmtLat(r.p99), fmtLat(r.max), isRespool(r) ? fmtPct(r.cpuTarget) : '—', fmtPct(r.cpuRedis), fmtPct(r.cpuSubscribers)
      ]),
      notes: [
        'latency = time the subscriber read the message − send time in its payload (written by the publisher as its 10 ms tick was sent; one monotonic clock for every process); p50/p99 over every delivery of the run (histogram to 3 significant digits), then the median over rounds; max is the median of the rounds\' maxima. It includes the time the one subscriber process takes to get to each socket (see its CPU)',
        'subscribed in = first connection started → last SUBSCRIBE/PSUBSCRIBE confirmed (connections opened 200 at a time); published and delivered are sums over rounds; deliveries/s = deliveries ÷ (first message written → last delivery)',
        `CPU = user+system time of the process from the first message written to the subscribers' report, as a share of one core (subscribers: their ${cfg.workers} child process(es) together)`
      ]
    },
    {
      title: `(f) Pub/sub fan-out: what every subscriber got, PUBLISH's count, what Redis held, respool's memory — ${what}`,
      headers: ['target', 'lost', 'duplicated', 'out of order', 'wrong', 'PUBLISH count = expected', 'count got', 'count expected', 'PUBLISH p50 / p99 ms', 'Redis connections', 'Redis channel subscriptions', 'respool RSS idle / subscribed / peak'],
      rows: rows.map((r) => [
        r.target, fmtInt(r.lost), fmtInt(r.duplicates), fmtInt(r.outOfOrder), fmtInt(r.wrong),
        `${fmtInt(r.publishCountOk)}/${fmtInt(r.publishReplies)}`, range(r.publishCountGot.min, r.publishCountGot.max), range(r.publishCountWant.min, r.publishCountWant.max),
        `${fmtLat(r.publishRttP50)} / ${fmtLat(r.publishRttP99)}`,
        range(r.connMin, r.connMax), range(r.numsubMin, r.numsubMax),
        isRespool(r) ? `${fmtMiB(r.rssIdleKiB)} / ${fmtMiB(r.rssSubscribedKiB)} / ${fmtMiB(r.rssPeakKiB)}` : '—'
      ]),
      notes: [
        'lost = messages of its channel or pattern a subscriber never got (by the end of the grace period); duplicated = got twice or more; out of order = got after a later message; wrong = not its channel or pattern, or a malformed frame; all must be 0 (sums over rounds)',
        'PUBLISH count = expected: replies equal to the number of subscribers of the channel plus those of the pattern matching it (what Redis itself answers with one connection per subscriber; respool adjusts the shared connection\'s count to that); count got / expected: lowest–highest over every message',
        'PUBLISH p50 / p99 = the publisher\'s round trip (its write of a tick → the reply), median over rounds',
        'Redis connections = the most connections Redis had during the run (INFO clients connected_clients every 100 ms) minus the benchmark\'s own: its admin connection, and the publisher\'s when it goes straight to Redis; respool\'s include its shared subscriber connection and the lane that carried PUBLISH',
        'Redis channel subscriptions = Σ PUBSUB NUMSUB over the channels on Redis, once every subscriber was confirmed (direct: one per channel subscriber; respool: one per channel, on its shared connection)',
        'respool RSS (VmRSS): after start, once every subscriber was confirmed, and VmHWM at the end of the run (medians over rounds); redis-server\'s RSS is in the JSON only (redisRssGrowthKiB): one redis-server serves every run, and what an earlier run freed shows up as a negative growth',
        `respool runs with --pool-size P --shared-pubsub yes --max-clients ${cfg.subscribers + 100}; a fresh process for every run`
      ]
    }
  ]
}
