import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { waitFor } from '../helpers/wait.js'

/**
 * Clients whose replies identify them pipeline commands while Redis is killed and restarted
 * and random clients are killed. Every reply must be the client's own or an error (no
 * cross-talk), every pipeline must settle in bounded time (no hang), and every acknowledged
 * write must be there afterwards (Redis runs with appendfsync always, so acknowledged means
 * durable).
 */
const CLIENTS = 24
const DURATION_MS = 20_000
const SETTLE_MS = 6_000 // command timeout + acquire timeout + slack

interface Ledger {
  ackedIncrs: number
  attemptedIncrs: number
  /** The last SET acknowledged (-1: none yet). */
  lastAckedSet: number
  /** SETs sent since, whose outcome is unknown (an error, a lost connection): each may or may not have run. */
  unknownSets: number[]
}

/**
 * The values the client's key may hold: the one its last acknowledged SET wrote (the client is
 * its only writer, and with appendfsync always an acknowledged write survives a restart), or
 * one that a later SET of unknown outcome wrote; nothing at all only if no SET was ever
 * acknowledged.
 */
function allowedValues (id: number, l: Ledger): Array<string | null> {
  const values: Array<string | null> = l.unknownSets.map((seq) => `${id}:${seq}`)
  values.push(l.lastAckedSet >= 0 ? `${id}:${l.lastAckedSet}` : null)
  return values
}

function client (port: number): Redis {
  const c = new Redis({ port, host: '127.0.0.1', maxRetriesPerRequest: 0, enableOfflineQueue: false, autoResubscribe: false, retryStrategy: () => null, lazyConnect: true })
  c.on('error', () => {})
  return c
}

test('chaos: Redis restarts and clients die while everyone pipelines; no cross-talk, no hang, no acknowledged write lost', { timeout: 60000 }, async () => {
  const redis = await startRedis(['--appendonly', 'yes', '--appendfsync', 'always'])
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 4, commandTimeoutMs: 2000, acquireTimeoutMs: 1000, connectTimeoutMs: 500, reconnectMaxMs: 100 })
  after(async () => { await proxy.destroy() })

  const ledgers: Ledger[] = Array.from({ length: CLIENTS }, () => ({ ackedIncrs: 0, attemptedIncrs: 0, lastAckedSet: -1, unknownSets: [] }))
  const crossTalk: string[] = []
  let hangs = 0
  let okReplies = 0
  let errorReplies = 0
  let running = true
  const live = new Set<Redis>()

  async function worker (id: number): Promise<void> {
    let seq = 0
    while (running) {
      const c = client(proxy.address.port)
      live.add(c)
      try {
        await c.connect()
      } catch {
        live.delete(c)
        continue
      }
      while (running && c.status === 'ready') {
        seq++
        const ledger = ledgers[id]
        ledger.attemptedIncrs++
        const p = c.pipeline().set(`k:${id}`, `${id}:${seq}`).get(`k:${id}`).echo(`${id}:${seq}`).incr(`n:${id}`)
        const settled = await Promise.race([
          p.exec().then((r) => r ?? [], (err: Error) => [[err, null]] as Array<[Error | null, unknown]>),
          new Promise<null>((resolve) => setTimeout(() => resolve(null), SETTLE_MS))
        ])
        if (settled === null) { hangs++; ledger.unknownSets.push(seq); break }
        if (settled.length === 4) {
          const [[setErr, setOk], [getErr, got], [echoErr, echoed], [incrErr, count]] = settled
          if (setErr === null && setOk === 'OK') {
            ledger.lastAckedSet = seq
            ledger.unknownSets = []
          } else {
            if (setErr === null) crossTalk.push(`SET got ${String(setOk)}`)
            ledger.unknownSets.push(seq)
          }
          if (getErr === null) {
            // Right after an acknowledged SET on the same connection the GET sees exactly that
            // value; after a failed one, whichever value the key may hold.
            const allowed = setErr === null ? [`${id}:${seq}`] : allowedValues(id, ledger)
            if (!allowed.includes(got as string | null)) crossTalk.push(`client ${id} GET got ${String(got)}, allowed ${JSON.stringify(allowed)}`)
          }
          if (echoErr === null && echoed !== `${id}:${seq}`) crossTalk.push(`client ${id} ECHO got ${String(echoed)}`)
          if (incrErr === null) { if (typeof count !== 'number') crossTalk.push(`INCR got ${String(count)}`); else ledger.ackedIncrs++ }
          for (const [err] of settled) { if (err === null) okReplies++; else errorReplies++ }
        } else {
          // The client library refused the whole pipeline (its connection is going away):
          // start over with a new connection. Whether the SET ran is unknown.
          ledger.unknownSets.push(seq)
          errorReplies++
          break
        }
        // Let timers run even when replies come back within the same tick.
        await new Promise((resolve) => setImmediate(resolve))
      }
      live.delete(c)
      c.disconnect()
    }
  }

  const workers = Array.from({ length: CLIENTS }, async (_, id) => { await worker(id) })
  const chaos = (async () => {
    const started = Date.now()
    let round = 0
    while (Date.now() - started < DURATION_MS) {
      await new Promise((resolve) => setTimeout(resolve, 500))
      round++
      // Kill two random clients abruptly.
      const victims = [...live].sort(() => Math.random() - 0.5).slice(0, 2)
      for (const v of victims) v.disconnect()
      // Every fourth round, kill Redis and bring it back shortly after.
      if (round % 4 === 0) {
        await redis.kill()
        await new Promise((resolve) => setTimeout(resolve, 200 + (round % 3) * 100))
        await redis.restart()
      }
    }
    running = false
  })()
  await chaos
  await Promise.all(workers)

  assert.deepEqual(crossTalk, [], 'no reply reached the wrong client')
  assert.equal(hangs, 0, 'no pipeline hung')
  assert.ok(okReplies > 1000, `enough traffic got through (${okReplies} ok, ${errorReplies} errors)`)
  assert.ok(errorReplies > 0, 'the chaos was real: some commands failed')

  // Every acknowledged write is there.
  const check = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  after(() => { check.disconnect() })
  await waitFor(async () => (await check.ping().catch(() => '')) === 'PONG', 'redis back', 5000)
  for (let id = 0; id < CLIENTS; id++) {
    const l = ledgers[id]
    const count = Number(await check.get(`n:${id}`) ?? 0)
    assert.ok(count >= l.ackedIncrs && count <= l.attemptedIncrs, `client ${id}: counter ${count}, acked ${l.ackedIncrs}, attempted ${l.attemptedIncrs}`)
    const value = await check.get(`k:${id}`)
    assert.ok(allowedValues(id, l).includes(value), `client ${id}: value ${String(value)}, allowed ${JSON.stringify(allowedValues(id, l))}`)
  }
  assert.ok(proxy.pool.stats.size <= 4)
})
