import RedisParser from 'redis-parser'
import { UpstreamConnection } from './upstream-connection.js'
import type { UpstreamAddress } from '../config.js'
import type { Logger } from '../ops/logger.js'
import { hostPort } from './topology.js'

/** One sentinel's address. */
export interface SentinelEndpoint {
  host: string
  port: number
}

/** How to reach sentinels: their own credentials and TLS, separate from the data nodes'. */
export interface SentinelAccess {
  username?: string
  password?: string
  tls: boolean
  tlsCa?: string
  tlsServername?: string
  tlsInsecure?: boolean
  timeoutMs: number
}

/** What one sentinel said about a master. */
export interface SentinelAnswer {
  /** The master's address, or null when this sentinel does not know the name. */
  master: SentinelEndpoint | null
  /** The other sentinels watching the same master (SENTINEL SENTINELS). */
  sentinels: SentinelEndpoint[]
}

/** A sentinel refused respool's credentials (or wants some): a configuration problem. */
export class SentinelAuthError extends Error {}

let nextId = 1

function addressOf (endpoint: SentinelEndpoint, access: SentinelAccess): UpstreamAddress {
  return {
    host: endpoint.host,
    port: endpoint.port,
    tls: access.tls,
    username: access.username,
    password: access.password,
    db: 0,
    tlsCa: access.tlsCa,
    tlsServername: access.tlsServername,
    tlsInsecure: access.tlsInsecure
  }
}

/**
 * A control connection to one sentinel: respool's own connection class (TLS, AUTH, timeouts),
 * in RESP2, with replies decoded because respool itself reads them.
 */
async function connect (endpoint: SentinelEndpoint, access: SentinelAccess): Promise<UpstreamConnection> {
  try {
    return await UpstreamConnection.connect({
      id: -(nextId++),
      address: addressOf(endpoint, access),
      connectTimeoutMs: access.timeoutMs,
      commandTimeoutMs: access.timeoutMs
    })
  } catch (err) {
    const message = (err as Error).message
    if (/AUTH failed/.test(message)) throw new SentinelAuthError(`sentinel ${hostPort(endpoint.host, endpoint.port)} refused the sentinel credentials: ${message.replace(/^.*AUTH failed: /, '')}`)
    throw err
  }
}

/** Asks one sentinel where master `name` is and which sentinels watch it. */
export async function askSentinel (endpoint: SentinelEndpoint, access: SentinelAccess, name: string): Promise<SentinelAnswer> {
  const conn = await connect(endpoint, access)
  try {
    const [addr, sentinels] = await Promise.all([
      ask(conn, ['SENTINEL', 'GET-MASTER-ADDR-BY-NAME', name]),
      ask(conn, ['SENTINEL', 'SENTINELS', name])
    ])
    if (addr instanceof Error) {
      if (/^(NOAUTH|WRONGPASS|NOPERM)/.test(addr.message)) throw new SentinelAuthError(`sentinel ${hostPort(endpoint.host, endpoint.port)}: ${addr.message}`)
      throw addr
    }
    let master: SentinelEndpoint | null = null
    if (Array.isArray(addr) && addr.length === 2) master = { host: String(addr[0]), port: Number(addr[1]) }
    return { master, sentinels: Array.isArray(sentinels) ? sentinels.flatMap(sentinelEntry) : [] }
  } finally {
    conn.destroy()
  }
}

/** One entry of SENTINEL SENTINELS: a flat list of field, value pairs (RESP2). */
function sentinelEntry (entry: unknown): SentinelEndpoint[] {
  if (!Array.isArray(entry)) return []
  const fields = new Map<string, string>()
  for (let i = 0; i + 1 < entry.length; i += 2) fields.set(String(entry[i]), String(entry[i + 1]))
  const host = fields.get('ip')
  const port = Number(fields.get('port'))
  return host !== undefined && Number.isInteger(port) && port > 0 ? [{ host, port }] : []
}

/**
 * The sentinel events followed: the switch itself, and the moment the failover leader tells the
 * chosen replica to become master (`+failover-state-send-slaveof-noone`). From then on the old
 * master may still accept writes, but they are no longer replicated: a write sent there in the
 * second before +switch-master would be lost (or, for a job queue, its job taken twice).
 */
export const SUBSCRIBED_EVENTS = ['+switch-master', '+failover-state-send-slaveof-noone']

/**
 * A subscription to the SUBSCRIBED_EVENTS on one sentinel, kept open: it reconnects a second after it
 * is lost. Each message's payload (`<name> <old-ip> <old-port> <new-ip> <new-port>`) is passed on.
 */
export class SwitchMasterSubscription {
  readonly endpoint: SentinelEndpoint
  readonly #access: SentinelAccess
  readonly #onMessage: (payload: string, from: SentinelEndpoint, event: string) => void
  readonly #log: Logger
  #conn: UpstreamConnection | null = null
  #timer: NodeJS.Timeout | null = null
  #closed = false

  constructor (endpoint: SentinelEndpoint, access: SentinelAccess, log: Logger, onMessage: (payload: string, from: SentinelEndpoint, event: string) => void) {
    this.endpoint = endpoint
    this.#access = access
    this.#log = log
    this.#onMessage = onMessage
  }

  start (): void {
    if (this.#closed) return
    connect(this.endpoint, this.#access).then((conn) => {
      if (this.#closed) {
        conn.destroy()
        return
      }
      this.#conn = conn
      const parser = new RedisParser({
        returnReply: (reply: unknown) => {
          if (Array.isArray(reply) && reply[0] === 'message' && SUBSCRIBED_EVENTS.includes(String(reply[1]))) this.#onMessage(String(reply[2]), this.endpoint, String(reply[1]))
        },
        returnError: () => {},
        returnBuffers: false
      })
      conn.tunnel = (frame) => {
        parser.execute(frame)
        return true
      }
      conn.onClose = () => {
        this.#conn = null
        this.#retry()
      }
      conn.sendRaw(Buffer.from(`*${SUBSCRIBED_EVENTS.length + 1}\r\n$9\r\nSUBSCRIBE\r\n${SUBSCRIBED_EVENTS.map((e) => `$${e.length}\r\n${e}\r\n`).join('')}`))
    }, (err: Error) => {
      this.#log.debug({ sentinel: hostPort(this.endpoint.host, this.endpoint.port), err: err.message }, 'sentinel subscription failed; retrying')
      this.#retry()
    })
  }

  close (): void {
    this.#closed = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#conn?.destroy()
    this.#conn = null
  }

  #retry (): void {
    if (this.#closed) return
    this.#timer = setTimeout(() => {
      this.#timer = null
      this.start()
    }, 1000)
    this.#timer.unref()
  }
}

/** Sends one command on a control connection; resolves with the decoded reply, or an Error for an error reply. */
export function ask (conn: UpstreamConnection, args: string[]): Promise<unknown> {
  return new Promise((resolve, reject) => {
    conn.sendInternal(args, (frame, err) => {
      if (err !== null || frame === null) {
        reject(err ?? new Error('no reply'))
        return
      }
      let value: unknown = null
      const parser = new RedisParser({
        returnReply: (reply: unknown) => { value = reply },
        returnError: (error: Error) => { value = new Error(error.message) },
        returnBuffers: false
      })
      parser.execute(frame)
      resolve(value)
    })
  })
}
