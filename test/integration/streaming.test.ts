import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy, holdPin, sessionOf } from '../helpers/proxy.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// Values above 1 MB are passed through in pieces, in both directions.
const SIZE = 24 * 1024 * 1024

let redis: RedisServer
let proxy: ProxyServer
let releaseHold: (() => void) | undefined

before(async () => {
  redis = await startRedis()
  // One shared lane (the other connection is pinned by a blocked client): every client shares
  // the lane the large values stream through.
  proxy = await startProxy({ upstream: redis.url, poolSize: 2 })
  releaseHold = await holdPin(proxy)
})
after(async () => {
  releaseHold?.()
  await proxy?.destroy()
  await redis?.stop()
})

function pattern (size: number): Buffer {
  const value = Buffer.alloc(size)
  for (let i = 0; i < size; i += 997) value[i] = (i / 997) & 0xff
  return value
}

test('a large SET sent slowly streams through while other clients keep using the same lane', { timeout: 60000 }, async () => {
  const value = pattern(SIZE)
  const command = cmd('SET', 'big-stream', value)
  const writer = net.connect({ port: proxy.address.port, host: '127.0.0.1' })
  after(() => { writer.destroy() })
  await new Promise((resolve) => writer.once('connect', resolve))
  let reply = ''
  writer.on('data', (d: Buffer) => { reply += d.toString() })
  const other = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { other.disconnect() })
  // Send the command in 1 MB pieces with pauses, while another client runs commands.
  let busy = true
  let otherOps = 0
  const otherLoop = (async () => {
    while (busy) {
      assert.equal(await other.echo(`other-${otherOps}`), `other-${otherOps}`)
      otherOps++
    }
  })()
  for (let i = 0; i < command.length; i += 1024 * 1024) {
    writer.write(command.subarray(i, i + 1024 * 1024))
    await new Promise((resolve) => setTimeout(resolve, 10))
  }
  await waitFor(() => reply === '+OK\r\n', 'SET answered', 20000)
  busy = false
  await otherLoop
  assert.ok(otherOps > 0)
  const direct = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  after(() => { direct.disconnect() })
  assert.ok((await direct.getBuffer('big-stream'))?.equals(value))
})

test('a large GET streams to a slow reader, intact, and the lane serves others afterwards', { timeout: 60000 }, async () => {
  const value = pattern(SIZE)
  const seed = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  after(() => { seed.disconnect() })
  await seed.set('big-read', value)
  const reader = net.connect({ port: proxy.address.port, host: '127.0.0.1' })
  after(() => { reader.destroy() })
  await new Promise((resolve) => reader.once('connect', resolve))
  const header = `$${SIZE}\r\n`
  const expectedLength = header.length + SIZE + 2
  const received: Buffer[] = []
  let length = 0
  reader.on('data', (d: Buffer) => {
    received.push(d)
    length += d.length
    // A slow consumer: pause after each chunk for a moment.
    reader.pause()
    setTimeout(() => reader.resume(), 1)
  })
  reader.write(Buffer.concat([cmd('GET', 'big-read'), cmd('PING')]))
  const other = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { other.disconnect() })
  const echoed = other.echo('after-the-big-one')
  await waitFor(() => length >= expectedLength + 7, 'GET and PING replies', 40000)
  const all = Buffer.concat(received)
  assert.equal(all.subarray(0, header.length).toString(), header)
  assert.ok(all.subarray(header.length, header.length + SIZE).equals(value))
  assert.equal(all.subarray(expectedLength).toString(), '\r\n+PONG\r\n'.slice(2))
  assert.equal(await echoed, 'after-the-big-one')
})

test('a client that leaves in the middle of a large SET leaves nothing behind and nobody else is hurt', { timeout: 30000 }, async () => {
  const value = pattern(SIZE)
  const command = cmd('SET', 'half-written', value)
  const leaver = await RawClient.connect(proxy.address.port)
  const session = await sessionOf(proxy, leaver)
  // A command first, so the client has a lane its large command can stream to.
  leaver.write(cmd('PING'))
  assert.equal(await leaver.readExactly('+PONG\r\n', { sentinel: false }), '+PONG\r\n')
  leaver.write(command.subarray(0, 4 * 1024 * 1024))
  await waitFor(() => session.inflight > 0, 'the large SET streaming upstream')
  leaver.socket.resetAndDestroy()
  const other = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { other.disconnect() })
  // The half-written connection is dropped and replaced; the next commands work.
  await waitFor(async () => (await other.echo('fine').catch(() => 'error')) === 'fine', 'service continues', 10000)
  assert.equal(await other.exists('half-written'), 0)
})

