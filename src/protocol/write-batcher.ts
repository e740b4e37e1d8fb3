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
    endTurn()
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

/**
 * Where a turn's small writes to one socket are joined. A socket on loopback or a healthy
 * network takes a write at once (the kernel copies it), so the same memory serves every write
 * of every turn, and joining allocates nothing. A fresh buffer per join (Buffer.concat) would
 * be a new ArrayBuffer per socket per turn: memory outside V8's heap that V8 still counts, and
 * at 16 KB values that alone made it collect garbage every few tens of milliseconds. The arena is
 * given up, never overwritten, when a socket keeps a write (its buffer was full).
 */
const ARENA_SIZE = 256 * 1024
let arena: Buffer | null = null

/**
 * Copies of transient writes (replies that were views of the shared read buffer), held until
 * the end of the turn. Once every socket has taken its writes at once, nothing points into the
 * arena any more and the next turn fills it again: a reply passed straight on from Redis to its
 * client then costs no allocation at all, where a copy of its own would be memory V8 counts
 * towards its next collection (at 16 KB values, a collection every few tens of milliseconds).
 * If a socket keeps a write, the arena is left to it and the next turn starts another; a turn
 * that outgrows the arena starts one twice the size, up to TURN_ARENA_MAX.
 */
const TURN_ARENA_MIN = 256 * 1024
const TURN_ARENA_MAX = 4 * 1024 * 1024
let turnArena: Buffer | null = null
let turnUsed = 0
/** A socket kept a write this turn: it may point into the turn arena. */
let turnHeld = false

function copyIntoTurn (data: Buffer): Buffer {
  if (turnArena === null || turnUsed + data.length > turnArena.length) {
    const size = turnArena === null ? TURN_ARENA_MIN : Math.min(2 * turnArena.length, TURN_ARENA_MAX)
    turnArena = Buffer.allocUnsafeSlow(size)
    turnUsed = 0
  }
  const end = turnUsed + data.copy(turnArena, turnUsed)
  const copy = turnArena.subarray(turnUsed, end)
  turnUsed = end
  return copy
}

function endTurn (): void {
  if (turnHeld) {
    turnArena = null
    turnUsed = 0
  } else if (queue.length === 0) {
    // No socket kept a write, and no writer holds one for the next turn.
    turnUsed = 0
  }
  turnHeld = false
}

/**
 * Buffers for the pieces of a large reply or command that stream through (a 64 MB GET goes
 * by in reads of up to 64 KB). A piece is a view of the shared read buffer, so it must be
 * copied before the socket may keep it; a fresh buffer per piece would be half a gigabyte of
 * new memory per second at full speed, which kept V8 marking and the kernel zeroing pages, and
 * made every other client on the proxy wait for them. These buffers go back to a free list
 * when the socket is done with them (its write callback), so a stream in steady state
 * allocates nothing. The list keeps at most PIECE_SPARE_MAX of them (4 MB) between streams.
 * A small piece for a socket that already holds bytes gets a copy of its own size (writePiece).
 */
const PIECE_SIZE = 64 * 1024
const PIECE_SPARE_MAX = 64

interface PieceBuffer {
  readonly buf: Buffer
  /** The socket's write callback: the buffer may be reused. Made once per buffer. */
  readonly release: () => void
}

const spareEntries: PieceBuffer[] = []

function takePieceBuffer (): PieceBuffer {
  const spare = spareEntries.pop()
  if (spare !== undefined) return spare
  const entry: PieceBuffer = {
    buf: Buffer.allocUnsafeSlow(PIECE_SIZE),
    release: () => { if (spareEntries.length < PIECE_SPARE_MAX) spareEntries.push(entry) }
  }
  return entry
}

/** Spare piece buffers held for the next stream (for tests and metrics). */
export function spareStreamPieceBuffers (): number {
  return spareEntries.length
}

/** Told when the socket's buffer is full (write() returned false). */
export interface WriteOwner {
  onOutputFull (): void
}

export class TickWriter implements Flushable {
  readonly #socket: net.Socket
  readonly #owner: WriteOwner
  /** The turn's first write; most turns have only one, which then needs no array. */
  #first: Buffer | null = null
  /** Writes after the first, in order (made on first use, then reused from turn to turn). */
  #more: Buffer[] | null = null
  #bytes = 0
  #scheduled = false

