import { RespCommand } from '../protocol/resp-command.js'
import { command as encodeCommand } from '../protocol/resp-encode.js'
import { ReplyFramer } from '../protocol/reply-framer.js'
import { parseRedisInteger } from '../protocol/redis-integer.js'

/**
 * Which blocking commands can wait inside respool instead of on a connection of their own, and
 * how to undo what one of them took when its client is gone.
 *
 * A parked command waits for data on its keys; respool runs it again, inside MULTI (where Redis
 * never blocks), when a key may have data. Lists and sorted sets are covered. Streams
 * (XREAD/XREADGROUP BLOCK) and WAIT/WAITAOF keep a pinned connection: `$` and `>` would have to
 * be pinned down to ids at arrival, and WAIT counts replicas for the connection it runs on.
 */

/** Takes ARGV[1] out of the destination KEYS[2] and, if it was there, back onto the source KEYS[1]. */
const MOVE_BACK = "if redis.call('LREM', KEYS[2], ARGV[2], ARGV[1]) > 0 then redis.call(ARGV[3], KEYS[1], ARGV[1]) end return 1"

/** The kind of key a parked command waits on: one watcher connection per kind and database. */
export type Family = 'list' | 'zset'

export interface Parkable {
  family: Family
  /** The keys it waits on, in the client's order (latin1: binary-safe). */
  keys: string[]
}

const LIST_ENDS = new Set(['left', 'right'])
const ZSET_ENDS = new Set(['min', 'max'])

/** The keys and kind of a parkable command, or null if it must keep the pinned path. */
export function parkable (cmd: RespCommand): Parkable | null {
  const argc = cmd.argc
  switch (cmd.name) {
    case 'blpop':
    case 'brpop':
      return argc >= 3 ? { family: 'list', keys: range(cmd, 1, argc - 1) } : null
    case 'bzpopmin':
    case 'bzpopmax':
      return argc >= 3 ? { family: 'zset', keys: range(cmd, 1, argc - 1) } : null
    case 'brpoplpush':
      return argc === 4 ? { family: 'list', keys: [cmd.argString(1)] } : null
    case 'blmove':
      return argc === 6 ? { family: 'list', keys: [cmd.argString(1)] } : null
    case 'blmpop':
    case 'bzmpop': {
      // BLMPOP timeout numkeys key [key …] LEFT|RIGHT [COUNT n]
      const numkeys = argc >= 5 ? parseRedisInteger(cmd.argString(2)) : null
      if (numkeys === null || numkeys < 1 || 3 + numkeys >= argc) return null
      const end = cmd.keyword(3 + numkeys)
      if (!(cmd.name === 'blmpop' ? LIST_ENDS : ZSET_ENDS).has(end)) return null
      return { family: cmd.name === 'blmpop' ? 'list' : 'zset', keys: range(cmd, 3, 3 + numkeys) }
    }
    default:
      return null
  }
}

/** The keys from argument `from` to `to`, each once (BLPOP a a 0 waits on one key). */
function range (cmd: RespCommand, from: number, to: number): string[] {
  const keys: string[] = []
  for (let i = from; i < to; i++) {
    const key = cmd.argString(i)
    if (!keys.includes(key)) keys.push(key)
  }
  return keys
}

/**
 * The command that puts back what `cmd` took, given its reply (RESP2 or RESP3): the element goes
 * back to the end it was taken from, a moved element back to its source. Null if the reply took
 * nothing (a null reply, an error).
 */
export function putBack (cmd: RespCommand, reply: Buffer): Buffer | null {
  // BLMOVE and BRPOPLPUSH answer with the element itself; the others with an array.
  const top = elements(reply) ?? []
  switch (cmd.name) {
    case 'blpop':
    case 'brpop': {
      const key = bulk(top[0])
      const value = bulk(top[1])
      if (key === null || value === null) return null
      return encodeCommand([cmd.name === 'blpop' ? 'LPUSH' : 'RPUSH', key, value])
    }
    case 'bzpopmin':
    case 'bzpopmax': {
      const key = bulk(top[0])
      const member = bulk(top[1])
      const score = scalar(top[2])
      if (key === null || member === null || score === null) return null
      return encodeCommand(['ZADD', key, score, member])
    }
    case 'brpoplpush':
    case 'blmove': {
      // The element was pushed onto one end of the destination, where others may have pushed
      // since: that one element is taken out of the destination (nearest that end) and, only if
      // it was still there, pushed back onto the end of the source it came from, atomically.
      const from = cmd.name === 'blmove' ? cmd.keyword(3) : 'right'
      const to = cmd.name === 'blmove' ? cmd.keyword(4) : 'left'
      const value = bulk(reply)
      if (value === null) return null
      return encodeCommand(['EVAL', MOVE_BACK, '2', cmd.arg(1), cmd.arg(2), value, to === 'right' ? '-1' : '1', from === 'right' ? 'RPUSH' : 'LPUSH'])
    }
    case 'blmpop': {
      const key = bulk(top[0])
      const values = top[1] !== undefined ? elements(top[1])?.map(bulk) : undefined
      if (key === null || values === undefined || values.some((v) => v === null)) return null
      const numkeys = Number(cmd.argString(2))
      const left = cmd.keyword(3 + numkeys) === 'left'
      // Popped in order from one end: pushed back in reverse order at the same end.
      return encodeCommand([left ? 'LPUSH' : 'RPUSH', key, ...(values as Buffer[]).reverse()])
    }
    case 'bzmpop': {
      const key = bulk(top[0])
      const pairs = top[1] !== undefined ? elements(top[1]) : null
      if (key === null || pairs === null) return null
      const args: Array<string | Buffer> = ['ZADD', key]
      for (const pair of pairs) {
        const [member, score] = elements(pair) ?? []
        const m = member !== undefined ? bulk(member) : null
        const s = score !== undefined ? scalar(score) : null
        if (m === null || s === null) return null
        args.push(s, m)
      }
      return encodeCommand(args)
    }
    default:
      return null
  }
}

/** The frames of an aggregate reply (array, set, push; a map's keys and values in turn). */
export function elements (frame: Buffer): Buffer[] | null {
  const type = frame[0]
  if (type !== 0x2a && type !== 0x3e && type !== 0x7e && type !== 0x25) return null // * > ~ %
  if (frame[1] === 0x2d) return null // *-1: null array
  const out: Buffer[] = []
  new ReplyFramer().push(frame.subarray(frame.indexOf(10) + 1), (element) => { out.push(element) })
  return out
}

/** The value of a bulk string ($n), or null. */
function bulk (frame: Buffer | undefined): Buffer | null {
  if (frame === undefined || frame[0] !== 0x24 || frame[1] === 0x2d) return null
  const start = frame.indexOf(10) + 1
  return frame.subarray(start, frame.length - 2)
}

/** A score: a bulk string (RESP2) or a double / integer line (RESP3), as text. */
function scalar (frame: Buffer | undefined): string | null {
  if (frame === undefined) return null
  if (frame[0] === 0x24) return bulk(frame)?.toString('latin1') ?? null
  if (frame[0] === 0x2c || frame[0] === 0x3a) return frame.toString('latin1', 1, frame.length - 2)
  return null
}
