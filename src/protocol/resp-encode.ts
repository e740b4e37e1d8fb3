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

/** A null in the client's protocol: `$-1` in RESP2, `_` in RESP3. */
export function nullReply (resp: number): Buffer {
  return resp === 3 ? RESP3_NULL : NULL_BULK
}

/** A null array in the client's protocol: `*-1` in RESP2, `_` in RESP3. */
export function nullArray (resp: number): Buffer {
  return resp === 3 ? RESP3_NULL : NULL_ARRAY
}

/** Long text the way Redis sends CLIENT INFO/LIST: verbatim in RESP3, bulk in RESP2. */
export function verbatim (text: string, resp: number): Buffer {
  if (resp !== 3) return bulk(text)
  const data = Buffer.from(`txt:${text}`)
  return Buffer.concat([Buffer.from(`=${data.length}${CRLF}`), data, Buffer.from(CRLF)])
}

export type LocalValue = string | number | null | LocalValue[] | { map: Array<[string, LocalValue]> }

/** Encodes a locally made value in the client's protocol (maps become flat arrays in RESP2). */
export function encodeValue (value: LocalValue, resp: number): Buffer {
  if (value === null) return nullReply(resp)
  if (typeof value === 'string') return bulk(value)
  if (typeof value === 'number') return integer(value)
  if (Array.isArray(value)) {
    return Buffer.concat([Buffer.from(`*${value.length}${CRLF}`), ...value.map((v) => encodeValue(v, resp))])
  }
  const header = resp === 3 ? `%${value.map.length}${CRLF}` : `*${value.map.length * 2}${CRLF}`
  return Buffer.concat([Buffer.from(header), ...value.map.flatMap(([k, v]) => [bulk(k), encodeValue(v, resp)])])
}
