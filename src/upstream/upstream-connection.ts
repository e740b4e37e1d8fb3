import net from 'node:net'
import tls from 'node:tls'
import { readFileSync } from 'node:fs'
import Denque from 'denque'
import { ReplyFramer } from '../protocol/reply-framer.js'
import { ReplySlot, InternalSink } from '../routing/reply-slot.js'
import { ProtocolError, UpstreamClosedError, UpstreamConnectError, UpstreamReplicaError, UpstreamTimeoutError, type ProxyError } from '../errors.js'
import { command as encodeCommand } from '../protocol/resp-encode.js'
import { TickWriter } from '../protocol/write-batcher.js'
import { readOption } from '../protocol/socket-reader.js'
import type { UpstreamAddress } from '../config.js'
import { isRefusal } from '../routing/retry-policy.js'

export type UpstreamState = 'connecting' | 'handshaking' | 'ready' | 'retiring' | 'closed'

export interface UpstreamConnectionOptions {
  id: number
  address: UpstreamAddress
  connectTimeoutMs: number
  commandTimeoutMs: number
  /** Ask ROLE during the handshake and refuse a replica (UpstreamReplicaError). */
  requireMaster?: boolean
}

/** What a connection tells the topology about its node (set by the pool, kept for the connection's life). */
export type UpstreamSignal = 'readonly' | 'lost'

const PUSH = 0x3e // '>'
/** Holds the write lock of a connection whose large command was abandoned: nobody writes again. */
const ABANDONED = Object.freeze({ abandoned: true })
const PLUS = 0x2b // '+'
const MINUS = 0x2d // '-'
/** Error replies only a replica gives: the node this connection reaches is no longer the master. */
const REPLICA_ERRORS = [Buffer.from('-READONLY '), Buffer.from('-MASTERDOWN ')]
/** Stands for a reply taken back by its client to be sent again (never delivered). */
const RETRIED = Buffer.alloc(0)
/** Longest a retiring connection waits for the replies still due on it. */
const RETIRE_GRACE_MS = 1000
/** Bytes a connection reads before it lets the other sockets have the event loop (#onData). */
const READ_TURN_BYTES = 64 * 1024

/**
 * One socket to Redis. Commands are written as the client sent them; their slots wait in an
 * inflight FIFO, and each reply frame the framer finds fills the head slot.
 *
 * Rules that keep replies with their owners:
 * - The head slot is popped before its sink runs (the sink may close this connection).
 * - A reply with no slot waiting means the stream is out of step: the connection is dropped,
 *   never resynchronised by guessing.
 * - When the connection fails, every inflight slot fails; nothing is replayed (RESP commands are
 *   not idempotent), except commands whose bytes never left respool: their clients may send
 *   them again elsewhere (retryElsewhere), since Redis never saw them.
 * - A late reply cannot be skipped in a FIFO protocol, so the command timeout closes the connection.
 */
export class UpstreamConnection {
  readonly id: number
  /** Called once when the connection closes for any reason (set by whoever holds it). */
  onClose: ((conn: UpstreamConnection, err: ProxyError) => void) | null = null
  /** Called when the last inflight reply arrived. */
  onIdle: ((conn: UpstreamConnection) => void) | null = null
  /** Called after bytes arrived (the router sets it only while sessions wait for a lane). */
  onProgress: ((conn: UpstreamConnection) => void) | null = null
  /** Called when the connection can take writes again (its socket drained, or a large command is through). */
  onWritable: ((conn: UpstreamConnection) => void) | null = null
  /**
   * Signs that the node moved: a reply only a replica gives (-READONLY, -MASTERDOWN), or Redis
   * closing the connection. Owned by the pool (holders never reset it).
   */
  onSignal: ((conn: UpstreamConnection, signal: UpstreamSignal) => void) | null = null
  /** The topology epoch (which master) this connection was opened for. */
  epoch = 0
  /**
   * Database this connection is in once every command written so far has run, or -1 when that
   * depends on a reply still to come (a client's SELECT). Sessions switch it before their
   * commands; every change starts a new epoch, so a late reply cannot overwrite a newer value.
   */
  get db (): number {
    return this.#db
  }

