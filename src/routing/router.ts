import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ConnectionSource, IdleLender } from '../upstream/identity-pool.js'
import { PinGate, type PinKind, type PinPermit } from './pin-gate.js'
import type { ProxyError } from '../errors.js'
import { ReplySlot, InternalSink } from './reply-slot.js'
import type { Logger } from '../ops/logger.js'

/** A connection pinned to one client, and the permit that counts it against the pin cap. */
export interface Pin {
  readonly conn: UpstreamConnection
  readonly permit: PinPermit
  readonly acquiredAt: number
}

/** An in-progress pin acquisition that the client can abandon (it disconnected). */
export interface PinAcquisition {
  promise: Promise<Pin>
  cancel (err: ProxyError): void
}

/** How a pinned connection is given back. */
export type PinRelease = 'clean' | 'scrub' | 'destroy'

/** Commands in flight that make a lane busy: the next session goes to another lane. */
const LANE_BUSY_INFLIGHT = 256
/** A lane with commands in flight and no reply for this long is held up by a slow command. */
const LANE_STALL_MS = 5

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
export class Router implements IdleLender {
  readonly #pool: ConnectionSource
  readonly #log: Logger
  readonly #laneIdleMs: number
  #lanes: UpstreamConnection[] = []
  #growing = 0
  #waiters = new Set<LaneWaiter>()
  #idleSince = new Map<UpstreamConnection, number>()
  #sweepTimer: NodeJS.Timeout | null = null
  #closed = false
  /** Lanes that take no new sessions and go back to the pool once idle (a pin needs the room). */
  #draining = new Set<UpstreamConnection>()
  #poolSize: number
  readonly #gate: PinGate
  /** Pins holding a permit (with a connection or about to get one). */
  #pinsPermitted = 0
  /** Pins by reason, for stats (the session reports reasons). */
  pinsTotal = 0
  pinWaitTimeouts = 0

  /** Lanes the idle sweep leaves open (respool's own router keeps one warm; an ACL user's keeps none). */
  readonly #keepLanes: number

  constructor (pool: ConnectionSource, log: Logger, options: { poolSize: number, maxPins: number, laneIdleMs?: number, keepLanes?: number }) {
    this.#keepLanes = options.keepLanes ?? 1
    this.#pool = pool
    this.#log = log
    this.#poolSize = options.poolSize
    this.#gate = new PinGate(options.maxPins)
    this.#laneIdleMs = options.laneIdleMs ?? 5000
    pool.addLender(this)
  }

