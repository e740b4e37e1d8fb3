/**
 * A blocking command of one client (BLPOP, BLMOVE, XREAD BLOCK, WAIT …) in standalone mode:
 * parked inside respool without a connection when it can be (--park-blocking), otherwise on a
 * pin of the client's own, with the wait for that pin counted against the command's timeout.
 */
import { blockingTimeoutMs, timeoutReply, withTimeout } from '../commands/blocking.js'
import { parkable, type Parkable } from '../waiting/parkable.js'
import type { RespCommand } from '../protocol/resp-command.js'
import type { ReplySlot } from '../routing/reply-slot.js'
import type { SessionState } from './session-state.js'
import { E_BLOCKING, R_MULTI, type Lease } from './session-effects.js'
import type { SessionContext } from './session-context.js'

/** What a blocking command uses of a session (ClientSession). */
export interface BlockingHost {
  readonly state: SessionState
  readonly context: Pick<SessionContext, 'config' | 'parking'>
  readonly hasIdentity: boolean
  answerLocally (slot: ReplySlot, reply: Buffer): boolean
  forward (slot: ReplySlot, effect: number, data: number): boolean
  pinFor (slot: ReplySlot, deadlineMs: number | null): boolean
  /** Parks the head pending command inside respool (the parking lot answers it). */
  park (slot: ReplySlot, cmd: RespCommand, what: Parkable, timeoutMs: number): boolean
  /** How long the pin now held was waited for, if it was requested for this command (once); otherwise -1. */
  pinWaitedMs (slot: ReplySlot): number
  maybeReleaseLease (): void
}

export function blockingCommand (s: BlockingHost, slot: ReplySlot, cmd: RespCommand, lease: Lease | null): boolean {
  const timeoutMs = blockingTimeoutMs(cmd)
  // An ACL user's commands run only on its own connections: it blocks on a pin of its own.
  if (lease === null && timeoutMs !== null && s.context.parking !== null && !s.hasIdentity) {
    const what = parkable(cmd)
    if (what !== null) return s.park(slot, cmd, what, timeoutMs)
  }
  if (lease === null) {
    // The wait for a pin counts against the command's own timeout; 0 (forever) waits forever.
    return s.pinFor(slot, timeoutMs !== null && timeoutMs > 0 ? timeoutMs : (timeoutMs === 0 ? null : s.context.config.acquireTimeoutMs))
  }
  if ((lease.reasons & R_MULTI) !== 0) return s.forward(slot, 0, 0) // queued, does not block
  const waited = s.pinWaitedMs(slot)
  if (waited >= 0 && timeoutMs !== null && timeoutMs > 0 && waited >= 5) {
    if (waited >= timeoutMs) {
      s.answerLocally(slot, timeoutReply(s.state.resp))
      s.maybeReleaseLease()
      return true
    }
    slot.command = withTimeout(cmd, timeoutMs - waited)
  }
  return s.forward(slot, E_BLOCKING, 0)
}
