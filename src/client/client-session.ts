import type net from 'node:net'
import Denque from 'denque'
import { DEFAULT_REQUEST_LIMITS, RequestFramer, type CommandSink, type RequestLimits } from '../protocol/request-framer.js'
import type { WriteOwner } from '../protocol/write-batcher.js'
import { ReplySlot, type Pausable, type ReplySink } from '../routing/reply-slot.js'
import { classify, Kind, type CommandKind } from '../commands/command-table.js'
import { CommandRefusedError, ProtocolError, ProxyError, UpstreamClosedError, toRespError } from '../errors.js'
import { OK, errorReply, integer, simpleString } from '../protocol/resp-encode.js'
import { observeReply, repliesLarge, windowAllows } from './reply-window.js'
import { OutputGuard } from './output-guard.js'
import { UNBLOCKED_ERROR, type UnblockMode } from '../commands/client-control.js'
import { clientCommand, type ClientCommandHost } from './client-subcommands.js'
import { authOrHello, type AuthHost } from './session-auth.js'
import { SessionCluster, type ClusterSessionHost } from './session-cluster.js'
import { RetryQueue, mayRetry, type RetryHost } from './session-retry.js'
import { adjustCount, pubsubCommand, type PubsubHost } from './session-pubsub.js'
import { blockingCommand, type BlockingHost } from './session-blocking.js'
import { bufferedTransactionEnd, execOrDiscard, multi, queueable, unwatch, watch, type TransactionHost } from './session-transactions.js'
import { TickWriter } from '../protocol/write-batcher.js'
import { READ_BUFFER_BYTES, adoptReadBuffer } from '../protocol/socket-reader.js'
import { SessionState } from './session-state.js'
import { blockingTimeoutMs, timeoutReply } from '../commands/blocking.js'
import { isScriptKill } from '../commands/script-kill.js'
import { parsePubsubFrame } from '../protocol/pubsub-frames.js'
import * as local from '../commands/local-commands.js'
import { RespCommand } from '../protocol/resp-command.js'
import { parseRedisInt } from '../protocol/redis-integer.js'
import { syncLaneState } from '../routing/lane-state.js'
import type { Parkable } from '../waiting/parkable.js'
import type { ParkingLot, Waiter } from '../waiting/parking-lot.js'
import type { PubsubHub, HubMember, HubClient } from '../pubsub/pubsub-hub.js'
import { subscribedContextReply } from '../pubsub/subscribed-context.js'
import type { Router, LaneWaiter, PinAcquisition, PinRelease } from '../routing/router.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ProxyStats } from '../ops/proxy-stats.js'
import type { ClusterClient } from '../cluster/cluster-client.js'
import {
  SessionEffects, STREAMING, R_MULTI, R_WATCH, R_BLOCKING, R_SUBSCRIBED, R_MONITOR,
  E_SELECT, E_SELECT_QUEUED, E_EXEC, E_DISCARD,
  E_MONITOR, E_EXEC_ABORTED, E_PUBSUB_COUNT, isInMulti, type Lease, type EffectHooks
} from './session-effects.js'
import type { SessionContext } from './session-context.js'

export type { AdminHandler, SessionContext } from './session-context.js'

/** Commands Redis runs at once inside MULTI instead of queueing (RESET and QUIT respool answers). */
const NOT_QUEUED = new Set(['multi', 'watch', 'exec', 'discard'])
const EXECABORT = errorReply('EXECABORT Transaction discarded because of previous errors.')

// What the pump is waiting for before it can send the next command.
const ZERO = integer(0)
const ONE = integer(1)

const W_NONE = 0
const W_LANE = 1 // a shared lane to exist
const W_PIN = 2 // a pinned connection
const W_DRAIN = 3 // the upstream socket to drain
const W_BARRIER = 4 // replies in flight on another connection (order across connections)
const W_PAUSED = 5 // RESPOOL PAUSE
const W_PARKED = 6 // a blocking command waiting inside respool (later commands run after it, as in Redis)
const W_OUTPUT = 7 // the client to read its replies (see reply-window)
const W_AUTH = 8 // Redis to check an AUTH
const W_RETRY = 9 // a pause before commands Redis refused (-LOADING, -MASTERDOWN) are sent again
/** What RESPOOL CLIENTS shows of the wait (index: W_*). */
const WAIT_NAMES = ['-', 'lane', 'pin', 'drain', 'order', 'paused', 'parked', 'output', 'auth', 'retry'] as const

// Reasons a session stopped reading from its socket (a bit each, so they combine).
const PAUSE_PIPELINE = 1 // too many commands unanswered
const PAUSE_OUTPUT = 2 // the client is not reading its replies
const PAUSE_UPSTREAM = 4 // the upstream socket is full
const PAUSE_ENDING = 8 // QUIT or a protocol error: nothing more is read
const PAUSE_TURN = 16 // read its share of this turn of the event loop (see #onSocketRead)

/** Bytes of a large reply waiting for a slow client before the upstream stops reading. */
const STREAM_HIGH_WATER = 4 * 1024 * 1024




const PUSH = 0x3e
const MINUS = 0x2d

/**
 * The empty queue every session starts with, shared: ten thousand idle clients need no queues
 * of their own. Only read; a session makes its own before its first push (#makeQueues).
 */
const NO_QUEUE = Object.freeze(new Denque<ReplySlot>()) as Denque<ReplySlot>

/**
 * The framing limits, one pair per proxy (authenticated or not yet) instead of an object per
 * client; brought up to date with the configuration whenever a session asks (a reload).
 */
const limitsByContext = new WeakMap<SessionContext, { authenticated: RequestLimits, unauthenticated: RequestLimits }>()

function sharedLimits (ctx: SessionContext, authenticated: boolean): RequestLimits {
  let pair = limitsByContext.get(ctx)
  if (pair === undefined) {
    pair = { authenticated: { ...DEFAULT_REQUEST_LIMITS, unauthenticated: false }, unauthenticated: { ...DEFAULT_REQUEST_LIMITS, unauthenticated: true } }
    limitsByContext.set(ctx, pair)
  }
  const limits = authenticated ? pair.authenticated : pair.unauthenticated
  const config = ctx.config
  limits.maxBulkLength = config.maxBulkLength
  limits.maxMultibulkLength = config.maxMultibulkLength
  limits.maxInlineLength = config.maxInlineLength
  return limits
}

/** Functions a session hands to connections and queues (see ClientSession.#callbacks). */
interface SessionCallbacks {
  readonly upstreamDrained: () => void
  readonly pubsubTunnel: (frame: Buffer) => boolean
  readonly monitorTunnel: (frame: Buffer) => boolean
  readonly outOfBand: (frame: Buffer) => void
}

/** The session a client socket belongs to (its event handlers are shared by all sessions). */
const SESSION = Symbol('respool.session')

function sessionOf (socket: net.Socket): ClientSession {
  return (socket as unknown as Record<symbol, ClientSession>)[SESSION]
}

/**
 * One downstream client. Commands are framed from its socket, each gets a reply slot in
 * arrival order, and replies are written from the head of that queue, so the client sees them
 * in the order it sent its commands whatever order they complete in.
 *
 *   slots:   | filled, waiting for an earlier one | in flight | pending |
 *   pending: commands accepted but not yet written upstream (the tail of `slots`)
 *
 * Commands go to a shared lane unless the client holds a pin (MULTI, WATCH, a blocking
 * command, SUBSCRIBE, MONITOR, CLIENT TRACKING). While commands are in flight on one
 * connection, the next command never goes to another (Redis orders per connection only).
 */
export class ClientSession implements ReplySink, LaneWaiter, CommandSink, WriteOwner, EffectHooks, ClientCommandHost, AuthHost, ClusterSessionHost, TransactionHost, RetryHost, PubsubHost, BlockingHost {
  readonly id: number
  /** The addresses as `host:port` (made when first asked: CLIENT LIST, CLIENT KILL ADDR). */
  #remoteAddress: string | null = null
  #localAddress: string | null = null
  readonly connectedAt = Date.now()
  readonly state: SessionState
  /** RESPOOL AUTH succeeded on this connection. */
  adminAuthenticated = false

