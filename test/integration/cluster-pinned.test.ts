import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import calculateSlot from 'cluster-key-slot'
import { startRedisCluster, moveSlot, type RedisCluster, type ClusterNodeHandle } from '../helpers/redis-cluster.js'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { runScript } from '../helpers/run-program.js'
import { setTimeout as delay } from 'node:timers/promises'
import type { ProxyServer } from '../../src/proxy-server.js'

// Transactions, blocking commands and pub/sub through respool in cluster mode: one 3-master
// cluster (no replicas), one standalone Redis to compare replies with byte for byte.
let cluster: RedisCluster
let standalone: RedisServer
let proxy: ProxyServer
const POOL_SIZE = 8
before(async () => {
  ;[cluster, standalone] = await Promise.all([startRedisCluster(3), startRedis()])
  // Blocking commands here take the pinned path (they block on a node, where CLIENT LIST shows
  // them); parked ones are covered by cluster-parking.test.ts.
  proxy = await startProxy({ cluster: [`127.0.0.1:${cluster.nodes[0].port}`], poolSize: POOL_SIZE, acquireTimeoutMs: 5000, parkBlocking: false })
})
after(async () => {
  await proxy?.destroy()
  await cluster?.stop()
  await standalone?.stop()
})

/** Sends each command after the previous one's reply (a transaction typed command by command). */
async function typed (port: number, commands: Buffer[]): Promise<string[]> {
  const client = await RawClient.connect(port)
  try {
    const reader = new FrameReader(client)
    const out: string[] = []
    for (const c of commands) {
      client.write(c)
      out.push(await reader.next(5000))
    }
    return out
  } finally {
    client.socket.destroy()
  }
}

/** The same commands, typed one by one, through respool and to the standalone Redis. */
async function typedBothWays (commands: Buffer[]): Promise<{ viaProxy: string[], direct: string[] }> {
  const [viaProxy, direct] = await Promise.all([typed(proxy.address.port, commands), typed(standalone.port, commands)])
  return { viaProxy, direct }
}

async function pipelined (port: number, commands: Buffer[]): Promise<string[]> {
  const client = await RawClient.connect(port)
  try {
    client.write(Buffer.concat(commands))
    return await new FrameReader(client).take(commands.length, 10_000)
  } finally {
    client.socket.destroy()
  }
}

/** A key of `prefix` whose slot is served by `node` (or not by it, with `not`). */
async function keyOn (node: ClusterNodeHandle, prefix: string, not = false): Promise<string> {
  for (let i = 0; i < 10_000; i++) {
    const key = `${prefix}:${i}`
    const owner = await cluster.ownerOf(calculateSlot(key))
    if ((owner === node) !== not) return key
  }
  throw new Error('no such key')
}

/**
 * Moves a slot and waits until every node names the new owner, five times in a row (moving a
 * slot back and forth quickly can leave nodes disagreeing for a moment, redirecting to each
 * other, until their config epochs settle).
 */
async function moveSettled (slot: number, to: ClusterNodeHandle): Promise<void> {
  await moveSlot(cluster, slot, to)
  const deadline = Date.now() + 10_000
  let agreed = 0
  for (;;) {
    const owners = await Promise.all(cluster.nodes.map(async (node) => {
      const ranges = await node.client.call('CLUSTER', 'SLOTS') as Array<[number, number, [string, number]]>
      return ranges.find(([start, end]) => slot >= start && slot <= end)?.[2][1]
    }))
    agreed = owners.every((port) => port === to.port) ? agreed + 1 : 0
    if (agreed >= 5) return
    if (Date.now() > deadline) throw new Error(`the nodes do not agree on slot ${slot}: ${owners.join(', ')}`)
    await delay(20)
  }
}

function noRedirects (replies: string[]): void {
  assert.ok(!replies.some((r) => /^-(MOVED|ASK)/.test(r)), `a redirect reached the client: ${replies.join(' | ')}`)
}

