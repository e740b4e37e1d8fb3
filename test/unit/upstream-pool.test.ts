import { test } from 'node:test'
import assert from 'node:assert/strict'
import { Worker } from 'node:worker_threads'
import { once } from 'node:events'

/**
 * Runs `body` (the text of an async function given the upstream-pool and config modules) in a
 * worker thread: a bug that spins the worker's event loop would also starve any timer of this
 * test's own, so the deadline is enforced from this thread, which stays free.
 */
async function inWorker (body: string, deadlineMs: number): Promise<string> {
  const pool = new URL('../../src/upstream/upstream-pool.js', import.meta.url).href
  const config = new URL('../../src/config.js', import.meta.url).href
  const logger = new URL('../../src/ops/logger.js', import.meta.url).href
  const topology = new URL('../../src/upstream/standalone-topology.js', import.meta.url).href
  const worker = new Worker(`
    const { parentPort } = require('node:worker_threads')
    Promise.all([import(${JSON.stringify(pool)}), import(${JSON.stringify(config)}), import(${JSON.stringify(logger)}), import(${JSON.stringify(topology)})])
      .then(([{ UpstreamPool }, { validateConfig }, { silentLogger }, { StandaloneTopology }]) => (async (UpstreamPool, validateConfig, silentLogger, StandaloneTopology) => { ${body} })(UpstreamPool, validateConfig, silentLogger, StandaloneTopology))
      .then((result) => parentPort.postMessage(String(result)), (err) => parentPort.postMessage('error: ' + err.stack))
  `, { eval: true })
  const timer = setTimeout(() => { void worker.terminate() }, deadlineMs)
  try {
    const [message] = await Promise.race([once(worker, 'message'), once(worker, 'exit').then(() => ['no answer within the deadline (worker terminated)'])])
    return message as string
  } finally {
    clearTimeout(timer)
    await worker.terminate()
  }
}

test('close() while an acquire is waiting and a reconnect backoff is sleeping returns promptly (no retry loop)', { timeout: 30000 }, async (t) => {
  const result = await inWorker(`
    // Every connect fails; the second attempt sleeps in backoff for ten seconds.
    const config = validateConfig({ upstream: 'redis://127.0.0.1:1', poolSize: 2, acquireTimeoutMs: 20000, reconnectBaseMs: 10000, reconnectMaxMs: 10000 })
    let attempts = 0
    const pool = new UpstreamPool(config, silentLogger(), new StandaloneTopology(config.upstream, silentLogger()), async () => { attempts++; throw new Error('refused') })
    const waiting = pool.acquire().then(() => 'acquired', (err) => 'acquire failed: ' + err.message)
    while (pool.counters.connectFailures === 0) await new Promise((resolve) => setTimeout(resolve, 5))
    if (pool.stats.waiting !== 1) return 'setup: expected one waiting acquire, got ' + pool.stats.waiting
    const started = Date.now()
    await pool.close()
    return 'closed in ' + (Date.now() - started) + ' ms after ' + attempts + ' attempt(s); ' + await waiting
  `, 15000)
  assert.match(result, /^closed in \d+ ms after 1 attempt\(s\); acquire failed: /)
  const ms = Number(/closed in (\d+) ms/.exec(result)?.[1])
  t.diagnostic(`close() took ${ms} ms`)
  // Well short of the backoff: close() did not wait for it.
  assert.ok(ms < 5000, `close() took ${ms} ms`)
})