  readonly #socket: net.Socket
  readonly #ctx: SessionContext
  readonly #framer: RequestFramer
  /** Every command's slot, in arrival order (NO_QUEUE until the first command). */
  #slots = NO_QUEUE
  /** The tail of #slots not yet written upstream (NO_QUEUE until the first command). */
  #pending = NO_QUEUE
  #inflight = 0
  /** The upstream connection carrying this session's inflight commands. */
  #conn: UpstreamConnection | null = null
  #lease: Lease | null = null
  #acquiring: PinAcquisition | null = null
  /** When the pin being acquired was requested, and for which slot (blocking timeouts). */
  #pinRequestedAt = 0
  #pinRequestedFor: ReplySlot | null = null
  #wait = W_NONE
  #paused = 0
  readonly #writer: TickWriter
  #closed = false
  #endWhenFlushed = false
  /** The upstream connection paused while this client catches up with a large reply. */
  #streamSource: Pausable | null = null
  /** #streamSource was paused with pauseWhileAlone (a shared lane). */
  #streamAlone = false
  /** How far this client's commands may run ahead of its reading: its estimated reply size (see reply-window). */
  #replyEstimate = 0
  /** Bytes of the reply being streamed to the client now. */
  #streamedBytes = 0
  /** Where this client's commands go: respool's own router, or its ACL user's (see Identities). */
  #router: Router
  /** The ACL user's router this client holds, if it authenticated as someone else than the upstream URL's user. */
  #identity: Router | null = null
  /** This client's output against its limits and the budget for all clients. */
  readonly #guard: OutputGuard
  /** The upstream connection this client's large command is being written to, piece by piece. */
  #streamConn: UpstreamConnection | null = null
  #streamSlot: ReplySlot | null = null
  /** Shutdown: end as soon as the pinned connection is given back (a transaction may finish). */
  #endWhenUnpinned = false
  /** The blocking command parked inside respool, and its slot. */
  #waiter: Waiter | null = null
  #parkedSlot: ReplySlot | null = null
  /** What commands do to the client's state and pinned connection (transactions, reasons to pin). */
  readonly #effects: SessionEffects
  /** This client's channel and pattern subscriptions on the shared pub/sub fan-out. */
  #member: HubMember | null = null
  /**
   * Commands Redis did not run (refused, or never written before their connection closed),
   * held to be sent again once this client's other commands in flight are answered (made on
   * the first one; see session-retry.ts). While any is held, nothing else of this client is sent.
   */
  #retry: RetryQueue | null = null
  /** Cluster mode: this client's routing by slot, pins to masters and shard channels (made on its first command). */
  #cluster: SessionCluster | null = null
  /** The reply being written, when it is a view of the shared read buffer (onReply). */
  #transientReply: Buffer | null = null
  /** Callbacks handed to connections and queues, made on first use: an idle client needs none. */
  #madeCallbacks: SessionCallbacks | null = null

