/**
 * CLIENT subcommands as a client of respool sees them: the ones respool answers itself (ID,
 * GETNAME, SETNAME, SETINFO, INFO, LIST, REPLY), the ones it acts on with its own clients (KILL,
 * UNBLOCK), the ones that need a pin (TRACKING) and the ones it refuses (NO-EVICT, NO-TOUCH).
 * The rest goes to Redis. Argument parsing for KILL and UNBLOCK is in commands/client-control.ts;
 * this module is what a session does with them.
 */
import { CommandRefusedError, type ProxyError, toRespError } from '../errors.js'
import { OK, errorReply, integer, command as encodeCommand } from '../protocol/resp-encode.js'
import { parseKill, parseUnblock, killMatches, type UnblockMode } from '../commands/client-control.js'
import * as local from '../commands/local-commands.js'
import type { RespCommand } from '../protocol/resp-command.js'
import type { ReplySlot } from '../routing/reply-slot.js'
import type { Router } from '../routing/router.js'
import type { ClusterClient } from '../cluster/cluster-client.js'
import type { SessionState } from './session-state.js'
import { E_TRACKING_OFF, E_TRACKING_ON, type Lease } from './session-effects.js'
import type { SessionContext } from './session-context.js'

/** CLIENT subcommands respool answers itself (or refuses): they cannot be queued in MULTI. */
export const LOCAL_CLIENT_SUBCOMMANDS = new Set(['id', 'getname', 'setname', 'setinfo', 'info', 'list', 'reply', 'tracking', 'kill', 'unblock', 'no-evict', 'no-touch'])

const ZERO = integer(0)

/** What the CLIENT subcommands use of a session (ClientSession). */
export interface ClientCommandHost {
  readonly id: number
  readonly state: SessionState
  readonly context: Pick<SessionContext, 'config' | 'clientViews' | 'clients'>
  readonly router: Router
  readonly closed: boolean
  /** The client runs as an ACL user of its own (CLIENT KILL/UNBLOCK need that user's permission). */
  readonly hasIdentity: boolean
  /** Cluster mode: the client's transaction and blocking commands, if it had any. */
  readonly clusterClient: ClusterClient | null
  view (): local.ClientView
  destroy (): void
  unblock (mode: UnblockMode): Buffer | { redisId: string }
  answerLocally (slot: ReplySlot, reply: Buffer): boolean
  forward (slot: ReplySlot, effect: number, data: number): boolean
  pinFor (slot: ReplySlot, deadlineMs: number | null): boolean
  sendAtOnce (slot: ReplySlot, frame: Buffer): boolean
  fill (slot: ReplySlot, reply: Buffer): void
  pump (): void
  endAfterReplies (dropPending: boolean): void
  awaitVerdict (): void
  verdictIn (): void
  requeueHead (slot: ReplySlot): void
  takeHeadInflight (): ReplySlot
  clusterReply (slot: ReplySlot, reply: Buffer): void
}

/** CLIENT <subcommand>: answered, acted on, refused or forwarded. Returns false if it must wait. */
export function clientCommand (s: ClientCommandHost, slot: ReplySlot, cmd: RespCommand, lease: Lease | null): boolean {
  const sub = cmd.keyword(1)
  const state = s.state
  switch (sub) {
    case 'id':
      return s.answerLocally(slot, local.clientId(s.id))
    case 'getname':
      return s.answerLocally(slot, local.getName(state))
    case 'setname':
      return s.answerLocally(slot, cmd.argc === 3 ? local.setName(state, cmd.arg(2)) : local.wrongArity('client|setname'))
    case 'setinfo':
      return s.answerLocally(slot, local.setInfo(state, cmd))
    case 'info':
      return s.answerLocally(slot, local.clientInfo(s.view()))
    case 'list':
      return s.answerLocally(slot, local.clientListCommand(s.context.clientViews(), cmd, s.state.resp))
    case 'reply': {
      // As Redis does: ON answers +OK even when this reply was to be skipped; OFF and SKIP
      // answer nothing; SKIP while OFF changes nothing.
      if (cmd.argc !== 3) return s.answerLocally(slot, local.wrongArity('client|reply'))
      const mode = cmd.keyword(2)
      if (mode === 'on') {
        state.replyOff = false
        state.skipNext = false
        slot.suppressed = false
      } else if (mode === 'off') {
        state.replyOff = true
        slot.suppressed = true
      } else if (mode === 'skip') {
        if (!state.replyOff) state.skipNext = true
        slot.suppressed = true
      } else {
        return s.answerLocally(slot, errorReply('ERR syntax error'))
      }
      return s.answerLocally(slot, OK)
    }
    case 'tracking': {
      const on = cmd.keyword(2)
      for (let i = 3; i < cmd.argc; i++) {
        if (cmd.keyword(i) === 'redirect') return s.answerLocally(slot, toRespError(new CommandRefusedError('CLIENT TRACKING REDIRECT is not supported; use RESP3 (HELLO 3) tracking')))
      }
      if (on === 'off') return lease === null ? s.answerLocally(slot, OK) : s.forward(slot, E_TRACKING_OFF, 0)
      if (on !== 'on') return s.forward(slot, 0, 0) // Redis answers the syntax error
      if (lease === null) return s.pinFor(slot, s.context.config.acquireTimeoutMs)
      return s.forward(slot, E_TRACKING_ON, 0)
    }
    case 'unblock':
    case 'kill':
      if (s.hasIdentity && !slot.permitted) return checkPermission(s, slot, cmd)
      if (sub === 'unblock') return unblockClient(s, slot, cmd)
      return killAndAnswer(s, slot, cmd)
    case 'no-evict':
    case 'no-touch':
      return s.answerLocally(slot, toRespError(new CommandRefusedError(`CLIENT ${sub.toUpperCase()} would act on shared upstream connections and is not supported through respool`)))
    default:
      // CACHING, GETREDIR, TRACKINGINFO, PAUSE, UNPAUSE, HELP …: Redis answers (on the pin, if any).
      return s.forward(slot, 0, 0)
  }
}

