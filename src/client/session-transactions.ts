/**
 * MULTI, EXEC, DISCARD, WATCH and UNWATCH for one client. A transaction that arrived whole goes
 * to a shared lane in one write; one still being typed, and WATCH, take a pin of the client's
 * own. Inside MULTI, only what Redis would queue may be sent: what respool answers or refuses
 * itself cannot be queued, and makes EXEC abort.
 */
import type Denque from 'denque'
import { OK, errorReply } from '../protocol/resp-encode.js'
import { classify, Kind, type CommandKind } from '../commands/command-table.js'
import { RespCommand } from '../protocol/resp-command.js'
import type { ReplySlot } from '../routing/reply-slot.js'
import { E_DISCARD, E_EXEC, E_EXEC_ABORTED, E_MULTI, E_UNWATCH, E_WATCH, isInMulti, type Lease, type SessionEffects } from './session-effects.js'
import { LOCAL_CLIENT_SUBCOMMANDS } from './client-subcommands.js'
import type { SessionContext } from './session-context.js'

const DISCARD_COMMAND = new RespCommand(Buffer.from('*1\r\n$7\r\nDISCARD\r\n'), [8, 15])

/** What the transaction commands use of a session (ClientSession). */
export interface TransactionHost {
  readonly context: Pick<SessionContext, 'config'>
  readonly effects: Pick<SessionEffects, 'txnAborted' | 'decidesDb'>
  answerLocally (slot: ReplySlot, reply: Buffer): boolean
  forward (slot: ReplySlot, effect: number, data: number): boolean
  pinFor (slot: ReplySlot, deadlineMs: number | null): boolean
  waitForInflight (): false
  bufferedTransactionEnd (): number
  sendTransaction (end: number): boolean
}

/** Whether Redis can queue this command inside MULTI (respool forwards it unchanged). */
export function queueable (cmd: RespCommand, kind: CommandKind, denied: ReadonlySet<string>): boolean {
  if (cmd.name === 'respool' || denied.has(cmd.name)) return false
  switch (kind) {
    case Kind.SHARED: case Kind.BLOCKING: case Kind.SELECT: case Kind.READONLY: case Kind.READWRITE:
    case Kind.MULTI: case Kind.EXEC: case Kind.DISCARD: case Kind.WATCH: case Kind.UNWATCH:
    case Kind.RESET: case Kind.QUIT:
      return true
    case Kind.CLIENT:
      return !LOCAL_CLIENT_SUBCOMMANDS.has(cmd.keyword(1))
    default:
      return false
  }
}

/**
 * If the pending commands hold a complete transaction (MULTI first, then EXEC or DISCARD)
 * made only of commands Redis simply queues, the index of its EXEC/DISCARD; otherwise -1.
 */
export function bufferedTransactionEnd (pending: Denque<ReplySlot>, maxPipeline: number, denied: ReadonlySet<string>): number {
  const limit = Math.min(pending.length, maxPipeline)
  for (let i = 1; i < limit; i++) {
    const cmd = (pending.peekAt(i) as ReplySlot).command as RespCommand
    const kind = classify(cmd)
    // `EXEC x` is refused by Redis and leaves the transaction open: never on a shared lane.
    if (kind === Kind.EXEC || kind === Kind.DISCARD) return cmd.argc === 1 ? i : -1
    // SELECT inside MULTI changes the lane's database at EXEC, which other clients sharing
    // the lane could not know in time: such a transaction takes a pin.
    if (kind !== Kind.SHARED && kind !== Kind.BLOCKING) return -1
    if (cmd.name === 'respool' || denied.has(cmd.name)) return -1
  }
  return -1
}

export function multi (s: TransactionHost, slot: ReplySlot, cmd: RespCommand, lease: Lease | null): boolean {
  const inMulti = isInMulti(lease)
  // MULTI with arguments is refused by Redis (arity) and opens nothing.
  if (cmd.argc !== 1) return s.forward(slot, 0, 0)
  if (lease === null) {
    // A whole transaction already here goes to a shared lane in one piece; only a
    // transaction still being typed needs a connection of its own.
    const end = s.bufferedTransactionEnd()
    return end > 0 ? s.sendTransaction(end) : s.pinFor(slot, s.context.config.acquireTimeoutMs)
  }
  if (inMulti) return s.forward(slot, 0, 0) // Redis answers "MULTI calls can not be nested"
  return s.forward(slot, E_MULTI, 0)
}

export function execOrDiscard (s: TransactionHost, slot: ReplySlot, cmd: RespCommand, kind: CommandKind, lease: Lease | null): boolean {
  const inMulti = isInMulti(lease)
  if (cmd.argc !== 1) {
    // Redis refuses them (arity). A refused EXEC still ends the transaction and every
    // WATCH (EXECABORT); a refused DISCARD leaves the transaction open.
    return s.forward(slot, kind === Kind.EXEC && lease !== null ? E_DISCARD : 0, 0)
  }
  if (!inMulti) return s.answerLocally(slot, errorReply(`ERR ${cmd.name.toUpperCase()} without MULTI`))
  if (kind === Kind.EXEC && s.effects.txnAborted) {
    // Redis ends the transaction (DISCARD); the client gets the EXECABORT EXEC would give.
    slot.command = DISCARD_COMMAND
    return s.forward(slot, E_EXEC_ABORTED, 0)
  }
  if (!s.forward(slot, kind === Kind.EXEC ? E_EXEC : E_DISCARD, 0)) return false
  // A SELECT ran inside the transaction: its outcome is in EXEC's reply, so the client's
  // next command waits for it (it must run in the database EXEC left).
  if (s.effects.decidesDb(slot)) s.waitForInflight()
  return true
}

export function watch (s: TransactionHost, slot: ReplySlot, cmd: RespCommand, lease: Lease | null): boolean {
  const inMulti = isInMulti(lease)
  if (cmd.argc < 2) return s.forward(slot, 0, 0) // Redis answers the arity error
  if (inMulti) return s.forward(slot, 0, 0) // Redis answers "WATCH inside MULTI is not allowed"
  if (lease === null) return s.pinFor(slot, s.context.config.acquireTimeoutMs)
  return s.forward(slot, E_WATCH, 0)
}

export function unwatch (s: TransactionHost, slot: ReplySlot, cmd: RespCommand, lease: Lease | null): boolean {
  const inMulti = isInMulti(lease)
  if (cmd.argc !== 1) return s.forward(slot, 0, 0)
  if (inMulti) return s.forward(slot, 0, 0) // queued; EXEC unwatches anyway
  if (lease === null) return s.answerLocally(slot, OK)
  return s.forward(slot, E_UNWATCH, 0)
}
