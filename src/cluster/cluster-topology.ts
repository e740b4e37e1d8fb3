import RedisParser from 'redis-parser'
import type { HostPort, UpstreamAddress } from '../config.js'
import type { Logger } from '../ops/logger.js'
import { UpstreamConnection } from '../upstream/upstream-connection.js'
import { hostPort } from '../upstream/topology.js'

/** A master of the cluster, as respool reaches it. */
export interface ClusterNode {
  /** host:port, the node's identity in respool (redirects name nodes by address). */
  readonly key: string
  readonly host: string
  readonly port: number
  /** The address with --upstream's credentials and TLS settings (database 0). */
  readonly address: UpstreamAddress
}

export const SLOT_COUNT = 16384
/** At most one slot-map fetch this often, whatever asks for it (MOVED storms, failing nodes). */
const MIN_REFRESH_INTERVAL_MS = 1000
/** A healthy map is checked this often anyway (a failover that sent no MOVED yet). */
const REFRESH_EVERY_MS = 10_000

export type ClusterChangeListener = (masters: ReadonlySet<string>) => void

/**
 * The slot map of a Redis Cluster: which master serves each of the 16384 hash slots.
 *
 * Learned with `CLUSTER SHARDS` (Redis 7), or `CLUSTER SLOTS` where SHARDS is unknown, asked of
 * the known masters and the configured seeds in turn, on a connection of its own that is
 * closed again. A refresh is single-flight (callers during a fetch join it, and one more runs
 * after it if something asked meanwhile) and rate-limited to one per second. It is asked for on
 * MOVED (after the redirected slot has been patched at once), CLUSTERDOWN, connection failures,
 * and every ten seconds.
 */
export class ClusterTopology {
  readonly #seeds: HostPort[]
  readonly #data: UpstreamAddress
  readonly #log: Logger
  readonly #connectTimeoutMs: number
  readonly #slots: Array<ClusterNode | undefined> = new Array<ClusterNode | undefined>(SLOT_COUNT)
  #masters = new Map<string, ClusterNode>()
  readonly #listeners: ClusterChangeListener[] = []
  readonly #slotListeners: Array<() => void> = []
  #round: Promise<boolean> | null = null
  #again = false
  #lastRound = 0
  #delayed: NodeJS.Timeout | null = null
  #timer: NodeJS.Timeout | null = null
  #closed = false
  #problem: string | null = 'slot map not fetched yet'
  refreshes = 0
  /** Connections open now to fetch the slot map (one at a time; within --pool-size). */
  fetching = 0

  constructor (options: { seeds: HostPort[], data: UpstreamAddress, connectTimeoutMs: number }, log: Logger) {
    this.#seeds = options.seeds
    this.#data = options.data
    this.#connectTimeoutMs = options.connectTimeoutMs
    this.#log = log
  }

  /** The masters that serve slots (keyed host:port). */
  get masters (): ReadonlyMap<string, ClusterNode> {
    return this.#masters
  }

  /** Why no slot map is known (null once one is). */
  get problem (): string | null {
    return this.#problem
  }

  describe (): string {
    return `cluster via ${this.#seeds.map((s) => hostPort(s.host, s.port)).join(',')}`
  }

  /** The first fetch; false if no node answered (respool keeps trying). */
  async start (): Promise<boolean> {
    const ok = await this.refresh('start')
    this.#timer = setInterval(() => { void this.refresh('timer') }, REFRESH_EVERY_MS)
    this.#timer.unref()
    return ok
  }

  /** The master serving `slot`, if known. */
  nodeFor (slot: number): ClusterNode | null {
    return this.#slots[slot] ?? null
  }

