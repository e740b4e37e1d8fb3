import { ProtocolError } from '../errors.js'
import { RespCommand } from './resp-command.js'
import { splitInlineArgs } from './inline-args.js'
import { copyOf } from './socket-reader.js'
import { reserveInRing, type RingLease } from './command-ring.js'

/**
 * Incremental framer for what clients send: RESP multibulk commands and inline commands.
 *
 * Hand-written because no maintained library does what the proxy needs here: find command
 * boundaries and argument offsets without decoding or copying, resume at any byte boundary,
 * and enforce Redis's own limits with Redis's own error texts. (`redis-parser` decodes replies
 * into JS values, which is both the wrong direction and a copy.)
 *
 * Each byte is looked at once: headers are parsed digit by digit as they arrive, payloads are
 * skipped by length. A command inside one chunk is a zero-copy view of that chunk; a command that
 * spans chunks is joined once, so a 100 MB argument costs O(size). In `transient` mode (chunks
 * read into a reused buffer) every command, piece and kept part is a copy instead.
 */

export interface RequestLimits {
  /** Redis `proto-max-bulk-len` (default 512 MB). */
  maxBulkLength: number
  /** Most arguments in one multibulk (Redis allows up to INT_MAX; nothing is preallocated). */
  maxMultibulkLength: number
  /** Inline command line limit (Redis PROTO_INLINE_MAX_SIZE, 64 KB). */
  maxInlineLength: number
  /** When set, the stricter limits Redis applies before AUTH. */
  unauthenticated?: boolean
}

/**
 * Where framed commands go. A large command (past COMMAND_STREAM_THRESHOLD) is offered to
 * `startCommandStream` with its first bytes (a RespCommand whose complete arguments can be
 * read; the name always is), which answers whether the sink takes the rest in pieces; if not,
 * the framer keeps buffering the command as usual. Once accepted, `commandStreamPart` gets
 * every further byte of the command, `done` on the last. A client session is its own sink, so
 * framing needs no closures of its own per client.
 */
export interface CommandSink {
  onCommand (cmd: RespCommand): void
  startCommandStream? (head: RespCommand): boolean
  /** `transient`: the piece is a view of the chunk being pushed, valid only during the call. */
  commandStreamPart? (piece: Buffer, done: boolean, transient: boolean): void
}

/** Commands larger than this are offered for streaming. */
export const COMMAND_STREAM_THRESHOLD = 1024 * 1024

export const DEFAULT_REQUEST_LIMITS: RequestLimits = {
  maxBulkLength: 512 * 1024 * 1024,
  maxMultibulkLength: 2147483647,
  maxInlineLength: 64 * 1024
}

// Redis's limits for clients that have not authenticated yet (networking.c).
const UNAUTH_MAX_MULTIBULK = 10
const UNAUTH_MAX_BULK = 16384
const INT_MAX = 2147483647
// Commands with up to this many arguments get their offsets array at its final size at once.
const PRESIZE_ARGS = 1024

const CR = 13
const LF = 10
const STAR = 42 // '*'
const DOLLAR = 36 // '$'
const MINUS = 45 // '-'

const NUL = 0

const ST_START = 0 // expecting '*' or the first byte of an inline command
const ST_COUNT = 1 // the '*<count>' line, up to its CR
const ST_COUNT_LF = 2 // the byte after that CR
const ST_ARG_TYPE = 3 // the first byte of a bulk header line (Redis wants '$')
const ST_ARG_LEN = 4 // the rest of the '$<len>' line, up to its CR
const ST_ARG_LEN_LF = 5 // the byte after that CR
const ST_ARG_DATA = 6 // payload bytes plus the two bytes after them
const ST_INLINE = 7 // bytes up to '\n'
const ST_DEAD = 8 // after a protocol error: nothing more is accepted
const ST_STUCK = 9 // a NUL before the line's end: Redis never finds the end of this line

/*
 * Header lines are judged exactly as Redis's processMultibulkBuffer judges them, so that respool
 * accepts precisely the frames Redis accepts (anything else would be forwarded and make Redis
 * close a shared connection, or be refused though Redis would run it):
 * - a line ends at its first CR, and is looked at only once one more byte has arrived; that
 *   byte is skipped unchecked (it is meant to be LF);
 * - the number is read by string2ll: optional '-', no leading zero, no '+', nothing else
 *   ("$04", "*01", "$-0", "* 1" are protocol errors);
 * - a bulk line must start with '$', which Redis checks once the whole line is there;
 * - Redis finds line ends with strchr, which stops at a NUL: a NUL before the CR means the
 *   line never ends, and the client is cut off only once more than 64 KB wait unparsed.
 */

