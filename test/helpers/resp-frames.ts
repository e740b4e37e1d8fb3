import { RawClient, cmd, sentinel } from './raw-client.js'

/**
 * A RESP2/RESP3 frame reader for tests, independent of respool's own framers (so a framer bug
 * cannot hide itself): splits what a RawClient received into whole frames as latin1 text.
 */

/** End offset of the complete RESP2/RESP3 frame starting at `pos`, or -1 if it is incomplete. */
export function frameEnd (buf: Buffer, pos: number): number {
  if (pos >= buf.length) return -1
  const lineEnd = buf.indexOf('\r\n', pos, 'latin1')
  if (lineEnd === -1) return -1
  const after = lineEnd + 2
  const type = String.fromCharCode(buf[pos])
  switch (type) {
    case '+': case '-': case ':': case '_': case ',': case '#': case '(':
      return after
    case '$': case '!': case '=': {
      const len = Number(buf.toString('latin1', pos + 1, lineEnd))
      if (len < 0) return after
      return after + len + 2 <= buf.length ? after + len + 2 : -1
    }
    case '*': case '>': case '~': case '%': case '|': {
      let n = Number(buf.toString('latin1', pos + 1, lineEnd))
      if (n < 0) return after
      if (type === '%' || type === '|') n *= 2
      let p = after
      for (let i = 0; i < n; i++) {
        p = frameEnd(buf, p)
        if (p === -1) return -1
      }
      return type === '|' ? frameEnd(buf, p) : p // an attribute precedes the reply it describes
    }
    default:
      throw new Error(`not a RESP frame at ${pos}: ${JSON.stringify(buf.toString('latin1', pos, pos + 60))}`)
  }
}

/** Reads whole frames (as latin1 text) from a RawClient. */
export class FrameReader {
  readonly #queue: string[] = []
  constructor (readonly client: RawClient) {}

  async #drain (): Promise<void> {
    const buf = this.client.buffered
    let pos = 0
    const ends: number[] = []
    for (;;) {
      const end = frameEnd(buf, pos)
      if (end < 0) break
      ends.push(end)
      pos = end
    }
    if (pos === 0) return
    const bytes = await this.client.read(pos)
    let start = 0
    for (const end of ends) {
      this.#queue.push(bytes.toString('latin1', start, end))
      start = end
    }
  }

  /** The next frame; throws (with what arrived) if none completes within `timeoutMs`. */
  async next (timeoutMs = 3000): Promise<string> {
    const deadline = Date.now() + timeoutMs
    for (;;) {
      if (this.#queue.length > 0) return this.#queue.shift() as string
      await this.#drain()
      if (this.#queue.length > 0) return this.#queue.shift() as string
      if (this.client.closed) throw new Error(`connection closed; partial bytes: ${JSON.stringify(this.client.buffered.toString('latin1', 0, 300))}`)
      const left = deadline - Date.now()
      if (left <= 0) throw new Error(`no frame within ${timeoutMs} ms; partial bytes: ${JSON.stringify(this.client.buffered.toString('latin1', 0, 300))}`)
      await this.#dataOrTimeout(left)
    }
  }

  async take (n: number, timeoutMs = 3000): Promise<string[]> {
    const out: string[] = []
    for (let i = 0; i < n; i++) out.push(await this.next(timeoutMs))
    return out
  }

  /**
   * Sends a sentinel (ECHO of a fresh token) and returns every frame that arrives before its
   * reply: [] proves nothing was queued behind the frames read so far (replies come in order).
   */
  async framesBeforeSentinel (timeoutMs = 3000): Promise<string[]> {
    const s = sentinel()
    this.client.write(s.command)
    const extra: string[] = []
    for (;;) {
      const frame = await this.next(timeoutMs)
      if (frame === s.reply) return extra
      extra.push(frame)
      if (extra.length > 1000) return extra
    }
  }

  /** Frames already complete, without waiting. */
  async available (): Promise<string[]> {
    await this.#drain()
    return this.#queue.splice(0)
  }

  async #dataOrTimeout (ms: number): Promise<void> {
    const socket = this.client.socket
    await new Promise<void>((resolve) => {
      const done = (): void => {
        clearTimeout(timer)
        socket.off('data', done)
        socket.off('close', done)
        resolve()
      }
      const timer = setTimeout(done, ms)
      socket.on('data', done)
      socket.on('close', done)
    })
  }
}

/** Splits complete frames; the rest (an incomplete frame) is returned as `rest`. */
export function splitFrames (buf: Buffer): { frames: string[], rest: string } {
  const frames: string[] = []
  let pos = 0
  for (;;) {
    const end = frameEnd(buf, pos)
    if (end < 0) break
    frames.push(buf.toString('latin1', pos, end))
    pos = end
  }
  return { frames, rest: buf.toString('latin1', pos) }
}

/** A raw connection and a frame reader on it. */
export interface FramedClient {
  client: RawClient
  frames: FrameReader
}

/** Connects to `port`; the client is added to `opened` so the test can close it. */
export async function connectFramed (port: number, opened: RawClient[]): Promise<FramedClient> {
  const client = await RawClient.connect(port)
  opened.push(client)
  return { client, frames: new FrameReader(client) }
}

/**
 * Writes `input` on a fresh connection to `port`, then a sentinel, and returns every byte
 * answered before the sentinel's reply (latin1): the whole reply stream to `input`, nothing
 * cut off and nothing extra. Run against Redis and against respool, the two must be equal.
 */
export async function replyStream (port: number, input: Buffer, timeoutMs = 10000): Promise<string> {
  const client = await RawClient.connect(port)
  try {
    return await replyStreamOn(new FrameReader(client), input, timeoutMs)
  } finally {
    client.close()
  }
}

/** As replyStream, on an open connection (its state carries over between calls). */
export async function replyStreamOn (reader: FrameReader, input: Buffer, timeoutMs = 10000): Promise<string> {
  const s = sentinel()
  reader.client.write(Buffer.concat([input, s.command]))
  let out = ''
  for (;;) {
    const frame = await reader.next(timeoutMs)
    if (frame === s.reply) return out
    out += frame
  }
}

/** One command on a fresh connection to `port` (Redis itself, to check what happened there); returns its reply frame. */
export async function commandOn (port: number, ...args: Array<string | Buffer>): Promise<string> {
  const client = await RawClient.connect(port)
  try {
    client.write(cmd(...args))
    return await new FrameReader(client).next()
  } finally {
    client.close()
  }
}
