import { PIN_REASONS } from '../ops/proxy-stats.js'
import { UpstreamConnectError, type ProxyError } from '../errors.js'
import type { Logger } from '../ops/logger.js'
import { PinGate, type PinKind, type PinPermit } from '../routing/pin-gate.js'
import { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ClusterNode } from './cluster-topology.js'

/** A connection to one cluster master, held by one client (or the pub/sub hub) for a while. */
export interface ClusterPin {
  readonly conn: UpstreamConnection
  readonly node: ClusterNode
  readonly permit: PinPermit
  readonly acquiredAt: number
}

export interface ClusterPinAcquisition {
  promise: Promise<ClusterPin>
  cancel (err: ProxyError): void
}

/** How a pinned connection is given back (as in standalone mode). */
export type ClusterPinRelease = 'clean' | 'scrub' | 'destroy'

export interface ClusterPinsOptions {
  poolSize: number
  connectTimeoutMs: number
  commandTimeoutMs: number
}

/**
 * Pinned connections to cluster masters: transactions (MULTI typed command by command, WATCH),
 * blocking commands and the shared subscriber connection. Together with the one shared lane per
 * master and the connection a slot-map fetch opens, they never exceed --pool-size: the pins
 * get what is left, `poolSize - masters - 1`, handed out by the same fair gate standalone mode
 * uses (FIFO per kind, a deadline, blocking commands may hold all pins but one).
 *
 * A connection given back clean stays open, idle, for the next pin on the same node; when a
 * pin for another node needs the room, an idle one is closed first. Idle connections count
 * against the bound like busy ones.
 */
export class ClusterPins {
  readonly #gate: PinGate
  readonly #log: Logger
  readonly #options: ClusterPinsOptions
  readonly #idle = new Map<string, UpstreamConnection[]>()
  /** Pinned connections open (busy, idle or being opened). */
  #open = 0
  #nextId = 1_000_000
  #closed = false
  /** Lanes open now (a lane beyond one per master, to a node a redirect named, needs room too). */
  #lanes: () => number = () => 0
  #masters = 0
  pinsTotal = 0
  /** Pins handed to clients, by reason (index as PIN_REASONS: the bit of R_MULTI, R_WATCH …). */
  readonly pinsByReason = new Array<number>(PIN_REASONS.length).fill(0)
  connects = 0
  connectFailures = 0

  constructor (log: Logger, options: ClusterPinsOptions) {
    this.#log = log
    this.#options = options
    this.#gate = new PinGate(1)
  }

  /** Masters known (the slot map changed): the pins get what the lanes and the fetch leave. */
  setMasters (masters: number, lanes: () => number): void {
    this.#masters = masters
    this.#lanes = lanes
    this.#gate.resize(Math.max(1, this.#options.poolSize - masters - 1))
  }