  /**
   * The pool is full and someone else waits for a connection: the lane idle the longest goes
   * back now rather than after laneIdleMs (keeping #keepLanes, as the sweep does).
   */
  giveBackIdle (): boolean {
    if (this.#closed || this.#lanes.length - this.#draining.size <= this.#keepLanes) return false
    let oldest: UpstreamConnection | null = null
    let oldestSince = Infinity
    for (const lane of this.#lanes) {
      if (lane.inflight > 0 || lane.writeLockedBy !== null || this.#draining.has(lane)) continue
      const since = this.#idleSince.get(lane) ?? Infinity
      if (oldest === null || since < oldestSince) {
        oldest = lane
        oldestSince = since
      }
    }
    if (oldest === null) return false
    this.#removeLane(oldest, true)
    return true
  }

  get laneCount (): number {
    return this.#lanes.length
  }

  get pinCount (): number {
    return this.#pinsPermitted
  }

  get pinsWaiting (): number {
    return this.#gate.waiting
  }

  get maxPins (): number {
    return this.#gate.maxPins
  }

  /** Applies a new pool size and pin cap (RESPOOL RELOAD); extra lanes go back as they idle. */
  resize (poolSize: number, maxPins: number): void {
    this.#poolSize = poolSize
    this.#gate.resize(maxPins)
    this.#makeRoomForPin()
  }

  /** Most lanes at once: the pool bound less what pins hold. */
  get maxLanes (): number {
    return Math.max(1, this.#poolSize - this.#pinsPermitted)
  }

  /**
   * The lane for an idle session. Redis is single-threaded: the more commands share one
   * connection, the fewer reads, writes and syscalls each costs (Redis and respool alike), so
   * lanes are filled in order rather than balanced: a command goes to the first lane that is
   * not busy, preferring one already in the session's database and protocol (a switch costs an
   * extra SELECT/HELLO). A lane is busy when it has LANE_BUSY_INFLIGHT commands in flight, or
   * has answered nothing for LANE_STALL_MS while commands wait (a slow command is holding it).
   * When every lane is busy, or none is in the session's state, another lane is opened up to
   * the bound. Null if there is no lane yet (then call waitForLane).
   */
  /** The lane is being given up (for a pin): nobody should start sending to it. */
  isDraining (conn: UpstreamConnection): boolean {
    return this.#draining.size > 0 && this.#draining.has(conn)
  }

  pickLane (db: number, resp: number): UpstreamConnection | null {
    const lanes = this.#lanes
    let now = 0
    let firstFree: UpstreamConnection | null = null
    let leastLoaded: UpstreamConnection | null = null
    let flowing: UpstreamConnection | null = null
    for (let i = 0; i < lanes.length; i++) {
      const lane = lanes[i]
      if (!lane.isReady || lane.needDrain || lane.writeLockedBy !== null || (this.#draining.size > 0 && this.#draining.has(lane))) continue
      if (leastLoaded === null || lane.inflight < leastLoaded.inflight) leastLoaded = lane
      if (lane.inflight > 0) {
        if (now === 0) now = performance.now()
        if (now - lane.lastProgress > LANE_STALL_MS) continue
      }
      // A lane reading a large reply is busy too: a small command would wait behind all of it
      // (a 64 MB reply takes a quarter of a second); better a new lane, or one still to open.
      if (lane.streamingReply || lane.heavyInflight > 0) continue
      if (flowing === null || lane.inflight < flowing.inflight) flowing = lane
      if (lane.inflight >= LANE_BUSY_INFLIGHT) continue
      if (lane.db === db && lane.resp === resp) return lane
      firstFree ??= lane
    }
    // Nothing free in this state: open another lane (it takes the state on first use) and use
    // the best one there is meanwhile.
    this.#grow()
    if (firstFree !== null) return firstFree
    if (flowing !== null) return flowing
    // Every lane is held up by a slow command (a long script, a stalled Redis): a command sent
    // there would wait behind it. While another lane is on its way, wait for that one instead.
    if (this.#growing > 0) return null
    return leastLoaded
  }

  /**
   * A large reply started streaming on a lane: if no other lane is free of large replies, one
   * more is opened now (within the bound), so the next small command of another client finds
   * it ready instead of waiting for a connection to be set up, which takes as long as Redis
   * copying a large reply for somebody (a second for 2 × 256 MB).
   */
  ensureSpareLane (): void {
    for (const lane of this.#lanes) {
      if (lane.isReady && !lane.streamingReply && lane.heavyInflight === 0 && !this.#draining.has(lane)) return
    }
    this.#grow()
  }

  /**
   * Pins a connection: waits for a permit (at most `deadlineMs`; null = no deadline; blocking
   * commands may hold all pins but one), then for a connection from the pool, shrinking the
   * shared lanes if the pool is full.
   */
  acquirePin (deadlineMs: number | null, kind: PinKind = 'short'): PinAcquisition {
    const request = this.#gate.request(deadlineMs, kind)
    let cancelled: ProxyError | null = null
    const promise = request.promise.then(async (permit) => {
      this.#pinsPermitted++
      this.#makeRoomForPin()
      let conn: UpstreamConnection
      try {
        conn = await this.#pool.acquire(0, this) // (#makeRoomForPin gave back this router's own)
      } catch (err) {
        this.#pinsPermitted--
        this.#gate.release(permit)
        throw err
      }
      const pin: Pin = { conn, permit, acquiredAt: performance.now() }
      if (cancelled !== null) {
        this.releasePin(pin, 'clean')
        throw cancelled
      }
      this.pinsTotal++
      return pin
    }, (err: ProxyError) => {
      if (err.code === 'RESPOOL_ERR_POOL_TIMEOUT') this.pinWaitTimeouts++
      throw err
    })
    return {
      promise,
      cancel: (err) => {
        cancelled = err
        request.cancel(err)
      }
    }
  }

  /** Gives a pinned connection back: to the pool as is, after a scrub, or closed. */
  releasePin (pin: Pin, how: PinRelease): void {
    const { conn } = pin
    conn.detachOwner()
    const done = (): void => {
      this.#pinsPermitted--
      this.#gate.release(pin.permit)
      // The room a pin needed may be free again: let the lanes grow back on demand.
    }
    if (how === 'destroy' || !conn.isReady || (how === 'scrub' && this.#closed)) {
      this.#pool.destroy(conn)
      done()
      return
    }
    if (how === 'clean') {
      this.#pool.release(conn)
      done()
      return
    }
    conn.scrub().then(() => {
      this.#pool.release(conn)
      done()
    }, (err: Error) => {
      this.#log.debug({ upstream: conn.id, err: err.message }, 'scrub failed; connection destroyed')
      this.#pool.destroy(conn)
      done()
    })
  }

  /**
   * Sends one command at once on a connection with nothing in flight, and calls back with its
   * reply. For SCRIPT KILL and FUNCTION KILL: Redis answers them while a script keeps it busy,
   * but on a lane they would wait behind that very script. An idle lane is used if there is
   * one, else a connection from the pool (within the bound, after at most the acquire timeout).
   */
  sendAtOnce (frame: Buffer, callback: (reply: Buffer | null, err: ProxyError | null) => void): void {
    const idle = this.#lanes.find((lane) => lane.isReady && lane.inflight === 0 && !lane.needDrain && lane.writeLockedBy === null)
    if (idle !== undefined) {
      idle.send(frame, new ReplySlot(new InternalSink(callback), null))
      return
    }
    this.#pool.acquire(0).then((conn) => {
      conn.send(frame, new ReplySlot(new InternalSink((reply, err) => {
        // The command changes nothing on the connection: it goes back as it came.
        if (err === null) this.#pool.release(conn)
        else this.#pool.destroy(conn)
        callback(reply, err)
      }), null))
    }, (err: ProxyError) => { callback(null, err) })
  }

  /** Calls the waiter back once a lane exists, or with the error if none can be had. */
  waitForLane (waiter: LaneWaiter): void {
    this.#waiters.add(waiter)
    // The waiter may have passed over lanes that answered nothing for LANE_STALL_MS. The next
    // lane may be long in coming (pins are served before lane growth, and a busy pool may have
    // pins to hand out for a while), and a stalled lane usually answers again soon: its next
    // bytes let the waiters look again.
    for (const lane of this.#lanes) if (lane.inflight > 0) lane.onProgress = this.#onLaneProgress
    // pickLane has usually just asked for a lane; a second request would only be a second wait.
    if (this.#growing === 0) this.#grow()
  }

  cancelWait (waiter: LaneWaiter): void {
    this.#waiters.delete(waiter)
  }

  /** Gives every lane back (closing). */
  async close (): Promise<void> {
    this.#closed = true
    this.#pool.removeLender(this)
    if (this.#sweepTimer !== null) clearInterval(this.#sweepTimer)
    for (const lane of this.#lanes) this.#pool.release(lane)
    this.#lanes = []
    this.#draining.clear()
    await this.#gate.close()
  }

  /** Lanes above the cap stop taking sessions and go back to the pool as soon as they are idle. */
  #makeRoomForPin (): void {
    let excess = this.#lanes.length - this.#draining.size - this.maxLanes
    if (excess <= 0) return
    const byLoad = this.#lanes.filter((lane) => !this.#draining.has(lane)).sort((a, b) => a.inflight - b.inflight)
    for (const lane of byLoad) {
      if (excess-- <= 0) break
      if (lane.inflight === 0) this.#removeLane(lane, true)
      else this.#draining.add(lane)
    }
  }

  #grow (): void {
    if (this.#closed || this.#lanes.length - this.#draining.size + this.#growing >= this.maxLanes) return
    if (this.#growing > 0 && this.#lanes.length > 0) return // one at a time while traffic flows
    this.#growing++
    this.#pool.acquire(1, this).then((conn) => {
      this.#growing--
      if (this.#closed) {
        this.#pool.release(conn)
        return
      }
      this.#addLane(conn)
    }, (err: ProxyError) => {
      this.#growing--
      if (this.#lanes.length > 0) {
        // Lanes exist (they were only busy): let the waiters try them again.
        this.#wakeWaiters()
        return
      }
      const waiters = [...this.#waiters]
      this.#waiters.clear()
      this.#log.debug({ err: err.message, waiters: waiters.length }, 'no shared lane available')
      for (const waiter of waiters) waiter.laneFailed(err)
    })
  }

  #addLane (conn: UpstreamConnection): void {
    this.#lanes.push(conn)
    conn.onClose = (c) => { this.#removeLane(c, false) }
    conn.onIdle = (c) => {
      if (this.#draining.has(c)) this.#removeLane(c, true)
      else this.#idleSince.set(c, performance.now())
    }
    // A lane that was full or reserved for a large command can serve the waiters again.
    conn.onWritable = () => { this.#wakeWaiters() }
    this.#idleSince.set(conn, performance.now())
    if (this.#sweepTimer === null) {
      this.#sweepTimer = setInterval(this.#sweep, Math.max(100, this.#laneIdleMs / 2))
      this.#sweepTimer.unref()
    }
    this.#wakeWaiters()
  }

  #onLaneProgress = (): void => {
    this.#wakeWaiters()
  }

  #wakeWaiters (): void {
    for (const lane of this.#lanes) lane.onProgress = null
    if (this.#waiters.size === 0) return
    const waiters = [...this.#waiters]
    this.#waiters.clear()
    for (const waiter of waiters) waiter.laneReady()
  }

  #removeLane (conn: UpstreamConnection, healthy: boolean): void {
    const i = this.#lanes.indexOf(conn)
    if (i === -1) return
    this.#lanes.splice(i, 1)
    this.#idleSince.delete(conn)
    this.#draining.delete(conn)
    if (healthy) this.#pool.release(conn)
    else this.#pool.destroy(conn)
    // Sessions may be waiting for a lane while this one was leaving (a retiring lane still
    // counted against the bound): its room is free now.
    if (this.#waiters.size > 0 && !this.#closed) this.#grow()
  }

  /** Returns lanes that have been idle for laneIdleMs to the pool (keeping #keepLanes). */
  #sweep = (): void => {
    const now = performance.now()
    for (const lane of [...this.#lanes]) {
      if (this.#lanes.length <= this.#keepLanes) break
      const since = this.#idleSince.get(lane)
      if (lane.inflight === 0 && since !== undefined && now - since >= this.#laneIdleMs) this.#removeLane(lane, true)
    }
  }
}
