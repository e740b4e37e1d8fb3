import { ConfigError, NoMasterError, UpstreamReplicaError } from '../errors.js'
import type { UpstreamAddress } from '../config.js'
import type { Logger } from '../ops/logger.js'
import { UpstreamConnection } from './upstream-connection.js'
import { askSentinel, SentinelAuthError, SwitchMasterSubscription, type SentinelAccess, type SentinelEndpoint } from './sentinel-client.js'
import { hostPort, type MasterNode, type Topology, type TopologyListener, type TopologySignal } from './topology.js'

export interface SentinelTopologyOptions {
  sentinels: SentinelEndpoint[]
  masterName: string
  access: SentinelAccess
  /** Data credentials, database and TLS for the master; host and port come from the sentinels. */
  data: UpstreamAddress
  connectTimeoutMs: number
}

/** While there is no verified master (or it cannot be reached), the sentinels are asked this often. */
const RETRY_MS = 250
/** With a healthy master, the sentinels are asked this often (a missed +switch-master, new sentinels). */
const REFRESH_MS = 5000
/** Longest a master being failed over from is avoided while +switch-master does not come. */
const FAILOVER_HOLD_MS = 30_000

/**
 * Follows the master of a Sentinel-managed Redis (the procedure of Redis's sentinel client
 * guidelines):
 *
 * 1. Ask the sentinels in turn `SENTINEL get-master-addr-by-name`; the first that answers moves
 *    to the front, and its `SENTINEL SENTINELS` adds sentinels respool was not told about.
 * 2. Connect to the address it names and check with ROLE that it is a master; otherwise ask again.
 * 3. Follow: `+switch-master` from any sentinel, a -READONLY reply, a connection that says it is a
 *    replica, and a lost connection all lead back to step 1. The first three void the current
 *    master at once (a new epoch: the pool closes every connection to it before anything else is
 *    written); a lost connection only asks again, since a restart is not a failover.
 *
 * Discovery is single-flight: signals that arrive during a round start one more round after it.
 */
export class SentinelTopology implements Topology {
  readonly kind = 'sentinel'
  readonly #options: SentinelTopologyOptions
  readonly #log: Logger
  readonly #listeners: TopologyListener[] = []
  readonly #subscriptions = new Map<string, SwitchMasterSubscription>()
  #sentinels: SentinelEndpoint[]
  #master: MasterNode | null = null
  #epoch = 0
  #failovers = 0
  #problem: string | null = 'no master discovered yet'
  /** The master is known but the last attempt to reach it failed: keep asking the sentinels. */
  #unreachable = false
  /** The master a failover is leaving (see #onFailoverStart), until the switch or a deadline. */
  #leaving: { host: string, port: number, until: number } | null = null
  #round: Promise<void> | null = null
  #again = false
  #timer: NodeJS.Timeout | null = null
  #waiters = new Set<() => void>()
  readonly #closing = new AbortController()

  constructor (options: SentinelTopologyOptions, log: Logger) {
    this.#options = options
    this.#log = log
    this.#sentinels = [...options.sentinels]
  }

  get epoch (): number {
    return this.#epoch
  }

  get master (): MasterNode | null {
    return this.#master
  }

  get failovers (): number {
    return this.#failovers
  }

  get problem (): string | null {
    return this.#master === null ? this.#problem : null
  }

  /** The sentinels respool knows, the one that answered last first. */
  get sentinels (): SentinelEndpoint[] {
    return [...this.#sentinels]
  }

  describe (): string {
    const master = this.#master !== null ? `, master ${hostPort(this.#master.address.host, this.#master.address.port)}` : ''
    return `sentinel ${this.#options.masterName} via ${this.#sentinels.map((s) => hostPort(s.host, s.port)).join(',')}${master}`
  }

  /**
   * The first round. A wrong sentinel password stops respool here; sentinels that are down, or
   * a master that cannot be verified yet, do not: respool keeps asking.
   */
  async start (): Promise<void> {
    const authErrors: string[] = []
    let answered = false
    await this.#discover((err) => {
      if (err instanceof SentinelAuthError) authErrors.push(err.message)
      else if (!(err instanceof Error && /ECONNREFUSED|timed out|ECONNRESET|EHOSTUNREACH|ENOTFOUND/.test(err.message))) answered = true
    }, () => { answered = true })
    if (!answered && authErrors.length > 0) throw new ConfigError(`sentinel auth failed: ${authErrors[0]} (check --sentinel-user and --sentinel-password)`)
    for (const sentinel of this.#sentinels) this.#subscribe(sentinel)
    this.#schedule()
  }

