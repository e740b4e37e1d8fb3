import Denque from 'denque'
import { runOnLane } from './lane-transaction.js'
import { KeyTracker } from './key-tracker.js'
import { elements, putBack, compareStreamIds, LAST_IDS_SCRIPT, type End, type Family, type Parkable } from './parkable.js'
import { bulkText, evalFrame, isNullReply, sweepFrame, withStreamIds } from './watch-frames.js'
import type { RespCommand } from '../protocol/resp-command.js'
import { timeoutReply } from '../commands/blocking.js'
import { toRespError, type ProxyError } from '../errors.js'
import type { ParkingUpstream } from './parking-upstream.js'
import type { Logger } from '../ops/logger.js'
import { WatcherArms, HOT_MS, isRedirect } from './watcher-arms.js'
import { ARM_ENDS, headEnd, type Arm, type KeyQueue, type Taken, type Watcher } from './watcher-types.js'

/**
 * Blocking commands that wait inside respool, without a connection each.
 *
 *   client BLPOP ──► try it inside MULTI on a shared lane (never blocks; Redis's exact reply)
 *                      │ got something: that is the reply
 *                      └ nothing yet: park the waiter on its keys (FIFO per key)
 *   watcher (one pinned connection per database and kind of key):
 *      BLPOP <every key with a parked waiter> 0   (BZPOPMIN for sorted sets, XREAD for streams)
 *      └ a key has data: MULTI, put back what the watcher took, run the longest-waiting
 *        waiters' own commands, sweep the other keys, EXEC: each waiter gets exactly what Redis
 *        gives it, in its own protocol and database; the rest stay parked. Keys the sweep found
 *        with data are served the same way at once. Then the watcher waits again.
 *
 * The watcher takes an element only to learn that a key has one, and the same transaction puts
 * it back before any waiter runs, so what a waiter gets is what its own command takes from
 * Redis. (XREAD takes nothing.) An element a waiter's command took for a client that left
 * meanwhile is put back at the end it came from. The watcher's key set changes with the
 * waiters: CLIENT UNBLOCK (which takes nothing) ends its wait, and it waits again on the new set.
 *
 * Why the sweep: a blocking pop reports one key per round trip, so a burst of pushes to many
 * keys would wake their waiters one round trip apart. The sweep (SWEEP_SCRIPT) finds every
 * watched key with data in one go.
 */

/** Who gets a parked command's reply. */
export interface ParkedClient {
  onParkedReply (reply: Buffer): void
}

type WaiterState = 'trying' | 'parked' | 'serving' | 'done'

export interface Waiter {
  readonly client: ParkedClient
  /** What runs when the waiter is served (a stream command with `$` pinned down to ids). */
  cmd: RespCommand
  readonly name: string
  readonly db: number
  readonly resp: 2 | 3
  readonly family: Family
  readonly keys: string[]
  /** The end its command takes from (lists: 'left'/'right'). */
  readonly end: End
  /** Its watcher group (ParkingOptions.groupOf of its keys). */
  readonly group: number
  /** Streams: per key, the id after which an entry may be for this waiter. */
  after: string[] | null
  state: WaiterState
  /** The client left: whatever its command takes now goes back. */
  cancelled: boolean
  /** Its own timeout passed while a transaction with its command was on its way. */
  timedOut: boolean
  timer: NodeJS.Timeout | null
}

/** Most waiters one key contributes to one wake-up transaction, and most in all. */
const SERVE_PER_KEY = 256
const SERVE_BATCH = 2048
const MAX_TIMER_MS = 2 ** 31 - 1
/**
 * From this many watched keys on, a watcher's lists or sorted sets are watched with CLIENT
 * TRACKING (KeyTracker) instead of blocking pops. A blocking pop takes the element the moment
 * it is pushed, exactly when Redis would hand it to a blocked client, so until then the lot
 * behaves as Redis does even to a command right behind the push (an LPOP, a SET NX). But each
 * new wait costs Redis work for every key it names, which at thousands of keys makes wake-ups
 * slow; the tracker costs one message and one read per change, and leaves the element in its
 * list until the waiter's own command takes it (a moment later, as if the waiter had been
 * behind that other command).
 */
const TRACK_MIN_KEYS = 256
/** How long a key that turned into another kind stays out of the watcher's wait. */
const WRONG_TYPE_RECHECK_MS = 100

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

