import Denque from 'denque'
import { runOnLane } from './lane-transaction.js'
import { elements, putBack, type Family, type Parkable } from './parkable.js'
import { command as encodeCommand } from '../protocol/resp-encode.js'
import { timeoutReply } from '../commands/blocking.js'
import { toRespError, type ProxyError } from '../errors.js'
import { syncLaneState } from '../routing/lane-state.js'
import type { RespCommand } from '../protocol/resp-command.js'
import type { Router, Pin, PinAcquisition } from '../routing/router.js'
import type { Logger } from '../ops/logger.js'

/**
 * Blocking commands that wait inside respool, without a connection each.
 *
 *   client BLPOP ──► try it inside MULTI on a shared lane (never blocks; Redis's exact reply)
 *                      │ got something: that is the reply
 *                      └ nothing yet: park the waiter on its keys (FIFO per key)
 *   watcher (one pinned connection per database and kind of key):
 *      BLPOP <every key with a parked waiter> 0   (BZPOPMIN for sorted sets)
 *      └ an element arrives: MULTI, put it back where it was, run the longest-waiting
 *        waiters' own commands, EXEC: each gets exactly what Redis gives it, in its own
 *        protocol and database; the rest stay parked. Then the watcher waits again.
 *
 * The watcher takes an element only to learn that a key has one, and the same transaction puts
 * it back before any waiter runs, so what a waiter gets is what its own command takes from
 * Redis. An element a waiter's command took for a client that left meanwhile is put back at
 * the end it came from. The watcher's key set changes with the waiters: CLIENT UNBLOCK (which
 * takes nothing) ends its wait, and it waits again on the new set.
 */

/** Who gets a parked command's reply. */
export interface ParkedClient {
  onParkedReply (reply: Buffer): void
}

type WaiterState = 'trying' | 'parked' | 'serving' | 'done'

export interface Waiter {
  readonly client: ParkedClient
  readonly cmd: RespCommand
  readonly db: number
  readonly resp: 2 | 3
  readonly family: Family
  readonly keys: string[]
  readonly since: number
  state: WaiterState
  /** The client left: whatever its command takes now goes back. */
  cancelled: boolean
  /** Its own timeout passed while a try was on its way. */
  timedOut: boolean
  timer: NodeJS.Timeout | null
}

/** Most waiters one wake-up runs in a single transaction. */
const SERVE_BATCH = 32

interface Watcher {
  readonly db: number
  readonly family: Family
  pin: Pin | null
  acquiring: PinAcquisition | null
  /** Between asking for the watcher's pin and learning its connection's id. */
  starting: boolean
  /** Redis's id of the watcher connection (for CLIENT UNBLOCK). */
  redisId: string | null
  /** The keys its blocking command waits on now (null: not waiting). */
  waitingOn: string[] | null
  unblockSent: boolean
  scheduled: boolean
}

export interface ParkingStats {
  parked: number
  /** First tries on their way (a waiter is parked only if its try got nothing). */
  trying: number
  /** Elements taken for clients that left, on their way back. */
  putBacksInFlight: number
  parkedTotal: number
  wokenTotal: number
  timedOutTotal: number
  putBackTotal: number
  watchers: number
}

export class ParkingLot {
  readonly #router: Router
  readonly #log: Logger
  /** Waiters by database, kind and key, longest-waiting first. */
  readonly #queues = new Map<string, Denque<Waiter>>()
  readonly #watchers = new Map<string, Watcher>()
  readonly #observeWake: (seconds: number) => void
  #parked = 0
  #putBacksInFlight = 0
  #trying = 0
  #closed = false
  parkedTotal = 0
  wokenTotal = 0
  timedOutTotal = 0
  putBackTotal = 0

  constructor (router: Router, log: Logger, observeWake: (seconds: number) => void = () => {}) {
    this.#router = router
    this.#log = log
    this.#observeWake = observeWake
  }

