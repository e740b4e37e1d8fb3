import type { Pin } from '../routing/router.js'
import type { ReplySlot } from '../routing/reply-slot.js'
import type { RespCommand } from '../protocol/resp-command.js'
import type { SessionState } from './session-state.js'
import type { ProxyStats } from '../ops/proxy-stats.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import { Subscriptions } from './subscriptions.js'
import { ReplyFramer } from '../protocol/reply-framer.js'

/**
 * What a client's commands do to its state and its pinned connection, besides being carried
 * there and back: SELECT moves the database, MULTI/WATCH/MONITOR/SUBSCRIBE/TRACKING and blocking
 * commands add reasons to hold the pin, and the replies (EXEC, a refused SELECT, the last
 * unsubscribe …) take them away again. The session decides where a command goes and marks it
 * with an effect (ReplySlot.effect); this applies the effect when the command is written and
 * when its reply arrives, in the order Redis ran them.
 */

// Why the session holds a pinned connection (a bit each; the pin is released when none is left).
export const R_MULTI = 1
export const R_WATCH = 2
export const R_BLOCKING = 4
export const R_SUBSCRIBED = 8
export const R_MONITOR = 16
export const R_TRACKING = 32
/** Reasons that make the connection's state unknowable once the client is gone. */
export const STREAMING = R_SUBSCRIBED | R_MONITOR | R_TRACKING

// What must happen when a command's reply arrives (ReplySlot.effect).
export const E_SELECT = 1
export const E_SELECT_QUEUED = 2
export const E_MULTI = 3
export const E_EXEC = 4
export const E_DISCARD = 5
export const E_WATCH = 6
export const E_UNWATCH = 7
export const E_BLOCKING = 8
export const E_TRACKING_ON = 9
export const E_TRACKING_OFF = 10
export const E_MONITOR = 11
export const E_SUBSCRIBE = 12
export const E_EXEC_ABORTED = 13
/** PUBLISH or PUBSUB NUMSUB: the count is adjusted for the shared pub/sub fan-out. */
export const E_PUBSUB_COUNT = 14

/** A pinned connection held by one client, and why it is held (R_* bits). */
export interface Lease {
  pin: Pin
  reasons: number
  /**
   * The client put the connection into a state of its own (MULTI, WATCH, subscriptions,
   * MONITOR, tracking) at some point. Such a connection goes back to the pool only after a
   * RESET that Redis answered: its state is then known from Redis, not from what respool
   * expects the commands to have done (a MULTI pipelined behind EXEC would otherwise leave the
   * pooled connection inside a transaction).
   */
  dirty: boolean
}

/** The client is inside MULTI (on its pin). */
export function isInMulti (lease: Lease | null): boolean {
  return lease !== null && (lease.reasons & R_MULTI) !== 0
}

/**
 * What the effects need from their session (the session itself: an idle client then costs no
 * object or closures for them). The handlers are functions given to a connection as its tunnel
 * or push handler, made by the session when first asked for.
 */
export interface EffectHooks {
  readonly state: SessionState
  readonly stats: ProxyStats
  /** The tunnel of a subscribed connection (messages and confirmations). */
  readonly pubsubTunnel: (frame: Buffer) => boolean
  /** The tunnel of a connection in MONITOR mode. */
  readonly monitorTunnel: (frame: Buffer) => boolean
  /** A frame no command asked for (a tracking invalidation). */
  readonly outOfBandHandler: (frame: Buffer) => void
  /** Leaves subscriber mode if no subscription is left. */
  maybeLeavePubsub (): void
}

const MINUS = 0x2d
/** The SELECTs of a transaction that has none (most): shared and frozen, so never written. */
const NO_SELECTS = Object.freeze([]) as unknown as QueuedSelect[]
const WAIT_FENCE = ['PUBLISH', '__respool__:wait-fence', '']

