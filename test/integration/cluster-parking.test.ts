import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import calculateSlot from 'cluster-key-slot'
import { setTimeout as delay } from 'node:timers/promises'
import { startRedisCluster, moveSlot, type RedisCluster, type ClusterNodeHandle } from '../helpers/redis-cluster.js'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, commandOn } from '../helpers/resp-frames.js'
import { prng } from '../helpers/prng.js'
import { waitFor } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// Parked blocking commands in cluster mode: one parking lot per master, a few connections per
// master however many clients wait. One 3-master cluster (no replicas), one standalone Redis
// to compare replies with byte for byte.
let cluster: RedisCluster
let standalone: RedisServer
let proxy: ProxyServer
const POOL_SIZE = 8
before(async () => {
  ;[cluster, standalone] = await Promise.all([startRedisCluster(3), startRedis()])
  proxy = await startProxy({ cluster: [`127.0.0.1:${cluster.nodes[0].port}`], poolSize: POOL_SIZE, acquireTimeoutMs: 5000 })
})
after(async () => {
  await proxy?.destroy()
  await cluster?.stop()
  await standalone?.stop()
})

async function parked (n: number, timeoutMs = 10_000): Promise<void> {
  await waitFor(() => proxy.parking?.stats.parked === n, `${n} parked waiters (have ${proxy.parking?.stats.parked ?? 0})`, timeoutMs)
}

/** The node serving each slot now. */
async function owners (): Promise<(slot: number) => ClusterNodeHandle> {
  const ranges = await cluster.nodes[0].client.call('CLUSTER', 'SLOTS') as Array<[number, number, [string, number]]>
  return (slot) => {
    const range = ranges.find(([start, end]) => slot >= start && slot <= end)
    const node = cluster.nodes.find((n) => n.port === Number(range?.[2][1]))
    if (node === undefined) throw new Error(`no owner for slot ${slot}`)
    return node
  }
}

/** Connections respool has open to `node` (its connections name themselves). */
async function respoolConnections (node: ClusterNodeHandle): Promise<{ all: number, blocked: number, tracking: number }> {
  const lines = String(await node.client.call('CLIENT', 'LIST')).split('\n').filter((l) => l.includes('name=respool'))
  return { all: lines.length, blocked: lines.filter((l) => / flags=\S*b/.test(l)).length, tracking: lines.filter((l) => / flags=\S*t/.test(l)).length }
}

/** What the standalone Redis answers to `commands` sent one after another on one connection. */
async function direct (commands: Buffer[]): Promise<string[]> {
  const client = await RawClient.connect(standalone.port)
  try {
    const reader = new FrameReader(client)
    const out: string[] = []
    for (const c of commands) {
      client.write(c)
      out.push(await reader.next(5000))
    }
    return out
  } finally {
    client.close()
  }
}

function noRedirect (reply: string): void {
  assert.ok(!/^-(MOVED|ASK)/.test(reply), `a redirect reached the client: ${reply}`)
}

/**
 * Moves a slot and waits until every node names the new owner, five times in a row (as in
 * cluster-pinned.test.ts: nodes can disagree for a moment after a move).
 */
async function moveSettled (slot: number, to: ClusterNodeHandle): Promise<void> {
  await moveSlot(cluster, slot, to)
  const deadline = Date.now() + 10_000
  let agreed = 0
  for (;;) {
    const ports = await Promise.all(cluster.nodes.map(async (node) => {
      const ranges = await node.client.call('CLUSTER', 'SLOTS') as Array<[number, number, [string, number]]>
      return ranges.find(([start, end]) => slot >= start && slot <= end)?.[2][1]
    }))
    agreed = ports.every((port) => port === to.port) ? agreed + 1 : 0
    if (agreed >= 5) return
    if (Date.now() > deadline) throw new Error(`the nodes do not agree on slot ${slot}: ${ports.join(', ')}`)
    await delay(20)
  }
}

