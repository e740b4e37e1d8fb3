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

// The window is a number per client (the estimated reply size in bytes, 0 until a reply has
// been seen), kept in the session itself: an object per client would cost an idle client more.

/** The client's replies are large (a megabyte or more): other clients should not queue behind them. */
export function repliesLarge (estimate: number): boolean {
  return estimate >= 1024 * 1024
}

/** The estimate after a whole reply of `bytes` reached the client. */
export function observeReply (estimate: number, bytes: number): number {
  return bytes > estimate ? bytes : estimate + (bytes - estimate) / 16
}

/** Whether one more command may go, with `inflight` unanswered and `unread` bytes buffered. */
export function windowAllows (estimate: number, inflight: number, unread: number): boolean {
  if (unread >= REPLY_WINDOW_BYTES) return false
  if (inflight === 0) return true
  if (estimate === 0) return inflight < FIRST_INFLIGHT
  return inflight < MAX_INFLIGHT && unread + (inflight + 1) * estimate <= REPLY_WINDOW_BYTES
}
