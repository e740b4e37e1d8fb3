import type { UpstreamConnection } from './upstream-connection.js'
import type { UpstreamPool } from './upstream-pool.js'
import type { ProxyError } from './errors.js'
import type { Logger } from './logger.js'

/** A session waiting until some shared lane exists. */
export interface LaneWaiter {
  laneReady (): void
  laneFailed (err: ProxyError): void
}

/**
 * Decides which upstream connection carries a session's next shared command.
 *
 * Shared lanes are connections this router holds acquired from the pool while they carry
 * multiplexed traffic. A session with commands in flight stays on its lane (Redis orders
 * commands per connection only, so moving it could let a later GET overtake an earlier SET);
 * an idle session goes to the least-loaded lane. When every lane is busy, one more is acquired,
 * up to the pool's bound, and idle lanes go back to the pool after a while so pins and
 * eviction can have them.
 */
export class Router {
  readonly #pool: UpstreamPool
  readonly #log: Logger
  readonly #laneIdleMs: number
  #lanes: UpstreamConnection[] = []
  #growing = 0
  #waiters = new Set<LaneWaiter>()
  #idleSince = new Map<UpstreamConnection, number>()
  #sweepTimer: NodeJS.Timeout | null = null
  #closed = false
  /** Most lanes at once (the pool bound less what pins may hold). */
  maxLanes: number

  constructor (pool: UpstreamPool, log: Logger, options: { maxLanes: number, laneIdleMs?: number }) {
    this.#pool = pool
    this.#log = log
    this.maxLanes = options.maxLanes
    this.#laneIdleMs = options.laneIdleMs ?? 5000
  }

  get laneCount (): number {
    return this.#lanes.length
  }

  /** The least-loaded ready lane, or null if there is none yet (then call waitForLane). */
  pickLane (): UpstreamConnection | null {
    let best: UpstreamConnection | null = null
    const lanes = this.#lanes
    for (let i = 0; i < lanes.length; i++) {
      const lane = lanes[i]
      if (!lane.isReady || lane.needDrain) continue
      if (best === null || lane.inflight < best.inflight) {
        best = lane
        if (lane.inflight === 0) break
      }
    }
    if (best === null || best.inflight > 0) this.#grow()
    return best
  }

  /** Calls the waiter back once a lane exists, or with the error if none can be had. */
  waitForLane (waiter: LaneWaiter): void {
    this.#waiters.add(waiter)
    this.#grow()
  }

  cancelWait (waiter: LaneWaiter): void {
    this.#waiters.delete(waiter)
  }

  /** Gives every lane back (closing). */
  close (): void {
    this.#closed = true
    if (this.#sweepTimer !== null) clearInterval(this.#sweepTimer)
    for (const lane of this.#lanes) this.#pool.release(lane)
    this.#lanes = []
  }

  #grow (): void {
    if (this.#closed || this.#lanes.length + this.#growing >= this.maxLanes) return
    if (this.#growing > 0 && this.#lanes.length > 0) return // one at a time while traffic flows
    this.#growing++
    this.#pool.acquire().then((conn) => {
      this.#growing--
      if (this.#closed) {
        this.#pool.release(conn)
        return
      }
      this.#addLane(conn)
    }, (err: ProxyError) => {
      this.#growing--
      if (this.#lanes.length > 0) return // traffic still has lanes; nobody waits on this one
      const waiters = [...this.#waiters]
      this.#waiters.clear()
      this.#log.debug({ err: err.message, waiters: waiters.length }, 'no shared lane available')
      for (const waiter of waiters) waiter.laneFailed(err)
    })
  }

  #addLane (conn: UpstreamConnection): void {
    this.#lanes.push(conn)
    conn.onClose = (c) => { this.#removeLane(c, false) }
    conn.onIdle = (c) => { this.#idleSince.set(c, performance.now()) }
    this.#idleSince.set(conn, performance.now())
    if (this.#sweepTimer === null) {
      this.#sweepTimer = setInterval(this.#sweep, Math.max(100, this.#laneIdleMs / 2))
      this.#sweepTimer.unref()
    }
    const waiters = [...this.#waiters]
    this.#waiters.clear()
    for (const waiter of waiters) waiter.laneReady()
  }

  #removeLane (conn: UpstreamConnection, healthy: boolean): void {
    const i = this.#lanes.indexOf(conn)
    if (i === -1) return
    this.#lanes.splice(i, 1)
    this.#idleSince.delete(conn)
    if (healthy) this.#pool.release(conn)
    else this.#pool.destroy(conn)
  }

  /** Returns lanes that have been idle for laneIdleMs to the pool (keeping one). */
  #sweep = (): void => {
    const now = performance.now()
    for (const lane of [...this.#lanes]) {
      if (this.#lanes.length <= 1) break
      const since = this.#idleSince.get(lane)
      if (lane.inflight === 0 && since !== undefined && now - since >= this.#laneIdleMs) this.#removeLane(lane, true)
    }
  }
}
