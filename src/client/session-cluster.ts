/**
 * Cluster mode (--cluster) for one client: commands routed by slot, transactions and blocking
 * commands on pins to masters (ClusterClient), shard channels (SSUBSCRIBE) on pins to their
 * slots' masters, PUBLISH counted with respool's own subscribers, and the order of the client's
 * commands across the connections they go to. Made on the client's first command in cluster
 * mode; a standalone session never has one.
 */
import { R_SUBSCRIBED } from './session-effects.js'
import { CommandRefusedError, toRespError } from '../errors.js'
import { OK, errorReply } from '../protocol/resp-encode.js'
import { classify, Kind, type CommandKind } from '../commands/command-table.js'
import * as local from '../commands/local-commands.js'
import { commandFamily } from '../protocol/pubsub-frames.js'
import { parseRedisInt } from '../protocol/redis-integer.js'
import type { RespCommand } from '../protocol/resp-command.js'
import type { ReplySlot } from '../routing/reply-slot.js'
import type { PubsubHub, HubClient } from '../pubsub/pubsub-hub.js'
import { CLUSTER_DISABLED, type ClusterDispatcher } from '../cluster/cluster-dispatcher.js'
import { ClusterClient, ROUTE_BLOCK, ROUTE_NONE, ROUTE_OPEN, ROUTE_PIN, ROUTE_SHARED, type ClusterClientHost } from '../cluster/cluster-client.js'
import type { ClusterPins } from '../cluster/cluster-pins.js'
import { ClusterShardSubscriptions } from '../cluster/cluster-shard-subscriptions.js'
import type { ClusterHub } from '../cluster/cluster-pubsub.js'
import type { SessionState } from './session-state.js'
import { LOCAL_CLIENT_SUBCOMMANDS } from './client-subcommands.js'
import type { SessionContext } from './session-context.js'

/** What cluster mode uses of a session (ClientSession). */
export interface ClusterSessionHost {
  readonly id: number
  readonly state: SessionState
  readonly context: Pick<SessionContext, 'config' | 'log' | 'pubsub' | 'clusterPins' | 'clusterParking' | 'clusterHub'>
  readonly inflight: number
  /** The pending command at index i (0: the head). */
  pendingAt (i: number): ReplySlot
  bufferedTransactionEnd (): number
  firstLook (slot: ReplySlot, cmd: RespCommand, kind: CommandKind): void
  answerLocally (slot: ReplySlot, reply: Buffer): boolean
  takeHeadInflight (): ReplySlot
  waitForInflight (): false
  clusterReply (slot: ReplySlot, reply: Buffer): void
  hubClient (): HubClient
  endAfterReplies (dropPending: boolean): void
}

export class SessionCluster implements ClusterClientHost {
  readonly #session: ClusterSessionHost
  /** This client's transaction and blocking commands (made on first use). */
  client: ClusterClient | null = null
  /** This client's shard channels (SSUBSCRIBE), on pins to their slots' masters. */
  shards: ClusterShardSubscriptions | null = null
  /** A command of this client was redirected or retried; later ones wait for those in flight. */
  #barrier = false
  /** Where the client's last command went (ROUTE_*), for its order across connections. */
  #route = ROUTE_SHARED

  constructor (session: ClusterSessionHost) {
    this.#session = session
  }

  /** For ClusterClient: the client's protocol. */
  get resp (): 2 | 3 {
    return this.#session.state.resp
  }

  /** For ClusterClient: the pinned connection of a transaction or WATCH failed. */
  lost (): void {
    // The transaction or WATCH is gone with its connection: the client is closed, as a
    // direct connection would be (its next commands must not run outside the transaction).
    const s = this.#session
    s.context.log.debug({ client: s.id }, 'cluster pinned connection lost; closing client')
    s.endAfterReplies(true)
  }

  /** A transaction or blocking command of this client holds a pin. */
  get pinned (): boolean {
    return this.client?.pinned ?? false
  }

  /** Why this client holds pinned connections (R_* bits). */
  get pinReasons (): number {
    return (this.client?.pinReasons ?? 0) | (this.shards !== null && this.shards.pins > 0 ? R_SUBSCRIBED : 0)
  }

  /** Subscribed to a shard channel. */
  get subscribed (): boolean {
    return this.shards !== null && this.shards.count > 0
  }

  /** RESET: the client's transaction, blocking command and shard channels end. */
  reset (): void {
    this.client?.reset()
    this.shards?.reset()
  }

