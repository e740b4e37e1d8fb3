import commands from '@ioredis/commands'

/**
 * A command's lowercased name without making two strings per command.
 *
 * Every command needs its name (routing, classes, metrics), and at 100k commands/s the
 * `toString()` + `toLowerCase()` pair is a steady stream of garbage for the young-generation
 * collector, whose pauses are respool's p99. Known names (the `@ioredis/commands` list) are
 * kept as strings, found by a case-insensitive hash of the bytes and checked byte by byte; any
 * other name is made the slow way. Unknown names are never added, so a client sending random
 * names cannot grow this table.
 */

const MAX_CACHED_LENGTH = 32
const byHash = new Map<number, string>()

function hashLower (bytes: Uint8Array, start: number, end: number): number {
  let h = 0x811c9dc5 ^ (end - start)
  for (let i = start; i < end; i++) {
    let b = bytes[i]
    if (b >= 65 && b <= 90) b |= 0x20
    h = Math.imul(h ^ b, 0x01000193)
  }
  return h >>> 0
}

for (const name of commands.list) {
  const bytes = Buffer.from(name, 'latin1')
  const h = hashLower(bytes, 0, bytes.length)
  if (!byHash.has(h)) byHash.set(h, name) // a colliding name is simply made the slow way
}

function matches (name: string, bytes: Uint8Array, start: number, end: number): boolean {
  if (name.length !== end - start) return false
  for (let i = 0; i < name.length; i++) {
    let b = bytes[start + i]
    if (b >= 65 && b <= 90) b |= 0x20
    if (b !== name.charCodeAt(i)) return false
  }
  return true
}

/** The bytes `start..end` of `frame` as a lowercased latin1 string. */
export function commandName (frame: Buffer, start: number, end: number): string {
  if (end - start <= MAX_CACHED_LENGTH) {
    const known = byHash.get(hashLower(frame, start, end))
    if (known !== undefined && matches(known, frame, start, end)) return known
  }
  return frame.toString('latin1', start, end).toLowerCase()
}