  /** A master for a keyless command: the one serving slot 0's range first, for stability. */
  anyMaster (): ClusterNode | null {
    for (const node of this.#masters.values()) return node
    return null
  }

  /** A node by address (a redirect's target), known or not. */
  node (host: string, port: number): ClusterNode {
    const key = hostPort(host, port)
    return this.#masters.get(key) ?? this.#makeNode(host, port)
  }

  /** -MOVED: the slot is served by `node` from now on; the rest of the map is fetched again. */
  moved (slot: number, node: ClusterNode): void {
    if (slot >= 0 && slot < SLOT_COUNT) this.#slots[slot] = node
    for (const listener of this.#slotListeners) listener()
    void this.refresh('MOVED')
  }

  /** Called after every slot-map fetch and -MOVED (a slot may have another owner now). */
  onSlots (listener: () => void): void {
    this.#slotListeners.push(listener)
  }

  onChange (listener: ClusterChangeListener): void {
    this.#listeners.push(listener)
  }

  /** Fetches the map (joining a fetch under way; at most one a second). True if it succeeded. */
  refresh (reason: string): Promise<boolean> {
    if (this.#closed) return Promise.resolve(false)
    if (this.#round !== null) {
      this.#again = true
      return this.#round
    }
    const wait = this.#lastRound + MIN_REFRESH_INTERVAL_MS - performance.now()
    if (wait > 0 && reason !== 'start') {
      // Too soon after the last one: one fetch when the interval is over serves every ask.
      this.#delayed ??= setTimeout(() => {
        this.#delayed = null
        void this.refresh(reason)
      }, wait)
      this.#delayed.unref()
      return Promise.resolve(false)
    }
    this.#round = this.#fetch(reason).finally(() => {
      this.#round = null
      this.#lastRound = performance.now()
      if (this.#again) {
        this.#again = false
        void this.refresh('again')
      }
    })
    return this.#round
  }

  close (): void {
    this.#closed = true
    if (this.#timer !== null) clearInterval(this.#timer)
    if (this.#delayed !== null) clearTimeout(this.#delayed)
  }

  async #fetch (reason: string): Promise<boolean> {
    this.refreshes++
    // Known masters first (they know the latest map), then the seeds.
    const candidates = new Map<string, HostPort>()
    for (const node of this.#masters.values()) candidates.set(node.key, node)
    for (const seed of this.#seeds) candidates.set(hostPort(seed.host, seed.port), seed)
    const errors: string[] = []
    for (const where of candidates.values()) {
      if (this.#closed) return false
      try {
        const ranges = await this.#ask(where)
        if (ranges.length === 0) throw new Error('the node serves no slots (is the cluster created?)')
        this.#apply(ranges)
        this.#problem = null
        this.#log.debug({ reason, masters: this.#masters.size }, 'cluster slot map fetched')
        return true
      } catch (err) {
        errors.push(`${hostPort(where.host, where.port)}: ${(err as Error).message}`)
      }
    }
    this.#problem = `no cluster node answered (${errors.join('; ')})`
    this.#log.warn({ reason, err: this.#problem }, 'cannot fetch the cluster slot map; retrying')
    return false
  }

  /** Slot ranges [start, end, node] from one node. */
  async #ask (where: HostPort): Promise<Array<[number, number, ClusterNode]>> {
    this.fetching++
    let conn: UpstreamConnection
    try {
      conn = await UpstreamConnection.connect({
      id: 0,
      address: { ...this.#data, host: where.host, port: where.port },
      connectTimeoutMs: this.#connectTimeoutMs,
        commandTimeoutMs: this.#connectTimeoutMs
      })
    } catch (err) {
      this.fetching--
      throw err
    }
    try {
      const shards = await request(conn, ['CLUSTER', 'SHARDS'])
      if (!(shards instanceof Error)) return this.#fromShards(shards, where.host)
      const slots = await request(conn, ['CLUSTER', 'SLOTS'])
      if (slots instanceof Error) throw slots
      return this.#fromSlots(slots, where.host)
    } finally {
      conn.destroy()
      this.fetching--
    }
  }

  /** CLUSTER SHARDS: per shard, `slots` (flat start,end pairs) and `nodes` (maps as flat lists). */
  #fromShards (reply: unknown, askedHost: string): Array<[number, number, ClusterNode]> {
    const out: Array<[number, number, ClusterNode]> = []
    for (const shard of asList(reply)) {
      const fields = asMap(shard)
      const slots = asList(fields.get('slots')).map(Number)
      if (slots.length === 0) continue
      const master = asList(fields.get('nodes')).map(asMap).find((n) => String(n.get('role')) === 'master')
      if (master === undefined) continue
      const port = Number(this.#data.tls ? (master.get('tls-port') ?? master.get('port')) : master.get('port'))
      const node = this.node(endpointHost(master.get('endpoint') ?? master.get('ip'), askedHost), port)
      for (let i = 0; i + 1 < slots.length; i += 2) out.push([slots[i], slots[i + 1], node])
    }
    return out
  }

  /** CLUSTER SLOTS: [start, end, [host, port, id, …], replicas…]. */
  #fromSlots (reply: unknown, askedHost: string): Array<[number, number, ClusterNode]> {
    const out: Array<[number, number, ClusterNode]> = []
    for (const range of asList(reply)) {
      const [start, end, master] = asList(range)
      const [host, port] = asList(master)
      out.push([Number(start), Number(end), this.node(endpointHost(host, askedHost), Number(port))])
    }
    return out
  }

  #apply (ranges: Array<[number, number, ClusterNode]>): void {
    this.#slots.fill(undefined)
    const masters = new Map<string, ClusterNode>()
    ranges.sort((a, b) => a[0] - b[0])
    for (const [start, end, node] of ranges) {
      masters.set(node.key, node)
      for (let s = Math.max(0, start); s <= Math.min(SLOT_COUNT - 1, end); s++) this.#slots[s] = node
    }
    const changed = masters.size !== this.#masters.size || [...masters.keys()].some((k) => !this.#masters.has(k))
    this.#masters = masters
    if (changed) for (const listener of this.#listeners) listener(new Set(masters.keys()))
    for (const listener of this.#slotListeners) listener()
  }

  #makeNode (host: string, port: number): ClusterNode {
    return { key: hostPort(host, port), host, port, address: { ...this.#data, host, port, db: 0, path: undefined } }
  }
}

/** An endpoint of NULL, empty or '?' means "the host you asked". */
function endpointHost (endpoint: unknown, askedHost: string): string {
  const text = endpoint === null || endpoint === undefined ? '' : String(endpoint)
  return text === '' || text === '?' ? askedHost : text
}

function asList (value: unknown): unknown[] {
  return Array.isArray(value) ? value : []
}

/** A RESP2 map (a flat key, value list) as a Map. */
function asMap (value: unknown): Map<string, unknown> {
  const list = asList(value)
  const map = new Map<string, unknown>()
  for (let i = 0; i + 1 < list.length; i += 2) map.set(String(list[i]), list[i + 1])
  return map
}

/** Sends a command of respool's own and decodes its reply (an error reply as an Error). */
export function request (conn: UpstreamConnection, args: string[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    conn.sendInternal(args, (frame, err) => {
      if (frame === null) {
        reject(err ?? new Error('no reply'))
        return
      }
      let value: unknown = null
      const parser = new RedisParser({
        returnReply: (reply: unknown) => { value = reply },
        returnError: (error: Error) => { value = error },
        returnBuffers: false
      })
      parser.execute(frame)
      resolve(value)
    })
  })
}
