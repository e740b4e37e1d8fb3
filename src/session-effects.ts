import type { Pin } from './router.js'
import type { ReplySlot } from './reply-slot.js'
import type { RespCommand } from './resp-command.js'
import type { SessionState } from './session-state.js'
import type { ProxyStats } from './proxy-stats.js'
import type { UpstreamConnection } from './upstream-connection.js'
import { Subscriptions } from './subscriptions.js'

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

/** A pinned connection held by one client, and why it is held (R_* bits). */
export interface Lease {
  pin: Pin
  reasons: number
}

/** What the effects need from their session. */
export interface EffectHooks {
  readonly state: SessionState
  readonly stats: ProxyStats
  /** The tunnel of a subscribed connection (messages and confirmations). */
  onPubsubFrame (frame: Buffer): boolean
  /** The tunnel of a connection in MONITOR mode. */
  onMonitorFrame (frame: Buffer): boolean
  /** A frame no command asked for (a tracking invalidation). */
  outOfBand (frame: Buffer): void
  /** Leaves subscriber mode if no subscription is left. */
  maybeLeavePubsub (): void
}

const MINUS = 0x2d
const WAIT_FENCE = ['PUBLISH', '__respool__:wait-fence', '']

export class SessionEffects {
  /** The database a SELECT queued inside MULTI moves to when EXEC runs it (-1: none). */
  txnDb = -1
  /** A command of the open transaction could not be queued: EXEC answers EXECABORT. */
  txnAborted = false
  readonly subs = new Subscriptions()
  readonly #hooks: EffectHooks

  constructor (hooks: EffectHooks) {
    this.#hooks = hooks
  }

  /** RESET: no transaction and no subscription is left. */
  reset (): void {
    this.txnDb = -1
    this.txnAborted = false
    this.subs.clear()
  }

  /** State changes that take effect when the command is written (Redis applies them in order). */
  onSend (slot: ReplySlot, conn: UpstreamConnection, lease: Lease | null): void {
    switch (slot.effect) {
      case E_SELECT:
        // The SELECT switches the connection; the client's later commands use the new db.
        // If Redis refuses it, the reply restores the old one (slot.prior).
        slot.prior = this.#hooks.state.db
        this.#hooks.state.db = slot.data
        conn.db = slot.data
        break
      case E_MULTI:
        this.txnAborted = false
        if (lease !== null) this.addReason(lease, R_MULTI)
        break
      case E_WATCH:
        if (lease !== null) {
          slot.prior = lease.reasons & R_WATCH
          this.addReason(lease, R_WATCH)
        }
        break
      case E_MONITOR:
        if (lease !== null) this.addReason(lease, R_MONITOR)
        break
      case E_SUBSCRIBE:
        this.subs.inFlight++
        if (lease !== null && (lease.reasons & R_SUBSCRIBED) === 0) {
          this.addReason(lease, R_SUBSCRIBED)
          conn.tunnel = this.#hooks.onPubsubFrame
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

  /** Adds a reason to hold the pin, counting it the first time. */
  addReason (lease: Lease, reason: number): void {
    if ((lease.reasons & reason) !== 0) return
    lease.reasons |= reason
    this.#hooks.stats.pinsByReason[31 - Math.clz32(reason)]++
  }

  /**
   * What the reply says about the state: a refused SELECT restores the database, EXEC ends the
   * transaction, a blocking command's end drops that pin reason … `conn` is the connection the
   * client's commands went to last.
   */
  onReply (slot: ReplySlot, frame: Buffer, lease: Lease | null, conn: UpstreamConnection | null): void {
    const failed = frame[0] === MINUS
    switch (slot.effect) {
      case E_SELECT:
        if (failed) {
          this.#hooks.state.db = slot.prior
          if (conn !== null) conn.db = -1 // unknown: the next command selects again
        }
        break
      case E_SELECT_QUEUED:
        if (!failed) this.txnDb = slot.data
        break
      case E_MULTI:
        if (failed && lease !== null) lease.reasons &= ~R_MULTI
        break
      case E_EXEC:
      case E_DISCARD:
      case E_EXEC_ABORTED: {
        this.txnAborted = false
        if (lease !== null) lease.reasons &= ~(R_MULTI | R_WATCH)
        if (this.txnDb >= 0) {
          // EXEC ran the queued SELECT if it answered with an array; either way the
          // connection's database is no longer known for sure: the next command selects again.
          if (slot.effect === E_EXEC && frame[0] === 0x2a && frame[1] !== MINUS) this.#hooks.state.db = this.txnDb
          const txnConn = lease?.pin.conn ?? conn
          if (txnConn !== null) txnConn.db = -1
        }
        this.txnDb = -1
        break
      }
      case E_WATCH:
        if (failed && lease !== null && slot.prior === 0) lease.reasons &= ~R_WATCH
        break
      case E_UNWATCH:
        if (lease !== null && (lease.reasons & R_MULTI) === 0) lease.reasons &= ~R_WATCH
        break
      case E_BLOCKING:
        if (lease !== null) {
          lease.pin.conn.blockingInflight--
          if (lease.pin.conn.blockingInflight === 0) lease.reasons &= ~R_BLOCKING
        }
        break
      case E_TRACKING_ON:
        if (!failed && lease !== null) {
          this.addReason(lease, R_TRACKING)
          lease.pin.conn.pushHandler = this.#hooks.outOfBand
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
        else lease.pin.conn.tunnel = this.#hooks.onMonitorFrame
        break
      case E_SUBSCRIBE:
        // Completed by its confirmations, or refused by Redis with an ordinary error reply.
        this.subs.inFlight--
        this.#hooks.maybeLeavePubsub()
        break
    }
  }
}
