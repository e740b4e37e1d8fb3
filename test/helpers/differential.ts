import { setTimeout as delay } from 'node:timers/promises'
import { RawClient, cmd } from './raw-client.js'
import { splitFrames } from './resp-frames.js'
import { prng } from './prng.js'

/**
 * Random client programs for differential tests: each program is a sequence of commands a
 * client sends over one connection, cut into writes at random places, with a model of how many
 * replies Redis owes each command. A program only touches keys and channels of its own client,
 * so what Redis answers it does not depend on other clients: run alone against Redis, or among
 * many others through respool, its reply stream must be the same.
 */

export { prng }

export class Rand {
  constructor (readonly next: () => number) {}

  static seeded (seed: number): Rand {
    return new Rand(prng(seed))
  }

  int (n: number): number {
    return Math.floor(this.next() * n)
  }

  chance (p: number): boolean {
    return this.next() < p
  }

  pick<T> (items: readonly T[]): T {
    return items[this.int(items.length)]
  }
}

/** The seed of client `index`'s program: a program depends only on the seed and its index. */
export function clientSeed (seed: number, index: number): number {
  return (seed ^ Math.imul(index + 1, 0x9e3779b1)) >>> 0
}

// ---- what Redis answers -----------------------------------------------------------------

/**
 * How many reply frames Redis 7 sends for each command of one connection. Tracks only what
 * changes that number: CLIENT REPLY OFF/SKIP, MULTI (everything is QUEUED, one frame each) and
 * subscriptions (one confirmation per channel, sent even under CLIENT REPLY OFF/SKIP).
 */
export class ReplyModel {
  multi = false
  replyOff = false
  /** CLIENT REPLY SKIP: the next command's replies are not sent. */
  skip = false
  watching = false
  readonly channels = new Set<string>()

  /** Applies one command; returns the number of frames Redis sends for it. */
  apply (args: string[]): number {
    const name = args[0].toUpperCase()
    const sub = (args[1] ?? '').toUpperCase()
    const skipped = this.skip
    this.skip = false
    const silent = this.replyOff || skipped
    const one = silent ? 0 : 1
    if (name === 'RESET') {
      // RESET turns CLIENT REPLY back ON before answering; a pending SKIP still hides +RESET.
      this.multi = false
      this.replyOff = false
      this.watching = false
      this.channels.clear()
      return skipped ? 0 : 1
    }
    if (this.multi && !['EXEC', 'DISCARD', 'MULTI', 'WATCH', 'QUIT'].includes(name)) return one // QUEUED or an error
    switch (name) {
      case 'CLIENT':
        if (sub === 'REPLY' && args.length === 3) {
          const mode = args[2].toUpperCase()
          if (mode === 'ON') {
            this.replyOff = false
            return 1
          }
          if (mode === 'OFF') {
            this.replyOff = true
            return 0
          }
          if (mode === 'SKIP') {
            if (!this.replyOff) this.skip = true
            return 0
          }
        }
        return one
      case 'MULTI':
        this.multi = true
        return one
      case 'EXEC':
      case 'DISCARD':
        if (this.multi) {
          this.multi = false
          this.watching = false
        }
        return one
      case 'WATCH':
        if (!this.multi) this.watching = true
        return one
      case 'UNWATCH':
        this.watching = false
        return one
      case 'SUBSCRIBE':
        for (const ch of args.slice(1)) this.channels.add(ch)
        return args.length - 1
      case 'UNSUBSCRIBE':
        if (args.length > 1) {
          for (const ch of args.slice(1)) this.channels.delete(ch)
          return args.length - 1
        } else {
          const n = Math.max(1, this.channels.size)
          this.channels.clear()
          return n
        }
      default:
        return one
    }
  }
}

// ---- programs -----------------------------------------------------------------------------

export type WriteEnd = 'none' | 'pause' | 'wait'

