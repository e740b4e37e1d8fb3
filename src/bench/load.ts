import { setTimeout as delay } from 'node:timers/promises'
import { LatencyHistogram } from './histogram.js'
import { encodeCommand, ReplyError, RespConnection, type Endpoint, type OnReply, type Reply } from './resp.js'

/**
 * The load generator: `clients` connections, each sending `pipeline` commands at a time and
 * waiting for their replies before the next batch (a closed loop, like an application's
 * threads). Every key it touches starts with `prefix`.
 */
export interface LoadSpec {
  endpoint: Endpoint
  clients: number
  /** Commands per write (1: one command per round trip). */
  pipeline: number
  /** Share of GET among the plain commands (the rest are SET). */
  getRatio: number
  /** Share of operations that are transactions. */
  multiShare: number
  /** watch: WATCH k, GET k, then MULTI/SET/INCR/EXEC (respool pins a connection for it); pipelined: MULTI … EXEC in one write (no pin). */
  txStyle: 'watch' | 'pipelined'
  /** Share of clients that are blocking waiters (BLPOP on a key of their own); the same share of operations are RPUSHes that wake them. */
  blockingShare: number
  /** Seconds each BLPOP waits at most. */
  blockTimeoutSec: number
  valueSize: number
  /** GET/SET keys: prefix + 'k:' + 0 … keys-1. */
  keys: number
  prefix: string
  /** Most operations per second for all clients together (0: no cap). */
  maxOps: number
}

/** What happened between mark() and collect(). */
export interface LoadWindow {
  elapsedMs: number
  /** Operations completed: plain commands, and whole transactions. */
  ops: number
  commands: number
  errors: number
  firstError: string | null
  latency: { counts: number[], sumMs: number, maxMs: number }
  txAborted: number
  wakes: number
  blockTimeouts: number
  clientsLost: number
}

/** How many clients of `clients` are blocking waiters. */
export function waiterCount (spec: Pick<LoadSpec, 'clients' | 'blockingShare'>): number {
  if (spec.blockingShare <= 0 || spec.clients < 2) return 0
  return Math.min(spec.clients - 1, Math.max(1, Math.round(spec.clients * spec.blockingShare)))
}

export class LoadGenerator {
  readonly #spec: LoadSpec
  readonly #histogram = new LatencyHistogram()
  readonly #workers: RespConnection[] = []
  readonly #waiters: RespConnection[] = []
  readonly #loops: Array<Promise<void>> = []
  readonly #getFrames: Buffer[]
  readonly #value: Buffer
  readonly #waiterKeys: string[]
  #stopped = false
  #nextSlot = 0
  #markAt = performance.now()
  #ops = 0
  #commands = 0
  #errors = 0
  #firstError: string | null = null
  #txAborted = 0
  #wakes = 0
  #blockTimeouts = 0
  #clientsLost = 0

  constructor (spec: LoadSpec) {
    this.#spec = spec
    this.#getFrames = Array.from({ length: spec.keys }, (_, i) => encodeCommand(['GET', `${spec.prefix}k:${i}`]))
    this.#value = Buffer.alloc(spec.valueSize, 'x')
    this.#waiterKeys = Array.from({ length: waiterCount(spec) }, (_, i) => `${spec.prefix}q:${i}`)
  }

