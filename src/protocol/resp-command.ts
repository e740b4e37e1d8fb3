import { commandName } from './command-name.js'
import type { RingLease } from './command-ring.js'

const CRLF = Buffer.from('\r\n')

/**
 * One client command as it arrived: the exact wire bytes plus the offsets of its arguments.
 * Arguments are views into `frame`, never copies; `name` is computed once.
 */
export class RespCommand {
  /** Lowercased command name ('' for a command with no arguments, which never reaches here). */
  readonly name: string

  /**
   * @param frame the bytes to forward upstream (a multibulk; inline commands are re-encoded)
   * @param offsets start and end of each argument inside `frame`, flattened: [s0, e0, s1, e1, …]
   * @param lease when `frame` lives in the command ring: to release once nothing reads it
   */
  constructor (readonly frame: Buffer, readonly offsets: number[], readonly lease: RingLease | null = null) {
    this.name = offsets.length >= 2 ? commandName(frame, offsets[0], offsets[1]) : ''
  }

  /** The same command in memory of its own (a command in the ring that is kept longer). */
  detached (): RespCommand {
    this.lease?.release()
    return new RespCommand(Buffer.from(this.frame), this.offsets)
  }

  /** A command built from arguments (for the proxy's own rewrites, not the hot path). */
  static fromArgs (args: ReadonlyArray<Buffer>): RespCommand {
    const header = `*${args.length}\r\n`
    const parts: Buffer[] = [Buffer.from(header)]
    const offsets: number[] = []
    let pos = header.length
    for (const arg of args) {
      const len = `$${arg.length}\r\n`
      parts.push(Buffer.from(len), arg, CRLF)
      pos += len.length
      offsets.push(pos, pos + arg.length)
      pos += arg.length + 2
    }
    return new RespCommand(Buffer.concat(parts), offsets)
  }

  get argc (): number {
    return this.offsets.length >> 1
  }

  arg (i: number): Buffer {
    return this.frame.subarray(this.offsets[2 * i], this.offsets[2 * i + 1])
  }

  /** Argument i as text (latin1 keeps binary bytes one-to-one). */
  argString (i: number): string {
    return this.frame.toString('latin1', this.offsets[2 * i], this.offsets[2 * i + 1])
  }

  /** Argument i lowercased, for keyword matching (`BLOCK`, `REPLY`, `OFF` …). */
  keyword (i: number): string {
    return i < this.argc ? this.argString(i).toLowerCase() : ''
  }

  /** Every argument as a Buffer view (for logging or local emulation; not on the hot path). */
  args (): Buffer[] {
    const out: Buffer[] = []
    for (let i = 0; i < this.argc; i++) out.push(this.arg(i))
    return out
  }
}
