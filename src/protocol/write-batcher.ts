import type net from 'node:net'

/**
 * Batches socket writes per turn of the event loop. Everything written to a socket while the
 * loop handles one round of input (the commands of every client that sent something, a chunk
 * of replies for many clients) is joined and handed to the socket once, in the loop's check
 * phase (setImmediate), right after all of that round's I/O callbacks ran: one write() call and
 * one syscall for a whole round instead of one per command. process.nextTick would flush after
 * each socket's callback and lose the batching across clients; a timer (Envoy's 3 ms flush)
 * would add latency to every lone command; the check phase adds none.
 */
interface Flushable {
  flush (): void
}

// Two queues used in turn, so a flush allocates nothing (this runs on every turn under load).
let queue: Flushable[] = []
let spare: Flushable[] = []
let scheduled = false

function flushAll (): void {
  const owners = queue
  queue = spare
  scheduled = false
  try {
    for (let i = 0; i < owners.length; i++) owners[i].flush()
  } finally {
    owners.length = 0
    spare = owners
  }
}

function flushAtEndOfTick (owner: Flushable): void {
  queue.push(owner)
  if (!scheduled) {
    scheduled = true
    setImmediate(flushAll)
  }
}

/** Small writes are joined (one copy is cheaper than one write() each); large ones go as they are. */
const JOIN_LIMIT = 64 * 1024

export class TickWriter implements Flushable {
  readonly #socket: net.Socket
  readonly #onFull: () => void
  /** The turn's first write; most turns have only one, which then needs no array. */
  #first: Buffer | null = null
  /** Writes after the first, in order (reused from turn to turn). */
  readonly #more: Buffer[] = []
  #bytes = 0
  #scheduled = false

  /** `onFull` runs when the socket's buffer is full (write() returned false). */
  constructor (socket: net.Socket, onFull: () => void) {
    this.#socket = socket
    this.#onFull = onFull
  }

  /** Bytes accepted and not yet sent: held here plus buffered in the socket. */
  get pendingBytes (): number {
    return this.#bytes + this.#socket.writableLength
  }

  /** Bytes accepted and not yet handed to the socket (they can still be taken back). */
  get heldBytes (): number {
    return this.#bytes
  }

  /** Drops what was not handed to the socket yet (its connection is going away; see takeBack). */
  discardHeld (): void {
    this.#first = null
    this.#more.length = 0
    this.#bytes = 0
  }

  write (data: Buffer): void {
    if (data.length >= JOIN_LIMIT) {
      this.flush()
      if (!this.#socket.write(data)) this.#onFull()
      return
    }
    if (this.#first === null) this.#first = data
    else this.#more.push(data)
    this.#bytes += data.length
    if (!this.#scheduled) {
      this.#scheduled = true
      flushAtEndOfTick(this)
    }
  }

  /** Hands everything held to the socket now (also called at the end of the tick). */
  flush (): void {
    this.#scheduled = false
    const first = this.#first
    if (first === null) return
    const more = this.#more
    let data = first
    if (more.length > 0) {
      more.unshift(first)
      data = Buffer.concat(more, this.#bytes)
      more.length = 0
    }
    this.#first = null
    this.#bytes = 0
    if (this.#socket.destroyed) return
    if (!this.#socket.write(data)) this.#onFull()
  }
}
