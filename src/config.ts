import { DEFAULT_OUTPUT_LIMITS, parseMemory, parseOutputLimits, type OutputLimits } from './client/output-limits.js'
import { defaultClientMemoryBudget } from './ops/client-memory.js'
import { readFileSync } from 'node:fs'
import { ConfigError } from './errors.js'

/** Where the upstream Redis is and how to log in to it. Parsed from a redis:// URL. */
export interface UpstreamAddress {
  host: string
  port: number
  /** Unix socket path (redis+unix:///path or unix:///path); when set, host and port are unused. */
  path?: string
  tls: boolean
  username?: string
  password?: string
  db: number
  /** TLS options for rediss:// upstreams. Certificates are verified unless `insecure`. */
  tlsCa?: string
  tlsServername?: string
  tlsInsecure?: boolean
}

/** A sentinel's address (Sentinel mode). */
export interface HostPort {
  host: string
  port: number
}

export interface ProxyConfig {
  /** Listen address for clients. */
  host: string
  /** Listen port; 0 picks a free one. */
  port: number
  /**
   * The Redis to forward to. In Sentinel mode its host and port are not used (the sentinels name
   * the master); its credentials, database and scheme (rediss:// = TLS) still apply to the master.
   */
  upstream: UpstreamAddress
  /** Sentinel mode: the sentinels to ask where the master is (empty: --upstream is the Redis). */
  sentinels: HostPort[]
  /**
   * Cluster mode: seed nodes of a Redis Cluster (empty: not a cluster). --upstream's host and
   * port are then unused; its credentials and scheme (rediss:// = TLS) apply to every node.
   */
  cluster: HostPort[]
  /** The master's name in Sentinel (`sentinel monitor <name> …`); required with sentinels. */
  sentinelMaster?: string
  /** Credentials for the sentinels themselves (their requirepass/ACL), separate from the data credentials. */
  sentinelUsername?: string
  sentinelPassword?: string
  /** Connect to the sentinels over TLS (with the --upstream-tls-* CA and name settings). */
  sentinelTls: boolean
  /** The most upstream connections ever open, shared lanes and pins together. */
  poolSize: number
  /**
   * Most connections pinned at once (transactions, blocking commands, subscribers). The rest
   * stay for shared traffic. Default: poolSize - 1 (at least 1).
   */
  maxPins: number
  /** Connections kept open even when idle. */
  minIdle: number
  /** How long a command may wait for an upstream connection before it fails. */
  acquireTimeoutMs: number
  /** How long opening one upstream connection (TCP + handshake) may take. */
  connectTimeoutMs: number
  /** No reply for this long on a busy upstream connection drops it and fails its commands; 0 = never. */
  commandTimeoutMs: number
  /**
   * A shared-lane command Redis did not run (-READONLY, -MASTERDOWN, -LOADING, or never written)
   * is sent again while it is younger than this; 0 = never sent again.
   */
  retryBudgetMs: number
  /** An idle upstream connection is closed after this long (down to minIdle). */
  upstreamIdleTimeoutMs: number
  /** Backoff between failed upstream connection attempts: first and largest delay. */
  reconnectBaseMs: number
  reconnectMaxMs: number
  /** Most client connections at once; more are refused with an error. */
  maxClients: number
  /** Most commands one client may have unanswered; past it respool stops reading from that client. */
  maxPipeline: number
  /**
   * Per-client output buffer limits (Redis's client-output-buffer-limit), for normal and pub/sub
   * clients: past the hard limit, or above the soft one for longer than its seconds, the client
   * is disconnected.
   */
  outputLimits: OutputLimits
  /** One budget for all reply bytes respool holds for its clients (Redis's maxmemory-clients); 0 = none. */
  maxMemoryClients: number
  /** Redis proto-max-bulk-len. */
  maxBulkLength: number
  /** Most arguments in one command. */
  maxMultibulkLength: number
  /** Longest inline command line. */
  maxInlineLength: number
  /** Close a client that sent nothing for this long; 0 = never. */
  clientIdleTimeoutMs: number
  /** On shutdown, how long in-flight work may take before everything is closed. */
  shutdownGraceMs: number
  /**
   * Processes serving clients on the same listener (--workers); above 1, a primary process forks
   * them and the bounds above are split between them (src/ops/worker-shares.ts).
   */
  workers: number
  logLevel: string
  /** Clients must AUTH with this password (as Redis requirepass) before anything is forwarded. */
  password?: string
  /** Named users clients may AUTH as (AUTH user pass, HELLO … AUTH user pass). */
  users: Map<string, string>
  /** Commands refused for every client (lowercase). Replication commands are always refused. */
  denyCommands: string[]
  /** TLS listener: certificate and key files (PEM). Plain TCP when unset. */
  tlsCert?: string
  tlsKey?: string
  /** Also listen on this unix socket path. */
  unixSocket?: string
  /** HTTP port for /metrics, /healthz and /readyz (unset: no HTTP endpoint). */
  metricsPort?: number
  /** Address for the HTTP endpoint (default: --host). */
  metricsHost?: string
  /** Password that unlocks RESPOOL PAUSE/RESUME/RELOAD/KILL (and, when set, every RESPOOL command). */
  adminPassword?: string
  /**
   * Like Redis's protected mode: while no client authentication is configured (no password,
   * no users), only loopback and unix-socket clients are served; others get -DENIED.
   */
  protectedMode: boolean
  /**
   * Blocking list, sorted-set and stream commands (BLPOP, BRPOP, BLMOVE, BZPOPMIN, XREAD BLOCK …)
   * wait inside respool without a connection each (the default); off, each holds a pinned
   * connection while it blocks.
   */
  parkBlocking: boolean
  /**
   * Channel and pattern subscribers share one subscriber connection (the default); off, each
   * subscribed client holds a pinned connection.
   */
  sharedPubsub: boolean
}

