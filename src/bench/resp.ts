import net from 'node:net'
import tls from 'node:tls'
import { readFileSync } from 'node:fs'
import { once } from 'node:events'
import Denque from 'denque'
import RedisParser from 'redis-parser'
import type { UpstreamAddress } from '../config.js'

/**
 * The benchmark's own RESP client: one socket, commands written as raw RESP, replies decoded by
 * redis-parser and handed out in order. No retries, no reconnects, no queue while connecting:
 * what it measures is one write and the replies to it.
 */

/** A reply: strings, integers, null, arrays of replies, or an error reply. */
export type Reply = string | number | null | ReplyError | Reply[]

/** An error reply from the server (`-ERR …`); a value, not a failure of the connection. */
export class ReplyError {
  constructor (readonly message: string) {}
}

/** Called once per reply, in order; `reply` is undefined when the connection failed first. */
export type OnReply = (reply: Reply | undefined, failure: Error | undefined) => void

/**
 * Commands the benchmark never sends, whatever its options: it must be safe to point at a
 * production Redis. A frame naming one of them is refused before it reaches the socket.
 */
export const FORBIDDEN_COMMANDS: ReadonlySet<string> = new Set(['flushall', 'flushdb', 'config', 'debug', 'shutdown', 'keys', 'swapdb', 'move', 'rename', 'migrate', 'restore', 'save', 'bgsave', 'bgrewriteaof', 'replicaof', 'slaveof', 'failover', 'script', 'function', 'module', 'acl'])

/** Encodes one command as a RESP array of bulk strings. */
export function encodeCommand (args: ReadonlyArray<string | Buffer>): Buffer {
  const name = String(args[0]).toLowerCase()
  if (FORBIDDEN_COMMANDS.has(name)) throw new Error(`respool bench never sends ${name.toUpperCase()}`)
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)]
  for (const arg of args) {
    const bytes = typeof arg === 'string' ? Buffer.from(arg) : arg
    parts.push(Buffer.from(`$${bytes.length}\r\n`), bytes, CRLF)
  }
  return Buffer.concat(parts)
}

const CRLF = Buffer.from('\r\n')

/** Where to connect: a Redis or a respool, with its credentials and database. */
export type Endpoint = UpstreamAddress

export class RespConnection {
  readonly #socket: net.Socket
  readonly #pending = new Denque<OnReply>()
  readonly #parser: RedisParser
  #failure: Error | null = null

