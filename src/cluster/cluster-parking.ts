import calculateSlot from 'cluster-key-slot'
import type { PinKind } from '../routing/pin-gate.js'
import type { LaneWaiter, PinRelease } from '../routing/router.js'
import { errorReply } from '../protocol/resp-encode.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { Logger } from '../ops/logger.js'
import type { ProxyError } from '../errors.js'
import { ParkingLot, type ParkingStats, type ParkingView } from '../waiting/parking-lot.js'
import type { ParkingPin, ParkingPinAcquisition, ParkingUpstream } from '../waiting/parking-upstream.js'
import type { ClusterLanes } from './cluster-lanes.js'
import type { ClusterPin, ClusterPins } from './cluster-pins.js'
import type { ClusterNode, ClusterTopology } from './cluster-topology.js'

/** While waiters are parked, the slot map is fetched this often (a slot that moves tells the lot nothing). */
const PARKED_REFRESH_MS = 1000

/**
 * Parked blocking commands in cluster mode: one ParkingLot per master, on that master's shared
 * lane (tries and wake-up transactions) and pins of the cluster's budget (its key tracker, or
 * blocking watchers where tracking cannot be had). Keys are grouped by hash slot: a Redis
 * Cluster node runs a transaction, a script or a blocking wait on keys of one slot only, so
 * each lot watches and serves one slot at a time. Lists and sorted sets are watched through
 * CLIENT TRACKING from the first key on (one connection per master, however many slots are
 * waited on); streams by a blocking XREAD per slot while the lot's share of pins allows, by a
 * poll beyond.
 *
 * A slot that moves away from a lot's master (a new slot map, a -MOVED) hands its waiters back
 * with a -MOVED naming the new owner: their cluster client parks them again there, with the
 * rest of their timeout (see ParkedBlocked in cluster-client.ts).
 */
export class ClusterParking implements ParkingView {
  readonly #lots = new Map<string, { node: ClusterNode, lot: ParkingLot }>()
  readonly #topology: ClusterTopology
  readonly #lanes: ClusterLanes
  readonly #pins: ClusterPins
  readonly #log: Logger
  readonly #observeWake: (seconds: number) => void
  readonly #refreshTimer: NodeJS.Timeout
  #closed = false
  #checking = false
  #checkAgain = false

  constructor (topology: ClusterTopology, lanes: ClusterLanes, pins: ClusterPins, log: Logger, observeWake: (seconds: number) => void = () => {}) {
    this.#topology = topology
    this.#lanes = lanes
    this.#pins = pins
    this.#log = log
    this.#observeWake = observeWake
    topology.onSlots(() => { this.#checkOwners() })
    this.#refreshTimer = setInterval(() => {
      if (this.stats.parked > 0) void topology.refresh('parked waiters')
    }, PARKED_REFRESH_MS)
    this.#refreshTimer.unref()
  }

