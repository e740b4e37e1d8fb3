import type net from 'node:net'
import Denque from 'denque'
import { RequestFramer, type RequestLimits } from './request-framer.js'
import { ReplySlot, type ReplySink } from './reply-slot.js'
import { classify, Kind } from './command-table.js'
import { CommandRefusedError, ProtocolError, ProxyError, toRespError } from './errors.js'
import { OK } from './resp-encode.js'
import { uncorkAtEndOfTick, type Corked } from './write-batcher.js'
import type { RespCommand } from './resp-command.js'
import type { Router, LaneWaiter } from './router.js'
import type { UpstreamConnection } from './upstream-connection.js'
import type { ProxyStats } from './proxy-stats.js'
import type { ProxyConfig } from './config.js'
import type { Logger } from './logger.js'

/** What a session needs from the server that owns it. */
export interface SessionContext {
  config: ProxyConfig
  router: Router
  stats: ProxyStats
  log: Logger
  onSessionClosed (session: ClientSession): void
}

// Reasons a session stopped reading from its socket (a bit each, so they combine).
const PAUSE_PIPELINE = 1 // too many commands unanswered
const PAUSE_OUTPUT = 2 // the client is not reading its replies
const PAUSE_UPSTREAM = 4 // the upstream socket is full
const PAUSE_ENDING = 8 // QUIT or a protocol error: nothing more is read

/**
 * One downstream client. Commands are framed from its socket, each gets a reply slot in
 * arrival order, and replies are written from the head of that queue, so the client sees them
 * in the order it sent its commands whatever order they complete in.
 *
 *   slots:   | written … | filled, waiting for an earlier one | in flight | pending |
 *   pending: commands accepted but not yet written upstream (the tail of `slots`)
 */
export class ClientSession implements ReplySink, LaneWaiter, Corked {
  readonly id: number
  readonly remoteAddress: string
  readonly connectedAt = Date.now()

  readonly #socket: net.Socket
  readonly #ctx: SessionContext
  readonly #framer: RequestFramer
  readonly #slots = new Denque<ReplySlot>()
  readonly #pending = new Denque<ReplySlot>()
  #inflight = 0
  /** The upstream connection carrying this session's inflight commands. */
  #conn: UpstreamConnection | null = null
  #waitingForLane = false
  #paused = 0
  #corked = false
  #closed = false
  #endWhenFlushed = false

  constructor (id: number, socket: net.Socket, ctx: SessionContext) {
    this.id = id
    this.#socket = socket
    this.#ctx = ctx
    this.remoteAddress = `${socket.remoteAddress ?? 'unix'}:${socket.remotePort ?? 0}`
    const limits: RequestLimits = {
      maxBulkLength: ctx.config.maxBulkLength,
      maxMultibulkLength: ctx.config.maxMultibulkLength,
      maxInlineLength: ctx.config.maxInlineLength
    }
    this.#framer = new RequestFramer(limits)
    socket.setNoDelay(true)
    socket.on('data', this.#onData)
    socket.on('drain', this.#onDrain)
    socket.on('error', () => { this.destroy() })
    socket.on('close', () => { this.destroy() })
    if (ctx.config.clientIdleTimeoutMs > 0) {
      socket.setTimeout(ctx.config.clientIdleTimeoutMs, () => { this.destroy() })
    }
  }

  /** Commands written upstream and not yet answered. */
  get inflight (): number {
    return this.#inflight
  }

  /** Commands accepted but not yet written upstream. */
  get pending (): number {
    return this.#pending.length
  }

  get closed (): boolean {
    return this.#closed
  }

  // ---- input ---------------------------------------------------------------------------

  #onData = (chunk: Buffer): void => {
    if (this.#paused & PAUSE_ENDING) return
    try {
      this.#framer.push(chunk, this.#onCommand)
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err
      this.#ctx.stats.downstreamCxProtocolError++
      this.#ctx.log.debug({ client: this.id, err: err.message }, 'client protocol error')
      // Like Redis: commands before the bad bytes are answered, then the error, then close.
      this.#addLocalReply(toRespError(err))
      this.#endAfterReplies(false)
    }
    this.#pump()
  }

  #onCommand = (cmd: RespCommand): void => {
    this.#ctx.stats.downstreamRqTotal++
    const slot = new ReplySlot(this, cmd)
    this.#slots.push(slot)
    this.#pending.push(slot)
    if (this.#slots.length >= this.#ctx.config.maxPipeline) this.#pause(PAUSE_PIPELINE)
  }

  // ---- dispatch --------------------------------------------------------------------------

  /** Sends pending commands upstream, in order, as far as routing allows. */
  #pump (): void {
    const pending = this.#pending
    while (!this.#closed && pending.length > 0 && !this.#waitingForLane) {
      const slot = pending.peekFront() as ReplySlot
      const cmd = slot.command as RespCommand
      const kind = classify(cmd)
      if (kind !== Kind.SHARED) {
        pending.shift()
        this.#answerLocally(slot, cmd, kind)
        continue
      }
      let conn: UpstreamConnection | null
      if (this.#inflight > 0) {
        conn = this.#conn // read-your-writes: stay where the earlier commands went
      } else {
        conn = this.#ctx.router.pickLane()
        if (conn === null) {
          this.#waitingForLane = true
          this.#ctx.router.waitForLane(this)
          return
        }
      }
      if (conn === null) throw new Error('session has inflight commands but no connection')
      if (conn.needDrain) {
        this.#pause(PAUSE_UPSTREAM)
        conn.whenDrained(this.#onUpstreamDrained)
        return
      }
      pending.shift()
      this.#inflight++
      this.#conn = conn
      conn.send(cmd.frame, slot)
    }
  }

  #onUpstreamDrained = (): void => {
    this.#resume(PAUSE_UPSTREAM)
    this.#pump()
  }

  laneReady (): void {
    this.#waitingForLane = false
    this.#pump()
  }

  laneFailed (err: ProxyError): void {
    this.#waitingForLane = false
    // Every command waiting behind the failed wait gets the error now: one dead upstream must
    // not cost a pipelining client one deadline per command.
    while (this.#pending.length > 0) {
      const slot = this.#pending.shift() as ReplySlot
      this.#fill(slot, toRespError(err))
    }
  }

  #answerLocally (slot: ReplySlot, cmd: RespCommand, kind: number): void {
    if (kind === Kind.QUIT) {
      this.#fill(slot, OK)
      this.#endAfterReplies(true)
      return
    }
    const err = new CommandRefusedError(`'${cmd.name.toUpperCase()}' is not supported through respool`)
    this.#fill(slot, toRespError(err))
  }