test('MULTI/EXEC and WATCH typed command by command on one slot answer byte for byte as one Redis', async () => {
  const commands = [
    cmd('MULTI'), cmd('PING'), cmd('ECHO', 'x'), cmd('SET', '{t}a', '1'), cmd('INCR', '{t}a'), cmd('GET', '{t}a'), cmd('LPUSH', '{t}l', 'v'), cmd('EXEC'),
    cmd('EXEC'), cmd('DISCARD'), cmd('UNWATCH'),
    cmd('MULTI'), cmd('MULTI'), cmd('WATCH', '{t}a'), cmd('SET', '{t}a', '5'), cmd('DISCARD'), cmd('GET', '{t}a'),
    cmd('WATCH', '{t}a', '{t}b'), cmd('GET', '{t}a'), cmd('MULTI'), cmd('INCR', '{t}a'), cmd('EXEC'),
    cmd('WATCH', '{t}a'), cmd('UNWATCH'), cmd('MULTI'), cmd('INCRBY', '{t}a', 'x'), cmd('GET', '{t}a'), cmd('EXEC'),
    cmd('MULTI'), cmd('PING'), cmd('EXEC'),
    cmd('MULTI'), cmd('EXEC'),
    cmd('MULTI'), cmd('GET', '{t}a', 'extra'), cmd('SET', '{t}a', '9'), cmd('EXEC'), cmd('GET', '{t}a'),
    cmd('MULTI'), cmd('NOSUCHCOMMAND', 'x'), cmd('EXEC'),
    cmd('MULTI'), cmd('SELECT', '0'), cmd('GET', '{t}a'), cmd('EXEC'),
    cmd('WATCH'), cmd('MULTI', 'x'), cmd('DEL', '{t}a', '{t}l')
  ]
  const { viaProxy, direct } = await typedBothWays(commands)
  assert.deepEqual(viaProxy, direct)
  // The same, pipelined in one write.
  const again = await Promise.all([pipelined(proxy.address.port, commands), pipelined(standalone.port, commands)])
  assert.deepEqual(again[0], again[1])
  // The transaction really ran on the owner of {t}.
  await pipelined(proxy.address.port, [cmd('MULTI'), cmd('SET', '{t}owner', 'yes'), cmd('EXEC')])
  assert.equal(await (await cluster.ownerOf(calculateSlot('{t}'))).client.get('{t}owner'), 'yes')
})

test('keys of several slots in one transaction: CROSSSLOT for the command, EXECABORT at EXEC, nothing runs', async () => {
  const owner = cluster.nodes[0]
  const a = await keyOn(owner, 'xa')
  const elsewhere = await keyOn(owner, 'xb', true)
  const sameNodeOtherSlot = await (async () => {
    for (let i = 0; ; i++) {
      const k = `xc:${i}`
      if (calculateSlot(k) !== calculateSlot(a) && (await cluster.ownerOf(calculateSlot(k))) === owner) return k
    }
  })()
  const replies = await typed(proxy.address.port, [
    cmd('MULTI'), cmd('SET', a, '1'), cmd('SET', elsewhere, '1'), cmd('SET', sameNodeOtherSlot, '1'), cmd('EXEC'),
    cmd('MULTI'), cmd('MSET', `{${a}}`, '1', elsewhere, '2'), cmd('EXEC'),
    cmd('WATCH', a, elsewhere),
    cmd('WATCH', a), cmd('WATCH', elsewhere), cmd('UNWATCH'),
    cmd('MULTI'), cmd('PING'), cmd('SET', a, '2'), cmd('EXEC'), cmd('GET', a)
  ])
  const crossslot = '-CROSSSLOT Keys in request don\'t hash to the same slot\r\n'
  const execabort = '-EXECABORT Transaction discarded because of previous errors.\r\n'
  assert.deepEqual(replies, [
    '+OK\r\n', '+QUEUED\r\n', crossslot, crossslot, execabort,
    '+OK\r\n', crossslot, execabort,
    crossslot,
    '+OK\r\n', crossslot, '+OK\r\n',
    '+OK\r\n', '+QUEUED\r\n', '+QUEUED\r\n', '*2\r\n+PONG\r\n+OK\r\n', '$1\r\n2\r\n'
  ])
  for (const k of [elsewhere, sameNodeOtherSlot]) assert.equal(await (await cluster.ownerOf(calculateSlot(k))).client.exists(k), 0)
})

test('WATCH: a change by another client makes EXEC answer nil; ioredis (non-cluster mode) WATCH retry loops count exactly', async () => {
  const key = '{w}counter'
  const owner = await cluster.ownerOf(calculateSlot(key))
  const client = await RawClient.connect(proxy.address.port)
  const reader = new FrameReader(client)
  const step = async (c: Buffer): Promise<string> => { client.write(c); return await reader.next(5000) }
  assert.equal(await step(cmd('SET', key, '0')), '+OK\r\n')
  assert.equal(await step(cmd('WATCH', key)), '+OK\r\n')
  await owner.client.set(key, '100') // directly on the owner
  assert.equal(await step(cmd('MULTI')), '+OK\r\n')
  assert.equal(await step(cmd('INCR', key)), '+QUEUED\r\n')
  assert.equal(await step(cmd('EXEC')), '*-1\r\n')
  client.socket.destroy()
  await owner.client.set(key, '0')

  const clients = Array.from({ length: 6 }, () => new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0 }))
  try {
    await Promise.all(clients.map(async (c) => {
      for (let n = 0; n < 15;) {
        await c.watch(key)
        const v = Number(await c.get(key))
        const result = await c.multi().set(key, String(v + 1)).exec()
        if (result !== null) n++
      }
    }))
    assert.equal(await owner.client.get(key), String(6 * 15))
  } finally {
    for (const c of clients) c.disconnect()
  }
})