  /**
   * A reload changed --pool-size: the pin budget follows. Pins held beyond a smaller budget stay
   * until given back; idle ones beyond the bound are closed now.
   */
  resize (poolSize: number): void {
    this.#options.poolSize = poolSize
    this.#gate.resize(Math.max(1, poolSize - this.#masters - 1))
    while (this.#open + Math.max(this.#masters, this.#lanes()) + 1 > poolSize && this.idle > 0) this.#closeOneIdle()
  }

  get maxPins (): number {
    return this.#gate.maxPins
  }

  /** Pinned connections open now (busy or idle). */
  get open (): number {
    return this.#open
  }

  get held (): number {
    return this.#gate.held
  }

  /** Pinned connections open and unused (kept for the next holder). */
  get idle (): number {
    let n = 0
    for (const list of this.#idle.values()) n += list.length
    return n
  }

  get waiting (): number {
    return this.#gate.waiting
  }

  /**
   * A connection to `node` for one holder: waits for a permit (at most `deadlineMs`, null = no
   * deadline), then takes an idle connection to that node or opens one. `reason` (an R_* bit)
   * counts a pin for a client's transaction, WATCH, blocking command or shard channels.
   */
  acquire (node: () => ClusterNode | null, deadlineMs: number | null, kind: PinKind = 'short', reason = 0): ClusterPinAcquisition {
    const request = this.#gate.request(deadlineMs, kind)
    let cancelled: ProxyError | null = null
    const promise = request.promise.then(async (permit) => {
      const target = node()
      if (target === null || this.#closed) {
        this.#gate.release(permit)
        throw new UpstreamConnectError(this.#closed ? 'respool is shutting down' : 'CLUSTERDOWN Hash slot not served')
      }
      let conn: UpstreamConnection
      try {
        conn = await this.#connection(target)
      } catch (err) {
        this.#gate.release(permit)
        throw err
      }
      const pin: ClusterPin = { conn, node: target, permit, acquiredAt: performance.now() }
      if (cancelled !== null) {
        this.release(pin, 'clean')
        throw cancelled
      }
      this.pinsTotal++
      if (reason !== 0) this.pinsByReason[31 - Math.clz32(reason)]++
      return pin
    })
    return {
      promise,
      cancel: (err) => {
        cancelled = err
        request.cancel(err)
      }
    }
  }

  /** Gives a pin back: kept idle for its node (after a RESET if `scrub`), or closed. */
  release (pin: ClusterPin, how: ClusterPinRelease): void {
    const { conn } = pin
    conn.detachOwner()
    const keep = (): void => {
      if (this.#closed || !conn.isReady || conn.inflight > 0) {
        this.#drop(conn)
      } else {
        let list = this.#idle.get(pin.node.key)
        if (list === undefined) this.#idle.set(pin.node.key, list = [])
        list.push(conn)
        conn.onClose = () => { this.#forget(pin.node.key, conn) }
      }
      this.#gate.release(pin.permit)
    }
    if (how === 'destroy' || !conn.isReady || conn.inflight > 0) {
      this.#drop(conn)
      this.#gate.release(pin.permit)
      return
    }
    if (how === 'clean') {
      keep()
      return
    }
    conn.scrub().then(keep, (err: Error) => {
      this.#log.debug({ upstream: conn.id, err: err.message }, 'cluster pin scrub failed; connection closed')
      this.#drop(conn)
      this.#gate.release(pin.permit)
    })
  }

  /** Idle connections to nodes that no longer serve slots are closed. */
  retire (masters: ReadonlySet<string>): void {
    for (const [key, list] of this.#idle) {
      if (masters.has(key)) continue
      this.#idle.delete(key)
      for (const conn of list) this.#drop(conn)
    }
  }

  close (): void {
    this.#closed = true
    for (const list of this.#idle.values()) for (const conn of list) this.#drop(conn)
    this.#idle.clear()
    void this.#gate.close()
  }

  async #connection (node: ClusterNode): Promise<UpstreamConnection> {
    const idle = this.#idle.get(node.key)
    while (idle !== undefined && idle.length > 0) {
      const conn = idle.pop() as UpstreamConnection
      conn.onClose = null
      if (conn.isReady) return conn
      this.#drop(conn)
    }
    // The holder has a permit, so busy pins are fewer than the pin budget: if the budget is
    // all open, some of it is idle on other nodes, and one of those makes room.
    if (this.#open + Math.max(this.#masters, this.#lanes()) + 1 >= this.#options.poolSize) this.#closeOneIdle()
    this.#open++
    try {
      const conn = await UpstreamConnection.connect({
        id: this.#nextId++,
        address: node.address,
        connectTimeoutMs: this.#options.connectTimeoutMs,
        commandTimeoutMs: this.#options.commandTimeoutMs
      })
      this.connects++
      return conn
    } catch (err) {
      this.connectFailures++
      this.#open--
      this.#log.warn({ node: node.key, err: (err as Error).message }, 'cannot open a pinned connection to a cluster node')
      throw err
    }
  }

  #closeOneIdle (): void {
    for (const [key, list] of this.#idle) {
      const conn = list.pop()
      if (list.length === 0) this.#idle.delete(key)
      if (conn !== undefined) {
        this.#drop(conn)
        return
      }
    }
  }

  #forget (key: string, conn: UpstreamConnection): void {
    const list = this.#idle.get(key)
    const i = list?.indexOf(conn) ?? -1
    if (list !== undefined && i >= 0) {
      list.splice(i, 1)
      this.#open--
    }
  }

  #drop (conn: UpstreamConnection): void {
    conn.onClose = null
    conn.destroy()
    this.#open--
  }
}
