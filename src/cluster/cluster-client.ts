import { CommandRefusedError, toRespError, type ProxyError } from '../errors.js'
import { Kind, type CommandKind } from '../commands/command-table.js'
import { blockingTimeoutMs, timeoutReply, withTimeout } from '../commands/blocking.js'
import { wrongArity } from '../commands/local-commands.js'
import { UNBLOCKED_ERROR, type UnblockMode } from '../commands/client-control.js'
import type { RespCommand } from '../protocol/resp-command.js'
import { command as encodeCommand, errorReply, OK } from '../protocol/resp-encode.js'
import { InternalSink, ReplySlot } from '../routing/reply-slot.js'
import { syncLaneState } from '../routing/lane-state.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ClusterDispatcher } from './cluster-dispatcher.js'
import type { ClusterPin, ClusterPinAcquisition, ClusterPinRelease, ClusterPins } from './cluster-pins.js'
import type { ClusterNode } from './cluster-topology.js'
import { commandSlot } from './keys.js'
import type { ClusterParking } from './cluster-parking.js'
import { parkable, type Parkable } from '../waiting/parkable.js'
import type { ParkedClient, ParkingLot, Waiter } from '../waiting/parking-lot.js'

/** Where a command of a cluster client runs, for the session's order across connections. */
export const ROUTE_NONE = 0 // answered by respool, or only checked upstream (runs nothing)
export const ROUTE_SHARED = 1 // the masters' shared lanes (the dispatcher)
export const ROUTE_PIN = 2 // the client's pinned connection (its transaction)
export const ROUTE_BLOCK = 3 // a blocking command: nothing of the client's runs beside it
export const ROUTE_OPEN = 4 // pins a new connection: everything of the client's before it is answered first

const CROSSSLOT = errorReply('CROSSSLOT Keys in request don\'t hash to the same slot')
const EXECABORT = errorReply('EXECABORT Transaction discarded because of previous errors.')
const EMPTY_ARRAY = Buffer.from('*0\r\n')
const ZERO = Buffer.from(':0\r\n')
const ONE = Buffer.from(':1\r\n')
const QUEUED = '+QUEUED\r\n'
const MULTI = encodeCommand(['MULTI'])
const DISCARD = encodeCommand(['DISCARD'])
const EXEC = encodeCommand(['EXEC'])
const ASKING = encodeCommand(['ASKING'])
const MINUS = 0x2d
/** Redirects one command may follow (as the dispatcher allows). */
const MAX_REDIRECTS = 16
const RETRY_DELAY_MS = 50
const MAX_RETRIES = 40
/** A parked command whose slot is half-moved (-ASK) parks again this often, at most this many times. */
const ASK_RETRY_MS = 100
const MAX_ASK_RETRIES = 600
/** Redirects of a parked command further apart than this start a new count. */
const REDIRECT_BURST_MS = 5000

/**
 * Keyless commands a cluster node would answer for its own part of the keyspace only, or that
 * respool answers itself: they cannot be queued in a transaction pinned to one node.
 */
const NOT_IN_TRANSACTION = new Set(['dbsize', 'keys', 'scan', 'randomkey', 'flushall', 'flushdb', 'script', 'function', 'wait', 'waitaof', 'cluster', 'asking', 'readonly', 'readwrite', 'respool', 'monitor'])
/** CLIENT subcommands respool answers itself (not queueable, as in standalone mode). */
const LOCAL_CLIENT = new Set(['id', 'getname', 'setname', 'setinfo', 'info', 'list', 'reply', 'tracking', 'kill', 'unblock', 'no-evict', 'no-touch', 'caching', 'pause', 'unpause', 'getredir', 'trackinginfo'])

export type ClusterReply = (reply: Buffer) => void

/** What the session does for a cluster client that respool cannot run. */
export interface ClusterClientHost {
  readonly resp: 2 | 3
  /** The pinned connection of a transaction or WATCH failed: the client is closed (as Redis would drop it). */
  lost (): void
}

interface Redirect { kind: 'MOVED' | 'ASK', slot: number, node: ClusterNode }

/**
 * One client's transaction (MULTI … EXEC typed command by command, WATCH) and blocking
 * commands in cluster mode. They need a connection of their own on the master of their slot:
 *
 * - MULTI is answered by respool and held, with the keyless commands queued after it (each
 *   checked by a node inside a MULTI … DISCARD of its own, so the client gets the node's
 *   QUEUED or error), until the first command with a key picks the slot; then a connection to
 *   that slot's master is pinned and MULTI, the held commands and that command go there in one
 *   write. WATCH picks the slot by its own keys.
 * - One transaction is one slot: a queued command whose keys span slots, or whose slot is not
 *   the transaction's, is answered `-CROSSSLOT` and EXEC answers `-EXECABORT` (always the same
 *   for the client, whichever nodes own the slots). A WATCH of another slot answers `-CROSSSLOT`.
 * - A redirect before anything ran (the first keyed command or WATCH answered -MOVED/-ASK) moves
 *   the transaction to the right node. A slot that moves while the transaction is open aborts
 *   it: the queued command gets an error naming the move, EXEC gets `-EXECABORT`; never a
 *   redirect.
 * - A blocking command on lists, sorted sets or streams is parked in the lot of its slot's
 *   master (ClusterParking, ParkedBlocked below) when parking is on. Otherwise it waits on a pin
 *   of its own (a pin per waiter, up to the pin budget, the rest queued in order with their own
 *   timeouts counting). If its slot moves away while it
 *   waits, the node unblocks it with -MOVED (nothing was popped) and it waits again on the new
 *   owner for the rest of its timeout.
 */