test('a slot that moves during a transaction: the client gets an error and EXECABORT, never a redirect', async () => {
  const slot = calculateSlot('{mv}')
  const from = await cluster.ownerOf(slot)
  const to = cluster.nodes.find((n) => n !== from) as ClusterNodeHandle
  const client = await RawClient.connect(proxy.address.port)
  const reader = new FrameReader(client)
  const step = async (c: Buffer): Promise<string> => { client.write(c); return await reader.next(5000) }
  const replies: string[] = []
  replies.push(await step(cmd('MULTI')), await step(cmd('SET', '{mv}a', '1')))
  await moveSettled(slot, to)
  replies.push(await step(cmd('SET', '{mv}b', '1')), await step(cmd('EXEC')))
  noRedirects(replies)
  assert.deepEqual(replies.slice(0, 2), ['+OK\r\n', '+QUEUED\r\n'])
  assert.match(replies[2], /^-ERR respool: slot \d+ moved to another cluster node during the transaction; EXEC will abort\r\n$/)
  assert.equal(replies[3], '-EXECABORT Transaction discarded because of previous errors.\r\n')

  // Moved after everything was queued: EXEC on the old owner is refused, the client gets EXECABORT.
  replies.length = 0
  replies.push(await step(cmd('MULTI')), await step(cmd('SET', '{mv}c', '1')))
  await moveSettled(slot, from)
  replies.push(await step(cmd('EXEC')))
  noRedirects(replies)
  assert.deepEqual(replies, ['+OK\r\n', '+QUEUED\r\n', '-EXECABORT Transaction discarded because of previous errors.\r\n'])

  // respool's map is stale now (the slot moved back behind its back): the first keyed command
  // is redirected before anything ran, so the transaction simply goes to the new owner.
  await moveSettled(slot, to)
  replies.length = 0
  for (const c of [cmd('MULTI'), cmd('PING'), cmd('SET', '{mv}d', '1'), cmd('INCR', '{mv}d'), cmd('EXEC')]) replies.push(await step(c))
  assert.deepEqual(replies, ['+OK\r\n', '+QUEUED\r\n', '+QUEUED\r\n', '+QUEUED\r\n', '*3\r\n+PONG\r\n+OK\r\n:2\r\n'])
  assert.equal(await to.client.get('{mv}d'), '2')
  // Same for WATCH on a stale map.
  await moveSettled(slot, from)
  replies.length = 0
  for (const c of [cmd('WATCH', '{mv}d'), cmd('MULTI'), cmd('INCR', '{mv}d'), cmd('EXEC')]) replies.push(await step(c))
  assert.deepEqual(replies, ['+OK\r\n', '+OK\r\n', '+QUEUED\r\n', '*1\r\n:3\r\n'])
  // A transaction arriving whole (one pipeline, no pin) on a stale map: redirected before
  // anything ran, it is sent again, whole, to the new owner.
  await moveSettled(slot, to)
  client.write(Buffer.concat([cmd('MULTI'), cmd('INCR', '{mv}d'), cmd('INCR', '{mv}d'), cmd('EXEC'), cmd('GET', '{mv}d')]))
  assert.deepEqual(await reader.take(5, 5000), ['+OK\r\n', '+QUEUED\r\n', '+QUEUED\r\n', '*2\r\n:4\r\n:5\r\n', '$1\r\n5\r\n'])
  client.socket.destroy()
})

/** Waits until `node` shows a respool connection blocked in `command` (CLIENT LIST). */
async function blockedOn (node: ClusterNodeHandle, command: string, want = true): Promise<void> {
  const deadline = Date.now() + 5000
  for (;;) {
    const list = String(await node.client.call('CLIENT', 'LIST'))
    const found = list.split('\n').some((line) => line.includes('name=respool') && line.includes(`cmd=${command}`) && / flags=\S*b/.test(line))
    if (found === want) return
    if (Date.now() > deadline) throw new Error(`no respool connection ${want ? '' : 'no longer '}blocked in ${command} on ${node.port}:\n${list}`)
    await delay(10)
  }
}