test('300 BLPOP waiters on keys of every master with --pool-size 8: all parked on a few connections per master; pushes to half wake exactly those, the rest time out as Redis answers', { timeout: 90_000 }, async () => {
  const MANY = 300
  const TIMEOUT_S = 8
  const keys = Array.from({ length: MANY }, (_, i) => `pw:${i}`)
  const ownerOf = await owners()
  assert.equal(new Set(keys.map((k) => ownerOf(calculateSlot(k)))).size, 3, 'the keys are spread over every master')
  const clients = await Promise.all(keys.map(async () => await RawClient.connect(proxy.address.port)))
  after(() => { for (const c of clients) c.close() })
  const readers = clients.map((c) => new FrameReader(c))
  const started = Date.now()
  clients.forEach((c, i) => { c.write(cmd('BLPOP', keys[i], String(TIMEOUT_S))) })
  await parked(MANY)
  assert.match(await commandOn(proxy.address.port, 'RESPOOL', 'POOLS'), new RegExp(`\r\nparked:${MANY}\r\n`))
  assert.match(await proxy.metrics.registry.metrics(), new RegExp(`\nrespool_parked_commands\\{command="blpop"\\} ${MANY}\n`))
  await waitFor(() => proxy.parking?.tracking.watched === MANY, `${MANY} keys tracked (have ${proxy.parking?.tracking.watched ?? 0})`)
  const perNode = await Promise.all(cluster.nodes.map(respoolConnections))
  console.log(`respool connections per master with ${MANY} parked waiters: ${perNode.map((n) => `${n.all} (tracking ${n.tracking}, blocked ${n.blocked})`).join(', ')}`)
  for (const n of perNode) {
    assert.ok(n.all <= 3, `at most a few connections per master: ${JSON.stringify(perNode)}`)
    assert.equal(n.blocked, 0, 'no connection blocked in a node: the waiters are parked')
    assert.equal(n.tracking, 1, 'one tracking connection per master')
  }
  assert.ok(perNode.reduce((sum, n) => sum + n.all, 0) <= POOL_SIZE)

  const rnd = prng(0xc1a5)
  const chosen = keys.map((_, i) => i).filter(() => rnd() < 0.5)
  // Pushed on the owners directly: the parked waiters learn of it through their master's lot.
  await Promise.all(chosen.map(async (i) => await ownerOf(calculateSlot(keys[i])).client.rpush(keys[i], `token-${i}`)))
  const expected = await direct(chosen.flatMap((i) => [cmd('RPUSH', keys[i], `token-${i}`), cmd('BLPOP', keys[i], '0')]))
  const replies = await Promise.all(chosen.map(async (i) => await readers[i].next(5000)))
  assert.ok(Date.now() - started < TIMEOUT_S * 1000, 'the pushes were answered before the timeout (the test is too slow otherwise)')
  replies.forEach((reply, j) => { assert.equal(reply, expected[2 * j + 1]) })
  const timeoutReply = (await direct([cmd('BLPOP', 'pw:none', '0.01')]))[0]
  const rest = keys.map((_, i) => i).filter((i) => !chosen.includes(i))
  const late = await Promise.all(rest.map(async (i) => await readers[i].next(TIMEOUT_S * 1000 + 5000)))
  for (const reply of late) assert.equal(reply, timeoutReply)
  assert.ok(Date.now() - started >= TIMEOUT_S * 1000 - 50, 'the others waited their whole timeout')
  await parked(0)
  for (const i of chosen) assert.equal(await ownerOf(calculateSlot(keys[i])).client.exists(keys[i]), 0, 'each element taken by its waiter')
})

test('a slot that moves while waiters are parked on it: an element pushed on the new owner reaches the longest waiter, never a redirect', { timeout: 60_000 }, async () => {
  const key = '{pmv}q'
  const slot = calculateSlot(key)
  const from = (await owners())(slot)
  const to = cluster.nodes.find((n) => n !== from) as ClusterNodeHandle
  const waiters = await Promise.all([0, 1, 2].map(async () => await RawClient.connect(proxy.address.port)))
  after(() => { for (const c of waiters) c.close() })
  const readers = waiters.map((c) => new FrameReader(c))
  for (let i = 0; i < waiters.length; i++) {
    waiters[i].write(cmd('BLPOP', key, '0'))
    await parked(i + 1)
  }
  await moveSettled(slot, to)
  await to.client.rpush(key, 'after-move')
  const first = await readers[0].next(10_000)
  noRedirect(first)
  assert.equal(first, '*2\r\n$6\r\n{pmv}q\r\n$10\r\nafter-move\r\n')
  await parked(2)
  // The others are parked on the new owner now, in their order.
  await to.client.rpush(key, 'b', 'c')
  assert.deepEqual(await Promise.all([readers[1].next(5000), readers[2].next(5000)]), ['*2\r\n$6\r\n{pmv}q\r\n$1\r\nb\r\n', '*2\r\n$6\r\n{pmv}q\r\n$1\r\nc\r\n'])
  assert.equal(await to.client.exists(key), 0)
  // Moved back, with a timeout: the rest of it applies on the new owner.
  waiters[0].write(cmd('BLPOP', key, '3'))
  await parked(1)
  const startedAt = Date.now()
  await moveSettled(slot, from)
  const timedOut = await readers[0].next(10_000)
  assert.equal(timedOut, '*-1\r\n')
  assert.ok(Date.now() - startedAt < 4500, `the timeout was not restarted: ${Date.now() - startedAt} ms`)
  await parked(0)
})

test('a stream slot that moves while an XREAD BLOCK … $ is parked on it: the entry added on the new owner reaches it, the one before the move does not', { timeout: 60_000 }, async () => {
  const key = '{pxm}s'
  const slot = calculateSlot(key)
  const from = (await owners())(slot)
  const to = cluster.nodes.find((n) => n !== from) as ClusterNodeHandle
  await from.client.xadd(key, '1-1', 'old', 'x') // before the command: `$` is after it
  const waiter = await RawClient.connect(proxy.address.port)
  after(() => { waiter.close() })
  const reader = new FrameReader(waiter)
  waiter.write(cmd('XREAD', 'BLOCK', '0', 'STREAMS', key, '$'))
  await parked(1)
  await moveSettled(slot, to)
  await to.client.xadd(key, '2-1', 'new', 'y')
  const got = await reader.next(10_000)
  noRedirect(got)
  assert.equal(got, '*1\r\n*2\r\n$6\r\n{pxm}s\r\n*1\r\n*2\r\n$3\r\n2-1\r\n*2\r\n$3\r\nnew\r\n$1\r\ny\r\n')
  await parked(0)
})

