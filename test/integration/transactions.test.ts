import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { startBoundedRedis } from '../helpers/bounded-redis.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { startCheckedBystanders } from '../helpers/checked-bystanders.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

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

/** The respool connections Redis sees that are inside MULTI, as CLIENT LIST fields. */
async function upstreamsInMulti (admin: Redis): Promise<Array<Record<string, string>>> {
  const list = await admin.client('LIST') as string
  return list.split('\n').filter((line) => / name=respool /.test(line))
    .map((line) => Object.fromEntries(line.trim().split(' ').map((field) => field.split('=', 2) as [string, string])))
    .filter((fields) => fields.flags.includes('x'))
}

test('MULTI/EXEC typed command by command holds one pinned connection, nothing else lands inside it, and the bytes match Redis', { timeout: 30000 }, async () => {
  const admin = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  after(() => { admin.disconnect() })
  const steps = [cmd('DEL', 'tx'), cmd('MULTI'), cmd('INCR', 'tx'), cmd('INCR', 'tx'), cmd('GET', 'tx'), cmd('EXEC'), cmd('GET', 'tx')]
  // What Redis answers to each command, typed one at a time (in a database of its own).
  const direct = await RawClient.connect(redis.port)
  after(() => { direct.close() })
  const directFrames = new FrameReader(direct)
  direct.write(cmd('SELECT', '9'))
  assert.equal(await directFrames.next(), '+OK\r\n')
  const want: string[] = []
  for (const step of steps) {
    direct.write(step)
    want.push(await directFrames.next())
  }
  assert.deepEqual(await directFrames.framesBeforeSentinel(), [])
  assert.equal(want[5], '*3\r\n:1\r\n:2\r\n$1\r\n2\r\n')

  // Clients pipelining on the shared lanes the whole time: a command of theirs landing inside
  // the transaction would get +QUEUED instead of its reply, and EXEC one more element.
  const bystanders = await startCheckedBystanders(proxy.address.port)
  after(async () => { await bystanders.stop() })
  const client = await RawClient.connect(proxy.address.port)
  after(() => { client.close() })
  const frames = new FrameReader(client)
  client.write(cmd('CLIENT', 'ID'))
  const id = Number(/^:(\d+)\r\n$/.exec(await frames.next())?.[1])
  const session = proxy.sessions().find((s) => s.id === id)
  assert.ok(session !== undefined)
  const bystanderSessions = proxy.sessions().filter((s) => bystanders.ids.includes(s.id))
  assert.equal(bystanderSessions.length, bystanders.ids.length)

  let upstreamId: number | null = null
  let redisId: string | undefined
  for (let i = 0; i < steps.length; i++) {
    client.write(steps[i])
    assert.equal(await frames.next(), want[i], `reply to step ${i}`)
    if (i >= 1 && i <= 4) {
      // Inside the transaction: this client holds a pin, the same connection all along.
      assert.notEqual(session.pinReasons, 0, 'pinned')
      assert.equal(proxy.router.pinCount, 1)
      upstreamId ??= session.upstreamId
      assert.equal(session.upstreamId, upstreamId)
      if (i >= 2) {
        // Redis holds exactly this client's queued commands on one respool connection.
        const inMulti = await upstreamsInMulti(admin)
        assert.equal(inMulti.length, 1, JSON.stringify(inMulti))
        redisId ??= inMulti[0].id
        assert.equal(inMulti[0].id, redisId)
        assert.equal(inMulti[0].multi, String(i - 1), 'commands queued on that connection')
      }
      // The others keep running meanwhile, never on the pinned connection.
      await bystanders.moreRounds(2)
      for (const s of bystanderSessions) assert.notEqual(s.upstreamId, upstreamId)
    }
  }
  assert.deepEqual(await frames.framesBeforeSentinel(), [])
  await waitFor(() => proxy.router.pinCount === 0, 'pin released after EXEC')
  assert.deepEqual(await upstreamsInMulti(admin), [])
  await bystanders.moreRounds(1)
  assert.deepEqual(await bystanders.stop(), [])
})

test('EXEC/DISCARD without MULTI and UNWATCH without WATCH answer as Redis does', { timeout: 10000 }, async () => {
  const client = await RawClient.connect(proxy.address.port)
  after(() => { client.close() })
  client.write(Buffer.concat([cmd('EXEC'), cmd('DISCARD'), cmd('UNWATCH')]))
  const expected = '-ERR EXEC without MULTI\r\n-ERR DISCARD without MULTI\r\n+OK\r\n'
  assert.equal(await client.readExactly(expected), expected)
})

