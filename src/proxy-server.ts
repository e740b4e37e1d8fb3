import net from 'node:net'
import tls from 'node:tls'
import { readFileSync, rmSync } from 'node:fs'
import { once } from 'node:events'
import { setTimeout as delay } from 'node:timers/promises'
import { ClientSession, type SessionContext } from './client/client-session.js'
import { ParkingLot, type ParkingView } from './waiting/parking-lot.js'
import { ClusterParking } from './cluster/cluster-parking.js'
import { ClientMemoryBudget } from './ops/client-memory.js'
import { Identities } from './routing/identities.js'
import { PubsubHub } from './pubsub/pubsub-hub.js'
import { Router } from './routing/router.js'
import { UpstreamPool, type ConnectionFactory, type PoolStats } from './upstream/upstream-pool.js'
import { ProxyStats } from './ops/proxy-stats.js'
import { validateConfig, type ProxyConfig, type ProxyOptions } from './config.js'
import type { Topology } from './upstream/topology.js'
import { StandaloneTopology } from './upstream/standalone-topology.js'
import { SentinelTopology } from './upstream/sentinel-topology.js'
import { errorReply } from './protocol/resp-encode.js'
import { silentLogger, type Logger } from './ops/logger.js'
import { Metrics } from './ops/metrics.js'
import { upstreamUse } from './ops/upstream-figures.js'
import { createAdminHandler } from './ops/admin.js'
import { startHttpEndpoints } from './ops/http-endpoints.js'
import { PIN_REASONS } from './ops/proxy-stats.js'
import type http from 'node:http'
import type { Credentials } from './commands/local-commands.js'
import { ClusterTopology } from './cluster/cluster-topology.js'
import { ClusterLanes } from './cluster/cluster-lanes.js'
import { ClusterDispatcher } from './cluster/cluster-dispatcher.js'
import { ClusterPins } from './cluster/cluster-pins.js'
import { clusterHub, type ClusterHub } from './cluster/cluster-pubsub.js'
import { ConfigError } from './errors.js'
import { fetchServerInfo, type ServerInfo } from './upstream/server-info.js'

export interface ProxyServerOptions {
  logger?: Logger
  /** Replaces how upstream connections are opened (tests inject faults here). */
  connectionFactory?: ConnectionFactory
  /**
   * Client IDs handed out: first, first + step, … (default 1, 2, …). Workers interleave theirs
   * (worker k of n: k + 1, k + 1 + n, …) so an ID is unique across processes.
   */
  clientIds?: { first: number, step: number }
  /** Serve --metrics-port here (default true; a worker leaves it to the primary). */
  serveHttp?: boolean
  /** Remove a stale --unix-socket file before listening (default true; with workers the primary does it once). */
  removeStaleSocket?: boolean
}

/** The other processes serving the same listener (--workers), for admin commands meant for all. */
export interface Peers {
  pause: (ms: number) => void
  resume: () => void
  reload: () => void
}

export interface ServerStats {
  clients: number
  lanes: number
  pins: number
  pool: PoolStats
  commands: number
  commandErrors: number
}

/** What a reload changed, and what it could not change without a restart. */
export interface ReloadResult {
  applied: string[]
  needsRestart: string[]
}

/** Settings a running proxy can change safely (RESPOOL RELOAD, SIGHUP). */
const RELOADABLE = ['poolSize', 'maxPins', 'acquireTimeoutMs', 'maxClients', 'maxPipeline', 'outputLimits', 'maxMemoryClients',
  'maxBulkLength', 'maxMultibulkLength', 'maxInlineLength', 'clientIdleTimeoutMs', 'shutdownGraceMs', 'logLevel', 'denyCommands'] as const

/** Reloadable settings that every connected client takes over at once (not only new ones). */
const SESSION_LIMITS = new Set<string>(['maxBulkLength', 'maxMultibulkLength', 'maxInlineLength', 'clientIdleTimeoutMs', 'outputLimits'])