test('a client that never reads a large reply does not stall the others on its lane', { timeout: 30000 }, async (t) => {
  const p = await startProxy({ upstream: redis.url, poolSize: 2, commandTimeoutMs: 3000 })
  after(async () => { await p.destroy() })
  after(await holdPin(p)) // one shared lane: the reader and the other client share it
  const seed = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  after(() => { seed.disconnect() })
  await seed.set('big-unread', pattern(SIZE))
  const sleeper = net.connect({ port: p.address.port, host: '127.0.0.1' })
  after(() => { sleeper.destroy() })
  await new Promise((resolve) => sleeper.once('connect', resolve))
  sleeper.pause() // never reads
  const gets = async (): Promise<number> => Number(/cmdstat_get:calls=(\d+)/.exec(await seed.info('commandstats'))?.[1] ?? 0)
  const before = await gets()
  sleeper.write(cmd('GET', 'big-unread'))
  await waitFor(async () => await gets() > before, 'Redis ran the GET')
  const other = await RawClient.connect(p.address.port)
  after(() => { other.close() })
  const started = Date.now()
  other.write(cmd('PING'))
  // Held behind the unread reply, the PING would wait until the command timeout (3 s) dropped
  // the lane: it must be answered before that.
  assert.equal(await other.readExactly('+PONG\r\n', { timeoutMs: 2900 }), '+PONG\r\n')
  t.diagnostic(`PING answered after ${Date.now() - started} ms`)
})

test('a client leaving mid-command only costs the lane once the others\' replies are in', { timeout: 30000 }, async () => {
  const p = await startProxy({ upstream: redis.url, poolSize: 2 })
  after(async () => { await p.destroy() })
  after(await holdPin(p)) // one shared lane
  const busy = await RawClient.connect(p.address.port)
  after(() => { busy.close() })
  const busySession = await sessionOf(p, busy)
  const leaver = await RawClient.connect(p.address.port)
  const leaverSession = await sessionOf(p, leaver)
  leaver.write(cmd('PING'))
  assert.equal(await leaver.readExactly('+PONG\r\n', { sentinel: false }), '+PONG\r\n')
  // A slow script is in flight on the only lane when another client abandons a large SET.
  busy.write(cmd('EVAL', 'local i = 0 while i < 20000000 do i = i + 1 end return 1', '0'))
  await waitFor(() => busySession.inflight > 0, 'the script in flight')
  leaver.write(Buffer.concat([Buffer.from(`*3\r\n$3\r\nSET\r\n$1\r\nk\r\n$${SIZE}\r\n`), Buffer.alloc(2 * 1024 * 1024, 7)]))
  await waitFor(() => leaverSession.inflight > 0, 'the large SET streaming behind it')
  assert.equal(busySession.inflight, 1, 'the script still in flight')
  leaver.socket.resetAndDestroy()
  assert.equal(await busy.readExactly(':1\r\n', { timeoutMs: 20000, sentinel: false }), ':1\r\n')
  // Then the lane is given up and replaced: the next commands, the same client's and a new
  // client's, are answered (with nothing before their replies).
  busy.write(cmd('PING'))
  assert.equal(await busy.readExactly('+PONG\r\n', { timeoutMs: 10000 }), '+PONG\r\n', 'served after the lane was given up')
  const next = await RawClient.connect(p.address.port)
  after(() => { next.close() })
  next.write(cmd('PING'))
  assert.equal(await next.readExactly('+PONG\r\n', { timeoutMs: 10000 }), '+PONG\r\n')
})

test('an upstream dying while a large command streams: the client gets an error and is still served', { timeout: 30000 }, async () => {
  const mortal = await startRedis()
  after(async () => { await mortal.stop() })
  const p = await startProxy({ upstream: mortal.url, poolSize: 2, acquireTimeoutMs: 500, reconnectMaxMs: 100 })
  after(async () => { await p.destroy() })
  const c = await RawClient.connect(p.address.port)
  after(() => { c.close() })
  c.write(cmd('PING'))
  assert.equal(await c.readExactly('+PONG\r\n'), '+PONG\r\n')
  mortal.signal('SIGSTOP') // Redis stops reading: the stream fills the socket
  const session = await sessionOf(p, c)
  c.write(Buffer.concat([cmd('SET', 'never', Buffer.alloc(64 * 1024 * 1024, 1)), cmd('PING')]))
  await waitFor(() => session.inflight > 0, 'the SET streaming', 10000)
  await mortal.kill()
  // The SET fails with an error; the rest of it is read and dropped; the PING is answered
  // (with an error while Redis is down): nothing hangs.
  const frames = new FrameReader(c)
  const [first, second] = await frames.take(2, 15000)
  assert.match(first, /^-ERR respool: upstream[^\r\n]*\r\n$/)
  assert.match(second, /^(-ERR respool: upstream[^\r\n]*|\+PONG)\r\n$/)
})