/** How a lot groups keys, for an upstream that runs a transaction on keys of one group only. */
export interface ParkingOptions {
  /**
   * The group of a key (a cluster's hash slot): a watcher, its blocking wait, its sweeps and its
   * wake-up transactions each name keys of one group only. Every key of one command must be in
   * one group. Default: one group for all keys.
   */
  groupOf?: (key: string) => number
  /** From how many watched keys of one watcher on the key tracker watches them (default TRACK_MIN_KEYS). */
  trackFrom?: number
  /** The upstream answered a watcher's wait or a tracker's read with this -MOVED/-ASK. */
  redirected?: (reply: Buffer) => void
}

/** The figures RESPOOL POOLS and the metrics show, summed over lots where there are several. */
export interface ParkingView {
  readonly stats: ParkingStats
  readonly tracking: { state: string, watched: number, reads: number, invalidations: number }
  readonly parkedByCommand: ReadonlyMap<string, number>
  readonly parkedTotal: number
  readonly wokenTotal: number
  readonly timedOutTotal: number
  readonly putBackTotal: number
  readonly lostTotal: number
  readonly unknownTotal: number
  settledWaits (): number | null
  close (): void
}

const ONE_GROUP = (): number => 0

export class ParkingLot implements ParkingView {
  readonly #router: ParkingUpstream
  readonly #log: Logger
  readonly #watchers = new Map<string, Watcher>()
  readonly #observeWake: (seconds: number) => void
  readonly #groupOf: (key: string) => number
  readonly #trackFrom: number
  readonly #redirected: ((reply: Buffer) => void) | null
  /** Lists and sorted sets are watched through CLIENT TRACKING where the upstream allows it. */
  readonly #tracker: KeyTracker
  /** The watchers' connections and their waits (watcher-arms.ts). */
  readonly #arms: WatcherArms
  /** Parked waiters (being served included) by command name. */
  readonly parkedByCommand = new Map<string, number>()
  #parked = 0
  #putBacksInFlight = 0
  #trying = 0
  #closed = false
  parkedTotal = 0
  wokenTotal = 0
  timedOutTotal = 0
  putBackTotal = 0
  /** Elements the watcher took that could be neither put back nor handed to a waiter. */
  lostTotal = 0
  /** Elements the watcher took whose put-back died with its connection, outcome unknown. */
  unknownTotal = 0