/** CLIENT KILL: the clients it names are closed; this one after its reply, as Redis does. */
function killAndAnswer (s: ClientCommandHost, slot: ReplySlot, cmd: RespCommand): boolean {
  const { reply, self } = killClients(s, cmd)
  s.answerLocally(slot, reply)
  if (self) s.endAfterReplies(true) // after this reply, as Redis does
  return true
}

/**
 * An ACL user's CLIENT KILL / UNBLOCK needs that user's permission, as on Redis: the same
 * subcommand is asked of Redis, as that user, about a client id that cannot exist (Redis
 * checks permissions first). -NOPERM is the answer; otherwise respool acts on its clients.
 */
function checkPermission (s: ClientCommandHost, slot: ReplySlot, cmd: RespCommand): boolean {
  s.awaitVerdict()
  const probe = cmd.keyword(1) === 'kill' ? ['CLIENT', 'KILL', 'ID', '18446744073709551615'] : ['CLIENT', 'UNBLOCK', '18446744073709551615']
  s.router.sendAtOnce(encodeCommand(probe), (reply, err) => {
    if (s.closed) return
    s.verdictIn()
    if (err !== null || reply === null) s.fill(slot, toRespError(err as ProxyError))
    else if (reply.toString('latin1', 0, 7) === '-NOPERM') s.fill(slot, reply)
    else {
      slot.permitted = true
      s.requeueHead(slot)
    }
    s.pump()
  })
  return true
}

/**
 * CLIENT UNBLOCK on a respool client id. A parked command is ended here; one blocked on a pin
 * of its own is ended by Redis (CLIENT UNBLOCK with that connection's Redis id, which only
 * respool knows), whose answer is the reply.
 */
function unblockClient (s: ClientCommandHost, slot: ReplySlot, cmd: RespCommand): boolean {
  const parsed = parseUnblock(cmd)
  if (Buffer.isBuffer(parsed)) return s.answerLocally(slot, parsed)
  let target: ClientCommandHost | null = null
  for (const session of s.context.clients()) if (session.id === parsed.id) target = session
  const targetCluster = target !== null ? target.clusterClient : null
  const viaCluster = targetCluster?.unblock(parsed.mode, (reply) => { s.clusterReply(slot, reply) })
  if (viaCluster === null) {
    // Asked of the node the command is blocked on; the answer comes back in this slot.
    s.takeHeadInflight()
    return true
  }
  const how = viaCluster ?? target?.unblock(parsed.mode) ?? ZERO
  if (Buffer.isBuffer(how)) return s.answerLocally(slot, how)
  return s.sendAtOnce(slot, encodeCommand(['CLIENT', 'UNBLOCK', how.redisId, parsed.mode.toUpperCase()]))
}

/** CLIENT KILL on respool's clients: the old form (+OK) or filters (how many were closed). */
function killClients (s: ClientCommandHost, cmd: RespCommand): { reply: Buffer, self: boolean } {
  const parsed = parseKill(cmd)
  if (Buffer.isBuffer(parsed)) return { reply: parsed, self: false }
  const victims: ClientCommandHost[] = []
  for (const session of s.context.clients()) {
    const view = session.view()
    if ('old' in parsed ? view.addr === parsed.old : killMatches(view, parsed, s.id)) victims.push(session)
  }
  for (const victim of victims) if (victim !== s) victim.destroy()
  const self = victims.includes(s)
  if ('old' in parsed) return { reply: victims.length > 0 ? OK : errorReply('ERR No such client'), self }
  return { reply: integer(victims.length), self }
}
