import { CommandRefusedError, type ProxyError } from '../errors.js'
import { errorReply } from '../protocol/resp-encode.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ClusterPin, ClusterPinAcquisition, ClusterPinRelease, ClusterPins } from './cluster-pins.js'
import type { ClusterNode } from './cluster-topology.js'
import { failedConn } from './cluster-replies.js'

/**
 * The pinned connection of one transaction. Commands for it wait in order until it is
 * acquired and confirmed (its first command was not redirected); if none can be had, each gets
 * the error. Released once: to the pins (scrubbed), or closed if it failed.
 */
export class PinHandle {
  readonly #pins: ClusterPins
  readonly #onLost: () => void
  #pin: ClusterPin | null = null
  #acquisition: ClusterPinAcquisition | null = null
  #queue: Array<(conn: UpstreamConnection) => void> = []
  #confirmed = false
  #failed: Buffer | null = null
  released = false
  /** The node imports the slot (an -ASK sent the transaction there): ASKING precedes MULTI and commands outside it. */
  asking = false

  constructor (pins: ClusterPins, onLost: () => void) {
    this.#pins = pins
    this.#onLost = onLost
  }

  /** Pins a connection to `node`; `first` writes the commands that decide whether it is the right node. */
  acquire (node: () => ClusterNode | null, deadlineMs: number, reason: number, first: (conn: UpstreamConnection) => void, failed: (err: ProxyError) => void): void {
    const acquisition = this.#pins.acquire(node, deadlineMs, 'short', reason)
    this.#acquisition = acquisition
    acquisition.promise.then((pin) => {
      this.#acquisition = null
      if (this.released) {
        this.#pins.release(pin, 'clean')
        return
      }
      this.#pin = pin
      pin.conn.onClose = () => { this.#lost(pin) }
      first(pin.conn)
    }, (err: ProxyError) => {
      this.#acquisition = null
      if (this.released) return
      this.released = true
      this.#failed = errorReply(`ERR respool: ${err.message}`)
      failed(err)
      this.#flush(failedConn(this.#failed))
    })
  }

  /** The first command was not redirected: everything waiting goes out, in order. */
  confirm (): void {
    this.#confirmed = true
    if (this.#pin !== null) this.#flush(this.#pin.conn)
  }

  /** A redirect: this connection goes back, and the handle waits for the next one. */
  unpin (how: ClusterPinRelease): void {
    const pin = this.#pin
    this.#pin = null
    if (pin !== null) this.#pins.release(pin, how)
  }

  send (write: (conn: UpstreamConnection) => void): void {
    if (this.#failed !== null) write(failedConn(this.#failed))
    else if (this.#confirmed && this.#pin !== null && this.#queue.length === 0) write(this.#pin.conn)
    else this.#queue.push(write)
  }

  release (how: ClusterPinRelease): void {
    if (this.released) return
    this.released = true
    this.#acquisition?.cancel(new CommandRefusedError('transaction ended'))
    this.#acquisition = null
    const pin = this.#pin
    this.#pin = null
    if (pin !== null) this.#pins.release(pin, how)
    this.#flush(failedConn(errorReply('ERR respool: transaction ended')))
  }

  #flush (conn: UpstreamConnection): void {
    const queue = this.#queue
    this.#queue = []
    for (const write of queue) write(conn)
  }

  #lost (pin: ClusterPin): void {
    if (this.#pin !== pin) return
    this.#pin = null
    this.released = true
    this.#pins.release(pin, 'destroy')
    this.#failed = errorReply('ERR respool: cluster node connection lost during the transaction')
    this.#flush(failedConn(this.#failed))
    this.#onLost()
  }
}