  private constructor (socket: net.Socket) {
    this.#socket = socket
    this.#parser = new RedisParser({
      returnReply: (reply: unknown) => { this.#deliver(reply as Reply) },
      returnError: (err: Error) => { this.#deliver(new ReplyError(err.message)) },
      returnFatalError: (err: Error) => { this.#fail(err) },
      returnBuffers: false,
      stringNumbers: false
    })
    socket.setNoDelay(true)
    socket.on('data', (chunk: Buffer) => { this.#parser.execute(chunk) })
    socket.on('error', (err) => { this.#fail(err) })
    socket.on('close', () => { this.#fail(new Error('connection closed')) })
  }

  /** Connects, authenticates and selects the endpoint's database (when not 0 or `select` is false). */
  static async open (endpoint: Endpoint, options: { select?: boolean, name?: string } = {}): Promise<RespConnection> {
    const socket = endpoint.path !== undefined
      ? net.connect({ path: endpoint.path })
      : endpoint.tls
        ? tls.connect({
          host: endpoint.host,
          port: endpoint.port,
          servername: endpoint.tlsServername ?? (net.isIP(endpoint.host) === 0 ? endpoint.host : undefined),
          ca: endpoint.tlsCa !== undefined ? readFileSync(endpoint.tlsCa) : undefined,
          rejectUnauthorized: endpoint.tlsInsecure !== true
        })
        : net.connect({ host: endpoint.host, port: endpoint.port })
    const connected = endpoint.tls ? 'secureConnect' : 'connect'
    const timer = setTimeout(() => { socket.destroy(new Error('connect timeout (5 s)')) }, 5000)
    try {
      await once(socket, connected)
    } finally {
      clearTimeout(timer)
    }
    const conn = new RespConnection(socket)
    const setup: string[][] = []
    if (endpoint.password !== undefined) setup.push(endpoint.username !== undefined ? ['AUTH', endpoint.username, endpoint.password] : ['AUTH', endpoint.password])
    if (options.select !== false && endpoint.db !== 0) setup.push(['SELECT', String(endpoint.db)])
    if (options.name !== undefined) setup.push(['CLIENT', 'SETNAME', options.name])
    for (const args of setup) {
      const reply = await conn.call(...args)
      if (reply instanceof ReplyError) {
        conn.destroy()
        throw new Error(`${args[0]} failed: ${reply.message}`)
      }
    }
    return conn
  }

  get failed (): boolean {
    return this.#failure !== null
  }

  /** Writes an encoded frame holding `count` commands; `onReply` is called once per reply. */
  send (frame: Buffer, count: number, onReply: OnReply): void {
    if (this.#failure !== null) {
      for (let i = 0; i < count; i++) onReply(undefined, this.#failure)
      return
    }
    for (let i = 0; i < count; i++) this.#pending.push(onReply)
    this.#socket.write(frame)
  }

  /** One command; resolves with its reply (error replies included), rejects if the connection fails. */
  async call (...args: Array<string | Buffer>): Promise<Reply> {
    return await new Promise((resolve, reject) => {
      this.send(encodeCommand(args), 1, (reply, failure) => {
        if (failure !== undefined) reject(failure)
        else resolve(reply as Reply)
      })
    })
  }

  /** Several commands in one write; resolves with their replies in order. */
  async pipeline (commands: Array<Array<string | Buffer>>): Promise<Reply[]> {
    if (commands.length === 0) return []
    const frame = Buffer.concat(commands.map(encodeCommand))
    return await new Promise((resolve, reject) => {
      const replies: Reply[] = []
      let failed = false
      this.send(frame, commands.length, (reply, failure) => {
        if (failed) return
        if (failure !== undefined) {
          failed = true
          reject(failure)
          return
        }
        replies.push(reply as Reply)
        if (replies.length === commands.length) resolve(replies)
      })
    })
  }

  /** Closes after what was written is sent. */
  async close (): Promise<void> {
    if (this.#socket.destroyed) return
    const closed = once(this.#socket, 'close')
    this.#socket.end()
    await closed
  }

  destroy (): void {
    this.#socket.destroy()
  }

  #deliver (reply: Reply): void {
    const onReply = this.#pending.shift()
    if (onReply === undefined) {
      this.#fail(new Error('a reply nobody asked for'))
      return
    }
    onReply(reply, undefined)
  }

  #fail (err: Error): void {
    if (this.#failure === null) this.#failure = err
    this.#socket.destroy()
    let onReply: OnReply | undefined
    while ((onReply = this.#pending.shift()) !== undefined) onReply(undefined, this.#failure)
  }
}

/** `host:port`, `[v6]:port`, or a redis://, rediss://, unix:// URL, as an endpoint. */
export function parseEndpoint (text: string, parseUrl: (url: string) => UpstreamAddress): UpstreamAddress {
  if (/^[a-z+]+:\/\//i.test(text)) return parseUrl(text)
  const match = /^\[?([^\]]*?)\]?:(\d+)$/.exec(text)
  if (match === null) throw new Error(`expected host:port or a redis:// URL, got ${text}`)
  return { host: match[1] === '' ? '127.0.0.1' : match[1], port: Number(match[2]), tls: false, db: 0 }
}

/** `name:value` lines of INFO and RESPOOL POOLS/STATS, as a map. */
export function parseInfo (text: string): Map<string, string> {
  const fields = new Map<string, string>()
  for (const line of text.split(/\r?\n/)) {
    const at = line.indexOf(':')
    if (at <= 0 || line.startsWith('#')) continue
    fields.set(line.slice(0, at), line.slice(at + 1).trim())
  }
  return fields
}