test('blocking commands on one slot: timeouts byte for byte as one Redis, hand-off by another client, CROSSSLOT across slots', async () => {
  const timeouts = [
    cmd('BLPOP', '{b}none', '0.05'), cmd('BRPOP', '{b}none', '{b}none2', '0.05'), cmd('BZPOPMIN', '{b}z', '0.05'),
    cmd('BLMOVE', '{b}none', '{b}dst', 'LEFT', 'RIGHT', '0.05'), cmd('XREAD', 'BLOCK', '50', 'STREAMS', '{b}s', '$'),
    cmd('BLPOP', '{b}none', 'notanumber'), cmd('BLPOP', '{b}none', '-1'), cmd('BLMPOP', '0.05', '1', '{b}none', 'LEFT'),
    cmd('HELLO', '3'), cmd('BLPOP', '{b}none', '0.05')
  ]
  const [viaProxy, direct] = await Promise.all([typed(proxy.address.port, timeouts), typed(standalone.port, timeouts)])
  assert.deepEqual(viaProxy.slice(0, 8), direct.slice(0, 8))
  assert.equal(viaProxy[9], direct[9])
  const [cross] = await typed(proxy.address.port, [cmd('BLPOP', 'one-slot', 'another-slot', '0')])
  assert.equal(cross, '-CROSSSLOT Keys in request don\'t hash to the same slot\r\n')

  // Hand-off: a waiter on the key's owner gets what another client pushes through respool.
  const owner = await cluster.ownerOf(calculateSlot('{b}list'))
  const waiter = await RawClient.connect(proxy.address.port)
  const pusher = new Redis({ port: proxy.address.port, host: '127.0.0.1' })
  try {
    const reader = new FrameReader(waiter)
    waiter.write(cmd('BLPOP', '{b}list', '0'))
    await blockedOn(owner, 'blpop')
    await pusher.lpush('{b}list', 'x')
    assert.equal(await reader.next(5000), '*2\r\n$7\r\n{b}list\r\n$1\r\nx\r\n')
    // Commands pipelined behind a blocking command run after it, as in Redis.
    waiter.write(Buffer.concat([cmd('BZPOPMIN', '{b}zz', '0'), cmd('ZCARD', '{b}zz'), cmd('XREAD', 'BLOCK', '0', 'STREAMS', '{b}st', '$')]))
    await blockedOn(owner, 'bzpopmin')
    await pusher.zadd('{b}zz', 5, 'm', 7, 'n')
    assert.equal(await reader.next(5000), '*3\r\n$5\r\n{b}zz\r\n$1\r\nm\r\n$1\r\n5\r\n')
    assert.equal(await reader.next(5000), ':1\r\n')
    await blockedOn(owner, 'xread')
    const id = await pusher.xadd('{b}st', '*', 'f', 'v')
    assert.equal(await reader.next(5000), `*1\r\n*2\r\n$5\r\n{b}st\r\n*1\r\n*2\r\n$${String(id).length}\r\n${String(id)}\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n`)
  } finally {
    waiter.socket.destroy()
    pusher.disconnect()
  }
})

test('a client that leaves while blocked takes nothing: the element pushed later stays in the list', async () => {
  const owner = await cluster.ownerOf(calculateSlot('{gone}q'))
  const waiter = await RawClient.connect(proxy.address.port)
  waiter.write(cmd('BLPOP', '{gone}q', '0'))
  await blockedOn(owner, 'blpop')
  waiter.socket.destroy()
  await blockedOn(owner, 'blpop', false)
  await owner.client.lpush('{gone}q', 'kept')
  assert.equal(await owner.client.llen('{gone}q'), 1)
})

test('a slot that moves while a client waits in BLPOP: the client gets the element pushed on the new owner, never a redirect', async () => {
  const slot = calculateSlot('{mbq}')
  const from = await cluster.ownerOf(slot)
  const to = cluster.nodes.find((n) => n !== from) as ClusterNodeHandle
  const waiter = await RawClient.connect(proxy.address.port)
  const reader = new FrameReader(waiter)
  waiter.write(cmd('BLPOP', '{mbq}q', '0'))
  await blockedOn(from, 'blpop')
  await moveSettled(slot, to)
  // The old owner unblocks the waiter (-MOVED, nothing popped) within a second; respool waits again on the new owner.
  await blockedOn(to, 'blpop')
  await to.client.lpush('{mbq}q', 'after-move')
  assert.equal(await reader.next(5000), '*2\r\n$6\r\n{mbq}q\r\n$10\r\nafter-move\r\n')
  // With a timeout, the rest of it applies on the new owner.
  await moveSettled(slot, from)
  const started = Date.now()
  waiter.write(cmd('BLPOP', '{mbq}q', '1'))
  assert.equal(await reader.next(5000), '*-1\r\n')
  assert.ok(Date.now() - started < 2500, `the timeout was not shortened: ${Date.now() - started} ms`)
  waiter.socket.destroy()
})