test('a WATCH conflict aborts EXEC with a nil reply, exactly as on a direct connection', { timeout: 10000 }, async () => {
  const watcher = await RawClient.connect(proxy.address.port)
  const other = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { watcher.close(); other.disconnect() })
  watcher.write(Buffer.concat([cmd('SET', 'w', '1'), cmd('WATCH', 'w'), cmd('GET', 'w')]))
  assert.equal(await watcher.readExactly('+OK\r\n+OK\r\n$1\r\n1\r\n'), '+OK\r\n+OK\r\n$1\r\n1\r\n')
  await other.set('w', '2') // through a shared lane
  watcher.write(Buffer.concat([cmd('MULTI'), cmd('SET', 'w', '3'), cmd('EXEC'), cmd('GET', 'w')]))
  const expected = '+OK\r\n+QUEUED\r\n*-1\r\n$1\r\n2\r\n'
  assert.equal(await watcher.readExactly(expected), expected)
  await waitFor(() => proxy.router.pinCount === 0, 'pin released after aborted EXEC')
})

test('50 clients running WATCH/GET/MULTI/SET/EXEC retry loops end with the exact count', { timeout: 60000 }, async () => {
  const CLIENTS = 50
  const INCREMENTS = 20
  // Redis itself refuses any connection beyond the pool of 4 and this test's admin connection.
  const bounded = await startBoundedRedis(4 + 1)
  after(async () => { await bounded.stop() })
  const proxy = await startProxy({ upstream: bounded.redis.url, poolSize: 4 })
  after(async () => { await proxy.destroy() })
  const seed = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  await seed.set('counter', '0')
  const clients = Array.from({ length: CLIENTS }, () => new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 }))
  after(() => { seed.disconnect(); for (const c of clients) c.disconnect() })
  let retries = 0
  await Promise.all(clients.map(async (client) => {
    for (let i = 0; i < INCREMENTS; i++) {
      for (;;) {
        await client.watch('counter')
        const value = Number(await client.get('counter'))
        const result = await client.multi().set('counter', String(value + 1)).exec()
        if (result !== null) break
        retries++
      }
    }
  }))
  assert.equal(await seed.get('counter'), String(CLIENTS * INCREMENTS))
  assert.ok(proxy.pool.stats.size <= 4)
  await waitFor(() => proxy.router.pinCount === 0, 'all pins released')
  await bounded.assertNoneRejected()
  // Conflicts must have happened, or the test proved nothing about WATCH.
  assert.ok(retries > 0, 'expected WATCH conflicts under contention')
})

test('a client that leaves inside MULTI leaves no state behind', { timeout: 15000 }, async () => {
  const small = await startProxy({ upstream: redis.url, poolSize: 2, maxPins: 1 })
  after(async () => { await small.destroy() })
  const leaver = await RawClient.connect(small.address.port)
  leaver.write(Buffer.concat([cmd('DEL', 'left'), cmd('WATCH', 'left'), cmd('MULTI'), cmd('SET', 'left', 'x')]))
  assert.equal(await leaver.readExactly(':0\r\n+OK\r\n+OK\r\n+QUEUED\r\n', { sentinel: false }), ':0\r\n+OK\r\n+OK\r\n+QUEUED\r\n')
  leaver.close()
  await waitFor(() => small.router.pinCount === 0, 'pin given back after the client left')
  // The only pinnable connection is reused: it must not be inside MULTI or WATCH any more.
  const next = await RawClient.connect(small.address.port)
  after(() => { next.close() })
  next.write(Buffer.concat([cmd('MULTI'), cmd('GET', 'left'), cmd('EXEC'), cmd('SET', 'left', 'y'), cmd('GET', 'left')]))
  const expected = '+OK\r\n+QUEUED\r\n*1\r\n$-1\r\n+OK\r\n$1\r\ny\r\n'
  assert.equal(await next.readExactly(expected), expected)
})

test('transactions and shared traffic interleave without cross-talk', { timeout: 30000 }, async () => {
  const tx = Array.from({ length: 10 }, () => new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 }))
  const plain = Array.from({ length: 10 }, () => new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 }))
  after(() => { for (const c of [...tx, ...plain]) c.disconnect() })
  await Promise.all([
    ...tx.map(async (c, id) => {
      for (let i = 0; i < 30; i++) {
        const result = await c.multi().set(`t:${id}`, String(i)).get(`t:${id}`).exec()
        assert.deepEqual(result, [[null, 'OK'], [null, String(i)]])
      }
    }),
    ...plain.map(async (c, id) => {
      for (let i = 0; i < 60; i++) {
        assert.equal(await c.echo(`p:${id}:${i}`), `p:${id}:${i}`)
      }
    })
  ])
})

