import { createPool, type Pool } from 'generic-pool'
import { PoolTimeoutError, type ProxyError } from './errors.js'
import { resizeGenericPool } from './upstream-pool.js'

/** A permit to hold one pinned connection. */
export interface PinPermit { readonly id: number }

/**
 * Caps how many connections may be pinned at once, so shared traffic always keeps at least
 * `poolSize - maxPins` connections (a BLPOP-0 storm cannot starve GETs).
 *
 * The waiting line is a generic-pool of permits: it owns the FIFO queue of pin requests. Each
 * request has a deadline of its own (a blocking command waits at most its own timeout; other
 * commands the acquire timeout), so deadlines are enforced here with one timer per waiting
 * request, and a permit that arrives after its request gave up is handed straight back.
 */
export class PinGate {
  readonly #permits: Pool<PinPermit>
  #nextId = 1
  #held = 0
  #waiting = 0

  #maxPins: number

  constructor (maxPins: number) {
    this.#maxPins = maxPins
    this.#permits = createPool<PinPermit>({
      create: async () => ({ id: this.#nextId++ }),
      destroy: async () => {}
    }, { max: maxPins, min: 0, fifo: true, priorityRange: 2, autostart: true })
  }

  get maxPins (): number {
    return this.#maxPins
  }

  resize (maxPins: number): void {
    this.#maxPins = maxPins
    resizeGenericPool(this.#permits as Pool<unknown>, { max: maxPins })
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
   * Waits for a permit for at most `deadlineMs` (null: no deadline). Requests of priority 0 are
   * served before those of priority 1, each in arrival order. `cancel()` gives up early.
   * The promise rejects with PoolTimeoutError at the deadline, or with `reason` on cancel.
   */
  request (deadlineMs: number | null, priority: 0 | 1 = 0): PinRequest {
    this.#waiting++
    let settled = false
    let timer: NodeJS.Timeout | null = null
    let rejectFn: (err: ProxyError) => void = () => {}
    const promise = new Promise<PinPermit>((resolve, reject) => {
      rejectFn = reject
      this.#permits.acquire(priority).then((permit) => {
        if (settled) {
          void this.#permits.release(permit)
          return
        }
        settled = true
        this.#waiting--
        this.#held++
        if (timer !== null) clearTimeout(timer)
        resolve(permit)
      }, (err: Error) => {
        if (settled) return
        settled = true
        this.#waiting--
        if (timer !== null) clearTimeout(timer)
        reject(new PoolTimeoutError(`cannot pin a connection: ${err.message}`))
      })
    })
    const giveUp = (err: ProxyError): void => {
      if (settled) return
      settled = true
      this.#waiting--
      if (timer !== null) clearTimeout(timer)
      rejectFn(err)
    }
    if (deadlineMs !== null) {
      timer = setTimeout(() => {
        giveUp(new PoolTimeoutError(`pool exhausted: all ${this.#maxPins} pinnable connections are pinned, waited ${Math.round(deadlineMs)} ms`))
      }, deadlineMs)
      timer.unref()
    }
    return { promise, cancel: giveUp }
  }

  /** Returns a permit (its pinned connection has been released or destroyed). */
  release (permit: PinPermit): void {
    this.#held--
    void this.#permits.release(permit)
  }

  async close (): Promise<void> {
    await this.#permits.drain()
    await this.#permits.clear()
  }
}

export interface PinRequest {
  promise: Promise<PinPermit>
  cancel (err: ProxyError): void
}