  /** The lot of `node` (made on first use). */
  lotFor (node: ClusterNode): ParkingLot {
    let entry = this.#lots.get(node.key)
    if (entry === undefined) {
      const upstream = new MasterUpstream(node, this.#lanes, this.#pins, () => this.#watcherShare())
      const lot = new ParkingLot(upstream, this.#log, this.#observeWake, {
        groupOf: (key) => calculateSlot(key),
        trackFrom: 1,
        redirected: (reply) => { this.#redirected(reply) }
      })
      entry = { node, lot }
      this.#lots.set(node.key, entry)
    }
    return entry.lot
  }

  /**
   * Watcher pins one lot may hold: the pin budget but one (for transactions and commands that
   * keep the pinned path), shared evenly by the masters. 0 with a pool too small for one each:
   * then waiters are found by polling.
   */
  #watcherShare (): number {
    return Math.floor((this.#pins.maxPins - 1) / Math.max(1, this.#topology.masters.size))
  }

  /** A watcher's wait or a tracker's read was redirected: the map learns it, the lots follow. */
  #redirected (reply: Buffer): void {
    const m = /^-(?:MOVED|ASK) (\d+) (\S*):(\d+)\r\n/.exec(reply.toString('latin1', 0, Math.min(reply.length, 300)))
    if (m === null) return
    if (reply.toString('latin1', 1, 6) === 'MOVED') this.#topology.moved(Number(m[1]), this.#topology.node(m[2] === '' ? '127.0.0.1' : m[2], Number(m[3])))
    else void this.#topology.refresh('ASK to a parked watcher')
  }

  /**
   * Waiters on slots whose owner is no longer their lot's master are handed back, longest
   * waiting first. A waiter handed back may learn of a move itself (topology.moved calls this
   * again): that round runs after this one, so the order of a slot's waiters is kept.
   */
  #checkOwners (): void {
    if (this.#closed) return
    if (this.#checking) {
      this.#checkAgain = true
      return
    }
    this.#checking = true
    try {
      do {
        this.#checkAgain = false
        for (const { node, lot } of this.#lots.values()) {
          for (const slot of lot.groups()) {
            const owner = this.#topology.nodeFor(slot)
            if (owner === null || owner.key === node.key) continue
            lot.evict(slot, errorReply(`MOVED ${slot} ${owner.host}:${owner.port}`))
          }
        }
      } while (this.#checkAgain)
    } finally {
      this.#checking = false
    }
  }

  get stats (): ParkingStats {
    const sum: ParkingStats = { parked: 0, trying: 0, putBacksInFlight: 0, parkedTotal: 0, wokenTotal: 0, timedOutTotal: 0, putBackTotal: 0, watchers: 0 }
    for (const { lot } of this.#lots.values()) {
      const s = lot.stats
      for (const k of Object.keys(sum) as Array<keyof ParkingStats>) sum[k] += s[k]
    }
    return sum
  }

  get tracking (): { state: string, watched: number, reads: number, invalidations: number } {
    const out = { state: 'idle', watched: 0, reads: 0, invalidations: 0 }
    const states = new Set<string>()
    for (const { lot } of this.#lots.values()) {
      const t = lot.tracking
      states.add(t.state)
      out.watched += t.watched
      out.reads += t.reads
      out.invalidations += t.invalidations
    }
    // One word for all masters: the most telling state any of them is in (unavailable first).
    for (const state of ['ready', 'starting', 'unavailable']) if (states.has(state)) out.state = state
    return out
  }

  get parkedByCommand (): ReadonlyMap<string, number> {
    const out = new Map<string, number>()
    for (const { lot } of this.#lots.values()) for (const [name, n] of lot.parkedByCommand) out.set(name, (out.get(name) ?? 0) + n)
    return out
  }

  #sum (field: 'parkedTotal' | 'wokenTotal' | 'timedOutTotal' | 'putBackTotal' | 'lostTotal' | 'unknownTotal'): number {
    let n = 0
    for (const { lot } of this.#lots.values()) n += lot[field]
    return n
  }

  get parkedTotal (): number { return this.#sum('parkedTotal') }
  get wokenTotal (): number { return this.#sum('wokenTotal') }
  get timedOutTotal (): number { return this.#sum('timedOutTotal') }
  get putBackTotal (): number { return this.#sum('putBackTotal') }
  get lostTotal (): number { return this.#sum('lostTotal') }
  get unknownTotal (): number { return this.#sum('unknownTotal') }

  settledWaits (): number | null {
    let n = 0
    for (const { lot } of this.#lots.values()) {
      const waits = lot.settledWaits()
      if (waits === null) return null
      n += waits
    }
    return n
  }

  close (): void {
    this.#closed = true
    clearInterval(this.#refreshTimer)
    for (const { lot } of this.#lots.values()) lot.close()
  }
}

/** One master as a parking lot's upstream: its shared lane, and pins to it from the cluster's budget. */
class MasterUpstream implements ParkingUpstream {
  readonly #node: ClusterNode
  readonly #lanes: ClusterLanes
  readonly #pins: ClusterPins
  readonly #share: () => number

  constructor (node: ClusterNode, lanes: ClusterLanes, pins: ClusterPins, share: () => number) {
    this.#node = node
    this.#lanes = lanes
    this.#pins = pins
    this.#share = share
  }

  get maxPins (): number {
    return this.#share() + 2
  }

  pickLane (_db: number, _resp: number): UpstreamConnection | null {
    return this.#lanes.ready(this.#node)
  }

  waitForLane (waiter: LaneWaiter): void {
    this.#lanes.open(this.#node).then(() => { waiter.laneReady() }, (err: ProxyError) => { waiter.laneFailed(err) })
  }

  acquirePin (deadlineMs: number | null, kind: PinKind): ParkingPinAcquisition {
    return this.#pins.acquire(() => this.#node, deadlineMs, kind)
  }

  releasePin (pin: ParkingPin, how: PinRelease): void {
    this.#pins.release(pin as ClusterPin, how)
  }
}
