import commands from '@ioredis/commands'
import calculateSlot from 'cluster-key-slot'
import type { RespCommand } from '../protocol/resp-command.js'

/** The hash slot of a key (CRC16 of the key, or of its {hash tag}, modulo 16384). */
export function keySlot (key: Buffer): number {
  return calculateSlot(key)
}

/**
 * Where a command's keys are, from the maintained command table in `@ioredis/commands` (its key
 * specs; commands whose keys depend on their arguments, such as EVAL's numkeys, XREAD's STREAMS
 * or SORT's STORE, are read from the arguments there). Returns argument indexes counted from 1
 * (the command name is 0), or null for a command the table does not know (a module's).
 */
export function keyIndexes (cmd: RespCommand): number[] | null {
  const name = cmd.name
  if (!commands.exists(name)) return null
  // The table reads keywords (STORE, STREAMS, KEYS …) only from string arguments; values can be
  // large, so only short arguments are turned into text.
  const args: Array<string | Buffer> = []
  for (let i = 1; i < cmd.argc; i++) {
    const arg = cmd.arg(i)
    args.push(arg.length <= 32 ? arg.toString('latin1') : arg)
  }
  try {
    return commands.getKeyIndexes(name, args).map((i) => i + 1)
  } catch {
    // Too few arguments for the table: Redis answers the arity error from any node.
    return []
  }
}

/**
 * The one slot all of a command's keys hash to: a slot number, -1 for keyless commands,
 * -2 when the keys hash to different slots, or null for a command whose keys are unknown.
 */
export function commandSlot (cmd: RespCommand): number | null {
  const indexes = keyIndexes(cmd)
  if (indexes === null) return null
  let slot = -1
  for (const i of indexes) {
    if (i >= cmd.argc) continue
    const s = keySlot(cmd.arg(i))
    if (slot === -1) slot = s
    else if (s !== slot) return -2
  }
  return slot
}
