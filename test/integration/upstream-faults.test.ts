import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { startRedis } from '../helpers/redis-server.js'
import { startProxy, sessionOf } from '../helpers/proxy.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { startFakeRedis } from '../helpers/fake-redis.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { waitFor } from '../helpers/wait.js'

/** PINGs until respool answers +PONG again (errors while the upstream is down are skipped). */
async function servedAgain (c: RawClient, withinMs: number): Promise<boolean> {
  const frames = new FrameReader(c)
  const started = Date.now()
  while (Date.now() - started < withinMs) {
    c.write(cmd('PING'))
    const reply = await frames.next(3000)
    if (reply === '+PONG\r\n') return true
    assert.match(reply, /^-ERR respool: /)
  }
  return false
}

test('Redis killed with commands in flight: every command gets an error, and respool serves again within about a second of the restart', { timeout: 30000 }, async (t) => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 2, reconnectMaxMs: 200, acquireTimeoutMs: 1000 })
  after(async () => { await proxy.destroy() })
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  const session = await sessionOf(proxy, c)
  c.write(cmd('PING'))
  assert.equal(await c.readExactly('+PONG\r\n'), '+PONG\r\n')
  // A frozen Redis keeps the commands in flight until it is killed.
  redis.signal('SIGSTOP')
  c.write(Buffer.concat(Array.from({ length: 10 }, (_, i) => cmd('ECHO', `m${i}`))))
  await waitFor(() => session.inflight === 10, 'the ten commands in flight')
  assert.equal(c.buffered.length, 0, 'Redis is asleep, nothing answered yet')
  const killedAt = Date.now()
  await redis.kill()
  // The errors come from the closed connection, not from the command timeout (10 s).
  const frames = new FrameReader(c)
  const errors = await frames.take(10, 5000)
  t.diagnostic(`ten errors ${Date.now() - killedAt} ms after the kill`)
  for (const error of errors) assert.match(error, /^-ERR respool: upstream (closed the connection|connection error)[^\r\n]*\r\n$/)
  assert.deepEqual(await frames.available(), [])
  await redis.restart()
  const back = Date.now()
  assert.ok(await servedAgain(c, 5000))
  const servedAfter = Date.now() - back
  t.diagnostic(`served again ${servedAfter} ms after the restart`)
  assert.ok(servedAfter < 3000, `served again ${servedAfter} ms after the restart`)
})

test('a stalled Redis (SIGSTOP): in-flight commands fail after the command timeout; it recovers after SIGCONT', { timeout: 30000 }, async (t) => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 2, commandTimeoutMs: 500, acquireTimeoutMs: 500, connectTimeoutMs: 300, reconnectMaxMs: 100 })
  after(async () => { await proxy.destroy() })
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(cmd('PING'))
  assert.equal(await c.readExactly('+PONG\r\n'), '+PONG\r\n')
  redis.signal('SIGSTOP')
  try {
    const frames = new FrameReader(c)
    const started = Date.now()
    c.write(Buffer.concat([cmd('SET', 'a', '1'), cmd('GET', 'a')]))
    const errors = await frames.take(2, 5000)
    const elapsed = Date.now() - started
    t.diagnostic(`failed after ${elapsed} ms`)
    assert.ok(elapsed >= 450 && elapsed < 3000, `failed after ${elapsed} ms`)
    for (const error of errors) assert.match(error, /^-ERR respool: upstream did not reply within 500 ms/)
    // While stalled, new commands fail within the acquire/connect deadlines rather than hanging.
    c.write(cmd('GET', 'a'))
    assert.match(await frames.next(5000), /^-ERR respool: /)
    assert.deepEqual(await frames.available(), [])
  } finally {
    redis.signal('SIGCONT')
  }
  assert.ok(await servedAgain(c, 5000), 'served after SIGCONT')
})

test('an upstream that accepts but never completes the handshake fails connects at the connect timeout', { timeout: 15000 }, async (t) => {
  const sockets: net.Socket[] = []
  const silent = net.createServer((s) => { sockets.push(s) })
  silent.listen(0, '127.0.0.1')
  await new Promise((resolve) => silent.once('listening', resolve))
  after(() => { for (const s of sockets) s.destroy(); silent.close() })
  const port = (silent.address() as net.AddressInfo).port
  const proxy = await startProxy({ upstream: `redis://127.0.0.1:${port}`, connectTimeoutMs: 200, acquireTimeoutMs: 600 })
  after(async () => { await proxy.destroy() })
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  const started = Date.now()
  c.write(cmd('PING'))
  const frames = new FrameReader(c)
  assert.match(await frames.next(5000), /^-ERR respool: upstream redis:\/\/127\.0\.0\.1:\d+\/0 unavailable \(connect to 127\.0\.0\.1:\d+ timed out after 200 ms\)/)
  const elapsed = Date.now() - started
  t.diagnostic(`refused after ${elapsed} ms`)
  // Within the acquire timeout (600 ms) and some room, not left hanging.
  assert.ok(elapsed < 3000, `refused after ${elapsed} ms`)
})

