import { createPool, type Pool } from 'generic-pool'
import { setTimeout as sleep } from 'node:timers/promises'
import { UpstreamConnection } from './upstream-connection.js'
import { NoMasterError, PoolTimeoutError, UpstreamClosedError, UpstreamConnectError, UpstreamReplicaError, type ProxyError } from '../errors.js'
import type { ProxyConfig } from '../config.js'
import type { Topology } from './topology.js'
import type { Logger } from '../ops/logger.js'
import { fetchServerInfo, UNKNOWN_SERVER, type ServerInfo } from './server-info.js'
import type { IdleLender } from './identity-pool.js'

export interface PoolStats {
  /** Upstream connections open or opening (never above `max`). */
  size: number
  max: number
  /** Open and not lent to anyone. */
  available: number
  /** Lent out (shared lanes and pins). */
  borrowed: number
  /** acquire() calls waiting for a connection. */
  waiting: number
}

export type ConnectionFactory = (id: number) => Promise<UpstreamConnection>

/**
 * The hard bound on upstream connections. `generic-pool` owns the bound, connection creation,
 * validation on borrow, idle eviction and the waiting queue with its deadline; this class adds
 * what a Redis upstream needs on top: reconnect backoff and errors that say why a wait failed.
 *
 * generic-pool retries a failed create immediately while anyone waits, so the factory itself
 * sleeps (exponential backoff with jitter) before each attempt that follows a failure: a dead
 * Redis costs a few connection attempts per second, not a tight loop.
 *
 * Where connections go is the topology's decision. Each connection belongs to the topology epoch
 * it was opened in; when the epoch moves on (the master changed), every older connection is
 * closed at once, lent or idle, before anything else is written, and only connections of the
 * current epoch are lent out. The pool tells the topology what connections see: a replica's
 * error reply, a lost connection, a node that says it is a replica or cannot be reached.
 */
export class UpstreamPool {
  readonly #pool: Pool<UpstreamConnection>
  readonly #config: ProxyConfig
  readonly #log: Logger
  #nextId = 1
  #failures = 0
  #lastError: ProxyError | null = null
  #connects = 0
  #connectFailures = 0
  #serverInfo: ServerInfo | null = null
  /** Aborts backoff sleeps on close, so close() never waits for a retry that will not happen. */
  readonly #closing = new AbortController()
  readonly #topology: Topology
  /** Every connection opened (closed ones are pruned as new ones open). */
  readonly #all = new Set<UpstreamConnection>()
  #serverInfoEpoch = -1
  /** Ends a backoff sleep early when the master changes (the new one deserves a prompt try) or on close. */
  #backoff = new AbortController()
  /** Routers holding shared lanes, which they give back on their own only after a while idle. */
  readonly #lenders = new Set<IdleLender>()