/**
 * Accepts client connections, owns the sessions, the router and the upstream pool, and runs
 * the lifecycle: listen(), close() (graceful), destroy() (immediate). Both closing calls are
 * idempotent and later calls join the first.
 */
export class ProxyServer {
  readonly config: ProxyConfig
  readonly log: Logger
  /** Which node upstream connections go to (the configured one, or the master the sentinels name). */
  readonly topology: Topology
  readonly pool: UpstreamPool
  readonly router: Router
  readonly stats = new ProxyStats()
  /** Blocking commands waiting without a connection (null with --park-blocking no); in cluster mode, every master's lot. */
  readonly parking: ParkingView | null
  /** The budget for reply bytes held for all clients (--maxmemory-clients). */
  readonly memory: ClientMemoryBudget
  /** Redis ACL users' connections (AUTH checked by Redis when respool authenticates nobody itself). */
  readonly identities: Identities
  /** Channel and pattern subscriptions on a shared subscriber connection (null: pinned per client). */
  readonly pubsub: PubsubHub | null
  readonly metrics: Metrics
  /** Cluster mode (--cluster): the slot map, one lane per master, and the routing (null otherwise). */
  readonly cluster: ClusterDispatcher | null
  /** Cluster mode: pinned connections (transactions, blocking commands, the subscriber connection). */
  readonly clusterPins: ClusterPins | null
  #clusterInfo: ServerInfo | null = null
  readonly #server: net.Server
  #httpServer: http.Server | null = null
  #paused = false
  #pauseTimer: NodeJS.Timeout | null = null
  /** Once a second: soft output limits of clients that hold output (they may get no more writes). */
  readonly #outputCheck: NodeJS.Timeout
  readonly #pausedSessions = new Set<ClientSession>()
  /** Where RESPOOL RELOAD and SIGHUP read the configuration from (the CLI sets it). */
  reloadSource: (() => Promise<ProxyOptions>) | null = null
  #unixServer: net.Server | null = null
  readonly #sessions = new Set<ClientSession>()
  readonly #ctx: SessionContext
  #nextSessionId: number
  readonly #sessionIdStep: number
  readonly #serveHttp: boolean
  readonly #removeStaleSocket: boolean
  /** Set in a worker: RESPOOL PAUSE, RESUME and RELOAD are passed on to the other workers. */
  peers: Peers | null = null
  /** Protected mode is in force: no client authentication is configured. */
  readonly #protected: boolean
  #closing: Promise<void> | null = null
  /** True from the first close() on: readiness probes fail first, new clients are refused. */
  draining = false

