import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { startBoundedRedis } from '../helpers/bounded-redis.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

let redis: RedisServer
let proxy: ProxyServer

before(async () => {
  redis = await startRedis()
  // These tests are about the pinned path: blocking commands that keep a connection while they
  // block (stream reads, WAIT, and every blocking command with --park-blocking no). Parking is
  // tested in parking.test.ts.
  proxy = await startProxy({ upstream: redis.url, poolSize: 4, parkBlocking: false }) // at most 3 pins
})
after(async () => {
  await proxy?.destroy()
  await redis?.stop()
})

test('BLPOP hands an element pushed later to the blocked client', { timeout: 10000 }, async () => {
  const blocked = await RawClient.connect(proxy.address.port)
  const pusher = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { blocked.close(); pusher.disconnect() })
  blocked.write(cmd('BLPOP', 'q1', '0'))
  await waitFor(() => proxy.router.pinCount === 1, 'BLPOP pinned')
  await pusher.rpush('q1', 'job')
  assert.equal(await blocked.readExactly('*2\r\n$2\r\nq1\r\n$3\r\njob\r\n'), '*2\r\n$2\r\nq1\r\n$3\r\njob\r\n')
  await waitFor(() => proxy.router.pinCount === 0, 'pin released after the reply')
})

test('blocking timeouts give exactly what Redis gives, in RESP2 and RESP3', { timeout: 10000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('BLPOP', 'none', '0.1'), cmd('BLMOVE', 'none', 'x', 'LEFT', 'LEFT', '0.1'), cmd('XREAD', 'BLOCK', '100', 'STREAMS', 'nostream', '$')]))
  assert.equal(await c.readExactly('*-1\r\n*-1\r\n*-1\r\n'), '*-1\r\n*-1\r\n*-1\r\n')
  c.write(Buffer.concat([cmd('HELLO', '3'), cmd('BLPOP', 'none', '0.1')]))
  const frames = new FrameReader(c)
  const [hello, timedOut] = await frames.take(2)
  assert.match(hello, /^%7\r\n/)
  assert.equal(timedOut, '_\r\n', 'the RESP3 null')
  assert.deepEqual(await frames.framesBeforeSentinel(), [])
})

test('the proxy never times out BLPOP 0 and XREAD BLOCK 0', { timeout: 15000 }, async () => {
  // Pool 4: three pins, of which blocking commands may hold two, so both block in Redis at once.
  const quick = await startProxy({ upstream: redis.url, poolSize: 4, commandTimeoutMs: 200, parkBlocking: false })
  after(async () => { await quick.destroy() })
  const c = await RawClient.connect(quick.address.port)
  const d = await RawClient.connect(quick.address.port)
  after(() => { c.close(); d.close() })
  c.write(cmd('BLPOP', 'slow', '0'))
  d.write(cmd('XREAD', 'BLOCK', '0', 'STREAMS', 'slowstream', '$'))
  await waitFor(() => quick.router.pinCount === 2, 'both blocked')
  // A script keeps Redis busy for longer than the command timeout: its own command times out
  // (the timers run), and the blocked commands, silent as long, must not.
  const busy = await RawClient.connect(quick.address.port)
  after(() => { busy.close() })
  busy.write(cmd('EVAL', 'local i = 0 while i < 40000000 do i = i + 1 end return 1', '0'))
  assert.match(await new FrameReader(busy).next(5000), /^-ERR respool: upstream did not reply within 200 ms/)
  // Once Redis answers a direct PING the script is over: it was silent for all that time. (A
  // script past lua-time-limit makes Redis answer -BUSY meanwhile.)
  const probe = await RawClient.connect(redis.port)
  after(() => { probe.close() })
  const probeFrames = new FrameReader(probe)
  for (;;) {
    probe.write(cmd('PING'))
    const reply = await probeFrames.next(20000)
    if (reply === '+PONG\r\n') break
    assert.match(reply, /^-BUSY /)
  }
  assert.equal(c.buffered.length, 0)
  assert.equal(d.buffered.length, 0)
  const pusher = new Redis({ port: quick.address.port, maxRetriesPerRequest: 0 })
  after(() => { pusher.disconnect() })
  await pusher.rpush('slow', 'late')
  await pusher.xadd('slowstream', '*', 'f', 'v')
  assert.equal(await c.readExactly('*2\r\n$4\r\nslow\r\n$4\r\nlate\r\n'), '*2\r\n$4\r\nslow\r\n$4\r\nlate\r\n')
  const streamFrames = new FrameReader(d)
  assert.match(await streamFrames.next(), /^\*1\r\n\*2\r\n\$10\r\nslowstream\r\n/)
  assert.deepEqual(await streamFrames.framesBeforeSentinel(), [])
})

