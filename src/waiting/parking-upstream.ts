import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { PinKind } from '../routing/pin-gate.js'
import type { LaneWaiter, PinRelease } from '../routing/router.js'
import type { ProxyError } from '../errors.js'

/** A connection held by a parking lot's watcher or key tracker. */
export interface ParkingPin {
  readonly conn: UpstreamConnection
}

export interface ParkingPinAcquisition {
  promise: Promise<ParkingPin>
  cancel (err: ProxyError): void
}

/**
 * What a parking lot needs of the upstream it parks commands on: shared lanes for its tries and
 * wake-up transactions, and pinned connections for its watchers and key tracker. The Router is
 * one (standalone mode); in cluster mode each master's lot gets one for that master's lane and
 * a share of the cluster's pins.
 */
export interface ParkingUpstream {
  /** Pins the lot may use: its watchers hold at most `maxPins - 2` (see ParkingLot#rearm). */
  readonly maxPins: number
  /** A shared lane for `db`/`resp` now, or null (then waitForLane). */
  pickLane (db: number, resp: number): UpstreamConnection | null
  waitForLane (waiter: LaneWaiter): void
  acquirePin (deadlineMs: number | null, kind: PinKind): ParkingPinAcquisition
  releasePin (pin: ParkingPin, how: PinRelease): void
}
