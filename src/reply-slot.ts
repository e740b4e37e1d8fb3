import type { RespCommand } from './resp-command.js'
import type { ProxyError } from './errors.js'

/** Whoever waits for a reply: a client session, or the proxy itself for its own commands. */
export interface ReplySink {
  /** The reply arrived; `frame` is its exact bytes (a view that stays valid). */
  onReply (slot: ReplySlot, frame: Buffer): void
  /** The command's outcome is unknown or it never ran; the sink must answer with an error. */
  onFailure (slot: ReplySlot, err: ProxyError): void
}

/**
 * The place a command's reply will fill. A client session keeps its slots in send order and
 * writes replies from the head, so a fast reply never overtakes a slow one; an upstream
 * connection keeps the slots it has written in its inflight FIFO.
 */
export class ReplySlot {
  /** The reply bytes once known (from Redis, or made by the proxy). */
  reply: Buffer | null = null
  /** The owner went away: the reply is read and dropped (never delivered to anyone else). */
  cancelled = false
  /** Time the command was accepted (performance.now()), for latency accounting. */
  readonly acceptedAt: number

  constructor (
    readonly sink: ReplySink,
    readonly command: RespCommand | null,
    /** What the owner must do when the reply arrives (an owner-defined code; 0 = nothing). */
    readonly effect: number = 0,
    acceptedAt = 0
  ) {
    this.acceptedAt = acceptedAt
  }
}

/** A sink for the proxy's own commands (handshake, state changes): calls back with the reply. */
export class InternalSink implements ReplySink {
  constructor (private readonly callback: (frame: Buffer | null, err: ProxyError | null) => void) {}

  onReply (_slot: ReplySlot, frame: Buffer): void {
    this.callback(frame, null)
  }

  onFailure (_slot: ReplySlot, err: ProxyError): void {
    this.callback(null, err)
  }
}
