import net from 'node:net'
import { once } from 'node:events'

/**
 * A client that sends exact bytes and reads exact bytes, with no RESP library in between,
 * so tests compare what the proxy wrote byte for byte.
 */
export class RawClient {
  readonly socket: net.Socket
  // Chunks are joined only when read: concatenating on every 'data' event would make a
  // 100 MB reply cost O(size^2) in the test itself.
  #chunks: Buffer[] = []
  #length = 0
  #waiters: Array<() => void> = []
  #closed = false

  private constructor (socket: net.Socket) {
    this.socket = socket
    socket.on('data', (chunk: Buffer) => {
      this.#chunks.push(chunk)
      this.#length += chunk.length
      this.#wake()
    })
    socket.on('close', () => { this.#closed = true; this.#wake() })
    socket.on('error', () => {})
  }

  static async connect (port: number, host = '127.0.0.1'): Promise<RawClient> {
    const socket = net.connect({ port, host })
    await once(socket, 'connect')
    return new RawClient(socket)
  }

  write (data: string | Buffer): void {
    this.socket.write(data)
  }

  get closed (): boolean {
    return this.#closed
  }

  /** Waits for exactly `length` bytes (or fewer if the socket closes), and removes them. */
  async read (length: number, timeoutMs = 5000): Promise<Buffer> {
    await this.#until(() => this.#length >= length || this.#closed, timeoutMs, `${length} bytes`)
    const all = this.#take()
    const out = all.subarray(0, length)
    this.#put(all.subarray(out.length))
    return out
  }

  /**
   * Reads a reply stream that must be exactly `expected`, for `assert.equal(got, expected)`:
   * as many bytes as `expected` has, then proof that nothing else was queued behind them. A
   * sentinel (ECHO of a fresh token) is sent and its reply must be the very next bytes: replies
   * come in order, so an extra or duplicated reply would arrive before it. Anything that did is
   * appended to the returned text, so the comparison fails and shows it.
   *
   * `sentinel: false` skips that step for a connection where ECHO would change what follows
   * (inside MULTI, subscribed in RESP2, CLIENT REPLY OFF, about to be closed): a later exact
   * read with the sentinel, or a read until close, then covers these bytes too.
   */
  async readExactly (expected: string | Buffer, options: { timeoutMs?: number, sentinel?: boolean } = {}): Promise<string> {
    const timeoutMs = options.timeoutMs ?? 5000
    const want = typeof expected === 'string' ? expected : expected.toString('latin1')
    const got = (await this.read(Buffer.byteLength(want, 'latin1'), timeoutMs)).toString('latin1')
    if (got !== want || options.sentinel === false) return got
    const s = sentinel()
    this.write(s.command)
    const next = (await this.read(s.reply.length, timeoutMs)).toString('latin1')
    if (next === s.reply) return got
    // Something came before the sentinel's reply: collect up to it (or close) and show it all.
    await this.#until(() => this.buffered.includes(s.reply, 0, 'latin1') || this.#closed, 2000, 'the sentinel reply').catch(() => {})
    return got + next + this.#take().toString('latin1')
  }

  /** Resolves when the proxy closed the connection; returns whatever arrived before. */
  async readUntilClose (timeoutMs = 5000): Promise<string> {
    await this.#until(() => this.#closed, timeoutMs, 'close')
    return this.#take().toString('latin1')
  }

  /** Drops everything received so far (a load generator that does not check its replies). */
  discard (): void {
    this.#chunks = []
    this.#length = 0
  }

  /** Bytes received and not yet read. */
  get buffered (): Buffer {
    const all = this.#take()
    this.#put(all)
    return all
  }

  #take (): Buffer {
    const all = this.#chunks.length === 1 ? this.#chunks[0] : Buffer.concat(this.#chunks, this.#length)
    this.#chunks = []
    this.#length = 0
    return all
  }

  #put (rest: Buffer): void {
    if (rest.length === 0) return
    this.#chunks.unshift(rest)
    this.#length += rest.length
  }

  close (): void {
    this.socket.destroy()
  }

  async #until (cond: () => boolean, timeoutMs: number, what: string): Promise<void> {
    const deadline = Date.now() + timeoutMs
    while (!cond()) {
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`timed out waiting for ${what}; have ${this.#length} bytes: ${JSON.stringify(this.buffered.toString('latin1', 0, 300))}`)
      await new Promise<void>((resolve) => {
        const t = setTimeout(resolve, left)
        this.#waiters.push(() => { clearTimeout(t); resolve() })
      })
    }
  }

  #wake (): void {
    const waiters = this.#waiters
    this.#waiters = []
    for (const w of waiters) w()
  }
}

let sentinels = 0

/**
 * A command whose reply nothing else can produce: ECHO of a token unique in this process. Sent
 * after a pipeline, its reply marks the end of that pipeline's replies.
 */
export function sentinel (): { command: Buffer, reply: string } {
  const token = `respool-test-sentinel:${process.pid}:${++sentinels}`
  return { command: cmd('ECHO', token), reply: `$${token.length}\r\n${token}\r\n` }
}

/** Encodes a command as a multibulk (what a normal client sends). */
export function cmd (...args: Array<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}\r\n`)]
  for (const a of args) {
    const b = typeof a === 'string' ? Buffer.from(a) : a
    parts.push(Buffer.from(`$${b.length}\r\n`), b, Buffer.from('\r\n'))
  }
  return Buffer.concat(parts)
}
