import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis, freePort, type RedisServer } from '../helpers/redis-server.js'
import { startProxy, sessionOf } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

let redis: RedisServer
let proxy: ProxyServer

before(async () => {
  redis = await startRedis()
  proxy = await startProxy({ upstream: redis.url, poolSize: 4, metricsPort: 0, adminPassword: 'admin-secret' })
})
after(async () => {
  await proxy?.destroy()
  await redis?.stop()
})

async function get (path: string, server = proxy): Promise<{ status: number, body: string }> {
  const address = server.httpAddress
  assert.ok(address !== null)
  const res = await fetch(`http://127.0.0.1:${address.port}${path}`)
  return { status: res.status, body: await res.text() }
}

function metric (text: string, name: string): number {
  const line = text.split('\n').find((l) => l.startsWith(name + ' ') || l.startsWith(name + '{'))
  assert.ok(line !== undefined, `metric ${name} present`)
  return Number(line.split(' ').at(-1))
}

test('/metrics exposes pool gauges, command counters by class, pins by reason and latency histograms', { timeout: 15000 }, async () => {
  const client = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  const tx = await RawClient.connect(proxy.address.port)
  after(() => { client.disconnect(); tx.close() })
  for (let i = 0; i < 10; i++) await client.set(`m${i}`, 'v')
  tx.write(Buffer.concat([cmd('MULTI'), cmd('INCR', 'mm')]))
  assert.equal(await tx.readExactly('+OK\r\n+QUEUED\r\n', { sentinel: false }), '+OK\r\n+QUEUED\r\n') // inside MULTI
  const { status, body } = await get('/metrics')
  assert.equal(status, 200)
  assert.ok(metric(body, 'respool_commands_total{class="shared"}') >= 10)
  assert.equal(metric(body, 'respool_commands_total{class="multi"}'), 1)
  assert.equal(metric(body, 'respool_pool_pinned_connections{reason="multi"}'), 1)
  assert.equal(metric(body, 'respool_pins_total{reason="multi"}'), 1)
  assert.ok(metric(body, 'respool_pool_connections') <= 4)
  assert.equal(metric(body, 'respool_pool_max_connections'), 4)
  assert.ok(metric(body, 'respool_command_duration_seconds_count') >= 10)
  assert.ok(metric(body, 'respool_pin_wait_seconds_count') >= 1)
  assert.ok(metric(body, 'respool_clients') >= 2)
  for (const name of ['respool_pool_idle_connections', 'respool_pool_shared_connections', 'respool_pool_waiting', 'respool_limit_hits_total{limit="max_clients"}', 'respool_protocol_errors_total', 'respool_pin_wait_timeouts_total', 'respool_upstream_connects_total']) metric(body, name)
  tx.write(cmd('EXEC'))
  assert.equal(await tx.readExactly('*1\r\n:1\r\n'), '*1\r\n:1\r\n')
  await waitFor(async () => metric((await get('/metrics')).body, 'respool_pool_pinned_connections{reason="multi"}') === 0, 'pin gauge back to 0')
  assert.ok(metric((await get('/metrics')).body, 'respool_pin_duration_seconds_count') >= 1)
})

test('/healthz is alive; /readyz follows the upstream and turns not-ready first on drain', { timeout: 20000 }, async () => {
  assert.deepEqual(await get('/healthz'), { status: 200, body: 'ok\n' })
  await waitFor(async () => (await get('/readyz')).status === 200, 'ready')
  const deadPort = await freePort()
  const orphan = await startProxy({ upstream: `redis://127.0.0.1:${deadPort}`, metricsPort: 0, acquireTimeoutMs: 200 })
  after(async () => { await orphan.destroy() })
  await waitFor(async () => (await get('/readyz', orphan)).status === 503, 'not ready without an upstream')
  assert.match((await get('/readyz', orphan)).body, /upstream unreachable|connecting/)
  const draining = await startProxy({ upstream: redis.url, metricsPort: 0, shutdownGraceMs: 1000 })
  const held = await RawClient.connect(draining.address.port)
  after(() => { held.close() })
  held.write(cmd('BLPOP', 'drain-q', '0'))
  await waitFor(() => draining.router.pinCount === 1, 'held')
  await waitFor(async () => (await get('/readyz', draining)).status === 200, 'ready before drain')
  const closing = draining.close()
  const during = await get('/readyz', draining)
  assert.deepEqual(during, { status: 503, body: 'draining\n' })
  await closing
})

