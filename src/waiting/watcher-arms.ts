/**
 * The parking lot's watcher connections ("arms"): each waits with a blocking pop (BLPOP,
 * BRPOP, BZPOPMIN, XREAD) on the keys that have parked waiters, is told to wait again (CLIENT
 * UNBLOCK) when that set changes, sweeps its keys instead while it has no connection or while
 * data keeps coming, and hands what it took to the lot, which serves the waiters.
 */
import { runOnLane } from './lane-transaction.js'
import { elements, compareStreamIds, type End } from './parkable.js'
import { BLPOP_HEAD, BRPOP_HEAD, BZPOPMIN_HEAD, XREAD_HEAD, ZERO_ARG, bulkText, bulkValue, sweepFrame } from './watch-frames.js'
import { command as encodeCommand } from '../protocol/resp-encode.js'
import { syncLaneState } from '../routing/lane-state.js'
import type { ParkingUpstream, ParkingPin as Pin } from './parking-upstream.js'
import type { Logger } from '../ops/logger.js'
import type { Waiter } from './parking-lot.js'
import { headEnd, type Arm, type KeyQueue, type Taken, type Watcher } from './watcher-types.js'

/** How often the keys of an arm without a connection are swept. */
const POLL_MS = 50
/**
 * After data arrived: how long the arms sweep instead of blocking, and how often; only arms
 * watching at least HOT_MIN_KEYS keys do (below that a new blocking wait is cheap). A swept key
 * keeps a pushed element until the sweep finds it (a millisecond or so), where a blocking wait
 * takes it at once: meanwhile another client's LLEN counts it, or its LPOP can take it, as if
 * the parked command had arrived a moment later.
 */
export const HOT_MS = 100
const HOT_POLL_MS = 1
const HOT_MIN_KEYS = 256

/** -MOVED or -ASK (a cluster node no longer serves the key's slot). */
export function isRedirect (reply: Buffer): boolean {
  const head = reply.toString('latin1', 0, 6)
  return head === '-MOVED' || head.startsWith('-ASK ')
}

/** What the arms use of their lot (ParkingLot): its watchers, and the serving of waiters. */
export interface ArmsHost {
  readonly closed: boolean
  watchers (): Iterable<Watcher>
  /** Connections the key tracker holds (they count against the pins watchers may take). */
  trackerConnections (): number
  /** Watched through the key tracker now (the arms then wait on nothing). */
  tracked (watcher: Watcher): boolean
  /** Re-arms the watcher once per turn of the event loop. */
  schedule (watcher: Watcher): void
  /** Keys with a parked waiter; with an arm, those whose longest-parked waiter takes from its end. */
  wantedQueues (watcher: Watcher, arm?: Arm | null): KeyQueue[]
  /** One wake-up transaction (see ParkingLot's #serve). */
  serve (watcher: Watcher, prefix: Buffer[], sizes: Map<string, number>, sweepQueues: KeyQueue[] | Buffer, detectedAt: number, fromSweep: boolean, taken?: Taken | null): void
  serveStreams (watcher: Watcher, keys: string[], detectedAt: number): void
  wakeStreams (watcher: Watcher, streams: Buffer[], detectedAt: number): void
}

export class WatcherArms {
  readonly #router: ParkingUpstream
  readonly #log: Logger
  readonly #redirected: ((reply: Buffer) => void) | null
  readonly #lot: ArmsHost

  constructor (router: ParkingUpstream, log: Logger, redirected: ((reply: Buffer) => void) | null, lot: ArmsHost) {
    this.#router = router
    this.#log = log
    this.#redirected = redirected
    this.#lot = lot
  }

  /** The watcher's blocking command for `queues`, whose text also tells if the wait is current. */
  waitFrame (arm: Arm, queues: KeyQueue[]): { frame: Buffer, signature: string } {
    const watcher = arm.watcher
    if (watcher.family !== 'stream') {
      const head = watcher.family === 'zset' ? BZPOPMIN_HEAD : arm.end === 'right' ? BRPOP_HEAD : BLPOP_HEAD
      const frame = Buffer.concat([Buffer.from(`*${queues.length + 2}\r\n`), head, ...queues.map((q) => q.arg), ZERO_ARG])
      return { frame, signature: queues.map((q) => q.key).join('\0') }
    }
    // Each stream from the earliest id a parked waiter on it waits after.
    const ids = queues.map((queue) => {
      let min: string | null = null
      for (let i = 0; i < queue.waiters.length; i++) {
        const waiter = queue.waiters.peekAt(i) as Waiter
        if (waiter.state !== 'parked' || waiter.after === null) continue
        const id = waiter.after[waiter.keys.indexOf(queue.key)]
        if (min === null || compareStreamIds(id, min) < 0) min = id
      }
      return min ?? '0-0'
    })
    const idArgs = ids.map((id) => Buffer.from(`$${id.length}\r\n${id}\r\n`))
    const frame = Buffer.concat([Buffer.from(`*${2 * queues.length + 6}\r\n`), XREAD_HEAD, ...queues.map((q) => q.arg), ...idArgs])
    return { frame, signature: queues.map((q, i) => `${q.key}\0${ids[i]}`).join('\0') }
  }

