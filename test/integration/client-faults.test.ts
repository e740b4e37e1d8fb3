import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { waitFor } from '../helpers/wait.js'
import { FrameReader, replyStreamOn } from '../helpers/resp-frames.js'
import { startBoundedRedis } from '../helpers/bounded-redis.js'

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
  // respool stops reading from it at --max-pipeline unanswered commands.
  await waitFor(() => proxy.stats.downstreamRqPipelineLimit >= 1, 'reading paused at --max-pipeline', 10000)
  // Another client is served meanwhile.
  const other = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { other.disconnect() })
  assert.equal(await other.echo('unaffected'), 'unaffected')
  // And it stays paused: kernel buffers hold some replies, the proxy at most --max-pipeline
  // more; nowhere near all.
  const executed = (await getCalls()) - before
  assert.ok(executed < COMMANDS / 2, `${executed} GETs ran while the client read nothing`)
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

test('clients that reset mid-pipeline, mid-MULTI, while blocked and while subscribed cost nobody else anything', { timeout: 90000 }, async () => {
  const POOL = 4
  // Redis refuses connections beyond the pool, this test's two direct connections (admin and
  // mirror) and the two connections each round closes (the blocked one and the subscribed
  // one), which Redis may not have freed yet when respool opens their replacements. Between
  // rounds the count is exact.
  const bounded = await startBoundedRedis(POOL + 2 + 2)
  after(async () => { await bounded.stop() })
  // At most 3 pins: the MULTI, the BLPOP and the SUBSCRIBE hold all of them, so the survivor
  // and the client leaving mid-pipeline share the one lane left.
  // The pinned path (--park-blocking no), so the blocked leaver holds a connection (leaving while
  // parked: parking.test.ts).
  const proxy = await startProxy({ upstream: bounded.redis.url, poolSize: POOL, upstreamIdleTimeoutMs: 600_000, parkBlocking: false })
  after(async () => { await proxy.destroy() })
  const admin = bounded.admin
  await admin.set('big', 'x'.repeat(10_000))
  const blockedUpstreams = async (): Promise<number> => ((await admin.client('LIST') as string).split('\n')
    .filter((line) => / name=respool /.test(line) && / flags=\S*b/.test(line) && / cmd=blpop /.test(line))).length

  // What the survivor gets must be what Redis gives for the same commands on a direct connection
  // (in a database of its own, so the two runs do not share keys).
  const mirror = await RawClient.connect(bounded.redis.port)
  after(() => { mirror.close() })
  const mirrorFrames = new FrameReader(mirror)
  assert.equal(await replyStreamOn(mirrorFrames, cmd('SELECT', '9')), '+OK\r\n')
  const survivor = await RawClient.connect(proxy.address.port)
  after(() => { survivor.close() })
  const survivorFrames = new FrameReader(survivor)
  const chunk = (round: number, k: number): Buffer => Buffer.concat([
    cmd('SET', 'surv:s', `${round}:${k}`), cmd('GET', 'surv:s'), cmd('INCR', 'surv:n'), cmd('RPUSH', 'surv:l', `${round}:${k}`),
    cmd('LRANGE', 'surv:l', '-2', '-1'), cmd('HSET', 'surv:h', `f${k}`, String(round)), cmd('HGETALL', 'surv:h'),
    cmd('ECHO', `e${round}:${k}\r\n`), cmd('PING'),
    // What the leavers started must never have run: the transaction, and a pop of a later push.
    cmd('GET', 'never'), cmd('EXISTS', 'nothing-here')
  ])

  const ROUNDS = 8
  for (let round = 0; round < ROUNDS; round++) {
    // The previous round's connections are gone, as Redis sees it too.
    await waitFor(async () => proxy.router.pinCount === 0 && await bounded.upstreamConnections() === proxy.pool.stats.size, 'respool and Redis agree on the connections')
    assert.ok(proxy.pool.stats.size <= POOL)
    const leavers = await Promise.all(Array.from({ length: 4 }, async () => await RawClient.connect(proxy.address.port)))
    after(() => { for (const l of leavers) l.close() })
    const frames = leavers.map((l) => new FrameReader(l))
    const sessions = await Promise.all(leavers.map(async (l, i) => {
      l.write(cmd('CLIENT', 'ID'))
      const id = Number(/^:(\d+)\r\n$/.exec(await frames[i].next())?.[1])
      const session = proxy.sessions().find((s) => s.id === id)
      assert.ok(session !== undefined)
      return session
    }))
    // Each leaver gets into its state, and the test sees that it did.
    leavers[1].write(Buffer.concat([cmd('MULTI'), cmd('INCR', 'never')]))
    assert.equal(await leavers[1].readExactly('+OK\r\n+QUEUED\r\n', { sentinel: false }), '+OK\r\n+QUEUED\r\n')
    leavers[3].write(cmd('SUBSCRIBE', 'ch'))
    assert.equal(await leavers[3].readExactly('*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n', { sentinel: false }), '*3\r\n$9\r\nsubscribe\r\n$2\r\nch\r\n:1\r\n')
    leavers[2].write(cmd('BLPOP', 'nothing-here', '0'))
    await waitFor(async () => sessions[2].pinReasons !== 0 && await blockedUpstreams() === 1, 'BLPOP pinned, and blocked in Redis')
    leavers[0].socket.pause() // reads none of its replies
    leavers[0].write(Buffer.concat(Array.from({ length: 2000 }, () => cmd('GET', 'big'))))
    // Read by respool: some of it sent (its replies may all be back already, waiting for the
    // client to read them), the rest held until it does.
    await waitFor(() => sessions[0].inflight + sessions[0].pending > 0 && proxy.router.laneCount === 1, 'the pipeline read and in flight or held, on the one lane')
    assert.equal(proxy.router.pinCount, 3)
    assert.equal(proxy.router.laneCount, 1)

    // The survivor pipelines while they reset, one after another, in an order that changes
    // each round.
    const chunks = [chunk(round, 0)]
    survivor.write(chunks[0])
    for (let k = 0; k < 4; k++) {
      const who = (round + k) % 4
      if (who === 0) assert.ok(sessions[0].inflight + sessions[0].pending > 0, 'still mid-pipeline as it resets')
      leavers[who].socket.resetAndDestroy()
      chunks.push(chunk(round, k + 1))
      survivor.write(chunks[k + 1])
    }
    const got = await replyStreamOn(survivorFrames, Buffer.alloc(0))
    const want = await replyStreamOn(mirrorFrames, Buffer.concat(chunks))
    assert.equal(got, want, `round ${round}`)
  }
  await waitFor(() => proxy.router.pinCount === 0, 'every pin given back')
  // No blocked BLPOP was left behind: an element pushed now stays (Redis hands a pushed element
  // to a blocked client before it answers the next command).
  assert.equal(await blockedUpstreams(), 0)
  await admin.rpush('nothing-here', 'kept')
  assert.deepEqual(await admin.lrange('nothing-here', 0, -1), ['kept'])
  assert.equal(await admin.exists('never'), 0)
  await waitFor(async () => await bounded.upstreamConnections() === proxy.pool.stats.size, 'respool and Redis agree on the connections')
  assert.ok(proxy.pool.stats.size <= POOL)
  await bounded.assertNoneRejected()
})

