import net from 'node:net'
import tls from 'node:tls'
import { readFileSync, rmSync } from 'node:fs'
import { once } from 'node:events'
import { setTimeout as delay } from 'node:timers/promises'
import { ClientSession, type SessionContext } from './client-session.js'
import { Router } from './router.js'
import { UpstreamPool, type ConnectionFactory, type PoolStats } from './upstream-pool.js'
import { ProxyStats } from './proxy-stats.js'
import { describeUpstream, validateConfig, type ProxyConfig, type ProxyOptions } from './config.js'
import { errorReply } from './resp-encode.js'
import { silentLogger, type Logger } from './logger.js'
import type { Credentials } from './local-commands.js'

export interface ProxyServerOptions {
  logger?: Logger
  /** Replaces how upstream connections are opened (tests inject faults here). */
  connectionFactory?: ConnectionFactory
}

export interface ServerStats extends ProxyStats {
  clients: number
  lanes: number
  pool: PoolStats
}

/**
 * Accepts client connections, owns the sessions, the router and the upstream pool, and runs
 * the lifecycle: listen(), close() (graceful), destroy() (immediate). Both closing calls are
 * idempotent and later calls join the first.
 */
export class ProxyServer {
  readonly config: ProxyConfig
  readonly log: Logger
  readonly pool: UpstreamPool
  readonly router: Router
  readonly stats = new ProxyStats()
  readonly #server: net.Server
  #unixServer: net.Server | null = null
  readonly #sessions = new Set<ClientSession>()
  readonly #ctx: SessionContext
  #nextSessionId = 1
  #closing: Promise<void> | null = null
  /** True from the first close() on: readiness probes fail first, new clients are refused. */
  draining = false

  constructor (options: ProxyOptions | ProxyConfig = {}, serverOptions: ProxyServerOptions = {}) {
    this.config = validateConfig(options as ProxyOptions)
    this.log = serverOptions.logger ?? silentLogger()
    this.pool = new UpstreamPool(this.config, this.log, serverOptions.connectionFactory)
    this.router = new Router(this.pool, this.log, { poolSize: this.config.poolSize, maxPins: this.config.maxPins })
    this.#ctx = {
      config: this.config,
      router: this.router,
      stats: this.stats,
      log: this.log,
      credentials: credentialsFrom(this.config),
      authRequired: this.config.password !== undefined || this.config.users.size > 0,
      denied: new Set(this.config.denyCommands),
      serverInfo: () => this.pool.serverInfo,
      serverInfoKnown: () => this.pool.serverInfoKnown,
      clientViews: () => [...this.#sessions].map((s) => s.view()),
      onSessionClosed: (session) => { this.#sessions.delete(session) }
    }
    this.#server = this.config.tlsCert !== undefined && this.config.tlsKey !== undefined
      ? tls.createServer({ cert: readFileSync(this.config.tlsCert), key: readFileSync(this.config.tlsKey), noDelay: true }, this.#onConnection)
      : net.createServer({ noDelay: true }, this.#onConnection)
    this.#server.on('error', (err) => { this.log.error({ err: err.message }, 'listener error') })
  }

  /** Starts listening; resolves with the bound address (port 0 becomes a real port). */
  async listen (): Promise<net.AddressInfo> {
    this.#server.listen({ host: this.config.host, port: this.config.port })
    await once(this.#server, 'listening')
    if (this.config.unixSocket !== undefined) {
      rmSync(this.config.unixSocket, { force: true }) // a stale socket file from a crashed run
      this.#unixServer = net.createServer(this.#onConnection)
      this.#unixServer.listen(this.config.unixSocket)
      await once(this.#unixServer, 'listening')
    }
    const address = this.address
    this.log.info({ listen: `${address.address}:${address.port}`, upstream: describeUpstream(this.config.upstream), poolSize: this.config.poolSize },
      `respool listening on ${this.config.tlsCert !== undefined ? 'tls://' : ''}${formatHostPort(address.address, address.port)}${this.config.unixSocket !== undefined ? ` and ${this.config.unixSocket}` : ''}, forwarding to ${describeUpstream(this.config.upstream)} with at most ${this.config.poolSize} upstream connections`)
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

  /** A snapshot of counters and gauges. */
  snapshot (): ServerStats {
    return { ...this.stats, clients: this.#sessions.size, lanes: this.router.laneCount, pool: this.pool.stats }
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

  async #teardown (): Promise<void> {
    for (const session of [...this.#sessions]) session.destroy()
    await this.router.close()
    await this.pool.close()
  }

  #onConnection = (socket: net.Socket): void => {
    this.stats.downstreamCxTotal++
    if (this.#closing !== null) {
      socket.end(errorReply('ERR respool: shutting down'))
      return
    }
    if (this.#sessions.size >= this.config.maxClients) {
      this.stats.downstreamCxRefused++
      // Redis's own wording for the same condition.
      socket.end(errorReply('ERR max number of clients reached'))
      return
    }
    const session = new ClientSession(this.#nextSessionId++, socket, this.#ctx)
    this.#sessions.add(session)
  }
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

/** Creates a proxy and starts listening. */
export async function createProxy (options: ProxyOptions = {}, serverOptions: ProxyServerOptions = {}): Promise<ProxyServer> {
  const server = new ProxyServer(options, serverOptions)
  await server.listen()
  return server
}