/** One write of a program's bytes, and what the client does after it. */
export interface Write {
  /** Byte offset where this write ends. */
  end: number
  /** Nothing (the next write follows at once), a short pause, or wait for the replies owed so far. */
  then: WriteEnd
  pauseMs: number
}

export interface Program {
  client: number
  commands: string[][]
  /** Frames Redis sends for each command. */
  frames: number[]
  /** Byte offset where each command ends. */
  ends: number[]
  bytes: Buffer
  writes: Write[]
  /** Index of the write after which the client disconnects; null: it runs to the end. */
  disconnectAfter: number | null
  disconnectDelayMs: number
  startDelayMs: number
  /** Every key the program may touch. */
  keys: string[]
}

const KEY_NAMES = ['s', 'n', 'f', 'l', 'h', 'z', 'set', 'bin', 'none', 'bq', 'bq2', 'bz', 'be', 'be2', 'bze']
const INVALID_SELECTS = ['01', '-1', '16', '1x', '+1', '', '000', '99999999999']
const SIMPLE_ARG = /^[A-Za-z0-9:._+-]+$/

/** Builds client `index`'s program. */
export function generateProgram (rnd: Rand, index: number, options: { disconnect: boolean }): Program {
  const key = (name: string): string => `c${index}:${name}`
  const chan = (n: number): string => `ch${index}:${n}`
  const model = new ReplyModel()
  const commands: string[][] = []
  const frames: number[] = []
  const stepEnds: number[] = [] // command count at the end of each step (commands of a step are written together)
  let queued = 0 // commands queued in the typed transaction open now
  let slowBlocking = 1 + rnd.int(2) // blocking commands that wait for their (short) timeout

  const step = (...cmds: string[][]): void => {
    for (const c of cmds) {
      commands.push(c)
      frames.push(model.apply(c))
    }
    stepEnds.push(commands.length)
  }

  const plain = (): string[] => {
    const r = rnd.int(1000)
    switch (rnd.int(31)) {
      case 0: return ['SET', key('s'), `v${r}`]
      case 1: return ['GET', key('s')]
      case 2: return ['INCR', key('n')]
      case 3: return ['INCRBY', key('n'), String(r - 500)]
      case 4: return ['INCRBYFLOAT', key('f'), '1.5']
      case 5: return ['APPEND', key('s'), 'xy']
      case 6: return ['STRLEN', key('s')]
      case 7: return ['RPUSH', key('l'), `a${r}`, 'b']
      case 8: return ['LPUSH', key('l'), 'z']
      case 9: return ['LRANGE', key('l'), '0', '-1']
      case 10: return ['LPOP', key('l')]
      case 11: return ['HSET', key('h'), `f${r % 4}`, `v${r}`]
      case 12: return ['HGETALL', key('h')]
      case 13: return ['HINCRBY', key('h'), 'cnt', '2']
      case 14: return ['ZADD', key('z'), String(r % 7), `m${r % 5}`]
      case 15: return ['ZRANGE', key('z'), '0', '-1', 'WITHSCORES']
      case 16: return ['ZSCORE', key('z'), 'm1']
      case 17: return ['SADD', key('set'), String(r % 9)]
      case 18: return ['SCARD', key('set')]
      case 19: return ['DEL', key('s')]
      case 20: return ['EXISTS', key('s'), key('l'), key('h')]
      case 21: return ['TYPE', key('h')]
      case 22: return ['MGET', key('s'), key('n'), key('none')]
      case 23: return ['ECHO', 'hello there']
      case 24: return rnd.chance(0.5) ? ['PING'] : ['PING', `p${r}`]
      case 25: return ['LPUSH', key('s'), 'x'] // WRONGTYPE whenever the string exists
      case 26: return ['NOSUCHCOMMAND', key('s')]
      case 27: return ['GET'] // wrong number of arguments
      case 28: return ['SET', key('bin'), `a\r\nb\u0000${r}\r\n`]
      case 29: return ['GET', key('bin')]
      default: return ['HGET', key('h'), 'f1']
    }
  }

  /** A blocking command inside MULTI: Redis runs it without blocking. */
  const blockingQueued = (): string[] => rnd.pick([
    ['BLPOP', key('be'), '0.05'],
    ['BRPOP', key('l'), '1'],
    ['BLMOVE', key('be'), key('bq2'), 'LEFT', 'RIGHT', '0.05'],
    ['BZPOPMIN', key('bze'), '0.05']
  ])

  const select = (): string[] => rnd.chance(0.6) ? ['SELECT', String(rnd.int(16))] : ['SELECT', rnd.pick(INVALID_SELECTS)]

  const queuedItem = (): string[] => {
    const r = rnd.int(20)
    if (r < 13) return plain()
    if (r < 15) return blockingQueued()
    if (r < 18) return select()
    return rnd.pick([['UNWATCH'], ['PING'], ['ECHO', 'q']])
  }

  /** Commands respool answers itself (or keeps as client state), never queued inside MULTI. */
  const stateCommand = (): string[] => {
    switch (rnd.int(16)) {
      case 0: case 1: case 2: return select()
      case 3: return ['HELLO', '3']
      case 4: return ['HELLO', '2']
      case 5: return ['HELLO']
      case 6: return ['HELLO', rnd.pick(['2', '3']), 'SETNAME', `n${index}h`]
      case 7: return rnd.pick([['HELLO', '4'], ['HELLO', '03'], ['HELLO', '1x'], ['HELLO', '3', 'SETNAME', 'bad name'], ['HELLO', '3', 'FOO']])
      case 8: return ['HELLO', '3', 'AUTH', 'default', 'wrong']
      case 9: case 10: return ['CLIENT', 'SETNAME', rnd.pick([`n${index}`, `m${index}`, ''])]
      case 11: return ['CLIENT', 'SETNAME', 'bad name']
      case 12: case 13: return ['CLIENT', 'GETNAME']
      case 14: return ['AUTH', 'onlypass']
      default: return ['ECHO', 'state']
    }
  }

  const replyMode = (): string[] => {
    if (model.replyOff) {
      return rnd.pick([['CLIENT', 'REPLY', 'ON'], ['CLIENT', 'REPLY', 'ON'], ['CLIENT', 'REPLY', 'SKIP'], ['CLIENT', 'REPLY', 'OFF'], ['CLIENT', 'REPLY'], ['RESET']])
    }
    return rnd.pick([['CLIENT', 'REPLY', 'OFF'], ['CLIENT', 'REPLY', 'SKIP'], ['CLIENT', 'REPLY', 'ON'], ['CLIENT', 'REPLY'], ['CLIENT', 'REPLY', 'MAYBE']])
  }

  /** What may follow EXEC/DISCARD in the same write. */
  const afterTransaction = (): string[][] => {
    const r = rnd.int(10)
    if (r < 3) return []
    if (r < 5) return [['MULTI']] // a new typed transaction, pipelined behind the end of the last
    if (r < 6) return [['MULTI'], queuedItem()]
    if (r < 7) return [['SUBSCRIBE', chan(1)]]
    if (r < 8) return [replyMode(), plain()]
    return [stateCommand(), ...(rnd.chance(0.5) ? [plain()] : [])]
  }

  const wholeTransaction = (): string[][] => {
    const items: string[][] = []
    for (let n = rnd.int(4); n > 0; n--) items.push(queuedItem())
    return [['MULTI'], ...items, [rnd.chance(0.8) ? 'EXEC' : 'DISCARD'], ...afterTransaction()]
  }

  const blocking = (): string[][] => {
    const r = rnd.int(8)
    if (r >= 5 && slowBlocking > 0) {
      slowBlocking--
      return [rnd.pick([
        ['BLPOP', key('be'), '0.05'],
        ['BRPOP', key('be'), key('be2'), '0.05'],
        ['BLMOVE', key('be'), key('bq2'), 'RIGHT', 'LEFT', '0.05'],
        ['BZPOPMIN', key('bze'), '0.05']
      ])]
    }
    // An element is there first: Redis answers at once (the long timeout is never reached).
    switch (r % 4) {
      case 0: return [['RPUSH', key('bq'), `e${rnd.int(100)}`], ['BLPOP', key('bq'), '5']]
      case 1: return [['LPUSH', key('bq'), 'x', 'y'], ['BRPOP', key('be'), key('bq'), '5'], ['BLPOP', key('bq'), '5']]
      case 2: return [['RPUSH', key('bq'), 'm'], ['BLMOVE', key('bq'), key('bq2'), 'LEFT', 'RIGHT', '5']]
      default: return [['ZADD', key('bz'), '1', 'a', '2', 'b'], ['BZPOPMIN', key('bz'), '5'], ['BZPOPMIN', key('bz'), key('bze'), '5']]
    }
  }

  const normalStep = (): void => {
    const r = rnd.int(100)
    if (r < 22) {
      const n = 1 + rnd.int(4)
      step(...Array.from({ length: n }, plain))
    } else if (r < 34) {
      const cmds = wholeTransaction()
      step(...cmds)
    } else if (r < 42) {
      // A transaction typed command by command.
      if (rnd.chance(0.6)) step(['MULTI'])
      else step(['MULTI'], queuedItem())
    } else if (r < 50) {
      const watched = rnd.chance(0.5) ? [key('s')] : [key('s'), key(rnd.pick(['n', 'h', 'none']))]
      const v = rnd.int(4)
      if (v === 0) step(['WATCH', ...watched])
      else if (v === 1) step(['WATCH', ...watched], ['SET', key('s'), 'w']) // EXEC will answer null
      else {
        const items = Array.from({ length: rnd.int(3) }, queuedItem)
        step(['WATCH', ...watched], ['MULTI'], ...items, ['EXEC'], ...(rnd.chance(0.5) ? [['MULTI']] : []))
      }
    } else if (r < 64) {
      step(stateCommand())
    } else if (r < 70) {
      step(replyMode(), ...(rnd.chance(0.5) ? [plain()] : []))
    } else if (r < 73) {
      step(['RESET'])
    } else if (r < 83) {
      const cmds = blocking()
      if (rnd.chance(0.5)) step(...cmds)
      else for (const c of cmds) step(c)
    } else if (r < 88) {
      step(['SUBSCRIBE', chan(1)], ...(rnd.chance(0.5) ? [['PING']] : []))
    } else if (r < 92) {
      step(rnd.pick([['UNWATCH'], ['EXEC'], ['DISCARD'], ['UNSUBSCRIBE'], ['UNSUBSCRIBE', chan(2)]]))
    } else if (r < 96) {
      step(['CLIENT', 'REPLY', rnd.pick(['OFF', 'SKIP'])], ['RESET'], ['PING'])
    } else {
      step(select(), plain())
    }
  }

  const multiStep = (): void => {
    const r = rnd.int(100)
    if (queued < 6 && r < 45) {
      const items = Array.from({ length: 1 + rnd.int(3) }, queuedItem)
      queued += items.length
      step(...items)
    } else if (queued < 6 && r < 50) {
      step(rnd.pick([['MULTI'], ['WATCH', key('s')]])) // errors; the transaction goes on
    } else if (r < 53) {
      step(['RESET'])
    } else {
      step([rnd.chance(0.75) ? 'EXEC' : 'DISCARD'], ...afterTransaction())
    }
    if (!model.multi) queued = 0
  }

  // UNSUBSCRIBE without arguments confirms the channels in the order of Redis's hash table,
  // which differs from one server to another: it is only sent with one channel left.
  const unsubscribeAll = (): string[] => model.channels.size <= 1 ? ['UNSUBSCRIBE'] : ['UNSUBSCRIBE', ...model.channels]

  const subscribedStep = (): void => {
    const r = rnd.int(10)
    if (r < 3) step(unsubscribeAll())
    else if (r < 4) step(['UNSUBSCRIBE', chan(1)])
    else if (r < 5) step(['SUBSCRIBE', chan(2)])
    else if (r < 7) step(rnd.chance(0.5) ? ['PING'] : ['PING', 'sub'])
    else if (r < 8) step(['GET', key('s')])
    else if (r < 9) step(['RESET'])
    else step(['UNSUBSCRIBE', chan(3)])
  }

  for (let n = 10 + rnd.int(16); n > 0; n--) {
    if (model.channels.size > 0) subscribedStep()
    else if (model.multi) multiStep()
    else normalStep()
  }
  // Back to a state where PING answers +PONG: out of MULTI and subscriptions, replies on.
  if (rnd.chance(0.2)) {
    step(['RESET'])
  } else {
    if (model.multi) step([rnd.chance(0.5) ? 'EXEC' : 'DISCARD'])
    if (model.channels.size > 0) step(unsubscribeAll())
    if (model.replyOff || model.skip) step(['CLIENT', 'REPLY', 'ON'])
  }
  step(['PING'])
  if (frames[frames.length - 1] !== 1 || model.multi || model.channels.size > 0) throw new Error('program does not end with an answered PING')

  // Encode: mostly multibulk, sometimes inline (as typed in telnet).
  const parts: Buffer[] = []
  const ends: number[] = []
  let offset = 0
  for (const c of commands) {
    const inline = c.every((a) => SIMPLE_ARG.test(a)) && rnd.chance(0.1)
    const b = inline ? Buffer.from(c.join(' ') + '\r\n', 'latin1') : cmd(...c.map((a) => Buffer.from(a, 'latin1')))
    parts.push(b)
    offset += b.length
    ends.push(offset)
  }
  const bytes = Buffer.concat(parts)

  // Cut into writes: at the end of a step (then nothing, a pause, or wait for the replies),
  // and sometimes inside a step, even inside a command.
  const cuts = new Map<number, Write>()
  const cut = (end: number, then: WriteEnd): void => {
    if (end <= 0 || end >= bytes.length || cuts.has(end)) return
    cuts.set(end, { end, then, pauseMs: 1 + rnd.int(3) })
  }
  let stepStart = 0
  for (const stepEnd of stepEnds) {
    const start = stepStart === 0 ? 0 : ends[stepStart - 1]
    const end = ends[stepEnd - 1]
    if (rnd.chance(0.2) && end - start > 2) cut(start + 1 + rnd.int(end - start - 1), rnd.chance(0.5) ? 'none' : 'pause')
    const r = rnd.next()
    cut(end, r < 0.35 ? 'none' : r < 0.6 ? 'pause' : 'wait')
    stepStart = stepEnd
  }
  let disconnectAt = -1
  if (options.disconnect) {
    disconnectAt = 1 + rnd.int(bytes.length - 1)
    if (!cuts.has(disconnectAt)) cuts.set(disconnectAt, { end: disconnectAt, then: 'none', pauseMs: 0 })
  }
  const writes = [...cuts.values(), { end: bytes.length, then: 'none' as const, pauseMs: 0 }].sort((a, b) => a.end - b.end)

  return {
    client: index,
    commands,
    frames,
    ends,
    bytes,
    writes,
    disconnectAfter: options.disconnect ? writes.findIndex((w) => w.end === disconnectAt) : null,
    disconnectDelayMs: rnd.int(20),
    startDelayMs: rnd.int(15),
    keys: KEY_NAMES.map(key)
  }
}

