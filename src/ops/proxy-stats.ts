import { Kind } from '../commands/command-table.js'

/** Names of pin reasons, in bit order (R_MULTI = 1 << 0 …), for stats and admin output. */
export const PIN_REASONS = ['multi', 'watch', 'blocking', 'subscribed', 'monitor', 'tracking'] as const

/** Names of command classes, indexed by Kind. */
export const COMMAND_CLASSES: readonly string[] = (() => {
  const names: string[] = []
  for (const [name, value] of Object.entries(Kind)) names[value] = name.toLowerCase()
  return names
})()

/**
 * Counters the hot path increments as plain fields and arrays (no map lookups, no labels).
 * Metrics exporters read them at scrape time. Names follow one grammar: downstream = client
 * side, upstream = Redis side; cx = connections, rq = commands.
 */
export class ProxyStats {
  downstreamCxTotal = 0
  /** Refused because --max-clients was reached. */
  downstreamCxRefused = 0
  downstreamCxProtocolError = 0
  /** Disconnected for passing --max-output-buffer. */
  downstreamCxOutputLimit = 0
  /** Times respool stopped reading from a client at --max-pipeline. */
  downstreamRqPipelineLimit = 0
  downstreamRqTotal = 0
  /** Blocking commands parked inside respool (they waited without a connection). */
  downstreamRqParked = 0
  /** Commands by class (index: Kind). */
  readonly downstreamRqByClass = new Array<number>(COMMAND_CLASSES.length).fill(0)
  /** Commands answered with an error because their upstream failed or never came, by error code. */
  readonly upstreamRqFailedByCode = new Map<string, number>()
  /** Commands Redis did not run (-READONLY, -MASTERDOWN, -LOADING, or never written before their connection closed) that were sent again. */
  upstreamRqRetried = 0
  /** Commands whose client left before the reply; the reply was read and dropped. */
  upstreamRqCancelled = 0
  /** Pins taken, by reason (index: bit position of the R_* flag). */
  readonly pinsByReason = new Array<number>(PIN_REASONS.length).fill(0)

  get upstreamRqFailed (): number {
    let n = 0
    for (const v of this.upstreamRqFailedByCode.values()) n += v
    return n
  }

  countFailure (code: string): void {
    this.upstreamRqFailedByCode.set(code, (this.upstreamRqFailedByCode.get(code) ?? 0) + 1)
  }
}