export class ClusterClient {
  readonly #dispatcher: ClusterDispatcher
  readonly #pins: ClusterPins
  readonly #host: ClusterClientHost
  readonly #acquireTimeoutMs: number
  #multi = false
  #watching = false
  #aborted = false
  /** Counts transactions: a late reply of an ended one changes nothing in the next. */
  #txn = 0
  /** The transaction's slot once a key is known (-1 before). */
  #slot = -1
  /** Keyless commands queued before the node was known (MULTI itself is implied). */
  #held: Buffer[] = []
  /** The transaction's pinned connection (being acquired, or held). */
  #handle: PinHandle | null = null
  /** The blocking command waiting now (at most one: nothing of the client's runs beside it). */
  #blocked: BlockingCommand | null = null
  /** Parked blocking commands (null: --park-blocking no, every one waits on a pin). */
  readonly #parking: ClusterParking | null
  #closed = false

  constructor (dispatcher: ClusterDispatcher, pins: ClusterPins, host: ClusterClientHost, acquireTimeoutMs: number, parking: ClusterParking | null = null) {
    this.#parking = parking
    this.#dispatcher = dispatcher
    this.#pins = pins
    this.#host = host
    this.#acquireTimeoutMs = acquireTimeoutMs
  }

  /** Inside MULTI (the session refuses what cannot be queued). */
  get inMulti (): boolean {
    return this.#multi
  }

  /** Holds or waits for a pinned connection. */
  get pinned (): boolean {
    return this.#handle !== null || this.#blocked !== null
  }

  /** CLIENT LIST flags: in a transaction, blocked, or neither. */
  get flags (): 'x' | 'b' | null {
    return this.#multi ? 'x' : this.#blocked !== null ? 'b' : null
  }

