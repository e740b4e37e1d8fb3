import { toRespError, type ProxyError } from '../errors.js'
import { InternalSink, ReplySlot } from '../routing/reply-slot.js'
import type { ClusterPins } from './cluster-pins.js'
import type { ClusterNode } from './cluster-topology.js'
import { startsWith, type ClusterReply } from './cluster-replies.js'

const MINUS = 0x2d

/**
 * SCRIPT KILL and FUNCTION KILL in cluster mode. A runaway script keeps one master busy: every
 * command for its slots is answered -BUSY, and the shared lane to that master is stuck behind the
 * script (Redis reads nothing more from the script's own connection until it ends). Redis 7 tips
 * both commands request_policy:all_shards, response_policy:one_succeeded, so the kill goes to
 * every master at once, each on a pinned connection with nothing in flight (within the pool
 * bound, waiting at most `acquireTimeoutMs` for one), and `done` gets:
 * - `+OK` when any master killed its script;
 * - else the first error other than -NOTBUSY (-UNKILLABLE: the script wrote, only SHUTDOWN
 *   NOSAVE ends it; or no connection to that master), which says more than a master that was
 *   idle;
 * - else the first master's -NOTBUSY, as one idle Redis answers.
 */
export function killScriptsEverywhere (frame: Buffer, masters: ClusterNode[], pins: ClusterPins, acquireTimeoutMs: number, done: ClusterReply): void {
  const replies = new Array<Buffer>(masters.length)
  let left = masters.length
  const answered = (i: number, reply: Buffer): void => {
    replies[i] = reply
    if (--left === 0) done(oneSucceeded(replies))
  }
  masters.forEach((node, i) => {
    pins.acquire(() => node, acquireTimeoutMs).promise.then((pin) => {
      pin.conn.send(frame, new ReplySlot(new InternalSink((reply, err) => {
        // The kill changes nothing on the connection: it goes back as it came, unless it failed.
        pins.release(pin, err === null ? 'clean' : 'destroy')
        answered(i, reply ?? toRespError(err as ProxyError))
      }), null))
    }, (err: ProxyError) => { answered(i, toRespError(err)) })
  })
}

function oneSucceeded (replies: Buffer[]): Buffer {
  return replies.find((r) => r[0] !== MINUS) ?? replies.find((r) => !startsWith(r, '-NOTBUSY')) ?? replies[0]
}