test('RESP3 BLPOP, BZPOPMIN and XREAD BLOCK park in cluster mode and answer byte for byte as one Redis; CLIENT UNBLOCK ends a parked one', { timeout: 60_000 }, async () => {
  const ownerOf = await owners()
  const resp3 = await RawClient.connect(proxy.address.port)
  const zwaiter = await RawClient.connect(proxy.address.port)
  const xwaiter = await RawClient.connect(proxy.address.port)
  const unblocked = await RawClient.connect(proxy.address.port)
  const control = await RawClient.connect(proxy.address.port)
  after(() => { for (const c of [resp3, zwaiter, xwaiter, unblocked, control]) c.close() })
  const [r3, rz, rx, ru, rc] = [resp3, zwaiter, xwaiter, unblocked, control].map((c) => new FrameReader(c))
  resp3.write(cmd('HELLO', '3'))
  await r3.next()
  unblocked.write(cmd('CLIENT', 'ID'))
  const id = /^:(\d+)\r\n$/.exec(await ru.next())?.[1] as string
  const before = proxy.parking?.stats.parked ?? 0
  resp3.write(cmd('BLPOP', '{p3}l', '0'))
  zwaiter.write(cmd('BZPOPMIN', '{pz}z', '0'))
  xwaiter.write(cmd('XREAD', 'BLOCK', '0', 'STREAMS', '{px}s', '$'))
  unblocked.write(cmd('BRPOP', '{pu}l', '0'))
  await parked(before + 4)
  assert.equal(proxy.parking?.parkedByCommand.get('xread'), 1)

  // CLIENT UNBLOCK of a parked client: :1 for the caller, Redis's timeout reply for the waiter.
  control.write(cmd('CLIENT', 'LIST'))
  const list = await rc.next()
  const line = list.split('\n').find((l) => l.startsWith(`id=${id} `))
  assert.ok(line !== undefined && / flags=b /.test(line) && / cmd=brpop /.test(line), `the parked client shows as blocked: ${list}`)
  control.write(cmd('CLIENT', 'UNBLOCK', id))
  assert.equal(await rc.next(), ':1\r\n')
  assert.equal(await ru.next(5000), '*-1\r\n')

  await ownerOf(calculateSlot('{p3}l')).client.rpush('{p3}l', 'v3')
  await ownerOf(calculateSlot('{pz}z')).client.zadd('{pz}z', 2.5, 'm')
  await ownerOf(calculateSlot('{px}s')).client.xadd('{px}s', '7-1', 'f', 'v')
  const got = await Promise.all([r3.next(5000), rz.next(5000), rx.next(5000)])
  const want = [
    (await direct([cmd('HELLO', '3'), cmd('RPUSH', '{p3}l', 'v3'), cmd('BLPOP', '{p3}l', '0')]))[2],
    (await direct([cmd('ZADD', '{pz}z', '2.5', 'm'), cmd('BZPOPMIN', '{pz}z', '0')]))[1],
    (await direct([cmd('XADD', '{px}s', '7-1', 'f', 'v'), cmd('XREAD', 'STREAMS', '{px}s', '0-0')]))[1]
  ]
  assert.deepEqual(got, want)
  assert.match(got[0], /^\*2\r\n/) // RESP3 answers BLPOP with an array too
  await parked(before)
})

test('the smallest pool (masters + 2): no pin to spare for watching, parked waiters are polled and still get exactly their elements', { timeout: 60_000 }, async () => {
  const small = await startProxy({ cluster: [`127.0.0.1:${cluster.nodes[0].port}`], poolSize: 5, acquireTimeoutMs: 5000 })
  after(async () => { await small.destroy() })
  const ownerOf = await owners()
  const keys = Array.from({ length: 30 }, (_, i) => `psm:${i}`)
  const clients = await Promise.all(keys.map(async () => await RawClient.connect(small.address.port)))
  after(() => { for (const c of clients) c.close() })
  const readers = clients.map((c) => new FrameReader(c))
  clients.forEach((c, i) => { c.write(cmd('BRPOP', keys[i], '0')) })
  await waitFor(() => small.parking?.stats.parked === keys.length, 'every waiter parked', 10_000)
  assert.equal(small.parking?.stats.watchers, 0, 'no connection watches')
  await Promise.all(keys.map(async (k, i) => await ownerOf(calculateSlot(k)).client.lpush(k, `e${i}`)))
  const replies = await Promise.all(readers.map(async (r) => await r.next(5000)))
  replies.forEach((reply, i) => { assert.equal(reply, `*2\r\n$${keys[i].length}\r\n${keys[i]}\r\n$${`e${i}`.length}\r\ne${i}\r\n`) })
  await waitFor(() => small.parking?.stats.parked === 0, 'none parked')
})