test('a reply nobody asked for drops the connection instead of handing it to the next command', { timeout: 15000 }, async () => {
  let mode: 'stray' | 'normal' = 'stray'
  const fake = await startFakeRedis((args, socket) => {
    if (args[0] === 'ECHO' && mode === 'stray') {
      // Answer, then send an extra reply that would otherwise be taken as the next command's.
      socket.write(`$${args[1].length}\r\n${args[1]}\r\n+STRAY\r\n`)
      mode = 'normal'
      return
    }
    if (args[0] === 'ECHO') socket.write(`$${args[1].length}\r\n${args[1]}\r\n`)
    else socket.write('-ERR unknown\r\n')
  })
  after(async () => { await fake.close() })
  const proxy = await startProxy({ upstream: `redis://127.0.0.1:${fake.port}`, poolSize: 2, reconnectBaseMs: 10 })
  after(async () => { await proxy.destroy() })
  const a = await RawClient.connect(proxy.address.port)
  after(() => { a.close() })
  a.write(cmd('ECHO', 'first'))
  // No sentinel yet: it would open a new connection before the old one is seen dropped.
  assert.equal(await a.readExactly('$5\r\nfirst\r\n', { sentinel: false }), '$5\r\nfirst\r\n')
  await waitFor(() => proxy.router.laneCount === 0 && proxy.pool.stats.borrowed === 0, 'the out-of-step connection is dropped')
  const b = await RawClient.connect(proxy.address.port)
  after(() => { b.close() })
  b.write(cmd('ECHO', 'second'))
  assert.equal(await b.readExactly('$6\r\nsecond\r\n'), '$6\r\nsecond\r\n')
  assert.equal(await a.readExactly(''), '', 'the stray reply reached nobody')
})

test('an upstream that closes halfway through a reply fails that command and nothing else is mixed up', { timeout: 15000 }, async () => {
  const dying = new WeakSet<object>()
  const fake = await startFakeRedis((args, socket) => {
    if (dying.has(socket)) return // the connection is going away mid-reply: nothing more is sent
    if (args[0] === 'GET' && args[1] === 'half') {
      dying.add(socket)
      socket.write('$10\r\nhello')
      setTimeout(() => socket.destroy(), 20)
      return
    }
    socket.write(`$${args[1]?.length ?? 0}\r\n${args[1] ?? ''}\r\n`)
  })
  after(async () => { await fake.close() })
  const proxy = await startProxy({ upstream: `redis://127.0.0.1:${fake.port}`, poolSize: 2, reconnectBaseMs: 10 })
  after(async () => { await proxy.destroy() })
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('GET', 'half'), cmd('ECHO', 'after')]))
  const [first, second] = await new FrameReader(c).take(2)
  assert.match(first, /^-ERR respool: upstream (closed the connection|connection error)[^\r\n]*\r\n$/)
  assert.match(second, /^-ERR respool: upstream (closed the connection|connection error)[^\r\n]*\r\n$/)
  c.write(cmd('ECHO', 'again'))
  assert.equal(await c.readExactly('$5\r\nagain\r\n'), '$5\r\nagain\r\n')
})

test('replies one byte at a time are reassembled exactly', { timeout: 15000 }, async () => {
  // One byte per write, replies strictly one after another.
  let queue = Buffer.alloc(0)
  let dripping = false
  const fake = await startFakeRedis((args, socket) => {
    queue = Buffer.concat([queue, Buffer.from(`*2\r\n$${args[1].length}\r\n${args[1]}\r\n:12345678901234567890\r\n`)])
    if (dripping) return
    dripping = true
    const drip = (): void => {
      if (queue.length === 0 || socket.destroyed) {
        dripping = false
        return
      }
      socket.write(queue.subarray(0, 1))
      queue = queue.subarray(1)
      setImmediate(drip)
    }
    drip()
  })
  after(async () => { await fake.close() })
  const proxy = await startProxy({ upstream: `redis://127.0.0.1:${fake.port}`, poolSize: 2 })
  after(async () => { await proxy.destroy() })
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('ECHO', 'drip'), cmd('ECHO', 'drop')]))
  const expected = '*2\r\n$4\r\ndrip\r\n:12345678901234567890\r\n*2\r\n$4\r\ndrop\r\n:12345678901234567890\r\n'
  // This server answers every command in its own shape, so the end is marked by hand: the reply
  // to one more ECHO must come next, with nothing before it.
  assert.equal(await c.readExactly(expected, { sentinel: false }), expected)
  c.write(cmd('ECHO', 'end'))
  const end = '*2\r\n$3\r\nend\r\n:12345678901234567890\r\n'
  assert.equal(await c.readExactly(end, { sentinel: false }), end)
})

test('while Redis is unreachable, a client waiting for the first lane is one wait in the pool, not two', { timeout: 15000 }, async () => {
  const { freePort } = await import('../helpers/redis-server.js')
  const dead = await freePort()
  const proxy = await startProxy({ upstream: `redis://127.0.0.1:${dead}`, acquireTimeoutMs: 3000, reconnectBaseMs: 500, reconnectMaxMs: 500 })
  after(async () => { await proxy.destroy() })
  await waitFor(() => proxy.pool.counters.connectFailures >= 1, 'the warm-up connect failed')
  const before = proxy.pool.stats.waiting
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(cmd('PING'))
  await waitFor(() => proxy.pool.stats.waiting > before, 'the PING waits for a lane')
  await new Promise((resolve) => setTimeout(resolve, 50))
  assert.equal(proxy.pool.stats.waiting - before, 1)
})
