import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as delay } from 'node:timers/promises'
import { createClient, MultiErrorReply, WatchError } from 'redis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { startBoundedRedis } from '../helpers/bounded-redis.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// node-redis v6 (package `redis`): a real client nobody here wrote, through respool.
// Note: node-redis v6 defaults to RESP3 (DEFAULT_RESP = 3), so both versions are asked for
// explicitly rather than relying on the default.

let redis: RedisServer
let proxy: ProxyServer
const POOL_SIZE = 4

// Loosely typed on purpose: the RESP generic changes reply types per version and the tests
// below run the same code for both.
type Client = ReturnType<typeof createClient<any, any, any, 2 | 3, any>>

const clients = new Set<Client>()
const clientErrors: Error[] = []

before(async () => {
  redis = await startRedis()
  proxy = await startProxy({ upstream: redis.url, poolSize: POOL_SIZE })
})
after(async () => {
  for (const c of clients) {
    try { c.destroy() } catch {}
  }
  await proxy?.destroy()
  await redis?.stop()
})

function proxyUrl (db?: number): string {
  return `redis://127.0.0.1:${proxy.address.port}${db === undefined ? '' : `/${db}`}`
}

async function connect (url: string, resp: 2 | 3): Promise<Client> {
  const client = createClient({
    url,
    RESP: resp,
    socket: { reconnectStrategy: false, connectTimeout: 5000 }
  }) as Client
  client.on('error', (err: Error) => { clientErrors.push(err) })
  clients.add(client)
  await client.connect()
  return client
}

async function close (...cs: Client[]): Promise<void> {
  for (const c of cs) {
    clients.delete(c)
    if (c.isOpen) await c.close()
  }
}

/** A direct connection to the upstream Redis, for checking what respool did. */
async function direct (db = 0): Promise<Client> {
  return await connect(`${redis.url}/${db}`, 2)
}