test('SUBSCRIBE and PSUBSCRIBE hear PUBLISH on every node through one shared connection; PUBLISH counts like one Redis', async () => {
  const subscriber = await RawClient.connect(proxy.address.port)
  const psubscriber = await RawClient.connect(proxy.address.port)
  const direct = [await RawClient.connect(standalone.port), await RawClient.connect(standalone.port)]
  const subReader = new FrameReader(subscriber)
  const psubReader = new FrameReader(psubscriber)
  try {
    for (const [client, reader] of [[subscriber, subReader], [direct[0], new FrameReader(direct[0])]] as const) {
      client.write(cmd('SUBSCRIBE', 'news'))
      assert.equal(await reader.next(5000), '*3\r\n$9\r\nsubscribe\r\n$4\r\nnews\r\n:1\r\n')
    }
    for (const [client, reader] of [[psubscriber, psubReader], [direct[1], new FrameReader(direct[1])]] as const) {
      client.write(cmd('PSUBSCRIBE', 'ne*'))
      assert.equal(await reader.next(5000), '*3\r\n$10\r\npsubscribe\r\n$3\r\nne*\r\n:1\r\n')
    }
    // PUBLISH through respool answers what the standalone Redis answers for the same subscribers.
    const [viaProxy] = await typed(proxy.address.port, [cmd('PUBLISH', 'news', 'hello')])
    const [viaRedis] = await typed(standalone.port, [cmd('PUBLISH', 'news', 'hello')])
    assert.equal(viaProxy, viaRedis)
    assert.equal(await subReader.next(5000), '*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nhello\r\n')
    assert.equal(await psubReader.next(5000), '*4\r\n$8\r\npmessage\r\n$3\r\nne*\r\n$4\r\nnews\r\n$5\r\nhello\r\n')
    // Published directly on each node: heard through respool.
    for (const node of cluster.nodes) {
      await node.client.publish('news', `from-${node.port}`)
      assert.equal(await subReader.next(5000), `*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$${`from-${node.port}`.length}\r\nfrom-${node.port}\r\n`)
      assert.equal(await psubReader.next(5000), `*4\r\n$8\r\npmessage\r\n$3\r\nne*\r\n$4\r\nnews\r\n$${`from-${node.port}`.length}\r\nfrom-${node.port}\r\n`)
    }
    // The shared connection is killed on its node: respool subscribes again, the clients stay subscribed.
    for (const node of cluster.nodes) await node.client.call('CLIENT', 'KILL', 'TYPE', 'pubsub')
    const deadline = Date.now() + 5000
    let heard = ''
    while (heard === '' && Date.now() < deadline) {
      await cluster.nodes[2].client.publish('news', 'again')
      heard = await subReader.next(200).catch(() => '')
    }
    assert.equal(heard, '*3\r\n$7\r\nmessage\r\n$4\r\nnews\r\n$5\r\nagain\r\n')
    // MONITOR stays refused in cluster mode.
    const [monitor] = await typed(proxy.address.port, [cmd('MONITOR')])
    assert.match(monitor, /^-ERR respool: MONITOR is not supported in cluster mode/)
  } finally {
    for (const c of [subscriber, psubscriber, ...direct]) c.socket.destroy()
  }
})

test('200 clients mixing GET, MULTI and BLPOP: respool\'s connections on all nodes together stay within --pool-size', async () => {
  const masters = cluster.nodes.length
  const share = POOL_SIZE - (masters - 1) // every other master keeps its shared lane
  const counts = { most: 0, mostPerNode: 0, samples: 0 }
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      const perNode = await Promise.all(cluster.nodes.map(async (node) => String(await node.client.call('CLIENT', 'LIST')).split('\n').filter((line) => line.includes(' name=respool ')).length))
      counts.most = Math.max(counts.most, perNode.reduce((a, b) => a + b, 0))
      counts.mostPerNode = Math.max(counts.mostPerNode, ...perNode)
      counts.samples++
      await delay(5)
    }
  })()
  const clients = Array.from({ length: 200 }, () => new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0 }))
  try {
    await Promise.all(clients.map(async (c, i) => {
      const key = `{load${i}}`
      for (let n = 0; n < 3; n++) {
        assert.equal(await c.get(`${key}:missing`), null)
        // A quarter WATCH first (a pin of their own); the others' MULTI … EXEC arrives whole (a shared lane).
        if (i % 4 === 0) await c.watch(`${key}:n`)
        const [[err, value]] = await c.multi().incr(`${key}:n`).exec() as Array<[Error | null, unknown]>
        assert.equal(err, null)
        assert.equal(value, n + 1)
        await c.lpush(`${key}:l`, `v${n}`)
        assert.deepEqual(await c.blpop(`${key}:l`, 5), [`${key}:l`, `v${n}`])
      }
      if (i % 10 === 0) assert.equal(await c.blpop(`${key}:empty`, 0.05), null)
    }))
  } finally {
    sampling = false
    await sampler
    for (const c of clients) c.disconnect()
  }
  assert.ok(counts.samples > 5, `only ${counts.samples} samples`)
  assert.ok(counts.most <= POOL_SIZE, `respool had ${counts.most} connections open on the nodes together; the bound is ${POOL_SIZE}`)
  assert.ok(counts.mostPerNode <= share, `one node saw ${counts.mostPerNode} respool connections; its share is ${share}`)
  assert.ok(counts.most > masters, `pins were used (${counts.most} connections at most)`)
})