// ---- running ------------------------------------------------------------------------------

/**
 * A reply frame as compared: HELLO's reply carries the connection's id, which respool
 * answers with its own client id; that one integer is blanked, nothing else.
 */
export function normalizeFrame (frame: string): string {
  if (!/^(\*14|%7)\r\n\$6\r\nserver\r\n/.test(frame)) return frame
  return frame.replace(/(\$2\r\nid\r\n:)-?\d+\r\n/, '$1<id>\r\n')
}

export interface RunResult {
  frames: string[]
  /** Bytes after the last complete frame. */
  rest: string
  disconnected: boolean
  /** Why the run stopped before the end of the program (replies differed, or did not come). */
  stopped: string | null
  /** When (performance.now()) the replies first differed from the expected ones, if they did. */
  differedAt: number | null
}

export interface RunOptions {
  /** The frames the run must produce (normalised); the run stops early once it differs. */
  expect?: string[]
  /** Fail (test model error) if Redis does not answer as the model says, at every wait. */
  checkModel?: boolean
  /** Most time to wait for replies at a wait point or at the end. */
  waitMs?: number
  /** After the last reply, how long to watch for anything more. */
  quietMs?: number
}

function framesOf (client: RawClient): { frames: string[], rest: string } {
  return splitFrames(client.buffered)
}