  constructor (id: number, socket: net.Socket, ctx: SessionContext) {
    this.id = id
    this.#socket = socket
    this.#ctx = ctx
    this.#router = ctx.router
    this.#guard = new OutputGuard(this, ctx.memory, ctx.config.outputLimits)
    this.state = new SessionState(ctx.config.upstream.db, ctx.authRequired)
    this.#effects = new SessionEffects(this)
    this.#framer = new RequestFramer(sharedLimits(ctx, this.state.authenticated))
    this.#writer = new TickWriter(socket, this)
    socket.setNoDelay(true)
    // Reads go to the shared read buffer when Node.js allows it (the framer then copies what it
    // keeps). The socket's handlers are shared by all sessions: ten thousand idle clients then
    // cost no closures for them.
    ;(socket as unknown as Record<symbol, ClientSession>)[SESSION] = this
    if (adoptReadBuffer(socket, ClientSession.#onSocketRead)) {
      this.#framer.transient = true
      // Large commands go to the command ring; cluster mode keeps commands for redirects, so not there.
      this.#framer.useRing = ctx.cluster == null
    } else {
      socket.on('data', ClientSession.#onSocketData)
    }
    socket.on('drain', ClientSession.#onSocketDrain)
    // 'close' always follows 'error'; a listener of the server's may already keep an error from
    // going unhandled (a second one would cost every client an array of listeners).
    if (socket.listenerCount('error') === 0) socket.on('error', ClientSession.#onSocketGone)
    socket.on('close', ClientSession.#onSocketGone)
    socket.on('end', ClientSession.#onSocketEnd)
    socket.on('timeout', ClientSession.#onSocketGone)
    if (ctx.config.clientIdleTimeoutMs > 0) socket.setTimeout(ctx.config.clientIdleTimeoutMs)
  }

  /**
   * A client sending a large command (a 256 MB SET) would have libuv read it up to 32 × 64 KB at
   * a time, every other socket waiting meanwhile. libuv reads a socket again in the same turn
   * only after a read that filled the whole buffer, so after such a read the client's reading
   * stops until the loop's check phase: 64 KB per turn, as for an upstream connection (and as
   * Redis reads each client a slice per turn). A shorter read means the socket had no more.
   */
  static #onSocketRead (socket: net.Socket, chunk: Buffer): void {
    const session = sessionOf(socket)
    session.#onData(chunk)
    if (chunk.length >= READ_BUFFER_BYTES && !session.#closed) {
      session.#pause(PAUSE_TURN)
      setImmediate(() => { session.#resume(PAUSE_TURN) })
    }
  }

  static #onSocketData (this: net.Socket, chunk: Buffer): void {
    sessionOf(this).#onData(chunk)
  }

  static #onSocketDrain (this: net.Socket): void {
    sessionOf(this).#onDrain()
  }

  static #onSocketGone (this: net.Socket): void {
    sessionOf(this).destroy()
  }

  /**
   * The client closed its side: it will read nothing more, so a parked command takes nothing
   * for it from now on (as Redis frees a client whose read returns 0).
   */
  static #onSocketEnd (this: net.Socket): void {
    const session = sessionOf(this)
    if (session.#waiter !== null) session.#ctx.parking?.cancel(session.#waiter)
  }

  get remoteAddress (): string {
    const socket = this.#socket
    return (this.#remoteAddress ??= `${socket.remoteAddress ?? 'unix'}:${socket.remotePort ?? 0}`)
  }

  get localAddress (): string {
    const socket = this.#socket
    return (this.#localAddress ??= `${socket.localAddress ?? 'unix'}:${socket.localPort ?? 0}`)
  }

  /** A reload changed the client limits: this connection follows them from its next byte on. */
  applyConfig (): void {
    const config = this.#ctx.config
    this.#framer.limits = sharedLimits(this.#ctx, this.state.authenticated)
    this.#socket.setTimeout(config.clientIdleTimeoutMs) // 0 turns the idle timeout off
    this.#guard.setLimits(config.outputLimits)
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

  /** The upstream connection carrying (or last carrying) this client's commands. */
  get upstreamId (): number | null {
    return this.#lease?.pin.conn.id ?? this.#conn?.id ?? null
  }

  /** What the client's next command waits for ('-': nothing), for RESPOOL CLIENTS. */
  get waitingFor (): string {
    return WAIT_NAMES[this.#wait]
  }

  /** Why this client holds a pinned connection (bitmask of R_*), 0 if it holds none. */
  get pinReasons (): number {
    return this.#lease?.reasons ?? this.#cluster?.pinReasons ?? 0
  }

  /** What CLIENT LIST shows about this client. */
  view (): local.ClientView {
    const reasons = this.pinReasons
    const shared = this.#member
    const cluster = this.#cluster?.client?.flags ?? null
    const flags = cluster ?? ((reasons & R_MULTI) !== 0 ? 'x' : (reasons & R_SUBSCRIBED) !== 0 || this.sharedSubscribed ? 'P' : (reasons & R_MONITOR) !== 0 ? 'O' : this.#waiter !== null || (reasons & R_BLOCKING) !== 0 ? 'b' : 'N')
    return {
      id: this.id,
      addr: this.remoteAddress,
      laddr: this.localAddress,
      ageSeconds: Math.floor((Date.now() - this.connectedAt) / 1000),
      state: this.state,
      flags,
      multi: (reasons & R_MULTI) !== 0 || cluster === 'x' ? 0 : -1,
      sub: this.#effects.subs.count('channel') + (shared?.channels.size ?? 0),
      psub: this.#effects.subs.count('pattern') + (shared?.patterns.size ?? 0),
      ssub: this.#effects.subs.count('shard') + (this.#cluster?.shards?.count ?? 0)
    }
  }

  /** Subscribed to a channel or pattern through the shared fan-out. */
  get sharedSubscribed (): boolean {
    return (this.#member !== null && this.#member.count > 0) || (this.#cluster !== null && this.#cluster.subscribed)
  }

  /** The protocol and out-of-band path the shared fan-out delivers through (made on the first subscription). */
  #hubClient (): HubClient {
    const session = this
    return {
      get resp (): number { return session.state.resp },
      deliver: session.outOfBandHandler
    }
  }

  /**
   * A RESP2 client in subscriber mode through the shared fan-out (not through a pin of its own,
   * where Redis answers): only what Redis allows there runs.
   */
  #inSharedSubscriberMode (): boolean {
    return this.state.resp === 2 && this.sharedSubscribed && ((this.#lease?.reasons ?? 0) & R_SUBSCRIBED) === 0
  }

  // ---- the surface of the session's own modules ------------------------------------------
  // client-subcommands.ts, session-auth.ts, session-cluster.ts, session-transactions.ts,
  // session-retry.ts, session-pubsub.ts and session-blocking.ts act on the session only through
  // these (their *Host interfaces list what each uses); nothing else calls them. The dispatch
  // path itself uses the private methods.

  /** What the server gave the session (read only). */
  get context (): SessionContext {
    return this.#ctx
  }

  /** Where this client's commands go now: respool's own router, or its ACL user's. */
  get router (): Router {
    return this.#router
  }

  /** The client authenticated as an ACL user of its own (its commands run on that user's connections). */
  get hasIdentity (): boolean {
    return this.#identity !== null
  }

  /** Cluster mode: this client's transaction and blocking commands (null until it had one). */
  get clusterClient (): ClusterClient | null {
    return this.#cluster?.client ?? null
  }

  /** Answers the head pending command in respool (its reply keeps its place in the order). */
  answerLocally (slot: ReplySlot, reply: Buffer): boolean {
    return this.#local(slot, reply)
  }

  /** Sends the head pending command on this client's connection (see #forward). */
  forward (slot: ReplySlot, effect: number, data: number): boolean {
    return this.#forward(slot, effect, data)
  }

  /** Acquires a pin for the head pending command (see #pinFor). */
  pinFor (slot: ReplySlot, deadlineMs: number | null): boolean {
    return this.#pinFor(slot, deadlineMs)
  }

  /** Sends the head pending command at once on a connection of its own (see #sendAtOnce). */
  sendAtOnce (slot: ReplySlot, frame: Buffer): boolean {
    return this.#sendAtOnce(slot, frame)
  }

  /** Fills a slot taken off the pending queue earlier, and writes what is now in order. */
  fill (slot: ReplySlot, reply: Buffer): void {
    this.#fill(slot, reply)
  }

  /** Sends pending commands, as far as routing allows. */
  pump (): void {
    this.#pump()
  }

  /** Stops reading and closes once every accepted command is answered (see #endAfterReplies). */
  endAfterReplies (dropPending: boolean): void {
    this.#endAfterReplies(dropPending)
  }

  /** The head pending command waits for the client's commands in flight to be answered. */
  waitForInflight (): false {
    this.#wait = W_BARRIER
    return false
  }

  /** The head pending command waits for a shared lane to exist. */
  awaitLane (): false {
    this.#wait = W_LANE
    this.#router.waitForLane(this)
    return false
  }

  /** The head pending command waits for Redis's verdict (an AUTH, a permission): nothing after it is sent meanwhile. */
  awaitVerdict (): void {
    this.#pending.shift()
    this.#wait = W_AUTH
  }

  /** Redis gave its verdict: the commands after it may go (the caller pumps). */
  verdictIn (): void {
    if (this.#wait === W_AUTH) this.#wait = W_NONE
  }

  /** The client's authentication changed: Redis's stricter size limits apply only until it has authenticated. */
  authChanged (): void {
    this.#framer.limits = sharedLimits(this.#ctx, this.state.authenticated)
  }

  /** Leaves the shared pub/sub fan-out for good (its subscriptions were made as another user). */
  forgetSharedMember (): void {
    if (this.#member !== null) this.#ctx.pubsub?.leave(this.#member)
    this.#member = null
  }

  /** Back to respool's own router; the ACL user's router is let go. */
  dropIdentity (): void {
    this.#dropIdentity()
  }

  /** From now on this client's commands run on the connections of an ACL user's router. */
  adoptIdentity (router: Router): void {
    this.#identity = router
    this.#router = router
  }

  /** A command taken off the pending queue goes back to its head (it is handled again). */
  requeueHead (slot: ReplySlot): void {
    this.#pending.unshift(slot)
  }

  /** The head pending command went out by another way than the session's connection; it counts as in flight. */
  takeHeadInflight (): ReplySlot {
    const slot = this.#pending.shift() as ReplySlot
    this.#inflight++
    return slot
  }

  /** What commands do to the client's state and pinned connection (transactions, reasons to pin). */
  get effects (): SessionEffects {
    return this.#effects
  }

  /** Writes a whole transaction at the head of the pending queue to one shared lane (see #sendTransaction). */
  sendTransaction (end: number): boolean {
    return this.#sendTransaction(end)
  }

  /** A command in flight is not any more (it is held, to be sent again). */
  releaseInflight (): void {
    this.#inflight--
  }

  /** Held commands are back in the pending queue: whether the session may send them now. */
  requeued (): boolean {
    // What the session waited for concerned the connection it has left; the pump looks again.
    if (this.#wait === W_BARRIER || this.#wait === W_DRAIN || this.#wait === W_OUTPUT) this.#wait = W_NONE
    return this.#wait === W_NONE
  }

  /** A pause before commands Redis refused for a while (-LOADING, -MASTERDOWN) are sent again. */
  waitForRetry (): void {
    this.#wait = W_RETRY
  }

  /** The pause is over: commands go again, unless the session waits for something else now. */
  retryPauseOver (): void {
    if (this.#wait !== W_RETRY) return
    this.#wait = W_NONE
    this.#pump()
  }

  /** The client's place on the shared pub/sub fan-out (null until its first subscription there). */
  get sharedMember (): HubMember | null {
    return this.#member
  }

  /** The client's place on the shared pub/sub fan-out, made now if it has none. */
  joinSharedPubsub (hub: PubsubHub): HubMember {
    return (this.#member ??= hub.member(this.#hubClient()))
  }

  /** The head pending command leaves the queue; its reply comes later (fill or onReply). */
  takeHead (): ReplySlot {
    return this.#pending.shift() as ReplySlot
  }

  /** One more command of this client is in flight outside its connection (a SUBSCRIBE on the shared fan-out). */
  countInflight (): void {
    this.#inflight++
  }

  /** The client left channels of the shared fan-out: a shutdown waiting for it ends it now if nothing else holds it. */
  unsubscribedShared (): void {
    if (this.#endWhenUnpinned && !this.sharedSubscribed && this.#lease === null) this.#endAfterReplies(false)
  }

  /** How long the pin now held was waited for, if it was requested for this command (asked once); otherwise -1. */
  pinWaitedMs (slot: ReplySlot): number {
    if (this.#pinRequestedFor !== slot) return -1
    this.#pinRequestedFor = null
    return performance.now() - this.#pinRequestedAt
  }

  /** Gives the pin back if nothing holds it any more (see #maybeReleaseLease). */
  maybeReleaseLease (): void {
    this.#maybeReleaseLease()
  }

  /** The pending command at index i (0: the head). */
  pendingAt (i: number): ReplySlot {
    return this.#pending.peekAt(i) as ReplySlot
  }

  /** The index of the EXEC/DISCARD ending a whole transaction at the head of the pending queue, or -1. */
  bufferedTransactionEnd (): number {
    return bufferedTransactionEnd(this.#pending, this.#ctx.config.maxPipeline, this.#ctx.denied)
  }

  /** First look at a command taken off the queue with others (see #firstLook). */
  firstLook (slot: ReplySlot, cmd: RespCommand, kind: CommandKind): void {
    this.#firstLook(slot, cmd, kind)
  }

  /** The protocol and out-of-band path of the client, for a fan-out that delivers to it. */
  hubClient (): HubClient {
    return this.#hubClient()
  }

  /** The reply of a command sent by another way than the session's connection (see #clusterReply). */
  clusterReply (slot: ReplySlot, reply: Buffer): void {
    this.#clusterReply(slot, reply)
  }

  // ---- input ---------------------------------------------------------------------------

  #onData (chunk: Buffer): void {
    if ((this.#paused & PAUSE_ENDING) !== 0) return
    try {
      this.#framer.feed(chunk, this)
    } catch (err) {
      if (!(err instanceof ProtocolError)) throw err
      this.#ctx.stats.downstreamCxProtocolError++
      this.#ctx.log.debug({ client: this.id, err: err.message }, 'client protocol error')
      if (this.#streamConn !== null) {
        // The bad bytes came in the middle of a large command already going upstream: Redis
        // holds a command that will never be completed, so that connection is given up (once
        // the replies owed to others on it are in). The command never ran, as for Redis: it
        // gets no reply of its own (its slot, the last one, is dropped).
        if (this.#slots.peekBack() === this.#streamSlot) this.#slots.pop()
        const conn = this.#streamConn
        this.#streamConn = null
        conn.abandonStream()
      }
      // Like Redis: commands before the bad bytes are answered, then the error, then close.
      this.#pump()
      this.#addLocalReply(toRespError(err))
      this.#endAfterReplies(false)
    }
    this.#pump()
    if (this.#pending.length > 0) this.#detachPending()
  }

  /** Commands still waiting to be sent keep their own memory, not the command ring's. */
  #detachPending (): void {
    const pending = this.#pending
    for (let i = 0; i < pending.length; i++) {
      const slot = pending.peekAt(i) as ReplySlot
      if (slot.command?.lease != null) slot.command = slot.command.detached()
    }
  }

  /**
   * A large command (a 256 MB SET) is written upstream as it arrives instead of being held
   * whole: when nothing is queued before it and it goes to a shared lane or this client's pin,
   * its first bytes are sent and the connection is reserved until its last byte is through.
   */
  startCommandStream (head: RespCommand): boolean {
    if (this.#ctx.cluster != null || this.#closed || this.#pending.length > 0 || this.#wait !== W_NONE || (this.#retry !== null && this.#retry.held !== null) || !this.state.authenticated || this.#ctx.paused()) return false
    // XREAD/XREADGROUP are blocking or not by an argument that may not have arrived yet.
    if (head.name === 'xread' || head.name === 'xreadgroup') return false
    const kind = classify(head)
    if (kind !== Kind.SHARED || head.name === 'respool' || this.#ctx.denied.has(head.name)) return false
    const lease = this.#lease
    if (lease !== null && ((lease.reasons & (R_MONITOR | R_SUBSCRIBED)) !== 0 || !lease.pin.conn.isReady)) return false
    if (this.#inSharedSubscriberMode()) return false
    const conn = this.#target()
    if (conn === null) {
      // No lane yet: buffer this one as usual instead of waiting here.
      this.#router.cancelWait(this)
      this.#wait = W_NONE
      return false
    }
    if (conn.writeLockedBy !== null || conn.needDrain) return false
    this.#ctx.stats.downstreamRqTotal++
    const slot = new ReplySlot(this, head)
    slot.acceptedAt = performance.now()
    this.#firstLook(slot, head, kind)
    if (this.#slots === NO_QUEUE) this.#makeQueues()
    this.#slots.push(slot)
    if (lease === null || (lease.reasons & R_MULTI) === 0) this.#syncState(conn)
    else this.#effects.txnQueued++ // queued inside MULTI: one more element of EXEC's reply
    this.#inflight++
    this.#conn = conn
    conn.beginStream(head.frame, slot, this)
    this.#streamConn = conn
    this.#streamSlot = slot
    return true
  }

  commandStreamPart (piece: Buffer, done: boolean, transient: boolean): void {
    const conn = this.#streamConn
    if (conn === null) return
    if (done || !conn.isReady) {
      // The command is complete, or its connection failed (the command already got its error):
      // the rest of it is read and dropped.
      conn.streamPiece(piece, true, transient)
      this.#streamConn = null
      return
    }
    conn.streamPiece(piece, false, transient)
    if (conn.needDrain && (this.#paused & PAUSE_UPSTREAM) === 0) {
      // Redis reads slower than the client sends: stop reading the client until it catches up.
      this.#pause(PAUSE_UPSTREAM)
      conn.whenDrained(() => { this.#resume(PAUSE_UPSTREAM) })
    }
  }

  onCommand (cmd: RespCommand): void {
    if (this.#framer.limits.unauthenticated === true) {
      // Before AUTH, each command is handled before the next is framed, as Redis does: an AUTH
      // lifts the stricter size limits for the commands pipelined behind it.
      this.#onCommandFramed(cmd)
      this.#pump()
      return
    }
    this.#onCommandFramed(cmd)
  }

  #onCommandFramed (cmd: RespCommand): void {
    this.#ctx.stats.downstreamRqTotal++
    const slot = new ReplySlot(this, cmd)
    slot.effect = -1 // not classified yet
    slot.acceptedAt = performance.now()
    if (this.#slots === NO_QUEUE) this.#makeQueues()
    this.#slots.push(slot)
    this.#pending.push(slot)
    if (this.#slots.length >= this.#ctx.config.maxPipeline && (this.#paused & PAUSE_PIPELINE) === 0) {
      this.#ctx.stats.downstreamRqPipelineLimit++
      this.#pause(PAUSE_PIPELINE)
    }
  }

  // ---- dispatch --------------------------------------------------------------------------

  /** Sends pending commands upstream, in order, as far as routing allows. */
  #pump (): void {
    if (this.#retry !== null && this.#retry.held !== null) return // commands to send again first, once the others are answered
    const pending = this.#pending
    if (pending.length > 0 && this.#ctx.paused() && this.#wait === W_NONE && !this.#isAdmin(pending.peekFront() as ReplySlot)) {
      this.#wait = W_PAUSED
      this.#ctx.waitForResume(this)
      return
    }
    while (!this.#closed && this.#wait === W_NONE && pending.length > 0) {
      if (!windowAllows(this.#replyEstimate, this.#inflight, this.#writer.pendingBytes)) {
        // The client is behind on its reading: its next command waits, unsent, until it reads.
        this.#wait = W_OUTPUT
        return
      }
      if (!this.#dispatch(pending.peekFront() as ReplySlot)) return
    }
  }

  /** First look at a command, in order: reply suppression and bookkeeping happen once. */
  #firstLook (slot: ReplySlot, cmd: RespCommand, kind: CommandKind): void {
    const state = this.state
    this.#ctx.stats.downstreamRqByClass[kind]++
    slot.effect = 0
    state.lastCommand = cmd.name
    state.lastActive = slot.acceptedAt
    // RESET clears CLIENT REPLY OFF before it answers, so its +RESET is sent; SKIP still skips it.
    // Pub/sub confirmations are pushes, which Redis sends whatever CLIENT REPLY says (a SKIP is
    // spent on the command all the same); only an error in their place is held back.
    const push = kind === Kind.SUBSCRIBE || kind === Kind.UNSUBSCRIBE
    if (state.replyOff && kind !== Kind.RESET) slot.suppressed = !push
    else if (state.skipNext) {
      slot.suppressed = !push
      state.skipNext = false
    } else return
    slot.errorsSuppressed = push
  }

  #isAdmin (slot: ReplySlot): boolean {
    return slot.command?.name === 'respool'
  }

  /** RESPOOL RESUME: carry on with held commands. */
  resume (): void {
    if (this.#wait !== W_PAUSED) return
    this.#wait = W_NONE
    this.#pump()
  }

  /** Handles the head pending command. Returns false if it must wait (this.#wait says for what). */
  #dispatch (slot: ReplySlot): boolean {
    let cmd = slot.command as RespCommand
    const state = this.state
    const kind = classify(cmd)
    // A command in the ring is released when its reply is written: only a plain command on a
    // shared lane may stay there; anything that could be kept longer takes its own copy.
    if (cmd.lease !== null && (kind !== Kind.SHARED || this.#lease !== null)) slot.command = cmd = cmd.detached()
    if (slot.effect === -1) this.#firstLook(slot, cmd, kind)
    if (!state.authenticated && kind !== Kind.AUTH && kind !== Kind.HELLO && kind !== Kind.QUIT && kind !== Kind.RESET) {
      return this.#local(slot, errorReply('NOAUTH Authentication required.'))
    }
    const leased = this.#lease
    if (leased !== null && (leased.reasons & R_MULTI) !== 0 && !queueable(cmd, kind, this.#ctx.denied)) {
      // Inside MULTI, Redis queues a command and answers it within EXEC's reply. A command
      // respool would answer or refuse itself cannot be queued: like a command Redis rejects
      // while queueing, it fails now and EXEC aborts the whole transaction.
      this.#effects.txnAborted = true
      return this.#local(slot, toRespError(new CommandRefusedError(`'${cmd.name.toUpperCase()}' cannot be queued in a transaction through respool; EXEC will abort`)))
    }
    if (this.#ctx.denied.has(cmd.name)) {
      return this.#local(slot, toRespError(new CommandRefusedError(`'${cmd.name.toUpperCase()}' is refused by policy (--deny-commands)`)))
    }
    if (cmd.name === 'respool') {
      // Taken off the queue first, so the console does not count itself as pending.
      this.#pending.shift()
      const admin = this.#ctx.admin
      this.#fill(slot, admin !== null ? admin(this, cmd) : toRespError(new CommandRefusedError('admin commands are disabled')))
      return true
    }
    const lease = this.#lease
    if (lease !== null) {
      if (!lease.pin.conn.isReady) {
        this.#onLeaseLost()
        return false
      }
      if ((lease.reasons & R_MONITOR) !== 0 && kind !== Kind.QUIT && kind !== Kind.RESET) return this.#sendUnanswered(slot)
      // A RESP2 subscriber may only send what Redis allows there; Redis answers the rest itself.
      if ((lease.reasons & R_SUBSCRIBED) !== 0 && state.resp === 2 && kind !== Kind.SUBSCRIBE &&
        kind !== Kind.UNSUBSCRIBE && kind !== Kind.QUIT && kind !== Kind.RESET) {
        if (this.#effects.subs.inFlight > 0 && cmd.name !== 'ping') {
          // An (UN)SUBSCRIBE ahead of it may end subscriber mode: whether this command runs (and
          // changes the client's state) or is refused is known once its confirmations are in.
          this.#wait = W_BARRIER
          return false
        }
        return this.#forward(slot, 0, 0)
      }
    }
    if (kind !== Kind.SUBSCRIBE && kind !== Kind.UNSUBSCRIBE && kind !== Kind.QUIT && kind !== Kind.RESET && this.#inSharedSubscriberMode()) {
      return this.#local(slot, subscribedContextReply(cmd))
    }
    return this.#dispatchKind(slot, cmd, kind, lease)
  }

  #dispatchKind (slot: ReplySlot, cmd: RespCommand, kind: CommandKind, lease: Lease | null): boolean {
    if (this.#ctx.cluster != null) {
      const handled = (this.#cluster ??= new SessionCluster(this)).dispatch(slot, cmd, kind, this.#ctx.cluster)
      if (handled !== null) return handled
    }
    return ClientSession.#byKind[kind](this, slot, cmd, lease)
  }

  /**
   * What each kind of command does, at a glance (indexed by Kind; the handlers follow). Static,
   * so ten thousand idle clients share one table.
   */
  static readonly #byKind: ReadonlyArray<(s: ClientSession, slot: ReplySlot, cmd: RespCommand, lease: Lease | null) => boolean> = (() => {
    const table: Array<(s: ClientSession, slot: ReplySlot, cmd: RespCommand, lease: Lease | null) => boolean> = []
    const forward = (s: ClientSession, slot: ReplySlot): boolean => s.#forward(slot, 0, 0)
    table[Kind.SHARED] = (s, slot, cmd, lease) => s.#shared(slot, cmd, lease)
    table[Kind.READONLY] = forward
    table[Kind.READWRITE] = forward
    table[Kind.BLOCKING] = blockingCommand
    table[Kind.MULTI] = multi
    table[Kind.EXEC] = (s, slot, cmd, lease) => execOrDiscard(s, slot, cmd, Kind.EXEC, lease)
    table[Kind.DISCARD] = (s, slot, cmd, lease) => execOrDiscard(s, slot, cmd, Kind.DISCARD, lease)
    table[Kind.WATCH] = watch
    table[Kind.UNWATCH] = unwatch
    table[Kind.SUBSCRIBE] = (s, slot, cmd, lease) => pubsubCommand(s, slot, cmd, Kind.SUBSCRIBE, lease)
    table[Kind.UNSUBSCRIBE] = (s, slot, cmd, lease) => pubsubCommand(s, slot, cmd, Kind.UNSUBSCRIBE, lease)
    table[Kind.MONITOR] = (s, slot, _cmd, lease) => s.#monitor(slot, lease)
    table[Kind.SELECT] = (s, slot, cmd, lease) => s.#select(slot, cmd, isInMulti(lease))
    table[Kind.AUTH] = (s, slot, cmd, lease) => authOrHello(s, slot, cmd, Kind.AUTH, lease)
    table[Kind.HELLO] = (s, slot, cmd, lease) => authOrHello(s, slot, cmd, Kind.HELLO, lease)
    table[Kind.CLIENT] = clientCommand
    table[Kind.RESET] = (s, slot) => s.#reset(slot)
    table[Kind.QUIT] = (s, slot) => {
      s.#local(slot, OK)
      s.#endAfterReplies(true)
      return true
    }
    table[Kind.DENIED] = (s, slot, cmd) => s.#local(slot, toRespError(new CommandRefusedError(`'${cmd.name.toUpperCase()}' is refused: replication commands cannot be proxied`)))
    table[Kind.STATEFUL] = (s, slot, cmd) => s.#local(slot, toRespError(new CommandRefusedError(`'${cmd.name.toUpperCase()}' would change a shared connection and is not supported through respool`)))
    for (const kind of Object.values(Kind)) if (table[kind] === undefined) throw new Error(`no handler for command kind ${kind}`)
    return table
  })()

  #shared (slot: ReplySlot, cmd: RespCommand, lease: Lease | null): boolean {
    const inMulti = isInMulti(lease)
    if (!inMulti && isScriptKill(cmd)) return this.#sendAtOnce(slot, cmd.frame)
    if (cmd.name === 'script' && cmd.keyword(1) === 'debug' && cmd.argc === 3) {
      // The Lua debugger takes over the connection's next commands: on a shared lane they
      // would be other clients' commands. No connection is ever in debug mode, so NO is
      // answered as Redis answers it outside a pipeline.
      if (cmd.keyword(2) === 'no') return this.#local(slot, OK)
      return this.#local(slot, toRespError(new CommandRefusedError('SCRIPT DEBUG would turn a shared connection into a debugger session and is not supported through respool; debug against Redis directly')))
    }
    // Counts of subscribers: respool's shared subscriber connection stands for many clients.
    if (this.#ctx.pubsub !== null && !inMulti && ((cmd.name === 'publish' && cmd.argc === 3) || (cmd.name === 'pubsub' && cmd.keyword(1) === 'numsub'))) {
      return this.#forward(slot, E_PUBSUB_COUNT, 0)
    }
    // On a shared lane, a command Redis did not run may be sent again (retryElsewhere), in the
    // database and protocol it was first sent in.
    slot.retryable = lease === null
    slot.sentIn = this.state.db * 4 + this.state.resp
    return this.#forward(slot, 0, 0)
  }

  #monitor (slot: ReplySlot, lease: Lease | null): boolean {
    const inMulti = isInMulti(lease)
    if (inMulti) return this.#local(slot, toRespError(new CommandRefusedError('MONITOR inside MULTI is not supported')))
    if (lease === null) return this.#pinFor(slot, this.#ctx.config.acquireTimeoutMs)
    return this.#forward(slot, E_MONITOR, 0)
  }

  #clusterReply (slot: ReplySlot, reply: Buffer): void {
    this.#inflight--
    this.#replyEstimate = observeReply(this.#replyEstimate, reply.length)
    this.#ctx.observe.commandLatency((performance.now() - slot.acceptedAt) / 1000)
    this.#fill(slot, reply)
    this.#afterReply()
    // Shutting down: a transaction or blocking command of this client has just ended.
    if (this.#endWhenUnpinned && this.#inflight === 0 && !(this.#cluster?.pinned ?? false) && !this.sharedSubscribed) this.#endAfterReplies(false)
  }

  /**
   * Parks a blocking command inside respool: no connection is held while it waits. The client's
   * earlier commands are answered first (it runs after them, as on one connection), and its later
   * commands wait until it is answered, as behind a blocked connection.
   */
  park (slot: ReplySlot, cmd: RespCommand, what: Parkable, timeoutMs: number): boolean {
    if (this.#inflight > 0) {
      this.#wait = W_BARRIER
      return false
    }
    this.#pending.shift()
    this.#wait = W_PARKED
    this.#parkedSlot = slot
    this.#ctx.stats.downstreamRqParked++
    this.#waiter = (this.#ctx.parking as ParkingLot).park(this, cmd, what, this.state.db, this.state.resp, timeoutMs)
    return true
  }

  /** The parked command's reply (its element, Redis's timeout reply, or an error). */
  onParkedReply (reply: Buffer): void {
    const slot = this.#parkedSlot
    this.#parkedSlot = null
    this.#waiter = null
    if (slot === null || this.#closed) return
    this.#fill(slot, reply)
    // Written now, not at the end of this turn: an element handed to this client must reach
    // its socket before a close that arrives meanwhile could turn the write into nothing.
    this.#writer.flush()
    if (this.#wait === W_PARKED) this.#wait = W_NONE
    if (this.#endWhenUnpinned && this.#lease === null) {
      this.#endAfterReplies(false)
      return
    }
    this.#pump()
  }

  /** True while a blocking command of this client is parked (CLIENT LIST flag b). */
  get parked (): boolean {
    return this.#waiter !== null
  }

  /**
   * SELECT goes to Redis, which alone decides whether it succeeds ("01", "-1", an index past
   * `databases` are all refused there, with Redis's own words). Nothing about the database is
   * assumed before Redis answers: the connection's database is unknown meanwhile (other clients
   * on it select their own), and this client sends nothing more until the reply says which
   * database its next command runs in. Inside MULTI it is queued, and EXEC's reply decides.
   */
  #select (slot: ReplySlot, cmd: RespCommand, inMulti: boolean): boolean {
    if (cmd.argc !== 2) return this.#forward(slot, 0, 0) // Redis answers the arity error
    const db = parseRedisInt(cmd.argString(1)) ?? -1
    if (inMulti) return this.#forward(slot, E_SELECT_QUEUED, db)
    if (!this.#forward(slot, E_SELECT, db)) return false
    this.#wait = W_BARRIER
    return true
  }

  /**
   * Writes MULTI … EXEC to one shared lane in a single pass, so no other client's command can
   * land between them: Redis then runs it exactly as on a connection of its own, and the lane
   * is clean again after EXEC. This is how pipelining clients (redis-rb, ioredis, redis-py,
   * node-redis) send transactions, and it needs no pin, so a pool saturated by blocking
   * commands (Sidekiq's fetchers) does not starve them.
   */
  #sendTransaction (end: number): boolean {
    const conn = this.#target()
    if (conn === null) return false
    this.#syncState(conn)
    // Written whatever the socket's backpressure says: the block must leave contiguously.
    for (let i = 0; i <= end; i++) {
      const slot = this.#pending.shift() as ReplySlot
      const cmd = slot.command as RespCommand
      if (i > 0) this.#firstLook(slot, cmd, classify(cmd))
      slot.effect = 0
      this.#inflight++
      conn.send(cmd.frame, slot)
    }
    this.#conn = conn
    return true
  }

  /** Back to respool's own router (RESET, disconnect); the user's router is let go. */
  #dropIdentity (): void {
    if (this.#identity === null) return
    this.#ctx.identities.detach(this.#identity)
    this.#identity = null
    this.#router = this.#ctx.router
  }

  /** Ends this client's blocked command, if it has one: :1/:0, or the pin's Redis id. */
  unblock (mode: UnblockMode): Buffer | { redisId: string } {
    if (this.#waiter !== null && this.#ctx.parking !== null) {
      return this.#ctx.parking.unblock(this.#waiter, mode === 'error' ? UNBLOCKED_ERROR : timeoutReply(this.state.resp)) ? ONE : ZERO
    }
    const conn = this.#lease?.pin.conn
    if (conn !== undefined && ((this.#lease?.reasons ?? 0) & R_BLOCKING) !== 0 && conn.blockingInflight > 0 && conn.redisId !== null) {
      return { redisId: conn.redisId }
    }
    return ZERO
  }

  #reset (slot: ReplySlot): boolean {
    if (this.#inflight > 0) {
      this.#wait = W_BARRIER // earlier replies first, then the state is thrown away
      return false
    }
    this.#endLease()
    this.#cluster?.reset()
    if (this.#member !== null) this.#ctx.pubsub?.leave(this.#member)
    this.#dropIdentity() // RESET authenticates as the default user again: the upstream URL's
    this.state.reset()
    this.#effects.reset()
    this.#framer.limits = sharedLimits(this.#ctx, this.state.authenticated)
    return this.#local(slot, simpleString('RESET'))
  }

  // ---- sending ---------------------------------------------------------------------------

  /**
   * SCRIPT KILL / FUNCTION KILL go to Redis at once on a connection of their own, not behind
   * the busy script on this client's lane; the reply keeps its place in the client's order.
   */
  #sendAtOnce (slot: ReplySlot, frame: Buffer): boolean {
    this.#pending.shift()
    this.#router.sendAtOnce(frame, (reply, err) => {
      if (err !== null) this.#ctx.stats.countFailure(err.code)
      this.#fill(slot, reply ?? toRespError(err as ProxyError))
    })
    return true
  }

  /** Answers the head pending command locally (its reply keeps its place in the order). */
  #local (slot: ReplySlot, reply: Buffer): boolean {
    this.#pending.shift()
    this.#fill(slot, reply)
    return true
  }

  /** Sends the head pending command to the session's connection: its pin, its lane, or a new lane. */
  #forward (slot: ReplySlot, effect: number, data: number): boolean {
    const lease = this.#lease
    const conn = this.#target()
    if (conn === null) return false
    if (conn.needDrain) {
      this.#wait = W_DRAIN
      this.#pause(PAUSE_UPSTREAM)
      conn.whenDrained(this.#callbacks.upstreamDrained)
      return false
    }
    this.#pending.shift()
    // Inside MULTI everything is queued by Redis, so nothing may be slipped in; the state cannot
    // change there anyway (SELECT is deferred to EXEC, HELLO/AUTH are refused).
    if (lease === null || (lease.reasons & R_MULTI) === 0) this.#syncState(conn)
    else if (effect !== E_EXEC && effect !== E_DISCARD && effect !== E_EXEC_ABORTED && !NOT_QUEUED.has((slot.command as RespCommand).name)) {
      // One more element of EXEC's reply (where a queued SELECT's outcome is read).
      this.#effects.txnQueued++
    }
    slot.effect = effect
    slot.data = data
    if (effect !== 0) this.#effects.onSend(slot, conn, lease)
    this.#inflight++
    this.#conn = conn
    if (lease === null && repliesLarge(this.#replyEstimate)) {
      // This client's replies are large: the lane is busy for everyone else until it is answered.
      conn.heavyInflight++
      slot.heavy = true
    }
    conn.send((slot.command as RespCommand).frame, slot)
    return true
  }

  /**
   * The connection for the session's next command: its pin; else the lane its earlier
   * commands are still in flight on (read-your-writes); else the best lane. Null when no lane
   * exists yet: the session then waits for one.
   */
  #target (): UpstreamConnection | null {
    let conn: UpstreamConnection | null = null
    if (this.#lease !== null) conn = this.#lease.pin.conn
    else if (this.#inflight > 0) {
      if (this.#conn === null) throw new Error('session has inflight commands but no connection')
      conn = this.#conn
      if (this.#router.isDraining(conn) || !conn.isReady) {
        // The lane is being given up (for a pin, or it reaches a master no more): once this
        // client's replies there are in, it moves on (a client that keeps pipelining would
        // otherwise keep it busy for ever).
        this.#wait = W_BARRIER
        return null
      }
    }
    if (conn !== null) {
      if (conn.writeLockedBy === null || conn.writeLockedBy === this) return conn
      // Another client's large command is being written there: wait until it is through.
      this.#wait = W_DRAIN
      conn.whenUnlocked(this.#callbacks.upstreamDrained)
      return null
    }
    const lane = this.#router.pickLane(this.state.db, this.state.resp)
    if (lane === null) {
      this.#wait = W_LANE
      this.#router.waitForLane(this)
    }
    return lane
  }

  /** MONITOR mode: the command's answers come through the tunnel, so it gets no slot. */
  #sendUnanswered (slot: ReplySlot): boolean {
    if (this.#inflight > 0) {
      this.#wait = W_BARRIER
      return false
    }
    this.#pending.shift()
    this.#slots.shift() // all earlier replies were written, so this slot is the head
    ;(this.#lease as Lease).pin.conn.sendRaw((slot.command as RespCommand).frame)
    return true
  }

  /** The connection speaks the client's protocol and sits in its database before its command runs. */
  #syncState (conn: UpstreamConnection): void {
    syncLaneState(conn, this.state.db, this.state.resp)
  }

  // ---- pins --------------------------------------------------------------------------------

  /** Acquires a pin for the head command; dispatch resumes with the lease in place. */
  #pinFor (slot: ReplySlot, deadlineMs: number | null): boolean {
    if (this.#inflight > 0) {
      this.#wait = W_BARRIER // the new connection must not overtake replies still due on the old one
      return false
    }
    this.#wait = W_PIN
    this.#pinRequestedAt = performance.now()
    this.#pinRequestedFor = slot
    // Blocking commands hold a pin for their whole timeout; they may take all pins but one, so
    // transactions, WATCH and subscribers always find one soon.
    const acquisition = this.#router.acquirePin(deadlineMs, classify(slot.command as RespCommand) === Kind.BLOCKING ? 'blocking' : 'short')
    this.#acquiring = acquisition
    acquisition.promise.then((pin) => {
      this.#acquiring = null
      if (this.#closed) {
        this.#router.releasePin(pin, 'clean')
        return
      }
      this.#ctx.observe.pinWait((performance.now() - this.#pinRequestedAt) / 1000)
      this.#lease = { pin, reasons: 0, dirty: false }
      pin.conn.onClose = () => { this.#onLeaseLost() }
      this.#wait = W_NONE
      this.#pump()
    }, (err: ProxyError) => {
      this.#acquiring = null
      if (this.#closed) return
      this.#wait = W_NONE
      this.#pinRequestedFor = null
      const cmd = slot.command as RespCommand
      const blocking = classify(cmd) === Kind.BLOCKING && err.code === 'RESPOOL_ERR_POOL_TIMEOUT' && deadlineMs !== null && (blockingTimeoutMs(cmd) ?? 0) > 0
      // A blocking command that ran out of time while waiting gets Redis's own timeout reply.
      this.#local(slot, blocking ? timeoutReply(this.state.resp) : toRespError(err))
      this.#pump()
    })
    return false
  }

  /** Gives the pin back when no reason to hold it is left and nothing is in flight on it. */
  #maybeReleaseLease (): void {
    const lease = this.#lease
    if (lease === null || lease.reasons !== 0 || this.#inflight > 0 || this.#wait === W_PIN) return
    this.#lease = null
    this.#conn = null
    this.#ctx.observe.pinHeld((performance.now() - lease.pin.acquiredAt) / 1000)
    this.#router.releasePin(lease.pin, lease.pin.conn.inflight > 0 ? 'destroy' : lease.dirty ? 'scrub' : 'clean')
    if (this.#endWhenUnpinned) this.#endAfterReplies(false)
  }

  /** Ends the lease whatever its state (RESET, client gone): clean, scrubbed or destroyed. */
  #endLease (): void {
    const lease = this.#lease
    this.#effects.txnAborted = false
    if (lease === null) return
    this.#lease = null
    this.#conn = null
    const conn = lease.pin.conn
    let how: PinRelease = 'clean'
    if ((lease.reasons & (STREAMING | R_BLOCKING)) !== 0 || conn.inflight > 0 || conn.blockingInflight > 0) {
      // A blocked command must not pop an element for nobody; a streaming connection cannot be
      // told apart from its messages. Closing is the only safe end.
      how = 'destroy'
    } else if (lease.reasons !== 0 || lease.dirty) {
      how = 'scrub' // MULTI or WATCH: RESET and handshake again before anyone else uses it
    }
    this.#ctx.observe.pinHeld((performance.now() - lease.pin.acquiredAt) / 1000)
    this.#router.releasePin(lease.pin, how)
  }

  /** The pinned connection failed. Commands on it already got errors. */
  #onLeaseLost (): void {
    const lease = this.#lease
    if (lease === null) return
    this.#lease = null
    this.#conn = null
    this.#router.releasePin(lease.pin, 'destroy')
    if ((lease.reasons & (R_MULTI | R_WATCH | STREAMING)) !== 0 && !this.#closed) {
      // The transaction or subscription is gone with the connection. Running the client's next
      // commands elsewhere would silently break its atomicity or lose its messages, so the client
      // is disconnected, as a direct connection would be.
      this.#ctx.log.debug({ client: this.id, reasons: lease.reasons }, 'pinned upstream connection lost; closing client')
      this.#endAfterReplies(true)
      return
    }
    if (this.#wait === W_NONE) this.#pump()
  }

  #onUpstreamDrained (): void {
    this.#resume(PAUSE_UPSTREAM)
    if (this.#wait !== W_DRAIN) return // a stale wake-up: the session is waiting for something else now
    this.#wait = W_NONE
    this.#pump()
  }

  laneReady (): void {
    this.#wait = W_NONE
    this.#pump()
  }

  laneFailed (err: ProxyError): void {
    this.#wait = W_NONE
    // Every command waiting behind the failed wait gets the error now: one dead upstream must
    // not cost a pipelining client one deadline per command.
    while (this.#pending.length > 0) {
      const slot = this.#pending.shift() as ReplySlot
      this.#fill(slot, toRespError(err))
    }
  }

  // ---- replies ---------------------------------------------------------------------------

  /** Replies may come as views of the shared read buffer (see ReplySink.takesTransient). */
  get takesTransient (): boolean {
    return true
  }

  onReply (slot: ReplySlot, frame: Buffer, transient = false): void {
    if (transient) {
      // Written at once (the usual case): copied into the writer's turn arena on the way out.
      // Otherwise it is kept (waiting for an earlier reply, held behind a retried command, or
      // read by an effect): a copy now.
      if ((this.#retry === null || this.#retry.held === null) && slot.effect === 0 && !this.#closed && this.#slots.peekFront() === slot && !slot.suppressed && !slot.errorsSuppressed) {
        this.#transientReply = frame
      } else {
        frame = Buffer.from(frame)
      }
    }
    if (this.#retry !== null && this.#retry.held !== null && this.#retry.laterReply(slot, frame)) return
    this.#inflight--
    this.#replyEstimate = observeReply(this.#replyEstimate, frame.length)
    this.#ctx.observe.commandLatency((performance.now() - slot.acceptedAt) / 1000)
    if (slot.effect > 0) this.#effects.onReply(slot, frame, this.#lease, this.#conn)
    if (slot.effect === E_EXEC_ABORTED && frame[0] !== MINUS) frame = EXECABORT
    if (slot.effect === E_PUBSUB_COUNT && this.#ctx.pubsub !== null) frame = adjustCount(slot.command as RespCommand, frame, this.#ctx.pubsub)
    this.#fill(slot, frame)
    this.#transientReply = null
    this.#afterReply()
  }

  #afterReply (): void {
    if (this.#wait === W_OUTPUT) this.#outputWaitOver()
    if (this.#inflight > 0) return
    if (this.#retry !== null && this.#retry.held !== null) {
      this.#retry.requeueSoon()
      return
    }
    this.#maybeReleaseLease()
    if (this.#wait === W_BARRIER) this.#wait = W_NONE
    if (this.#pending.length > 0 && this.#wait === W_NONE) this.#pump()
  }

  /**
   * A large reply arriving in pieces. When every earlier reply has been written, each piece
   * goes straight to the client as it arrives (a 256 MB value never sits in memory whole);
   * while the client is slower than Redis, the upstream connection stops reading. Otherwise the
   * pieces wait in the slot and the reply is written whole in its turn.
   */
  onReplyPart (slot: ReplySlot, piece: Buffer, done: boolean, source: Pausable, transient = false): void {
    // EXEC's reply is read whole when a queued SELECT's outcome must be found in it.
    const collect = (slot.effect === E_EXEC && this.#effects.decidesDb(slot)) || slot.effect === E_PUBSUB_COUNT
    if (!slot.streamed && (collect || this.#slots.peekFront() !== slot || slot.pieces !== null)) {
      ;(slot.pieces ??= []).push(transient ? Buffer.from(piece) : piece)
      if (!done) return
      const whole = Buffer.concat(slot.pieces)
      slot.pieces = null
      this.onReply(slot, whole)
      return
    }
    if (!slot.streamed) {
      slot.streamed = true
      slot.lead = Buffer.from(piece.subarray(0, 2)) // the reply's type, for effects
      if (this.#lease === null) this.#router.ensureSpareLane()
    }
    if (!slot.suppressed && !this.#closed) {
      if (transient) this.#writer.writePiece(piece)
      else this.#writer.write(piece)
      this.checkOutput()
    }
    this.#streamedBytes += piece.length
    if (!done) {
      // The upstream stops reading for a slow reader only when that holds up nobody else: on a
      // connection of this client's own, or on a shared lane whose only unanswered command is
      // this one (new commands avoid a lane reading a large reply). Otherwise the reply is
      // buffered, within the output limits and the budget for all clients.
      if (this.#streamSource === null && this.#writer.pendingBytes > STREAM_HIGH_WATER) {
        if (this.#lease?.pin.conn === source) {
          this.#streamSource = source
          source.pauseReading()
        } else if (source.inflight === 1) {
          this.#streamSource = source
          this.#streamAlone = true
          source.pauseWhileAlone()
        }
      }
      return
    }
    this.#inflight--
    this.#replyEstimate = observeReply(this.#replyEstimate, this.#streamedBytes)
    this.#streamedBytes = 0
    this.#ctx.observe.commandLatency((performance.now() - slot.acceptedAt) / 1000)
    if (slot.effect > 0) this.#effects.onReply(slot, slot.lead as Buffer, this.#lease, this.#conn)
    if (!this.#closed && this.#slots.peekFront() === slot) {
      this.#slots.shift()
      this.#flush()
    }
    this.#afterReply()
  }

  /**
   * Redis did not run a shared-lane command of this client: it refused it (-READONLY,
   * -MASTERDOWN, -LOADING), or its bytes never left respool before its connection closed. The
   * command is held, and once this client's other commands in flight are answered, it goes back
   * to the head of the pending queue (after the topology has moved on: the connection's signal
   * runs in an earlier microtask; after a pause for -LOADING and -MASTERDOWN). Within a budget:
   * RETRY_MAX_ATTEMPTS sends and --retry-budget ms from its arrival; past it, the refusal is the
   * reply. Not inside a transaction or on a pin (the command must be this client's own, alone).
   */
  retryElsewhere (slot: ReplySlot, conn: object, refusal: Buffer | null): boolean {
    if (this.#closed || !slot.retryable || slot.streamed || this.#lease !== null || this.#conn !== conn || !mayRetry(slot, this.#ctx.config.retryBudgetMs, this.state)) return false
    if (refusal !== null) slot.refusal = refusal
    ;(this.#retry ??= new RetryQueue(this)).hold(slot)
    return true
  }

  onFailure (slot: ReplySlot, err: ProxyError): void {
    this.#ctx.stats.countFailure(err.code)
    if (slot.streamed) {
      // Part of the reply is already with the client: an error now would corrupt its stream.
      // Closing is what a direct connection to a dying Redis would do too.
      this.#inflight--
      this.destroy()
      return
    }
    this.onReply(slot, toRespError(err))
  }

  /** State changes that depend on Redis's answer (a failed SELECT leaves the db as it was …). */
  /**
   * Frames on a subscribed connection. Messages are out of band; confirmations complete the
   * (UN)SUBSCRIBE command waiting for them (a command naming n channels gets n); anything else
   * is an ordinary reply. Subscriber mode ends, in stream order, with the confirmation that
   * leaves no subscription: frames after it are ordinary replies again.
   */
  #onPubsubFrame (frame: Buffer): boolean {
    const lease = this.#lease
    if (lease === null) return false
    const conn = lease.pin.conn
    const info = parsePubsubFrame(frame, conn.resp)
    if (info === null) {
      if (frame[0] !== PUSH) return false
      this.#outOfBand(frame) // RESP3 push that is not pub/sub: tracking invalidations
      return true
    }
    if (info.kind === 'message') {
      this.#outOfBand(frame)
      return true
    }
    const reply = this.#effects.subs.confirm(info, frame, conn.peekHead(), this)
    if (reply === null) this.#outOfBand(frame)
    else if (reply !== 'pending') conn.completeHead(reply)
    this.maybeLeavePubsub()
    return true
  }

  /**
   * Subscriber mode ends, in stream order, once no subscription is left and no (UN)SUBSCRIBE
   * is still on its way: a SUBSCRIBE pipelined behind the last UNSUBSCRIBE keeps the mode.
   */
  maybeLeavePubsub (): void {
    const lease = this.#lease
    if (lease === null || (lease.reasons & R_SUBSCRIBED) === 0 || !this.#effects.subs.settled) return
    lease.pin.conn.tunnel = null
    lease.reasons &= ~R_SUBSCRIBED
    this.#maybeReleaseLease()
  }

  #onMonitorFrame (frame: Buffer): boolean {
    this.#outOfBand(frame)
    return true
  }

  /**
   * A frame nobody's command asked for (a message, an invalidation, a MONITOR line). Everything
   * answered before it on the connection has been written, so writing it now keeps the stream
   * in Redis's order; inside a reply still being collected it joins that reply.
   */
  #outOfBand (frame: Buffer): void {
    if (this.#closed) return
    const head = this.#slots.peekFront()
    if (head !== undefined && head.parts !== null) {
      head.parts.push(frame)
      return
    }
    this.#write(frame)
  }

  // ---- callbacks made on first use ---------------------------------------------------------

  get #callbacks (): SessionCallbacks {
    return this.#madeCallbacks ??= {
      upstreamDrained: () => { this.#onUpstreamDrained() },
      pubsubTunnel: (frame) => this.#onPubsubFrame(frame),
      monitorTunnel: (frame) => this.#onMonitorFrame(frame),
      outOfBand: (frame) => { this.#outOfBand(frame) }
    }
  }

  /** EffectHooks: the tunnel of this client's subscribed connection. */
  get pubsubTunnel (): (frame: Buffer) => boolean {
    return this.#callbacks.pubsubTunnel
  }

  /** EffectHooks: the tunnel of this client's connection in MONITOR mode. */
  get monitorTunnel (): (frame: Buffer) => boolean {
    return this.#callbacks.monitorTunnel
  }

  /** EffectHooks and the pub/sub fan-out: frames no command of this client asked for. */
  get outOfBandHandler (): (frame: Buffer) => void {
    return this.#callbacks.outOfBand
  }

  /** EffectHooks: the proxy's counters. */
  get stats (): ProxyStats {
    return this.#ctx.stats
  }

  /** WriteOwner: the client is not reading its replies; stop reading its commands. */
  onOutputFull (): void {
    this.#pause(PAUSE_OUTPUT)
  }

  /** Fills a slot and writes every reply that is now at the head, in order. */
  #fill (slot: ReplySlot, reply: Buffer): void {
    slot.reply = reply
    if (this.#closed) return
    const head = this.#slots.peekFront()
    if (head !== slot && head?.reply === null) return // an earlier reply is still missing
    this.#flush()
  }

  /** Writes every reply at the head that is complete, in order. */
  #flush (): void {
    const slots = this.#slots
    let head = slots.peekFront()
    while (head !== undefined && head.reply !== null) {
      slots.shift()
      // Answered: nothing reads its command's bytes again (a command in the ring gives them back).
      head.command?.lease?.release()
      if (!head.suppressed && !(head.errorsSuppressed && head.reply[0] === MINUS)) this.#write(head.reply)
      head = slots.peekFront()
    }
    if ((this.#paused & PAUSE_PIPELINE) !== 0 && slots.length < this.#ctx.config.maxPipeline / 2) this.#resume(PAUSE_PIPELINE)
    if (this.#endWhenFlushed && slots.length === 0) this.#end()
  }

  #write (bytes: Buffer): void {
    if (bytes === this.#transientReply) this.#writer.writeTransient(bytes)
    else this.#writer.write(bytes)
    this.checkOutput()
  }

  /**
   * Like Redis's client-output-buffer-limit: a client past the hard limit, or above the soft
   * limit for longer than its seconds, is cut off. Runs on every write, and every second for
   * clients that hold output (one that stopped reading gets no more writes to notice it).
   */
  checkOutput (): void {
    if (this.#closed) return
    const buffered = this.#writer.pendingBytes
    const over = this.#guard.check(buffered)
    if (over === null) return
    this.#ctx.stats.downstreamCxOutputLimit++
    this.#ctx.log.warn({ client: this.id, buffered, limit: over, class: this.subscribed ? 'pubsub' : 'normal' }, 'client output buffer limit reached; disconnecting')
    this.destroy()
  }

  /** Subscribed clients get the pub/sub output limits. */
  get subscribed (): boolean {
    const view = this.view()
    return ((this.#lease?.reasons ?? 0) & R_SUBSCRIBED) !== 0 || view.sub + view.psub + view.ssub > 0
  }

  /** Bytes held for this client: reply data not yet taken by its socket, and replies held for order. */
  bufferedBytes (): number {
    if (this.#closed) return 0
    let held = 0
    for (let i = 0; i < this.#slots.length; i++) {
      const slot = this.#slots.peekAt(i) as ReplySlot
      if (slot.reply !== null) held += slot.reply.length
      else if (slot.pieces !== null) for (const piece of slot.pieces) held += piece.length
    }
    return this.#writer.pendingBytes + held
  }

  /** The budget for all clients ran out and this client held the most: it is disconnected. */
  evictForMemory (bytes: number): void {
    this.#ctx.log.warn({ client: this.id, buffered: bytes, budget: this.#ctx.config.maxMemoryClients }, 'maxmemory-clients reached; disconnecting the client that holds the most')
    this.destroy()
  }

  /** The client read enough of its replies: commands waiting for that go on. */
  #outputWaitOver (): void {
    if (windowAllows(this.#replyEstimate, this.#inflight, this.#writer.pendingBytes)) {
      this.#wait = W_NONE
      this.#pump()
    }
  }

  #addLocalReply (reply: Buffer): void {
    const slot = new ReplySlot(this, null)
    if (this.#slots === NO_QUEUE) this.#makeQueues()
    this.#slots.push(slot)
    this.#fill(slot, reply)
  }

  /** The first command: the session gets queues of its own (until then it shares NO_QUEUE). */
  #makeQueues (): void {
    this.#slots = new Denque<ReplySlot>()
    this.#pending = new Denque<ReplySlot>()
  }

  #onDrain (): void {
    this.#resume(PAUSE_OUTPUT)
    this.#guard.report(this.#writer.pendingBytes)
    if (this.#wait === W_OUTPUT) this.#outputWaitOver()
    this.#endStreamPause()
  }

  // ---- flow control and lifecycle --------------------------------------------------------

  /** The connection stopped for this client's slow reading of a large reply reads again. */
  #endStreamPause (): void {
    const source = this.#streamSource
    if (source === null) return
    this.#streamSource = null
    if (this.#streamAlone) source.endAlonePause()
    else source.resumeReading()
    this.#streamAlone = false
  }

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
    if (dropPending && this.#acquiring !== null) {
      this.#acquiring.cancel(new UpstreamClosedError('client is closing'))
      this.#wait = W_NONE
    }
    this.#endWhenFlushed = true
    if (this.#slots.length === 0) this.#end()
  }

  /**
   * Sends what is held, then closes the connection, as Redis does after QUIT or a protocol
   * error: closed, not half-closed, so a client that keeps writing gets a reset instead of
   * blocking forever on a peer that no longer reads.
   */
  #end (): void {
    this.#writer.flush()
    this.#socket.end(() => { this.#socket.destroy() })
  }

  /**
   * Graceful shutdown: answer what was accepted, then close. A client holding a pinned
   * connection (inside MULTI, WATCH, subscribed) keeps being served until it gives the pin back,
   * so a transaction in progress can still finish; the shutdown grace period bounds the wait.
   */
  endAfterInflight (): void {
    if (this.#closed) return
    if (this.#lease !== null || this.#acquiring !== null || this.#waiter !== null || this.sharedSubscribed || (this.#cluster?.pinned ?? false)) this.#endWhenUnpinned = true
    else this.#endAfterReplies(false)
  }

  /** Closes the client now. Replies still in flight upstream are read and dropped. Idempotent. */
  destroy (): void {
    if (this.#closed) return
    this.#closed = true
    this.#socket.destroy()
    this.#retry?.close()
    if (this.#wait === W_LANE) this.#router.cancelWait(this)
    if (this.#acquiring !== null) this.#acquiring.cancel(new UpstreamClosedError('client disconnected'))
    for (let i = 0; i < this.#slots.length; i++) (this.#slots.peekAt(i) as ReplySlot).cancelled = true
    this.#ctx.stats.upstreamRqCancelled += this.#inflight
    if (this.#slots !== NO_QUEUE) {
      this.#slots.clear()
      this.#pending.clear()
    }
    this.#endStreamPause()
    if (this.#streamConn !== null) {
      // Redis holds the first part of a command whose rest will never come: the connection is
      // closed once the replies owed to others on it have arrived.
      this.#streamConn.abandonStream()
      this.#streamConn = null
    }
    this.#endLease()
    this.#cluster?.close()
    if (this.#member !== null) this.#ctx.pubsub?.leave(this.#member)
    this.#dropIdentity()
    if (this.#waiter !== null) {
      this.#ctx.parking?.cancel(this.#waiter)
      this.#waiter = null
    }
    this.#ctx.onSessionClosed(this)
  }
}