test('a client that disconnects while blocked never causes an element to be popped for nobody', { timeout: 10000 }, async () => {
  const blocked = await RawClient.connect(proxy.address.port)
  blocked.write(cmd('BLPOP', 'lost', '0'))
  await waitFor(() => proxy.router.pinCount === 1, 'BLPOP pinned')
  blocked.close()
  await waitFor(() => proxy.router.pinCount === 0, 'pin given back')
  // Redis no longer has the blocked connection...
  const direct = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  after(() => { direct.disconnect() })
  await waitFor(async () => /blocked_clients:0\r\n/.test(await direct.info('clients')), 'no client blocked in Redis')
  // ...so an element pushed now stays (Redis would hand it to a blocked client before it
  // answers the next command).
  const pusher = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { pusher.disconnect() })
  await pusher.rpush('lost', 'precious')
  assert.deepEqual(await pusher.lrange('lost', 0, -1), ['precious'])
  await pusher.del('lost')
})

test('a BLPOP 0 storm larger than the pool leaves shared traffic working, and every waiter gets exactly one element', { timeout: 30000 }, async () => {
  // Redis itself refuses any connection beyond the pool of 4 and this test's admin connection.
  const bounded = await startBoundedRedis(4 + 1)
  after(async () => { await bounded.stop() })
  const proxy = await startProxy({ upstream: bounded.redis.url, poolSize: 4, parkBlocking: false }) // the pinned path: at most 3 pins
  after(async () => { await proxy.destroy() })
  const WORKERS = 10
  const workers = await Promise.all(Array.from({ length: WORKERS }, async () => await RawClient.connect(proxy.address.port)))
  const shared = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { for (const w of workers) w.close(); shared.disconnect() })
  for (const w of workers) w.write(cmd('BLPOP', 'storm', '0'))
  // Three pins, of which blocking commands may hold two; one stays for transactions.
  await waitFor(() => proxy.router.pinCount === 2 && proxy.router.pinsWaiting === WORKERS - 2, 'two pinned, eight waiting')
  // Shared traffic still flows over the connection pins may not take.
  for (let i = 0; i < 20; i++) assert.equal(await shared.echo(`still-${i}`), `still-${i}`)
  // A transaction typed command by command (so it needs a pin) gets the pin blocking commands may not take.
  const tx = await RawClient.connect(proxy.address.port)
  after(() => { tx.close() })
  tx.write(cmd('MULTI'))
  assert.equal(await tx.readExactly('+OK\r\n', { timeoutMs: 2000, sentinel: false }), '+OK\r\n') // inside MULTI: the EXEC reply is checked with the sentinel
  tx.write(cmd('INCR', 'storm-tx'))
  assert.equal(await tx.readExactly('+QUEUED\r\n', { sentinel: false }), '+QUEUED\r\n')
  tx.write(cmd('EXEC'))
  assert.equal(await tx.readExactly('*1\r\n:1\r\n'), '*1\r\n:1\r\n')
  assert.ok(proxy.pool.stats.size <= 4)
  await shared.rpush('storm', ...Array.from({ length: WORKERS }, (_, i) => `e${i}`))
  const got = await Promise.all(workers.map(async (w) => {
    const frames = new FrameReader(w)
    const reply = await frames.next(10000)
    assert.deepEqual(await frames.framesBeforeSentinel(), [], 'one reply per waiter, nothing more')
    return reply
  }))
  const elements = got.map((r) => /^\*2\r\n\$5\r\nstorm\r\n\$2\r\n(e\d)\r\n$/.exec(r)?.[1]).sort()
  assert.deepEqual(elements, Array.from({ length: WORKERS }, (_, i) => `e${i}`).sort())
  await waitFor(() => proxy.router.pinCount === 0, 'all pins released')
  assert.ok(await bounded.upstreamConnections() <= 4)
  await bounded.assertNoneRejected()
})

test('time waiting for a pin counts against a blocking command\'s own timeout', { timeout: 15000 }, async (t) => {
  const small = await startProxy({ upstream: redis.url, poolSize: 2, maxPins: 1, parkBlocking: false })
  after(async () => { await small.destroy() })
  const holder = await RawClient.connect(small.address.port)
  const waiter = await RawClient.connect(small.address.port)
  after(() => { holder.close(); waiter.close() })
  holder.write(cmd('BLPOP', 'held', '0'))
  await waitFor(() => small.router.pinCount === 1, 'holder pinned')
  const started = Date.now()
  waiter.write(cmd('BRPOP', 'other', '1'))
  assert.equal(await waiter.readExactly('*-1\r\n', { timeoutMs: 5000 }), '*-1\r\n')
  const elapsed = Date.now() - started
  t.diagnostic(`BRPOP 1 answered after ${elapsed} ms`)
  // Not before its own timeout; and well before what waiting for the pin (which never comes) and
  // then for Redis's 1 s would take, or the acquire timeout's error.
  assert.ok(elapsed >= 900 && elapsed < 4000, `timed out after ${elapsed} ms`)
})

