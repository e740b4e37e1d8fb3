import { toRespError, type ProxyError } from '../errors.js'
import { InternalSink, ReplySlot } from '../routing/reply-slot.js'
import type { UpstreamConnection } from '../upstream/upstream-connection.js'
import type { ClusterNode } from './cluster-topology.js'

/** What a cluster client's transaction and blocking commands share: replies, redirects, retry bounds. */

export type ClusterReply = (reply: Buffer) => void

export interface Redirect { kind: 'MOVED' | 'ASK', slot: number, node: ClusterNode }

const MINUS = 0x2d
/** Redirects one command may follow (as the dispatcher allows). */
export const MAX_REDIRECTS = 16
export const RETRY_DELAY_MS = 50
export const MAX_RETRIES = 40

export function replySlot (done: ClusterReply): ReplySlot {
  return new ReplySlot(new InternalSink((frame, err) => { done(frame ?? toRespError(err as ProxyError)) }), null)
}

export function dropSlot (): ReplySlot {
  return new ReplySlot(new InternalSink(() => {}), null)
}

/** Stands in for a connection that could not be had: every send is answered `reply` at once. */
export function failedConn (reply: Buffer): UpstreamConnection {
  return {
    send: (_frame: Buffer, slot: ReplySlot) => { slot.sink.onReply(slot, reply) }
  } as unknown as UpstreamConnection
}

export function startsWith (frame: Buffer, prefix: string): boolean {
  return frame.length >= prefix.length && frame.toString('latin1', 0, prefix.length) === prefix
}

/** -MOVED/-ASK <slot> <host>:<port> (an empty host means the node that answered's). */
export function parseRedirect (reply: Buffer, topology: { node (host: string, port: number): ClusterNode }): Redirect | null {
  if (reply[0] !== MINUS) return null
  const m = /^-(MOVED|ASK) (\d+) (\S*):(\d+)\r\n/.exec(reply.toString('latin1', 0, Math.min(reply.length, 300)))
  return m === null ? null : { kind: m[1] as 'MOVED' | 'ASK', slot: Number(m[2]), node: topology.node(m[3] === '' ? '127.0.0.1' : m[3], Number(m[4])) }
}
