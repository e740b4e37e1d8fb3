/**
 * Counters the hot path increments as plain fields (no map lookups, no labels). Metrics
 * exporters read them at scrape time. Names follow one grammar: downstream = client side,
 * upstream = Redis side; cx = connections, rq = commands.
 */
export class ProxyStats {
  downstreamCxTotal = 0
  downstreamCxRefused = 0
  downstreamCxProtocolError = 0
  downstreamCxOutputLimit = 0
  downstreamRqTotal = 0
  /** Commands answered with an error because their upstream failed or never came. */
  upstreamRqFailed = 0
  /** Commands whose client left before the reply; the reply was read and dropped. */
  upstreamRqCancelled = 0
}