  constructor (router: ParkingUpstream, log: Logger, observeWake: (seconds: number) => void = () => {}, options: ParkingOptions = {}) {
    this.#router = router
    this.#log = log
    this.#observeWake = observeWake
    this.#groupOf = options.groupOf ?? ONE_GROUP
    this.#trackFrom = options.trackFrom ?? TRACK_MIN_KEYS
    this.#redirected = options.redirected ?? null
    this.#tracker = new KeyTracker(router, log, {
      found: (db, family, key, size, at) => { this.#onFound(db, family, key, size, at) },
      unavailable: () => { for (const watcher of this.#watchers.values()) this.#schedule(watcher) },
      failed: (reply) => { if (isRedirect(reply)) this.#redirected?.(reply) }
    })
    const lot = this
    this.#arms = new WatcherArms(router, log, this.#redirected, {
      get closed (): boolean { return lot.#closed },
      watchers: () => this.#watchers.values(),
      trackerConnections: () => this.#tracker.connections,
      tracked: (watcher) => this.#tracked(watcher),
      schedule: (watcher) => { this.#schedule(watcher) },
      wantedQueues: (watcher, arm) => this.#wantedQueues(watcher, arm),
      serve: (watcher, prefix, sizes, sweepQueues, detectedAt, fromSweep, taken) => { this.#serve(watcher, prefix, sizes, sweepQueues, detectedAt, fromSweep, taken) },
      serveStreams: (watcher, keys, detectedAt) => { this.#serveStreams(watcher, keys, detectedAt) },
      wakeStreams: (watcher, streams, detectedAt) => { this.#wakeStreams(watcher, streams, detectedAt) }
    })
  }

  /** The key tracker's figures (reads, invalidations) and state. */
  get tracking (): { state: string, watched: number, reads: number, invalidations: number } {
    const t = this.#tracker
    return { state: t.state, watched: t.watched, reads: t.readsTotal, invalidations: t.invalidationsTotal }
  }

  get stats (): ParkingStats {
    let watchers = 0
    for (const w of this.#watchers.values()) for (const arm of w.arms) if (arm.pin !== null) watchers++
    watchers += this.#tracker.connections
    return { parked: this.#parked, trying: this.#trying, putBacksInFlight: this.#putBacksInFlight, parkedTotal: this.parkedTotal, wokenTotal: this.wokenTotal, timedOutTotal: this.timedOutTotal, putBackTotal: this.putBackTotal, watchers }
  }

  /**
   * Blocking waits that are on their way or in Redis, when every arm with keys to watch waits on
   * exactly those keys; null while one is about to change its wait. With Redis's
   * `blocked_clients` equal to this, a push is seen the moment Redis runs it (tests use this to
   * push only then).
   */
  settledWaits (): number | null {
    let n = 0
    for (const watcher of this.#watchers.values()) {
      if (watcher.serving > 0 || watcher.scheduled || watcher.sweeping) return null
      for (const arm of watcher.arms) {
        const queues = this.#tracked(watcher) ? [] : this.#wantedQueues(watcher, arm)
        if (queues.length === 0) {
          if (arm.waitingOn !== null) return null
          continue
        }
        if (arm.waitingOn !== this.#arms.waitFrame(arm, queues).signature) return null
        n++
      }
    }
    return n
  }

  /**
   * Tries `cmd` at once; if it gets nothing, parks it until one of its keys has data or its
   * timeout (`timeoutMs`, 0 = forever, counted from now) passes. The client's reply comes
   * through `client.onParkedReply`, exactly once, unless it is cancelled first.
   */
  park (client: ParkedClient, cmd: RespCommand, what: Parkable, db: number, resp: 2 | 3, timeoutMs: number): Waiter {
    const waiter: Waiter = { client, cmd, name: cmd.name, db, resp, family: what.family, keys: what.keys, end: what.end ?? ARM_ENDS[what.family][0], group: this.#groupOf(what.keys[0]), after: null, state: 'trying', cancelled: false, timedOut: false, timer: null }
    if (timeoutMs > 0) this.#armTimer(waiter, performance.now() + timeoutMs)
    this.#trying++
    // For a stream, the same transaction tells each stream's last id: what `$` means now, and
    // where new entries for this waiter begin.
    const frames = what.family === 'stream' ? [cmd.frame, evalFrame(LAST_IDS_SCRIPT, what.keys)] : [cmd.frame]
    runOnLane(this.#router, db, resp, frames, (replies, err) => {
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
      if (what.family === 'stream') {
        const lastIds = (elements(replies[1]) ?? []).map(bulkText)
        if (lastIds.length !== what.keys.length) {
          this.#finish(waiter, replies[1][0] === 0x2d ? replies[1] : toRespError(new Error('could not read the streams\' last ids') as ProxyError))
          return
        }
        const ids = what.ids as string[]
        waiter.after = ids.map((id, i) => id === '$' || id === '>' ? lastIds[i] : id)
        if (ids.includes('$')) waiter.cmd = withStreamIds(cmd, ids.map((id, i) => id === '$' ? lastIds[i] : id))
      }
      this.#enter(waiter)
    })
    return waiter
  }

  /** The client left (or was reset): it takes nothing, now or later. */
  cancel (waiter: Waiter): void {
    if (waiter.state === 'done' || waiter.cancelled) return
    waiter.cancelled = true
    if (waiter.state === 'parked') this.#retire(waiter)
    // 'trying' and 'serving' end when their transaction answers.
  }

  /**
   * CLIENT UNBLOCK: the client gets `reply` now and its command takes nothing (what a transaction
   * on its way takes for it goes back). False if it was not waiting.
   */
  unblock (waiter: Waiter, reply: Buffer): boolean {
    if (waiter.state === 'done' || waiter.cancelled) return false
    this.cancel(waiter)
    waiter.client.onParkedReply(reply)
    return true
  }

  /** Groups with a waiter parked now. */
  groups (): Set<number> {
    const out = new Set<number>()
    for (const watcher of this.#watchers.values()) if (watcher.queues.size > 0) out.add(watcher.group)
    return out
  }

  /**
   * Every waiter parked on keys of `group` gets `reply` now (its keys are no longer this
   * upstream's: a cluster slot moved away). Waiters in a transaction on its way get that
   * transaction's reply instead.
   */
  evict (group: number, reply: Buffer): void {
    for (const watcher of this.#watchers.values()) {
      if (watcher.group !== group) continue
      for (const queue of [...watcher.queues.values()]) {
        for (const waiter of queue.waiters.toArray()) if (waiter.state === 'parked' && !waiter.cancelled) this.#finish(waiter, reply)
      }
    }
  }

  /** Every parked client gets `err`; watchers are given back. */
  close (): void {
    this.#closed = true
    this.#tracker.close()
    for (const watcher of this.#watchers.values()) {
      for (const queue of watcher.queues.values()) {
        for (const waiter of queue.waiters.toArray()) {
          if (waiter.state === 'parked') this.#finish(waiter, toRespError(new Error('respool is shutting down')))
        }
      }
      for (const arm of watcher.arms) {
        if (arm.pollTimer !== null) clearTimeout(arm.pollTimer)
        arm.acquiring?.cancel(new Error('closing') as ProxyError)
        if (arm.pin !== null) this.#router.releasePin(arm.pin, 'destroy')
        arm.pin = null
      }
    }
  }

  // ---- waiters ----------------------------------------------------------------------------

  /** A try got nothing: the waiter joins its keys' queues and the watcher's wait. */
  #enter (waiter: Waiter): void {
    const watcher = this.#watcher(waiter.db, waiter.family, waiter.group)
    for (const key of waiter.keys) {
      let queue = watcher.queues.get(key)
      if (queue === undefined) {
        const bytes = Buffer.from(key, 'latin1')
        queue = { key, arg: Buffer.concat([Buffer.from(`$${bytes.length}\r\n`), bytes, CRLF]), waiters: new Denque(), parked: 0, live: 0 }
        watcher.queues.set(key, queue)
        watcher.keysVersion++
      }
      queue.waiters.push(waiter)
      queue.live++
    }
    waiter.state = 'serving' // #setParked counts it in
    this.#setParked(waiter, true)
    this.#parked++
    this.parkedTotal++
    this.parkedByCommand.set(waiter.name, (this.parkedByCommand.get(waiter.name) ?? 0) + 1)
    this.#schedule(watcher)
  }

  /** Moves a waiter between parked and being served, keeping its queues' counts. */
  #setParked (waiter: Waiter, parked: boolean): void {
    if ((waiter.state === 'parked') === parked) return
    waiter.state = parked ? 'parked' : 'serving'
    const watcher = this.#watcher(waiter.db, waiter.family, waiter.group)
    for (const key of waiter.keys) {
      const queue = watcher.queues.get(key)
      if (queue === undefined) continue
      queue.parked += parked ? 1 : -1
      if (parked && queue.parked === 1) {
        watcher.keysVersion++
        this.#keyWanted(watcher, queue, true)
      } else if (!parked && queue.parked === 0) {
        watcher.keysLeft++
        this.#keyWanted(watcher, queue, false)
      }
    }
    if (parked) this.#schedule(watcher)
  }

  /** A parked or served waiter is finished: it leaves its queues (lazily) and the counts. */
  #retire (waiter: Waiter): void {
    this.#setParked(waiter, false)
    waiter.state = 'done'
    this.#clearTimer(waiter)
    this.#parked--
    const n = (this.parkedByCommand.get(waiter.name) ?? 1) - 1
    if (n === 0) this.parkedByCommand.delete(waiter.name)
    else this.parkedByCommand.set(waiter.name, n)
    const watcher = this.#watcher(waiter.db, waiter.family, waiter.group)
    for (const key of waiter.keys) {
      const queue = watcher.queues.get(key)
      if (queue === undefined) continue
      queue.live--
      if (queue.live === 0) {
        watcher.queues.delete(key)
        continue
      }
      // Finished waiters are skipped where they stand; drop them from the front, and compact
      // when they are most of the queue, so a queue's size follows its live waiters.
      while (!queue.waiters.isEmpty() && (queue.waiters.peekFront() as Waiter).state === 'done') queue.waiters.shift()
      if (queue.waiters.length > 2 * queue.live + 16) {
        const live = queue.waiters.toArray().filter((w) => w.state !== 'done')
        queue.waiters.clear()
        for (const w of live) queue.waiters.push(w)
      }
    }
    this.#schedule(watcher)
  }

  /** Node's timers hold at most 2^31 - 1 ms (about 24.9 days): longer timeouts go in steps. */
  #armTimer (waiter: Waiter, deadline: number): void {
    const left = deadline - performance.now()
    if (left > MAX_TIMER_MS) {
      waiter.timer = setTimeout(() => { this.#armTimer(waiter, deadline) }, MAX_TIMER_MS)
      return
    }
    waiter.timer = setTimeout(() => { this.#onTimeout(waiter) }, Math.max(0, left))
  }

  #onTimeout (waiter: Waiter): void {
    waiter.timer = null
    if (waiter.state === 'parked') {
      this.timedOutTotal++
      this.#finish(waiter, timeoutReply(waiter.resp))
    } else if (waiter.state !== 'done') {
      waiter.timedOut = true // decided when the transaction on its way answers
    }
  }

  /** Gives a waiter its reply (if its client is still there) and finishes it. */
  #finish (waiter: Waiter, reply: Buffer): void {
    if (waiter.state === 'done') return
    if (waiter.state === 'trying') {
      waiter.state = 'done'
      this.#clearTimer(waiter)
    } else {
      this.#retire(waiter)
    }
    if (!waiter.cancelled) waiter.client.onParkedReply(reply)
  }

  #clearTimer (waiter: Waiter): void {
    if (waiter.timer !== null) clearTimeout(waiter.timer)
    waiter.timer = null
  }

  /** What a waiter's command took for a client that left goes back where it came from. */
  #putBack (waiter: Waiter, reply: Buffer): void {
    if (waiter.state === 'trying') {
      waiter.state = 'done'
      this.#clearTimer(waiter)
    } else {
      this.#retire(waiter)
    }
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

  #watcher (db: number, family: Family, group: number): Watcher {
    const id = `${db}:${family}:${group}`
    let watcher = this.#watchers.get(id)
    if (watcher === undefined) {
      const arms: Arm[] = []
      watcher = { db, family, group, queues: new Map(), wrongType: new Set(), arms, scheduled: false, sweeping: false, serving: 0, hotUntil: 0, keysVersion: 0, keysLeft: 0, found: new Map(), foundAt: 0, servingKeys: new Set(), wantedKeys: 0, tracked: false }
      for (const end of ARM_ENDS[family]) arms.push({ watcher, end, pin: null, acquiring: null, pollTimer: null, sweepCache: null, starting: false, redisId: null, waitingOn: null, unblockSent: false })
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
      if (this.#tracked(watcher)) this.#serveTracked(watcher)
      for (const arm of watcher.arms) this.#arms.rearm(arm)
    })
  }

  /** Watched through the tracker now (many keys, and the upstream allows tracking). */
  #tracked (watcher: Watcher): boolean {
    return watcher.tracked && this.#tracker.state !== 'unavailable'
  }

  /**
   * A key joined or left the set to watch. From TRACK_MIN_KEYS keys on, lists and sorted sets
   * are watched by the tracker rather than by blocking pops; below half that, by blocking pops
   * again (see TRACK_MIN_KEYS for why not always).
   */
  #keyWanted (watcher: Watcher, queue: KeyQueue, wanted: boolean): void {
    watcher.wantedKeys += wanted ? 1 : -1
    if (watcher.tracked) {
      if (wanted) this.#tracker.watch(watcher.db, watcher.family as 'list' | 'zset', queue.key, queue.arg)
      else this.#tracker.unwatch(watcher.db, watcher.family, queue.key)
    }
    if (watcher.family === 'stream' || this.#tracker.state === 'unavailable') return
    if (!watcher.tracked && watcher.wantedKeys >= this.#trackFrom) {
      watcher.tracked = true
      for (const q of watcher.queues.values()) if (q.parked > 0) this.#tracker.watch(watcher.db, watcher.family as 'list' | 'zset', q.key, q.arg)
      this.#schedule(watcher)
    } else if (watcher.tracked && watcher.wantedKeys <= this.#trackFrom / 2) {
      watcher.tracked = false
      for (const q of watcher.queues.values()) this.#tracker.unwatch(watcher.db, watcher.family, q.key)
      this.#schedule(watcher)
    }
  }

  /** The tracker read a watched key: with data, its waiters are served (one wake-up at a time). */
  #onFound (db: number, family: Family, key: string, size: number, at: number): void {
    const watcher = this.#watchers.get(`${db}:${family}:${this.#groupOf(key)}`)
    if (watcher === undefined || !watcher.tracked || size <= 0 || (watcher.queues.get(key)?.parked ?? 0) === 0) return
    if (watcher.found.size === 0) watcher.foundAt = at
    watcher.found.set(key, size)
    this.#schedule(watcher)
  }

  /**
   * Serves what the tracker found: keys with no wake-up on their way now, the others when theirs
   * ends (one chain of rounds per key at a time keeps its waiters served longest-waiting first).
   */
  #serveTracked (watcher: Watcher): void {
    const sizes = new Map<string, number>()
    for (const [key, size] of watcher.found) {
      if (watcher.servingKeys.has(key)) continue
      sizes.set(key, size)
      watcher.found.delete(key)
      watcher.servingKeys.add(key)
    }
    if (sizes.size === 0) return
    this.#serveFound(watcher, sizes, watcher.foundAt, () => {
      for (const key of sizes.keys()) watcher.servingKeys.delete(key)
    })
  }