  constructor (config: ProxyConfig, log: Logger, topology: Topology, factory?: ConnectionFactory) {
    this.#config = config
    this.#log = log
    this.#topology = topology
    const open: ConnectionFactory = factory ?? (async (id) => {
      const node = await topology.waitForMaster(config.connectTimeoutMs, this.#closing.signal)
      const conn = await UpstreamConnection.connect({
        id,
        address: node.address,
        connectTimeoutMs: config.connectTimeoutMs,
        commandTimeoutMs: config.commandTimeoutMs,
        requireMaster: true
      })
      conn.epoch = node.epoch
      return conn
    })
    this.#pool = createPool<UpstreamConnection>({
      create: async () => await this.#create(open, factory !== undefined),
      destroy: async (conn) => { conn.destroy() },
      validate: async (conn) => conn.isReady && conn.epoch === topology.epoch
    }, {
      max: config.poolSize,
      min: config.minIdle,
      testOnBorrow: true,
      acquireTimeoutMillis: config.acquireTimeoutMs,
      idleTimeoutMillis: config.upstreamIdleTimeoutMs,
      evictionRunIntervalMillis: Math.min(1000, config.upstreamIdleTimeoutMs),
      // Reuse the most recently returned connection: it is the one most likely still warm.
      fifo: false,
      priorityRange: 2,
      autostart: true
    })
    // Failures are logged in #create; the event only needs a listener so it is not unhandled.
    this.#pool.on('factoryCreateError', () => {})
    topology.onChange((previous, _next, reason) => { this.#onTopologyChange(previous === null ? null : reason) })
  }

  /**
   * A new epoch: nothing more is written to any connection of an older one, and each is closed
   * (see UpstreamConnection.retire): commands that never left respool go back to their clients to
   * be sent again; commands in flight fail, except on a connection where the node itself said it
   * is a replica, whose replies are read first. Holders see their connection close as on any
   * failure: lanes go, pinned clients in a transaction or subscription are disconnected,
   * watchers re-arm.
   */
  #onTopologyChange (reason: string | null): void {
    const epoch = this.#topology.epoch
    this.#failures = 0
    this.#lastError = null
    this.#backoff.abort()
    this.#backoff = new AbortController()
    if (reason === null) return
    for (const conn of [...this.#all]) {
      if (conn.epoch === epoch) continue
      this.#all.delete(conn)
      conn.retire(new UpstreamClosedError(`the master changed (${reason}); connection to the old master closed, the command may or may not have run`))
    }
  }

  /**
   * Waits (up to the acquire deadline) for a connection of one's own. Priority 0 (pins) is
   * served before priority 1 (growing the shared lanes).
   */
  async acquire (priority: 0 | 1 = 0, requester?: IdleLender): Promise<UpstreamConnection> {
    if (this.#closing.signal.aborted) throw new UpstreamConnectError('respool is shutting down')
    const started = performance.now()
    // Full, and nothing free: the connections may be idle shared lanes of some router (respool's
    // own or an ACL user's), kept until they have idled for a while. Waiting for that would hold
    // up this acquire (an AUTH check, a pin, another user's lane) for seconds, or past its
    // deadline, with the pool doing nothing: ask for one back now. (In a microtask: whoever
    // called is done with its stack, so no lane can be taken from between a pick and a send.)
    queueMicrotask(() => {
      if (this.#pool.available === 0 && this.#pool.spareResourceCapacity <= 0 && this.#pool.pending > 0) this.#reclaimIdle(requester)
    })
    try {
      return await this.#pool.acquire(priority)
    } catch (err) {
      if (err instanceof UpstreamConnectError && this.#closing.signal.aborted) throw err
      throw this.#explain(err as Error, performance.now() - started)
    }
  }

  addLender (lender: IdleLender): void {
    this.#lenders.add(lender)
  }

  removeLender (lender: IdleLender): void {
    this.#lenders.delete(lender)
  }

  /** One idle connection back from a lender other than the one asking, if any has one. */
  #reclaimIdle (requester: IdleLender | undefined): void {
    for (const lender of this.#lenders) {
      if (lender !== requester && lender.giveBackIdle()) return
    }
  }

  /** Gives back a connection in the pool's default state. */
  release (conn: UpstreamConnection): void {
    conn.detachOwner()
    if (!conn.isReady) {
      this.destroy(conn)
      return
    }
    if (this.#pool.isBorrowedResource(conn)) void this.#pool.release(conn)
  }

  /** Gives back a connection that must not be reused (closed, or in an unknown state). */
  destroy (conn: UpstreamConnection): void {
    conn.detachOwner()
    conn.destroy()
    if (this.#pool.isBorrowedResource(conn)) void this.#pool.destroy(conn)
  }

  /** Changes the bound and the acquire deadline of a running pool (RESPOOL RELOAD). */
  resize (max: number, acquireTimeoutMs: number): void {
    resizeGenericPool(this.#pool, { max, acquireTimeoutMillis: acquireTimeoutMs })
  }

  get stats (): PoolStats {
    return {
      size: this.#pool.size,
      max: this.#pool.max,
      available: this.#pool.available,
      borrowed: this.#pool.borrowed,
      waiting: this.#pool.pending
    }
  }

  /** What the upstream said about itself (version, mode, databases); defaults until known. */
  get serverInfo (): ServerInfo {
    return this.#serverInfo ?? UNKNOWN_SERVER
  }

  get serverInfoKnown (): boolean {
    return this.#serverInfo !== null
  }

  /** Connections opened and attempts that failed since start. */
  get counters (): { connects: number, connectFailures: number } {
    return { connects: this.#connects, connectFailures: this.#connectFailures }
  }

  /** The last connection failure, while the upstream is failing (null once a connect succeeds). */
  get lastError (): ProxyError | null {
    return this.#lastError
  }

  /** Closes idle connections and refuses new acquires; lent connections are closed by their holders. */
  async close (): Promise<void> {
    this.#closing.abort()
    this.#backoff.abort()
    // Whoever still waits fails now: nothing more is created for them, and drain() need not
    // wait for their deadlines (up to --acquire-timeout).
    rejectGenericPoolWaiters(this.#pool, new UpstreamConnectError('respool is shutting down'))
    await this.#pool.drain()
    await this.#pool.clear()
  }

  async #create (open: ConnectionFactory, injected: boolean): Promise<UpstreamConnection> {
    if (this.#failures > 0 && !this.#closing.signal.aborted) {
      const ceiling = Math.min(this.#config.reconnectMaxMs, this.#config.reconnectBaseMs * 2 ** (this.#failures - 1))
      await sleep(ceiling / 2 + Math.random() * ceiling / 2, undefined, { ref: false, signal: this.#backoff.signal }).catch(() => {})
    }
    if (this.#closing.signal.aborted) {
      // generic-pool answers a failed create with another create for as long as anyone waits,
      // from a promise callback, so failing here while someone waits would loop without ever
      // yielding to the event loop (and the waiters' deadline timers could never end it).
      // close() already failed the waiters; make sure of it.
      rejectGenericPoolWaiters(this.#pool, new UpstreamConnectError('respool is shutting down'))
      throw new UpstreamConnectError('respool is shutting down')
    }
    const id = this.#nextId++
    const epoch = this.#topology.epoch
    try {
      const conn = await this.#open(open, id, injected)
      // Learned from the first connection (again after a failure or a failover, in case Redis was replaced).
      if (this.#serverInfo === null || this.#failures > 0 || this.#serverInfoEpoch !== conn.epoch) {
        this.#serverInfo = await fetchServerInfo(conn)
        this.#serverInfoEpoch = conn.epoch
      }
      if (this.#failures > 0) this.#log.info({ upstream: this.#topology.describe() }, 'upstream reachable again')
      this.#failures = 0
      this.#lastError = null
      this.#connects++
      return conn
    } catch (err) {
      this.#failures++
      this.#connectFailures++
      this.#lastError = err as ProxyError
      if (this.#failures === 1 || this.#failures % 20 === 0) {
        this.#log.warn({ upstream: this.#topology.describe(), attempt: this.#failures, err: (err as Error).message }, 'cannot connect to upstream; retrying with backoff')
      }
      if (err instanceof UpstreamReplicaError) this.#topology.report('replica', epoch, err.message)
      else if (!(err instanceof NoMasterError)) this.#topology.report('unreachable', epoch, (err as Error).message)
      throw err
    }
  }

  /**
   * Opens a connection for the current epoch. One that was opening while the master changed is
   * closed unused and opened again (to the new master).
   */
  async #open (open: ConnectionFactory, id: number, injected: boolean): Promise<UpstreamConnection> {
    for (let attempt = 0; ; attempt++) {
      const epoch = this.#topology.epoch
      const conn = await open(id)
      if (injected) conn.epoch = epoch
      if (conn.epoch === this.#topology.epoch) {
        for (const old of this.#all) if (!old.isReady) this.#all.delete(old)
        this.#all.add(conn)
        conn.onSignal = (c, signal) => {
          // The node is a replica: every connection to it runs no more writes, so each may
          // finish reading the replies due on it when the topology moves on (retire).
          if (signal === 'readonly') for (const other of this.#all) if (other.epoch === c.epoch && other.peer === c.peer) other.markReplica()
          this.#topology.report(signal, c.epoch, `connection ${c.id}: ${signal === 'lost' ? 'closed by the server' : 'a replica\'s error reply'}`)
        }
        this.#topology.confirmed(conn.epoch)
        return conn
      }
      conn.destroy()
      if (attempt >= 2 || this.#closing.signal.aborted) throw new UpstreamConnectError('the master kept changing while connecting')
    }
  }

  #explain (err: Error, waitedMs: number): ProxyError {
    const waited = Math.round(waitedMs)
    if (this.#lastError !== null) {
      return new UpstreamConnectError(`upstream ${this.#topology.describe()} unavailable (${this.#lastError.message}), waited ${waited} ms`)
    }
    const problem = this.#topology.problem
    if (problem !== null) return new NoMasterError(`upstream ${this.#topology.describe()} unavailable (${problem}), waited ${waited} ms`)
    if (err.name === 'TimeoutError') {
      return new PoolTimeoutError(`pool exhausted: all ${this.#config.poolSize} upstream connections busy, waited ${waited} ms`)
    }
    return new PoolTimeoutError(`no upstream connection: ${err.message}`)
  }
}

/**
 * generic-pool 3 has no public way to change `max` (or the acquire deadline) of a running pool.
 * Its options live in `_config`, read on every dispense, so setting them there and dispensing
 * once is enough: a larger pool serves waiters at once; a smaller one stops creating and
 * shrinks as connections are given back and evicted. Kept in this one function because it
 * touches generic-pool internals (pinned by package-lock; covered by the reload test).
 */
export function resizeGenericPool (pool: Pool<unknown>, options: { max: number, acquireTimeoutMillis?: number }): void {
  const internals = pool as unknown as { _config: { max: number, acquireTimeoutMillis?: number }, _dispense: () => void }
  internals._config.max = options.max
  if (options.acquireTimeoutMillis !== undefined) internals._config.acquireTimeoutMillis = options.acquireTimeoutMillis
  internals._dispense()
}

/**
 * Fails every acquire still waiting in a generic-pool 3 pool, taking each out of its queue so
 * nothing is created for it any more. generic-pool has no public way to do this; like
 * resizeGenericPool, it is confined to this function and covered by tests.
 */
function rejectGenericPoolWaiters (pool: Pool<UpstreamConnection>, err: Error): void {
  const queue = (pool as unknown as { _waitingClientsQueue: { dequeue: () => { reject: (err: Error) => void } | undefined } })._waitingClientsQueue
  for (let request = queue.dequeue(); request !== undefined; request = queue.dequeue()) request.reject(err)
}