/** Waits until `done()` or the socket closes or `ms` pass; true if `done()`. */
async function until (client: RawClient, done: () => boolean, ms: number): Promise<boolean> {
  const deadline = Date.now() + ms
  while (!done() && !client.closed) {
    const left = deadline - Date.now()
    if (left <= 0) return false
    await new Promise<void>((resolve) => {
      const socket = client.socket
      const wake = (): void => {
        clearTimeout(timer)
        socket.off('data', wake)
        socket.off('close', wake)
        resolve()
      }
      const timer = setTimeout(wake, left)
      socket.on('data', wake)
      socket.on('close', wake)
    })
  }
  return done()
}

/** Frames owed for every command whose last byte is before `end`. */
export function framesOwed (program: Program, end: number): number {
  let n = 0
  for (let i = 0; i < program.commands.length && program.ends[i] <= end; i++) n += program.frames[i]
  return n
}

/**
 * Runs a program on a new connection to `port` and collects its reply stream. With `expect`,
 * the run stops as soon as the replies differ from it or owed replies do not come in time.
 */
export async function runProgram (port: number, program: Program, options: RunOptions = {}): Promise<RunResult> {
  const waitMs = options.waitMs ?? 3000
  const expect = options.expect
  await delay(program.startDelayMs)
  const client = await RawClient.connect(port)
  client.socket.setNoDelay(true)
  // When the replies first differed (checked as they arrive): the earliest difference among
  // many clients is the likeliest cause of the others.
  let differedAt: number | null = null
  const differs = (): boolean => {
    if (expect === undefined) return false
    if (differedAt !== null) return true
    const { frames } = framesOf(client)
    if (frames.length > expect.length || frames.some((f, i) => normalizeFrame(f) !== expect[i])) differedAt = performance.now()
    return differedAt !== null
  }
  if (expect !== undefined) client.socket.on('data', () => { differs() })
  const modelError = (got: number, owed: number, where: string): Error =>
    new Error(`test model: client ${program.client} got ${got} replies ${where}, the model says ${owed}\n${describeProgram(program)}`)
  let stopped: string | null = null
  try {
    let start = 0
    for (let w = 0; w < program.writes.length && stopped === null; w++) {
      const write = program.writes[w]
      client.write(program.bytes.subarray(start, write.end))
      start = write.end
      if (program.disconnectAfter === w) {
        if (program.disconnectDelayMs > 0) await delay(program.disconnectDelayMs)
        client.close()
        return { ...framesOf(client), disconnected: true, stopped: 'disconnected', differedAt }
      }
      if (write.then === 'pause') await delay(write.pauseMs)
      else if (write.then === 'wait') {
        const owed = framesOwed(program, write.end)
        const arrived = await until(client, () => framesOf(client).frames.length >= owed || differs(), waitMs)
        const got = framesOf(client).frames.length
        if (options.checkModel === true && got !== owed) throw modelError(got, owed, `after byte ${write.end}`)
        if (differs()) stopped = 'replies differ'
        else if (!arrived) stopped = `${owed - got} owed repl${owed - got === 1 ? 'y' : 'ies'} not there ${waitMs} ms after the write ending at byte ${write.end}`
      }
      if (client.closed && stopped === null) stopped = 'connection closed'
    }
    const total = expect?.length ?? framesOwed(program, program.bytes.length)
    if (stopped === null && !await until(client, () => framesOf(client).frames.length >= total || differs(), waitMs) && !differs()) {
      stopped = `the last replies were not there ${waitMs} ms after the last write`
    }
    // Anything after the last reply (a reply too many) must show up within quietMs.
    await delay(options.quietMs ?? 40)
    differs()
    const result = { ...framesOf(client), disconnected: false, stopped, differedAt }
    if (options.checkModel === true && (result.frames.length !== total || result.rest !== '')) {
      throw modelError(result.frames.length, total, 'in all')
    }
    return result
  } finally {
    client.close()
  }
}