/** A SELECT queued inside MULTI: its place in EXEC's reply, and the database it names (-1: none). */
interface QueuedSelect {
  index: number
  db: number
}

export class SessionEffects {
  /** Commands of the open transaction that Redis queues (their replies are EXEC's elements). */
  txnQueued = 0
  /** SELECTs queued in the open transaction; EXEC's reply says which of them succeeded. */
  txnSelects = NO_SELECTS
  /**
   * The SELECTs of each EXEC in flight, by its slot: EXEC's own reply says which ran (an earlier
   * EXEC's reply may still be on its way when a later transaction's EXEC is sent).
   */
  #execSelects: Map<ReplySlot, QueuedSelect[]> | null = null
  /** A command of the open transaction could not be queued: EXEC answers EXECABORT. */
  txnAborted = false
  /** The client's subscriptions on its pinned connection (made on first use). */
  #subs: Subscriptions | null = null
  readonly #hooks: EffectHooks

  get subs (): Subscriptions {
    return this.#subs ??= new Subscriptions()
  }

  constructor (hooks: EffectHooks) {
    this.#hooks = hooks
  }

  /** RESET: no transaction and no subscription is left. */
  reset (): void {
    this.txnQueued = 0
    this.txnSelects = NO_SELECTS
    this.#execSelects = null
    this.txnAborted = false
    this.#subs?.clear()
  }