test('a transaction sent whole (MULTI … EXEC in one pipeline) runs atomically on a shared lane without a pin', { timeout: 30000 }, async () => {
  const lanes = await startProxy({ upstream: redis.url, poolSize: 2 })
  after(async () => { await lanes.destroy() })
  const clients = Array.from({ length: 20 }, () => new Redis({ port: lanes.address.port, maxRetriesPerRequest: 0 }))
  after(() => { for (const c of clients) c.disconnect() })
  await clients[0].del('atomic')
  await Promise.all(clients.map(async (c) => {
    for (let i = 0; i < 25; i++) {
      // ioredis sends the whole MULTI block in one write; another client's INCR can never land inside it.
      const result = await c.multi().incr('atomic').incr('atomic').exec()
      const [[, a], [, b]] = result as Array<[Error | null, number]>
      assert.equal(b, a + 1, 'the two INCRs of one transaction are adjacent')
    }
  }))
  assert.equal(await clients[0].get('atomic'), String(20 * 25 * 2))
  assert.equal(lanes.router.pinsTotal, 0, 'no pin was taken')
})

test('whole transactions still run while blocking commands hold every pinnable connection', { timeout: 15000 }, async () => {
  // The pinned path (--park-blocking no): each BLPOP wants a connection of its own.
  const small = await startProxy({ upstream: redis.url, poolSize: 3, acquireTimeoutMs: 500, parkBlocking: false })
  after(async () => { await small.destroy() })
  const blocked = await Promise.all([1, 2, 3].map(async () => await RawClient.connect(small.address.port)))
  after(() => { for (const b of blocked) b.close() })
  for (const b of blocked) b.write(cmd('BLPOP', 'never-filled', '0'))
  // Two pins, of which blocking commands may hold one: one BLPOP blocked, two waiting.
  await waitFor(() => small.router.pinCount === 1 && small.router.pinsWaiting === 2, 'blocking pins saturated')
  const c = await RawClient.connect(small.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('MULTI'), cmd('SET', 'during-storm', '1'), cmd('INCR', 'during-storm'), cmd('EXEC')]))
  const expected = '+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n:2\r\n'
  assert.equal(await c.readExactly(expected, { timeoutMs: 2000 }), expected)
})

test('a whole transaction with a queuing error aborts exactly as in Redis and leaves the lane clean', { timeout: 10000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('MULTI'), cmd('SET', 'onlykey'), cmd('INCR', 'abort-k'), cmd('EXEC'), cmd('EXISTS', 'abort-k'), cmd('MULTI'), cmd('DISCARD'), cmd('PING')]))
  const expected = "+OK\r\n-ERR wrong number of arguments for 'set' command\r\n+QUEUED\r\n-EXECABORT Transaction discarded because of previous errors.\r\n:0\r\n+OK\r\n+OK\r\n+PONG\r\n"
  assert.equal(await c.readExactly(expected), expected)
})

test('a command respool cannot queue inside MULTI aborts the transaction, as a queuing error does in Redis', { timeout: 10000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  // Typed command by command, so the transaction is on a pinned connection.
  const frames = new FrameReader(c)
  const replies: string[] = []
  for (const command of [cmd('MULTI'), cmd('SET', 'q-a', '1'), cmd('CLIENT', 'GETNAME'), cmd('SHUTDOWN'), cmd('GET', 'q-a'), cmd('EXEC'), cmd('EXISTS', 'q-a')]) {
    c.write(command)
    replies.push(await frames.next())
  }
  assert.deepEqual(await frames.framesBeforeSentinel(), [])
  assert.equal(replies[0], '+OK\r\n')
  assert.equal(replies[1], '+QUEUED\r\n')
  assert.match(replies[2], /^-ERR respool: 'CLIENT' cannot be queued in a transaction/)
  assert.match(replies[3], /^-ERR respool: 'SHUTDOWN' cannot be queued in a transaction/)
  assert.equal(replies[4], '+QUEUED\r\n')
  assert.equal(replies[5], '-EXECABORT Transaction discarded because of previous errors.\r\n')
  assert.equal(replies[6], ':0\r\n', 'nothing of the aborted transaction ran')
  await waitFor(() => proxy.router.pinCount === 0, 'pin released')
})