test('SSUBSCRIBE and SPUBLISH answer byte for byte as one Redis, and a shard subscription survives its slot moving', async () => {
  // One transcript, through respool and against the standalone Redis (which speaks sharded pub/sub too).
  const transcript = async (port: number): Promise<string[]> => {
    const sub = await RawClient.connect(port)
    const pub = await RawClient.connect(port)
    const subReader = new FrameReader(sub)
    const pubReader = new FrameReader(pub)
    const out: string[] = []
    try {
      const step = async (c: Buffer, replies = 1): Promise<void> => { sub.write(c); out.push(...await subReader.take(replies, 5000)) }
      const publish = async (channel: string, message: string, heard: number): Promise<void> => {
        pub.write(cmd('SPUBLISH', channel, message))
        out.push(await pubReader.next(5000))
        if (heard > 0) out.push(...await subReader.take(heard, 5000))
      }
      await step(cmd('SSUBSCRIBE', '{s}a', '{s}b'), 2)
      await step(cmd('SSUBSCRIBE', '{s}a'))
      await publish('{s}a', 'one', 1)
      await publish('{s}c', 'nobody', 0)
      await step(cmd('GET', 'x'))
      await step(cmd('PING'))
      await step(cmd('SUNSUBSCRIBE', '{s}zz'))
      await step(cmd('SUNSUBSCRIBE', '{s}a'))
      await publish('{s}a', 'gone', 0)
      await publish('{s}b', 'two', 1)
      await step(cmd('SUNSUBSCRIBE'))
      await step(cmd('SUNSUBSCRIBE'))
      await step(cmd('GET', '{s}x'))
      return out
    } finally {
      sub.socket.destroy()
      pub.socket.destroy()
    }
  }
  const [viaProxy, direct] = await Promise.all([transcript(proxy.address.port), transcript(standalone.port)])
  assert.deepEqual(viaProxy, direct)
  const [cross] = await typed(proxy.address.port, [cmd('SSUBSCRIBE', 'one-slot', 'another-slot')])
  assert.equal(cross, '-CROSSSLOT Keys in request don\'t hash to the same slot\r\n')

  // The slot moves: the old owner ends the subscription (sunsubscribe); the client never sees
  // it and keeps getting the channel's messages, now from the new owner.
  const slot = calculateSlot('{ms}')
  const from = await cluster.ownerOf(slot)
  const to = cluster.nodes.find((n) => n !== from) as ClusterNodeHandle
  const sub = await RawClient.connect(proxy.address.port)
  const reader = new FrameReader(sub)
  try {
    sub.write(Buffer.concat([cmd('HELLO', '3'), cmd('SSUBSCRIBE', '{ms}ch')]))
    await reader.next(5000)
    assert.equal(await reader.next(5000), '>3\r\n$10\r\nssubscribe\r\n$6\r\n{ms}ch\r\n:1\r\n')
    await from.client.call('SPUBLISH', '{ms}ch', 'before')
    assert.equal(await reader.next(5000), '>3\r\n$8\r\nsmessage\r\n$6\r\n{ms}ch\r\n$6\r\nbefore\r\n')
    await moveSettled(slot, to)
    const deadline = Date.now() + 5000
    let heard = ''
    while (heard === '' && Date.now() < deadline) {
      await to.client.call('SPUBLISH', '{ms}ch', 'after')
      heard = await reader.next(100).catch(() => '')
    }
    assert.equal(heard, '>3\r\n$8\r\nsmessage\r\n$6\r\n{ms}ch\r\n$5\r\nafter\r\n')
    // Still one subscription, and SPUBLISH through respool reaches it.
    sub.write(cmd('SUNSUBSCRIBE', '{ms}ch'))
    let next = await reader.next(5000)
    while (next.includes('after')) next = await reader.next(5000) // messages published while looking
    assert.equal(next, '>3\r\n$12\r\nsunsubscribe\r\n$6\r\n{ms}ch\r\n:0\r\n')
  } finally {
    sub.socket.destroy()
  }
})

