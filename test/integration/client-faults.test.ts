import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { waitFor } from '../helpers/wait.js'

let redis: RedisServer
let direct: Redis

before(async () => {
  redis = await startRedis()
  direct = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  await direct.set('big', 'x'.repeat(10_000))
})
after(async () => {
  direct?.disconnect()
  await redis?.stop()
})

async function getCalls (): Promise<number> {
  const stats = await direct.info('commandstats')
  return Number(/cmdstat_get:calls=(\d+)/.exec(stats)?.[1] ?? 0)
}

test('a client that does not read: respool stops reading from it, memory stays bounded, and it gets everything once it reads', { timeout: 30000 }, async () => {
  const proxy = await startProxy({ upstream: redis.url, maxPipeline: 100 })
  after(async () => { await proxy.destroy() })
  const COMMANDS = 20_000
  const before = await getCalls()
  const socket = net.connect({ port: proxy.address.port, host: '127.0.0.1' })
  after(() => { socket.destroy() })
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.pause() // read nothing
  const one = cmd('GET', 'big')
  socket.write(Buffer.concat(Array.from({ length: COMMANDS }, () => one)))
  await new Promise((resolve) => setTimeout(resolve, 1000))
  const executed = (await getCalls()) - before
  // Kernel buffers hold some replies, the proxy at most --max-pipeline more; nowhere near all.
  assert.ok(executed < COMMANDS / 2, `${executed} GETs ran while the client read nothing`)
  // Another client is served meanwhile.
  const other = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { other.disconnect() })
  assert.equal(await other.echo('unaffected'), 'unaffected')
  // Now read: every reply arrives, complete and in order.
  const replyLength = `$10000\r\n`.length + 10_000 + 2
  let received = 0
  socket.on('data', (d: Buffer) => { received += d.length })
  socket.resume()
  await waitFor(() => received >= COMMANDS * replyLength, 'all replies', 20000)
  assert.equal(received, COMMANDS * replyLength)
})

test('a client whose unread output passes --max-output-buffer is disconnected; others are not', { timeout: 20000 }, async () => {
  const proxy = await startProxy({ upstream: redis.url, maxPipeline: 1000, maxOutputBufferBytes: 256 * 1024 })
  after(async () => { await proxy.destroy() })
  const socket = net.connect({ port: proxy.address.port, host: '127.0.0.1' })
  after(() => { socket.destroy() })
  await new Promise((resolve) => socket.once('connect', resolve))
  socket.pause()
  const closed = new Promise((resolve) => socket.once('close', resolve))
  socket.on('error', () => {})
  socket.write(Buffer.concat(Array.from({ length: 2000 }, () => cmd('GET', 'big'))))
  // The kernel buffers absorb a few MB before Node's buffer grows; keep the pressure on.
  socket.write(Buffer.concat(Array.from({ length: 2000 }, () => cmd('GET', 'big'))))
  await waitFor(() => proxy.stats.downstreamCxOutputLimit === 1, 'output limit hit', 15000)
  socket.resume()
  await closed
  const other = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { other.disconnect() })
  assert.equal(await other.echo('still here'), 'still here')
})

test('clients that reset mid-pipeline, mid-MULTI, while blocked and while subscribed cost nobody else anything', { timeout: 30000 }, async () => {
  const proxy = await startProxy({ upstream: redis.url, poolSize: 4 })
  after(async () => { await proxy.destroy() })
  const survivor = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { survivor.disconnect() })
  for (let round = 0; round < 20; round++) {
    const leavers = await Promise.all(Array.from({ length: 4 }, async () => await RawClient.connect(proxy.address.port)))
    leavers[0].write(Buffer.concat(Array.from({ length: 500 }, (_, i) => cmd('SET', `leaver:${i}`, 'v'))))
    leavers[1].write(Buffer.concat([cmd('MULTI'), cmd('INCR', 'never')]))
    leavers[2].write(cmd('BLPOP', 'nothing-here', '0'))
    leavers[3].write(cmd('SUBSCRIBE', 'ch'))
    const p = survivor.pipeline()
    for (let i = 0; i < 50; i++) p.echo(`r${round}:${i}`)
    const echoes = survivor.pipeline()
    await new Promise((resolve) => setTimeout(resolve, round % 3)) // leave at different moments
    for (const l of leavers) l.socket.resetAndDestroy()
    const results = await p.exec()
    assert.deepEqual(results?.map(([, v]) => v), Array.from({ length: 50 }, (_, i) => `r${round}:${i}`))
    void echoes
  }
  await waitFor(() => proxy.router.pinCount === 0, 'every pin given back')
  assert.equal(await direct.exists('never'), 0)
  assert.ok(proxy.pool.stats.size <= 4)
})

test('graceful drain: idle clients are closed, a transaction in progress may finish, new clients are refused', { timeout: 20000 }, async () => {
  const proxy = await startProxy({ upstream: redis.url, shutdownGraceMs: 3000 })
  const port = proxy.address.port
  const idle = await RawClient.connect(proxy.address.port)
  const tx = await RawClient.connect(proxy.address.port)
  after(() => { idle.close(); tx.close() })
  tx.write(Buffer.concat([cmd('MULTI'), cmd('SET', 'drained', 'yes')]))
  assert.equal(await tx.readExactly('+OK\r\n+QUEUED\r\n', { sentinel: false }), '+OK\r\n+QUEUED\r\n') // inside MULTI
  const closing = proxy.close()
  assert.equal(proxy.draining, true)
  await idle.readUntilClose(2000)
  tx.write(cmd('EXEC'))
  assert.equal(await tx.readExactly('*1\r\n+OK\r\n', { sentinel: false }), '*1\r\n+OK\r\n')
  assert.equal(await tx.readUntilClose(2000), '', 'closed once the pin is given back, with nothing more')
  const started = Date.now()
  await closing
  assert.ok(Date.now() - started < 2500, 'close() resolves once every client is gone')
  assert.equal(await direct.get('drained'), 'yes')
  await assert.rejects(RawClient.connect(port))
})

test('graceful drain ends at the grace period even if a client never finishes', { timeout: 20000 }, async () => {
  const proxy = await startProxy({ upstream: redis.url, shutdownGraceMs: 500 })
  const blocked = await RawClient.connect(proxy.address.port)
  after(() => { blocked.close() })
  blocked.write(cmd('BLPOP', 'forever', '0'))
  await waitFor(() => proxy.router.pinCount === 1, 'blocked')
  const started = Date.now()
  await proxy.close()
  const elapsed = Date.now() - started
  assert.ok(elapsed >= 450 && elapsed < 2000, `closed after ${elapsed} ms`)
  await blocked.readUntilClose(2000)
  // The blocked command was not left behind to pop an element for nobody.
  await direct.rpush('forever', 'kept')
  await new Promise((resolve) => setTimeout(resolve, 100))
  assert.deepEqual(await direct.lrange('forever', 0, -1), ['kept'])
})
