import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startBoundedRedis, type BoundedRedis } from '../helpers/bounded-redis.js'
import { startProxy } from '../helpers/proxy.js'
import type { ProxyServer } from '../../src/proxy-server.js'

let bounded: BoundedRedis
let proxy: ProxyServer
const POOL_SIZE = 4

before(async () => {
  // Redis itself refuses a connection beyond the pool and the test's one admin connection.
  bounded = await startBoundedRedis(POOL_SIZE + 1)
  // No idle connection is closed and replaced during the run: Redis may not have freed a
  // closed one yet when its replacement arrives, which is not a connection more.
  proxy = await startProxy({ upstream: bounded.redis.url, poolSize: POOL_SIZE, upstreamIdleTimeoutMs: 600_000 })
})
after(async () => {
  await proxy?.destroy()
  await bounded?.stop()
})

test('500 concurrent pipelining clients each get their own values, in order, over at most --pool-size upstream connections', { timeout: 60000 }, async () => {
  const CLIENTS = 500
  const ROUNDS = 20
  const clients = Array.from({ length: CLIENTS }, () => new Redis({ port: proxy.address.port, host: '127.0.0.1', lazyConnect: true, maxRetriesPerRequest: 0, enableOfflineQueue: false }))
  after(() => { for (const c of clients) c.disconnect() })
  await Promise.all(clients.map(async (c) => { await c.connect() }))
  assert.equal(proxy.clientCount, CLIENTS)

  let maxSeen = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      maxSeen = Math.max(maxSeen, await bounded.upstreamConnections())
      await new Promise((resolve) => setTimeout(resolve, 25)) // a sample now and then, for the report; Redis enforces the bound
    }
  })()

  await Promise.all(clients.map(async (client, id) => {
    for (let round = 0; round < ROUNDS; round++) {
      // One pipeline per round: SET then GET of this client's own key, plus a counter.
      const pipeline = client.pipeline()
      pipeline.set(`c:${id}`, `v:${id}:${round}`)
      pipeline.get(`c:${id}`)
      pipeline.incr(`n:${id}`)
      pipeline.echo(`e:${id}:${round}`)
      const results = await pipeline.exec()
      assert.deepEqual(results, [[null, 'OK'], [null, `v:${id}:${round}`], [null, round + 1], [null, `e:${id}:${round}`]])
    }
  }))
  sampling = false
  await sampler
  assert.ok(maxSeen >= 1 && maxSeen <= POOL_SIZE, `upstream connections seen: ${maxSeen}`)
  assert.ok(proxy.pool.stats.size <= POOL_SIZE)
  await bounded.assertNoneRejected()
})

test('read-your-writes holds for a pipelining client while others load the pool', { timeout: 30000 }, async () => {
  const noise = Array.from({ length: 20 }, () => new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0 }))
  const client = new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0, enableAutoPipelining: true })
  after(() => { client.disconnect(); for (const n of noise) n.disconnect() })
  let loading = true
  const load = Promise.all(noise.map(async (n, i) => {
    while (loading) await n.mset(`noise:${i}`, 'x'.repeat(1000), `noise2:${i}`, 'y')
  }))
  // Autopipelining sends each batch in one write; every GET must see the SET before it.
  for (let round = 0; round < 50; round++) {
    const ops: Array<Promise<unknown>> = []
    for (let i = 0; i < 50; i++) {
      ops.push(client.set('ryw', `${round}:${i}`))
      ops.push(client.get('ryw').then((v) => { assert.equal(v, `${round}:${i}`) }))
      ops.push(client.incr('ryw:count'))
    }
    await Promise.all(ops)
  }
  loading = false
  await load
  assert.equal(await client.get('ryw:count'), '2500')
  await bounded.assertNoneRejected()
})