test('a half-moved slot (ASK): a transaction and a blocking command on a key the old owner no longer has go to the importing node', async () => {
  const slot = calculateSlot('{ask}')
  const from = await cluster.ownerOf(slot)
  const to = cluster.nodes.find((n) => n !== from) as ClusterNodeHandle
  const client = await RawClient.connect(proxy.address.port)
  const waiter = await RawClient.connect(proxy.address.port)
  const reader = new FrameReader(client)
  const waiterReader = new FrameReader(waiter)
  const step = async (c: Buffer): Promise<string> => { client.write(c); return await reader.next(5000) }
  try {
    await from.client.set('{ask}old', 'here')
    await moveSlot(cluster, slot, to, async () => {
      // MIGRATING on the old owner, IMPORTING on the new one; {ask}new exists on neither: -ASK.
      const replies: string[] = []
      for (const c of [cmd('MULTI'), cmd('SET', '{ask}new', '1'), cmd('INCR', '{ask}new'), cmd('EXEC')]) replies.push(await step(c))
      assert.deepEqual(replies, ['+OK\r\n', '+QUEUED\r\n', '+QUEUED\r\n', '*2\r\n+OK\r\n:2\r\n'])
      assert.equal(await to.client.call('ASKING').then(async () => await to.client.get('{ask}new')), '2')
      waiter.write(cmd('BLPOP', '{ask}q', '0'))
      await blockedOn(to, 'blpop')
    })
    await to.client.lpush('{ask}q', 'x')
    assert.equal(await waiterReader.next(5000), '*2\r\n$6\r\n{ask}q\r\n$1\r\nx\r\n')
    assert.equal(await step(cmd('GET', '{ask}old')), '$4\r\nhere\r\n')
  } finally {
    client.socket.destroy()
    waiter.socket.destroy()
  }
})

test('redis-py (non-cluster client) through respool in cluster mode: WATCH transactions under contention, BLPOP, pub/sub', async () => {
  const script = `
import redis, threading, sys
port = int(sys.argv[1])
r = redis.Redis(port=port)
r.set('{py}n', 0)
def work():
    c = redis.Redis(port=port)
    for _ in range(20):
        with c.pipeline() as p:
            while True:
                try:
                    p.watch('{py}n')
                    v = int(p.get('{py}n'))
                    p.multi()
                    p.set('{py}n', v + 1)
                    p.execute()
                    break
                except redis.WatchError:
                    continue
threads = [threading.Thread(target=work) for _ in range(4)]
for t in threads: t.start()
for t in threads: t.join()
print(int(r.get('{py}n')))
r.rpush('{py}q', 'job')
print(r.blpop('{py}q', timeout=1))
print(r.blpop('{py}q', timeout=0.1))
p = r.pubsub()
p.subscribe('py-news')
p.get_message(timeout=1)
r.publish('py-news', 'hi')
m = p.get_message(timeout=2)
print(m['channel'], m['data'])
`
  const lines = await runScript('/usr/bin/python3', ['-', String(proxy.address.port)], script, 30_000)
  assert.deepEqual(lines, ['80', "(b'{py}q', b'job')", 'None', "b'py-news' b'hi'"])
})

test('transactions pipelined back to back on one slot run in the client\'s order (each on its own pin)', async () => {
  const commands: Buffer[] = []
  for (let i = 0; i < 40; i++) commands.push(cmd('MULTI'), cmd('INCR', '{order}n'), cmd('EXEC'), cmd('MULTI'), cmd('GET', '{order}n'), cmd('SET', `{order}k${i}`, 'x'), cmd('EXEC'))
  commands.push(cmd('DEL', '{order}n'))
  const [viaProxy, direct] = await Promise.all([pipelined(proxy.address.port, commands), pipelined(standalone.port, commands)])
  assert.deepEqual(viaProxy, direct)
})

test('CLIENT UNBLOCK and CLIENT LIST know cluster clients that are blocked or inside MULTI', async () => {
  const owner = await cluster.ownerOf(calculateSlot('{u}q'))
  const waiter = await RawClient.connect(proxy.address.port)
  const other = await RawClient.connect(proxy.address.port)
  const waiterReader = new FrameReader(waiter)
  const otherReader = new FrameReader(other)
  const ask = async (...args: string[]): Promise<string> => { other.write(cmd(...args)); return await otherReader.next(5000) }
  try {
    waiter.write(cmd('CLIENT', 'ID'))
    const id = /^:(\d+)\r\n$/.exec(await waiterReader.next(5000))?.[1] as string
    for (const [mode, reply] of [['TIMEOUT', '*-1\r\n'], ['ERROR', '-UNBLOCKED client unblocked via CLIENT UNBLOCK\r\n']]) {
      waiter.write(cmd('BLPOP', '{u}q', '0'))
      await blockedOn(owner, 'blpop')
      assert.match(await ask('CLIENT', 'LIST', 'ID', id), / flags=b /)
      assert.equal(await ask('CLIENT', 'UNBLOCK', id, mode), ':1\r\n')
      assert.equal(await waiterReader.next(5000), reply)
    }
    assert.equal(await ask('CLIENT', 'UNBLOCK', id), ':0\r\n')
    waiter.write(Buffer.concat([cmd('MULTI'), cmd('SET', '{u}k', '1')]))
    assert.deepEqual(await waiterReader.take(2, 5000), ['+OK\r\n', '+QUEUED\r\n'])
    assert.match(await ask('CLIENT', 'LIST', 'ID', id), / flags=x /)
    waiter.write(cmd('DISCARD'))
    assert.equal(await waiterReader.next(5000), '+OK\r\n')
    assert.match(await ask('CLIENT', 'LIST', 'ID', id), / flags=N /)
  } finally {
    waiter.socket.destroy()
    other.socket.destroy()
  }
})