  /**
   * Keys with a parked waiter (not being served, not of another kind): what to wait on; with an
   * arm, only the keys whose longest-parked waiter takes from that arm's end.
   */
  #wantedQueues (watcher: Watcher, arm: Arm | null = null): KeyQueue[] {
    const out: KeyQueue[] = []
    for (const queue of watcher.queues.values()) {
      if (queue.parked === 0 || watcher.wrongType.has(queue.key)) continue
      if (arm === null || watcher.arms.length === 1 || headEnd(queue) === arm.end) out.push(queue)
    }
    return out
  }

  /**
   * One wake-up transaction: `prefix` (what the watcher took, put back), then for each key in
   * `sizes` up to that many of its longest-parked waiters (one protocol per transaction; the
   * others wait for the next), then a sweep of `sweepQueues`. Keys the sweep finds with data
   * are served by the next transaction at once; keys of another kind leave the watcher's wait.
   * A round that a sweep asked for (`fromSweep`) and that served nobody ends the rounds: the
   * watcher's own wait takes over, so keys someone else keeps emptying cannot loop forever.
   */
  #serve (watcher: Watcher, prefix: Buffer[], sizes: Map<string, number>, sweepQueues: KeyQueue[] | Buffer, detectedAt: number, fromSweep: boolean, taken: Taken | null = null): void {
    const { batch, resp } = this.#pickBatch(watcher, sizes)
    let sweep: Buffer | null = null
    if (!watcher.sweeping) {
      if (Buffer.isBuffer(sweepQueues)) sweep = sweepQueues
      else {
        const sweepArgs = sweepQueues.filter((q) => q.parked > 0).map((q) => q.arg)
        if (sweepArgs.length > 0) sweep = sweepFrame(sweepArgs, watcher.family)
      }
    }
    const sweeping = sweep !== null
    if (batch.length === 0 && prefix.length === 0 && !sweeping) return
    if (sweeping) watcher.sweeping = true
    watcher.serving++
    const frames = [...prefix, ...batch.map((w) => w.cmd.frame)]
    if (sweep !== null) frames.push(sweep)
    runOnLane(this.#router, watcher.db, resp ?? 2, frames, (replies, err) => {
      watcher.serving--
      if (sweeping) watcher.sweeping = false
      if (err !== null || replies === null) {
        for (const waiter of batch) this.#finish(waiter, toRespError(err as ProxyError))
        // Whether the transaction ran is unknown: if it did not, the element the watcher took
        // is not back in Redis, and retrying could push it twice: say so, loudly.
        if (taken !== null) this.unknownTotal++
        if (taken !== null) this.#log.error({ key: taken.key.toString('latin1'), element: taken.element.toString('latin1', 0, 200), err: err?.message }, 'waking parked clients failed; the element taken to wake them may not be back in Redis')
        this.#schedule(watcher)
        return
      }
      const answers = batch.map((_, i) => replies[prefix.length + i])
      if (taken !== null && replies[0][0] === MINUS) this.#putBackRefused(taken, replies[0], batch, answers)
      let served = 0
      batch.forEach((waiter, i) => {
        if (this.#served(waiter, answers[i], detectedAt)) served++
      })
      if (sweeping) this.#afterSweep(watcher, replies[replies.length - 1], !fromSweep || served > 0 || batch.length === 0, detectedAt)
      this.#schedule(watcher)
    })
  }

  /**
   * The put-back of the element the watcher took was refused: the key became something else
   * (SET … NX, say) in the moment the element was out. On a direct connection the element went
   * to the longest-waiting client the moment it was pushed, before that change; so it does here,
   * when that waiter is a BLPOP/BRPOP on the key (its own command just failed on the changed
   * key). Otherwise the element has no place to go: it is logged as an error, with its value.
   */
  #putBackRefused (taken: Taken, error: Buffer, batch: Waiter[], answers: Buffer[]): void {
    const key = taken.key.toString('latin1')
    const simple = taken.score === null ? ['blpop', 'brpop'] : ['bzpopmin', 'bzpopmax']
    const i = batch.findIndex((w) => simple.includes(w.name) && w.keys.includes(key))
    if (i !== -1 && answers[i][0] === MINUS && batch.slice(0, i).every((w) => !w.keys.includes(key))) {
      const bulk = (b: Buffer): Buffer[] => [Buffer.from(`$${b.length}\r\n`), b, CRLF]
      const score = taken.score === null ? [] : batch[i].resp === 3 ? [Buffer.from(','), taken.score, CRLF] : bulk(taken.score)
      answers[i] = Buffer.concat([Buffer.from(taken.score === null ? '*2\r\n' : '*3\r\n'), ...bulk(taken.key), ...bulk(taken.element), ...score])
      return
    }
    this.lostTotal++
    this.#log.error({ key, element: taken.element.toString('latin1', 0, 200), err: error.toString('latin1', 1, error.length - 2) }, 'an element taken to wake parked clients could not be put back, and no waiter could take it: it is lost')
  }

  /**
   * The waiters a wake-up transaction serves: for each key in `sizes`, up to that many of its
   * longest-parked waiters (at most SERVE_PER_KEY), at most SERVE_BATCH in all, in one protocol
   * (a key whose next waiter speaks the other one stops there: the rest keep their turn). Also
   * what is left of each key's size for a next round, and the key each waiter was picked for.
   */
  #pickBatch (watcher: Watcher, sizes: Map<string, number>): { batch: Waiter[], keys: string[], left: Map<string, number>, resp: 2 | 3 | null } {
    const batch: Waiter[] = []
    const keys: string[] = []
    const left = new Map<string, number>()
    let resp: 2 | 3 | null = null
    for (const [key, size] of sizes) {
      const queue = watcher.queues.get(key)
      if (queue === undefined) continue
      let taken = 0
      for (let i = 0; i < queue.waiters.length && taken < Math.min(size, SERVE_PER_KEY) && batch.length < SERVE_BATCH; i++) {
        const waiter = queue.waiters.peekAt(i) as Waiter
        if (waiter.state !== 'parked') continue
        if (resp === null) resp = waiter.resp
        else if (waiter.resp !== resp) break
        this.#setParked(waiter, false)
        batch.push(waiter)
        keys.push(key)
        taken++
      }
      if (size - taken > 0) left.set(key, size - taken)
    }
    return { batch, keys, left, resp }
  }

  /** A served waiter's reply: its element (or error), or nothing (it parks again). */
  #served (waiter: Waiter, reply: Buffer, detectedAt: number): boolean {
    if (isNullReply(reply)) {
      if (waiter.cancelled || waiter.timedOut) {
        if (waiter.timedOut) this.timedOutTotal++
        this.#finish(waiter, timeoutReply(waiter.resp))
      } else {
        this.#setParked(waiter, true)
      }
      return false
    }
    if (waiter.cancelled) {
      this.#putBack(waiter, reply)
      return true
    }
    if (!isRedirect(reply)) { // (a redirect hands the waiter back: see ParkingOptions.groupOf)
      this.wokenTotal++
      this.#observeWake((performance.now() - detectedAt) / 1000)
    }
    this.#finish(waiter, reply)
    return true
  }

  /**
   * What a sweep found: keys of another kind leave the wait for a while; keys with data are
   * served now (lists and sorted sets; streams wake through their watcher's XREAD), unless the
   * last round made no progress.
   */
  #afterSweep (watcher: Watcher, reply: Buffer, progress: boolean, detectedAt: number): void {
    const found = elements(reply)
    if (found === null) {
      this.#log.warn({ reply: reply.toString('latin1', 0, 200) }, 'the parked-waiter sweep failed; waiters are woken by the watcher alone')
      return
    }
    const sizes = new Map<string, number>()
    for (let i = 0; i + 1 < found.length; i += 2) {
      const key = bulkText(found[i])
      const size = Number(found[i + 1].toString('latin1', 1, found[i + 1].length - 2))
      if (size < 0) this.#markWrongType(watcher, key)
      else sizes.set(key, size)
    }
    if (sizes.size > 0 && watcher.family !== 'stream') watcher.hotUntil = performance.now() + HOT_MS
    if (sizes.size > 0 && progress && watcher.family !== 'stream') this.#serveFound(watcher, sizes, detectedAt)
  }

  /**
   * Serves keys a sweep found with data, in rounds of at most SERVE_BATCH waiters, without
   * sweeping again: the sweep told how many elements each key has, so a round knows what is left
   * for the next (a key's element taken by someone else meanwhile only makes its waiter park
   * again). Rounds end when nothing is left, or a round served nobody.
   */
  #serveFound (watcher: Watcher, sizes: Map<string, number>, detectedAt: number, done: (() => void) | null = null): void {
    const { batch, keys: batchKeys, left, resp } = this.#pickBatch(watcher, sizes)
    if (batch.length === 0) {
      done?.()
      this.#schedule(watcher)
      return
    }
    watcher.serving++
    runOnLane(this.#router, watcher.db, resp ?? 2, batch.map((w) => w.cmd.frame), (replies, err) => {
      watcher.serving--
      if (err !== null || replies === null) {
        for (const waiter of batch) this.#finish(waiter, toRespError(err as ProxyError))
        done?.()
        this.#schedule(watcher)
        return
      }
      let served = 0
      batch.forEach((waiter, i) => {
        if (this.#served(waiter, replies[i], detectedAt)) served++
        else left.delete(batchKeys[i]) // got nothing: that key is empty now
      })
      for (const [key] of left) if ((watcher.queues.get(key)?.parked ?? 0) === 0) left.delete(key)
      if (served > 0 && left.size > 0) this.#serveFound(watcher, left, detectedAt, done)
      else {
        done?.()
        this.#schedule(watcher)
      }
    })
  }

  #markWrongType (watcher: Watcher, key: string): void {
    if (watcher.wrongType.has(key)) return
    watcher.wrongType.add(key)
    watcher.keysLeft++
    setTimeout(() => {
      watcher.wrongType.delete(key)
      watcher.keysVersion++
      this.#schedule(watcher)
    }, WRONG_TYPE_RECHECK_MS).unref()
  }

  /**
   * The stream watcher's XREAD returned: these streams have entries after the earliest id a
   * waiter on them waits after. Their waiters' own commands run (each gets what Redis gives
   * it), and, in the same transaction, the streams' last ids: a waiter that got nothing waits
   * after those from now on.
   */
  #wakeStreams (watcher: Watcher, streams: Buffer[], detectedAt: number): void {
    // The watcher speaks RESP2: an array of [key, entries].
    this.#serveStreams(watcher, streams.map((stream) => bulkText(elements(stream)?.[0])), detectedAt)
  }

  /** Runs the parked stream commands on `keys` (each gets what Redis gives it now). */
  #serveStreams (watcher: Watcher, keys: string[], detectedAt: number): void {
    const byResp = new Map<2 | 3, Waiter[]>()
    for (const key of keys) {
      const queue = watcher.queues.get(key)
      if (queue === undefined) continue
      let taken = 0
      for (let i = 0; i < queue.waiters.length && taken < SERVE_PER_KEY; i++) {
        const waiter = queue.waiters.peekAt(i) as Waiter
        if (waiter.state !== 'parked') continue
        this.#setParked(waiter, false)
        const group = byResp.get(waiter.resp) ?? []
        group.push(waiter)
        byResp.set(waiter.resp, group)
        taken++
      }
    }
    for (const [resp, batch] of byResp) {
      const frames = [...batch.map((w) => w.cmd.frame), evalFrame(LAST_IDS_SCRIPT, keys)]
      runOnLane(this.#router, watcher.db, resp, frames, (replies, err) => {
        if (err !== null || replies === null) {
          for (const waiter of batch) this.#finish(waiter, toRespError(err as ProxyError))
          return
        }
        const lastIds = (elements(replies[replies.length - 1]) ?? []).map(bulkText)
        batch.forEach((waiter, i) => {
          if (!this.#served(waiter, replies[i], detectedAt) && waiter.state === 'parked' && waiter.after !== null) {
            waiter.keys.forEach((key, k) => {
              const j = keys.indexOf(key)
              const last = j === -1 ? undefined : lastIds[j]
              if (last !== undefined && compareStreamIds(last, (waiter.after as string[])[k]) > 0) (waiter.after as string[])[k] = last
            })
          }
        })
        this.#schedule(watcher)
      })
    }
  }
}

const CRLF = Buffer.from('\r\n')
const MINUS = 0x2d