  /** The client is gone. */
  close (): void {
    this.client?.close()
    this.shards?.close()
  }

  /**
   * Cluster mode: what respool answers itself, refuses, or routes by slot. Null for the commands
   * that are handled as in standalone mode because they never reach Redis there either (AUTH,
   * HELLO, RESET, QUIT, CLIENT ID/SETNAME/LIST/REPLY/KILL …, the refused classes).
   */
  dispatch (slot: ReplySlot, cmd: RespCommand, kind: CommandKind, cluster: ClusterDispatcher): boolean | null {
    const s = this.#session
    const ctx = s.context
    const pins = ctx.clusterPins
    if (pins != null) {
      const client = this.client ??= new ClusterClient(cluster, pins, this, ctx.config.acquireTimeoutMs, ctx.clusterParking ?? null)
      const route = client.route(cmd, kind)
      if (route !== null) return this.#pinned(slot, cmd, kind, client, route)
    }
    switch (kind) {
      case Kind.SHARED:
        if (cmd.name === 'publish' && cmd.argc === 3 && ctx.pubsub !== null && ctx.clusterHub != null) {
          return this.#publish(slot, cmd, ctx.pubsub, ctx.clusterHub)
        }
        return this.#forward(slot, cmd, cluster)
      case Kind.SELECT:
        if (cmd.argc !== 2) return s.answerLocally(slot, local.wrongArity('select'))
        if (parseRedisInt(cmd.argString(1)) === null) return s.answerLocally(slot, errorReply('ERR value is not an integer or out of range'))
        return s.answerLocally(slot, parseRedisInt(cmd.argString(1)) === 0 ? OK : errorReply('ERR SELECT is not allowed in cluster mode'))
      case Kind.READONLY:
      case Kind.READWRITE:
        return s.answerLocally(slot, CLUSTER_DISABLED)
      case Kind.MULTI:
        return this.#refuse(slot, 'MULTI/EXEC transactions are')
      case Kind.WATCH:
        return this.#refuse(slot, 'WATCH is')
      case Kind.EXEC:
      case Kind.DISCARD:
        if (cmd.argc !== 1) return s.answerLocally(slot, local.wrongArity(cmd.name))
        return s.answerLocally(slot, errorReply(`ERR ${cmd.name.toUpperCase()} without MULTI`))
      case Kind.UNWATCH:
        return s.answerLocally(slot, cmd.argc !== 1 ? local.wrongArity('unwatch') : OK)
      case Kind.BLOCKING:
        if (cmd.name === 'wait' || cmd.name === 'waitaof') return this.#refuse(slot, `${cmd.name.toUpperCase()} is`)
        return this.#forward(slot, cmd, cluster) // a timeout Redis refuses: its error
      case Kind.SUBSCRIBE:
      case Kind.UNSUBSCRIBE:
        // Channels and patterns: the shared subscriber connection (on one master; a cluster
        // broadcasts PUBLISH to every node).
        if (commandFamily(cmd.name) === 'shard' && pins != null) return this.#shard(slot, cmd, kind, cluster, pins)
        if (ctx.pubsub !== null && commandFamily(cmd.name) !== 'shard') return null
        return this.#refuse(slot, `${cmd.name.toUpperCase()} is`)
      case Kind.MONITOR:
        return this.#refuse(slot, 'MONITOR is')
      case Kind.CLIENT:
        if (LOCAL_CLIENT_SUBCOMMANDS.has(cmd.keyword(1)) && cmd.keyword(1) !== 'tracking') return null
        return this.#refuse(slot, `CLIENT ${cmd.keyword(1).toUpperCase()} is`)
      default:
        return null
    }
  }