test('graceful drain: idle clients are closed, a transaction in progress may finish, new clients are refused', { timeout: 40000 }, async (t) => {
  // A grace period far longer than the drain needs: close() must not wait for it.
  const proxy = await startProxy({ upstream: redis.url, shutdownGraceMs: 20_000 })
  const port = proxy.address.port
  const idle = await RawClient.connect(proxy.address.port)
  const tx = await RawClient.connect(proxy.address.port)
  after(() => { idle.close(); tx.close() })
  tx.write(Buffer.concat([cmd('MULTI'), cmd('SET', 'drained', 'yes')]))
  assert.equal(await tx.readExactly('+OK\r\n+QUEUED\r\n', { sentinel: false }), '+OK\r\n+QUEUED\r\n') // inside MULTI
  const closing = proxy.close()
  assert.equal(proxy.draining, true)
  assert.equal(await idle.readUntilClose(2000), '', 'an idle client is closed with nothing sent')
  tx.write(cmd('EXEC'))
  assert.equal(await tx.readExactly('*1\r\n+OK\r\n', { sentinel: false }), '*1\r\n+OK\r\n')
  assert.equal(await tx.readUntilClose(2000), '', 'closed once the pin is given back, with nothing more')
  const started = Date.now()
  await closing
  const elapsed = Date.now() - started
  t.diagnostic(`close() resolved ${elapsed} ms after the last client left`)
  assert.ok(elapsed < 10_000, 'close() resolves once every client is gone, not at the end of the grace period')
  assert.equal(await direct.get('drained'), 'yes')
  await assert.rejects(RawClient.connect(port))
})

test('graceful drain ends at the grace period even if a client never finishes', { timeout: 20000 }, async (t) => {
  const proxy = await startProxy({ upstream: redis.url, shutdownGraceMs: 500 })
  const blocked = await RawClient.connect(proxy.address.port)
  after(() => { blocked.close() })
  blocked.write(cmd('BLPOP', 'forever', '0'))
  await waitFor(() => proxy.router.pinCount === 1, 'blocked')
  const started = Date.now()
  await proxy.close()
  const elapsed = Date.now() - started
  t.diagnostic(`closed after ${elapsed} ms`)
  assert.ok(elapsed >= 450 && elapsed < 5000, `closed after ${elapsed} ms`)
  assert.equal(await blocked.readUntilClose(2000), '')
  // The blocked command was not left behind to pop an element for nobody: once Redis has no
  // blocked client, a pushed element stays (Redis serves blocked clients before the next command).
  await waitFor(async () => /blocked_clients:0\r\n/.test(await direct.info('clients')), 'no client blocked in Redis')
  await direct.rpush('forever', 'kept')
  assert.deepEqual(await direct.lrange('forever', 0, -1), ['kept'])
})
