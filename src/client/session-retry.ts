/**
 * Commands of one client that Redis did not run (refused with -READONLY, -MASTERDOWN, -LOADING,
 * or never written before their connection closed), held until the client's other commands in
 * flight are answered and then sent again, in their order, within the retry budget. Made on a
 * client's first such command; most clients never have one.
 */
import { UpstreamClosedError, toRespError } from '../errors.js'
import { RETRY_MAX_ATTEMPTS, backoffMs, isRefusal, runsAgainHarmlessly } from '../routing/retry-policy.js'
import type { ReplySlot } from '../routing/reply-slot.js'
import type { SessionState } from './session-state.js'
import type { SessionContext } from './session-context.js'

const MINUS = 0x2d
/** A command held to be sent again that cannot be after all, and has no refusal of Redis to show. */
const NOT_SENT = toRespError(new UpstreamClosedError('the upstream connection closed before the command was sent; it did not run'))

/** What the retry of a client's commands uses of its session (ClientSession). */
export interface RetryHost {
  readonly state: SessionState
  readonly context: Pick<SessionContext, 'config' | 'stats'>
  readonly inflight: number
  readonly closed: boolean
  /** A command in flight is not any more (it is held, to be sent again). */
  releaseInflight (): void
  fill (slot: ReplySlot, reply: Buffer): void
  requeueHead (slot: ReplySlot): void
  /** The held commands are back in the pending queue: whether the session may send them now. */
  requeued (): boolean
  pump (): void
  /** The session waits for the pause before commands refused for a while are sent again. */
  waitForRetry (): void
  /** The pause is over: the session sends again if it still waits for it. */
  retryPauseOver (): void
}

/** Whether a command may be sent again: within its budget, and in the database and protocol it was first sent in. */
export function mayRetry (slot: ReplySlot, retryBudgetMs: number, state: SessionState): boolean {
  return slot.retries < RETRY_MAX_ATTEMPTS && performance.now() - slot.acceptedAt < retryBudgetMs &&
    slot.sentIn === state.db * 4 + state.resp
}

export class RetryQueue {
  readonly #session: RetryHost
  /**
   * The commands held, in send order, until the client's other commands in flight are
   * answered; then they go back to the head of the pending queue. Nothing else of the client
   * is sent meanwhile. Null when none is held.
   */
  held: ReplySlot[] | null = null
  #requeueQueued = false
  #timer: NodeJS.Timeout | null = null

  constructor (session: RetryHost) {
    this.#session = session
  }

  /** Holds a command to send again, among the held ones in send order (its place on the connection). */
  hold (slot: ReplySlot): void {
    const s = this.#session
    slot.retries++
    slot.heavy = false // its connection no longer counts it (counted again when sent)
    s.releaseInflight()
    const held = this.held ??= []
    let at = held.length
    while (at > 0 && held[at - 1].writeEnd > slot.writeEnd) at--
    held.splice(at, 0, slot)
    if (s.inflight === 0) this.requeueSoon()
  }

  /**
   * A reply to another command of this client on the same connection while some are held. A
   * refusal: that one did not run either. A command that ran after a held one: if it changes
   * nothing (GET, PING …), it is sent again too, after the held one, so the order holds;
   * anything else that ran (or may have) means the held commands sent before it cannot be sent
   * again after it: they get their refusals now. Held commands sent after it (those that never
   * left respool) are not concerned. Returns true if the reply was taken (the command is held).
   */
  laterReply (slot: ReplySlot, frame: Buffer): boolean {
    const s = this.#session
    if (frame[0] === MINUS && isRefusal(frame)) return false
    const held = this.held as ReplySlot[]
    if (held[0].writeEnd > slot.writeEnd) return false // nothing held was sent before it
    if (slot.retryable && !slot.streamed && runsAgainHarmlessly(slot.command) && mayRetry(slot, s.context.config.retryBudgetMs, s.state)) {
      this.hold(slot)
      return true
    }
    let before = 0
    while (before < held.length && held[before].writeEnd < slot.writeEnd) before++
    const refused = held.splice(0, before)
    if (held.length === 0) this.held = null
    for (const h of refused) s.fill(h, h.refusal ?? NOT_SENT)
    return false
  }

  requeueSoon (): void {
    if (this.#requeueQueued) return
    this.#requeueQueued = true
    queueMicrotask(this.#requeue)
  }

  /** The held commands go back to the head of the pending queue, in order, and are sent again. */
  readonly #requeue = (): void => {
    const s = this.#session
    this.#requeueQueued = false
    const held = this.held
    if (held === null || s.inflight > 0 || s.closed) return
    this.held = null
    s.context.stats.upstreamRqRetried += held.length
    let pause = 0
    for (let i = held.length - 1; i >= 0; i--) {
      const slot = held[i]
      s.requeueHead(slot)
      pause = Math.max(pause, backoffMs(slot.refusal, slot.retries))
    }
    if (!s.requeued()) return
    if (pause === 0) {
      s.pump()
      return
    }
    s.waitForRetry()
    this.#timer = setTimeout(() => {
      this.#timer = null
      s.retryPauseOver()
    }, pause)
    this.#timer.unref()
  }

  /** The client is gone: nothing is sent again. */
  close (): void {
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.held = null
  }
}