test('RESPOOL POOLS, CLIENTS and STATS need the admin password when one is set', { timeout: 10000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  const frames = new FrameReader(c)
  c.write(cmd('RESPOOL', 'POOLS'))
  assert.match(await frames.next(), /^-NOPERM respool: RESPOOL AUTH <admin password> first\r\n$/)
  c.write(Buffer.concat([cmd('RESPOOL', 'AUTH', 'wrong'), cmd('RESPOOL', 'AUTH', 'admin-secret')]))
  const [wrong, right] = await frames.take(2)
  assert.match(wrong, /^-WRONGPASS/)
  assert.equal(right, '+OK\r\n')
  c.write(cmd('RESPOOL', 'POOLS'))
  const pools = await frames.next()
  assert.match(pools, /pool_size:4\r\n/)
  assert.match(pools, /upstream:redis:\/\/127\.0\.0\.1:\d+\/0\r\n/)
  assert.match(pools, /waiting_connections:\d+\r\n/)
  c.write(Buffer.concat([cmd('CLIENT', 'SETNAME', 'console'), cmd('RESPOOL', 'CLIENTS')]))
  const [named, clients] = await frames.take(2)
  assert.equal(named, '+OK\r\n')
  assert.match(clients, /id=\d+ addr=127\.0\.0\.1:\d+ age=\d+ db=0 resp=2 name=console upstream=\S+ pinned=- inflight=0 pending=0/)
  c.write(cmd('RESPOOL', 'STATS'))
  const stats = await frames.next()
  assert.match(stats, /commands_total:\d+/)
  assert.match(stats, /upstream_connect_failures_total:\d+\r\n/)
  assert.deepEqual(await frames.framesBeforeSentinel(), [])
})

test('RESPOOL PAUSE holds new commands until RESUME; KILL CLIENT disconnects one client', { timeout: 15000 }, async () => {
  const admin = await RawClient.connect(proxy.address.port)
  const app = await RawClient.connect(proxy.address.port)
  const victim = await RawClient.connect(proxy.address.port)
  after(() => { admin.close(); app.close(); victim.close() })
  const appSession = await sessionOf(proxy, app)
  const victimSession = await sessionOf(proxy, victim)
  admin.write(Buffer.concat([cmd('RESPOOL', 'AUTH', 'admin-secret'), cmd('RESPOOL', 'PAUSE')]))
  // No sentinel while paused (it would be held too); the next exact read covers these bytes.
  assert.equal(await admin.readExactly('+OK\r\n+OK\r\n', { sentinel: false }), '+OK\r\n+OK\r\n')
  app.write(cmd('SET', 'paused', '1'))
  await waitFor(() => appSession.pending === 1, 'the SET held')
  assert.equal(app.buffered.length, 0, 'held while paused')
  admin.write(cmd('RESPOOL', 'RESUME'))
  assert.equal(await admin.readExactly('+OK\r\n'), '+OK\r\n')
  assert.equal(await app.readExactly('+OK\r\n'), '+OK\r\n')
  admin.write(cmd('RESPOOL', 'KILL', 'CLIENT', String(victimSession.id)))
  assert.equal(await admin.readExactly(':1\r\n'), ':1\r\n')
  assert.equal(await victim.readUntilClose(2000), '')
  // Without the admin password nothing can be changed.
  const open = await startProxy({ upstream: redis.url })
  after(async () => { await open.destroy() })
  const c = await RawClient.connect(open.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('RESPOOL', 'PAUSE'), cmd('RESPOOL', 'POOLS')]))
  const openFrames = new FrameReader(c)
  const [refused, readable] = await openFrames.take(2)
  assert.match(refused, /^-NOPERM respool: RESPOOL PAUSE needs --admin-password/)
  assert.match(readable, /paused:0/)
  assert.deepEqual(await openFrames.framesBeforeSentinel(), [])
})

test('reload applies pool size, limits and log level to a running proxy and reports what needs a restart', { timeout: 15000 }, async () => {
  // Blocking commands on the pinned path (--park-blocking no) hold the pins whose cap changes.
  const p = await startProxy({ upstream: redis.url, poolSize: 2, maxPins: 1, acquireTimeoutMs: 300, parkBlocking: false })
  after(async () => { await p.destroy() })
  const holders = await Promise.all([1, 2, 3].map(async () => await RawClient.connect(p.address.port)))
  after(() => { for (const h of holders) h.close() })
  holders[0].write(cmd('BLPOP', 'reload-q', '0'))
  await waitFor(() => p.router.pinCount === 1, 'one pin (the cap)')
  holders[1].write(cmd('BLPOP', 'reload-q', '0'))
  await waitFor(() => p.router.pinsWaiting === 1, 'second waits')
  const result = p.reload({ upstream: redis.url, poolSize: 6, maxPins: 4, acquireTimeoutMs: 300, port: 1, logLevel: 'warn', parkBlocking: false })
  assert.deepEqual(result.applied.sort(), ['logLevel', 'maxPins', 'poolSize'])
  assert.deepEqual(result.needsRestart, ['port'])
  await waitFor(() => p.router.pinCount === 2, 'the waiter got a pin after the cap grew')
  holders[2].write(cmd('BLPOP', 'reload-q', '0'))
  await waitFor(() => p.router.pinCount === 3, 'a third pin fits in the bigger pool')
  assert.equal(p.pool.stats.max, 6)
  assert.equal(p.log.level, 'warn')
})

test('the package embeds: import { createProxy } from \'respool\'', { timeout: 10000 }, async () => {
  const { createProxy, ProxyServer } = await import('respool')
  const embedded = await createProxy({ port: 0, upstream: redis.url, poolSize: 2 })
  after(async () => { await embedded.close() })
  assert.ok(embedded instanceof ProxyServer)
  const c = new Redis({ port: embedded.address.port, maxRetriesPerRequest: 0 })
  after(() => { c.disconnect() })
  assert.equal(await c.ping(), 'PONG')
  assert.equal(embedded.snapshot().clients, 1)
})