  /**
   * Where `cmd` runs, or null if this client does not take it (the dispatcher routes it).
   * Pure: the session asks before run() to keep the client's order across connections.
   */
  route (cmd: RespCommand, kind: CommandKind): number | null {
    const pinned = this.#handle !== null
    if (this.#multi) {
      if (kind === Kind.RESET || kind === Kind.QUIT) return null
      if (kind === Kind.MULTI || kind === Kind.WATCH || !this.#queueable(cmd, kind)) return ROUTE_NONE
      if (kind === Kind.EXEC || kind === Kind.DISCARD) return pinned ? ROUTE_PIN : ROUTE_SHARED
      const slot = commandSlot(cmd) ?? -1
      if (slot === -2 || (slot >= 0 && this.#slot >= 0 && slot !== this.#slot)) return ROUTE_NONE
      if (pinned) return ROUTE_PIN
      return slot >= 0 ? ROUTE_OPEN : ROUTE_NONE
    }
    switch (kind) {
      case Kind.MULTI:
        return cmd.argc === 1 && pinned ? ROUTE_PIN : ROUTE_NONE
      case Kind.EXEC: case Kind.DISCARD:
        return ROUTE_NONE
      case Kind.WATCH: {
        if (cmd.argc < 2) return ROUTE_NONE
        const slot = commandSlot(cmd) ?? -1
        if (slot === -2 || (this.#slot >= 0 && slot !== this.#slot)) return ROUTE_NONE
        return pinned ? ROUTE_PIN : ROUTE_OPEN
      }
      case Kind.UNWATCH:
        return cmd.argc === 1 && this.#watching ? ROUTE_PIN : ROUTE_NONE
      case Kind.BLOCKING: {
        if (cmd.name === 'wait' || cmd.name === 'waitaof' || blockingTimeoutMs(cmd) === null) return null
        return commandSlot(cmd) === -2 ? ROUTE_NONE : ROUTE_BLOCK
      }
      default:
        return null
    }
  }

  /** Runs a command route() took: the reply now, or null and `done` is called once later. */
  run (cmd: RespCommand, kind: CommandKind, done: ClusterReply): Buffer | null {
    if (this.#multi) return this.#inTransaction(cmd, kind, done)
    switch (kind) {
      case Kind.MULTI: {
        if (cmd.argc !== 1) return wrongArity('multi')
        this.#multi = true
        const handle = this.#handle
        if (handle === null) return OK
        handle.send((conn) => {
          // The client may have switched protocols since WATCH (HELLO); inside MULTI it cannot.
          syncLaneState(conn, 0, this.#host.resp)
          if (handle.asking) conn.send(ASKING, dropSlot())
          conn.send(cmd.frame, replySlot(done))
        })
        return null
      }
      case Kind.EXEC: case Kind.DISCARD:
        return cmd.argc !== 1 ? wrongArity(cmd.name) : errorReply(`ERR ${cmd.name.toUpperCase()} without MULTI`)
      case Kind.WATCH:
        return this.#watch(cmd, done)
      case Kind.UNWATCH:
        if (cmd.argc !== 1) return wrongArity('unwatch')
        if (!this.#watching) return OK
        this.#endOnPin(cmd.frame, done)
        return null
      case Kind.BLOCKING:
      {
        const slot = commandSlot(cmd) ?? -1
        if (slot === -2) return CROSSSLOT
        // Lists, sorted sets and streams park (no connection each); the rest keep a pin.
        const what = this.#parking !== null && slot >= 0 ? parkable(cmd) : null
        this.#blocked = what !== null ? new ParkedBlocked(this, this.#parking as ClusterParking, cmd, what, slot, done) : new Blocked(this, cmd, done)
        this.#blocked.go()
      }
        return null
      default:
        throw new Error(`cluster client cannot run ${cmd.name}`)
    }
  }

  /**
   * A transaction that arrived whole (MULTI … EXEC, as pipelining clients send it) can run in
   * one write on the shared lane of its slot's master, with no pin: the slot (-1 for keyless
   * commands only), or null when it cannot (keys of several slots, commands that cannot be
   * queued, a pin already held): then it runs command by command, with their errors.
   */
  wholeSlot (cmds: RespCommand[]): number | null {
    if (this.#multi || this.#handle !== null || this.#blocked !== null) return null
    let slot = -1
    for (let i = 1; i < cmds.length - 1; i++) {
      const cmd = cmds[i]
      if (NOT_IN_TRANSACTION.has(cmd.name)) return null
      const s = commandSlot(cmd) ?? -1
      if (s === -2 || (s >= 0 && slot >= 0 && s !== slot)) return null
      if (s >= 0) slot = s
    }
    return slot
  }

  /**
   * Runs a whole transaction (frames of MULTI … EXEC) on the shared lane of `slot`'s master, in
   * one write: nothing of anyone else's comes between its parts. If the node redirects its
   * commands (respool's map was stale, or the slot is half-moved), nothing of it ran (EXEC is
   * refused): it is sent again, whole, to the node named. `done` gets one reply per frame.
   */
  runWhole (frames: Buffer[], slot: number, done: (replies: Buffer[]) => void, onRetry: () => void): void {
    const topology = this.#topology
    const lanes = this.#dispatcher.lanes
    let redirects = 0
    let asking: ClusterNode | null = null
    const attempt = (): void => {
      const node = asking ?? (slot >= 0 ? topology.nodeFor(slot) : topology.anyMaster())
      if (node === null) {
        void topology.refresh('slot not served')
        done(frames.map(() => errorReply('CLUSTERDOWN Hash slot not served')))
        return
      }
      const write = (conn: UpstreamConnection): void => {
        syncLaneState(conn, 0, this.#host.resp)
        if (asking !== null) conn.send(ASKING, dropSlot())
        const replies: Buffer[] = new Array<Buffer>(frames.length)
        let left = frames.length
        frames.forEach((frame, i) => {
          conn.send(frame, replySlot((reply) => {
            replies[i] = reply
            if (--left === 0) settle(replies)
          }))
        })
      }
      const ready = lanes.ready(node)
      if (ready !== null) write(ready)
      else lanes.open(node).then(write, (err: ProxyError) => { done(frames.map(() => toRespError(err))) })
    }
    const settle = (replies: Buffer[]): void => {
      let redirect: Redirect | null = null
      for (let i = 1; i < replies.length - 1 && redirect === null; i++) redirect = parseRedirect(replies[i], topology)
      if (redirect === null || ++redirects > MAX_REDIRECTS) {
        done(redirect === null ? replies : replies.map((r) => parseRedirect(r, topology) !== null ? errorReply(`ERR respool: more than ${MAX_REDIRECTS} cluster redirections for one command`) : r))
        return
      }
      onRetry()
      if (redirect.kind === 'MOVED') topology.moved(redirect.slot, redirect.node)
      asking = redirect.kind === 'ASK' ? redirect.node : null
      if (redirects <= 2) attempt()
      else setTimeout(attempt, Math.min(200, 20 * redirects)).unref()
    }
    attempt()
  }

  /** RESET, or the client left: the transaction is dropped and the pin given back (or closed if busy). */
  reset (): void {
    this.#blocked?.cancel()
    this.#blocked = null
    const handle = this.#handle
    this.#endTransaction()
    handle?.release('scrub')
  }

  close (): void {
    this.#closed = true
    this.reset()
  }

  // ---- transactions ----------------------------------------------------------------------

  #queueable (cmd: RespCommand, kind: CommandKind): boolean {
    if (NOT_IN_TRANSACTION.has(cmd.name)) return false
    switch (kind) {
      case Kind.SHARED: case Kind.BLOCKING: case Kind.SELECT: case Kind.UNWATCH:
      case Kind.EXEC: case Kind.DISCARD: case Kind.MULTI: case Kind.WATCH:
        return true
      case Kind.CLIENT:
        return !LOCAL_CLIENT.has(cmd.keyword(1))
      default:
        return false
    }
  }

  #inTransaction (cmd: RespCommand, kind: CommandKind, done: ClusterReply): Buffer | null {
    if (kind === Kind.MULTI) return cmd.argc !== 1 ? this.#flag(wrongArity('multi')) : errorReply('ERR MULTI calls can not be nested')
    if (kind === Kind.WATCH) return cmd.argc < 2 ? this.#flag(wrongArity('watch')) : errorReply('ERR WATCH inside MULTI is not allowed')
    if (!this.#queueable(cmd, kind)) {
      return this.#flag(toRespError(new CommandRefusedError(`'${cmd.name.toUpperCase()}' cannot be queued in a transaction through respool in cluster mode; EXEC will abort`)))
    }
    if (kind === Kind.EXEC || kind === Kind.DISCARD) {
      if (cmd.argc !== 1) return this.#flag(wrongArity(cmd.name))
      return kind === Kind.EXEC ? this.#exec(done) : this.#discard(done)
    }
    const slot = commandSlot(cmd) ?? -1
    if (slot === -2 || (slot >= 0 && this.#slot >= 0 && slot !== this.#slot)) return this.#flag(CROSSSLOT)
    if (this.#handle !== null) {
      const txn = this.#txn
      this.#handle.send((conn) => { conn.send(cmd.frame, replySlot((reply) => { done(this.#queuedReply(reply, txn)) })) })
      return null
    }
    if (slot >= 0) {
      // The first key: the transaction goes to its slot's master, with what was held.
      this.#slot = slot
      this.#open(cmd.frame, done, true)
      return null
    }
    // Keyless, and no node yet: a node checks it (MULTI, it, DISCARD: nothing runs) and it is held.
    this.#held.push(cmd.frame)
    const txn = this.#txn
    this.#check(cmd.frame, (reply) => {
      if (!isQueued(reply)) this.#abort(txn)
      done(reply)
    })
    return null
  }

  /** A reply to a queued command: a redirect means the slot moved under the transaction. */
  #queuedReply (reply: Buffer, txn: number): Buffer {
    const redirect = parseRedirect(reply, this.#topology)
    if (redirect === null && !startsWith(reply, '-TRYAGAIN')) {
      if (!isQueued(reply)) this.#abort(txn)
      return reply
    }
    this.#abort(txn)
    if (redirect?.kind === 'MOVED') this.#dispatcher.topology.moved(redirect.slot, redirect.node)
    return errorReply(`ERR respool: slot ${this.#slot} moved to another cluster node during the transaction; EXEC will abort`)
  }

  /** A queued command was refused: EXEC aborts, if it is still the same transaction. */
  #abort (txn: number): void {
    if (txn === this.#txn) this.#aborted = true
  }

  #flag (reply: Buffer): Buffer {
    this.#aborted = true
    return reply
  }

  #exec (done: ClusterReply): Buffer | null {
    const aborted = this.#aborted
    if (this.#handle !== null) {
      this.#endOnPin(aborted ? DISCARD : EXEC, (reply) => {
        if (aborted) done(EXECABORT)
        // The slot moved since the commands were queued: the node discarded the transaction.
        else if (parseRedirect(reply, this.#topology) !== null || startsWith(reply, '-TRYAGAIN') || startsWith(reply, '-CLUSTERDOWN')) done(EXECABORT)
        else done(reply)
      })
      return null
    }
    const held = this.#held
    this.#endTransaction()
    if (aborted) return EXECABORT
    if (held.length === 0) return EMPTY_ARRAY
    // Only keyless commands: the whole transaction in one write on a shared lane, where nothing
    // can come between its parts.
    this.#onLane((conn) => {
      conn.send(MULTI, dropSlot())
      for (const frame of held) conn.send(frame, dropSlot())
      conn.send(EXEC, replySlot(done))
    }, done)
    return null
  }

  #discard (done: ClusterReply): Buffer | null {
    if (this.#handle !== null) {
      this.#endOnPin(DISCARD, done)
      return null
    }
    this.#endTransaction()
    return OK
  }

  #watch (cmd: RespCommand, done: ClusterReply): Buffer | null {
    if (cmd.argc < 2) return wrongArity('watch')
    const slot = commandSlot(cmd) ?? -1
    if (slot === -2 || (this.#slot >= 0 && slot !== this.#slot)) return CROSSSLOT
    this.#watching = true
    const handle = this.#handle
    if (handle !== null) {
      handle.send((conn) => {
        syncLaneState(conn, 0, this.#host.resp)
        if (handle.asking) conn.send(ASKING, dropSlot())
        conn.send(cmd.frame, replySlot(done))
      })
      return null
    }
    this.#slot = slot
    this.#open(cmd.frame, done, false)
    return null
  }

  /**
   * Pins the master of the transaction's slot and sends (MULTI, the held commands, if `inMulti`)
   * and `frame`. The client's later commands wait until `frame` is answered: a redirect of it
   * (nothing of the transaction ran yet) sends it all again to the node named (the map is
   * patched on MOVED).
   */
  #open (frame: Buffer, done: ClusterReply, inMulti: boolean): void {
    const handle = new PinHandle(this.#pins, () => { this.#lost(handle) })
    this.#handle = handle
    const slot = this.#slot
    const held = this.#held
    const txn = this.#txn
    const topology = this.#topology
    let redirects = 0
    let to: ClusterNode | null = null
    const attempt = (): void => {
      handle.acquire(() => to ?? topology.nodeFor(slot), this.#acquireTimeoutMs, (conn) => {
        syncLaneState(conn, 0, this.#host.resp)
        if (handle.asking) conn.send(ASKING, dropSlot())
        if (inMulti) {
          conn.send(MULTI, dropSlot())
          for (const h of held) conn.send(h, replySlot((reply) => { if (!isQueued(reply)) this.#abort(txn) }))
        }
        conn.send(frame, replySlot((reply) => {
          const redirect = parseRedirect(reply, topology)
          if (redirect === null || ++redirects > MAX_REDIRECTS || handle.released) {
            handle.confirm()
            if (inMulti) done(this.#queuedReply(reply, txn))
            else if (redirect !== null) done(this.#watchFailed(txn, redirect))
            else done(reply)
            return
          }
          // Nothing ran: end what was opened there, and start again on the node named.
          if (inMulti) conn.send(DISCARD, dropSlot())
          handle.unpin(inMulti ? 'scrub' : 'clean')
          if (redirect.kind === 'MOVED') topology.moved(redirect.slot, redirect.node)
          handle.asking = redirect.kind === 'ASK'
          to = redirect.kind === 'ASK' ? redirect.node : null
          // Nodes that still disagree about the slot (a move settling) are given a moment.
          if (redirects <= 2) attempt()
          else setTimeout(attempt, Math.min(200, 20 * redirects)).unref()
        }))
      }, (err: ProxyError) => {
        // No connection: the transaction cannot go on (what was queued behind gets the error
        // too, EXEC answers EXECABORT). A WATCH that got the error watches nothing.
        if (this.#handle === handle) {
          this.#aborted = true
          if (!inMulti) {
            this.#watching = false
            this.#slot = -1
            this.#handle = null
          }
        }
        done(toRespError(err))
      })
    }
    attempt()
  }

  /**
   * A WATCH redirected too often (nodes disagreeing about its slot): it watches nothing and
   * says so, and the transaction that follows it aborts (EXECABORT), as after a failed WATCH.
   */
  #watchFailed (txn: number, redirect: Redirect): Buffer {
    this.#abort(txn)
    return errorReply(`ERR respool: more than ${MAX_REDIRECTS} cluster redirections for one command; last: ${redirect.kind} ${redirect.slot} ${redirect.node.key}`)
  }

  /** Sends the command that ends the transaction or the WATCH; the pin goes back once it is answered. */
  #endOnPin (frame: Buffer, done: ClusterReply): void {
    const handle = this.#handle as PinHandle
    // The transaction ends for the client now (a MULTI pipelined behind opens a new one).
    this.#endTransaction()
    handle.send((conn) => {
      conn.send(frame, replySlot((reply) => {
        done(reply)
        handle.release('scrub')
      }))
    })
  }

  #endTransaction (): void {
    this.#txn++
    this.#multi = false
    this.#watching = false
    this.#aborted = false
    this.#slot = -1
    this.#held = []
    this.#handle = null
  }

  #lost (handle: PinHandle): void {
    if (this.#handle !== handle) return
    this.#endTransaction()
    if (!this.#closed) this.#host.lost()
  }

  /** MULTI, `frame`, DISCARD in one write on a master's shared lane: `frame`'s QUEUED or error. */
  #check (frame: Buffer, done: ClusterReply): void {
    this.#onLane((conn) => {
      conn.send(MULTI, dropSlot())
      conn.send(frame, replySlot(done))
      conn.send(DISCARD, dropSlot())
    }, done)
  }

  #onLane (send: (conn: UpstreamConnection) => void, done: ClusterReply): void {
    const node = this.#dispatcher.topology.anyMaster()
    if (node === null) {
      done(errorReply('CLUSTERDOWN The cluster is down'))
      return
    }
    const lanes = this.#dispatcher.lanes
    const write = (conn: UpstreamConnection): void => {
      syncLaneState(conn, 0, this.#host.resp)
      send(conn)
    }
    const ready = lanes.ready(node)
    if (ready !== null) write(ready)
    else lanes.open(node).then(write, (err: ProxyError) => { done(toRespError(err)) })
  }

  // ---- blocking commands (used by Blocked) ---------------------------------------------------

  /**
   * CLIENT UNBLOCK of this client's blocking command: `:1`/`:0` now, or null when Redis must be
   * asked (the command waits on a node: `CLIENT UNBLOCK <its connection's id>` goes to that node,
   * whose answer is `done`'s; the blocked command then gets Redis's own reply, so an element
   * Redis handed it at that moment is not lost).
   */
  unblock (mode: UnblockMode, done: ClusterReply): Buffer | null {
    const blocked = this.#blocked
    if (blocked === null) return ZERO
    const onNode = blocked.unblock(mode === 'error' ? UNBLOCKED_ERROR : timeoutReply(this.#host.resp))
    if (onNode === null) return ONE
    const send = (conn: UpstreamConnection): void => {
      conn.send(encodeCommand(['CLIENT', 'UNBLOCK', onNode.redisId, mode.toUpperCase()]), replySlot(done))
    }
    const lanes = this.#dispatcher.lanes
    const ready = lanes.ready(onNode.node)
    if (ready !== null) send(ready)
    else lanes.open(onNode.node).then(send, (err: ProxyError) => { done(toRespError(err)) })
    return null
  }

  get pins (): ClusterPins {
    return this.#pins
  }

  get dispatcher (): ClusterDispatcher {
    return this.#dispatcher
  }

  get #topology (): ClusterDispatcher['topology'] {
    return this.#dispatcher.topology
  }

  get resp (): 2 | 3 {
    return this.#host.resp
  }

  finished (blocked: BlockingCommand): void {
    if (this.#blocked === blocked) this.#blocked = null
  }
}

/**
 * The pinned connection of one transaction. Commands for it wait in order until it is
 * acquired and confirmed (its first command was not redirected); if none can be had, each gets
 * the error. Released once: to the pins (scrubbed), or closed if it failed.
 */
class PinHandle {
  readonly #pins: ClusterPins
  readonly #onLost: () => void
  #pin: ClusterPin | null = null
  #acquisition: ClusterPinAcquisition | null = null
  #queue: Array<(conn: UpstreamConnection) => void> = []
  #confirmed = false
  #failed: Buffer | null = null
  released = false
  /** The node imports the slot (an -ASK sent the transaction there): ASKING precedes MULTI and commands outside it. */
  asking = false

  constructor (pins: ClusterPins, onLost: () => void) {
    this.#pins = pins
    this.#onLost = onLost
  }

  /** Pins a connection to `node`; `first` writes the commands that decide whether it is the right node. */
  acquire (node: () => ClusterNode | null, deadlineMs: number, first: (conn: UpstreamConnection) => void, failed: (err: ProxyError) => void): void {
    const acquisition = this.#pins.acquire(node, deadlineMs)
    this.#acquisition = acquisition
    acquisition.promise.then((pin) => {
      this.#acquisition = null
      if (this.released) {
        this.#pins.release(pin, 'clean')
        return
      }
      this.#pin = pin
      pin.conn.onClose = () => { this.#lost(pin) }
      first(pin.conn)
    }, (err: ProxyError) => {
      this.#acquisition = null
      if (this.released) return
      this.released = true
      this.#failed = errorReply(`ERR respool: ${err.message}`)
      failed(err)
      this.#flush(failedConn(this.#failed))
    })
  }

  /** The first command was not redirected: everything waiting goes out, in order. */
  confirm (): void {
    this.#confirmed = true
    if (this.#pin !== null) this.#flush(this.#pin.conn)
  }

  /** A redirect: this connection goes back, and the handle waits for the next one. */
  unpin (how: ClusterPinRelease): void {
    const pin = this.#pin
    this.#pin = null
    if (pin !== null) this.#pins.release(pin, how)
  }

  send (write: (conn: UpstreamConnection) => void): void {
    if (this.#failed !== null) write(failedConn(this.#failed))
    else if (this.#confirmed && this.#pin !== null && this.#queue.length === 0) write(this.#pin.conn)
    else this.#queue.push(write)
  }

  release (how: ClusterPinRelease): void {
    if (this.released) return
    this.released = true
    this.#acquisition?.cancel(new CommandRefusedError('transaction ended'))
    this.#acquisition = null
    const pin = this.#pin
    this.#pin = null
    if (pin !== null) this.#pins.release(pin, how)
    this.#flush(failedConn(errorReply('ERR respool: transaction ended')))
  }

  #flush (conn: UpstreamConnection): void {
    const queue = this.#queue
    this.#queue = []
    for (const write of queue) write(conn)
  }

  #lost (pin: ClusterPin): void {
    if (this.#pin !== pin) return
    this.#pin = null
    this.released = true
    this.#pins.release(pin, 'destroy')
    this.#failed = errorReply('ERR respool: cluster node connection lost during the transaction')
    this.#flush(failedConn(this.#failed))
    this.#onLost()
  }
}

/** A blocking command of one client: parked, or on a pin of its own. */
interface BlockingCommand {
  go (): void
  /** CLIENT UNBLOCK: ends it now (null), or names the node and connection Redis must unblock. */
  unblock (reply: Buffer): { node: ClusterNode, redisId: string } | null
  /** The client left or reset: it takes nothing. */
  cancel (): void
}

/**
 * A blocking command parked in the lot of its slot's master (ClusterParking): no connection of
 * its own. The lot hands it back with a -MOVED when the slot moves away (its try or wake-up
 * transaction was redirected, or the slot map names another owner): it parks again on the new
 * owner with the rest of its timeout, and the client never sees the redirect. A -ASK (the slot
 * is half-moved) parks it again shortly, once the move has settled.
 */
class ParkedBlocked implements BlockingCommand, ParkedClient {
  readonly #client: ClusterClient
  readonly #parking: ClusterParking
  readonly #slot: number
  readonly #done: ClusterReply
  readonly #timeoutMs: number
  readonly #startedAt = performance.now()
  /** What it runs (a stream command's `$` pinned down to ids once it was first tried). */
  #cmd: RespCommand
  #what: Parkable
  #lot: ParkingLot | null = null
  #waiter: Waiter | null = null
  #timer: NodeJS.Timeout | null = null
  #redirects = 0
  #lastRedirectAt = 0
  #retries = 0
  #over = false

  constructor (client: ClusterClient, parking: ClusterParking, cmd: RespCommand, what: Parkable, slot: number, done: ClusterReply) {
    this.#client = client
    this.#parking = parking
    this.#cmd = cmd
    this.#what = what
    this.#slot = slot
    this.#done = done
    this.#timeoutMs = blockingTimeoutMs(cmd) ?? 0
  }

  go (): void {
    this.#timer = null
    if (this.#over) return
    const left = this.#timeoutMs === 0 ? Infinity : this.#timeoutMs - (performance.now() - this.#startedAt)
    if (left <= 0) {
      this.#finish(timeoutReply(this.#client.resp))
      return
    }
    const topology = this.#client.dispatcher.topology
    const node = topology.nodeFor(this.#slot)
    if (node === null) {
      void topology.refresh('slot not served')
      this.#later(errorReply('CLUSTERDOWN Hash slot not served'), RETRY_DELAY_MS)
      return
    }
    this.#lot = this.#parking.lotFor(node)
    this.#waiter = this.#lot.park(this, this.#cmd, this.#what, 0, this.#client.resp, Number.isFinite(left) ? Math.max(1, left) : 0)
  }

  onParkedReply (reply: Buffer): void {
    const waiter = this.#waiter
    this.#waiter = null
    if (this.#over) return
    const topology = this.#client.dispatcher.topology
    const redirect = parseRedirect(reply, topology)
    if (redirect !== null && waiter !== null) {
      // Nothing was taken: park again, with what the lot pinned down (a stream's `$`).
      const again = parkable(waiter.cmd)
      if (again !== null) {
        this.#cmd = waiter.cmd
        this.#what = again
      }
      if (redirect.kind === 'ASK') {
        this.#later(errorReply(`ERR respool: slot ${redirect.slot} did not finish moving`), ASK_RETRY_MS, MAX_ASK_RETRIES)
        return
      }
      // Redirects count towards the limit while they come in a burst (nodes disagreeing about a
      // slot); a command parked for hours may see many slot moves, each one redirect.
      const now = performance.now()
      if (now - this.#lastRedirectAt > REDIRECT_BURST_MS) this.#redirects = 0
      this.#lastRedirectAt = now
      if (++this.#redirects <= MAX_REDIRECTS) {
        // (A lot that saw the new map hands its waiters back with the map's own owner.)
        if (topology.nodeFor(redirect.slot)?.key !== redirect.node.key) topology.moved(redirect.slot, redirect.node)
        if (this.#redirects <= 2) this.go()
        else this.#timer = setTimeout(() => { this.go() }, Math.min(200, 20 * this.#redirects)).unref()
        return
      }
      this.#finish(errorReply(`ERR respool: more than ${MAX_REDIRECTS} cluster redirections for one command`))
      return
    }
    if (startsWith(reply, '-TRYAGAIN') || startsWith(reply, '-CLUSTERDOWN') || startsWith(reply, '-LOADING')) {
      this.#later(reply, RETRY_DELAY_MS)
      return
    }
    this.#finish(reply)
  }

  /** Parks again after `ms`; after `max` such tries, the client gets `reply`. */
  #later (reply: Buffer, ms: number, max = MAX_RETRIES): void {
    if (++this.#retries > max) {
      this.#finish(reply)
      return
    }
    this.#timer = setTimeout(() => { this.go() }, ms).unref()
  }

  #finish (reply: Buffer): void {
    this.#over = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    this.#client.finished(this)
    this.#done(reply)
  }

  unblock (reply: Buffer): null {
    if (this.#over) return null
    if (this.#waiter !== null && this.#lot !== null && this.#lot.unblock(this.#waiter, reply)) return null // its reply came through onParkedReply
    this.#finish(reply)
    return null
  }

  cancel (): void {
    this.#over = true
    if (this.#timer !== null) clearTimeout(this.#timer)
    this.#timer = null
    if (this.#waiter !== null) this.#lot?.cancel(this.#waiter)
    this.#waiter = null
  }
}

/**
 * A blocking command on a pin of its own, on the master of its slot. A -MOVED/-ASK (the slot
 * moved away while it waited: Redis unblocks it without taking anything) sends it to the new
 * owner with the rest of its timeout; TRYAGAIN/CLUSTERDOWN/LOADING are tried again shortly.
 */
class Blocked implements BlockingCommand {
  readonly #client: ClusterClient
  readonly #cmd: RespCommand
  readonly #done: ClusterReply
  readonly #timeoutMs: number
  readonly #startedAt = performance.now()
  #acquiring: ClusterPinAcquisition | null = null
  #pin: ClusterPin | null = null
  #redirects = 0
  #retries = 0
  #to: ClusterNode | null = null
  #asking = false
  #over = false
  /** Gives the pin of the command in flight back, once. */
  #release: ((how: ClusterPinRelease) => void) | null = null

  constructor (client: ClusterClient, cmd: RespCommand, done: ClusterReply) {
    this.#client = client
    this.#cmd = cmd
    this.#done = done
    this.#timeoutMs = blockingTimeoutMs(cmd) ?? 0
  }

  /** Time left of the command's own timeout (Infinity for 0 = forever). */
  #left (): number {
    return this.#timeoutMs === 0 ? Infinity : this.#timeoutMs - (performance.now() - this.#startedAt)
  }

  go (): void {
    if (this.#over) return
    const left = this.#left()
    if (left <= 0) {
      this.#finish(timeoutReply(this.#client.resp))
      return
    }
    const slot = commandSlot(this.#cmd) ?? -1
    const topology = this.#client.dispatcher.topology
    const to = this.#to
    const acquisition = this.#client.pins.acquire(() => to ?? (slot >= 0 ? topology.nodeFor(slot) : topology.anyMaster()), Number.isFinite(left) ? left : null, 'blocking')
    this.#acquiring = acquisition
    acquisition.promise.then((pin) => {
      this.#acquiring = null
      if (this.#over) {
        this.#client.pins.release(pin, 'clean')
        return
      }
      this.#pin = pin
      this.#send(pin)
    }, (err: ProxyError) => {
      this.#acquiring = null
      if (this.#over) return
      // Out of time while waiting for a connection: Redis's own timeout reply.
      if (err.code === 'RESPOOL_ERR_POOL_TIMEOUT' && this.#timeoutMs > 0) this.#finish(timeoutReply(this.#client.resp))
      else this.#retryLater(toRespError(err))
    })
  }

  #send (pin: ClusterPin): void {
    const conn = pin.conn
    syncLaneState(conn, 0, this.#client.resp)
    const left = this.#left()
    const waited = performance.now() - this.#startedAt
    const cmd = Number.isFinite(left) && waited >= 5 ? withTimeout(this.#cmd, left) : this.#cmd
    if (this.#asking) conn.send(ASKING, dropSlot())
    this.#asking = false
    conn.blockingInflight++
    // The reply, or the connection's end (its command then fails too): whichever comes first
    // gives the pin back.
    let released = false
    const release = (how: ClusterPinRelease): void => {
      if (released) return
      released = true
      if (this.#pin === pin) this.#pin = null
      this.#client.pins.release(pin, how)
    }
    this.#release = release
    conn.onClose = () => { release('destroy') }
    conn.send(cmd.frame, replySlot((reply) => {
      conn.blockingInflight--
      release('clean')
      if (this.#over) return
      const redirect = parseRedirect(reply, this.#client.dispatcher.topology)
      if (redirect !== null && ++this.#redirects <= MAX_REDIRECTS) {
        if (redirect.kind === 'MOVED') this.#client.dispatcher.topology.moved(redirect.slot, redirect.node)
        this.#to = redirect.kind === 'ASK' ? redirect.node : null
        this.#asking = redirect.kind === 'ASK'
        this.go()
        return
      }
      if (redirect === null && (startsWith(reply, '-TRYAGAIN') || startsWith(reply, '-CLUSTERDOWN') || startsWith(reply, '-LOADING'))) {
        this.#retryLater(reply)
        return
      }
      this.#finish(redirect !== null ? errorReply(`ERR respool: more than ${MAX_REDIRECTS} cluster redirections for one command`) : reply)
    }))
  }

  #retryLater (reply: Buffer): void {
    if (++this.#retries > MAX_RETRIES) {
      this.#finish(reply)
      return
    }
    this.#to = null
    setTimeout(() => { this.go() }, RETRY_DELAY_MS).unref()
  }

  #finish (reply: Buffer): void {
    this.#over = true
    this.#client.finished(this)
    this.#done(reply)
  }

  /**
   * CLIENT UNBLOCK: a command not on a node yet (waiting for a pin, or between a redirect and
   * the next node) ends now with `reply` (null returned); one blocked on a node names that node
   * and its connection's Redis id, for Redis to unblock it.
   */
  unblock (reply: Buffer): { node: ClusterNode, redisId: string } | null {
    const pin = this.#pin
    if (pin !== null && pin.conn.redisId !== null) return { node: pin.node, redisId: pin.conn.redisId }
    if (!this.#over) {
      this.#acquiring?.cancel(new CommandRefusedError('unblocked'))
      this.#acquiring = null
      if (pin !== null) this.#release?.('destroy')
      this.#finish(reply)
    }
    return null
  }

  /** The client left or reset: a command still blocked must not pop anything for nobody. */
  cancel (): void {
    this.#over = true
    this.#acquiring?.cancel(new CommandRefusedError('client gone'))
    this.#acquiring = null
    if (this.#pin !== null) this.#release?.('destroy')
  }
}

function replySlot (done: ClusterReply): ReplySlot {
  return new ReplySlot(new InternalSink((frame, err) => { done(frame ?? toRespError(err as ProxyError)) }), null)
}

function dropSlot (): ReplySlot {
  return new ReplySlot(new InternalSink(() => {}), null)
}

/** Stands in for a connection that could not be had: every send is answered `reply` at once. */
function failedConn (reply: Buffer): UpstreamConnection {
  return {
    send: (_frame: Buffer, slot: ReplySlot) => { slot.sink.onReply(slot, reply) }
  } as unknown as UpstreamConnection
}

function isQueued (reply: Buffer): boolean {
  return reply.length === QUEUED.length && reply.toString('latin1') === QUEUED
}

function startsWith (frame: Buffer, prefix: string): boolean {
  return frame.length >= prefix.length && frame.toString('latin1', 0, prefix.length) === prefix
}

/** -MOVED/-ASK <slot> <host>:<port> (an empty host means the node that answered's). */
function parseRedirect (reply: Buffer, topology: { node (host: string, port: number): ClusterNode }): Redirect | null {
  if (reply[0] !== MINUS) return null
  const m = /^-(MOVED|ASK) (\d+) (\S*):(\d+)\r\n/.exec(reply.toString('latin1', 0, Math.min(reply.length, 300)))
  return m === null ? null : { kind: m[1] as 'MOVED' | 'ASK', slot: Number(m[2]), node: topology.node(m[3] === '' ? '127.0.0.1' : m[3], Number(m[4])) }
}
