import { CommandRefusedError, toRespError, type ProxyError } from '../errors.js'
import { blockingTimeoutMs, timeoutReply, withTimeout } from '../commands/blocking.js'
import type { RespCommand } from '../protocol/resp-command.js'
import { command as encodeCommand, errorReply } from '../protocol/resp-encode.js'
import { syncLaneState } from '../routing/lane-state.js'
import type { ClusterDispatcher } from './cluster-dispatcher.js'
import type { ClusterPin, ClusterPinAcquisition, ClusterPinRelease, ClusterPins } from './cluster-pins.js'
import type { ClusterNode } from './cluster-topology.js'
import type { ClusterParking } from './cluster-parking.js'
import { commandSlot } from './keys.js'
import { dropSlot, MAX_REDIRECTS, MAX_RETRIES, parseRedirect, replySlot, RETRY_DELAY_MS, startsWith, type ClusterReply } from './cluster-replies.js'
import { parkable, type Parkable } from '../waiting/parkable.js'
import { R_BLOCKING } from '../client/session-effects.js'
import type { ParkedClient, ParkingLot, Waiter } from '../waiting/parking-lot.js'

/** A parked command whose slot is half-moved (-ASK) parks again this often, at most this many times. */
const ASK_RETRY_MS = 100
const MAX_ASK_RETRIES = 600
/** Redirects of a parked command further apart than this start a new count. */
const REDIRECT_BURST_MS = 5000
const ASKING = encodeCommand(['ASKING'])

/** The client a blocking command belongs to (ClusterClient). */
export interface BlockingHost {
  readonly resp: 2 | 3
  readonly dispatcher: ClusterDispatcher
  readonly pins: ClusterPins
  /** The command is over (answered): the client may run what follows it. */
  finished (blocked: BlockingCommand): void
}

/** A blocking command of one client: parked, or on a pin of its own. */
export interface BlockingCommand {
  go (): void
  /** CLIENT UNBLOCK: ends it now (null), or names the node and connection Redis must unblock. */
  unblock (reply: Buffer): { node: ClusterNode, redisId: string } | null
  /** The client left or reset: it takes nothing. */
  cancel (): void
  /** Waits on a pinned connection of its own now (a parked one never does). */
  readonly holdsPin: boolean
}

/**
 * A blocking command parked in the lot of its slot's master (ClusterParking): no connection of
 * its own. The lot hands it back with a -MOVED when the slot moves away (its try or wake-up
 * transaction was redirected, or the slot map names another owner): it parks again on the new
 * owner with the rest of its timeout, and the client never sees the redirect. A -ASK (the slot
 * is half-moved) parks it again shortly, once the move has settled.
 */
export class ParkedBlocked implements BlockingCommand, ParkedClient {
  readonly #client: BlockingHost
  readonly #parking: ClusterParking
  readonly #slot: number
  readonly #done: ClusterReply
  readonly #timeoutMs: number
  readonly #startedAt = performance.now()
  /** What it runs (a stream command's `$` pinned down to ids once it was first tried). */
  #cmd: RespCommand
  #what: Parkable
  #lot: ParkingLot | null = null
  #waiter: Waiter | null = null
  #timer: NodeJS.Timeout | null = null
  #redirects = 0
  #lastRedirectAt = 0
  #retries = 0
  #over = false
  readonly holdsPin = false

  constructor (client: BlockingHost, parking: ClusterParking, cmd: RespCommand, what: Parkable, slot: number, done: ClusterReply) {
    this.#client = client
    this.#parking = parking
    this.#cmd = cmd
    this.#what = what
    this.#slot = slot
    this.#done = done
    this.#timeoutMs = blockingTimeoutMs(cmd) ?? 0
  }