  /** The owner is told when the socket's buffer is full (an object, not a closure per writer). */
  constructor (socket: net.Socket, owner: WriteOwner) {
    this.#socket = socket
    this.#owner = owner
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
    if (this.#more !== null) this.#more.length = 0
    this.#bytes = 0
  }

  write (data: Buffer): void {
    if (data.length >= JOIN_LIMIT) {
      this.flush()
      this.#send(data)
      return
    }
    if (this.#first === null) this.#first = data
    else (this.#more ??= []).push(data)
    this.#bytes += data.length
    if (!this.#scheduled) {
      this.#scheduled = true
      flushAtEndOfTick(this)
    }
  }

  /**
   * Like write, for a view that is valid only during the current call (a reply in the shared
   * read buffer): it is copied into the turn arena (a large one into memory of its own).
   */
  writeTransient (data: Buffer): void {
    // A socket that holds earlier bytes will hold this reply too, for as long as its client
    // takes to read: a view of the turn arena would keep the whole arena alive with it (a
    // client reading nothing, one small reply per turn, would keep an arena per reply).
    if (data.length > TURN_ARENA_MIN / 4 || this.#socket.writableLength > 0) this.write(Buffer.from(data))
    else this.write(copyIntoTurn(data))
  }

  /**
   * A piece of a large reply or command streaming through, valid only during the current call
   * (a view of the shared read buffer). It goes to the socket at once, after whatever is held,
   * in a reusable piece buffer (see PIECE_SIZE).
   */
  writePiece (data: Buffer): void {
    if (data.length > PIECE_SIZE) {
      this.write(Buffer.from(data))
      return
    }
    this.flush()
    const socket = this.#socket
    if (socket.destroyed) return
    if (data.length < PIECE_SIZE / 2 && socket.writableLength > 0) {
      // The socket holds earlier bytes, so it will hold this piece too, for as long as its
      // client takes to read: a small piece gets memory of its own size. A piece buffer each
      // would keep 64 KB per piece of a few kilobytes (reads from a Redis across a network),
      // many times what the limits on a slow reader count (writableLength). Pieces of half a
      // piece buffer or more (reads at full speed) keep their buffers: at most twice their size.
      if (!socket.write(Buffer.from(data))) this.#owner.onOutputFull()
      return
    }
    const piece = takePieceBuffer()
    const n = data.copy(piece.buf, 0)
    const taken = socket.write(n === PIECE_SIZE ? piece.buf : piece.buf.subarray(0, n), piece.release)
    if (!taken) this.#owner.onOutputFull()
  }

  /** Hands everything held to the socket now (also called at the end of the tick). */
  flush (): void {
    this.#scheduled = false
    const first = this.#first
    if (first === null) return
    const more = this.#more
    const bytes = this.#bytes
    this.#first = null
    this.#bytes = 0
    if (this.#socket.destroyed) {
      if (more !== null) more.length = 0
      return
    }
    if (more === null || more.length === 0) {
      this.#send(first)
      return
    }
    if (this.#socket.writableLength > 0) {
      // The socket still holds earlier bytes, so it will hold these too: they get their own buffer.
      more.unshift(first)
      const data = Buffer.concat(more, bytes)
      more.length = 0
      this.#send(data)
      return
    }
    let buf = arena ??= Buffer.allocUnsafeSlow(ARENA_SIZE)
    let used = first.copy(buf, 0)
    for (let i = 0; i < more.length; i++) {
      const piece = more[i]
      let from = 0
      while (from < piece.length) {
        if (used === ARENA_SIZE) {
          // More than the arena holds: it goes in arena-sized writes.
          this.#sendArena(buf, used)
          buf = arena ??= Buffer.allocUnsafeSlow(ARENA_SIZE)
          used = 0
        }
        const n = piece.copy(buf, used, from)
        used += n
        from += n
      }
    }
    more.length = 0
    this.#sendArena(buf, used)
  }

  #sendArena (buf: Buffer, used: number): void {
    this.#send(buf.subarray(0, used))
    // Still held by the socket (not taken at once): the arena is the socket's now.
    if (this.#socket.writableLength > 0 && arena === buf) arena = null
  }

  #send (data: Buffer): void {
    const socket = this.#socket
    const taken = socket.write(data)
    if (socket.writableLength > 0) turnHeld = true
    if (!taken) this.#owner.onOutputFull()
  }
}
