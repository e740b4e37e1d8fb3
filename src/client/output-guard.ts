import type { OutputLimits } from './output-limits.js'
import type { ClientMemoryBudget, BufferedClient } from '../ops/client-memory.js'

/** Output below this is not reported to the memory budget (most clients never reach it). */
const MEMORY_REPORT_MIN = 256 * 1024

/** What the guard needs to know of its client. */
export interface GuardedClient extends BufferedClient {
  /** Subscribed clients get the pub/sub limits. */
  readonly subscribed: boolean
}

/** Why a client was cut off: past its hard limit, or above its soft limit for too long. */
export type OutputVerdict = 'hard' | 'soft' | null

/**
 * One client's output against Redis-style client-output-buffer-limits (hard, and soft for a
 * time; normal and pub/sub classes), and its share of the budget for all clients. check() runs
 * on every write, so the common case (far below every limit) costs one comparison.
 */
export class OutputGuard {
  #softSince = 0
  #reported = 0
  #quietBelow = MEMORY_REPORT_MIN
  #limits: OutputLimits

  constructor (private readonly client: GuardedClient, private readonly memory: ClientMemoryBudget, limits: OutputLimits) {
    this.#limits = limits
    this.#quietBelow = quietBelow(limits)
  }

  /** New limits (reload). */
  setLimits (limits: OutputLimits): void {
    this.#limits = limits
    this.#quietBelow = quietBelow(limits)
  }

  /** The client holds `buffered` bytes now: which limit it broke (it is then to be cut off), if any. */
  check (buffered: number): OutputVerdict {
    if (buffered <= this.#quietBelow && this.#softSince === 0 && this.#reported === 0) return null
    const limit = this.client.subscribed ? this.#limits.pubsub : this.#limits.normal
    if (limit.hard > 0 && buffered > limit.hard) return 'hard'
    if (limit.soft > 0 && buffered > limit.soft) {
      const now = performance.now()
      if (this.#softSince === 0) this.#softSince = now
      else if (now - this.#softSince > limit.softSeconds * 1000) return 'soft'
    } else {
      this.#softSince = 0
    }
    if (buffered > MEMORY_REPORT_MIN || this.#reported > 0) this.report(buffered)
    return null
  }

  /** What the client holds goes into the budget for all clients (small amounts are not reported). */
  report (buffered: number): void {
    if (this.#reported === 0 && buffered <= MEMORY_REPORT_MIN) return
    this.#reported = buffered
    this.memory.report(this.client, buffered)
  }
}

/** Output at or below this needs no check at all: under every limit, and too little to report. */
function quietBelow (limits: OutputLimits): number {
  return Math.min(MEMORY_REPORT_MIN, positiveOr(limits.normal.hard), positiveOr(limits.normal.soft), positiveOr(limits.pubsub.hard), positiveOr(limits.pubsub.soft))
}

function positiveOr (limit: number): number {
  return limit > 0 ? limit : Infinity
}
