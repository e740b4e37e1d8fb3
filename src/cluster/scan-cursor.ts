/**
 * SCAN over a cluster with one cursor that stays a plain unsigned 64-bit decimal, as a client of
 * one Redis expects (clients parse it as an integer; some as a signed one, so the top bit is
 * never set):
 *
 *     cursor = master index × 2^53 + the master's own SCAN cursor
 *
 * The master index (bits 53-62, up to 1024 masters) counts the masters in the order of the lowest
 * slot each serves; the low 53 bits are the cursor that master gave (Redis's cursors walk its
 * hash table, far below 2^53). Cursor 0 starts at master 0; when a master's scan ends (its cursor
 * is 0) the next cursor is the next master's index with node cursor 0, and after the last master
 * it is 0. Over a dataset that does not change, each key is returned exactly once (every key
 * lives on one master; one Redis's SCAN returns a key once unless its table is resized).
 */

const NODE_BITS = 53n
const NODE_MASK = (1n << NODE_BITS) - 1n
const MAX_MASTERS = 1024
const U64 = 1n << 64n

export interface ScanPosition {
  /** Index of the master in the order of the lowest slot each serves. */
  master: number
  /** That master's own SCAN cursor. */
  node: bigint
}

/**
 * A client's cursor, read as Redis reads one (strtoul: optional sign, digits, base 10; an empty
 * cursor is 0, a negative one wraps around), or null where Redis answers `-ERR invalid cursor`.
 */
export function decodeScanCursor (text: string): ScanPosition | null {
  const m = /^([+-]?)(\d*)$/.exec(text)
  if (m === null) return null
  let value = m[2] === '' ? 0n : BigInt(m[2])
  if (value >= U64) return null
  if (m[1] === '-' && value !== 0n) value = U64 - value
  return { master: Number(value >> NODE_BITS), node: value & NODE_MASK }
}

/** The client's cursor for `node` on master `master`, or null if it does not fit. */
export function encodeScanCursor (master: number, node: bigint): bigint | null {
  if (master >= MAX_MASTERS || node > NODE_MASK) return null
  return (BigInt(master) << NODE_BITS) | node
}

/** `*2`, the cursor as a bulk string, then the keys array as a master sent it. */
export function scanReply (cursor: bigint, keys: Buffer): Buffer {
  const text = cursor.toString()
  return Buffer.concat([Buffer.from(`*2\r\n$${text.length}\r\n${text}\r\n`), keys])
}
