/**
 * Recognises pub/sub frames on a subscribed connection without decoding the rest: messages
 * (message, pmessage, smessage) and confirmations ((p|s)(un)subscribe with their count).
 * In RESP2 they are arrays (`*`); in RESP3 they are pushes (`>`).
 */
export type PubsubKind = 'message' | 'subscribe' | 'unsubscribe'
export type PubsubFamily = 'channel' | 'pattern' | 'shard'

export interface PubsubFrame {
  kind: PubsubKind
  family: PubsubFamily
  /** Channel or pattern (confirmations only; null for an UNSUBSCRIBE with nothing to leave). */
  name: string | null
  /** Subscriptions left after a confirmation. */
  count: number
}

const KINDS: ReadonlyArray<[string, PubsubKind, PubsubFamily]> = [
  ['message', 'message', 'channel'],
  ['pmessage', 'message', 'pattern'],
  ['smessage', 'message', 'shard'],
  ['subscribe', 'subscribe', 'channel'],
  ['psubscribe', 'subscribe', 'pattern'],
  ['ssubscribe', 'subscribe', 'shard'],
  ['unsubscribe', 'unsubscribe', 'channel'],
  ['punsubscribe', 'unsubscribe', 'pattern'],
  ['sunsubscribe', 'unsubscribe', 'shard']
]
const PREFIXES = KINDS.map(([word, kind, family]) => ({ bytes: Buffer.from(`$${word.length}\r\n${word}\r\n`), kind, family }))

/** Parses a pub/sub frame, or returns null for anything else. `resp` selects `*` or `>`. */
export function parsePubsubFrame (frame: Buffer, resp: number): PubsubFrame | null {
  if (frame[0] !== (resp === 3 ? 0x3e : 0x2a)) return null
  // '*3\r\n' or '*4\r\n' (pmessage), then the kind as a bulk string.
  if (frame.length < 8 || frame[2] !== 13 || (frame[1] !== 0x33 && frame[1] !== 0x34)) return null
  for (const p of PREFIXES) {
    if (frame.length < 4 + p.bytes.length || frame.compare(p.bytes, 0, p.bytes.length, 4, 4 + p.bytes.length) !== 0) continue
    if (p.kind === 'message') return { kind: 'message', family: p.family, name: null, count: 0 }
    let pos = 4 + p.bytes.length
    let name: string | null = null
    if (frame[pos] === 0x24 && frame[pos + 1] !== 0x2d) { // '$' and not '$-1'
      const lineEnd = frame.indexOf(13, pos)
      const len = Number(frame.toString('latin1', pos + 1, lineEnd))
      name = frame.toString('latin1', lineEnd + 2, lineEnd + 2 + len)
      pos = lineEnd + 2 + len + 2
    } else {
      pos = frame.indexOf(10, pos) + 1 // '$-1\r\n' or RESP3 '_\r\n'
    }
    if (frame[pos] !== 0x3a) return null // ':' count
    const count = Number(frame.toString('latin1', pos + 1, frame.indexOf(13, pos)))
    return { kind: p.kind, family: p.family, name, count }
  }
  return null
}

/** The family a (p|s)(un)subscribe command works on. */
export function commandFamily (name: string): PubsubFamily {
  if (name === 'psubscribe' || name === 'punsubscribe') return 'pattern'
  if (name === 'ssubscribe' || name === 'sunsubscribe') return 'shard'
  return 'channel'
}