  /**
   * State changes that take effect when the command is written. Whether the client is inside
   * MULTI or WATCH is decided here, in the order the client sent its commands, never from
   * replies still in flight: a MULTI pipelined behind an EXEC opens a new transaction, and a
   * command pipelined behind EXEC is outside it. What Redis alone can decide (whether a SELECT
   * succeeds) waits for Redis's reply, and the session sends nothing meanwhile.
   */
  onSend (slot: ReplySlot, conn: UpstreamConnection, lease: Lease | null): void {
    switch (slot.effect) {
      case E_SELECT:
        // The connection's database is unknown until Redis answers; other clients sharing it
        // select their own meanwhile. The epoch tells the reply whether anyone did.
        slot.prior = conn.markDbUnknown()
        break
      case E_SELECT_QUEUED:
        if (this.txnSelects === NO_SELECTS) this.txnSelects = []
        this.txnSelects.push({ index: this.txnQueued - 1, db: slot.data })
        break
      case E_MULTI:
        this.txnAborted = false
        this.txnQueued = 0
        this.txnSelects = NO_SELECTS
        if (lease !== null) this.addReason(lease, R_MULTI)
        break
      case E_EXEC:
      case E_DISCARD:
      case E_EXEC_ABORTED:
        // EXEC and DISCARD end the transaction and every WATCH, whatever they answer.
        this.txnAborted = false
        if (lease !== null) lease.reasons &= ~(R_MULTI | R_WATCH)
        if (slot.effect === E_EXEC && this.txnSelects.length > 0) {
          (this.#execSelects ??= new Map()).set(slot, this.txnSelects)
          conn.markDbUnknown()
        }
        this.txnSelects = NO_SELECTS
        break
      case E_WATCH:
        if (lease !== null) this.addReason(lease, R_WATCH)
        break
      case E_UNWATCH:
        if (lease !== null) lease.reasons &= ~R_WATCH
        break
      case E_MONITOR:
        if (lease !== null) this.addReason(lease, R_MONITOR)
        break
      case E_TRACKING_ON:
        if (lease !== null) lease.dirty = true
        break
      case E_SUBSCRIBE:
        this.subs.inFlight++
        if (lease !== null && (lease.reasons & R_SUBSCRIBED) === 0) {
          this.addReason(lease, R_SUBSCRIBED)
          conn.tunnel = this.#hooks.pubsubTunnel
        }
        break
      case E_BLOCKING: {
        if (lease === null) break
        const name = (slot.command as RespCommand).name
        if (name === 'wait' || name === 'waitaof') {
          // WAIT counts replicas that acknowledged this connection's last write. The client's
          // writes may have gone through a shared lane, so a propagated no-op here first moves
          // this connection's write offset past them; WAIT then covers every write it made.
          conn.sendInternal(WAIT_FENCE, () => {})
        }
        this.addReason(lease, R_BLOCKING)
        conn.blockingInflight++
        break
      }
    }
  }

  /** This EXEC has queued SELECTs whose outcome is in its reply. */
  decidesDb (slot: ReplySlot): boolean {
    return this.#execSelects?.has(slot) === true
  }

  /** Adds a reason to hold the pin, counting it the first time. */
  addReason (lease: Lease, reason: number): void {
    if ((lease.reasons & reason) !== 0) return
    lease.reasons |= reason
    if (reason !== R_BLOCKING) lease.dirty = true
    this.#hooks.stats.pinsByReason[31 - Math.clz32(reason)]++
  }

  /**
   * What the reply says about the state: a SELECT Redis accepted moves the client's database,
   * EXEC tells which queued SELECT ran, a blocking command's end drops that pin reason …
   * `conn` is the connection the client's commands went to last.
   */
  onReply (slot: ReplySlot, frame: Buffer, lease: Lease | null, conn: UpstreamConnection | null): void {
    const failed = frame[0] === MINUS
    switch (slot.effect) {
      case E_SELECT:
        if (isOk(frame) && slot.data >= 0) {
          this.#hooks.state.db = slot.data
          conn?.confirmDb(slot.prior, slot.data)
        }
        break
      case E_EXEC: {
        const selects = this.#execSelects?.get(slot)
        if (selects === undefined) break
        this.#execSelects?.delete(slot)
        const db = dbAfterExec(frame, selects)
        if (db !== null) this.#hooks.state.db = db
        break
      }
      case E_BLOCKING:
        if (lease !== null) {
          lease.pin.conn.blockingInflight--
          if (lease.pin.conn.blockingInflight === 0) lease.reasons &= ~R_BLOCKING
        }
        break
      case E_TRACKING_ON:
        if (!failed && lease !== null) {
          this.addReason(lease, R_TRACKING)
          lease.pin.conn.pushHandler = this.#hooks.outOfBandHandler
        }
        break
      case E_TRACKING_OFF:
        if (!failed && lease !== null) {
          lease.reasons &= ~R_TRACKING
          lease.pin.conn.pushHandler = null
        }
        break
      case E_MONITOR:
        if (lease === null) break
        if (failed) lease.reasons &= ~R_MONITOR
        else lease.pin.conn.tunnel = this.#hooks.monitorTunnel
        break
      case E_SUBSCRIBE:
        // Completed by its confirmations, or refused by Redis with an ordinary error reply.
        this.subs.inFlight--
        this.#hooks.maybeLeavePubsub()
        break
    }
  }
}

function isOk (frame: Buffer): boolean {
  return frame.length === 5 && frame[0] === 0x2b && frame[1] === 0x4f && frame[2] === 0x4b // +OK\r\n
}

/**
 * The database a transaction left the connection in: the last queued SELECT whose element of
 * EXEC's reply is +OK. Null if EXEC ran nothing (an error, or a null reply after a WATCH fired)
 * or no SELECT succeeded. The elements are found by the reply framer, so RESP3 replies work too.
 */
export function dbAfterExec (frame: Buffer, selects: ReadonlyArray<{ index: number, db: number }>): number | null {
  if (frame[0] !== 0x2a || frame[1] === MINUS) return null // not an array, or a null array
  const headerEnd = frame.indexOf(10) + 1
  const elements: Buffer[] = []
  new ReplyFramer().push(frame.subarray(headerEnd), (element) => { elements.push(element) })
  let db: number | null = null
  for (const { index, db: target } of selects) {
    const element = elements[index]
    if (element !== undefined && isOk(element) && target >= 0) db = target
  }
  return db
}