  constructor (options: ProxyOptions | ProxyConfig = {}, serverOptions: ProxyServerOptions = {}) {
    this.config = validateConfig(options as ProxyOptions)
    this.log = serverOptions.logger ?? silentLogger()
    this.#nextSessionId = serverOptions.clientIds?.first ?? 1
    this.#sessionIdStep = serverOptions.clientIds?.step ?? 1
    this.#serveHttp = serverOptions.serveHttp ?? true
    this.#removeStaleSocket = serverOptions.removeStaleSocket ?? true
    this.topology = createTopology(this.config, this.log)
    // In cluster mode the single-upstream pool is never used: it must not open anything itself.
    this.pool = new UpstreamPool(this.config.cluster.length > 0 ? { ...this.config, minIdle: 0 } : this.config, this.log, this.topology, serverOptions.connectionFactory)
    this.cluster = this.config.cluster.length > 0 ? createCluster(this.config, this.log) : null
    this.clusterPins = this.cluster !== null ? createClusterPins(this.config, this.log, this.cluster) : null
    this.router = new Router(this.pool, this.log, { poolSize: this.config.poolSize, maxPins: this.config.maxPins })
    this.memory = new ClientMemoryBudget(this.config.maxMemoryClients)
    this.identities = new Identities(this.pool, this.log, () => ({ poolSize: this.config.poolSize, maxPins: this.config.maxPins }))
    this.#outputCheck = setInterval(() => {
      for (const holder of this.memory.holders()) (holder as ClientSession).checkOutput()
    }, 1000)
    this.#outputCheck.unref()
    this.metrics = new Metrics(this)
    const parkWake = this.metrics.parkWake
    const observeWake = (seconds: number): void => { parkWake.observe(seconds) }
    const lot = this.config.parkBlocking && this.cluster === null ? new ParkingLot(this.router, this.log, observeWake) : null
    const clusterParking = this.config.parkBlocking && this.cluster !== null && this.clusterPins !== null
      ? new ClusterParking(this.cluster.topology, this.cluster.lanes, this.clusterPins, this.log, observeWake)
      : null
    this.parking = lot ?? clusterParking
    const hubPins: ClusterHub | null = this.config.sharedPubsub && this.cluster !== null && this.clusterPins !== null ? clusterHub(this.clusterPins, this.cluster) : null
    this.pubsub = this.config.sharedPubsub
      ? new PubsubHub(hubPins ?? this.router, this.log, { acquireTimeoutMs: this.config.acquireTimeoutMs, onPin: () => { this.stats.pinsByReason[3]++ } })
      : null
    const { commandLatency, pinWait, pinHeld } = this.metrics
    this.#ctx = {
      config: this.config,
      memory: this.memory,
      identities: this.identities,
      router: this.router,
      stats: this.stats,
      log: this.log,
      credentials: credentialsFrom(this.config),
      authRequired: this.config.password !== undefined || this.config.users.size > 0,
      denied: new Set(this.config.denyCommands),
      serverInfo: () => this.cluster !== null ? (this.#clusterInfo ?? this.pool.serverInfo) : this.pool.serverInfo,
      serverInfoKnown: () => this.cluster !== null || this.pool.serverInfoKnown,
      cluster: this.cluster,
      clusterPins: this.clusterPins,
      clusterHub: hubPins,
      clientViews: () => [...this.#sessions].map((s) => s.view()),
      clients: () => this.#sessions,
      observe: {
        commandLatency: (seconds) => { commandLatency.observe(seconds) },
        pinWait: (seconds) => { pinWait.observe(seconds) },
        pinHeld: (seconds) => { pinHeld.observe(seconds) }
      },
      admin: createAdminHandler(this),
      parking: lot,
      clusterParking,
      pubsub: this.pubsub,
      paused: () => this.#paused,
      waitForResume: (session) => { this.#pausedSessions.add(session) },
      onSessionClosed: (session) => {
        this.memory.forget(session)
        this.#sessions.delete(session)
        this.#pausedSessions.delete(session)
      }
    }
    this.#protected = this.config.protectedMode && !this.#ctx.authRequired
    this.#server = this.config.tlsCert !== undefined && this.config.tlsKey !== undefined
      ? tls.createServer({ cert: readFileSync(this.config.tlsCert), key: readFileSync(this.config.tlsKey), noDelay: true }, this.#onConnection)
      : net.createServer({ noDelay: true }, this.#onConnection)
    this.#server.on('error', (err) => { this.log.error({ err: err.message }, 'listener error') })
  }

  /** Starts listening; resolves with the bound address (port 0 becomes a real port). */
  async listen (): Promise<net.AddressInfo> {
    // Sentinel mode: ask the sentinels first. Sentinels that are down do not stop respool; a
    // configuration that cannot work (the sentinels refuse its credentials) does (ConfigError).
    await this.topology.start()
    if (this.cluster !== null) await this.#startCluster(this.cluster)
    this.#server.listen({ host: this.config.host, port: this.config.port })
    await once(this.#server, 'listening')
    if (this.config.unixSocket !== undefined) {
      if (this.#removeStaleSocket) rmSync(this.config.unixSocket, { force: true }) // a stale socket file from a crashed run
      this.#unixServer = net.createServer(this.#onConnection)
      this.#unixServer.listen(this.config.unixSocket)
      await once(this.#unixServer, 'listening')
    }
    if (this.config.metricsPort !== undefined && this.#serveHttp) {
      const registry = this.metrics.registry
      const source = { metrics: async () => ({ contentType: registry.contentType, text: await registry.metrics() }), readiness: () => this.readiness() }
      this.#httpServer = await startHttpEndpoints(source, this.config.metricsHost ?? this.config.host, this.config.metricsPort)
    }
    // Learn the upstream (version for HELLO, reachability for /readyz) before the first client asks.
    this.#warmUp()
    const address = this.address
    const upstream = this.cluster?.topology.describe() ?? this.topology.describe()
    this.log.info({ listen: `${address.address}:${address.port}`, upstream, poolSize: this.config.poolSize },
      `respool listening on ${this.config.tlsCert !== undefined ? 'tls://' : ''}${formatHostPort(address.address, address.port)}${this.config.unixSocket !== undefined ? ` and ${this.config.unixSocket}` : ''}, forwarding to ${upstream} with at most ${this.config.poolSize} upstream connections`)
    if (this.#protected && !/^(127\.|::1$|localhost$)/.test(this.config.host)) {
      this.log.warn({ host: this.config.host }, 'protected mode: no client authentication is configured (--password/--user), so only loopback and unix-socket clients are served; others get -DENIED (--protected-mode no serves them)')
    }
    return address
  }

  get address (): net.AddressInfo {
    const address = this.#server.address()
    if (address === null || typeof address === 'string') throw new Error('respool is not listening on TCP')
    return address
  }

  get clientCount (): number {
    return this.#sessions.size
  }

  /** The HTTP endpoint's address, when --metrics-port is set. */
  get httpAddress (): net.AddressInfo | null {
    const address = this.#httpServer?.address()
    return address !== undefined && address !== null && typeof address !== 'string' ? address : null
  }

  sessions (): ClientSession[] {
    return [...this.#sessions]
  }

  /** A snapshot of the main gauges and counters. */
  snapshot (): ServerStats {
    const use = upstreamUse(this)
    return {
      clients: this.#sessions.size,
      lanes: use.shared,
      pins: use.pinned,
      pool: this.pool.stats,
      commands: this.stats.downstreamRqTotal,
      commandErrors: this.stats.upstreamRqFailed
    }
  }

  /** Pinned connections by reason (index: PIN_REASONS). */
  pinnedByReason (): number[] {
    const counts = new Array<number>(PIN_REASONS.length).fill(0)
    for (const session of this.#sessions) {
      const reasons = session.pinReasons
      for (let i = 0; i < counts.length; i++) if ((reasons & (1 << i)) !== 0) counts[i]++
    }
    counts[3] += this.pubsub?.stats.connections ?? 0 // the shared subscriber connection
    return counts
  }

  /** Ready when not draining, a master is verified and it answered the last connection attempt. */
  readiness (): { ready: boolean, reason: string } {
    if (this.draining) return { ready: false, reason: 'draining' }
    if (this.cluster !== null) {
      const problem = this.cluster.topology.problem
      return problem === null ? { ready: true, reason: 'ready' } : { ready: false, reason: `no cluster slot map: ${problem}` }
    }
    const problem = this.topology.problem
    if (problem !== null) return { ready: false, reason: `no verified master: ${problem}` }
    const err = this.pool.lastError
    if (err !== null) return { ready: false, reason: `upstream unreachable: ${err.message}` }
    if (!this.pool.serverInfoKnown) {
      this.#warmUp()
      return { ready: false, reason: 'connecting to upstream' }
    }
    return { ready: true, reason: 'ready' }
  }

  get paused (): boolean {
    return this.#paused
  }

  /** Holds every client's next command (in-flight ones finish) until resume() or `ms` (0 = until resume). */
  pause (ms = 0): void {
    this.#paused = true
    if (this.#pauseTimer !== null) clearTimeout(this.#pauseTimer)
    this.#pauseTimer = ms > 0 ? setTimeout(() => { this.resume() }, ms) : null
    this.#pauseTimer?.unref()
    this.log.warn({ ms }, 'paused: new commands are held')
  }

  resume (): void {
    if (!this.#paused) return
    this.#paused = false
    if (this.#pauseTimer !== null) clearTimeout(this.#pauseTimer)
    this.#pauseTimer = null
    const held = [...this.#pausedSessions]
    this.#pausedSessions.clear()
    this.log.warn({ clients: held.length }, 'resumed')
    for (const session of held) session.resume()
  }

  killClient (id: number): boolean {
    for (const session of this.#sessions) {
      if (session.id === id) {
        session.destroy()
        return true
      }
    }
    return false
  }

  /**
   * Applies a new configuration: what can change safely takes effect now (pool size, pin cap,
   * limits, timeouts, log level, deny list); anything else is reported as needing a restart.
   */
  reload (options: ProxyOptions): ReloadResult {
    const next = validateConfig(options)
    const masters = this.cluster?.topology.masters.size ?? 0
    if (masters > 0 && next.poolSize !== this.config.poolSize && next.poolSize < masters + 2) {
      throw new ConfigError(clusterPoolTooSmall(next.poolSize, masters, next.workers))
    }
    const applied: string[] = []
    const needsRestart: string[] = []
    const current = this.config as unknown as Record<string, unknown>
    const incoming = next as unknown as Record<string, unknown>
    for (const key of RELOADABLE) {
      if (JSON.stringify(current[key]) !== JSON.stringify(incoming[key])) {
        current[key] = incoming[key]
        applied.push(key)
      }
    }
    for (const key of ['host', 'port', 'upstream', 'sentinels', 'sentinelMaster', 'sentinelUsername', 'sentinelPassword', 'sentinelTls', 'tlsCert', 'tlsKey', 'unixSocket', 'metricsPort', 'password', 'adminPassword', 'protectedMode', 'parkBlocking', 'sharedPubsub', 'workers'] as const) {
      if (JSON.stringify(current[key]) !== JSON.stringify(incoming[key])) needsRestart.push(key)
    }
    if (JSON.stringify([...this.config.users]) !== JSON.stringify([...next.users])) needsRestart.push('users')
    if (applied.includes('poolSize') || applied.includes('maxPins') || applied.includes('acquireTimeoutMs')) {
      this.pool.resize(this.config.poolSize, this.config.acquireTimeoutMs)
      this.router.resize(this.config.poolSize, this.config.maxPins)
      this.identities.resize(this.config.poolSize, this.config.maxPins)
      this.cluster?.lanes.resize(this.config.poolSize)
      this.clusterPins?.resize(this.config.poolSize)
    }
    if (applied.includes('logLevel')) this.log.level = this.config.logLevel
    if (applied.includes('maxMemoryClients')) {
      this.memory.limit = this.config.maxMemoryClients
      if (this.memory.limit > 0) this.memory.enforce()
    }
    if (applied.includes('denyCommands')) this.#ctx.denied = new Set(this.config.denyCommands)
    if (applied.some((key) => SESSION_LIMITS.has(key))) {
      for (const session of this.#sessions) session.applyConfig()
    }
    this.log.info({ applied, needsRestart }, 'configuration reloaded')
    return { applied, needsRestart }
  }

  /** RESPOOL RELOAD and SIGHUP: read the configuration again from where it came from. */
  async reloadFromSource (): Promise<ReloadResult> {
    if (this.reloadSource === null) throw new Error('no configuration source to reload from')
    try {
      return this.reload(await this.reloadSource())
    } catch (err) {
      this.log.error({ err: (err as Error).message }, 'reload failed; configuration unchanged')
      throw err
    }
  }

  /**
   * Cluster mode: the first slot map, and the check that the pool can hold one lane per master
   * plus the connection the slot-map fetch uses. No node answering does not stop respool (it
   * keeps asking); a pool that cannot work does (ConfigError).
   */
  async #startCluster (cluster: ClusterDispatcher): Promise<void> {
    const ok = await cluster.topology.start()
    const masters = cluster.topology.masters.size
    if (ok && this.config.poolSize < masters + 2) throw new ConfigError(clusterPoolTooSmall(this.config.poolSize, masters, this.config.workers))
    const node = cluster.topology.anyMaster()
    if (node === null) return
    try {
      const info = await fetchServerInfo(await cluster.lanes.open(node))
      // The client is talking to one ordinary Redis.
      this.#clusterInfo = { ...info, mode: 'standalone' }
    } catch (err) {
      this.log.warn({ err: (err as Error).message }, 'cluster node not reachable yet')
    }
  }

  #warmUp (): void {
    if (this.cluster !== null) return
    if (this.pool.stats.size > 0 || this.#closing !== null) return
    this.pool.acquire(1).then((conn) => { this.pool.release(conn) }, (err: Error) => {
      this.log.warn({ err: err.message }, 'upstream not reachable yet; commands wait up to --acquire-timeout and get an error while it stays down')
    })
  }

  /**
   * Graceful shutdown: stop accepting, let clients finish what they sent (up to graceMs),
   * then close everything.
   */
  async close (graceMs = this.config.shutdownGraceMs): Promise<void> {
    this.#closing ??= (async () => {
      this.draining = true
      this.log.info({ clients: this.#sessions.size, graceMs }, 'draining')
      this.#stopListening()
      for (const session of this.#sessions) session.endAfterInflight()
      const deadline = performance.now() + graceMs
      while (this.#sessions.size > 0 && performance.now() < deadline) await delay(20, undefined, { ref: true })
      await this.#teardown()
    })()
    return await this.#closing
  }

  /** Immediate shutdown: every client is disconnected now. */
  async destroy (): Promise<void> {
    this.#closing ??= (async () => {
      this.draining = true
      this.#stopListening()
      await this.#teardown()
    })()
    return await this.#closing
  }

  #stopListening (): void {
    this.#server.close()
    this.#unixServer?.close()
  }

  async #closeHttp (): Promise<void> {
    const httpServer = this.#httpServer
    if (httpServer === null) return
    this.#httpServer = null
    httpServer.closeAllConnections()
    await new Promise((resolve) => httpServer.close(resolve))
  }

  async #teardown (): Promise<void> {
    if (this.#pauseTimer !== null) clearTimeout(this.#pauseTimer)
    clearInterval(this.#outputCheck)
    for (const session of [...this.#sessions]) session.destroy()
    this.parking?.close()
    this.pubsub?.close()
    this.topology.close()
    await this.identities.close()
    this.cluster?.topology.close()
    this.cluster?.lanes.close()
    this.clusterPins?.close()
    await this.router.close()
    await this.pool.close()
    await this.#closeHttp()
  }

  #onConnection = (socket: net.Socket): void => {
    this.stats.downstreamCxTotal++
    // A refused client may reset the connection before the refusal is written (a port probe):
    // that must not become an unhandled 'error' event.
    socket.on('error', ignoreError)
    if (this.#closing !== null) {
      socket.end(errorReply('ERR respool: shutting down'))
      return
    }
    if (this.#protected && !isLocalClient(socket)) {
      this.stats.downstreamCxRefused++
      this.log.warn({ client: socket.remoteAddress }, 'client refused by protected mode')
      socket.end(PROTECTED_MODE_DENIED)
      return
    }
    if (this.#sessions.size >= this.config.maxClients) {
      this.stats.downstreamCxRefused++
      // Redis's own wording for the same condition.
      socket.end(errorReply('ERR max number of clients reached'))
      return
    }
    const session = new ClientSession(this.#nextSessionId, socket, this.#ctx)
    this.#nextSessionId += this.#sessionIdStep
    this.#sessions.add(session)
  }
}

/** What a client refused by protected mode is told, as Redis tells it: the reason and the ways out. */
const PROTECTED_MODE_DENIED = errorReply('DENIED respool is running in protected mode because no client authentication is configured. ' +
  'In this mode connections are only accepted from loopback addresses and the unix socket. To serve other clients, either set a ' +
  'password (--password, or --user name:password) that clients AUTH with, or, if every client that can reach this address is ' +
  'trusted, disable protected mode with --protected-mode no (RESPOOL_PROTECTED_MODE=no).')

/** A client on the unix socket or a loopback address (127.0.0.0/8, ::1, IPv4-mapped 127.x). */
/** A shared no-op, not a closure per connection. */
function ignoreError (): void {}

export function isLocalClient (socket: net.Socket): boolean {
  const address = socket.remoteAddress
  if (address === undefined) return true // unix socket
  return address.startsWith('127.') || address === '::1' || address.startsWith('::ffff:127.')
}

/**
 * Which AUTH respool accepts from clients: its own password and users when configured (then
 * AUTH is required); otherwise the upstream's credentials, so an application configured with
 * its Redis password keeps working when pointed at respool.
 */
function credentialsFrom (config: ProxyConfig): Credentials {
  if (config.password !== undefined || config.users.size > 0) return { password: config.password, users: config.users }
  const { username, password } = config.upstream
  const users = new Map<string, string>()
  if (username !== undefined && username !== 'default' && password !== undefined) users.set(username, password)
  return { password: username === undefined || username === 'default' ? password : undefined, users }
}

function formatHostPort (host: string, port: number): string {
  return host.includes(':') ? `[${host}]:${port}` : `${host}:${port}`
}

/** Cluster mode needs one connection per master, one for slot-map fetches and one to pin, in each worker. */
function clusterPoolTooSmall (poolSize: number, masters: number, workers: number): string {
  if (workers > 1) {
    return `pool-size: this worker's share, ${poolSize}, is too small for a cluster of ${masters} masters; cluster mode needs one connection per master, one for slot-map fetches and one to pin (transactions, blocking commands, subscribers) in each of the ${workers} workers: --pool-size ${workers * (masters + 2)} at least, or fewer --workers`
  }
  return `pool-size: ${poolSize} is too small for a cluster of ${masters} masters; cluster mode needs one connection per master, one for slot-map fetches and one to pin (transactions, blocking commands, subscribers): --pool-size ${masters + 2} at least`
}

function createCluster (config: ProxyConfig, log: Logger): ClusterDispatcher {
  const topology = new ClusterTopology({ seeds: config.cluster, data: { ...config.upstream, db: 0 }, connectTimeoutMs: config.connectTimeoutMs }, log)
  const lanes = new ClusterLanes(topology, log, { poolSize: config.poolSize, connectTimeoutMs: config.connectTimeoutMs, commandTimeoutMs: config.commandTimeoutMs })
  return new ClusterDispatcher(topology, lanes)
}

/** Pins get what one lane per master and the slot-map fetch leave of --pool-size. */
function createClusterPins (config: ProxyConfig, log: Logger, cluster: ClusterDispatcher): ClusterPins {
  const pins = new ClusterPins(log, { poolSize: config.poolSize, connectTimeoutMs: config.connectTimeoutMs, commandTimeoutMs: config.commandTimeoutMs })
  const { topology, lanes } = cluster
  lanes.countWith(() => pins.open)
  topology.onChange((masters) => {
    pins.setMasters(masters.size, () => lanes.size)
    pins.retire(masters)
  })
  return pins
}

/** The configured Redis, or the master a set of sentinels names. */
function createTopology (config: ProxyConfig, log: Logger): Topology {
  if (config.sentinels.length === 0) return new StandaloneTopology(config.upstream, log)
  return new SentinelTopology({
    sentinels: config.sentinels,
    masterName: config.sentinelMaster as string,
    access: {
      username: config.sentinelUsername,
      password: config.sentinelPassword,
      tls: config.sentinelTls,
      tlsCa: config.upstream.tlsCa,
      tlsServername: config.upstream.tlsServername,
      tlsInsecure: config.upstream.tlsInsecure,
      timeoutMs: config.connectTimeoutMs
    },
    data: config.upstream,
    connectTimeoutMs: config.connectTimeoutMs
  }, log)
}

/** Creates a proxy and starts listening. */
export async function createProxy (options: ProxyOptions = {}, serverOptions: ProxyServerOptions = {}): Promise<ProxyServer> {
  const server = new ProxyServer(options, serverOptions)
  await server.listen()
  return server
}
