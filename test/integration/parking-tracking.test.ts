import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, commandOn } from '../helpers/resp-frames.js'
import { prng } from '../helpers/prng.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * Many parked keys are watched through Redis's CLIENT TRACKING (one connection, one read per
 * change) rather than blocking pops: waiters still get exactly their elements, longest-waiting
 * first; a lost tracking connection forgets nothing; an upstream that refuses tracking gets
 * the blocking watchers instead.
 */

const POOL = 6
const MANY = 300

async function parked (proxy: ProxyServer, n: number): Promise<void> {
  await waitFor(() => proxy.parking?.stats.parked === n, `${n} parked waiters (have ${proxy.parking?.stats.parked ?? 0})`, 10000)
}

/** `count` clients, each parked in `BLPOP many:<i> 0`. */
async function parkMany (proxy: ProxyServer, count: number): Promise<{ clients: RawClient[], frames: FrameReader[] }> {
  const clients = await Promise.all(Array.from({ length: count }, async () => await RawClient.connect(proxy.address.port)))
  after(() => { for (const c of clients) c.close() })
  clients.forEach((c, i) => { c.write(cmd('BLPOP', `many:${i}`, '0')) })
  return { clients, frames: clients.map((c) => new FrameReader(c)) }
}

function blpopReply (key: string, value: string): string {
  return `*2\r\n$${key.length}\r\n${key}\r\n$${value.length}\r\n${value}\r\n`
}

test('300 keys through CLIENT TRACKING: pushed elements reach exactly their waiters, a shared key serves its waiters in order, and Redis sees one watcher', { timeout: 60000 }, async () => {
  const upstream = await startRedis()
  after(async () => { await upstream.stop() })
  const proxy = await startProxy({ upstream: upstream.url, poolSize: POOL, parkBlocking: true })
  after(async () => { await proxy.destroy() })
  const { frames } = await parkMany(proxy, MANY)
  // Three more on one key, in a known order, the second in RESP3.
  const shared: RawClient[] = []
  for (let i = 0; i < 3; i++) {
    const c = await RawClient.connect(proxy.address.port)
    after(() => { c.close() })
    if (i === 1) {
      c.write(cmd('HELLO', '3'))
      await new FrameReader(c).next()
    }
    c.write(cmd('BLPOP', 'shared', '0'))
    shared.push(c)
    await parked(proxy, MANY + i + 1)
  }
  assert.equal(proxy.parking?.tracking.state, 'ready')
  assert.equal(proxy.parking?.tracking.watched, MANY + 1)
  assert.match(await commandOn(proxy.address.port, 'RESPOOL', 'POOLS'), new RegExp(`\r\nparked:${MANY + 3}\r\nparked_watchers:1\r\nparked_tracking:ready\r\nparked_tracked_keys:${MANY + 1}\r\n`))
  assert.match(await proxy.metrics.registry.metrics(), new RegExp(`\nrespool_parked_tracked_keys ${MANY + 1}\n`))
  const list = await commandOn(upstream.port, 'CLIENT', 'LIST')
  assert.equal(list.match(/ flags=t /g)?.length, 1, 'one tracking connection')
  assert.equal(list.match(/ flags=b /g), null, 'no connection blocked in Redis')
  assert.ok((list.match(/\nid=|^id=/g)?.length ?? 0) <= POOL + 1, `at most the pool and this test's own connection: ${list}`)

  const rnd = prng(0x7ac4)
  const chosen = [...Array(MANY).keys()].filter(() => rnd() < 0.5)
  const pusher = await RawClient.connect(upstream.port)
  after(() => { pusher.close() })
  const pushed = new FrameReader(pusher)
  for (const i of chosen) pusher.write(cmd('RPUSH', `many:${i}`, `token-${i}`))
  pusher.write(cmd('RPUSH', 'shared', 'a', 'b', 'c'))
  for (let i = 0; i <= chosen.length; i++) await pushed.next()
  for (const i of chosen) assert.equal(await frames[i].next(5000), blpopReply(`many:${i}`, `token-${i}`))
  const sharedReplies = await Promise.all(shared.map(async (c) => await new FrameReader(c).next(5000)))
  assert.deepEqual(sharedReplies, ['a', 'b', 'c'].map((v) => blpopReply('shared', v)), 'longest-waiting first, as Redis serves them')
  await parked(proxy, MANY - chosen.length)
  assert.equal(await commandOn(upstream.port, 'EXISTS', 'shared', ...chosen.map((i) => `many:${i}`)), ':0\r\n', 'every element taken, by its waiter')
})

test('the tracking connection killed while 300 waiters are parked: pushes made meanwhile still wake their waiters', { timeout: 60000 }, async () => {
  const upstream = await startRedis()
  after(async () => { await upstream.stop() })
  const proxy = await startProxy({ upstream: upstream.url, poolSize: POOL, parkBlocking: true })
  after(async () => { await proxy.destroy() })
  const { frames } = await parkMany(proxy, MANY)
  await parked(proxy, MANY)
  await waitFor(() => proxy.parking?.tracking.state === 'ready', 'the tracker ready')
  const pusher = await RawClient.connect(upstream.port)
  after(() => { pusher.close() })
  const pushed = new FrameReader(pusher)
  for (let round = 0; round < 3; round++) {
    pusher.write(cmd('CLIENT', 'LIST'))
    const tracker = / ?id=(\d+) [^\n]* flags=t /.exec(await pushed.next())?.[1]
    assert.ok(tracker !== undefined, 'the tracking connection is there')
    // Killed, then pushes at once: they land before a new tracking connection can read.
    pusher.write(cmd('CLIENT', 'KILL', 'ID', tracker))
    const batch = Array.from({ length: 20 }, (_, k) => round * 20 + k)
    for (const i of batch) pusher.write(cmd('LPUSH', `many:${i}`, `after-kill-${i}`))
    assert.equal(await pushed.next(), ':1\r\n')
    for (const _ of batch) await pushed.next()
    for (const i of batch) assert.equal(await frames[i].next(5000), blpopReply(`many:${i}`, `after-kill-${i}`))
  }
  await parked(proxy, MANY - 60)
})

test('an upstream user that may not use CLIENT TRACKING: 300 parked keys are watched with blocking pops, and every push wakes its waiter', { timeout: 60000 }, async () => {
  const upstream = await startRedis()
  after(async () => { await upstream.stop() })
  assert.equal(await commandOn(upstream.port, 'ACL', 'SETUSER', 'worker', 'on', '>worker-pw', '~*', '&*', '+@all', '-client|tracking'), '+OK\r\n')
  const proxy = await startProxy({ upstream: `redis://worker:worker-pw@127.0.0.1:${upstream.port}`, poolSize: POOL, parkBlocking: true })
  after(async () => { await proxy.destroy() })
  const { frames } = await parkMany(proxy, MANY)
  await parked(proxy, MANY)
  await waitFor(() => proxy.parking?.tracking.state === 'unavailable', 'the tracker gave up')
  const pusher = await RawClient.connect(upstream.port)
  after(() => { pusher.close() })
  const pushed = new FrameReader(pusher)
  for (let i = 0; i < MANY; i += 3) pusher.write(cmd('RPUSH', `many:${i}`, `v${i}`))
  for (let i = 0; i < MANY; i += 3) await pushed.next()
  for (let i = 0; i < MANY; i += 3) assert.equal(await frames[i].next(5000), blpopReply(`many:${i}`, `v${i}`))
  await parked(proxy, MANY - 100)
})
