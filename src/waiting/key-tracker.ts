import { syncLaneState } from '../routing/lane-state.js'
import type { ParkingUpstream, ParkingPin as Pin, ParkingPinAcquisition as PinAcquisition } from './parking-upstream.js'
import type { Logger } from '../ops/logger.js'
import type { ProxyError } from '../errors.js'
import { bulk, elements, type Family } from './parkable.js'

/**
 * Learns that watched keys got data, at a cost that does not grow with the number of keys,
 * through Redis's client-side caching protocol (CLIENT TRACKING, Redis 6+).
 *
 * One connection (a pin, in RESP3) turns tracking on and reads each watched key's length once
 * (LLEN, ZCARD). Redis then remembers the key and sends an `invalidate` push the moment anyone
 * modifies it. On that push the key is read again, which both tells its new length and tracks
 * it again. So a push to one of 10,000 watched keys costs one small message and one read,
 * where a blocking wait on all of them costs Redis work for every key at each wake-up.
 *
 * Nothing is taken from Redis to learn that a key has data: no element is ever held by
 * respool, so none can be lost with a connection.
 *
 * The tracking table of Redis is keyed by key name, not database: a key of the same name
 * modified in another database wakes a read that finds nothing, which costs a read only.
 *
 * When the upstream refuses tracking (an older Redis, an ACL user without `client|tracking`,
 * a proxy in between that does not pass RESP3 pushes), the tracker says so once and stays off:
 * the parking lot's blocking watchers take over.
 */

export type TrackerState = 'idle' | 'starting' | 'ready' | 'unavailable'

export interface TrackerEvents {
  /** `key` of `db` has `size` elements of `family`'s kind (-1: it holds another kind). */
  found: (db: number, family: Family, key: string, size: number, at: number) => void
  /** Tracking cannot be had on this upstream: the blocking watchers take over. */
  unavailable: () => void
  /** A read was refused with `reply` (a cluster slot that moved away answers -MOVED). */
  failed?: (reply: Buffer) => void
  /** The tracker is ready again after having no connection: every watched key was read anew. */
  ready?: () => void
}

interface Watched {
  readonly db: number
  readonly family: Family
  readonly key: string
  readonly arg: Buffer
  /** A read is on its way: an invalidation meanwhile is answered by that read (see #onPush). */
  reading: boolean
}

const LENGTH: Record<Exclude<Family, 'stream'>, Buffer> = {
  list: Buffer.from('$4\r\nLLEN\r\n'),
  zset: Buffer.from('$5\r\nZCARD\r\n')
}
const INVALIDATE = Buffer.from('invalidate')
const RETRY_MS = 100
/** How long the tracker keeps its connection with nothing to watch (waiters come and go). */
const IDLE_RELEASE_MS = 1000

export class KeyTracker {
  readonly #router: ParkingUpstream
  readonly #log: Logger
  readonly #events: TrackerEvents
  /** Watched entries by key name (one per database and kind that watches it). */
  readonly #byKey = new Map<string, Watched[]>()
  #pin: Pin | null = null
  #acquiring: PinAcquisition | null = null
  #state: TrackerState = 'idle'
  #closed = false
  #idleTimer: NodeJS.Timeout | null = null
  readsTotal = 0
  invalidationsTotal = 0

  constructor (router: ParkingUpstream, log: Logger, events: TrackerEvents) {
    this.#router = router
    this.#log = log
    this.#events = events
  }

  get state (): TrackerState {
    return this.#state
  }

  /** The connection it holds (0 or 1), for the count of watcher connections. */
  get connections (): number {
    return this.#pin !== null || this.#state === 'starting' ? 1 : 0
  }

