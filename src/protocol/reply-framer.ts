import { ProtocolError } from '../errors.js'
import { copyOf } from './socket-reader.js'

/**
 * Incremental boundary scanner for what Redis sends back: every RESP2 and RESP3 type.
 *
 * Hand-written for the same reason as the request framer: the proxy needs only where each
 * top-level reply ends, so it can hand the exact bytes to the right client. Decoding (what
 * `redis-parser` does) would allocate JS values and lose the wire form, e.g. simple vs bulk
 * strings or integers beyond 2^53.
 *
 * Each byte is looked at once. Aggregates are tracked as a stack of "children still expected";
 * bulk payloads are skipped by length. A reply inside one chunk is a zero-copy view; a reply that
 * spans chunks is joined once. In `transient` mode (chunks read into a reused buffer) what the
 * framer keeps and the pieces it hands on are copies, and a reply inside one chunk is a view
 * marked transient: its receiver copies it only if it must keep it.
 */

/**
 * A top-level reply is complete: `frame` is its exact bytes. `transient` (transient mode only):
 * `frame` is a view of the chunk being pushed, valid only during the call; whoever keeps it must
 * copy it. Otherwise the frame is the caller's to keep.
 */
export type OnReply = (frame: Buffer, transient: boolean) => void

/**
 * A piece of a large top-level reply, in order; `done` marks the last piece. Used once a reply
 * in progress has grown past the streaming threshold, so a 256 MB value is passed on as it
 * arrives instead of being held whole (and copied once more to join it). A `transient` piece is
 * a view of the chunk being pushed, valid only during the call: whoever keeps it copies it.
 */
export type OnReplyPart = (piece: Buffer, done: boolean, transient: boolean) => void

/** Replies larger than this are handed on in pieces when the caller accepts pieces. */
export const STREAM_THRESHOLD = 1024 * 1024

const LF = 10
const CR = 13
const MINUS = 45
const QUESTION = 63

// What kind of header a length line belongs to.
const KIND_BULK = 0 // $ ! =     length-prefixed payload
const KIND_AGG = 1 // * ~ >      n children
const KIND_MAP = 2 // %          2n children
const KIND_ATTR = 3 // |         2n children, then the value the attribute describes

const ST_TYPE = 0
const ST_LINE = 1 // a line value (+ - : _ # , ( ): up to LF
const ST_LEN = 2 // digits of a length header
const ST_LEN_LF = 3
const ST_DATA = 4 // payload
const ST_DATA_CR = 5 // the CR after a payload
const ST_DATA_LF = 6 // the LF after a payload
const ST_DEAD = 7

const MAX_HEADER_DIGITS = 19

/** Byte → header kind, or -1 for line types, or undefined for bytes that start no value. */
const TYPE_TABLE: Array<number | undefined> = new Array(256)
for (const c of '+-:_#,(') TYPE_TABLE[c.charCodeAt(0)] = -1
for (const c of '$!=') TYPE_TABLE[c.charCodeAt(0)] = KIND_BULK
for (const c of '*~>') TYPE_TABLE[c.charCodeAt(0)] = KIND_AGG
TYPE_TABLE['%'.charCodeAt(0)] = KIND_MAP
TYPE_TABLE['|'.charCodeAt(0)] = KIND_ATTR

export class ReplyFramer {
  /** Chunks are reused once push returns: frames, pieces and kept parts are copied out of them. */
  readonly #transient: boolean
  #state = ST_TYPE
  #kind = 0
  #num = 0
  #digits = 0
  #negative = false
  #dataLeft = 0
  /** Children still expected by each open aggregate, innermost last. */
  #stack: number[] = []
  #parts: Buffer[] = []
  #partsLength = 0
  /** The reply in progress is being handed on in pieces. */
  #streaming = false
  /**
   * Transient mode: a top-level bulk reply that spans reads, in a buffer of its final size
   * (known from its header), filled as it arrives: one copy, instead of a copy per read and
   * another to join them. Memory given to ArrayBuffers is what makes V8 collect at 16 KB values.
   */
  #frame: Buffer | null = null

  constructor (options: { transient?: boolean } = {}) {
    this.#transient = options.transient === true
  }

  /** Bytes held for a reply in progress. */
  get bufferedBytes (): number {
    return this.#partsLength
  }

  /** True while a reply has started but not finished. */
  get midReply (): boolean {
    return this.#state !== ST_TYPE || this.#partsLength > 0
  }