  set db (value: number) {
    this.#db = value
    this.#dbEpoch++
  }

  /** A client's SELECT is on its way: the database is unknown until Redis answers. Returns the epoch. */
  markDbUnknown (): number {
    this.db = -1
    return this.#dbEpoch
  }

  /** Redis accepted the SELECT sent in `epoch`: the connection is in `db`, unless it was switched since. */
  confirmDb (epoch: number, db: number): void {
    if (epoch === this.#dbEpoch) this.#db = db
  }

  #db = 0
  #dbEpoch = 0

  /** In the database and protocol the handshake leaves it in (a lane may have switched them). */
  get atDefaults (): boolean {
    return this.#db === this.#address.db && this.resp === 2
  }
  /** Protocol the connection speaks now (HELLO switches it; tracked so sessions can switch it). */
  resp: 2 | 3 = 2
  /** Commands in flight that block by design (BLPOP …): the op timer does not apply to them. */
  blockingInflight = 0
  /** Redis's id of this connection (CLIENT ID, asked during the handshake), null until known. */
  redisId: string | null = null
  /**
   * Subscriber or MONITOR mode: every frame is offered here first; returning true consumes it.
   * Frames it declines fill inflight slots as usual (the proxy's own fence commands).
   */
  tunnel: ((frame: Buffer) => boolean) | null = null
  /** Receives RESP3 push frames on a pinned connection (pub/sub messages, invalidations). */
  pushHandler: ((frame: Buffer) => void) | null = null
  #address: UpstreamAddress

  #state: UpstreamState = 'connecting'
  #socket: net.Socket
  #framer: ReplyFramer
  #inflight = new Denque<ReplySlot>()
  readonly #writer: TickWriter
  #needDrain = false
  #drainWaiters: Array<() => void> = []
  #timer: NodeJS.Timeout | null = null
  #lastProgress = 0
  #commandTimeoutMs: number
  #closeError: ProxyError | null = null
  /** Retiring from a node that may still be a master: replies not kept (keepOnRetire) fail. */
  #failOnRetire = false
  /** The slot whose large reply is arriving in pieces. */
  #streamSlot: ReplySlot | null = null
  /** Reading stopped for a slow reader of the only reply in flight (see pauseWhileAlone). */
  #alonePause = false
  /** Pieces of a large frame that must still be delivered whole (a push, or on a tunnel). */
  #wholePieces: Buffer[] | null = null
  #readPauses = 0
  /** Bytes read since reading last gave the other sockets their turn (see #onData). */
  #turnBytes = 0
  #turnYielding = false
  /** A client's large command is being written in pieces: nothing else may be written meanwhile. */
  #writeLockedBy: object | null = null
  #closeWhenOnlyPartialLeft = false
  #unlockWaiters: Array<() => void> = []
  /** Bytes ever given to the writer; each slot records where its command ends (writeEnd). */
  #queued = 0
  /** The node said on this connection that it is a replica: what is in flight here cannot write. */
  #replicaSeen = false

  /** `socket` reads into the shared read buffer (readOption) when `transient`, else emits 'data'. */
  private constructor (options: UpstreamConnectionOptions, socket: net.Socket, transient: boolean) {
    this.id = options.id
    this.#socket = socket
    this.#framer = new ReplyFramer({ transient })
    this.#writer = new TickWriter(socket, this)
    this.#commandTimeoutMs = options.commandTimeoutMs
    this.#address = options.address
    if (!transient) socket.on('data', this.#onData)
    socket.on('error', (err) => { this.destroy(new UpstreamClosedError(`upstream connection error: ${err.message}`)) })
    socket.on('close', () => {
      const lost = this.#state === 'ready'
      this.destroy(new UpstreamClosedError('upstream closed the connection'))
      if (lost) this.onSignal?.(this, 'lost')
    })
    socket.on('drain', this.#onDrain)
  }

  /**
   * Opens a connection and completes the handshake (AUTH, SELECT, CLIENT SETNAME) before
   * resolving, so no user command ever shares the stream with an unfinished handshake.
   */
  static connect (options: UpstreamConnectionOptions): Promise<UpstreamConnection> {
    const { address } = options
    const where = address.path ?? `${address.host}:${address.port}`
    return new Promise((resolve, reject) => {
      // Plain TCP and unix sockets read into the shared read buffer (TLS has no such option).
      // (The callback runs only once connected, when `conn` is long set.)
      const onread = readOption((chunk) => { conn.#onData(chunk) })
      const socket = address.tls
        ? tls.connect({
          host: address.host,
          port: address.port,
          // SNI: the configured name, or the host when it is a name (never an IP literal).
          servername: address.tlsServername ?? (net.isIP(address.host) === 0 ? address.host : undefined),
          ca: address.tlsCa !== undefined ? readFileSync(address.tlsCa) : undefined,
          rejectUnauthorized: address.tlsInsecure !== true
        })
        : address.path !== undefined ? net.connect({ path: address.path, onread }) : net.connect({ host: address.host, port: address.port, onread })
      const conn = new UpstreamConnection(options, socket, address.tls !== true)
      let settled = false
      const fail = (err: ProxyError): void => {
        if (settled) return
        settled = true
        clearTimeout(timer)
        conn.destroy(err)
        reject(err)
      }
      const timer = setTimeout(() => {
        fail(new UpstreamConnectError(`connect to ${where} timed out after ${options.connectTimeoutMs} ms`))
      }, options.connectTimeoutMs)
      timer.unref()
      conn.onClose = (_c, err) => { fail(new UpstreamConnectError(`connect to ${where} failed: ${err.message.replace(/^upstream connection error: /, '')}`)) }
      socket.once(address.tls ? 'secureConnect' : 'connect', () => {
        socket.setNoDelay(true)
        socket.setKeepAlive(true, 10_000)
        conn.#setState('handshaking')
        conn.#handshake(address, options.requireMaster === true).then(() => {
          if (settled) return
          settled = true
          clearTimeout(timer)
          conn.onClose = null
          conn.#setState('ready')
          resolve(conn)
        }, (err: ProxyError) => { fail(err) })
      })
    })
  }

  get state (): UpstreamState {
    return this.#state
  }

  get isReady (): boolean {
    return this.#state === 'ready'
  }

  /** Commands written and not yet answered. */
  /** Commands in flight from clients whose replies are large (their lane counts as busy). */
  heavyInflight = 0

  /** A large reply is arriving in pieces: commands sent now would wait behind all of it. */
  get streamingReply (): boolean {
    return this.#streamSlot !== null
  }

  get inflight (): number {
    return this.#inflight.length
  }

  /** When the connection last made progress (a reply arrived, or work began): performance.now(). */
  get lastProgress (): number {
    return this.#lastProgress
  }

  /** The socket's buffer is full: route elsewhere or wait for drain. */
  get needDrain (): boolean {
    return this.#needDrain
  }

  /** The socket's buffer is full (TickWriter): commands wait for 'drain'. */
  onOutputFull (): void {
    this.#needDrain = true
  }

  /**
   * Brings a connection back to the pool's default state after a client left it in an unknown
   * one: RESET (ends MULTI, WATCH, subscriptions, MONITOR, tracking, CLIENT REPLY modes; back to
   * RESP2 and db 0; deauthenticates), then the handshake again. Resolves when every step
   * answered as expected; any surprise destroys the connection instead.
   */
  async scrub (): Promise<void> {
    this.tunnel = null
    this.pushHandler = null
    this.blockingInflight = 0
    await new Promise<void>((resolve, reject) => {
      this.sendInternal(['RESET'], (frame, err) => {
        if (err !== null) reject(err)
        else if (frame !== null && frame.toString('latin1') === '+RESET\r\n') resolve()
        else reject(new UpstreamClosedError(`RESET answered ${firstLine(frame)}`))
      })
    })
    this.resp = 2
    await this.#handshake(this.#address)
  }

  /** Forgets its holder (the pool, a pin's owner, a lane): nothing of theirs is called any more. */
  detachOwner (): void {
    this.onClose = null
    this.onIdle = null
    this.onWritable = null
    this.onProgress = null
    this.tunnel = null
    this.pushHandler = null
  }

  /** Writes a command (its exact bytes) and queues its slot for the reply. */
  send (frame: Buffer, slot: ReplySlot): void {
    if (this.#state === 'retiring') {
      // Nothing more goes to a node that is no longer the master (see retire).
      const err = this.#closeError as ProxyError
      queueMicrotask(() => { slot.sink.onFailure(slot, err) })
      return
    }
    if (this.#alonePause) this.endAlonePause()
    if (this.#inflight.push(slot) === 1) this.#startTimer()
    slot.writeEnd = this.#queued += frame.length
    this.#writer.write(frame)
  }

  /**
   * Writes a command whose answers arrive out of band (through `tunnel` or `pushHandler`):
   * no slot is queued for it.
   */
  sendRaw (frame: Buffer): void {
    this.#queued += frame.length
    this.#writer.write(frame)
  }

  /** The slot the next reply will fill (for a tunnel deciding what a frame answers). */
  peekHead (): ReplySlot | undefined {
    return this.#inflight.peekFront()
  }

  /** Completes the head slot with `frame` (used by a tunnel that collected a multi-frame reply). */
  completeHead (frame: Buffer): void {
    const slot = this.#inflight.shift()
    if (slot?.heavy === true) this.heavyInflight--
    if (slot === undefined) return
    if (!slot.cancelled) slot.sink.onReply(slot, frame)
    if (this.#inflight.length === 0 && this.#state === 'ready') this.onIdle?.(this)
  }

  /** Who is writing a large command in pieces here (null when nobody). */
  get writeLockedBy (): object | null {
    return this.#writeLockedBy
  }

  /**
   * Starts a large command whose rest arrives in pieces (streamPiece). Until the last piece,
   * the connection is reserved for it: no other bytes may land inside the command.
   */
  beginStream (head: Buffer, slot: ReplySlot, owner: object): void {
    this.send(head, slot)
    this.#writeLockedBy = owner
  }

  /** A piece of the large command (`transient`: valid only during the call; it is copied). */
  streamPiece (piece: Buffer, done: boolean, transient = false): void {
    // Writing a large command is progress: the command timer waits for its reply only once it is sent.
    this.#lastProgress = performance.now()
    if (this.#state !== 'closed') {
      this.#queued += piece.length
      if (transient) this.#writer.writePiece(piece)
      else this.#writer.write(piece)
    }
    if (!done) return
    this.#writeLockedBy = null
    const waiters = this.#unlockWaiters
    this.#unlockWaiters = []
    for (const fn of waiters) fn()
    if (!this.#needDrain) this.onWritable?.(this)
  }

  /** Runs fn once no large command is being written here (at once if none is). */
  whenUnlocked (fn: () => void): void {
    if (this.#writeLockedBy === null || this.#state === 'closed') fn()
    else this.#unlockWaiters.push(fn)
  }

  /**
   * The client writing a large command here went away mid-command: Redis holds a partial
   * command that will never be completed, so the connection cannot be used again. Nothing more
   * is written; the replies to commands sent before the partial one still arrive and reach their
   * clients; then the connection is closed.
   */
  abandonStream (): void {
    this.#writeLockedBy = ABANDONED
    this.#closeWhenOnlyPartialLeft = true
    this.#maybeCloseAbandoned()
  }

  #maybeCloseAbandoned (): void {
    if (this.#closeWhenOnlyPartialLeft && this.#inflight.length <= 1) {
      this.destroy(new UpstreamClosedError('client left in the middle of a large command'))
    }
  }

  /** The proxy's own command on this connection; the callback gets the reply or the failure. */
  sendInternal (args: ReadonlyArray<string | Buffer>, callback: (frame: Buffer | null, err: ProxyError | null) => void, keepOnRetire = false): void {
    this.sendFrameInternal(encodeCommand(args), callback, keepOnRetire)
  }

  /** The proxy's own command, already encoded. */
  sendFrameInternal (frame: Buffer, callback: (frame: Buffer | null, err: ProxyError | null) => void, keepOnRetire = false): void {
    const slot = new ReplySlot(new InternalSink(callback), null)
    slot.keepOnRetire = keepOnRetire
    this.send(frame, slot)
  }

  /** Runs fn once the socket has drained (at once if it is not full). */
  whenDrained (fn: () => void): void {
    // A closed connection will never drain: the caller must not wait for it.
    if (!this.#needDrain || this.#state === 'closed') fn()
    else this.#drainWaiters.push(fn)
  }

  /**
   * Leaves this connection: nothing more is written to it. Commands whose bytes are still in
   * respool are taken back (their clients send them again elsewhere). If the node said on this
   * very connection that it is a replica, the replies still due are read first (a replica runs
   * no write, so each says what happened: a refusal to send again, or a read's answer), for at
   * most RETIRE_GRACE_MS; otherwise (the node may still be a master that accepts writes) the
   * connection closes now and what is in flight fails with `err`.
   */
  retire (err: ProxyError): void {
    // (A large command half written cannot be completed gently: it goes with the connection.)
    // On a node that may still be a master, only replies worth reading (keepOnRetire) are read;
    // the others fail as if the connection had closed now.
    const keep = !this.#replicaSeen && this.#state === 'ready' && this.#writeLockedBy === null && this.#streamSlot === null && this.#wholePieces === null && this.#anyKeptInflight()
    if (this.#state !== 'ready' || (!this.#replicaSeen && !keep) || this.#writeLockedBy !== null) {
      this.destroy(err)
      return
    }
    this.#failOnRetire = !this.#replicaSeen
    this.#setState('retiring')
    this.#closeError = err
    this.#returnUnwritten(this.#takeBackUnwritten(), err)
    if ((this.#state as UpstreamState) === 'closed') return // an owner's failure closed it
    if (this.#inflight.length === 0) {
      this.destroy(err)
      return
    }
    const timer = setTimeout(() => { this.destroy(err) }, Math.min(RETIRE_GRACE_MS, this.#commandTimeoutMs > 0 ? this.#commandTimeoutMs : RETIRE_GRACE_MS))
    timer.unref()
  }

  #anyKeptInflight (): boolean {
    for (let i = 0; i < this.#inflight.length; i++) if ((this.#inflight.peekAt(i) as ReplySlot).keepOnRetire) return true
    return false
  }

  /** Where the socket leads (address:port, or the unix socket path): the node, as far as respool can tell. */
  get peer (): string {
    const socket = this.#socket
    return socket.remoteAddress !== undefined ? `${socket.remoteAddress}:${socket.remotePort ?? 0}` : this.#address.path ?? ''
  }

  /** Another connection to the same node heard it is a replica: this one can be retired gently too. */
  markReplica (): void {
    this.#replicaSeen = true
  }

  /** Takes the slots whose commands never left respool off the FIFO, and drops their bytes. */
  #takeBackUnwritten (): ReplySlot[] {
    const handedOut = this.#queued - this.#writer.heldBytes
    const unwritten: ReplySlot[] = []
    while (this.#inflight.length > 0 && (this.#inflight.peekBack() as ReplySlot).writeEnd > handedOut) {
      const slot = this.#inflight.pop() as ReplySlot
      if (slot.heavy) this.heavyInflight--
      unwritten.push(slot)
    }
    this.#writer.discardHeld()
    this.#queued = handedOut
    return unwritten.reverse()
  }

  /** Unwritten commands go back to their owners, in order (a failure if they cannot send them again). */
  #returnUnwritten (unwritten: ReplySlot[], err: ProxyError): void {
    for (const slot of unwritten) {
      if (slot.cancelled) continue
      if (slot.sink.retryElsewhere?.(slot, this, null) !== true) slot.sink.onFailure(slot, err)
    }
  }

  /** Closes the connection now; every inflight command fails with `err`. Idempotent. */
  destroy (err: ProxyError = new UpstreamClosedError('upstream connection closed by respool')): void {
    if (this.#state === 'closed') return
    this.#setState('closed')
    this.#closeError = err
    this.#stopTimer()
    const unwritten = this.#takeBackUnwritten()
    this.#socket.destroy()
    const failed = this.#inflight.toArray()
    this.#inflight.clear()
    this.heavyInflight = 0
    for (const slot of failed) slot.sink.onFailure(slot, err)
    this.#returnUnwritten(unwritten, err)
    const waiters = [...this.#drainWaiters, ...this.#unlockWaiters]
    this.#drainWaiters = []
    this.#unlockWaiters = []
    this.#writeLockedBy = null
    for (const fn of waiters) fn()
    const onClose = this.onClose
    this.onClose = null
    onClose?.(this, err)
  }

  get closeError (): ProxyError | null {
    return this.#closeError
  }

  #setState (next: UpstreamState): void {
    this.#state = next
  }

  #handshake (address: UpstreamAddress, requireMaster = false): Promise<void> {
    const steps: Array<Promise<void>> = []
    const expectOk = (args: string[], what: string, optional = false): void => {
      steps.push(new Promise((resolve, reject) => {
        this.sendInternal(args, (frame, err) => {
          if (err !== null) reject(err)
          else if (frame !== null && (frame[0] === PLUS || optional)) resolve()
          else reject(new UpstreamConnectError(`${what} failed: ${firstLine(frame)}`))
        })
      }))
    }
    if (address.password !== undefined) {
      expectOk(address.username !== undefined ? ['AUTH', address.username, address.password] : ['AUTH', address.password], 'AUTH')
    }
    if (address.db !== 0) expectOk(['SELECT', String(address.db)], `SELECT ${address.db}`)
    this.db = address.db
    // The name makes respool's connections easy to find in CLIENT LIST; a server that refuses
    // it (ACL, old version) is still usable.
    expectOk(['CLIENT', 'SETNAME', 'respool'], 'CLIENT SETNAME', true)
    // Redis's id of this connection: CLIENT UNBLOCK of a client blocked on it needs it.
    this.sendInternal(['CLIENT', 'ID'], (frame) => {
      if (frame !== null && frame[0] === 0x3a) this.redisId = frame.toString('latin1', 1, frame.length - 2)
    })
    if (requireMaster) {
      // A replica is refused before anyone writes to it. A server that does not answer ROLE
      // (an ACL without it) cannot be checked here; -READONLY still gives it away later.
      steps.push(new Promise((resolve, reject) => {
        this.sendInternal(['ROLE'], (frame, err) => {
          if (err !== null) reject(err)
          else if (frame !== null && roleOf(frame) === 'slave') reject(new UpstreamReplicaError(`${address.host}:${address.port} is a replica (ROLE: ${describeRole(frame)})`))
          else if (frame !== null && roleOf(frame) === 'sentinel') reject(new UpstreamReplicaError(`${address.host}:${address.port} is a sentinel, not a master`))
          else resolve()
        })
      }))
    }
    return Promise.all(steps).then(() => undefined)
  }

  #onData = (chunk: Buffer): void => {
    this.#lastProgress = performance.now()
    // A connection with a lot to read (a 64 MB reply) would have libuv read it 32 chunks at a
    // time, each written on to its client before the next, while every other socket waits: on a
    // loaded machine that is tens of milliseconds for a small GET on another lane. After
    // READ_TURN_BYTES, reading stops until the loop's check phase, so the other sockets ready
    // in this turn are read first, as Redis itself serves each client a slice per turn.
    if ((this.#turnBytes += chunk.length) >= READ_TURN_BYTES && !this.#turnYielding) {
      this.#turnYielding = true
      this.pauseReading()
      setImmediate(this.#endTurnYield)
    }
    try {
      this.#framer.push(chunk, this.#onReply, this.#onReplyPart)
    } catch (err) {
      this.destroy(err instanceof ProtocolError ? new UpstreamClosedError(`upstream protocol error: ${err.message}`) : new UpstreamClosedError(String(err)))
    }
    if (this.onProgress !== null) this.onProgress(this)
  }

  /** A reply frame; `transient` frames are views of the shared read buffer (see ReplyFramer). */
  #onReply = (frame: Buffer, transient: boolean): void => {
    if (this.#state === 'closed') return
    if (transient && (this.tunnel !== null || frame[0] === PUSH)) {
      frame = Buffer.from(frame)
      transient = false
    }
    if (this.tunnel !== null && this.tunnel(frame)) return
    if (frame[0] === PUSH) {
      // Out of band: never shifts the FIFO. On a shared connection nobody asked for it.
      this.pushHandler?.(frame)
      return
    }
    const slot = this.#inflight.shift()
    if (slot?.heavy === true) this.heavyInflight--
    if (slot === undefined) {
      this.destroy(new UpstreamClosedError('unexpected reply from upstream; connection dropped'))
      return
    }
    // A refusal (-READONLY, -MASTERDOWN, -LOADING): Redis did not run the command, so its
    // client may take it back to send again. A replica's refusal also tells the topology, once
    // the replies already read have been handed out (writes leave only at the end of the turn).
    if (this.#failOnRetire && !slot.keepOnRetire) {
      // Ran, or not, on a master respool has left: its client is told it may or may not have.
      if (!slot.cancelled) slot.sink.onFailure(slot, this.#closeError as ProxyError)
      frame = RETRIED
    } else if (frame[0] === MINUS && isRefusal(frame)) {
      // Kept by the client to be answered if its retries run out: its own bytes, not a view.
      if (transient) {
        frame = Buffer.from(frame)
        transient = false
      }
      if (isReplicaError(frame)) {
        this.#replicaSeen = true
        queueMicrotask(() => { this.onSignal?.(this, 'readonly') })
      }
      if (!slot.cancelled && slot.sink.retryElsewhere?.(slot, this, frame) === true) frame = RETRIED
    }
    if (!slot.cancelled && frame !== RETRIED) {
      if (transient && slot.sink.takesTransient !== true) slot.sink.onReply(slot, Buffer.from(frame))
      else slot.sink.onReply(slot, frame, transient)
    }
    // Only an abandoned large command's own reply is left to come: close now.
    if (this.#closeWhenOnlyPartialLeft) this.#maybeCloseAbandoned()
    else if (this.#inflight.length === 0) {
      if (this.#state === 'ready') this.onIdle?.(this)
      else if (this.#state === 'retiring') this.destroy(this.#closeError ?? undefined) // the last reply due is in
    }
  }

  /**
   * A piece of a large reply. An ordinary reply goes to its slot piece by piece (the client gets
   * it as it arrives); a push frame or a frame on a tunnel is rare at this size and is joined
   * first, then handled like any other frame.
   */
  #onReplyPart = (piece: Buffer, done: boolean, transient: boolean): void => {
    if (this.#state === 'closed') return
    if (this.#streamSlot === null && this.#wholePieces === null) {
      const head = this.#inflight.peekFront()
      if (this.tunnel !== null || piece[0] === PUSH || head === undefined) this.#wholePieces = []
      else this.#streamSlot = head
    }
    if (this.#wholePieces !== null) {
      this.#wholePieces.push(transient ? Buffer.from(piece) : piece)
      if (!done) return
      const frame = Buffer.concat(this.#wholePieces)
      this.#wholePieces = null
      this.#onReply(frame, false)
      return
    }
    const slot = this.#streamSlot as ReplySlot
    if (done) {
      this.#streamSlot = null
      this.#inflight.shift() // popped before the sink runs, as for any reply
      if (slot.heavy) this.heavyInflight--
    }
    if (!slot.cancelled) {
      const keepable = transient && slot.sink.takesTransient !== true
      slot.sink.onReplyPart(slot, keepable ? Buffer.from(piece) : piece, done, this, transient && !keepable)
    }
    if (!done) return
    if (this.#closeWhenOnlyPartialLeft) this.#maybeCloseAbandoned()
    else if (this.#inflight.length === 0 && this.#state === 'ready') this.onIdle?.(this)
  }

  #endTurnYield = (): void => {
    this.#turnYielding = false
    this.#turnBytes = 0
    if (this.#state !== 'closed') this.resumeReading()
  }

  /** Stops reading replies (a client receiving a large reply is slower than Redis). Counted. */
  pauseReading (): void {
    if (this.#readPauses++ === 0) this.#socket.pause()
  }

  pauseWhileAlone (): void {
    if (this.#alonePause) return
    this.#alonePause = true
    this.pauseReading()
  }

  endAlonePause (): void {
    if (!this.#alonePause) return
    this.#alonePause = false
    this.resumeReading()
  }

  resumeReading (): void {
    if (this.#readPauses > 0 && --this.#readPauses === 0) {
      this.#lastProgress = performance.now()
      this.#socket.resume()
    }
  }

  #onDrain = (): void => {
    this.#needDrain = false
    const waiters = this.#drainWaiters
    this.#drainWaiters = []
    for (const fn of waiters) fn()
    if (this.#writeLockedBy === null) this.onWritable?.(this)
  }

  // One timer per connection, armed while commands are in flight. A reply pushes the deadline
  // back by recording progress; the timer re-arms itself for the remainder instead of being
  // reset on every reply, and is left to expire rather than cleared when the connection goes
  // idle: a request/reply client would otherwise pay a setTimeout and a clearTimeout per command.
  #startTimer (): void {
    this.#lastProgress = performance.now()
    if (this.#commandTimeoutMs === 0 || this.#timer !== null) return
    this.#timer = setTimeout(this.#onTimer, this.#commandTimeoutMs)
    this.#timer.unref()
  }

  #stopTimer (): void {
    if (this.#timer !== null) {
      clearTimeout(this.#timer)
      this.#timer = null
    }
  }

  #onTimer = (): void => {
    this.#timer = null
    if (this.#inflight.length === 0 || this.#state === 'closed') return
    const idle = performance.now() - this.#lastProgress
    // Not a stall: a blocking command waits by design; paused reading waits for a slow client.
    const exempt = this.blockingInflight > 0 || this.#readPauses > 0
    if (exempt || idle < this.#commandTimeoutMs) {
      this.#timer = setTimeout(this.#onTimer, exempt ? this.#commandTimeoutMs : this.#commandTimeoutMs - idle + 1)
      this.#timer.unref()
      return
    }
    this.destroy(new UpstreamTimeoutError(`upstream did not reply within ${this.#commandTimeoutMs} ms; connection dropped`))
  }
}

function isReplicaError (frame: Buffer): boolean {
  for (const prefix of REPLICA_ERRORS) {
    if (frame.length >= prefix.length && frame.compare(prefix, 0, prefix.length, 0, prefix.length) === 0) return true
  }
  return false
}

/** The first element of a ROLE reply (master, slave, sentinel), or null if it is not one. */
export function roleOf (frame: Buffer): string | null {
  const m = /^\*\d+\r\n\$\d+\r\n([a-z]+)\r\n/.exec(frame.toString('latin1', 0, Math.min(frame.length, 64)))
  return m?.[1] ?? null
}

/** "slave of 10.0.0.1:6379" from a replica's ROLE reply (for error messages). */
function describeRole (frame: Buffer): string {
  const parts = frame.toString('latin1', 0, Math.min(frame.length, 300)).split('\r\n')
  return parts.length > 6 ? `slave of ${parts[4]}:${parts[5].replace(/^:/, '')}` : 'slave'
}

function firstLine (frame: Buffer | null): string {
  if (frame === null) return 'no reply'
  const text = frame.toString('utf8', 0, Math.min(frame.length, 200))
  return text.split('\r\n')[0].replace(/^[-+]/, '')
}