  rearm (arm: Arm): void {
    if (this.#lot.closed) return
    const watcher = arm.watcher
    const tracked = this.#lot.tracked(watcher)
    if (watcher.serving > 0 && arm.waitingOn === null) return // the wake-ups' end schedules again
    if (!tracked && arm.waitingOn === null && watcher.family !== 'stream' && watcher.queues.size >= HOT_MIN_KEYS && performance.now() < watcher.hotUntil) {
      this.#poll(arm, HOT_POLL_MS) // hot: no need to look at every key now
      return
    }
    // While the tracker watches the keys, the arm waits on none: a wait is ended, a pin given back.
    const queues = tracked ? [] : this.#lot.wantedQueues(watcher, arm)
    if (arm.waitingOn !== null) {
      // Waiting on an out-of-date set: end that wait (CLIENT UNBLOCK takes nothing); its null
      // reply re-arms.
      if (!arm.unblockSent && arm.redisId !== null && this.waitFrame(arm, queues).signature !== arm.waitingOn) {
        arm.unblockSent = true
        const waitingOn = arm.waitingOn
        runOnLane(this.#router, watcher.db, 2, [encodeCommand(['CLIENT', 'UNBLOCK', arm.redisId])], (replies, err) => {
          // Not unblocked (the wait had not reached Redis yet, or no lane could be had): try
          // again shortly, unless that wait has ended meanwhile.
          if ((err !== null || replies?.[0]?.toString('latin1') === ':0\r\n') && arm.waitingOn === waitingOn) {
            setTimeout(() => {
              if (arm.waitingOn === waitingOn) arm.unblockSent = false
              this.#lot.schedule(watcher)
            }, 5).unref()
          }
        })
      }
      return
    }
    if (queues.length === 0) {
      if (arm.pin !== null && (watcher.queues.size === 0 || watcher.arms.length > 1 || tracked)) {
        this.#router.releasePin(arm.pin, 'clean')
        arm.pin = null
        arm.redisId = null
      }
      return
    }
    if (queues.length >= HOT_MIN_KEYS && performance.now() < watcher.hotUntil) {
      this.#poll(arm, HOT_POLL_MS)
      return
    }
    if (arm.pin === null) {
      // Watchers may hold all pins but two (one for a pinned blocking command such as WAIT, one
      // for transactions): an arm beyond that, or one still waiting for its pin, is polled.
      if (arm.starting || this.#watcherPins() < this.#router.maxPins - 2) this.#acquireArm(arm)
      this.#poll(arm, POLL_MS)
      return
    }
    this.#wait(arm, arm.pin, queues)
  }

  /** Arms holding a pin or asking for one. */
  #watcherPins (): number {
    let n = 0
    for (const w of this.#lot.watchers()) for (const arm of w.arms) if (arm.pin !== null || arm.starting) n++
    return n + this.#lot.trackerConnections()
  }

  /**
   * Sweeps the arm's keys after `ms` instead of blocking on them: while data keeps coming (hot),
   * or while the arm has no connection (its waiters are woken late, never forgotten).
   */
  #poll (arm: Arm, ms: number): void {
    if (arm.pollTimer !== null || this.#lot.closed) return
    arm.pollTimer = setTimeout(() => {
      arm.pollTimer = null
      const watcher = arm.watcher
      if (arm.waitingOn === null && watcher.serving === 0 && !watcher.sweeping) {
        if (watcher.family === 'stream') {
          // A stream's length says nothing about entries for its waiters: their own commands run.
          const queues = this.#lot.wantedQueues(watcher, arm)
          if (queues.length > 0) this.#lot.serveStreams(watcher, queues.map((q) => q.key), performance.now())
        } else {
          const sweep = this.#pollSweep(arm)
          if (sweep !== null) this.#lot.serve(watcher, [], new Map(), sweep, performance.now(), true)
        }
      }
      this.#lot.schedule(watcher)
    }, ms)
    arm.pollTimer.unref()
  }

  /**
   * The sweep a poll sends: built again only when a key joined the set, or when a quarter of the
   * keys it asks about have left (asking about a key nobody waits on any more only costs a
   * lookup; its data, if any, finds no waiter).
   */
  #pollSweep (arm: Arm): Buffer | null {
    const watcher = arm.watcher
    const cache = arm.sweepCache
    if (cache !== null && cache.version === watcher.keysVersion && (watcher.keysLeft - cache.left) * 4 < cache.keys) return cache.frame
    const queues = this.#lot.wantedQueues(watcher, arm)
    if (queues.length === 0) {
      arm.sweepCache = null
      return null
    }
    arm.sweepCache = { frame: sweepFrame(queues.map((q) => q.arg), watcher.family), keys: queues.length, version: watcher.keysVersion, left: watcher.keysLeft }
    return arm.sweepCache.frame
  }

