import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { once } from 'node:events'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { cmd } from '../helpers/raw-client.js'
import { commandOn } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * Clients that stop reading, or read slowly, cost only themselves: the others' commands are
 * answered as fast as with nobody stuck, respool's memory stays bounded, and the stuck clients'
 * commands wait unsent (backpressure ends at Redis, not in respool's heap).
 */

const BIG = 512 * 1024
let upstream: RedisServer

before(async () => {
  upstream = await startRedis()
  await commandOn(upstream.port, 'SET', 'big', 'x'.repeat(BIG))
})

after(async () => {
  await upstream?.stop()
})

/** A client socket that sends a pipeline of GETs of the big value and reads nothing. */
async function stuckClient (port: number, gets: number): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1' })
  socket.on('error', () => {})
  await once(socket, 'connect')
  socket.pause() // never reads: what respool sends piles up in the kernel, then in respool
  socket.write(Buffer.concat(Array.from({ length: gets }, () => cmd('GET', 'big'))))
  return socket
}

/** A client socket that reads at about `bytesPerSecond`. */
async function slowReader (port: number, gets: number, bytesPerSecond: number): Promise<net.Socket> {
  const socket = net.connect({ port, host: '127.0.0.1' })
  socket.on('error', () => {})
  await once(socket, 'connect')
  socket.on('data', (chunk: Buffer) => {
    socket.pause()
    setTimeout(() => { if (!socket.destroyed) socket.resume() }, (chunk.length / bytesPerSecond) * 1000).unref()
  })
  socket.write(Buffer.concat(Array.from({ length: gets }, () => cmd('GET', 'big'))))
  return socket
}

/** A well-behaved client's PING latencies (ms), one at a time, for `ms`. */
async function pingLatencies (port: number, ms: number): Promise<number[]> {
  const socket = net.connect({ port, host: '127.0.0.1' })
  await once(socket, 'connect')
  const latencies: number[] = []
  const end = performance.now() + ms
  try {
    while (performance.now() < end) {
      const start = performance.now()
      socket.write(cmd('PING'))
      let got = ''
      while (got !== '+PONG\r\n') got += ((await once(socket, 'data')) as Buffer[])[0].toString('latin1')
      latencies.push(performance.now() - start)
    }
  } finally {
    socket.destroy()
  }
  return latencies.sort((a, b) => a - b)
}

const p99 = (sorted: number[]): number => sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * 0.99))]

async function getCalls (): Promise<number> {
  const stats = await commandOn(upstream.port, 'INFO', 'commandstats')
  return Number(/cmdstat_get:calls=(\d+)/.exec(stats)?.[1] ?? 0)
}

test('three clients that pipeline 2,000 GETs of 512 KB and never read: a fourth client\'s PING stays fast, their commands wait unsent, respool\'s memory stays bounded', { timeout: 60000 }, async (t) => {
  const proxy = await startProxy({ upstream: upstream.url })
  after(async () => { await proxy.destroy() })
  await commandOn(upstream.port, 'CONFIG', 'RESETSTAT')
  const rssBefore = process.memoryUsage().rss
  const stuck = await Promise.all([1, 2, 3].map(async () => await stuckClient(proxy.address.port, 2000)))
  after(() => { for (const s of stuck) s.destroy() })
  // Each stuck client ends up with nothing in flight and most of its pipeline unsent.
  const stuckSessions = (): ReturnType<ProxyServer['sessions']> => proxy.sessions().filter((s) => s.pending > 0)
  await waitFor(() => stuckSessions().length === 3 && stuckSessions().every((s) => s.inflight === 0 && s.pending > 1000), 'the stuck clients held back', 20000)
  const latencies = await pingLatencies(proxy.address.port, 2000)
  const calls = await getCalls()
  const held = proxy.memory.recount().total
  const rssGrowth = process.memoryUsage().rss - rssBefore
  t.diagnostic(`PING p50 ${latencies[latencies.length >> 1].toFixed(2)} ms, p99 ${p99(latencies).toFixed(2)} ms over ${latencies.length}; Redis ran ${calls} of 6,000 GETs; respool holds ${(held / 1048576).toFixed(1)} MB for clients; RSS +${(rssGrowth / 1048576).toFixed(0)} MB`)
  assert.ok(p99(latencies) < 50, `PING p99 ${p99(latencies).toFixed(1)} ms`)
  assert.ok(calls < 600, `Redis ran ${calls} GETs for clients that read nothing`)
  assert.ok(held < 64 * 1048576, `respool holds ${held} bytes for the stuck clients`)
  assert.ok(rssGrowth < 300 * 1048576, `RSS grew ${rssGrowth} bytes`)
  // Once they read, they get every reply, in order.
  const first = stuck[0]
  let received = 0
  first.on('data', (chunk: Buffer) => { received += chunk.length })
  first.resume()
  const expected = 2000 * (BIG + `$${BIG}\r\n\r\n`.length)
  await waitFor(() => received === expected, `all 2,000 replies to the first stuck client (${received} of ${expected} bytes)`, 30000)
})

