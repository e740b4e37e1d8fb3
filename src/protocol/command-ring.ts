/**
 * Memory for large client commands read from the shared read buffer, reused in the order the
 * commands are done with.
 *
 * A command read from the shared buffer must be copied, because its reply slot keeps it until
 * the reply is written (it may be sent again, after -READONLY). A fresh buffer per command is
 * memory V8 counts towards its next major collection: at 16 KB SETs, one every few tens of
 * milliseconds, each a few milliseconds long. Commands forwarded on shared lanes finish roughly
 * in the order they arrived, so their copies go into a ring: space is taken at the tail and given
 * back from the head once the commands there are released (their replies written).
 *
 * Only space of released leases is ever reused; a lease that is never released (its client went
 * away, its command was rewritten) only holds up the ring: after STUCK_MS the ring is left to
 * whoever still points into it and a new one is started. When the ring is full, take() answers
 * null and the caller allocates as before.
 */

const RING_SIZE = 2 * 1024 * 1024
/** Commands from this size on go to the ring; smaller ones come cheaply from Node's buffer pool. */
export const RING_MIN = 4 * 1024
const RING_MAX = 256 * 1024
/** A lease at the head unreleased for this long holds up the ring: a new ring is started. */
const STUCK_MS = 1000

export class RingLease {
  released = false

  constructor (readonly start: number, readonly end: number, readonly at: number) {}

  /** Nothing reads the command's bytes any more. */
  release (): void {
    this.released = true
  }
}

class Ring {
  readonly buf = Buffer.allocUnsafeSlow(RING_SIZE)
  /** Leases in the order taken; the head is the oldest not yet given back. */
  readonly leases: RingLease[] = []
  #first = 0
  #tail = 0

  get stuckSince (): number {
    return this.#first < this.leases.length ? this.leases[this.#first].at : Infinity
  }

  /** A lease on `length` bytes, or null when there is no room (after giving back what was released). */
  take (length: number, now: number): RingLease | null {
    const leases = this.leases
    while (this.#first < leases.length && leases[this.#first].released) this.#first++
    if (this.#first === leases.length) {
      leases.length = 0
      this.#first = 0
      this.#tail = 0
    } else if (this.#first > 64 && this.#first * 2 > leases.length) {
      leases.splice(0, this.#first)
      this.#first = 0
    }
    const head = this.#first < leases.length ? leases[this.#first].start : -1
    let start = -1
    if (head === -1 || head < this.#tail) {
      // Free: from the tail to the end, and from 0 to the head.
      if (RING_SIZE - this.#tail >= length) start = this.#tail
      else if (head !== -1 && head > length) start = 0
    } else if (head - this.#tail > length) {
      // Wrapped: free from the tail to the head (never up to it: tail = head means empty).
      start = this.#tail
    }
    if (start === -1) return null
    const lease = new RingLease(start, start + length, now)
    leases.push(lease)
    this.#tail = lease.end
    return lease
  }
}

let ring: Ring | null = null

/** `length` bytes of the ring for a command, with its lease; null when it does not belong there or the ring is full. */
export function reserveInRing (length: number): { frame: Buffer, lease: RingLease } | null {
  if (length < RING_MIN || length > RING_MAX) return null
  const now = performance.now()
  ring ??= new Ring()
  let lease = ring.take(length, now)
  if (lease === null) {
    if (now - ring.stuckSince < STUCK_MS) return null
    ring = new Ring()
    lease = ring.take(length, now) as RingLease
  }
  return { frame: ring.buf.subarray(lease.start, lease.end), lease }
}