  async waitForMaster (timeoutMs: number, signal?: AbortSignal): Promise<MasterNode> {
    const deadline = performance.now() + timeoutMs
    while (this.#master === null) {
      const left = deadline - performance.now()
      if (left <= 0 || signal?.aborted === true || this.#closing.signal.aborted) {
        throw new NoMasterError(`no verified master for ${this.#options.masterName} (${this.#problem ?? 'discovering'})`)
      }
      this.#rediscover()
      await new Promise<void>((resolve) => {
        const done = (): void => {
          clearTimeout(timer)
          this.#waiters.delete(done)
          signal?.removeEventListener('abort', done)
          resolve()
        }
        const timer = setTimeout(done, left)
        timer.unref()
        this.#waiters.add(done)
        signal?.addEventListener('abort', done, { once: true })
      })
    }
    return this.#master
  }

  report (signal: TopologySignal, epoch: number, detail: string): void {
    if (epoch !== this.#epoch || this.#closing.signal.aborted) return
    if (signal === 'readonly' || signal === 'replica') this.#invalidate(`${signal === 'readonly' ? 'a reply only a replica gives' : 'ROLE'}: ${detail}`)
    else if (signal === 'unreachable') this.#unreachable = true
    this.#rediscover()
  }

  confirmed (epoch: number): void {
    if (epoch === this.#epoch) this.#unreachable = false
  }

  onChange (listener: TopologyListener): void {
    this.#listeners.push(listener)
  }

  close (): void {
    this.#closing.abort()
    if (this.#timer !== null) clearTimeout(this.#timer)
    for (const subscription of this.#subscriptions.values()) subscription.close()
    this.#subscriptions.clear()
    this.#wake()
  }

  /** Starts a round of discovery, or one more after the current round. */
  #rediscover (): void {
    if (this.#closing.signal.aborted) return
    if (this.#round !== null) {
      this.#again = true
      return
    }
    this.#round = (async () => {
      do {
        this.#again = false
        await this.#discover()
      } while (this.#again && !this.#closing.signal.aborted)
    })().finally(() => {
      this.#round = null
      this.#schedule()
    })
  }

  #schedule (): void {
    if (this.#closing.signal.aborted) return
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.#rediscover()
    }, this.#master === null || this.#unreachable ? RETRY_MS : REFRESH_MS)
    this.#timer.unref()
  }

  /** One round: ask the sentinels, verify the master they name, and switch to it if it is new. */
  async #discover (onError?: (err: unknown) => void, onAnswer?: () => void): Promise<void> {
    const name = this.#options.masterName
    let named: SentinelEndpoint | null = null
    const failures: string[] = []
    for (const sentinel of [...this.#sentinels]) {
      if (this.#closing.signal.aborted) return
      try {
        const answer = await askSentinel(sentinel, this.#options.access, name)
        onAnswer?.()
        this.#learnSentinels(answer.sentinels)
        if (answer.master === null) {
          failures.push(`${hostPort(sentinel.host, sentinel.port)}: does not know ${name}`)
          continue
        }
        // The sentinel that answered goes first next time.
        this.#sentinels = [sentinel, ...this.#sentinels.filter((s) => s !== sentinel)]
        named = answer.master
        break
      } catch (err) {
        onError?.(err)
        failures.push(`${hostPort(sentinel.host, sentinel.port)}: ${(err as Error).message}`)
      }
    }
    if (named === null) {
      this.#problem = `no sentinel named a master (${failures.join('; ')})`
      if (this.#master === null) this.#log.debug({ problem: this.#problem }, 'sentinel discovery failed; asking again')
      return
    }
    const current = this.#master
    if (current !== null && current.address.host === named.host && current.address.port === named.port && !this.#unreachable) return
    if (this.#isLeaving(named)) {
      this.#problem = `a failover away from ${hostPort(named.host, named.port)} is in progress; waiting for +switch-master`
      return
    }
    const verdict = await this.#verify(named)
    if (this.#closing.signal.aborted) return
    const same = current !== null && current.address.host === named.host && current.address.port === named.port
    if (verdict === 'master') {
      this.#unreachable = false
      if (same) return
      if (current !== null) this.#invalidate(`the sentinels name ${hostPort(named.host, named.port)} as master`)
      this.#adopt(named)
      return
    }
    if (verdict instanceof UpstreamReplicaError) {
      if (same) this.#invalidate(verdict.message)
      this.#problem = `the sentinels name ${hostPort(named.host, named.port)}, which is not a master: ${verdict.message}`
      this.#log.warn({ master: hostPort(named.host, named.port), err: verdict.message }, 'the address the sentinels gave is not a master; asking again')
      return
    }
    if (same) {
      this.#unreachable = true
      return
    }
    this.#problem = `the master the sentinels name, ${hostPort(named.host, named.port)}, cannot be reached: ${verdict.message}`
  }

  /** Connects to the named node with the data credentials and asks ROLE. */
  async #verify (node: SentinelEndpoint): Promise<'master' | Error> {
    try {
      const conn = await UpstreamConnection.connect({
        id: 0,
        address: { ...this.#options.data, host: node.host, port: node.port },
        connectTimeoutMs: this.#options.connectTimeoutMs,
        commandTimeoutMs: this.#options.connectTimeoutMs,
        requireMaster: true
      })
      conn.destroy()
      return 'master'
    } catch (err) {
      return err as Error
    }
  }

  #adopt (node: SentinelEndpoint): void {
    this.#epoch++
    this.#master = { address: { ...this.#options.data, host: node.host, port: node.port }, epoch: this.#epoch }
    this.#problem = null
    this.#log.info({ master: hostPort(node.host, node.port), epoch: this.#epoch, sentinel: this.#options.masterName }, `master of ${this.#options.masterName} is ${hostPort(node.host, node.port)} (verified with ROLE)`)
    for (const listener of this.#listeners) listener(null, this.#master, 'master verified')
    this.#wake()
  }

  /** The current master is void: a new epoch with no master until one is verified. */
  #invalidate (reason: string): void {
    const previous = this.#master
    if (previous === null) return
    this.#master = null
    this.#epoch++
    this.#failovers++
    this.#problem = `master ${hostPort(previous.address.host, previous.address.port)} left: ${reason}`
    this.#log.warn({ master: hostPort(previous.address.host, previous.address.port), reason }, 'master changed: closing every connection to the old master; commands wait for the new one')
    for (const listener of this.#listeners) listener(previous, null, reason)
  }

  #onSwitchMaster = (payload: string, from: SentinelEndpoint, event = '+switch-master'): void => {
    if (event === '+failover-state-send-slaveof-noone') {
      this.#onFailoverStart(payload, from)
      return
    }
    const [name, , , host, port] = payload.split(' ')
    if (name !== this.#options.masterName) return
    this.#leaving = null
    const current = this.#master
    this.#log.info({ sentinel: hostPort(from.host, from.port), payload }, '+switch-master')
    if (current !== null && current.address.host === host && current.address.port === Number(port)) return
    this.#invalidate(`+switch-master from sentinel ${hostPort(from.host, from.port)}: ${payload}`)
    this.#rediscover()
  }

  /**
   * A replica of our master is being promoted (`slave <ip:port> <ip> <port> @ <name> <master-ip>
   * <master-port>`). The old master is left now, before +switch-master: its connections close, and
   * it is not taken again (though it still says ROLE master) until the switch or FAILOVER_HOLD_MS.
   * Commands wait for the new master meanwhile, as during any switch.
   */
  #onFailoverStart (payload: string, from: SentinelEndpoint): void {
    const words = payload.split(' ')
    const at = words.indexOf('@')
    if (at === -1 || words[at + 1] !== this.#options.masterName) return
    const host = words[at + 2]
    const port = Number(words[at + 3])
    this.#leaving = { host, port, until: performance.now() + FAILOVER_HOLD_MS }
    this.#log.info({ sentinel: hostPort(from.host, from.port), payload }, '+failover-state-send-slaveof-noone')
    const current = this.#master
    if (current !== null && current.address.host === host && current.address.port === port) {
      this.#invalidate(`a replica of ${hostPort(host, port)} is being promoted (sentinel ${hostPort(from.host, from.port)})`)
    }
  }

  /** The master being failed over from: not taken again until the switch is announced. */
  #isLeaving (node: SentinelEndpoint): boolean {
    const leaving = this.#leaving
    if (leaving === null) return false
    if (performance.now() > leaving.until) {
      this.#leaving = null
      return false
    }
    return leaving.host === node.host && leaving.port === node.port
  }

  #learnSentinels (found: SentinelEndpoint[]): void {
    for (const sentinel of found) {
      if (this.#sentinels.some((s) => s.host === sentinel.host && s.port === sentinel.port)) continue
      this.#sentinels.push(sentinel)
      this.#log.info({ sentinel: hostPort(sentinel.host, sentinel.port) }, 'learned of another sentinel')
      if (this.#subscriptions.size > 0) this.#subscribe(sentinel)
    }
  }

  #subscribe (sentinel: SentinelEndpoint): void {
    const key = hostPort(sentinel.host, sentinel.port)
    if (this.#subscriptions.has(key) || this.#closing.signal.aborted) return
    const subscription = new SwitchMasterSubscription(sentinel, this.#options.access, this.#log, this.#onSwitchMaster)
    this.#subscriptions.set(key, subscription)
    subscription.start()
  }

  #wake (): void {
    const waiters = [...this.#waiters]
    this.#waiters.clear()
    for (const fn of waiters) fn()
  }
}
