import { RespCommand } from '../protocol/resp-command.js'
import { command as encodeCommand } from '../protocol/resp-encode.js'
import { ReplyFramer } from '../protocol/reply-framer.js'
import { parseRedisInteger } from '../protocol/redis-integer.js'

/**
 * Which blocking commands can wait inside respool instead of on a connection of their own, and
 * how to undo what one of them took when its client is gone.
 *
 * A parked command waits for data on its keys; respool runs it again, inside MULTI (where Redis
 * never blocks), when a key may have data. Lists, sorted sets and streams are covered.
 * WAIT/WAITAOF keep a pinned connection: they count replicas for the connection they run on.
 * For streams, `$` is pinned down to an id when the command arrives (see parking-lot.ts); `>`
 * means "never delivered to this group", which is the same whenever it runs. XREAD and
 * XREADGROUP forms respool cannot read with certainty (a key given twice, `+`, a mix of `>`
 * and explicit ids) keep the pinned path.
 */

/** Takes ARGV[1] out of the destination KEYS[2] and, if it was there, back onto the source KEYS[1]. */
const MOVE_BACK = "if redis.call('LREM', KEYS[2], ARGV[2], ARGV[1]) > 0 then redis.call(ARGV[3], KEYS[1], ARGV[1]) end return 1"

/** The kind of key a parked command waits on: one watcher connection per kind and database. */
export type Family = 'list' | 'zset' | 'stream'

/** The end a command takes from: lists 'left'/'right'; sorted sets 'min' (one watcher); streams ''. */
export type End = 'left' | 'right' | 'min' | ''

export interface Parkable {
  family: Family
  /** The keys it waits on, in the client's order (latin1: binary-safe). */
  keys: string[]
  /** Lists: the end it pops from. */
  end?: End
  /**
   * Streams only: the id each key's wait starts after, in key order: an explicit id, `$` (the
   * stream's last entry when the command arrives) or `>` (XREADGROUP: new to the group).
   */
  ids?: string[]
}

/** A stream id as Redis accepts it in XREAD (`ms` or `ms-seq`). */
const STREAM_ID = /^\d{1,20}(-\d{1,20})?$/

const LIST_ENDS = new Set(['left', 'right'])
const ZSET_ENDS = new Set(['min', 'max'])

/** The keys and kind of a parkable command, or null if it must keep the pinned path. */
export function parkable (cmd: RespCommand): Parkable | null {
  const argc = cmd.argc
  switch (cmd.name) {
    case 'blpop':
    case 'brpop':
      return argc >= 3 ? { family: 'list', keys: range(cmd, 1, argc - 1), end: cmd.name === 'blpop' ? 'left' : 'right' } : null
    case 'bzpopmin':
    case 'bzpopmax':
      return argc >= 3 ? { family: 'zset', keys: range(cmd, 1, argc - 1) } : null
    case 'brpoplpush':
      return argc === 4 ? { family: 'list', keys: [cmd.argString(1)], end: 'right' } : null
    case 'blmove': {
      const from = cmd.keyword(3)
      return argc === 6 && LIST_ENDS.has(from) ? { family: 'list', keys: [cmd.argString(1)], end: from as End } : null
    }
    case 'blmpop':
    case 'bzmpop': {
      // BLMPOP timeout numkeys key [key …] LEFT|RIGHT [COUNT n]
      const numkeys = argc >= 5 ? parseRedisInteger(cmd.argString(2)) : null
      if (numkeys === null || numkeys < 1 || 3 + numkeys >= argc) return null
      const end = cmd.keyword(3 + numkeys)
      if (!(cmd.name === 'blmpop' ? LIST_ENDS : ZSET_ENDS).has(end)) return null
      return cmd.name === 'blmpop'
        ? { family: 'list', keys: range(cmd, 3, 3 + numkeys), end: end as End }
        : { family: 'zset', keys: range(cmd, 3, 3 + numkeys) }
    }
    case 'xread':
    case 'xreadgroup':
      return streamWait(cmd)
    default:
      return null
  }
}

