import { RespCommand } from '../protocol/resp-command.js'
import { blockOptionIndex } from './command-table.js'
import { NULL_ARRAY, RESP3_NULL } from '../protocol/resp-encode.js'

/**
 * Exactly what Redis answers when a blocking command times out: a null array for every list,
 * sorted-set and stream command (BLMOVE and BRPOPLPUSH included), `_` in RESP3.
 */
export function timeoutReply (resp: number): Buffer {
  return resp === 3 ? RESP3_NULL : NULL_ARRAY
}

/** Where a blocking command keeps its timeout: argument index and unit (ms per unit). */
export function timeoutArgument (cmd: RespCommand): { index: number, msPerUnit: number } | null {
  const name = cmd.name
  if (name === 'xread' || name === 'xreadgroup') {
    const i = blockOptionIndex(cmd)
    return i !== -1 && i + 1 < cmd.argc ? { index: i + 1, msPerUnit: 1 } : null
  }
  if (name === 'wait' || name === 'waitaof') return cmd.argc > 1 ? { index: cmd.argc - 1, msPerUnit: 1 } : null
  if (name === 'blmpop' || name === 'bzmpop') return cmd.argc > 1 ? { index: 1, msPerUnit: 1000 } : null
  return cmd.argc > 1 ? { index: cmd.argc - 1, msPerUnit: 1000 } : null
}

/** The command's own timeout in ms (0 = forever), or null if it is not a valid number. */
export function blockingTimeoutMs (cmd: RespCommand): number | null {
  const where = timeoutArgument(cmd)
  if (where === null) return null
  const text = cmd.argString(where.index)
  if (!/^\d+(\.\d+)?$/.test(text)) return null
  return Number(text) * where.msPerUnit
}

/**
 * The same command with its timeout lowered to `ms` (the time spent waiting for a connection
 * counts against the client's own timeout). Only the timeout argument changes.
 */
export function withTimeout (cmd: RespCommand, ms: number): RespCommand {
  const where = timeoutArgument(cmd)
  if (where === null) return cmd
  const value = where.msPerUnit === 1 ? String(Math.max(1, Math.ceil(ms))) : (Math.max(1, Math.ceil(ms)) / 1000).toFixed(3)
  const args = cmd.args()
  args[where.index] = Buffer.from(value)
  return RespCommand.fromArgs(args)
}
