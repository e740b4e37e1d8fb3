import { describeUpstream, type UpstreamAddress } from '../config.js'
import type { Logger } from '../ops/logger.js'
import type { MasterNode, Topology, TopologyListener, TopologySignal } from './topology.js'

/**
 * One configured address (redis://host:port, rediss://…, unix://…). Each connection resolves the
 * host name again when it connects, so a name that moves (DNS failover, a Kubernetes Service) is
 * followed by new connections. When the node turns out not to be the master any more (-READONLY,
 * or ROLE says replica), a new epoch starts: every open connection is closed, and the next ones
 * resolve the name again.
 */
export class StandaloneTopology implements Topology {
  readonly kind = 'standalone'
  readonly #address: UpstreamAddress
  readonly #log: Logger
  readonly #listeners: TopologyListener[] = []
  #node: MasterNode
  #failovers = 0
  /** A connection of the current epoch reached a master: the next sign of a replica is news. */
  #confirmed = false

  constructor (address: UpstreamAddress, log: Logger) {
    this.#address = address
    this.#log = log
    this.#node = { address, epoch: 0 }
  }

  get epoch (): number {
    return this.#node.epoch
  }

  get master (): MasterNode {
    return this.#node
  }

  get failovers (): number {
    return this.#failovers
  }

  get problem (): string | null {
    return null
  }

  describe (): string {
    return describeUpstream(this.#address)
  }

  async start (): Promise<void> {}

  async waitForMaster (): Promise<MasterNode> {
    return this.#node
  }

  report (signal: TopologySignal, epoch: number, detail: string): void {
    if (epoch !== this.#node.epoch || (signal !== 'readonly' && signal !== 'replica')) return
    // A replica refusing every new connection is one event, not one per attempt.
    if (!this.#confirmed && signal === 'replica') return
    this.#confirmed = false
    const previous = this.#node
    this.#node = { address: this.#address, epoch: previous.epoch + 1 }
    this.#failovers++
    const reason = `${describeUpstream(this.#address)} is not the master any more (${detail})`
    this.#log.warn({ upstream: this.describe(), reason }, 'upstream is no longer the master: closing every upstream connection; new connections resolve the address again')
    for (const listener of this.#listeners) listener(previous, this.#node, reason)
  }

  confirmed (epoch: number): void {
    if (epoch === this.#node.epoch) this.#confirmed = true
  }

  onChange (listener: TopologyListener): void {
    this.#listeners.push(listener)
  }

  close (): void {}
}