/** Polls until `cond` holds or the deadline passes. */
async function until (cond: () => Promise<boolean> | boolean, what: string, timeoutMs = 5000): Promise<void> {
  const deadline = Date.now() + timeoutMs
  while (!(await cond())) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`)
    await delay(10)
  }
}

/** A string reply as text, whether the client decoded it as a string or a Buffer. */
function text (reply: unknown): string {
  if (Buffer.isBuffer(reply)) return reply.toString('utf8')
  assert.equal(typeof reply, 'string')
  return reply as string
}

/** Clients Redis reports as blocked (BLPOP, …). */
async function blockedClients (admin: Client): Promise<number> {
  const info = String(await admin.info('clients'))
  const m = /blocked_clients:(\d+)/.exec(info)
  return m === null ? 0 : Number(m[1])
}

/** Subscriber connections Redis knows about for `channel`. */
async function numsub (admin: Client, channel: string): Promise<number> {
  const reply = await admin.sendCommand(['PUBSUB', 'NUMSUB', channel]) as unknown[]
  return Number(reply[1])
}

for (const resp of [2, 3] as const) {
  const k = (name: string): string => `nr${resp}:${name}`

  test(`RESP${resp}: SET/GET, auto-pipelined bursts and execAsPipeline`, { timeout: 20000 }, async () => {
    const c = await connect(proxyUrl(), resp)
    try {
      assert.equal(await c.set(k('greeting'), 'hello'), 'OK')
      assert.equal(await c.get(k('greeting')), 'hello')
      assert.equal(await c.get(k('missing')), null)
      assert.equal(await c.incr(k('n')), 1)
      assert.equal(await c.ping(), 'PONG')

      // Binary-safe value (CR LF, NUL, high bytes) round-trips as a Buffer.
      const binary = Buffer.from([0, 13, 10, 255, 254, 36, 42, 43, 45, 58, 0])
      await c.set(k('bin'), binary)
      const back = await c.withTypeMapping({ [36]: Buffer }).get(k('bin')) as unknown as Buffer
      assert.ok(Buffer.isBuffer(back))
      assert.deepEqual(back, binary)

      // Commands issued in one tick leave as one pipeline (node-redis autopipelining).
      const ops: Array<Promise<unknown>> = []
      for (let i = 0; i < 200; i++) {
        ops.push(c.set(k(`p:${i}`), `v${i}`))
        ops.push(c.get(k(`p:${i}`)))
      }
      const results = await Promise.all(ops)
      for (let i = 0; i < 200; i++) {
        assert.equal(results[2 * i], 'OK')
        assert.equal(results[2 * i + 1], `v${i}`)
      }

      // An explicit pipeline (no MULTI) keeps order and returns each reply.
      const piped = await c.multi()
        .set(k('pl'), '1')
        .incrBy(k('pl'), 41)
        .get(k('pl'))
        .lPush(k('pl:list'), ['a', 'b'])
        .lRange(k('pl:list'), 0, -1)
        .execAsPipeline()
      assert.deepEqual(piped, ['OK', 42, '42', 2, ['b', 'a']])
    } finally {
      await close(c)
    }
  })

  test(`RESP${resp}: MULTI/EXEC via .multi().exec(), and a WATCH conflict makes EXEC return null (WatchError)`, { timeout: 20000 }, async () => {
    const c1 = await connect(proxyUrl(), resp)
    const c2 = await connect(proxyUrl(), resp)
    try {
      const replies = await c1.multi()
        .set(k('tx'), 'a')
        .append(k('tx'), 'b')
        .get(k('tx'))
        .incr(k('tx:n'))
        .exec()
      assert.deepEqual(replies, ['OK', 2, 'ab', 1])

      // A queued command that fails at EXEC time is reported in place; the others still run.
      // node-redis reports that as a MultiErrorReply carrying every reply.
      await assert.rejects(c1.multi()
        .set(k('tx:s'), 'text')
        .incr(k('tx:s'))
        .get(k('tx:s'))
        .exec(), (err: unknown) => {
        assert.ok(err instanceof MultiErrorReply, `expected MultiErrorReply, got ${String(err)}`)
        assert.deepEqual(err.errorIndexes, [1])
        assert.equal(err.replies[0], 'OK')
        assert.match(String(err.replies[1]), /not an integer/)
        assert.equal(err.replies[2], 'text')
        return true
      })

      // WATCH, another client changes the key, EXEC answers null: node-redis throws WatchError.
      await c1.set(k('w'), 'start')
      assert.equal(await c1.watch(k('w')), 'OK')
      assert.equal(await c2.set(k('w'), 'theirs'), 'OK')
      await assert.rejects(c1.multi().set(k('w'), 'mine').exec(), (err: unknown) => {
        assert.ok(err instanceof WatchError, `expected WatchError, got ${String(err)}`)
        return true
      })
      assert.equal(await c1.get(k('w')), 'theirs')

      // Raw EXEC after a failed WATCH: the null reply itself (no client-side interpretation).
      await c1.watch(k('w'))
      await c2.set(k('w'), 'again')
      assert.equal(await c1.sendCommand(['MULTI']), 'OK')
      assert.equal(await c1.sendCommand(['SET', k('w'), 'mine']), 'QUEUED')
      assert.equal(await c1.sendCommand(['EXEC']), null)
      assert.equal(await c1.get(k('w')), 'again')

      // An untouched WATCH lets the next transaction through.
      await c1.watch(k('w'))
      assert.deepEqual(await c1.multi().set(k('w'), 'mine').get(k('w')).exec(), ['OK', 'mine'])
      assert.equal(await c2.get(k('w')), 'mine')
    } finally {
      await close(c1, c2)
    }
  })

  test(`RESP${resp}: BLPOP hands an element pushed by another client to the blocked one`, { timeout: 20000 }, async () => {
    const admin = await direct()
    const waiter = await connect(proxyUrl(), resp)
    const pusher = await connect(proxyUrl(), resp)
    try {
      const before = await blockedClients(admin)
      const popped = waiter.blPop(k('queue'), 10)
      await until(async () => (await blockedClients(admin)) > before, 'the BLPOP to block in Redis')
      // The pusher is not held up by the blocked client.
      assert.equal(await pusher.get(k('queue:none')), null)
      assert.equal(await pusher.rPush(k('queue'), 'job-1'), 1)
      assert.deepEqual(await popped, { key: k('queue'), element: 'job-1' })
      assert.equal(await pusher.lLen(k('queue')), 0)

      // The waiter is an ordinary client again afterwards.
      assert.equal(await waiter.set(k('after-blpop'), 'x'), 'OK')
      assert.equal(await waiter.get(k('after-blpop')), 'x')

      // A BLPOP that times out answers null.
      const started = Date.now()
      assert.equal(await waiter.blPop(k('empty'), 0.3), null)
      assert.ok(Date.now() - started >= 250, `BLPOP returned after ${Date.now() - started} ms`)
    } finally {
      await close(waiter, pusher, admin)
    }
  })

  test(`RESP${resp}: pub/sub: a subscriber gets messages published by another client, and works normally after unsubscribing`, { timeout: 20000 }, async () => {
    const admin = await direct()
    const sub = await connect(proxyUrl(), resp)
    const pub = await connect(proxyUrl(), resp)
    const channel = k('news')
    try {
      const received: string[] = []
      let wake: (() => void) | undefined
      await sub.subscribe(channel, (message: string, ch: string) => {
        assert.equal(ch, channel)
        received.push(message)
        wake?.()
      })
      await until(async () => (await numsub(admin, channel)) === 1, 'the subscription to reach Redis')

      for (let i = 0; i < 5; i++) assert.equal(await pub.publish(channel, `m${i}`), 1)
      await until(() => received.length >= 5, 'five messages', 5000)
      assert.deepEqual(received, ['m0', 'm1', 'm2', 'm3', 'm4'])

      // Pattern subscription alongside.
      const pmessages: Array<[string, string]> = []
      await sub.pSubscribe(k('pat:*'), (message: string, ch: string) => { pmessages.push([ch, message]) })
      assert.equal(await pub.publish(k('pat:x'), 'px'), 1)
      await until(() => pmessages.length === 1, 'the pattern message')
      assert.deepEqual(pmessages, [[k('pat:x'), 'px']])

      await sub.pUnsubscribe(k('pat:*'))
      await sub.unsubscribe(channel)
      await until(async () => (await numsub(admin, channel)) === 0, 'the unsubscription to reach Redis')
      assert.equal(await pub.publish(channel, 'nobody'), 0)

      // Normal commands on the former subscriber. (node-redis 6.3.1 in RESP2 decodes string
      // replies as Buffers once a client has left subscriber mode, also against Redis
      // directly, so strings are compared as text here.)
      assert.equal(text(await sub.set(k('after-sub'), 'v')), 'OK')
      assert.equal(text(await sub.get(k('after-sub'))), 'v')
      assert.equal(await sub.incr(k('after-sub:n')), 1)
      assert.equal(await pub.get(k('after-sub')), 'v')
      assert.deepEqual(received, ['m0', 'm1', 'm2', 'm3', 'm4'])

      // And it can subscribe again.
      await sub.subscribe(channel, (message: string) => { received.push(message) })
      await until(async () => (await numsub(admin, channel)) === 1, 'the second subscription')
      assert.equal(await pub.publish(channel, 'again'), 1)
      await until(() => received.length === 6, 'the message after resubscribing')
      assert.equal(received[5], 'again')
      await sub.unsubscribe()
    } finally {
      await close(sub, pub, admin)
    }
  })

  test(`RESP${resp}: a database in the URL (/5) isolates keys from db 0, on shared lanes, in MULTI and in BLPOP`, { timeout: 20000 }, async () => {
    const in5 = await connect(proxyUrl(5), resp)
    const other5 = await connect(proxyUrl(5), resp)
    const in0 = await connect(proxyUrl(), resp)
    const admin5 = await direct(5)
    const admin0 = await direct(0)
    try {
      const key = k('iso')
      await in5.set(key, 'five')
      await in0.set(key, 'zero')
      assert.equal(await in5.get(key), 'five')
      assert.equal(await in0.get(key), 'zero')
      assert.equal(await admin5.get(key), 'five')
      assert.equal(await admin0.get(key), 'zero')

      // Interleaved bursts from both databases share the same few upstream lanes.
      const ops: Array<Promise<void>> = []
      for (let i = 0; i < 100; i++) {
        ops.push(in5.set(k(`iso:${i}`), `5:${i}`).then(async () => { assert.equal(await in5.get(k(`iso:${i}`)), `5:${i}`) }))
        ops.push(in0.set(k(`iso:${i}`), `0:${i}`).then(async () => { assert.equal(await in0.get(k(`iso:${i}`)), `0:${i}`) }))
      }
      await Promise.all(ops)
      assert.equal(await admin5.get(k('iso:99')), '5:99')
      assert.equal(await admin0.get(k('iso:99')), '0:99')

      // A transaction runs in the client's database.
      assert.deepEqual(await in5.multi().set(k('iso:tx'), 'tx5').get(key).exec(), ['OK', 'five'])
      assert.equal(await admin5.get(k('iso:tx')), 'tx5')
      assert.equal(await admin0.get(k('iso:tx')), null)

      // A blocking command runs in the client's database: a push to db 0 does not wake it.
      const blocked = await blockedClients(admin0)
      const popped = in5.blPop(k('iso:q'), 10)
      await until(async () => (await blockedClients(admin0)) > blocked, 'the db-5 BLPOP to block')
      await in0.rPush(k('iso:q'), 'for-db0')
      await other5.rPush(k('iso:q'), 'for-db5')
      assert.deepEqual(await popped, { key: k('iso:q'), element: 'for-db5' })
      assert.deepEqual(await admin0.lRange(k('iso:q'), 0, -1), ['for-db0'])

      // SELECT sent by the client switches only that client.
      assert.equal(await in0.sendCommand(['SELECT', '5']), 'OK')
      assert.equal(await in0.get(key), 'five')
      assert.equal(await other5.get(key), 'five')
      assert.equal(await in0.sendCommand(['SELECT', '0']), 'OK')
      assert.equal(await in0.get(key), 'zero')
    } finally {
      await close(in5, other5, in0, admin5, admin0)
    }
  })
}

test('RESP3: HGETALL returns an object (a RESP3 map on the wire), RESP2 returns a flat array on the wire', { timeout: 20000 }, async () => {
  const c3 = await connect(proxyUrl(), 3)
  const c2 = await connect(proxyUrl(), 2)
  try {
    await c3.hSet('nr:hash', { a: '1', b: '2', c: '3' })
    const obj = await c3.hGetAll('nr:hash') as unknown as Record<string, string>
    assert.equal(typeof obj, 'object')
    assert.equal(Array.isArray(obj), false)
    assert.deepEqual({ ...obj }, { a: '1', b: '2', c: '3' })

    // Unparsed: RESP3 gives a map (decoded to an object), RESP2 a flat array.
    const raw3 = await c3.sendCommand(['HGETALL', 'nr:hash'])
    assert.equal(Array.isArray(raw3), false)
    assert.deepEqual({ ...(raw3 as unknown as Record<string, string>) }, { a: '1', b: '2', c: '3' })
    const raw2 = await c2.sendCommand(['HGETALL', 'nr:hash'])
    assert.ok(Array.isArray(raw2))
    assert.deepEqual(raw2, ['a', '1', 'b', '2', 'c', '3'])

    // RESP3-only types survive: a Map with typeMapping, doubles as numbers.
    const asMap = await c3.withTypeMapping({ [37]: Map }).hGetAll('nr:hash') as unknown as Map<string, string>
    assert.ok(asMap instanceof Map)
    assert.equal(asMap.get('b'), '2')
    await c3.zAdd('nr:z', { score: 1.5, value: 'm' })
    assert.equal(await c3.zScore('nr:z', 'm'), 1.5)
    assert.equal(await c2.zScore('nr:z', 'm'), 1.5)

    // Both clients keep their own protocol on the same shared lanes.
    const both = await Promise.all([c3.sendCommand(['HGETALL', 'nr:hash']), c2.sendCommand(['HGETALL', 'nr:hash'])])
    assert.equal(Array.isArray(both[0]), false)
    assert.ok(Array.isArray(both[1]))
  } finally {
    await close(c3, c2)
  }
})

test('many node-redis clients share at most --pool-size upstream connections, and no client saw an error', { timeout: 20000 }, async () => {
  // A Redis that refuses any connection beyond the pool and this test's admin connection.
  const bounded = await startBoundedRedis(POOL_SIZE + 1)
  after(async () => { await bounded.stop() })
  const own = await startProxy({ upstream: bounded.redis.url, poolSize: POOL_SIZE })
  after(async () => { await own.destroy() })
  const many = await Promise.all(Array.from({ length: 30 }, async (_, i) => await connect(`redis://127.0.0.1:${own.address.port}/${i % 3}`, i % 2 === 0 ? 2 : 3)))
  try {
    await Promise.all(many.map(async (c, i) => {
      for (let round = 0; round < 20; round++) {
        await c.set(`nr:many:${i}`, String(round))
        assert.equal(await c.get(`nr:many:${i}`), String(round))
      }
    }))
    const seen = await bounded.upstreamConnections()
    assert.ok(seen >= 1 && seen <= POOL_SIZE, `upstream connections: ${seen}`)
    await bounded.assertNoneRejected()
  } finally {
    await close(...many)
  }
  assert.deepEqual(clientErrors.map((e) => e.message), [])
})
