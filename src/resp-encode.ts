/**
 * Encoders for the few replies respool makes itself (local answers, errors).
 * Replies from Redis are never re-encoded: they are forwarded as the bytes that arrived.
 */
const CRLF = '\r\n'

export const OK = Buffer.from('+OK\r\n')
export const PONG = Buffer.from('+PONG\r\n')
export const NULL_BULK = Buffer.from('$-1\r\n')
export const NULL_ARRAY = Buffer.from('*-1\r\n')
export const RESP3_NULL = Buffer.from('_\r\n')

export function simpleString (text: string): Buffer {
  return Buffer.from(`+${text}${CRLF}`)
}

export function errorReply (text: string): Buffer {
  return Buffer.from(`-${text.replace(/[\r\n]+/g, ' ')}${CRLF}`)
}

export function integer (n: number | bigint): Buffer {
  return Buffer.from(`:${n}${CRLF}`)
}

export function bulk (value: string | Buffer | null): Buffer {
  if (value === null) return NULL_BULK
  const data = typeof value === 'string' ? Buffer.from(value) : value
  return Buffer.concat([Buffer.from(`$${data.length}${CRLF}`), data, Buffer.from(CRLF)])
}

/** A command as a client would send it: an array of bulk strings. */
export function command (args: ReadonlyArray<string | Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.from(`*${args.length}${CRLF}`)]
  for (const arg of args) parts.push(bulk(arg))
  return Buffer.concat(parts)
}
