import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import calculateSlot from 'cluster-key-slot'
import { startRedisCluster, moveSlot, type RedisCluster, type ClusterNodeHandle } from '../helpers/redis-cluster.js'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// Transactions, blocking commands and pub/sub through respool in cluster mode: one 3-master
// cluster (no replicas), one standalone Redis to compare replies with byte for byte.
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
  await moveSlot(cluster, slot, to)
  replies.push(await step(cmd('SET', '{mv}b', '1')), await step(cmd('EXEC')))
  noRedirects(replies)
  assert.deepEqual(replies.slice(0, 2), ['+OK\r\n', '+QUEUED\r\n'])
  assert.match(replies[2], /^-ERR respool: slot \d+ moved to another cluster node during the transaction; EXEC will abort\r\n$/)
  assert.equal(replies[3], '-EXECABORT Transaction discarded because of previous errors.\r\n')

  // Moved after everything was queued: EXEC on the old owner is refused, the client gets EXECABORT.
  replies.length = 0
  replies.push(await step(cmd('MULTI')), await step(cmd('SET', '{mv}c', '1')))
  await moveSlot(cluster, slot, from)
  replies.push(await step(cmd('EXEC')))
  noRedirects(replies)
  assert.deepEqual(replies, ['+OK\r\n', '+QUEUED\r\n', '-EXECABORT Transaction discarded because of previous errors.\r\n'])

  // respool's map is stale now (the slot moved back behind its back): the first keyed command
  // is redirected before anything ran, so the transaction simply goes to the new owner.
  await moveSlot(cluster, slot, to)
  replies.length = 0
  for (const c of [cmd('MULTI'), cmd('PING'), cmd('SET', '{mv}d', '1'), cmd('INCR', '{mv}d'), cmd('EXEC')]) replies.push(await step(c))
  assert.deepEqual(replies, ['+OK\r\n', '+QUEUED\r\n', '+QUEUED\r\n', '+QUEUED\r\n', '*3\r\n+PONG\r\n+OK\r\n:2\r\n'])
  assert.equal(await to.client.get('{mv}d'), '2')
  // Same for WATCH on a stale map.
  await moveSlot(cluster, slot, from)
  replies.length = 0
  for (const c of [cmd('WATCH', '{mv}d'), cmd('MULTI'), cmd('INCR', '{mv}d'), cmd('EXEC')]) replies.push(await step(c))
  assert.deepEqual(replies, ['+OK\r\n', '+OK\r\n', '+QUEUED\r\n', '*1\r\n:3\r\n'])
  client.socket.destroy()
})
