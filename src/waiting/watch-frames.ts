import { command as encodeCommand } from '../protocol/resp-encode.js'
import { RespCommand } from '../protocol/resp-command.js'
import { bulk, SWEEP_SCRIPT, type Family } from './parkable.js'

/**
 * The parking lot's own frames: the watchers' blocking commands and the sweep are built from
 * keys kept already encoded as bulk strings (a watcher may wait on 10,000 keys, and its command
 * is built again at every change: a copy of each key, not an encoding), and the few reads of
 * reply frames the lot needs.
 */

export const BLPOP_HEAD = Buffer.from('$5\r\nBLPOP\r\n')
export const BRPOP_HEAD = Buffer.from('$5\r\nBRPOP\r\n')
export const BZPOPMIN_HEAD = Buffer.from('$8\r\nBZPOPMIN\r\n')
export const ZERO_ARG = Buffer.from('$1\r\n0\r\n')
export const XREAD_HEAD = Buffer.from('$5\r\nXREAD\r\n$5\r\nCOUNT\r\n$1\r\n1\r\n$5\r\nBLOCK\r\n$1\r\n0\r\n$7\r\nSTREAMS\r\n')

const SWEEP_HEAD = Buffer.from(`$4\r\nEVAL\r\n$${Buffer.byteLength(SWEEP_SCRIPT)}\r\n${SWEEP_SCRIPT}\r\n`)
const SWEEP_ARGV: Record<Family, Buffer> = {
  list: Buffer.from('$4\r\nlist\r\n$4\r\nLLEN\r\n'),
  zset: Buffer.from('$4\r\nzset\r\n$5\r\nZCARD\r\n'),
  stream: Buffer.from('$6\r\nstream\r\n$4\r\nXLEN\r\n')
}

/** EVAL SWEEP_SCRIPT over keys already encoded as bulk strings (no per-key work but a copy). */
export function sweepFrame (keyArgs: Buffer[], family: Family): Buffer {
  const n = String(keyArgs.length)
  return Buffer.concat([Buffer.from(`*${keyArgs.length + 5}\r\n`), SWEEP_HEAD, Buffer.from(`$${n.length}\r\n${n}\r\n`), ...keyArgs, SWEEP_ARGV[family]])
}

export function evalFrame (script: string, keys: string[], args: string[] = []): Buffer {
  return encodeCommand(['EVAL', script, String(keys.length), ...keys.map((k) => Buffer.from(k, 'latin1')), ...args])
}

/** The same stream command with its ids replaced (`$` pinned down to the id it meant). */
export function withStreamIds (cmd: RespCommand, ids: string[]): RespCommand {
  const args = cmd.args()
  const first = args.length - ids.length
  ids.forEach((id, i) => { args[first + i] = Buffer.from(id, 'latin1') })
  return RespCommand.fromArgs(args)
}

/** `*-1`, `$-1` (RESP2) or `_` (RESP3): the command took nothing. */
export function isNullReply (reply: Buffer): boolean {
  return reply[0] === 0x5f || ((reply[0] === 0x2a || reply[0] === 0x24) && reply[1] === 0x2d)
}

const EMPTY = Buffer.alloc(0)

/** A bulk string's value (empty for anything else). */
export function bulkValue (frame: Buffer | undefined): Buffer {
  return bulk(frame) ?? EMPTY
}

export function bulkText (frame: Buffer | undefined): string {
  return bulkValue(frame).toString('latin1')
}
