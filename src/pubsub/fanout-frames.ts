/**
 * The frames the shared pub/sub fan-out sends to clients. Confirmations are built for each
 * client (its own protocol and subscription count); messages are Redis's own bytes.
 */

/** `subscribe`/`unsubscribe`/`psubscribe`/`punsubscribe` confirmation as Redis sends it (name null: nothing to leave). */
export function confirmation (resp: number, kind: string, name: string | null, count: number): Buffer {
  const head = `${resp === 3 ? '>' : '*'}3\r\n$${kind.length}\r\n${kind}\r\n`
  const tail = `:${count}\r\n`
  if (name === null) return Buffer.from(head + (resp === 3 ? '_\r\n' : '$-1\r\n') + tail, 'latin1')
  return Buffer.from(`${head}$${name.length}\r\n${name}\r\n${tail}`, 'latin1')
}

/**
 * The channel of a `message` or the pattern of a `pmessage` (the element after the kind), as
 * latin1 text, read from the frame without decoding anything else.
 */
export function messageTopic (frame: Buffer): string {
  let lineEnd = frame.indexOf(13, 4)
  let pos = lineEnd + 2 + Number(frame.toString('latin1', 5, lineEnd)) + 2
  lineEnd = frame.indexOf(13, pos)
  const len = Number(frame.toString('latin1', pos + 1, lineEnd))
  pos = lineEnd + 2
  return frame.toString('latin1', pos, pos + len)
}

/** A copy of the frame with another first byte (`*` ⇄ `>`): RESP2 and RESP3 messages differ only there. */
export function withHead (frame: Buffer, head: number): Buffer {
  const copy = Buffer.allocUnsafe(frame.length)
  frame.copy(copy)
  copy[0] = head
  return copy
}