  /** Opens every connection and starts the loops. */
  async start (): Promise<void> {
    const waiters = this.#waiterKeys.length
    const opened = await Promise.all(Array.from({ length: this.#spec.clients }, async () =>
      await RespConnection.open(this.#spec.endpoint, { select: false })))
    this.#waiters.push(...opened.slice(0, waiters))
    this.#workers.push(...opened.slice(waiters))
    this.#waiters.forEach((conn, i) => { this.#loops.push(this.#waiterLoop(conn, this.#waiterKeys[i])) })
    for (const conn of this.#workers) this.#loops.push(this.#workerLoop(conn))
    this.mark()
  }

  /** Starts a measurement window. */
  mark (): void {
    this.#histogram.reset()
    this.#markAt = performance.now()
    this.#ops = this.#commands = this.#errors = this.#txAborted = this.#wakes = this.#blockTimeouts = 0
    this.#firstError = null
  }

  /** What happened since mark(). */
  collect (): LoadWindow {
    return {
      elapsedMs: performance.now() - this.#markAt,
      ops: this.#ops,
      commands: this.#commands,
      errors: this.#errors,
      firstError: this.#firstError,
      latency: { counts: Array.from(this.#histogram.counts), sumMs: this.#histogram.sumMs, maxMs: this.#histogram.maxMs },
      txAborted: this.#txAborted,
      wakes: this.#wakes,
      blockTimeouts: this.#blockTimeouts,
      clientsLost: this.#clientsLost
    }
  }

  /** Stops every loop after its current batch; waiters are disconnected at once. */
  async stop (): Promise<void> {
    this.#stopped = true
    for (const conn of this.#waiters) conn.destroy()
    const timeout = delay(5000, 'timeout', { ref: false })
    await Promise.race([Promise.allSettled(this.#loops), timeout])
    await Promise.allSettled(this.#workers.map(async (conn) => { await conn.close() }))
    for (const conn of this.#workers) conn.destroy()
  }

  /** Disconnects everything now (an interrupted run). */
  destroy (): void {
    this.#stopped = true
    for (const conn of [...this.#waiters, ...this.#workers]) conn.destroy()
  }

  #error (reply: Reply | undefined, failure: Error | undefined): boolean {
    if (failure !== undefined) {
      if (!this.#stopped) {
        this.#errors++
        this.#firstError ??= failure.message
      }
      return true
    }
    if (reply instanceof ReplyError) {
      this.#errors++
      this.#firstError ??= reply.message
      return true
    }
    return false
  }

  /** Waits for its share of the --max-ops budget (a shared schedule: one slot per operation). */
  async #pace (ops: number): Promise<void> {
    const rate = this.#spec.maxOps
    if (rate <= 0) return
    const now = performance.now()
    const at = Math.max(now, this.#nextSlot)
    this.#nextSlot = at + ops * 1000 / rate
    if (at - now >= 1) await delay(at - now)
  }

  async #workerLoop (conn: RespConnection): Promise<void> {
    const spec = this.#spec
    const waiters = this.#waiterKeys.length
    const pushShare = waiters > 0 ? spec.blockingShare : 0
    const frames: Buffer[] = []
    const txKeys: string[] = []
    while (!this.#stopped && !conn.failed) {
      frames.length = 0
      txKeys.length = 0
      for (let i = 0; i < spec.pipeline; i++) {
        const r = Math.random()
        const key = Math.floor(Math.random() * spec.keys)
        if (r < spec.multiShare) txKeys.push(`${spec.prefix}k:${key}`)
        else if (r < spec.multiShare + pushShare) frames.push(encodeCommand(['RPUSH', this.#waiterKeys[Math.floor(Math.random() * waiters)], '1']))
        else if (Math.random() < spec.getRatio) frames.push(this.#getFrames[key])
        else frames.push(encodeCommand(['SET', `${spec.prefix}k:${key}`, this.#value]))
      }
      await this.#pace(spec.pipeline)
      if (frames.length > 0) await this.#batch(conn, frames)
      for (const key of txKeys) {
        if (this.#stopped || conn.failed) break
        await this.#transaction(conn, key)
      }
    }
    if (conn.failed && !this.#stopped) this.#clientsLost++
  }

  /** One write of plain commands; each one's latency runs from the write to its own reply. */
  async #batch (conn: RespConnection, frames: Buffer[]): Promise<void> {
    const count = frames.length
    await new Promise<void>((resolve) => {
      const sentAt = performance.now()
      let left = count
      const onReply: OnReply = (reply, failure) => {
        if (!this.#error(reply, failure)) {
          this.#histogram.record(performance.now() - sentAt)
          this.#ops++
          this.#commands++
        }
        if (--left === 0) resolve()
      }
      conn.send(count === 1 ? frames[0] : Buffer.concat(frames), count, onReply)
    })
  }

  /** A transaction, counted as one operation from its first write to EXEC's reply. */
  async #transaction (conn: RespConnection, key: string): Promise<void> {
    const spec = this.#spec
    const startedAt = performance.now()
    const counter = `${spec.prefix}tx`
    const body = [encodeCommand(['MULTI']), encodeCommand(['SET', key, this.#value]), encodeCommand(['INCR', counter]), encodeCommand(['EXEC'])]
    let replies: Array<Reply | undefined>
    try {
      if (spec.txStyle === 'watch') {
        const first = await this.#round(conn, [encodeCommand(['WATCH', key]), encodeCommand(['GET', key])])
        if (first.some((r) => r instanceof ReplyError)) {
          for (const r of first) this.#error(r, undefined)
          await this.#round(conn, [encodeCommand(['UNWATCH'])])
          return
        }
        replies = await this.#round(conn, body)
        this.#commands += 2
      } else {
        replies = await this.#round(conn, body)
      }
    } catch (err) {
      this.#error(undefined, err as Error)
      return
    }
    const exec = replies[replies.length - 1]
    let failed = false
    for (const r of replies) failed = this.#error(r, undefined) || failed
    if (failed) return
    this.#commands += replies.length
    if (exec === null) this.#txAborted++
    this.#histogram.record(performance.now() - startedAt)
    this.#ops++
  }

  async #round (conn: RespConnection, frames: Buffer[]): Promise<Reply[]> {
    return await new Promise((resolve, reject) => {
      const replies: Reply[] = []
      let failed = false
      conn.send(Buffer.concat(frames), frames.length, (reply, failure) => {
        if (failed) return
        if (failure !== undefined) {
          failed = true
          reject(failure)
          return
        }
        replies.push(reply as Reply)
        if (replies.length === frames.length) resolve(replies)
      })
    })
  }

  async #waiterLoop (conn: RespConnection, key: string): Promise<void> {
    const frame = encodeCommand(['BLPOP', key, String(this.#spec.blockTimeoutSec)])
    while (!this.#stopped && !conn.failed) {
      const reply = await new Promise<Reply | undefined>((resolve) => {
        conn.send(frame, 1, (r, failure) => { this.#error(r, failure); resolve(failure === undefined ? r : undefined) })
      })
      if (reply === null) this.#blockTimeouts++
      else if (Array.isArray(reply)) this.#wakes++
      else if (reply instanceof ReplyError) await delay(100)
    }
  }
}