export const DEFAULTS: Omit<ProxyConfig, 'upstream' | 'maxPins'> & { upstream: string, maxPins?: number } = {
  host: '127.0.0.1',
  port: 6380,
  upstream: 'redis://127.0.0.1:6379',
  sentinels: [],
  cluster: [],
  sentinelTls: false,
  poolSize: 8,
  minIdle: 0,
  acquireTimeoutMs: 2000,
  retryBudgetMs: 10_000,
  connectTimeoutMs: 2000,
  commandTimeoutMs: 10000,
  upstreamIdleTimeoutMs: 30000,
  reconnectBaseMs: 50,
  reconnectMaxMs: 500,
  maxClients: 10000,
  maxPipeline: 1024,
  outputLimits: DEFAULT_OUTPUT_LIMITS,
  maxMemoryClients: defaultClientMemoryBudget(),
  maxBulkLength: 512 * 1024 * 1024,
  maxMultibulkLength: 2147483647,
  maxInlineLength: 64 * 1024,
  clientIdleTimeoutMs: 0,
  shutdownGraceMs: 10000,
  workers: 1,
  logLevel: 'info',
  users: new Map(),
  protectedMode: true,
  parkBlocking: true,
  sharedPubsub: true,
  denyCommands: ['sync', 'psync', 'replconf', 'shutdown', 'debug', 'failover']
}

export type ProxyOptions = Partial<Omit<ProxyConfig, 'upstream' | 'users' | 'outputLimits' | 'maxMemoryClients' | 'sentinels' | 'cluster'>> & {
  /** Cluster seed nodes as "host:port" strings (each may hold several, comma-separated) or addresses. */
  cluster?: Array<string | HostPort>
  upstream?: string | UpstreamAddress
  /** Redis's syntax: `normal 512mb 128mb 60 pubsub 32mb 8mb 60`, or the limits themselves. */
  outputLimits?: string | OutputLimits
  /** The normal clients' hard output limit in bytes (overrides outputLimits' normal hard limit). */
  maxOutputBufferBytes?: number
  /** Bytes, a size such as `256mb`, or `auto` (half the container's memory limit, at most 256 MB). */
  maxMemoryClients?: number | string
  /** Sentinels as "host:port" strings (each may hold several, comma-separated) or addresses. */
  sentinels?: Array<string | HostPort>
  /** Reads the sentinel password from this file. */
  sentinelPasswordFile?: string
  /** Named users as a map or as "name:password" strings. */
  users?: Map<string, string> | string[]
  /** Overrides the upstream URL's password (so it need not appear in a URL or a process list). */
  upstreamPassword?: string
  /** Reads the upstream password from this file (trailing newline removed). */
  upstreamPasswordFile?: string
  /** Reads the client password from this file. */
  passwordFile?: string
  upstreamTlsCa?: string
  upstreamTlsServername?: string
  upstreamTlsInsecure?: boolean
}