/**
 * Empty arrays shared by every framer until it needs its own (a command spanning reads, the
 * first multibulk): an idle client costs no arrays here. Frozen, so a write is an error.
 */
const NO_PARTS = Object.freeze([]) as unknown as Buffer[]
const NO_OFFSETS = Object.freeze([]) as unknown as number[]

export class RequestFramer {
  limits: RequestLimits
  /** Chunks are reused once push returns: commands, pieces and kept parts are copied out of them. */
  transient = false
  /**
   * Transient mode: large commands are copied into the command ring (see command-ring); whoever
   * keeps one past its reply, or for long, must take it out (RespCommand.detached).
   */
  useRing = false
  /** The ring lease of the command #take just made. */
  #lease: RingLease | null = null

  #state = ST_START
  #num = 0
  #digits = 0
  #negative = false
  /** The header line so far is not an integer Redis would read (a bad byte, a leading zero). */
  #badNumber = false
  /** The first byte of a bulk header line (Redis wants '$'). */
  #typeByte = 0
  /** Bytes of the header line (or stuck line) so far, for Redis's 64 KB limit. */
  #lineLength = 0
  /** What a stuck line is: 'mbulk count', 'bulk count' or 'inline' (the error names it). */
  #stuckKind = ''
  /** Digits of a header longer than 15 digits, for the exact 64-bit overflow check. */
  #longDigits = ''
  #argsLeft = 0
  #dataLeft = 0
  /** Bytes of the command in progress that arrived in earlier chunks. */
  #parts = NO_PARTS
  #partsLength = 0
  /** Argument offsets of the command in progress; handed to its RespCommand when complete. */
  #offsets = NO_OFFSETS
  /** How many entries of #offsets are filled (it may be allocated at its final size). */
  #offsetCount = 0
  #inlineLength = 0
  /** The command in progress is being handed on in pieces. */
  #streaming = false
  /** Streaming was offered for the command in progress and declined. */
  #declined = false

  constructor (limits: RequestLimits = DEFAULT_REQUEST_LIMITS) {
    this.limits = limits
  }

  /** True while part of a command has been received but not all of it. */
  get midCommand (): boolean {
    return this.#state !== ST_START || this.#partsLength > 0
  }

  /** Bytes held for the command in progress (for memory accounting). */
  get bufferedBytes (): number {
    return this.#partsLength
  }

  /** Feeds one chunk to a plain callback (no streaming of large commands). */
  push (chunk: Buffer, onCommand: (cmd: RespCommand) => void): void {
    this.feed(chunk, { onCommand })
  }