test('shutdown lets a cluster transaction in progress finish, then closes its client', async () => {
  const own = await startProxy({ cluster: [`127.0.0.1:${cluster.nodes[1].port}`], poolSize: 5, shutdownGraceMs: 5000 })
  const client = await RawClient.connect(own.address.port)
  const reader = new FrameReader(client)
  try {
    client.write(Buffer.concat([cmd('WATCH', '{sd}k'), cmd('MULTI'), cmd('SET', '{sd}k', 'done')]))
    assert.deepEqual(await reader.take(3, 5000), ['+OK\r\n', '+OK\r\n', '+QUEUED\r\n'])
    const closing = own.close()
    await delay(50)
    client.write(cmd('EXEC'))
    assert.equal(await reader.next(5000), '*1\r\n+OK\r\n')
    await closing
    assert.equal(await (await cluster.ownerOf(calculateSlot('{sd}k'))).client.get('{sd}k'), 'done')
  } finally {
    client.socket.destroy()
    await own.destroy()
  }
})

test('the master holding the shared subscriber connection dies: respool subscribes again on another master', async () => {
  const own = await startRedisCluster(3)
  const ownProxy = await startProxy({ cluster: own.nodes.map((n) => `127.0.0.1:${n.port}`), poolSize: 6 })
  const sub = await RawClient.connect(ownProxy.address.port)
  const reader = new FrameReader(sub)
  try {
    sub.write(cmd('SUBSCRIBE', 'alarm'))
    assert.equal(await reader.next(5000), '*3\r\n$9\r\nsubscribe\r\n$5\r\nalarm\r\n:1\r\n')
    const lists = await Promise.all(own.nodes.map(async (n) => String(await n.client.call('CLIENT', 'LIST'))))
    const holder = own.nodes[lists.findIndex((list) => / name=respool .* sub=1 /.test(list))]
    assert.ok(holder !== undefined, 'one master holds the subscriber connection')
    holder.client.disconnect()
    await holder.server.kill()
    const survivor = own.nodes.find((n) => n !== holder) as ClusterNodeHandle
    const deadline = Date.now() + 10_000
    let heard = ''
    while (heard === '' && Date.now() < deadline) {
      await survivor.client.publish('alarm', 'still here')
      heard = await reader.next(200).catch(() => '')
    }
    assert.equal(heard, '*3\r\n$7\r\nmessage\r\n$5\r\nalarm\r\n$10\r\nstill here\r\n')
  } finally {
    sub.socket.destroy()
    await ownProxy.destroy()
    await own.stop()
  }
})

test('redis-cli typing a transaction and a WATCH through respool in cluster mode prints what it prints against one Redis', async () => {
  const input = 'SET {cli}n 10\nWATCH {cli}n\nHELLO 3\nMULTI\nINCR {cli}n\nHGETALL {cli}h\nEXEC\nMULTI\nSET {cli}a 1\nSET other 1\nEXEC\nDEL {cli}n {cli}a\n'
  const run = async (port: number): Promise<string> => {
    const { runProgram } = await import('../helpers/run-program.js')
    const r = await runProgram('redis-cli', ['-p', String(port)], { input, timeoutMs: 10_000 })
    return r.stdout.toString().replace(/^id \d+$/m, 'id N') // HELLO: respool's client id is its own
  }
  const [viaProxy, direct] = await Promise.all([run(proxy.address.port), run(standalone.port)])
  // Only the cross-slot transaction differs: a cluster refuses it (CROSSSLOT, then EXECABORT).
  // (So {cli}a is never set, and the last DEL deletes one key, not two.)
  const expected = direct.replace(/OK\nQUEUED\nQUEUED\nOK\nOK\n2\n$/, 'OK\nQUEUED\nCROSSSLOT Keys in request don\'t hash to the same slot\n\nEXECABORT Transaction discarded because of previous errors.\n\n1\n')
  assert.notEqual(expected, direct, `the standalone transcript changed:\n${direct}`)
  assert.equal(viaProxy, expected)
})
