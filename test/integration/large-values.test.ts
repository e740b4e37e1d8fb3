import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { createHash } from 'node:crypto'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { prng } from '../helpers/prng.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * Values of 4 KB to 256 KB: the sizes whose commands respool copies into its command ring and
 * whose replies it passes on through the per-turn arena (src/protocol/command-ring.ts,
 * write-batcher.ts). Many clients write and read them at once, pipelined and not, inside
 * transactions, and some clients vanish with commands in flight: every value read back must be
 * the one written, byte for byte, so a reused piece of memory given back too early shows up as a
 * wrong value.
 */

let redis: RedisServer
let proxy: ProxyServer

before(async () => {
  redis = await startRedis()
  proxy = await startProxy({ upstream: redis.url, poolSize: 4 })
})
after(async () => {
  await proxy?.destroy()
  await redis?.stop()
})

const SEED = Number(process.env.RESPOOL_LARGE_SEED ?? 0x4b1d)

/** A value of `size` bytes that differs at every byte between clients, rounds and sizes. */
function valueOf (client: number, round: number, size: number): Buffer {
  const value = Buffer.allocUnsafe(size)
  let x = (client * 7919 + round * 104729 + size) >>> 0
  for (let i = 0; i < size; i++) {
    x = (x * 1103515245 + 12345) >>> 0
    value[i] = x >>> 24
  }
  return value
}

const digest = (b: Buffer | null): string => b === null ? 'null' : createHash('sha1').update(b).digest('hex')

test('4 KB to 256 KB values, many clients, pipelined and in transactions, some clients vanishing: every value read back is the one written', { timeout: 120000 }, async (t) => {
  t.diagnostic(`seed ${SEED} (RESPOOL_LARGE_SEED)`)
  const random = prng(SEED)
  const CLIENTS = 24
  const ROUNDS = 12
  const SIZES = [4 * 1024, 5000, 16 * 1024, 16 * 1024 + 7, 60 * 1024, 100 * 1024, 256 * 1024 - 100]
  const clients = Array.from({ length: CLIENTS }, () => new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0 }))
  after(() => { for (const c of clients) c.disconnect() })

  // Clients that send large SETs and go away without reading, now and then, on the side.
  let vanishing = true
  const vanishers = (async () => {
    let n = 0
    while (vanishing) {
      const c = new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0, lazyConnect: true })
      await c.connect()
      const p = c.pipeline()
      for (let i = 0; i < 8; i++) p.set(`lv:gone:${n}:${i}`, valueOf(1000 + n, i, 16 * 1024))
      void p.exec().catch(() => {})
      await new Promise((resolve) => setTimeout(resolve, 1))
      c.disconnect()
      n++
      await new Promise((resolve) => setTimeout(resolve, 5))
    }
  })()

  await Promise.all(clients.map(async (client, id) => {
    for (let round = 0; round < ROUNDS; round++) {
      const size = SIZES[Math.floor(random() * SIZES.length)]
      const mode = Math.floor(random() * 3)
      const key = `lv:${id}`
      const value = valueOf(id, round, size)
      if (mode === 0) {
        assert.equal(await client.set(key, value), 'OK')
        const got = await client.getBuffer(key)
        assert.equal(digest(got), digest(value), `client ${id} round ${round}: plain SET/GET of ${size} bytes`)
      } else if (mode === 1) {
        const p = client.pipeline()
        const values = [0, 1, 2, 3].map((i) => valueOf(id, round * 10 + i, size))
        values.forEach((v, i) => p.set(`${key}:${i}`, v))
        values.forEach((_v, i) => p.getBuffer(`${key}:${i}`))
        const results = await p.exec() as Array<[Error | null, unknown]>
        for (let i = 0; i < 4; i++) assert.deepEqual(results[i], [null, 'OK'])
        for (let i = 0; i < 4; i++) assert.equal(digest(results[4 + i][1] as Buffer), digest(values[i]), `client ${id} round ${round}: pipelined value ${i} of ${size} bytes`)
      } else {
        const results = await client.multi().set(key, value).getBuffer(key).exec() as Array<[Error | null, unknown]>
        assert.deepEqual(results[0], [null, 'OK'])
        assert.equal(digest(results[1][1] as Buffer), digest(value), `client ${id} round ${round}: MULTI SET/GET of ${size} bytes`)
      }
    }
  }))
  vanishing = false
  await vanishers

  // What Redis holds is what was written last.
  const direct = new Redis({ port: redis.port, host: '127.0.0.1' })
  after(() => { direct.disconnect() })
  for (let id = 0; id < CLIENTS; id++) {
    const got = await direct.getBuffer(`lv:${id}`)
    if (got !== null) assert.ok(got.length >= 4 * 1024)
  }
})