  get watched (): number {
    let n = 0
    for (const list of this.#byKey.values()) n += list.length
    return n
  }

  /** Starts watching `key` (its encoded bulk string `arg`): its length is read now. */
  watch (db: number, family: Exclude<Family, 'stream'>, key: string, arg: Buffer): void {
    if (this.#state === 'unavailable' || this.#closed) return
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer)
    this.#idleTimer = null
    let list = this.#byKey.get(key)
    if (list === undefined) {
      list = []
      this.#byKey.set(key, list)
    }
    let entry = list.find((w) => w.db === db && w.family === family)
    if (entry === undefined) {
      entry = { db, family, key, arg, reading: false }
      list.push(entry)
    }
    if (this.#state === 'ready') this.#read(entry)
    else this.#start()
  }

  /** Stops watching: Redis's entry for the key lapses at its next change (one read that finds nobody). */
  unwatch (db: number, family: Family, key: string): void {
    const list = this.#byKey.get(key)
    if (list === undefined) return
    const i = list.findIndex((w) => w.db === db && w.family === family)
    if (i !== -1) list.splice(i, 1)
    if (list.length === 0) this.#byKey.delete(key)
    if (this.#byKey.size === 0 && this.#idleTimer === null && this.#pin !== null) {
      this.#idleTimer = setTimeout(() => {
        this.#idleTimer = null
        const pin = this.#pin
        if (this.#byKey.size > 0 || pin === null) return
        this.#pin = null
        this.#state = 'idle'
        // Tracking on, RESP3: a scrub brings it back to the pool's default state.
        this.#router.releasePin(pin, 'scrub')
      }, IDLE_RELEASE_MS)
      this.#idleTimer.unref()
    }
  }

  close (): void {
    this.#closed = true
    if (this.#idleTimer !== null) clearTimeout(this.#idleTimer)
    this.#acquiring?.cancel(new Error('closing') as ProxyError)
    if (this.#pin !== null) this.#router.releasePin(this.#pin, 'destroy')
    this.#pin = null
  }

  #read (entry: Watched): void {
    const pin = this.#pin
    if (pin === null || entry.reading) return
    entry.reading = true
    this.readsTotal++
    const conn = pin.conn
    syncLaneState(conn, entry.db, 3)
    const family = entry.family as Exclude<Family, 'stream'>
    conn.sendFrameInternal(Buffer.concat([Buffer.from('*2\r\n'), LENGTH[family], entry.arg]), (reply, err) => {
      entry.reading = false
      if (err !== null || reply === null) return // the connection is gone: every key is read again on the next one
      const at = performance.now()
      if (reply[0] === 0x3a) {
        const size = Number(reply.toString('latin1', 1, reply.length - 2))
        if (size > 0 && this.#isWatched(entry)) this.#events.found(entry.db, family, entry.key, size, at)
      } else if (reply.toString('latin1', 1, 10) === 'WRONGTYPE') {
        // Redis does not wake a blocked pop on a key of another kind either; the key stays
        // tracked, so its next change (back to a list, say) is read again.
        if (this.#isWatched(entry)) this.#events.found(entry.db, family, entry.key, -1, at)
      } else {
        if (this.#events.failed !== undefined) this.#events.failed(reply)
        if (reply.toString('latin1', 0, 6) !== '-MOVED' && reply.toString('latin1', 0, 5) !== '-ASK ') this.#log.warn({ reply: reply.toString('latin1', 0, 200) }, 'reading a watched key failed')
      }
    })
  }

  #isWatched (entry: Watched): boolean {
    return this.#byKey.get(entry.key)?.includes(entry) === true
  }

  /** An invalidation: the keys it names changed (null: every key, after FLUSHALL and the like). */
  #onPush = (frame: Buffer): void => {
    const parts = elements(frame)
    if (parts === null || parts.length < 2 || !INVALIDATE.equals(bulk(parts[0]) ?? Buffer.alloc(0))) return
    this.invalidationsTotal++
    const keys = elements(parts[1])
    if (keys === null) {
      for (const list of this.#byKey.values()) for (const entry of list) this.#read(entry)
      return
    }
    for (const k of keys) {
      const name = bulk(k)
      if (name === null) continue
      // A read on its way was written after this change reached Redis: it sees the change,
      // and tracks the key again.
      for (const entry of this.#byKey.get(name.toString('latin1')) ?? []) this.#read(entry)
    }
  }

  #start (): void {
    if (this.#state === 'starting' || this.#state === 'ready' || this.#closed) return
    // Blocking watchers may hold all pins but two; without room for one, tracking is not for
    // this pool size.
    if (this.#router.maxPins - 2 < 1) {
      this.#giveUp('the pool is too small for a tracking connection')
      return
    }
    this.#state = 'starting'
    const acquisition = this.#router.acquirePin(null, 'blocking')
    this.#acquiring = acquisition
    acquisition.promise.then((pin) => {
      this.#acquiring = null
      if (this.#closed) {
        this.#router.releasePin(pin, 'clean')
        return
      }
      pin.conn.onClose = () => {
        if (this.#pin !== pin) return
        this.#pin = null
        this.#router.releasePin(pin, 'destroy')
        if (this.#state === 'ready') this.#state = 'idle'
        for (const list of this.#byKey.values()) for (const entry of list) entry.reading = false
        if (!this.#closed && this.#byKey.size > 0) setTimeout(() => { this.#start() }, 10).unref()
      }
      pin.conn.pushHandler = this.#onPush
      const failed = (): void => {
        this.#state = 'idle'
        this.#router.releasePin(pin, 'destroy')
        if (!this.#closed) setTimeout(() => { this.#start() }, RETRY_MS).unref()
      }
      // HELLO 3 by hand rather than through syncLaneState: a refusal (Redis before 6) means no
      // tracking here, not a broken connection.
      pin.conn.sendInternal(['HELLO', '3'], (hello, err) => {
        if (err !== null || hello === null) return
        if (hello[0] === 0x2d) {
          this.#router.releasePin(pin, 'scrub')
          this.#giveUp(hello.toString('latin1', 1, Math.min(hello.length - 2, 200)))
          return
        }
        pin.conn.resp = 3
      })
      pin.conn.sendInternal(['CLIENT', 'TRACKING', 'ON'], (reply, err) => {
        if (this.#state === 'unavailable') return
        if (err !== null || reply === null) {
          failed()
          return
        }
        if (reply[0] === 0x2d || pin.conn.resp !== 3) {
          this.#router.releasePin(pin, 'scrub')
          this.#giveUp(reply.toString('latin1', 1, Math.min(reply.length - 2, 200)))
          return
        }
        this.#pin = pin
        this.#state = 'ready'
        for (const list of this.#byKey.values()) for (const entry of list) this.#read(entry)
        this.#events.ready?.()
      })
    }, (err: Error) => {
      this.#acquiring = null
      if (this.#state === 'starting') this.#state = 'idle'
      this.#log.debug({ err: err.message }, 'no connection for the key tracker yet')
      if (!this.#closed) setTimeout(() => { this.#start() }, RETRY_MS).unref()
    })
  }

  #giveUp (why: string): void {
    this.#state = 'unavailable'
    this.#byKey.clear()
    this.#log.info({ reason: why }, 'CLIENT TRACKING is not available upstream: parked waiters are watched with blocking commands')
    this.#events.unavailable()
  }
}