  go (): void {
    this.#timer = null
    if (this.#over) return
    const left = this.#timeoutMs === 0 ? Infinity : this.#timeoutMs - (performance.now() - this.#startedAt)
    if (left <= 0) {
      this.#finish(timeoutReply(this.#client.resp))
      return
    }
    const topology = this.#client.dispatcher.topology
    const node = topology.nodeFor(this.#slot)
    if (node === null) {
      void topology.refresh('slot not served')
      this.#later(errorReply('CLUSTERDOWN Hash slot not served'), RETRY_DELAY_MS)
      return
    }
    this.#lot = this.#parking.lotFor(node)
    this.#waiter = this.#lot.park(this, this.#cmd, this.#what, 0, this.#client.resp, Number.isFinite(left) ? Math.max(1, left) : 0)
  }

  onParkedReply (reply: Buffer): void {
    const waiter = this.#waiter
    this.#waiter = null
    if (this.#over) return
    const topology = this.#client.dispatcher.topology
    const redirect = parseRedirect(reply, topology)
    if (redirect !== null && waiter !== null) {
      // Nothing was taken: park again, with what the lot pinned down (a stream's `$`).
      const again = parkable(waiter.cmd)
      if (again !== null) {
        this.#cmd = waiter.cmd
        this.#what = again
      }
      if (redirect.kind === 'ASK') {
        this.#later(errorReply(`ERR respool: slot ${redirect.slot} did not finish moving`), ASK_RETRY_MS, MAX_ASK_RETRIES)
        return
      }
      // Redirects count towards the limit while they come in a burst (nodes disagreeing about a
      // slot); a command parked for hours may see many slot moves, each one redirect.
      const now = performance.now()
      if (now - this.#lastRedirectAt > REDIRECT_BURST_MS) this.#redirects = 0
      this.#lastRedirectAt = now
      if (++this.#redirects <= MAX_REDIRECTS) {
        // (A lot that saw the new map hands its waiters back with the map's own owner.)
        if (topology.nodeFor(redirect.slot)?.key !== redirect.node.key) topology.moved(redirect.slot, redirect.node)
        if (this.#redirects <= 2) this.go()
        else this.#timer = setTimeout(() => { this.go() }, Math.min(200, 20 * this.#redirects)).unref()
        return
      }
      this.#finish(errorReply(`ERR respool: more than ${MAX_REDIRECTS} cluster redirections for one command`))
      return
    }
    if (startsWith(reply, '-TRYAGAIN') || startsWith(reply, '-CLUSTERDOWN') || startsWith(reply, '-LOADING')) {
      this.#later(reply, RETRY_DELAY_MS)
      return
    }
    this.#finish(reply)
  }

  /** Parks again after `ms`; after `max` such tries, the client gets `reply`. */
  #later (reply: Buffer, ms: number, max = MAX_RETRIES): void {
    if (++this.#retries > max) {
      this.#finish(reply)
      return
    }
    this.#timer = setTimeout(() => { this.go() }, ms).unref()
  }

  #finish (reply: Buffer): void {
    this.#over = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    this.#client.finished(this)
    this.#done(reply)
  }

  unblock (reply: Buffer): null {
    if (this.#over) return null
    if (this.#waiter !== null && this.#lot !== null && this.#lot.unblock(this.#waiter, reply)) return null // its reply came through onParkedReply
    this.#finish(reply)
    return null
  }

  cancel (): void {
    this.#over = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    if (this.#waiter !== null) this.#lot?.cancel(this.#waiter)
    this.#waiter = null
  }
}

/**
 * A blocking command on a pin of its own, on the master of its slot. A -MOVED/-ASK (the slot
 * moved away while it waited: Redis unblocks it without taking anything) sends it to the new
 * owner with the rest of its timeout; TRYAGAIN/CLUSTERDOWN/LOADING are tried again shortly.
 */
export class Blocked implements BlockingCommand {
  readonly #client: BlockingHost
  readonly #cmd: RespCommand
  readonly #done: ClusterReply
  readonly #timeoutMs: number
  readonly #startedAt = performance.now()
  #acquiring: ClusterPinAcquisition | null = null
  #pin: ClusterPin | null = null
  #redirects = 0
  #retries = 0
  #to: ClusterNode | null = null
  #asking = false
  #over = false
  /** Gives the pin of the command in flight back, once. */
  #release: ((how: ClusterPinRelease) => void) | null = null

  constructor (client: BlockingHost, cmd: RespCommand, done: ClusterReply) {
    this.#client = client
    this.#cmd = cmd
    this.#done = done
    this.#timeoutMs = blockingTimeoutMs(cmd) ?? 0
  }

  get holdsPin (): boolean {
    return this.#pin !== null
  }

  /** Time left of the command's own timeout (Infinity for 0 = forever). */
  #left (): number {
    return this.#timeoutMs === 0 ? Infinity : this.#timeoutMs - (performance.now() - this.#startedAt)
  }

  go (): void {
    if (this.#over) return
    const left = this.#left()
    if (left <= 0) {
      this.#finish(timeoutReply(this.#client.resp))
      return
    }
    const slot = commandSlot(this.#cmd) ?? -1
    const topology = this.#client.dispatcher.topology
    const to = this.#to
    const acquisition = this.#client.pins.acquire(() => to ?? (slot >= 0 ? topology.nodeFor(slot) : topology.anyMaster()), Number.isFinite(left) ? left : null, 'blocking', R_BLOCKING)
    this.#acquiring = acquisition
    acquisition.promise.then((pin) => {
      this.#acquiring = null
      if (this.#over) {
        this.#client.pins.release(pin, 'clean')
        return
      }
      this.#pin = pin
      this.#send(pin)
    }, (err: ProxyError) => {
      this.#acquiring = null
      if (this.#over) return
      // Out of time while waiting for a connection: Redis's own timeout reply.
      if (err.code === 'RESPOOL_ERR_POOL_TIMEOUT' && this.#timeoutMs > 0) this.#finish(timeoutReply(this.#client.resp))
      else this.#retryLater(toRespError(err))
    })
  }

  #send (pin: ClusterPin): void {
    const conn = pin.conn
    syncLaneState(conn, 0, this.#client.resp)
    const left = this.#left()
    const waited = performance.now() - this.#startedAt
    const cmd = Number.isFinite(left) && waited >= 5 ? withTimeout(this.#cmd, left) : this.#cmd
    if (this.#asking) conn.send(ASKING, dropSlot())
    this.#asking = false
    conn.blockingInflight++
    // The reply, or the connection's end (its command then fails too): whichever comes first
    // gives the pin back.
    let released = false
    const release = (how: ClusterPinRelease): void => {
      if (released) return
      released = true
      if (this.#pin === pin) this.#pin = null
      this.#client.pins.release(pin, how)
    }
    this.#release = release
    conn.onClose = () => { release('destroy') }
    conn.send(cmd.frame, replySlot((reply) => {
      conn.blockingInflight--
      release('clean')
      if (this.#over) return
      const redirect = parseRedirect(reply, this.#client.dispatcher.topology)
      if (redirect !== null && ++this.#redirects <= MAX_REDIRECTS) {
        if (redirect.kind === 'MOVED') this.#client.dispatcher.topology.moved(redirect.slot, redirect.node)
        this.#to = redirect.kind === 'ASK' ? redirect.node : null
        this.#asking = redirect.kind === 'ASK'
        this.go()
        return
      }
      if (redirect === null && (startsWith(reply, '-TRYAGAIN') || startsWith(reply, '-CLUSTERDOWN') || startsWith(reply, '-LOADING'))) {
        this.#retryLater(reply)
        return
      }
      this.#finish(redirect !== null ? errorReply(`ERR respool: more than ${MAX_REDIRECTS} cluster redirections for one command`) : reply)
    }))
  }

  #retryLater (reply: Buffer): void {
    if (++this.#retries > MAX_RETRIES) {
      this.#finish(reply)
      return
    }
    this.#to = null
    setTimeout(() => { this.go() }, RETRY_DELAY_MS).unref()
  }

  #finish (reply: Buffer): void {
    this.#over = true
    this.#client.finished(this)
    this.#done(reply)
  }

  /**
   * CLIENT UNBLOCK: a command not on a node yet (waiting for a pin, or between a redirect and
   * the next node) ends now with `reply` (null returned); one blocked on a node names that node
   * and its connection's Redis id, for Redis to unblock it.
   */
  unblock (reply: Buffer): { node: ClusterNode, redisId: string } | null {
    const pin = this.#pin
    if (pin !== null && pin.conn.redisId !== null) return { node: pin.node, redisId: pin.conn.redisId }
    if (!this.#over) {
      this.#acquiring?.cancel(new CommandRefusedError('unblocked'))
      this.#acquiring = null
      if (pin !== null) this.#release?.('destroy')
      this.#finish(reply)
    }
    return null
  }

  /** The client left or reset: a command still blocked must not pop anything for nobody. */
  cancel (): void {
    this.#over = true
    this.#acquiring?.cancel(new CommandRefusedError('client gone'))
    this.#acquiring = null
    if (this.#pin !== null) this.#release?.('destroy')
  }
}
