/**
 * How far a client's commands may run ahead of its own reading.
 *
 * respool forwards a client's commands only while the replies it has not yet read (buffered for
 * it) plus those still to come fit in a window of bytes. A client that stops reading then holds
 * a bounded amount of respool's memory and of its lane's stream, and the rest of its pipeline
 * waits, unsent, in its own socket and in Redis: backpressure ends at Redis, not in respool's
 * heap. Reply sizes are not known before they arrive, so the window counts commands in flight
 * at an estimated size: the estimate jumps up to a large reply at once and comes down slowly,
 * and until the first reply only FIRST_INFLIGHT commands go (a fresh client that pipelines
 * 2,000 GETs of 512 KB values never has them all on the wire).
 */
export const REPLY_WINDOW_BYTES = 8 * 1024 * 1024
const FIRST_INFLIGHT = 16
const MAX_INFLIGHT = 128

export class ReplyWindow {
  /** Estimated reply size in bytes; 0 until a reply has been seen. */
  #estimate = 0

  /** This client's replies are large (a megabyte or more): other clients should not queue behind them. */
  get large (): boolean {
    return this.#estimate >= 1024 * 1024
  }

  /** A whole reply of `bytes` reached this client. */
  observe (bytes: number): void {
    if (bytes > this.#estimate) this.#estimate = bytes
    else this.#estimate += (bytes - this.#estimate) / 16
  }

  /** Whether one more command may go, with `inflight` unanswered and `unread` bytes buffered. */
  allows (inflight: number, unread: number): boolean {
    if (unread >= REPLY_WINDOW_BYTES) return false
    if (inflight === 0) return true
    if (this.#estimate === 0) return inflight < FIRST_INFLIGHT
    return inflight < MAX_INFLIGHT && unread + (inflight + 1) * this.#estimate <= REPLY_WINDOW_BYTES
  }
}
