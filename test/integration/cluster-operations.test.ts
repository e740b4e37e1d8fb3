import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedisCluster, type RedisCluster } from '../helpers/redis-cluster.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * What an operator sees of cluster mode: /metrics and RESPOOL POOLS count the connections the
 * cluster really has from respool (lanes, pins, the slot-map fetch), by what holds them; and a
 * reload of --pool-size reaches the cluster's lanes and pins.
 */

let cluster: RedisCluster
let proxy: ProxyServer
const POOL_SIZE = 10

before(async () => {
  cluster = await startRedisCluster(3)
  proxy = await startProxy({ cluster: [`127.0.0.1:${cluster.nodes[0].port}`], poolSize: POOL_SIZE, parkBlocking: false, acquireTimeoutMs: 5000 })
})
after(async () => {
  await proxy?.destroy()
  await cluster?.stop()
})

/** respool's connections as the cluster's nodes see them (CLIENT LIST; respool names its connections). */
async function connectionsOnRedis (): Promise<number> {
  let n = 0
  for (const node of cluster.nodes) {
    const list = await node.client.call('CLIENT', 'LIST') as string
    n += list.split('\n').filter((l) => / name=respool /.test(l)).length
  }
  return n
}

function metric (text: string, name: string, labels = ''): number {
  const line = text.split('\n').find((l) => l.startsWith(`${name}${labels} `))
  assert.ok(line !== undefined, `${name}${labels} in /metrics`)
  return Number(line.split(' ')[1])
}

function field (pools: string, name: string): string {
  const m = new RegExp(`^${name}:(.*)$`, 'm').exec(pools)
  assert.ok(m !== null, `${name} in RESPOOL POOLS: ${pools}`)
  return m[1].replace(/\r$/, '')
}

async function pools (c: RawClient): Promise<string> {
  c.write(cmd('RESPOOL', 'POOLS'))
  return await new FrameReader(c).next(5000)
}

test('cluster mode: /metrics and RESPOOL POOLS count the lanes and pins Redis sees, by what holds them', { timeout: 60000 }, async () => {
  const admin = await RawClient.connect(proxy.address.port)
  after(() => { admin.close() })
  // Traffic on every master's lane, then one client in a transaction (a pin), one blocked
  // (a pin: --park-blocking no), one on a shard channel (a pin).
  const shared = await RawClient.connect(proxy.address.port)
  after(() => { shared.close() })
  const keys = Array.from({ length: 30 }, (_, i) => `ops:${i}`)
  shared.write(Buffer.concat(keys.map((k) => cmd('SET', k, 'v'))))
  assert.deepEqual(await new FrameReader(shared).take(keys.length, 5000), keys.map(() => '+OK\r\n'))
  const inMulti = await RawClient.connect(proxy.address.port)
  after(() => { inMulti.close() })
  inMulti.write(Buffer.concat([cmd('MULTI'), cmd('SET', 'ops:tx', '1')]))
  assert.deepEqual(await new FrameReader(inMulti).take(2, 5000), ['+OK\r\n', '+QUEUED\r\n'])
  const blocked = await RawClient.connect(proxy.address.port)
  after(() => { blocked.close() })
  blocked.write(cmd('BLPOP', 'ops:queue', '0'))
  const subscriber = await RawClient.connect(proxy.address.port)
  after(() => { subscriber.close() })
  subscriber.write(cmd('SSUBSCRIBE', 'ops:channel'))
  assert.match(await new FrameReader(subscriber).next(5000), /^\*3\r\n\$10\r\nssubscribe\r\n/)
  await waitFor(async () => field(await pools(admin), 'pinned_blocking') === '1', 'the BLPOP on a pin', 5000)

  const text = await proxy.metrics.registry.metrics()
  const onRedis = await connectionsOnRedis()
  assert.equal(metric(text, 'respool_pool_connections'), onRedis, 'what respool counts is what the nodes see')
  assert.equal(metric(text, 'respool_pool_shared_connections'), 3, 'one lane per master')
  assert.equal(metric(text, 'respool_pool_max_connections'), POOL_SIZE)
  assert.equal(metric(text, 'respool_pool_pinned_connections', '{reason="multi"}'), 1)
  assert.equal(metric(text, 'respool_pool_pinned_connections', '{reason="blocking"}'), 1)
  assert.equal(metric(text, 'respool_pool_pinned_connections', '{reason="subscribed"}'), 1)
  assert.ok(onRedis >= 6 && onRedis <= POOL_SIZE, `3 lanes and 3 pins, within --pool-size: ${onRedis}`)
  assert.ok(metric(text, 'respool_upstream_connects_total') >= 6, 'the lanes and pins opened are counted')
  for (const reason of ['multi', 'blocking', 'subscribed']) assert.equal(metric(text, 'respool_pins_total', `{reason="${reason}"}`), 1, `pins for ${reason} counted`)

  const p = await pools(admin)
  assert.equal(field(p, 'upstream_kind'), 'cluster')
  assert.deepEqual(field(p, 'cluster_masters').split(',').sort(), cluster.nodes.map((n) => `127.0.0.1:${n.port}`).sort())
  assert.equal(field(p, 'cluster_slot_map'), 'ok')
  assert.equal(Number(field(p, 'connections')), onRedis)
  assert.equal(field(p, 'shared'), '3')
  assert.equal(field(p, 'pinned'), '3')
  assert.equal(field(p, 'max_pins'), String(POOL_SIZE - 3 - 1))
  // CLIENT LIST through respool (RESPOOL CLIENTS) shows why each client holds a pin.
  admin.write(cmd('RESPOOL', 'CLIENTS'))
  const clients = await new FrameReader(admin).next(5000)
  for (const reason of ['multi', 'blocking', 'subscribed']) assert.match(clients, new RegExp(`pinned=${reason} `), clients)

  inMulti.write(cmd('DISCARD'))
  assert.equal(await new FrameReader(inMulti).next(5000), '+OK\r\n')
  shared.write(cmd('LPUSH', 'ops:queue', 'x'))
  assert.equal(await new FrameReader(blocked).next(5000), '*2\r\n$9\r\nops:queue\r\n$1\r\nx\r\n')
  await waitFor(async () => field(await pools(admin), 'pinned_multi') === '0' && field(await pools(admin), 'pinned_blocking') === '0', 'the pins given back', 5000)
})

