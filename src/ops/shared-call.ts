/**
 * Wraps an async call so that callers arriving while one call runs share its outcome instead of
 * starting another. The primary of --workers uses it for /metrics and /readyz: each scrape asks
 * every worker over IPC, and any number of scrapers at once (HA Prometheus pairs, a dashboard,
 * a probe) then cost the workers one question at a time. (Ten lines: no library needed.)
 */
export function sharedWhileRunning<T> (call: () => Promise<T>): () => Promise<T> {
  let running: Promise<T> | null = null
  return async () => {
    if (running !== null) return await running
    running = call()
    try {
      return await running
    } finally {
      running = null
    }
  }
}