test('clients reading at 100 KB/s slow down only themselves', { timeout: 60000 }, async (t) => {
  const proxy = await startProxy({ upstream: upstream.url })
  after(async () => { await proxy.destroy() })
  const slow = await Promise.all([1, 2, 3].map(async () => await slowReader(proxy.address.port, 500, 100 * 1024)))
  after(() => { for (const s of slow) s.destroy() })
  await waitFor(() => proxy.sessions().filter((s) => s.pending > 0).length === 3, 'the slow readers held back', 20000)
  const latencies = await pingLatencies(proxy.address.port, 2000)
  t.diagnostic(`PING p50 ${latencies[latencies.length >> 1].toFixed(2)} ms, p99 ${p99(latencies).toFixed(2)} ms over ${latencies.length}; respool holds ${(proxy.memory.recount().total / 1048576).toFixed(1)} MB`)
  assert.ok(p99(latencies) < 50, `PING p99 ${p99(latencies).toFixed(1)} ms`)
})

test('over --maxmemory-clients, the client holding the most is disconnected, and nobody else', { timeout: 60000 }, async () => {
  const proxy = await startProxy({ upstream: upstream.url, maxMemoryClients: '3mb', outputLimits: 'normal 0 0 0' })
  after(async () => { await proxy.destroy() })
  const stuck = await Promise.all([1, 2].map(async () => await stuckClient(proxy.address.port, 200)))
  after(() => { for (const s of stuck) s.destroy() })
  await waitFor(() => proxy.memory.evictions >= 1, 'an eviction', 20000)
  await waitFor(() => proxy.sessions().length < 2, 'a stuck client disconnected', 10000)
  assert.ok(proxy.memory.recount().total <= 3 * 1048576, `respool holds ${proxy.memory.recount().total} bytes`)
  assert.equal(await commandOn(proxy.address.port, 'PING'), '+PONG\r\n', 'a bystander is served')
  assert.match(await commandOn(proxy.address.port, 'RESPOOL', 'STATS'), /maxmemory_clients_disconnects_total:[1-9]/)
})

test('a client above the soft output limit for longer than its seconds is disconnected, though nothing more is written to it', { timeout: 30000 }, async () => {
  const proxy = await startProxy({ upstream: upstream.url, maxMemoryClients: 0, outputLimits: 'normal 0 1mb 1' })
  after(async () => { await proxy.destroy() })
  const before = proxy.stats.downstreamCxOutputLimit
  const stuck = await stuckClient(proxy.address.port, 100)
  after(() => { stuck.destroy() })
  await waitFor(() => proxy.stats.downstreamCxOutputLimit === before + 1, 'the soft limit to cut the client off', 10000)
  await waitFor(() => proxy.sessions().length === 0, 'the client\'s session closed')
  assert.equal(await commandOn(proxy.address.port, 'PING'), '+PONG\r\n')
})

test('the pub/sub class has its own limits (Redis\'s 32mb 8mb 60 by default), parsed from Redis\'s syntax', { timeout: 10000 }, async () => {
  const proxy = await startProxy({ upstream: upstream.url, outputLimits: 'pubsub 1mb 512kb 5' })
  after(async () => { await proxy.destroy() })
  assert.deepEqual(proxy.config.outputLimits, {
    normal: { hard: 512 * 1048576, soft: 128 * 1048576, softSeconds: 60 },
    pubsub: { hard: 1048576, soft: 512 * 1024, softSeconds: 5 }
  })
})
