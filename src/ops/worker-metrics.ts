import client from 'prom-client'

/**
 * The primary's /metrics with --workers: every worker's registry (as `getMetricsAsJSON`)
 * aggregated with prom-client's AggregatorRegistry (counters and most gauges summed, so
 * `respool_pool_max_connections` is the configured total), plus the primary's own metrics about
 * its workers.
 */
export class WorkerMetrics {
  readonly registry = new client.Registry()
  /** Workers replaced after dying unexpectedly. */
  restarts = 0

  constructor (liveWorkers: () => number) {
    const registers = [this.registry]
    const read = (): number => this.restarts
    new client.Gauge({ name: 'respool_workers', help: 'Worker processes listening (--workers)', registers, collect () { this.set(liveWorkers()) } }) // eslint-disable-line no-new
    let counted = 0
    // Read at scrape time, like the workers' counters.
    new client.Counter({ // eslint-disable-line no-new
      name: 'respool_worker_restarts_total',
      help: 'Worker processes that died unexpectedly and were replaced',
      registers,
      collect () {
        const now = read()
        if (now > counted) this.inc(now - counted)
        else this.inc(0)
        counted = now
      }
    })
  }

  async aggregate (workers: unknown[][]): Promise<{ contentType: string, text: string }> {
    const own = await this.registry.getMetricsAsJSON()
    const aggregated = client.AggregatorRegistry.aggregate([...workers, own] as Array<typeof own>)
    return { contentType: aggregated.contentType, text: await aggregated.metrics() }
  }
}