  /** A command cluster mode does not take: the client's error, in its place in the order. */
  #refuse (slot: ReplySlot, what: string): boolean {
    return this.#session.answerLocally(slot, toRespError(new CommandRefusedError(`${what} not supported in cluster mode (--cluster)`)))
  }

  /**
   * Cluster mode: a transaction's command or a blocking command (ClusterClient). A command that
   * runs on another connection than the client's commands in flight waits for their replies
   * (Redis orders per connection only); a blocking command waits for all of them, and the
   * commands after it wait for it.
   */
  #pinned (slot: ReplySlot, cmd: RespCommand, kind: CommandKind, client: ClusterClient, route: number): boolean {
    const s = this.#session
    if (kind === Kind.MULTI && cmd.argc === 1 && !client.inMulti) {
      const end = s.bufferedTransactionEnd()
      if (end > 0 && s.pendingAt(end).command?.name === 'exec') {
        const cmds: RespCommand[] = []
        for (let i = 0; i <= end; i++) cmds.push(s.pendingAt(i).command as RespCommand)
        const txSlot = client.wholeSlot(cmds)
        if (txSlot !== null) return this.#whole(end, cmds, txSlot, client)
      }
    }
    if (route !== ROUTE_NONE && s.inflight > 0 && (route === ROUTE_BLOCK || route === ROUTE_OPEN || route !== this.#route)) return s.waitForInflight()
    const now = client.run(cmd, kind, (reply) => { s.clusterReply(slot, reply) })
    if (now !== null) return s.answerLocally(slot, now)
    if (route !== ROUTE_NONE) this.#route = route === ROUTE_OPEN ? ROUTE_PIN : route
    s.takeHeadInflight()
    return true
  }

  /**
   * Cluster mode: SSUBSCRIBE/SUNSUBSCRIBE on pins to the masters of the channels' slots. Like
   * the shared fan-out, it waits for the client's earlier replies (messages must not overtake
   * them); SSUBSCRIBE completes when Redis confirmed it, SUNSUBSCRIBE is answered at once.
   */
  #shard (slot: ReplySlot, cmd: RespCommand, kind: CommandKind, cluster: ClusterDispatcher, pins: ClusterPins): boolean {
    const s = this.#session
    if (s.inflight > 0) return s.waitForInflight()
    const shards = this.shards ??= new ClusterShardSubscriptions(cluster, pins, s.hubClient(), s.context.config.acquireTimeoutMs)
    if (kind === Kind.UNSUBSCRIBE) return s.answerLocally(slot, shards.unsubscribe(cmd))
    const now = shards.subscribe(cmd, (reply) => { s.clusterReply(slot, reply) })
    if (now !== null) return s.answerLocally(slot, now)
    s.takeHeadInflight()
    s.waitForInflight()
    return true
  }

  /**
   * Cluster mode: a transaction that arrived whole goes in one write to the shared lane of its
   * slot's master (as in standalone mode, no pin), or again, whole, to another node if its
   * commands were redirected (nothing of it ran then).
   */
  #whole (end: number, cmds: RespCommand[], txSlot: number, client: ClusterClient): boolean {
    const s = this.#session
    if (s.inflight > 0 && (this.#route !== ROUTE_SHARED || this.#barrier)) return s.waitForInflight()
    this.#barrier = false
    this.#route = ROUTE_SHARED
    const slots: ReplySlot[] = []
    for (let i = 0; i <= end; i++) {
      const slot = s.takeHeadInflight()
      if (i > 0) s.firstLook(slot, cmds[i], classify(cmds[i]))
      slots.push(slot)
    }
    client.runWhole(cmds.map((c) => c.frame), txSlot, (replies) => {
      replies.forEach((reply, i) => { s.clusterReply(slots[i], reply) })
    }, () => { this.#barrier = true })
    return true
  }

  /** Cluster mode: PUBLISH on the master of the subscriber connection, counting respool's subscribers. */
  #publish (slot: ReplySlot, cmd: RespCommand, hub: PubsubHub, via: ClusterHub): boolean {
    const s = this.#session
    if (s.inflight > 0 && (this.#route !== ROUTE_SHARED || this.#barrier)) return s.waitForInflight()
    this.#barrier = false
    this.#route = ROUTE_SHARED
    s.takeHeadInflight()
    via.publish(cmd.frame, s.state.resp, (reply) => { s.clusterReply(slot, hub.adjustPublish(cmd.arg(1), reply)) })
    return true
  }

  /** Cluster mode: the command goes to the master of its slot (split and merged if it spans slots). */
  #forward (slot: ReplySlot, cmd: RespCommand, cluster: ClusterDispatcher): boolean {
    const s = this.#session
    if (s.inflight > 0 && this.#route !== ROUTE_SHARED) {
      // The client's commands in flight are on its pinned connection: this one must not overtake them.
      return s.waitForInflight()
    }
    this.#route = ROUTE_SHARED
    if (this.#barrier) {
      if (s.inflight > 0) {
        // A command ahead was redirected and is on its way again: this one must not overtake it.
        return s.waitForInflight()
      }
      this.#barrier = false
    }
    const now = cluster.run(cmd, s.state.resp, (reply) => { s.clusterReply(slot, reply) }, () => { this.#barrier = true })
    if (now !== null) return s.answerLocally(slot, now)
    s.takeHeadInflight()
    return true
  }
}