/** The most --workers: more processes than this only contend for the same cores and pool. */
export const MAX_WORKERS = 64

/** Parses redis://[user:pass@]host:port[/db], rediss://… (TLS) and unix:///path[?db=n]. */
export function parseUpstreamUrl (url: string): UpstreamAddress {
  let parsed: URL
  try {
    parsed = new URL(url)
  } catch {
    throw new ConfigError(`upstream: not a URL: ${redactUrl(url)}`)
  }
  const protocol = parsed.protocol
  const username = parsed.username !== '' ? decodeURIComponent(parsed.username) : undefined
  const password = parsed.password !== '' ? decodeURIComponent(parsed.password) : undefined
  if (protocol === 'unix:' || protocol === 'redis+unix:') {
    const db = parseDb(parsed.searchParams.get('db') ?? '0')
    return { host: 'localhost', port: 0, path: decodeURIComponent(parsed.pathname), tls: false, username, password, db }
  }
  if (protocol !== 'redis:' && protocol !== 'rediss:') {
    throw new ConfigError(`upstream: expected redis://, rediss:// or unix://, got ${protocol}//`)
  }
  const host = parsed.hostname.replace(/^\[(.*)\]$/, '$1')
  if (host === '') throw new ConfigError('upstream: missing host')
  const port = parsed.port === '' ? 6379 : Number(parsed.port)
  const db = parseDb(parsed.pathname.replace(/^\//, '') || '0')
  // A URL with only a password is written redis://:pass@host; with only a name, redis://pass@host
  // means the password (as Redis clients read it).
  if (username !== undefined && password === undefined) {
    return { host, port, tls: protocol === 'rediss:', password: username, db }
  }
  return { host, port, tls: protocol === 'rediss:', username, password, db }
}

/** Sentinel mode given as one URL (see parseSentinelUrl). */
export interface SentinelUrl {
  upstream: UpstreamAddress
  sentinels: HostPort[]
  master: string
  sentinelUsername?: string
  sentinelPassword?: string
}

const SENTINEL_URL = /^(rediss?)\+sentinel:\/\/(?:([^@/?#]*)@)?([^/?#]+)(?:\/([^/?#]*)(?:\/([^/?#]*))?)?\/?(?:\?([^#]*))?$/i

/**
 * `redis+sentinel://[user:pass@]host1[:port1][,host2[:port2]…]/master[/db][?sentinel_username=…&sentinel_password=…]`
 * (`rediss+sentinel://` for TLS to the master and the sentinels). The form of redis-sentinel-url,
 * RedisVL, LangChain and Prefect: sentinels with port 26379 when left out, the master's name, the
 * database; the credentials are the data credentials, the sentinels' own go in the query. Null
 * for any other URL.
 */
export function parseSentinelUrl (url: string): SentinelUrl | null {
  if (!/^rediss?\+sentinel:/i.test(url)) return null
  const m = SENTINEL_URL.exec(url)
  if (m === null) throw new ConfigError(`upstream: expected redis+sentinel://[user:pass@]host:port[,host:port…]/master[/db], got ${redactUrl(url)}`)
  const [, scheme, credentials, hosts, master, dbText, query] = m
  const decode = (text: string): string => {
    try {
      return decodeURIComponent(text)
    } catch {
      throw new ConfigError(`upstream: bad percent-encoding in ${redactUrl(url)}`)
    }
  }
  if (master === undefined || master === '') throw new ConfigError(`upstream: the master's name is missing in ${redactUrl(url)} (…/mymaster)`)
  // Host and port are unused: the sentinels name the master.
  const upstream: UpstreamAddress = { host: '127.0.0.1', port: 6379, tls: scheme.toLowerCase() === 'rediss', db: parseDb(dbText === undefined || dbText === '' ? '0' : dbText) }
  if (credentials !== undefined && credentials !== '') {
    const colon = credentials.indexOf(':')
    // As in redis://: a name alone is the password.
    if (colon === -1) upstream.password = decode(credentials)
    else {
      if (colon > 0) upstream.username = decode(credentials.slice(0, colon))
      upstream.password = decode(credentials.slice(colon + 1))
    }
  }
  const out: SentinelUrl = { upstream, sentinels: parseSentinels([decode(hosts)], 'upstream'), master: decode(master) }
  for (const [key, value] of new URLSearchParams(query ?? '')) {
    if (key === 'sentinel_username') out.sentinelUsername = value
    else if (key === 'sentinel_password') out.sentinelPassword = value
    else throw new ConfigError(`upstream: unknown option '${key}' in ${redactUrl(url)} (sentinel_username and sentinel_password are understood)`)
  }
  return out
}

function parseDb (text: string): number {
  const db = Number(text)
  if (!Number.isInteger(db) || db < 0) throw new ConfigError(`upstream: database must be a non-negative integer, got '${text}'`)
  return db
}

/** The URL with any password replaced, for logs and errors. */
export function redactUrl (url: string): string {
  return url.replace(/(\/\/[^:/@]*:)[^@]*@/, '$1***@').replace(/(\/\/)([^:/@]+)@/, '$1***@')
}

/** host:port (or the socket path) of the upstream, never with credentials. */
export function describeUpstream (up: UpstreamAddress): string {
  if (up.path !== undefined) return `unix:${up.path}`
  const host = up.host.includes(':') ? `[${up.host}]` : up.host
  return `${up.tls ? 'rediss' : 'redis'}://${host}:${up.port}/${up.db}`
}

/** "host:port" (port 26379 when left out; "[::1]:26379" for IPv6); several may be comma-separated. */
export function parseSentinels (entries: Array<string | HostPort>, what = 'sentinel', defaultPort = 26379): HostPort[] {
  const out: HostPort[] = []
  for (const entry of entries) {
    if (typeof entry !== 'string') {
      out.push({ host: entry.host, port: entry.port })
      continue
    }
    for (const text of entry.split(',').map((t) => t.trim()).filter((t) => t !== '')) {
      const m = /^(?:\[([^\]]+)\]|([^:]+))(?::(\d+))?$/.exec(text)
      const port = Number(m?.[3] ?? defaultPort)
      if (m === null || !Number.isInteger(port) || port < 1 || port > 65535) throw new ConfigError(`${what}: expected host:port, got '${text}'`)
      out.push({ host: m[1] ?? m[2], port })
    }
  }
  return out
}

/** Fills defaults and checks every value; throws ConfigError naming the bad option. */
export function validateConfig (options: ProxyOptions = {}): ProxyConfig {
  const { upstreamPassword, upstreamPasswordFile, passwordFile, upstreamTlsCa, upstreamTlsServername, upstreamTlsInsecure, users: userOption, outputLimits: limitsOption, maxOutputBufferBytes, maxMemoryClients: budgetOption, sentinels: sentinelOption, cluster: clusterOption, sentinelPasswordFile, ...rest } = stripUndefined(options)
  const merged = { ...DEFAULTS, ...rest }
  const sentinelUrl = typeof merged.upstream === 'string' ? parseSentinelUrl(merged.upstream) : null
  if (sentinelUrl !== null) {
    if (sentinelOption !== undefined && sentinelOption.length > 0) throw new ConfigError('upstream: a redis+sentinel:// URL names the sentinels; --sentinel cannot be given too')
    if (merged.sentinelMaster !== undefined && merged.sentinelMaster !== sentinelUrl.master) throw new ConfigError(`sentinel-master: '${merged.sentinelMaster}' differs from the master named in the redis+sentinel:// URL ('${sentinelUrl.master}')`)
    merged.sentinelMaster = sentinelUrl.master
    merged.sentinelUsername ??= sentinelUrl.sentinelUsername
    merged.sentinelPassword ??= sentinelUrl.sentinelPassword
    if (sentinelUrl.upstream.tls) merged.sentinelTls = true
  }
  const upstream: UpstreamAddress = { ...(sentinelUrl !== null ? sentinelUrl.upstream : typeof merged.upstream === 'string' ? parseUpstreamUrl(merged.upstream) : merged.upstream) }
  if (upstreamPasswordFile !== undefined) upstream.password = readSecret(upstreamPasswordFile, 'upstream-password-file')
  if (upstreamPassword !== undefined) upstream.password = upstreamPassword
  if (upstreamTlsCa !== undefined) upstream.tlsCa = upstreamTlsCa
  if (upstreamTlsServername !== undefined) upstream.tlsServername = upstreamTlsServername
  if (upstreamTlsInsecure !== undefined) upstream.tlsInsecure = upstreamTlsInsecure
  const password = passwordFile !== undefined ? readSecret(passwordFile, 'password-file') : merged.password
  const config: ProxyConfig = {
    ...merged,
    upstream,
    password: password === '' ? undefined : password,
    users: parseUsers(userOption),
    sentinels: sentinelUrl !== null ? sentinelUrl.sentinels : parseSentinels(sentinelOption ?? []),
    cluster: parseSentinels(clusterOption ?? [], 'cluster', 6379),
    sentinelPassword: sentinelPasswordFile !== undefined ? readSecret(sentinelPasswordFile, 'sentinel-password-file') : merged.sentinelPassword,
    denyCommands: merged.denyCommands.map((c) => c.trim().toLowerCase()).filter((c) => c !== ''),
    maxPins: merged.maxPins ?? Math.max(1, (merged.poolSize ?? DEFAULTS.poolSize) - 1),
    outputLimits: outputLimitsOption(limitsOption, maxOutputBufferBytes),
    maxMemoryClients: memoryBudgetOption(budgetOption)
  }
  if ((config.tlsCert === undefined) !== (config.tlsKey === undefined)) throw new ConfigError('tls-cert and tls-key go together')
  if (config.sentinels.length > 0 && (config.sentinelMaster === undefined || config.sentinelMaster === '')) throw new ConfigError('sentinel-master: the master\'s name is required with --sentinel')
  if (config.sentinels.length === 0 && config.sentinelMaster !== undefined) throw new ConfigError('sentinel: --sentinel-master needs at least one --sentinel host:port')
  if (config.sentinels.length > 0 && config.upstream.path !== undefined) throw new ConfigError('upstream: a unix:// upstream cannot be used with --sentinel')
  if (config.cluster.length > 0) {
    if (config.sentinels.length > 0) throw new ConfigError('cluster: --cluster and --sentinel cannot be used together')
    if (config.upstream.path !== undefined) throw new ConfigError('upstream: a unix:// upstream cannot be used with --cluster')
    if (config.upstream.db !== 0) throw new ConfigError(`upstream: a Redis Cluster has only database 0, got /${config.upstream.db}`)
  }
  if (typeof config.sentinelTls !== 'boolean') throw new ConfigError(`sentinel-tls: must be yes or no, got ${String(config.sentinelTls)}`)
  intOption(config, 'port', 0, 65535)
  // One connection must stay for shared traffic while another is pinned (a transaction, a
  // subscriber, a blocked BLPOP): with a pool of one, either kind would stall the other.
  if (config.poolSize === 1) throw new ConfigError('pool-size: must be at least 2 (one connection for shared traffic, at least one that a transaction, subscriber or blocking command can pin), got 1')
  intOption(config, 'poolSize', 2, 10000)
  intOption(config, 'maxPins', 1, config.poolSize - 1)
  intOption(config, 'minIdle', 0, config.poolSize)
  intOption(config, 'acquireTimeoutMs', 1, 3600_000)
  intOption(config, 'connectTimeoutMs', 1, 3600_000)
  intOption(config, 'commandTimeoutMs', 0, 86400_000)
  intOption(config, 'retryBudgetMs', 0, 3600_000)
  intOption(config, 'upstreamIdleTimeoutMs', 100, 86400_000)
  intOption(config, 'reconnectBaseMs', 1, 60_000)
  intOption(config, 'reconnectMaxMs', config.reconnectBaseMs, 600_000)
  intOption(config, 'maxClients', 1, 1_000_000)
  intOption(config, 'maxPipeline', 1, 1_000_000)
  intOption(config, 'maxBulkLength', 1, Number.MAX_SAFE_INTEGER)
  intOption(config, 'maxMultibulkLength', 1, 2147483647)
  intOption(config, 'maxInlineLength', 16, 1 << 30)
  intOption(config, 'clientIdleTimeoutMs', 0, 86400_000 * 365)
  intOption(config, 'shutdownGraceMs', 0, 3600_000)
  intOption(config, 'workers', 1, MAX_WORKERS)
  if (config.metricsPort !== undefined) intOption(config, 'metricsPort', 0, 65535)
  if (typeof config.host !== 'string' || config.host === '') throw new ConfigError('host: must be an address')
  if (typeof config.parkBlocking !== 'boolean') throw new ConfigError(`park-blocking: must be yes or no, got ${String(config.parkBlocking)}`)
  if (typeof config.sharedPubsub !== 'boolean') throw new ConfigError(`shared-pubsub: must be yes or no, got ${String(config.sharedPubsub)}`)
  if (typeof config.protectedMode !== 'boolean') throw new ConfigError(`protected-mode: must be yes or no, got ${String(config.protectedMode)}`)
  const levels = ['fatal', 'error', 'warn', 'info', 'debug', 'trace', 'silent']
  if (!levels.includes(config.logLevel)) throw new ConfigError(`log-level: must be one of ${levels.join(', ')}`)
  return config
}

function outputLimitsOption (option: string | OutputLimits | undefined, normalHard: number | undefined): OutputLimits {
  const limits = typeof option === 'string' ? parseOutputLimits(option) : structuredClone(option ?? DEFAULT_OUTPUT_LIMITS)
  if (normalHard !== undefined) {
    if (!Number.isInteger(normalHard) || normalHard < 0) throw new ConfigError(`max-output-buffer: must be a whole number of bytes, got ${String(normalHard)}`)
    limits.normal.hard = normalHard
  }
  for (const cls of ['normal', 'pubsub'] as const) {
    const l = limits[cls]
    if (![l.hard, l.soft, l.softSeconds].every((n) => Number.isInteger(n) && n >= 0)) throw new ConfigError(`client-output-buffer-limit: ${cls} limits must be whole numbers >= 0`)
  }
  return limits
}

function memoryBudgetOption (option: number | string | undefined): number {
  if (option === undefined || option === 'auto') return defaultClientMemoryBudget()
  const bytes = typeof option === 'number' ? option : parseMemory(option)
  if (!Number.isInteger(bytes) || bytes < 0) throw new ConfigError(`maxmemory-clients: must be bytes, a size such as 256mb, or auto, got ${String(option)}`)
  return bytes
}

function parseUsers (users: Map<string, string> | string[] | undefined): Map<string, string> {
  if (users === undefined) return new Map()
  if (users instanceof Map) return new Map(users)
  const map = new Map<string, string>()
  for (const entry of users) {
    const i = entry.indexOf(':')
    if (i <= 0 || i === entry.length - 1) throw new ConfigError('user: expected name:password')
    map.set(entry.slice(0, i), entry.slice(i + 1))
  }
  return map
}

function readSecret (path: string, option: string): string {
  try {
    return readFileSync(path, 'utf8').replace(/\r?\n$/, '')
  } catch (err) {
    throw new ConfigError(`${option}: cannot read ${path}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`)
  }
}

function intOption<K extends keyof ProxyConfig> (config: ProxyConfig, key: K, min: number, max: number): void {
  const value = config[key]
  if (typeof value !== 'number' || !Number.isInteger(value) || value < min || value > max) {
    throw new ConfigError(`${kebab(key)}: must be an integer from ${min} to ${max}, got ${String(value)}`)
  }
}

function kebab (key: string): string {
  return key.replace(/[A-Z]/g, (c) => `-${c.toLowerCase()}`)
}

function stripUndefined<T extends object> (obj: T): Partial<T> {
  return Object.fromEntries(Object.entries(obj).filter(([, v]) => v !== undefined)) as Partial<T>
}