  /**
   * Feeds one chunk; calls sink.onCommand for each complete command, in order.
   * Throws ProtocolError (with Redis's wording) on malformed input; commands completed
   * before the bad byte have already been delivered. The framer accepts nothing afterwards.
   */
  feed (chunk: Buffer, sink: CommandSink): void {
    if (this.#state === ST_DEAD) return
    const n = chunk.length
    let start = 0 // where the command in progress begins inside this chunk
    let pos = 0
    try {
      while (pos < n) {
        switch (this.#state) {
          case ST_START: {
            const b = chunk[pos]
            if (b === STAR) {
              pos++
              this.#beginLine(ST_COUNT)
              this.#lineLength = 1
            } else {
              this.#state = ST_INLINE
              this.#inlineLength = 0
            }
            break
          }
          case ST_COUNT:
          case ST_ARG_LEN:
            pos = this.#readLine(chunk, pos)
            break
          case ST_STUCK:
            this.#lineLength += n - pos
            pos = n
            if (this.#lineLength > this.limits.maxInlineLength) throw this.#tooBig()
            break
          case ST_COUNT_LF: {
            pos++ // Redis skips the byte after CR without looking at it
            const count = this.#lineValue()
            if (count === null || count > INT_MAX || count > this.limits.maxMultibulkLength) {
              throw new ProtocolError('Protocol error: invalid multibulk length')
            }
            if (this.limits.unauthenticated === true && count > UNAUTH_MAX_MULTIBULK) {
              throw new ProtocolError('Protocol error: unauthenticated multibulk length')
            }
            if (count <= 0) {
              // Redis ignores '*0' and '*-1' silently: no command, no reply.
              this.#reset()
              start = pos
              break
            }
            this.#argsLeft = count
            // Sized once for the usual command; a huge count grows as arguments really arrive.
            this.#offsets = count <= PRESIZE_ARGS ? new Array<number>(2 * count) : []
            this.#offsetCount = 0
            this.#state = ST_ARG_TYPE
            break
          }
          case ST_ARG_TYPE: {
            const b = chunk[pos]
            this.#beginLine(ST_ARG_LEN)
            this.#typeByte = b
            if (b === NUL) {
              this.#stick('bulk count')
              break
            }
            pos++
            this.#lineLength = 1
            // An empty line (CR where '$' should be) ends right here.
            if (b === CR) this.#state = ST_ARG_LEN_LF
            break
          }
          case ST_ARG_LEN_LF: {
            pos++ // skipped unchecked, as by Redis
            const type = this.#typeByte
            if (type !== DOLLAR) {
              // Redis prints the byte as it is (%c), with CR and LF turned into spaces.
              const shown = type === CR || type === LF ? ' ' : String.fromCharCode(type)
              throw new ProtocolError(`Protocol error: expected '$', got '${shown}'`)
            }
            const len = this.#lineValue()
            if (len === null || len < 0 || len > this.limits.maxBulkLength) throw new ProtocolError('Protocol error: invalid bulk length')
            if (this.limits.unauthenticated === true && len > UNAUTH_MAX_BULK) {
              throw new ProtocolError('Protocol error: unauthenticated bulk length')
            }
            const argStart = this.#partsLength + (pos - start)
            this.#offsets[this.#offsetCount++] = argStart
            this.#offsets[this.#offsetCount++] = argStart + len
            this.#dataLeft = len + 2
            this.#state = ST_ARG_DATA
            break
          }
          case ST_ARG_DATA: {
            const take = Math.min(this.#dataLeft, n - pos)
            pos += take
            this.#dataLeft -= take
            if (this.#dataLeft > 0) break
            // Like Redis, the two bytes after a payload are skipped, not checked: the upstream
            // reads the forwarded bytes exactly as the framer did.
            if (--this.#argsLeft > 0) {
              this.#state = ST_ARG_TYPE
              break
            }
            if (this.#streaming) (sink as Required<CommandSink>).commandStreamPart(chunk.subarray(start, pos), true, this.transient)
            else {
              const frame = this.#take(chunk, start, pos, this.useRing)
              const lease = this.#lease
              this.#lease = null
              sink.onCommand(new RespCommand(frame, this.#offsets, lease))
            }
            this.#reset()
            start = pos
            break
          }
          case ST_INLINE: {
            const nl = chunk.indexOf(LF, pos)
            const zero = chunk.indexOf(NUL, pos)
            if (zero !== -1 && (nl === -1 || zero < nl)) {
              // Redis looks for the line's end with strchr, which stops at the NUL: never found.
              this.#lineLength = this.#inlineLength
              this.#stick('inline')
              break
            }
            const end = nl === -1 ? n : nl + 1
            this.#inlineLength += end - pos
            pos = end
            if (nl === -1) {
              // Like Redis: only a line still without its end is too big.
              if (this.#inlineLength > this.limits.maxInlineLength) throw new ProtocolError('Protocol error: too big inline request')
              break
            }
            const line = this.#take(chunk, start, pos)
            this.#reset()
            start = pos
            const args = splitInlineArgs(line)
            if (args === null) throw new ProtocolError('Protocol error: unbalanced quotes in request')
            if (args.length > 0) sink.onCommand(toCommand(args))
            break
          }
        }
      }
    } catch (err) {
      this.#state = ST_DEAD
      this.#parts = NO_PARTS
      this.#partsLength = 0
      this.#streaming = false
      throw err
    }
    if (start >= n) return
    if (this.#streaming) {
      (sink as Required<CommandSink>).commandStreamPart(start === 0 ? chunk : chunk.subarray(start), false, this.transient)
      return
    }
    const rest = this.transient ? copyOf(chunk, start, n) : start === 0 ? chunk : chunk.subarray(start)
    // Keep the unfinished command's bytes (a view of the chunk, not a copy).
    this.#keepPart(rest)
    this.#partsLength += rest.length
    if (sink.startCommandStream !== undefined && !this.#declined && this.#partsLength > COMMAND_STREAM_THRESHOLD && this.#state === ST_ARG_DATA) {
      this.#offerStream(sink)
    }
  }

  /** A large multibulk in progress: offer it for streaming, with its complete arguments readable. */
  #offerStream (sink: CommandSink): void {
    const head = Buffer.concat(this.#parts, this.#partsLength)
    // Arguments received whole so far; the one in progress is left out.
    const complete = this.#offsets.slice(0, this.#offsetCount - 2)
    if (complete.length < 2 || sink.startCommandStream?.(new RespCommand(head, complete)) !== true) {
      this.#declined = true
      this.#parts = [head]
      return
    }
    this.#streaming = true
    this.#parts = NO_PARTS
    this.#partsLength = 0
  }

  #keepPart (part: Buffer): void {
    if (this.#parts === NO_PARTS) this.#parts = [part]
    else this.#parts.push(part)
  }

  #beginLine (state: number): void {
    this.#state = state
    this.#num = 0
    this.#digits = 0
    this.#negative = false
    this.#badNumber = false
    this.#lineLength = 0
    this.#longDigits = ''
  }

  /** A NUL hides the end of the current line from Redis: nothing after it is ever parsed. */
  #stick (kind: string): void {
    this.#state = ST_STUCK
    this.#stuckKind = kind
  }

  #tooBig (): ProtocolError {
    return new ProtocolError(`Protocol error: too big ${this.#stuckKind}${this.#stuckKind === 'inline' ? ' request' : ' string'}`)
  }

  /** Reads a header line up to its CR, noting whether it is an integer Redis accepts. */
  #readLine (chunk: Buffer, pos: number): number {
    const n = chunk.length
    const isCount = this.#state === ST_COUNT
    const start = pos
    while (pos < n) {
      const b = chunk[pos++]
      if (b === CR) {
        this.#state = isCount ? ST_COUNT_LF : ST_ARG_LEN_LF
        this.#lineLength += pos - start
        return pos
      }
      if (b === NUL) {
        this.#lineLength += pos - start
        this.#stick(isCount ? 'mbulk count' : 'bulk count')
        return pos
      }
      if (this.#badNumber) continue
      if (b === MINUS && this.#digits === 0 && !this.#negative) {
        this.#negative = true
        continue
      }
      const d = b - 48
      // string2ll: digits only, and the first digit is not 0 unless the number is "0".
      if (d < 0 || d > 9 || (this.#digits === 1 && this.#num === 0)) {
        this.#badNumber = true
        continue
      }
      if (d === 0 && this.#digits === 0 && this.#negative) {
        this.#badNumber = true // "-0"
        continue
      }
      if (++this.#digits > 15) this.#longDigits += String.fromCharCode(b)
      else this.#num = this.#num * 10 + d
    }
    this.#lineLength += pos - start
    if (this.#lineLength > this.limits.maxInlineLength) {
      // Redis gives up on a header line that has no end after 64 KB.
      this.#stuckKind = isCount ? 'mbulk count' : 'bulk count'
      throw this.#tooBig()
    }
    return pos
  }

  /**
   * The header line's value as Redis's string2ll reads it, or null if Redis refuses it. Values
   * beyond 15 digits are checked for 64-bit overflow and then reported as Infinity: every limit
   * they are compared with is far below them.
   */
  #lineValue (): number | null {
    if (this.#badNumber || this.#digits === 0) return null
    if (this.#digits <= 15) return this.#negative ? -this.#num : this.#num
    if (this.#digits > 19) return null
    if (this.#digits === 19) {
      const all = String(this.#num) + this.#longDigits
      if (all > (this.#negative ? '9223372036854775808' : '9223372036854775807')) return null
    }
    return this.#negative ? -Infinity : Infinity
  }

  /** The command's bytes from `start` to `end` of this chunk, joined with earlier parts once. */
  #take (chunk: Buffer, start: number, end: number, ring = false): Buffer {
    if (ring && this.transient) {
      const reserved = reserveInRing(this.#partsLength + end - start)
      if (reserved !== null) {
        let at = 0
        for (const part of this.#parts) at += part.copy(reserved.frame, at)
        chunk.copy(reserved.frame, at, start, end)
        this.#lease = reserved.lease
        return reserved.frame
      }
    }
    if (this.#partsLength === 0) {
      if (this.transient) return copyOf(chunk, start, end)
      // A command that is the whole chunk (a client sending one at a time) needs no view of its own.
      return start === 0 && end === chunk.length ? chunk : chunk.subarray(start, end)
    }
    // (Joining copies, so the last part may be a view even of a transient chunk.)
    this.#keepPart(chunk.subarray(start, end))
    return Buffer.concat(this.#parts, this.#partsLength + end - start)
  }

  #reset (): void {
    this.#state = ST_START
    // The command owns its parts and offsets now: an idle client keeps none of them.
    this.#parts = NO_PARTS
    this.#offsets = NO_OFFSETS
    this.#partsLength = 0
    this.#streaming = false
    this.#declined = false
  }
}

/** Inline commands are re-encoded as multibulk: the upstream always gets canonical RESP. */
function toCommand (args: Buffer[]): RespCommand {
  const header = `*${args.length}\r\n`
  let size = header.length
  for (const arg of args) size += `$${arg.length}\r\n`.length + arg.length + 2
  const frame = Buffer.allocUnsafe(size)
  const offsets: number[] = []
  let pos = frame.write(header, 0, 'latin1')
  for (const arg of args) {
    pos += frame.write(`$${arg.length}\r\n`, pos, 'latin1')
    offsets.push(pos, pos + arg.length)
    pos += arg.copy(frame, pos)
    frame[pos++] = CR
    frame[pos++] = LF
  }
  return new RespCommand(frame, offsets)
}