  // ---- replies ---------------------------------------------------------------------------

  onReply (slot: ReplySlot, frame: Buffer): void {
    this.#inflight--
    this.#fill(slot, frame)
    if (this.#inflight === 0 && this.#pending.length > 0) this.#pump()
  }

  onFailure (slot: ReplySlot, err: ProxyError): void {
    this.#ctx.stats.upstreamRqFailed++
    this.onReply(slot, toRespError(err))
  }

  /** Fills a slot and writes every reply that is now at the head, in order. */
  #fill (slot: ReplySlot, reply: Buffer): void {
    slot.reply = reply
    if (this.#closed) return
    const slots = this.#slots
    let head = slots.peekFront()
    if (head !== slot && head?.reply === null) return // an earlier reply is still missing
    if (!this.#corked) {
      this.#corked = true
      this.#socket.cork()
      uncorkAtEndOfTick(this)
    }
    let writable = true
    while (head !== undefined && head.reply !== null) {
      slots.shift()
      writable = this.#socket.write(head.reply)
      head = slots.peekFront()
    }
    if (!writable) {
      if (this.#socket.writableLength > this.#ctx.config.maxOutputBufferBytes) {
        this.#ctx.stats.downstreamCxOutputLimit++
        this.#ctx.log.warn({ client: this.id, buffered: this.#socket.writableLength }, 'client output buffer limit reached; disconnecting')
        this.destroy()
        return
      }
      this.#pause(PAUSE_OUTPUT)
    }
    if ((this.#paused & PAUSE_PIPELINE) !== 0 && slots.length < this.#ctx.config.maxPipeline / 2) this.#resume(PAUSE_PIPELINE)
    if (this.#endWhenFlushed && slots.length === 0) this.#socket.end()
  }

  #addLocalReply (reply: Buffer): void {
    const slot = new ReplySlot(this, null)
    this.#slots.push(slot)
    this.#fill(slot, reply)
  }

  uncork (): void {
    this.#corked = false
    this.#socket.uncork()
  }

  #onDrain = (): void => {
    this.#resume(PAUSE_OUTPUT)
  }

  // ---- flow control and lifecycle --------------------------------------------------------

  #pause (reason: number): void {
    if (this.#paused === 0) this.#socket.pause()
    this.#paused |= reason
  }

  #resume (reason: number): void {
    if ((this.#paused & reason) === 0) return
    this.#paused &= ~reason
    if (this.#paused === 0 && !this.#closed) this.#socket.resume()
  }

  /**
   * Stop reading; close once every accepted command has been answered. After QUIT the commands
   * that followed it are dropped unrun (`dropPending`); after a protocol error, the commands
   * before the bad bytes still run, as in Redis.
   */
  #endAfterReplies (dropPending: boolean): void {
    this.#pause(PAUSE_ENDING)
    while (dropPending && this.#pending.length > 0) {
      const slot = this.#pending.pop() as ReplySlot
      this.#slots.pop()
      slot.cancelled = true
    }
    this.#endWhenFlushed = true
    if (this.#slots.length === 0) this.#socket.end()
  }

  /** Graceful: stop reading, answer what was accepted, then close (used on shutdown). */
  endAfterInflight (): void {
    if (!this.#closed) this.#endAfterReplies(false)
  }

  /** Closes the client now. Replies still in flight upstream are read and dropped. Idempotent. */
  destroy (): void {
    if (this.#closed) return
    this.#closed = true
    this.#socket.destroy()
    if (this.#waitingForLane) this.#ctx.router.cancelWait(this)
    for (let i = 0; i < this.#slots.length; i++) (this.#slots.peekAt(i) as ReplySlot).cancelled = true
    this.#ctx.stats.upstreamRqCancelled += this.#inflight
    this.#slots.clear()
    this.#pending.clear()
    this.#ctx.onSessionClosed(this)
  }
}
