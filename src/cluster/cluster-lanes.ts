import { PoolTimeoutError, UpstreamConnectError, type ProxyError } from '../errors.js'
import type { Logger } from '../ops/logger.js'
import { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ClusterNode, ClusterTopology } from './cluster-topology.js'

interface Lane {
  conn: UpstreamConnection | null
  opening: Promise<UpstreamConnection> | null
}

/**
 * One shared, pipelined connection per cluster master, opened on first use. Every client's
 * commands for a node go down that node's one lane, so a client's commands to one node keep
 * their order without any bookkeeping (Redis orders per connection).
 *
 * The bound: lanes to all nodes together, plus the one connection the slot-map fetch opens,
 * never exceed --pool-size. A lane for a node that is no longer a master is closed once idle.
 */
export class ClusterLanes {
  readonly #lanes = new Map<string, Lane>()
  readonly #topology: ClusterTopology
  readonly #log: Logger
  readonly #options: { poolSize: number, connectTimeoutMs: number, commandTimeoutMs: number }
  #nextId = 1
  #closed = false
  /** Other connections counted against the same bound (pinned connections). */
  #others: () => number = () => 0
  connects = 0
  connectFailures = 0

  constructor (topology: ClusterTopology, log: Logger, options: { poolSize: number, connectTimeoutMs: number, commandTimeoutMs: number }) {
    this.#topology = topology
    this.#log = log
    this.#options = options
    topology.onChange((masters) => { this.#retire(masters) })
  }

  /** Counts other connections (pins) against --pool-size with the lanes. */
  countWith (others: () => number): void {
    this.#others = others
  }

  /** A reload changed --pool-size (lanes beyond one per master need the room). */
  resize (poolSize: number): void {
    this.#options.poolSize = poolSize
  }

  /** Lanes open or opening. */
  get size (): number {
    return this.#lanes.size
  }

  /** The node's lane when it is ready now, else null (then use open()). */
  ready (node: ClusterNode): UpstreamConnection | null {
    const conn = this.#lanes.get(node.key)?.conn ?? null
    return conn !== null && conn.isReady ? conn : null
  }

  /** The node's lane, opening it if needed. */
  open (node: ClusterNode): Promise<UpstreamConnection> {
    if (this.#closed) return Promise.reject(new UpstreamConnectError('respool is shutting down'))
    let lane = this.#lanes.get(node.key)
    if (lane?.conn !== null && lane?.conn !== undefined) {
      if (lane.conn.isReady) return Promise.resolve(lane.conn)
      this.#lanes.delete(node.key)
      lane = undefined
    }
    if (lane?.opening != null) return lane.opening
    // One connection stays free for the slot-map fetch.
    if (this.#lanes.size + this.#others() + 1 >= this.#options.poolSize) this.#retire(new Set(this.#topology.masters.keys()))
    if (this.#lanes.size + this.#others() + 1 >= this.#options.poolSize) {
      return Promise.reject(new PoolTimeoutError(`pool exhausted: ${this.#lanes.size} cluster nodes already have a connection and --pool-size is ${this.#options.poolSize} (one is kept for the slot-map fetch)`))
    }
    const fresh: Lane = { conn: null, opening: null }
    fresh.opening = UpstreamConnection.connect({
      id: this.#nextId++,
      address: node.address,
      connectTimeoutMs: this.#options.connectTimeoutMs,
      commandTimeoutMs: this.#options.commandTimeoutMs
    }).then((conn) => {
      fresh.opening = null
      if (this.#closed || this.#lanes.get(node.key) !== fresh) {
        conn.destroy()
        throw new UpstreamConnectError(this.#closed ? 'respool is shutting down' : `${node.key} is no longer a cluster master`)
      }
      this.connects++
      fresh.conn = conn
      conn.onClose = () => {
        if (this.#lanes.get(node.key) === fresh) this.#lanes.delete(node.key)
        void this.#topology.refresh('connection lost')
      }
      return conn
    }, (err: ProxyError) => {
      fresh.opening = null
      this.connectFailures++
      if (this.#lanes.get(node.key) === fresh) this.#lanes.delete(node.key)
      this.#log.warn({ node: node.key, err: err.message }, 'cannot connect to cluster node')
      void this.#topology.refresh('connect failed')
      throw err
    })
    this.#lanes.set(node.key, fresh)
    return fresh.opening
  }

  close (): void {
    this.#closed = true
    for (const lane of this.#lanes.values()) lane.conn?.destroy()
    this.#lanes.clear()
  }

  /** Lanes to nodes that no longer serve slots go as soon as nothing is in flight on them. */
  #retire (masters: ReadonlySet<string>): void {
    for (const [key, lane] of this.#lanes) {
      const conn = lane.conn
      if (masters.has(key) || conn === null) continue
      this.#lanes.delete(key)
      conn.onClose = null
      if (conn.inflight === 0) conn.destroy()
      else conn.onIdle = (c) => { c.destroy() }
    }
  }
}