/**
 * XREAD [COUNT n] [BLOCK ms] STREAMS key … id …, XREADGROUP GROUP g c [COUNT n] [BLOCK ms]
 * [NOACK] STREAMS key … id …: the keys and ids, if respool can wait for them exactly.
 */
function streamWait (cmd: RespCommand): Parkable | null {
  const group = cmd.name === 'xreadgroup'
  let i = group ? 4 : 1
  if (group && (cmd.argc < 4 || cmd.keyword(1) !== 'group')) return null
  while (i < cmd.argc) {
    const word = cmd.keyword(i)
    if (word === 'streams') break
    if (word === 'count' || word === 'block') i += 2
    else if (word === 'noack' && group) i += 1
    else return null
  }
  const first = i + 1
  const rest = cmd.argc - first
  if (i >= cmd.argc || rest < 2 || rest % 2 !== 0) return null
  const n = rest / 2
  const keys: string[] = []
  const ids: string[] = []
  for (let k = 0; k < n; k++) {
    const key = cmd.argString(first + k)
    if (keys.includes(key)) return null
    const id = cmd.argString(first + n + k)
    if (group ? id !== '>' : id !== '$' && !STREAM_ID.test(id)) return null
    keys.push(key)
    ids.push(id)
  }
  return { family: 'stream', keys, ids }
}

/** -1, 0 or 1 as stream id `a` is before, equal to or after `b` (`ms` means `ms-0`). */
export function compareStreamIds (a: string, b: string): number {
  const [am, as = '0'] = a.split('-')
  const [bm, bs = '0'] = b.split('-')
  const ms = BigInt(am) - BigInt(bm)
  if (ms !== 0n) return ms < 0n ? -1 : 1
  const seq = BigInt(as) - BigInt(bs)
  return seq === 0n ? 0 : seq < 0n ? -1 : 1
}

/**
 * Which of KEYS hold something of kind ARGV[1] (a TYPE reply; ARGV[2] tells its size, e.g.
 * LLEN): returns key, size pairs, and
 * key, -1 for a key of another kind (a parked command's key that turned into, say, a string:
 * Redis keeps such a waiter blocked, and the watcher must leave that key out).
 *
 * Why a script: after a wake-up, more keys may have data (a burst of pushes); asking each key is
 * one command per key, and a blocking pop reports one key per round trip. EXISTS over a range of
 * keys costs a few ns per key, so the script halves ranges that hold something until it reaches
 * the keys themselves: one round trip, and work in Redis near the size of the key list.
 * Ranges of at most 1,000 keys keep `unpack` far from Lua's stack limit.
 */
export const SWEEP_SCRIPT = `local want, out = ARGV[1], {}
local function probe (lo, hi)
  if redis.call('EXISTS', unpack(KEYS, lo, hi)) == 0 then return end
  if lo == hi then
    local t = redis.call('TYPE', KEYS[lo])['ok']
    out[#out + 1] = KEYS[lo]
    if t == want then
      out[#out + 1] = redis.call(ARGV[2], KEYS[lo])
    else
      out[#out + 1] = -1
    end
    return
  end
  local mid = math.floor((lo + hi) / 2)
  probe(lo, mid)
  probe(mid + 1, hi)
end
for lo = 1, #KEYS, 1000 do probe(lo, math.min(lo + 999, #KEYS)) end
return out`

/**
 * The id of the last entry of each stream in KEYS ('0-0' for none, or a key of another kind).
 * Run in the same transaction as a stream command, it tells what `$` meant at that moment: an
 * entry deleted from the end changes nothing, as XREAD returns only entries after the id.
 */
export const LAST_IDS_SCRIPT = `local out = {}
for i, key in ipairs(KEYS) do
  local ok, last = pcall(redis.call, 'XREVRANGE', key, '+', '-', 'COUNT', 1)
  out[i] = (ok and last[1]) and last[1][1] or '0-0'
end
return out`

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
export function bulk (frame: Buffer | undefined): Buffer | null {
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
