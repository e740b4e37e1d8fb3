import { createPool, type Pool } from 'generic-pool'
import { PoolTimeoutError, type ProxyError } from '../errors.js'
import { resizeGenericPool } from '../upstream/upstream-pool.js'

/** A permit to hold one pinned connection (and, for a blocking command, a blocking slot). */
export interface PinPermit {
  readonly id: number
  /** The blocking slot held with it, if the pin is for a blocking command. */
  blocking: PinPermit | null
}

/** What a pin is for: a blocking command holds it for its whole timeout; the rest briefly. */
export type PinKind = 'short' | 'blocking'

/**
 * Caps how many connections may be pinned at once, so shared traffic always keeps at least
 * `poolSize - maxPins` connections (a BLPOP-0 storm cannot starve GETs), and how many of those
 * blocking commands may hold (`maxPins - 1`), so transactions, WATCH and subscribers always
 * have a pin to get soon (Sidekiq's 25 fetchers looping `BRPOP … 2` cannot starve its
 * heartbeat). Within each line requests are served in arrival order: neither kind can starve
 * the other.
 *
 * The waiting lines are generic-pools of permits: they own the FIFO queues. Each request has a
 * deadline of its own (a blocking command waits at most its own timeout; other commands the
 * acquire timeout), so deadlines are enforced here with one timer per waiting request, and a
 * permit that arrives after its request gave up is handed straight back.
 */
export class PinGate {
  readonly #permits: Pool<PinPermit>
  readonly #blockingPermits: Pool<PinPermit>
  #nextId = 1
  #held = 0
  #waiting = 0
  #maxPins: number

  constructor (maxPins: number) {
    this.#maxPins = maxPins
    const factory = { create: async (): Promise<PinPermit> => ({ id: this.#nextId++, blocking: null }), destroy: async () => {} }
    this.#permits = createPool<PinPermit>(factory, { max: maxPins, min: 0, fifo: true, autostart: true })
    this.#blockingPermits = createPool<PinPermit>(factory, { max: blockingCap(maxPins), min: 0, fifo: true, autostart: true })
  }

  get maxPins (): number {
    return this.#maxPins
  }

  resize (maxPins: number): void {
    this.#maxPins = maxPins
    resizeGenericPool(this.#permits as Pool<unknown>, { max: maxPins })
    resizeGenericPool(this.#blockingPermits as Pool<unknown>, { max: blockingCap(maxPins) })
  }

  /** Permits currently held. */
  get held (): number {
    return this.#held
  }

  /** Requests waiting for a permit. */
  get waiting (): number {
    return this.#waiting
  }

  /**
   * Waits for a permit for at most `deadlineMs` (null: no deadline). A blocking request first
   * takes a blocking slot, then a pin permit. `cancel()` gives up early. The promise rejects with
   * PoolTimeoutError at the deadline, or with the given error on cancel.
   */
  request (deadlineMs: number | null, kind: PinKind = 'short'): PinRequest {
    this.#waiting++
    let settled = false
    let timer: NodeJS.Timeout | null = null
    let resolveFn: (permit: PinPermit) => void = () => {}
    let rejectFn: (err: ProxyError) => void = () => {}
    const promise = new Promise<PinPermit>((resolve, reject) => {
      resolveFn = resolve
      rejectFn = reject
    })
    const finish = (): boolean => {
      if (settled) return false
      settled = true
      this.#waiting--
      if (timer !== null) clearTimeout(timer)
      return true
    }
    const fail = (err: ProxyError): void => { if (finish()) rejectFn(err) }
    const acquirePin = (blocking: PinPermit | null): void => {
      this.#permits.acquire().then((permit) => {
        if (settled) {
          // The request gave up meanwhile: hand everything straight back.
          void this.#permits.release(permit)
          if (blocking !== null) void this.#blockingPermits.release(blocking)
          return
        }
        finish()
        this.#held++
        permit.blocking = blocking
        resolveFn(permit)
      }, (err: Error) => {
        if (blocking !== null) void this.#blockingPermits.release(blocking)
        fail(new PoolTimeoutError(`cannot pin a connection: ${err.message}`))
      })
    }
    if (kind === 'blocking') {
      this.#blockingPermits.acquire().then((blocking) => {
        if (settled) {
          void this.#blockingPermits.release(blocking)
          return
        }
        acquirePin(blocking)
      }, (err: Error) => { fail(new PoolTimeoutError(`cannot pin a connection: ${err.message}`)) })
    } else {
      acquirePin(null)
    }
    if (deadlineMs !== null) {
      timer = setTimeout(() => {
        const which = kind === 'blocking'
          ? `all ${this.#maxPins} pinnable connections are pinned (at most ${blockingCap(this.#maxPins)} by blocking commands)`
          : `all ${this.#maxPins} pinnable connections are pinned`
        fail(new PoolTimeoutError(`pool exhausted: ${which}, waited ${Math.round(deadlineMs)} ms`))
      }, deadlineMs)
      timer.unref()
    }
    return { promise, cancel: fail }
  }

  /** Returns a permit (its pinned connection has been released or destroyed). */
  release (permit: PinPermit): void {
    this.#held--
    if (permit.blocking !== null) {
      void this.#blockingPermits.release(permit.blocking)
      permit.blocking = null
    }
    void this.#permits.release(permit)
  }

  async close (): Promise<void> {
    for (const pool of [this.#permits, this.#blockingPermits]) {
      await pool.drain()
      await pool.clear()
    }
  }
}

/** Blocking commands may hold all pins but one (so short pins always find one soon). */
function blockingCap (maxPins: number): number {
  return Math.max(1, maxPins - 1)
}

export interface PinRequest {
  promise: Promise<PinPermit>
  cancel (err: ProxyError): void
}
