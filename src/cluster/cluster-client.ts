import { CommandRefusedError, toRespError, type ProxyError } from '../errors.js'
import { Kind, type CommandKind } from '../commands/command-table.js'
import { blockingTimeoutMs, timeoutReply } from '../commands/blocking.js'
import { wrongArity } from '../commands/local-commands.js'
import { UNBLOCKED_ERROR, type UnblockMode } from '../commands/client-control.js'
import type { RespCommand } from '../protocol/resp-command.js'
import { command as encodeCommand, errorReply, OK } from '../protocol/resp-encode.js'
import { syncLaneState } from '../routing/lane-state.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ClusterDispatcher } from './cluster-dispatcher.js'
import type { ClusterPins } from './cluster-pins.js'
import type { ClusterNode } from './cluster-topology.js'
import { commandSlot } from './keys.js'
import type { ClusterParking } from './cluster-parking.js'
import { parkable } from '../waiting/parkable.js'
import { Blocked, ParkedBlocked, type BlockingCommand, type BlockingHost } from './cluster-blocked.js'
import { PinHandle } from './cluster-pin-handle.js'
import { R_BLOCKING, R_MULTI, R_WATCH } from '../client/session-effects.js'
import { killScriptsEverywhere } from './cluster-script-kill.js'
import { isScriptKill } from '../commands/script-kill.js'
import { dropSlot, MAX_REDIRECTS, parseRedirect, replySlot, startsWith, type ClusterReply, type Redirect } from './cluster-replies.js'

/** Where a command of a cluster client runs, for the session's order across connections. */
export const ROUTE_NONE = 0 // answered by respool, or only checked upstream (runs nothing)
export const ROUTE_SHARED = 1 // the masters' shared lanes (the dispatcher)
export const ROUTE_PIN = 2 // the client's pinned connection (its transaction)
export const ROUTE_BLOCK = 3 // a blocking command: nothing of the client's runs beside it
export const ROUTE_OPEN = 4 // pins a new connection: everything of the client's before it is answered first

const CROSSSLOT = errorReply('CROSSSLOT Keys in request don\'t hash to the same slot')
const EXECABORT = errorReply('EXECABORT Transaction discarded because of previous errors.')
const CLUSTER_DOWN = errorReply('CLUSTERDOWN The cluster is down')
const EMPTY_ARRAY = Buffer.from('*0\r\n')
const ZERO = Buffer.from(':0\r\n')
const ONE = Buffer.from(':1\r\n')
const QUEUED = '+QUEUED\r\n'
const MULTI = encodeCommand(['MULTI'])
const DISCARD = encodeCommand(['DISCARD'])
const EXEC = encodeCommand(['EXEC'])
const ASKING = encodeCommand(['ASKING'])

/**
 * Keyless commands a cluster node would answer for its own part of the keyspace only, or that
 * respool answers itself: they cannot be queued in a transaction pinned to one node.
 */
const NOT_IN_TRANSACTION = new Set(['dbsize', 'keys', 'scan', 'randomkey', 'flushall', 'flushdb', 'script', 'function', 'wait', 'waitaof', 'cluster', 'asking', 'readonly', 'readwrite', 'respool', 'monitor'])
/** CLIENT subcommands respool answers itself (not queueable, as in standalone mode). */
const LOCAL_CLIENT = new Set(['id', 'getname', 'setname', 'setinfo', 'info', 'list', 'reply', 'tracking', 'kill', 'unblock', 'no-evict', 'no-touch', 'caching', 'pause', 'unpause', 'getredir', 'trackinginfo'])

export type { ClusterReply } from './cluster-replies.js'

/** What the session does for a cluster client that respool cannot run. */
export interface ClusterClientHost {
  readonly resp: 2 | 3
  /** The pinned connection of a transaction or WATCH failed: the client is closed (as Redis would drop it). */
  lost (): void
}

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
 *   master (ClusterParking, ParkedBlocked in cluster-blocked.ts) when parking is on. Otherwise it waits on a pin
 *   of its own (a pin per waiter, up to the pin budget, the rest queued in order with their own
 *   timeouts counting). If its slot moves away while it
 *   waits, the node unblocks it with -MOVED (nothing was popped) and it waits again on the new
 *   owner for the rest of its timeout.
 */
export class ClusterClient implements BlockingHost {
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

  /** Why this client holds a pinned connection now (R_* bits), for RESPOOL CLIENTS and the metrics. */
  get pinReasons (): number {
    let reasons = 0
    if (this.#handle !== null && !this.#handle.released) reasons |= (this.#multi ? R_MULTI : 0) | (this.#watching ? R_WATCH : 0)
    if (this.#blocked?.holdsPin === true) reasons |= R_BLOCKING
    return reasons
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
        // Not behind the client's commands in flight: one of them may be the busy script.
        return isScriptKill(cmd) ? ROUTE_NONE : null
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
      default: {
        if (!isScriptKill(cmd)) throw new Error(`cluster client cannot run ${cmd.name}`)
        const masters = this.#dispatcher.whole.masters().map((m) => m.node)
        if (masters.length === 0) return CLUSTER_DOWN
        killScriptsEverywhere(cmd.frame, masters, this.#pins, this.#acquireTimeoutMs, done)
        return null
      }
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
      handle.acquire(() => to ?? topology.nodeFor(slot), this.#acquireTimeoutMs, inMulti ? R_MULTI : R_WATCH, (conn) => {
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

function isQueued (reply: Buffer): boolean {
  return reply.length === QUEUED.length && reply.toString('latin1') === QUEUED
}