test('a non-blocking command waiting for a pin fails after the deadline with an error naming the pool', { timeout: 15000 }, async () => {
  const small = await startProxy({ upstream: redis.url, poolSize: 2, maxPins: 1, acquireTimeoutMs: 300, parkBlocking: false })
  after(async () => { await small.destroy() })
  const holder = await RawClient.connect(small.address.port)
  const waiter = await RawClient.connect(small.address.port)
  after(() => { holder.close(); waiter.close() })
  holder.write(cmd('BLPOP', 'held2', '0'))
  await waitFor(() => small.router.pinCount === 1, 'holder pinned')
  waiter.write(Buffer.concat([cmd('MULTI'), cmd('PING')]))
  const frames = new FrameReader(waiter)
  assert.match(await frames.next(3000), /^-ERR respool: pool exhausted: .*pinn.*waited 300 ms\r\n$/)
  // The command after it still runs (on a shared lane).
  assert.equal(await frames.next(), '+PONG\r\n')
  assert.deepEqual(await frames.framesBeforeSentinel(), [])
  assert.ok(small.router.pinWaitTimeouts >= 1)
})

test('WAIT counts the client\'s own writes made through shared lanes', { timeout: 30000 }, async () => {
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(redis.port)])
  after(async () => { await replica.stop() })
  const admin = new Redis({ port: replica.port, maxRetriesPerRequest: 0 })
  after(() => { admin.disconnect() })
  await waitFor(async () => /master_link_status:up/.test(await admin.info('replication')), 'replica in sync', 10000)
  const client = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { client.disconnect() })
  await client.set('replicated', '1')
  assert.equal(await client.wait(1, 2000), 1)
  // With the replica frozen, a new write cannot be acknowledged: WAIT must say 0, not the
  // 1 a connection that carried none of the writes would report.
  replica.signal('SIGSTOP')
  try {
    await client.set('replicated', '2')
    assert.equal(await client.wait(1, 300), 0)
  } finally {
    replica.signal('SIGCONT')
  }
  assert.equal(await client.wait(1, 5000), 1)
})

test('a pin that needs room gets it even when the lane given up carries a client that never stops pipelining', { timeout: 40000 }, async (t) => {
  // Pool 2: both connections become shared lanes under three clients that write a new batch of
  // commands every millisecond, so replies are always due to them. (Each client has at most 128
  // commands in flight, its reply window; three of them put 256 on a lane, which makes it busy,
  // whatever Redis's speed: with two, a second lane opened only when Redis paused for 5 ms.)
  // A BLPOP then needs one of the connections; the lane chosen to drain must not be kept busy
  // forever by the clients on it (they move to the other lane once their replies on it are in).
  const small = await startProxy({ upstream: redis.url, poolSize: 2, acquireTimeoutMs: 8000, parkBlocking: false })
  after(async () => { await small.destroy() })
  const batch = Buffer.concat(Array.from({ length: 1000 }, () => cmd('ECHO', 'x')))
  const pipeliners = await Promise.all([1, 2, 3].map(async () => await RawClient.connect(small.address.port)))
  const timers: NodeJS.Timeout[] = []
  after(() => { for (const t of timers) clearInterval(t); for (const p of pipeliners) p.close() })
  for (const p of pipeliners) {
    p.write(batch)
    timers.push(setInterval(() => { p.write(batch); p.discard() }, 1))
  }
  await waitFor(() => small.router.laneCount === 2, 'both connections are shared lanes')
  const blocked = await RawClient.connect(small.address.port)
  after(() => { blocked.close() })
  const asked = Date.now()
  blocked.write(cmd('BLPOP', 'room-for-a-pin', '0.2'))
  const reply = await blocked.readExactly('*-1\r\n', { timeoutMs: 12000 })
  const elapsed = Date.now() - asked
  for (const t of timers) clearInterval(t)
  assert.equal(reply, '*-1\r\n', 'BLPOP ran and timed out on its own terms (not a pool timeout)')
  t.diagnostic(`BLPOP 0.2 answered after ${elapsed} ms`)
  assert.ok(elapsed < 8000, `BLPOP answered after ${elapsed} ms, past the pin deadline`)
  // With both connections shared when it asked, the pin can only have had one given up.
  assert.equal(small.router.pinsTotal, 1)
})