  /**
   * Feeds one chunk; calls onReply once per complete top-level reply. With onPart, a reply
   * that grows past STREAM_THRESHOLD is handed on in pieces instead (onPart, last one done).
   * Throws ProtocolError on junk.
   */
  push (chunk: Buffer, onReply: OnReply, onPart?: OnReplyPart): void {
    if (this.#state === ST_DEAD) return
    const n = chunk.length
    let start = 0
    let pos = 0
    try {
      while (pos < n) {
        let valueDone = false
        switch (this.#state) {
          case ST_TYPE: {
            const b = chunk[pos++]
            const kind = TYPE_TABLE[b]
            if (kind === undefined) throw new ProtocolError(`unexpected byte 0x${b.toString(16).padStart(2, '0')} in reply stream`)
            if (kind === -1) {
              this.#state = ST_LINE
            } else {
              this.#kind = kind
              this.#state = ST_LEN
              this.#num = 0
              this.#digits = 0
              this.#negative = false
            }
            break
          }
          case ST_LINE: {
            const nl = chunk.indexOf(LF, pos)
            if (nl === -1) {
              pos = n
            } else {
              pos = nl + 1
              valueDone = true
            }
            break
          }
          case ST_LEN: {
            while (pos < n) {
              const b = chunk[pos++]
              if (b === CR) {
                if (this.#digits === 0) throw new ProtocolError('invalid length in reply stream')
                this.#state = ST_LEN_LF
                break
              }
              if (b === MINUS && this.#digits === 0 && !this.#negative) {
                this.#negative = true
                continue
              }
              const d = b - 48
              if (d < 0 || d > 9 || ++this.#digits > MAX_HEADER_DIGITS) {
                // RESP3 streamed types ('$?', '*?') are never sent by Redis; treat them as junk.
                throw new ProtocolError(b === QUESTION ? 'streamed RESP3 types are not supported' : 'invalid length in reply stream')
              }
              this.#num = this.#num * 10 + d
            }
            break
          }
          case ST_LEN_LF: {
            if (chunk[pos++] !== LF) throw new ProtocolError('invalid length in reply stream')
            if (this.#negative) {
              // $-1 / *-1: RESP2 nulls. Any other negative length is junk.
              if (this.#num !== 1) throw new ProtocolError('invalid length in reply stream')
              valueDone = true
            } else if (this.#kind === KIND_BULK) {
              this.#dataLeft = this.#num
              this.#state = this.#num === 0 ? ST_DATA_CR : ST_DATA
            } else {
              const children = this.#kind === KIND_AGG
                ? this.#num
                : this.#kind === KIND_MAP ? 2 * this.#num : 2 * this.#num + 1
              if (children === 0) {
                valueDone = true
              } else {
                this.#stack.push(children)
                this.#state = ST_TYPE
              }
            }
            break
          }
          case ST_DATA: {
            const take = Math.min(this.#dataLeft, n - pos)
            pos += take
            this.#dataLeft -= take
            if (this.#dataLeft === 0) this.#state = ST_DATA_CR
            break
          }
          // The CRLF after a payload is checked: a missing one means the stream is out of step,
          // and forwarding would hand garbage to a client.
          case ST_DATA_CR:
            if (chunk[pos++] !== CR) throw new ProtocolError('bulk payload not followed by CRLF in reply stream')
            this.#state = ST_DATA_LF
            break
          case ST_DATA_LF:
            if (chunk[pos++] !== LF) throw new ProtocolError('bulk payload not followed by CRLF in reply stream')
            valueDone = true
            break
        }
        if (!valueDone) continue
        this.#state = ST_TYPE
        // A value finished: count it against the open aggregates; the frame is done when none is open.
        const stack = this.#stack
        let open = stack.length
        while (open > 0 && --stack[open - 1] === 0) {
          stack.pop()
          open--
        }
        if (open > 0) continue
        if (this.#streaming) {
          this.#streaming = false
          ;(onPart as OnReplyPart)(chunk.subarray(start, pos), true, this.#transient)
        } else if (this.#partsLength === 0) {
          // A reply that is the whole chunk (one client's turn on a lane) needs no view of its own.
          onReply(start === 0 && pos === chunk.length ? chunk : chunk.subarray(start, pos), this.#transient)
        } else if (this.#frame !== null) {
          const frame = this.#frame
          chunk.copy(frame, this.#partsLength, start, pos)
          this.#frame = null
          this.#partsLength = 0
          onReply(frame, false)
        } else {
          // (Joining copies: the last part may be a view even of a transient chunk.)
          this.#parts.push(chunk.subarray(start, pos))
          const frame = Buffer.concat(this.#parts, this.#partsLength + pos - start)
          this.#parts = []
          this.#partsLength = 0
          onReply(frame, false)
        }
        start = pos
      }
    } catch (err) {
      this.#state = ST_DEAD
      this.#parts = []
      this.#partsLength = 0
      this.#streaming = false
      this.#frame = null
      throw err
    }
    if (start >= n) return
    if (this.#transient && !this.#streaming && this.#keepInFrame(chunk, start, n)) return
    if (this.#streaming) {
      (onPart as OnReplyPart)(start === 0 ? chunk : chunk.subarray(start), false, this.#transient)
      return
    }
    const rest = this.#transient ? copyOf(chunk, start, n) : start === 0 ? chunk : chunk.subarray(start)
    this.#parts.push(rest)
    this.#partsLength += rest.length
    if (onPart !== undefined && this.#partsLength > STREAM_THRESHOLD) {
      // Large: from now on this reply is handed on as it arrives.
      this.#streaming = true
      const head = this.#parts.length === 1 ? this.#parts[0] : Buffer.concat(this.#parts, this.#partsLength)
      this.#parts = []
      this.#partsLength = 0
      onPart(head, false, false)
    }
  }

  /** Transient mode: keeps the unfinished part of a top-level bulk reply in its final-size buffer. */
  #keepInFrame (chunk: Buffer, start: number, end: number): boolean {
    if (this.#frame === null) {
      if (this.#stack.length !== 0) return false
      const state = this.#state
      const left = state === ST_DATA ? this.#dataLeft + 2 : state === ST_DATA_CR ? 2 : state === ST_DATA_LF ? 1 : -1
      const total = this.#partsLength + end - start + left
      if (left < 0 || total > STREAM_THRESHOLD) return false
      const frame = Buffer.allocUnsafe(total)
      let used = 0
      for (const part of this.#parts) used += part.copy(frame, used)
      this.#parts = []
      this.#partsLength = used
      this.#frame = frame
    }
    this.#partsLength += chunk.copy(this.#frame, this.#partsLength, start, end)
    return true
  }
}
