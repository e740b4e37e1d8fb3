import type { RespCommand } from '../protocol/resp-command.js'
import type { ProxyError } from '../errors.js'

/** A reply source that can stop reading for a while. */
export interface Pausable {
  pauseReading (): void
  resumeReading (): void
  /** Commands on the connection not answered yet (the streaming reply's included). */
  readonly inflight: number
  /**
   * Stops reading while the reply being streamed is the connection's only command; any command
   * written to it meanwhile ends the pause at once (it must not wait behind a slow reader).
   */
  pauseWhileAlone (): void
  /** Ends a pauseWhileAlone (nothing if a command already ended it). */
  endAlonePause (): void
}

/** Whoever waits for a reply: a client session, or the proxy itself for its own commands. */
export interface ReplySink {
  /**
   * The reply arrived; `frame` is its exact bytes (a view that stays valid), or, when `transient`
   * (only for a sink that `takesTransient`), a view valid only during the call: copy to keep it.
   */
  onReply (slot: ReplySlot, frame: Buffer, transient?: boolean): void
  /** The sink accepts transient frames (it copies what it keeps); others always get frames to keep. */
  readonly takesTransient?: boolean
  /**
   * A piece of a large reply, in order (`done` on the last). `source` may be paused while the
   * pieces cannot be passed on (backpressure). `transient` as for onReply (only for a sink that
   * `takesTransient`).
   */
  onReplyPart (slot: ReplySlot, piece: Buffer, done: boolean, source: Pausable, transient?: boolean): void
  /** The command's outcome is unknown or it never ran; the sink must answer with an error. */
  onFailure (slot: ReplySlot, err: ProxyError): void
  /**
   * Redis provably did not run the command: it refused it (`refusal`: -READONLY, -MASTERDOWN,
   * -LOADING), or its bytes never left respool before the connection closed (`refusal` null).
   * Returns true if the sink takes it back to send again (the refusal is then not delivered);
   * false to have the refusal delivered as Redis sent it (or the failure, when never written).
   */
  retryElsewhere? (slot: ReplySlot, conn: object, refusal: Buffer | null): boolean
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
  /** The reply is not sent to the client (CLIENT REPLY OFF/SKIP); the command still runs. */
  suppressed = false
  /** Only an error reply is held back (pub/sub confirmations under CLIENT REPLY OFF/SKIP). */
  errorsSuppressed = false
  /** What the owner must do when the reply arrives (an owner-defined code; 0 = nothing). */
  effect = 0
  /** A number the effect needs (the db a SELECT switches to …). */
  data = 0
  /** What the effect replaced, to restore if Redis refuses the command (the db before SELECT …). */
  prior = 0
  /**
   * Pub/sub confirmations this command's reply is made of (SUBSCRIBE a b → 2); -1 = one per
   * current subscription, counted when the first arrives. 0 for ordinary commands.
   */
  confirmations = 0
  /** Frames collected so far for a multi-frame reply. */
  parts: Buffer[] | null = null
  /** When the command was accepted (performance.now()), for the latency histogram. */
  acceptedAt = 0
  /** A large reply is being written straight through to the client, piece by piece. */
  streamed = false
  /** Pieces of a large reply held until earlier replies have been written. */
  pieces: Buffer[] | null = null
  /** The first bytes of a streamed reply (effects look at the reply's type). */
  lead: Buffer | null = null
  /** Times it was sent again (a refusal, or never written before its connection closed). */
  retries = 0
  /** A plain shared-lane command its client may have sent again (set by the client's session). */
  retryable = false
  /** The client's database and protocol when it was sent (db * 4 + resp): a retry needs the same. */
  sentIn = 0
  /** The refusal Redis gave it last (forwarded if it is not sent again after all). */
  refusal: Buffer | null = null
  /** Where its bytes end in its connection's output (to tell what never left respool). */
  writeEnd = 0
  /** Redis said this client's ACL user may run it (CLIENT KILL/UNBLOCK acted on by respool). */
  permitted = false
  /** Its client's replies are large: its lane counts as busy until it leaves (heavyInflight). */
  heavy = false
  /**
   * Its reply is read even when its connection leaves a master that may still accept writes
   * (UpstreamConnection.retire): what it took from Redis (a parked client's element) would be
   * lost with the connection, and is worth more delivered than failed.
   */
  keepOnRetire = false

  constructor (
    readonly sink: ReplySink,
    /** The command; replaced when respool rewrites it (a blocking timeout shortened by the wait). */
    public command: RespCommand | null
  ) {}
}

/** A sink for the proxy's own commands (handshake, state changes): calls back with the reply. */
export class InternalSink implements ReplySink {
  #pieces: Buffer[] = []

  constructor (private readonly callback: (frame: Buffer | null, err: ProxyError | null) => void) {}

  onReply (_slot: ReplySlot, frame: Buffer): void {
    this.callback(frame, null)
  }

  onReplyPart (_slot: ReplySlot, piece: Buffer, done: boolean): void {
    this.#pieces.push(piece)
    if (done) this.callback(Buffer.concat(this.#pieces), null)
  }

  onFailure (_slot: ReplySlot, err: ProxyError): void {
    this.callback(null, err)
  }
}