  get stats (): ParkingStats {
    let watchers = 0
    for (const w of this.#watchers.values()) if (w.pin !== null) watchers++
    return { parked: this.#parked, trying: this.#trying, putBacksInFlight: this.#putBacksInFlight, parkedTotal: this.parkedTotal, wokenTotal: this.wokenTotal, timedOutTotal: this.timedOutTotal, putBackTotal: this.putBackTotal, watchers }
  }

  /**
   * Tries `cmd` at once; if it gets nothing, parks it until one of its keys has data or its
   * timeout (`timeoutMs`, 0 = forever, counted from now) passes. The client's reply comes
   * through `client.onParkedReply`, exactly once, unless it is cancelled first.
   */
  park (client: ParkedClient, cmd: RespCommand, what: Parkable, db: number, resp: 2 | 3, timeoutMs: number): Waiter {
    const waiter: Waiter = { client, cmd, db, resp, family: what.family, keys: what.keys, since: performance.now(), state: 'trying', cancelled: false, timedOut: false, timer: null }
    if (timeoutMs > 0) {
      waiter.timer = setTimeout(() => { this.#onTimeout(waiter) }, timeoutMs)
    }
    this.#trying++
    runOnLane(this.#router, db, resp, [cmd.frame], (replies, err) => {
      this.#trying--
      if (err !== null || replies === null) {
        this.#finish(waiter, toRespError(err as ProxyError))
        return
      }
      const reply = replies[0]
      if (!isNullReply(reply)) {
        if (waiter.cancelled) this.#putBack(waiter, reply)
        else this.#finish(waiter, reply)
        return
      }
      if (waiter.cancelled) {
        waiter.state = 'done'
        this.#clearTimer(waiter)
        return
      }
      if (waiter.timedOut) {
        this.#finish(waiter, timeoutReply(resp))
        return
      }
      waiter.state = 'parked'
      this.#parked++
      this.parkedTotal++
      for (const key of waiter.keys) {
        const id = queueId(db, waiter.family, key)
        let queue = this.#queues.get(id)
        if (queue === undefined) this.#queues.set(id, queue = new Denque())
        queue.push(waiter)
      }
      this.#schedule(this.#watcher(db, waiter.family))
    })
    return waiter
  }

  /** The client left (or was reset): it takes nothing, now or later. */
  cancel (waiter: Waiter): void {
    if (waiter.state === 'done' || waiter.cancelled) return
    waiter.cancelled = true
    if (waiter.state === 'parked') {
      this.#unpark(waiter)
      waiter.state = 'done'
      this.#clearTimer(waiter)
    }
    // 'trying' and 'serving' end when their transaction answers.
  }

  /** Every parked client gets `err`; watchers are given back. */
  close (): void {
    this.#closed = true
    for (const queue of this.#queues.values()) {
      for (const waiter of queue.toArray()) {
        if (waiter.state === 'parked') this.#finish(waiter, toRespError(new Error('respool is shutting down')))
      }
    }
    for (const watcher of this.#watchers.values()) {
      watcher.acquiring?.cancel(new Error('closing') as ProxyError)
      if (watcher.pin !== null) this.#router.releasePin(watcher.pin, 'destroy')
      watcher.pin = null
    }
  }

  #onTimeout (waiter: Waiter): void {
    waiter.timer = null
    if (waiter.state === 'parked') {
      this.timedOutTotal++
      this.#finish(waiter, timeoutReply(waiter.resp))
    } else if (waiter.state !== 'done') {
      waiter.timedOut = true // decided when the try on its way answers
    }
  }

  #finish (waiter: Waiter, reply: Buffer): void {
    if (waiter.state === 'done') return
    if (waiter.state === 'parked') this.#unpark(waiter)
    waiter.state = 'done'
    this.#clearTimer(waiter)
    if (!waiter.cancelled) waiter.client.onParkedReply(reply)
  }

  #clearTimer (waiter: Waiter): void {
    if (waiter.timer !== null) clearTimeout(waiter.timer)
    waiter.timer = null
  }