  #acquireArm (arm: Arm): void {
    const watcher = arm.watcher
    // One start at a time: from asking for a pin until the connection has told its id.
    if (arm.starting) return
    arm.starting = true
    const acquisition = this.#router.acquirePin(null, 'blocking')
    arm.acquiring = acquisition
    acquisition.promise.then((pin) => {
      arm.acquiring = null
      if (this.#lot.closed) {
        arm.starting = false
        this.#router.releasePin(pin, 'clean')
        return
      }
      pin.conn.onClose = () => {
        if (arm.pin === pin) {
          arm.pin = null
          arm.redisId = null
          this.#router.releasePin(pin, 'destroy')
          this.#lot.schedule(watcher)
        }
      }
      syncLaneState(pin.conn, watcher.db, 2)
      pin.conn.sendInternal(['CLIENT', 'ID'], (reply) => {
        arm.starting = false
        if (reply === null || reply[0] !== 0x3a || this.#lot.closed) {
          this.#router.releasePin(pin, this.#lot.closed && reply !== null ? 'clean' : 'destroy')
          this.#lot.schedule(watcher)
          return
        }
        arm.pin = pin
        arm.redisId = reply.toString('latin1', 1, reply.length - 2)
        this.rearm(arm)
      })
    }, (err: Error) => {
      arm.acquiring = null
      arm.starting = false
      this.#log.debug({ err: err.message }, 'no connection for a watcher yet')
      if (!this.#lot.closed) setTimeout(() => { this.#lot.schedule(watcher) }, 100).unref()
    })
  }

  /** The watcher's blocking wait on `queues` (an element it takes only wakes the waiters). */
  #wait (arm: Arm, pin: Pin, queues: KeyQueue[]): void {
    const watcher = arm.watcher
    const conn = pin.conn
    const { frame, signature } = this.waitFrame(arm, queues)
    arm.waitingOn = signature
    arm.unblockSent = false
    conn.blockingInflight++
    conn.sendFrameInternal(frame, (reply, err) => {
      conn.blockingInflight--
      arm.waitingOn = null
      if (err !== null || reply === null) return // the connection is gone: onClose re-arms
      const detectedAt = performance.now()
      if (reply[0] === 0x2d) {
        if (reply.toString('latin1', 1, 10) === 'WRONGTYPE' && !watcher.sweeping) {
          // A key holds another kind of value now: find which, and leave it out.
          this.#lot.serve(watcher, [], new Map(), queues, detectedAt, true)
        } else if (isRedirect(reply) && this.#redirected !== null) {
          // The keys' slot moved away: their waiters are handed back (see evict) and the watcher
          // waits again on what is left.
          this.#redirected(reply)
          setTimeout(() => { this.#lot.schedule(watcher) }, 5).unref()
        } else {
          this.#log.warn({ reply: reply.toString('latin1', 0, 200) }, 'the parked-waiter watcher\'s wait failed; retrying')
          setTimeout(() => { this.#lot.schedule(watcher) }, watcher.sweeping ? 5 : 100).unref()
        }
        return
      }
      const taken = elements(reply)
      if (taken !== null) {
        if (watcher.family === 'stream') this.#lot.wakeStreams(watcher, taken, detectedAt)
        else this.#wake(arm, taken, detectedAt)
      }
      this.#lot.schedule(watcher)
    }, true) // an element it took just as respool leaves this master is still read (see retire)
  }

  /**
   * The watcher took an element from a key: put it back and, in the same transaction, run the
   * longest-waiting waiter's command on that key, and sweep the other watched keys.
   */
  #wake (arm: Arm, taken: Buffer[], detectedAt: number): void {
    const watcher = arm.watcher
    watcher.hotUntil = detectedAt + HOT_MS
    const key = bulkText(taken[0])
    // A list's element goes back to the end it came from. A sorted-set member goes back only if
    // nobody added it again meanwhile (NX): a newer score stays, and the waiter's pop then takes
    // the member as if it had been served after that ZADD; nothing is lost.
    const restore = watcher.family === 'list'
      ? encodeCommand([arm.end === 'right' ? 'RPUSH' : 'LPUSH', bulkValue(taken[0]), bulkValue(taken[1])])
      : encodeCommand(['ZADD', bulkValue(taken[0]), 'NX', bulkValue(taken[2]), bulkValue(taken[1])])
    this.#lot.serve(watcher, [restore], new Map([[key, 1]]), this.#unwatched(watcher, key), detectedAt, false, { key: bulkValue(taken[0]), element: bulkValue(taken[1]), score: watcher.family === 'zset' ? bulkValue(taken[2]) : null })
  }

  /**
   * Keys to sweep after a wake-up: those no arm is blocked on now (a blocked arm wakes for its
   * own keys, and a sweep serving them meanwhile could race it), but `key`, served already.
   */
  #unwatched (watcher: Watcher, key: string | null): KeyQueue[] {
    const blocked = new Set<End>()
    for (const arm of watcher.arms) if (arm.waitingOn !== null) blocked.add(arm.end)
    return this.#lot.wantedQueues(watcher).filter((q) => q.key !== key && (watcher.arms.length === 1 ? blocked.size === 0 : !blocked.has(headEnd(q) as End)))
  }
}