test('cluster mode: a reload of --pool-size reaches the lanes and pins; one too small for the cluster is refused and changes nothing', { timeout: 60000 }, async () => {
  const admin = await RawClient.connect(proxy.address.port)
  after(() => { admin.close() })
  const base = { cluster: [`127.0.0.1:${cluster.nodes[0].port}`], parkBlocking: false, acquireTimeoutMs: 5000 }
  assert.throws(() => proxy.reload({ ...base, poolSize: 4 }), /pool-size: 4 is too small for a cluster of 3 masters.*--pool-size 5 at least/)
  assert.equal(field(await pools(admin), 'max_pins'), String(POOL_SIZE - 4))
  assert.equal(proxy.config.poolSize, POOL_SIZE)

  // Down to 6: two pins, and blocking commands may hold all but one. Four clients want one
  // each (BLPOP): one holds it, three wait.
  const result = proxy.reload({ ...base, poolSize: 6 })
  assert.ok(result.applied.includes('poolSize'), JSON.stringify(result))
  let p = await pools(admin)
  assert.equal(field(p, 'pool_size'), '6')
  assert.equal(field(p, 'max_pins'), '2')
  const waiters = await Promise.all(Array.from({ length: 4 }, async () => await RawClient.connect(proxy.address.port)))
  after(() => { for (const w of waiters) w.close() })
  for (const [i, w] of waiters.entries()) w.write(cmd('BLPOP', `ops:resize:${i}`, '0'))
  await waitFor(async () => field(await pools(admin), 'waiting_pins') === '3', `three waiting for a pin: ${await pools(admin)}`, 5000)
  p = await pools(admin)
  assert.equal(field(p, 'pinned_blocking'), '1')
  assert.ok(await connectionsOnRedis() <= 6, 'within the reloaded bound')
  // Back up to 10: the three waiting get pins of their own at once.
  proxy.reload({ ...base, poolSize: POOL_SIZE })
  await waitFor(async () => field(await pools(admin), 'pinned_blocking') === '4', 'all four on pins', 5000)
  assert.equal(field(await pools(admin), 'waiting_pins'), '0')
  const pusher = await RawClient.connect(proxy.address.port)
  after(() => { pusher.close() })
  pusher.write(Buffer.concat(waiters.map((_, i) => cmd('LPUSH', `ops:resize:${i}`, 'v'))))
  await new FrameReader(pusher).take(waiters.length, 5000)
  for (const [i, w] of waiters.entries()) {
    const key = `ops:resize:${i}`
    assert.equal(await new FrameReader(w).next(5000), `*2\r\n$${key.length}\r\n${key}\r\n$1\r\nv\r\n`)
  }
})
