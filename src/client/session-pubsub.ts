/**
 * SUBSCRIBE, PSUBSCRIBE, SSUBSCRIBE and their UNSUBSCRIBEs for one client (standalone mode):
 * on the shared pub/sub fan-out when there is one (--shared-pubsub), with no connection of the
 * client's own; otherwise, or for a client on a pin or an ACL user of its own, on a pin where
 * Redis answers. Also the subscriber counts PUBLISH and PUBSUB NUMSUB report with the fan-out.
 */
import { CommandRefusedError, toRespError } from '../errors.js'
import { Kind, type CommandKind } from '../commands/command-table.js'
import * as local from '../commands/local-commands.js'
import { commandFamily } from '../protocol/pubsub-frames.js'
import type { RespCommand } from '../protocol/resp-command.js'
import type { ReplySlot } from '../routing/reply-slot.js'
import type { PubsubHub, HubMember, HubFamily } from '../pubsub/pubsub-hub.js'
import type { SessionState } from './session-state.js'
import { E_SUBSCRIBE, R_MULTI, R_SUBSCRIBED, type Lease } from './session-effects.js'
import { notSubscribedReply } from './subscriptions.js'
import type { SessionContext } from './session-context.js'

/** What the pub/sub commands use of a session (ClientSession). */
export interface PubsubHost {
  readonly state: SessionState
  readonly context: Pick<SessionContext, 'config' | 'pubsub'>
  readonly inflight: number
  readonly hasIdentity: boolean
  /** The client's place on the shared fan-out (null until its first subscription there). */
  readonly sharedMember: HubMember | null
  /** The client's place on the shared fan-out, made now if it has none. */
  joinSharedPubsub (hub: PubsubHub): HubMember
  answerLocally (slot: ReplySlot, reply: Buffer): boolean
  forward (slot: ReplySlot, effect: number, data: number): boolean
  pinFor (slot: ReplySlot, deadlineMs: number | null): boolean
  waitForInflight (): false
  /** The head pending command leaves the queue; its reply comes later (fill or onReply). */
  takeHead (): ReplySlot
  /** One more command of the client is in flight (a SUBSCRIBE waiting for its confirmations). */
  countInflight (): void
  fill (slot: ReplySlot, reply: Buffer): void
  onReply (slot: ReplySlot, frame: Buffer): void
  /** The client left channels of the shared fan-out: a shutdown waiting for it may end it now. */
  unsubscribedShared (): void
}

export function pubsubCommand (s: PubsubHost, slot: ReplySlot, cmd: RespCommand, kind: CommandKind, lease: Lease | null): boolean {
  if (lease !== null && (lease.reasons & R_MULTI) !== 0) {
    return s.answerLocally(slot, toRespError(new CommandRefusedError(`${cmd.name.toUpperCase()} inside MULTI is not supported`)))
  }
  const hub = s.context.pubsub
  const family = commandFamily(cmd.name)
  const subscribed = lease !== null && (lease.reasons & R_SUBSCRIBED) !== 0
  // A client that holds a pin (WATCH, say) and has nothing on the shared connection subscribes
  // on its pin: the shared connection may need a pin of its own, and pins held by clients
  // waiting for it could be all there are. Subscriptions stay where the client's first went.
  const member = s.sharedMember
  const onPin = subscribed || (lease !== null && (member === null || member.count === 0))
  if (hub !== null && family !== 'shard' && !onPin && !s.hasIdentity) return sharedPubsub(s, slot, cmd, kind, hub, family)
  if (kind === Kind.UNSUBSCRIBE && !subscribed) return s.answerLocally(slot, notSubscribedReply(cmd, s.state.resp))
  if (kind === Kind.SUBSCRIBE && cmd.argc < 2) return s.answerLocally(slot, local.wrongArity(cmd.name))
  if (lease === null) return s.pinFor(slot, s.context.config.acquireTimeoutMs)
  slot.confirmations = cmd.argc > 1 ? cmd.argc - 1 : -1
  return s.forward(slot, E_SUBSCRIBE, 0)
}

/**
 * (P)SUBSCRIBE and (P)UNSUBSCRIBE on the shared fan-out: no connection of the client's own.
 * Like a pin, it waits until the client's earlier replies are in (messages must not overtake
 * them). A SUBSCRIBE completes when Redis confirmed its channels on the shared connection (the
 * client's later commands wait for it, as they would behind its reply); an UNSUBSCRIBE stops
 * the client's messages at once, and is answered once Redis confirmed what it left upstream
 * (none of it, mostly: others still subscribe). Confirmations carry the client's own
 * subscription count.
 */
function sharedPubsub (s: PubsubHost, slot: ReplySlot, cmd: RespCommand, kind: CommandKind, hub: PubsubHub, family: HubFamily): boolean {
  if (kind === Kind.SUBSCRIBE && cmd.argc < 2) return s.answerLocally(slot, local.wrongArity(cmd.name))
  if (s.inflight > 0) return s.waitForInflight()
  const member = s.joinSharedPubsub(hub)
  const names = cmd.args().slice(1)
  s.takeHead()
  const reply = kind === Kind.UNSUBSCRIBE
    ? hub.unsubscribe(member, family, names.length > 0 ? names : null, (frame) => { s.onReply(slot, frame) })
    : hub.subscribe(member, family, names, (frame) => { s.onReply(slot, frame) })
  if (reply !== null) {
    s.fill(slot, reply)
  } else {
    s.countInflight()
    s.waitForInflight()
  }
  // (After its reply is filled or counted: a shutdown that waits for this client ends after it.)
  if (kind === Kind.UNSUBSCRIBE) s.unsubscribedShared()
  return true
}

/** PUBLISH's receivers or PUBSUB NUMSUB's counts, with the fan-out's subscribers in place of its one connection. */
export function adjustCount (cmd: RespCommand, frame: Buffer, hub: PubsubHub): Buffer {
  return cmd.name === 'publish' ? hub.adjustPublish(cmd.arg(1), frame) : hub.adjustNumsub(frame)
}
