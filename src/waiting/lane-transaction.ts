import { ReplySlot, InternalSink } from '../routing/reply-slot.js'
import { syncLaneState } from '../routing/lane-state.js'
import { elements } from './parkable.js'
import type { ParkingUpstream } from './parking-upstream.js'
import type { ProxyError } from '../errors.js'

const MINUS = 0x2d

/**
 * Runs commands as one MULTI … EXEC on a shared lane in database `db` and protocol `resp`, and
 * calls back with each command's own reply: its element of EXEC's reply, or the error Redis gave
 * instead of queueing it. Inside MULTI a blocking command never blocks, so this is an exact,
 * atomic, non-blocking try of a client's BLPOP, with the reply bytes Redis would send that
 * client. The block is written in one go, so no other command lands inside it.
 */
export function runOnLane (router: ParkingUpstream, db: number, resp: 2 | 3, frames: Buffer[],
  done: (replies: Buffer[] | null, err: ProxyError | null) => void): void {
  const lane = router.pickLane(db, resp)
  if (lane === null) {
    router.waitForLane({
      laneReady: () => { runOnLane(router, db, resp, frames, done) },
      laneFailed: (err) => { done(null, err) }
    })
    return
  }
  syncLaneState(lane, db, resp)
  const queued: Array<Buffer | null> = frames.map(() => null)
  lane.sendInternal(['MULTI'], () => {})
  frames.forEach((frame, i) => {
    lane.send(frame, new ReplySlot(new InternalSink((reply) => { queued[i] = reply }), null))
  })
  // What the transaction took (a parked client's element) is read even when the connection is
  // left for a new master at that moment: lost with the connection, it could not be put back.
  lane.sendInternal(['EXEC'], (reply, err) => {
    if (err !== null || reply === null) {
      done(null, err)
      return
    }
    const results = elements(reply)
    done(frames.map((_, i) => {
      const q = queued[i]
      if (q !== null && q[0] === MINUS) return q // refused while queueing (arity, unknown …)
      return results?.[i] ?? reply // EXEC itself failed (EXECABORT): that is the answer
    }), null)
  }, true)
}