  /** Takes a parked waiter off its keys' queues. */
  #unpark (waiter: Waiter): void {
    this.#parked--
    for (const key of waiter.keys) {
      const id = queueId(waiter.db, waiter.family, key)
      const queue = this.#queues.get(id)
      if (queue === undefined) continue
      const arr = queue.toArray()
      const i = arr.indexOf(waiter)
      if (i !== -1) queue.removeOne(i)
      if (queue.isEmpty()) this.#queues.delete(id)
    }
    this.#schedule(this.#watcher(waiter.db, waiter.family))
  }

  #putBack (waiter: Waiter, reply: Buffer): void {
    waiter.state = 'done'
    this.#clearTimer(waiter)
    const restore = putBack(waiter.cmd, reply)
    if (restore === null) return
    this.putBackTotal++
    this.#putBacksInFlight++
    runOnLane(this.#router, waiter.db, waiter.resp, [restore], (_replies, err) => {
      this.#putBacksInFlight--
      if (err !== null) this.#log.warn({ err: err.message, command: waiter.cmd.name }, 'could not put back an element taken for a client that left')
    })
  }

  // ---- watchers ---------------------------------------------------------------------------

  #watcher (db: number, family: Family): Watcher {
    const id = `${db}:${family}`
    let watcher = this.#watchers.get(id)
    if (watcher === undefined) {
      watcher = { db, family, pin: null, acquiring: null, starting: false, redisId: null, waitingOn: null, unblockSent: false, scheduled: false }
      this.#watchers.set(id, watcher)
    }
    return watcher
  }

  /** Re-arms the watcher once per turn of the event loop, whatever changed meanwhile. */
  #schedule (watcher: Watcher): void {
    if (watcher.scheduled || this.#closed) return
    watcher.scheduled = true
    setImmediate(() => {
      watcher.scheduled = false
      this.#rearm(watcher)
    })
  }

  /** Keys with a waiter that is parked (not being served): what the watcher should wait on. */
  #wantedKeys (watcher: Watcher): string[] {
    const prefix = `${watcher.db}:${watcher.family}:`
    const keys: string[] = []
    for (const [id, queue] of this.#queues) {
      if (!id.startsWith(prefix)) continue
      for (let i = 0; i < queue.length; i++) {
        if ((queue.peekAt(i) as Waiter).state === 'parked') {
          keys.push(id.slice(prefix.length))
          break
        }
      }
    }
    return keys
  }

  #rearm (watcher: Watcher): void {
    if (this.#closed) return
    const keys = this.#wantedKeys(watcher)
    if (watcher.waitingOn !== null) {
      // Waiting on an out-of-date set: end that wait (CLIENT UNBLOCK takes nothing); its null
      // reply re-arms.
      if (!sameKeys(watcher.waitingOn, keys) && !watcher.unblockSent && watcher.redisId !== null) {
        watcher.unblockSent = true
        const waitingOn = watcher.waitingOn
        runOnLane(this.#router, watcher.db, 2, [encodeCommand(['CLIENT', 'UNBLOCK', watcher.redisId])], (replies, err) => {
          // Not unblocked (the wait had not reached Redis yet, or no lane could be had): try
          // again shortly, unless that wait has ended meanwhile.
          if ((err !== null || replies?.[0]?.toString('latin1') === ':0\r\n') && watcher.waitingOn === waitingOn) {
            setTimeout(() => {
              if (watcher.waitingOn === waitingOn) watcher.unblockSent = false
              this.#schedule(watcher)
            }, 5).unref()
          }
        })
      }
      return
    }
    if (keys.length === 0) {
      if (watcher.pin !== null) {
        this.#router.releasePin(watcher.pin, 'clean')
        watcher.pin = null
        watcher.redisId = null
      }
      return
    }
    if (watcher.pin === null) {
      this.#acquireWatcher(watcher)
      return
    }
    this.#wait(watcher, watcher.pin, keys)
  }

  #acquireWatcher (watcher: Watcher): void {
    // One start at a time: from asking for a pin until the connection has told its id.
    if (watcher.starting) return
    watcher.starting = true
    const acquisition = this.#router.acquirePin(null, 'blocking')
    watcher.acquiring = acquisition
    acquisition.promise.then((pin) => {
      watcher.acquiring = null
      if (this.#closed) {
        watcher.starting = false
        this.#router.releasePin(pin, 'clean')
        return
      }
      pin.conn.onClose = () => {
        if (watcher.pin === pin) {
          watcher.pin = null
          watcher.redisId = null
          this.#router.releasePin(pin, 'destroy')
          this.#schedule(watcher)
        }
      }
      syncLaneState(pin.conn, watcher.db, 2)
      pin.conn.sendInternal(['CLIENT', 'ID'], (reply) => {
        watcher.starting = false
        if (reply === null || reply[0] !== 0x3a || this.#closed) {
          this.#router.releasePin(pin, this.#closed && reply !== null ? 'clean' : 'destroy')
          this.#schedule(watcher)
          return
        }
        watcher.pin = pin
        watcher.redisId = reply.toString('latin1', 1, reply.length - 2)
        this.#rearm(watcher)
      })
    }, (err: Error) => {
      watcher.acquiring = null
      watcher.starting = false
      this.#log.debug({ err: err.message }, 'no connection for a watcher yet')
      if (!this.#closed) setTimeout(() => { this.#schedule(watcher) }, 100).unref()
    })
  }

  /** The watcher's blocking wait on `keys` (an element it takes only wakes the waiters). */
  #wait (watcher: Watcher, pin: Pin, keys: string[]): void {
    const conn = pin.conn
    watcher.waitingOn = keys
    watcher.unblockSent = false
    conn.blockingInflight++
    const args = [watcher.family === 'list' ? 'BLPOP' : 'BZPOPMIN', ...keys.map((key) => Buffer.from(key, 'latin1')), '0']
    conn.sendInternal(args, (reply, err) => {
      conn.blockingInflight--
      watcher.waitingOn = null
      if (err !== null || reply === null) return // the connection is gone: onClose re-arms
      const taken = elements(reply)
      if (taken !== null) this.#wake(watcher, taken)
      this.#schedule(watcher)
    })
  }

  /**
   * The watcher took an element from a key: put it back and, in the same transaction, run the
   * longest-waiting waiters' commands on that key (those in one protocol); each gets what its
   * own command takes. A waiter that got nothing stays parked.
   */
  #wake (watcher: Watcher, taken: Buffer[]): void {
    const key = bulkText(taken[0])
    const restore = watcher.family === 'list'
      ? encodeCommand(['LPUSH', bulkValue(taken[0]), bulkValue(taken[1])])
      : encodeCommand(['ZADD', bulkValue(taken[0]), bulkValue(taken[2]), bulkValue(taken[1])])
    const queue = this.#queues.get(queueId(watcher.db, watcher.family, key))
    const batch: Waiter[] = []
    let resp: 2 | 3 = 2
    if (queue !== undefined) {
      for (let i = 0; i < queue.length && batch.length < SERVE_BATCH; i++) {
        const waiter = queue.peekAt(i) as Waiter
        if (waiter.state !== 'parked') continue
        if (batch.length === 0) resp = waiter.resp
        else if (waiter.resp !== resp) continue
        waiter.state = 'serving'
        batch.push(waiter)
      }
    }
    runOnLane(this.#router, watcher.db, resp, [restore, ...batch.map((w) => w.cmd.frame)], (replies, err) => {
      if (err !== null || replies === null) {
        // Whether the transaction ran is unknown: like a command on a dropped connection, each
        // waiter in it gets the error once. If it did not run, the element the watcher took is
        // not back in Redis, and retrying could push it twice: say so, loudly.
        for (const waiter of batch) this.#endServing(waiter, toRespError(err as ProxyError))
        this.#log.error({ err: err?.message, key, element: taken[1]?.toString('latin1', 0, 200) }, 'waking parked clients failed; the element taken to wake them may not be back in Redis')
        return
      }
      batch.forEach((waiter, i) => {
        const reply = replies[i + 1]
        if (isNullReply(reply)) {
          if (waiter.cancelled || waiter.timedOut) {
            if (waiter.timedOut) this.timedOutTotal++
            this.#endServing(waiter, timeoutReply(waiter.resp))
          } else {
            waiter.state = 'parked'
          }
          return
        }
        if (waiter.cancelled) {
          this.#unparkServing(waiter)
          this.#putBack(waiter, reply)
          return
        }
        this.wokenTotal++
        this.#observeWake((performance.now() - waiter.since) / 1000)
        this.#endServing(waiter, reply)
      })
      this.#schedule(watcher)
    })
  }

  #unparkServing (waiter: Waiter): void {
    waiter.state = 'parked' // so #unpark takes it off the queues and counts it out
    this.#unpark(waiter)
  }

  #endServing (waiter: Waiter, reply: Buffer): void {
    waiter.state = 'parked'
    this.#finish(waiter, reply)
  }
}

function queueId (db: number, family: Family, key: string): string {
  return `${db}:${family}:${key}`
}

/** `*-1`, `$-1` (RESP2) or `_` (RESP3): the command took nothing. */
function isNullReply (reply: Buffer): boolean {
  return reply[0] === 0x5f || ((reply[0] === 0x2a || reply[0] === 0x24) && reply[1] === 0x2d)
}

function bulkValue (frame: Buffer | undefined): Buffer {
  if (frame === undefined || frame[0] !== 0x24) return Buffer.alloc(0)
  return frame.subarray(frame.indexOf(10) + 1, frame.length - 2)
}

function bulkText (frame: Buffer | undefined): string {
  return bulkValue(frame).toString('latin1')
}

function sameKeys (a: string[], b: string[]): boolean {
  if (a.length !== b.length) return false
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return false
  return true
}
