import { createHash } from 'node:crypto'
import type { RespCommand } from '../protocol/resp-command.js'
import { command as encodeCommand } from '../protocol/resp-encode.js'

type Done = (reply: Buffer) => void
export type SendToSlot = (frame: Buffer, slot: number, resp: 2 | 3, done: Done, onRedirect: () => void) => void

/** Script bodies respool keeps (the oldest go first past these). */
const MAX_SCRIPTS = 10_000
const MAX_BYTES = 32 * 1024 * 1024

/**
 * The Lua scripts clients loaded (SCRIPT LOAD) or ran (EVAL) through respool, by SHA1, so that an
 * EVALSHA answered `-NOSCRIPT` by a master that never saw the script (one added or promoted
 * later, or simply another master than the one an EVAL ran on) is answered as one Redis would:
 * respool loads the script there and sends the EVALSHA once more. Without a known body the
 * `-NOSCRIPT` reaches the client, as from one Redis. SCRIPT FLUSH forgets them all.
 */
export class ScriptCache {
  readonly #bodies = new Map<string, Buffer>()
  #bytes = 0
  readonly #send: SendToSlot
  reloads = 0

  constructor (send: SendToSlot) {
    this.#send = send
  }

  get size (): number {
    return this.#bodies.size
  }

  /** A body whose SHA1 a master just answered (SCRIPT LOAD's reply). */
  remember (sha: string, body: Buffer): void {
    const key = sha.toLowerCase()
    if (this.#bodies.has(key)) return
    const copy = Buffer.from(body) // the argument is a view into a client's read buffer
    this.#bodies.set(key, copy)
    this.#bytes += copy.length
    for (const [old, oldBody] of this.#bodies) {
      if (this.#bodies.size <= MAX_SCRIPTS && this.#bytes <= MAX_BYTES) break
      this.#bodies.delete(old)
      this.#bytes -= oldBody.length
    }
  }

  forgetAll (): void {
    this.#bodies.clear()
    this.#bytes = 0
  }

  /**
   * `done` for a keyed command on its way to `slot`: EVAL's body is remembered; an EVALSHA's
   * `-NOSCRIPT` is answered by loading the remembered body on that master and running the EVALSHA
   * again (once). Other commands keep `done` as it is.
   */
  around (cmd: RespCommand, slot: number, resp: 2 | 3, done: Done, onRedirect: () => void): Done {
    const name = cmd.name
    if ((name === 'eval' || name === 'eval_ro') && cmd.argc >= 3) {
      const body = cmd.arg(1)
      this.remember(createHash('sha1').update(body).digest('hex'), body)
      return done
    }
    if ((name !== 'evalsha' && name !== 'evalsha_ro') || cmd.argc < 3) return done
    const sha = cmd.argString(1).toLowerCase()
    const frame = cmd.frame
    return (reply) => {
      const body = this.#bodies.get(sha)
      if (body === undefined || !reply.toString('latin1', 0, 10).startsWith('-NOSCRIPT')) {
        done(reply)
        return
      }
      this.reloads++
      onRedirect()
      this.#send(encodeCommand(['SCRIPT', 'LOAD', body]), slot, resp, (loaded) => {
        if (loaded[0] === 0x2d /* - */) done(reply)
        else this.#send(frame, slot, resp, done, onRedirect)
      }, onRedirect)
    }
  }
}