// ---- reporting ----------------------------------------------------------------------------

function tail (text: string, n: number): string {
  return text.length <= n ? text : `…${text.slice(-n)}`
}

export function showCommand (args: string[]): string {
  return args.map((a) => SIMPLE_ARG.test(a) ? a : JSON.stringify(a)).join(' ')
}

/** The program as sent: `|` between writes, `||` where the client waited for its replies. */
export function describeProgram (program: Program, upToCommand = program.commands.length - 1): string {
  const out: string[] = []
  let w = 0
  for (let i = 0; i <= upToCommand && i < program.commands.length; i++) {
    out.push(showCommand(program.commands[i]))
    while (w < program.writes.length && program.writes[w].end <= program.ends[i]) {
      const write = program.writes[w]
      if (write.end === program.ends[i] && i < program.commands.length - 1) out.push(write.then === 'wait' ? '||' : '|')
      w++
    }
  }
  return out.join(' ')
}

/**
 * The first reply where respool's stream differs from direct Redis's, described for a failure
 * message (command, direct bytes, respool bytes as escaped strings), or null if they are equal.
 */
export function firstDifference (program: Program, direct: RunResult, proxied: RunResult): string | null {
  const want = direct.frames.map(normalizeFrame)
  const got = proxied.frames.map(normalizeFrame)
  let j = 0
  while (j < want.length && j < got.length && want[j] === got[j]) j++
  if (j === want.length && j === got.length && proxied.rest === '') return null
  // Which command reply j belongs to (by the model, which the direct run confirmed).
  let c = 0
  let before = 0
  while (c < program.commands.length && before + program.frames[c] <= j) before += program.frames[c++]
  const command = c < program.commands.length ? showCommand(program.commands[c]) : '(after the last command)'
  const lines = [
    `client ${program.client}: reply #${j} differs (direct, it answers command #${c}: ${command})`,
    `  direct:  ${j < want.length ? JSON.stringify(want[j]) : '(nothing more)'}`,
    `  respool: ${j < got.length ? JSON.stringify(got[j]) : proxied.rest !== '' && j === got.length ? `(incomplete) ${JSON.stringify(proxied.rest.slice(0, 200))}` : '(nothing more)'}${proxied.stopped !== null && proxied.stopped !== 'replies differ' ? ` [${proxied.stopped}]` : ''}`,
    `  replies before it: ${JSON.stringify(tail(want.slice(Math.max(0, j - 4), j).join(''), 200))}`,
    `  sent (| between writes, || where the client waited for replies): ${tail(describeProgram(program, Math.min(program.commands.length - 1, c + 2)), 500)}`
  ]
  return lines.join('\n')
}
