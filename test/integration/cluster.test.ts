import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import calculateSlot from 'cluster-key-slot'
import { startRedisCluster, moveSlot, type RedisCluster } from '../helpers/redis-cluster.js'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { ConfigError } from '../../src/errors.js'
import { ProxyServer as ProxyServerClass, type ProxyServer } from '../../src/proxy-server.js'

// One 3-master cluster (no replicas) and one standalone Redis to compare replies with.
let cluster: RedisCluster
let standalone: RedisServer
let proxy: ProxyServer
before(async () => {
  ;[cluster, standalone] = await Promise.all([startRedisCluster(3), startRedis()])
  proxy = await startProxy({ cluster: [`127.0.0.1:${cluster.nodes[0].port}`], poolSize: 8 })
})
after(async () => {
  await proxy?.destroy()
  await cluster?.stop()
  await standalone?.stop()
})

/** Sends the same commands (one pipeline) to respool and to a standalone Redis; the raw replies. */
async function bothWays (commands: Buffer[]): Promise<{ viaProxy: string[], direct: string[] }> {
  const run = async (port: number): Promise<string[]> => {
    const client = await RawClient.connect(port)
    try {
      client.write(Buffer.concat(commands))
      return await new FrameReader(client).take(commands.length, 10_000)
    } finally {
      client.socket.destroy()
    }
  }
  const [viaProxy, direct] = await Promise.all([run(proxy.address.port), run(standalone.port)])
  return { viaProxy, direct }
}

/** Keys that hash to slots on every master. */
function keysEverywhere (n: number, prefix: string): string[] {
  return Array.from({ length: n }, (_, i) => `${prefix}:${i}`)
}

test('single-key commands on keys of every slot range answer byte for byte as one Redis', async () => {
  const keys = keysEverywhere(300, 'single')
  const owners = new Set(await Promise.all(keys.slice(0, 30).map(async (k) => (await cluster.ownerOf(calculateSlot(k))).port)))
  assert.equal(owners.size, 3, 'the keys cover all three masters')
  const commands: Buffer[] = []
  for (const [i, key] of keys.entries()) {
    commands.push(cmd('SET', key, `v${i}\r\n\0`), cmd('GET', key), cmd('INCR', `${key}:n`), cmd('RPUSH', `${key}:l`, 'a', 'b'),
      cmd('LRANGE', `${key}:l`, '0', '-1'), cmd('HSET', `{${key}}:h`, 'f', '1'), cmd('HGETALL', `{${key}}:h`), cmd('GET', `${key}:missing`),
      cmd('LPUSH', key, 'x'))
  }
  const { viaProxy, direct } = await bothWays(commands)
  assert.deepEqual(viaProxy, direct)
  assert.ok(!viaProxy.some((r) => /^-(MOVED|ASK)/.test(r)))
  // The keys really are on the masters that own their slots.
  for (const key of keys.slice(0, 20)) {
    const owner = await cluster.ownerOf(calculateSlot(key))
    assert.match(String(await owner.client.get(key)), /^v\d+/)
  }
})

test('MGET, MSET, DEL, UNLINK, EXISTS and TOUCH across slots give exactly the single-Redis reply', async () => {
  const k = keysEverywhere(12, 'multi')
  const commands = [
    cmd('MSET', ...k.slice(0, 8).flatMap((key, i) => [key, `value-${i}`])),
    cmd('MGET', k[0], k[9], k[1], k[0], k[7], k[10], k[3]),
    cmd('EXISTS', k[0], k[0], k[1], k[11], k[2]),
    cmd('TOUCH', k[0], k[5], k[11]),
    cmd('DEL', k[0], k[0], k[1], k[11]),
    cmd('UNLINK', k[2], k[3], k[9]),
    cmd('MGET', ...k),
    cmd('MSET', k[0]),
    cmd('MGET'),
    cmd('DEL', k[4], k[5], k[6], k[7])
  ]
  const { viaProxy, direct } = await bothWays(commands)
  assert.deepEqual(viaProxy, direct)
})

test('other multi-key commands across slots, SELECT, INFO and CLUSTER answer as a cluster node or a standalone Redis would', async () => {
  const client = await RawClient.connect(proxy.address.port)
  const reader = new FrameReader(client)
  const ask = async (...args: string[]): Promise<string> => {
    client.write(cmd(...args))
    return await reader.next()
  }
  assert.equal(await ask('SUNIONSTORE', 'a', 'b', 'c'), '-CROSSSLOT Keys in request don\'t hash to the same slot\r\n')
  assert.equal(await ask('MSETNX', 'a', '1', 'b', '2'), '-CROSSSLOT Keys in request don\'t hash to the same slot\r\n')
  assert.equal(await ask('MSETNX', '{t}a', '1', '{t}b', '2'), ':1\r\n')
  assert.equal(await ask('SUNIONSTORE', '{t}d', '{t}s1', '{t}s2'), ':0\r\n')
  assert.equal(await ask('SELECT', '0'), '+OK\r\n')
  assert.equal(await ask('SELECT', '1'), '-ERR SELECT is not allowed in cluster mode\r\n')
  assert.match(await ask('INFO'), /cluster_enabled:0\r\n/)
  assert.equal(await ask('CLUSTER', 'NODES'), '-ERR This instance has cluster support disabled\r\n')
  assert.equal(await ask('CLUSTER', 'KEYSLOT', 'foo'), ':12182\r\n')
  assert.equal(await ask('PING'), '+PONG\r\n')
  // Transactions and blocking commands work (cluster-pinned.test.ts); MONITOR and WAIT stay refused.
  assert.equal(await ask('MULTI'), '+OK\r\n')
  assert.equal(await ask('DISCARD'), '+OK\r\n')
  assert.equal(await ask('BLPOP', 'q', '0.01'), '*-1\r\n')
  assert.match(await ask('MONITOR'), /^-ERR respool: MONITOR is not supported in cluster mode/)
  assert.match(await ask('WAIT', '0', '0'), /^-ERR respool: WAIT is not supported in cluster mode/)
  assert.match(await ask('DBSIZE'), /^:\d+\r\n$/) // summed over the masters (cluster-keyspace.test.ts)
  client.socket.destroy()
})

test('ioredis in non-cluster mode works through respool: pipelines across nodes come back in order', async () => {
  const client = new Redis({ port: proxy.address.port, host: '127.0.0.1' })
  try {
    const pipeline = client.pipeline()
    for (let i = 0; i < 500; i++) pipeline.set(`io:${i}`, String(i)).get(`io:${i}`)
    const results = await pipeline.exec()
    assert.ok(results !== null)
    results.forEach(([err, value], n) => {
      assert.equal(err, null)
      assert.equal(value, n % 2 === 0 ? 'OK' : String((n - 1) / 2))
    })
    assert.deepEqual(await client.mget('io:1', 'io:2', 'nope', 'io:3'), ['1', '2', null, '3'])
    assert.equal(await client.del('io:1', 'io:2', 'io:3', 'nope'), 3)
  } finally {
    client.disconnect()
  }
})

test('a pipeline over every node while one node is paused: replies in the client\'s order, byte for byte; another client\'s commands on the other nodes are not held', async () => {
  const keys = keysEverywhere(90, 'slow')
  const sets = keys.map((k, i) => cmd('SET', k, `v${i}`))
  await bothWays(sets)
  const paused = await cluster.ownerOf(calculateSlot(keys[0]))
  const onOtherNodes: string[] = []
  for (const k of keys) if ((await cluster.ownerOf(calculateSlot(k))).port !== paused.port) onOtherNodes.push(k)
  assert.ok(onOtherNodes.length > 10 && onOtherNodes.length < keys.length, 'keys on the paused node and on others')
  const pipeline = keys.flatMap((k) => [cmd('GET', k), cmd('INCR', `${k}:n`), cmd('STRLEN', k)])
  // The paused node answers nothing for a second (CLIENT PAUSE returns at once, so it is in
  // effect before the pipeline is sent).
  assert.equal(String(await paused.client.call('CLIENT', 'PAUSE', '1000', 'ALL')), 'OK')
  let bystanderDoneAt = 0
  let pipelineDoneAt = 0
  const bystander = (async () => {
    const c = await RawClient.connect(proxy.address.port)
    try {
      c.write(Buffer.concat(onOtherNodes.slice(0, 10).map((k) => cmd('GET', k))))
      const got = await new FrameReader(c).take(10, 10_000)
      bystanderDoneAt = performance.now()
      assert.deepEqual(got, onOtherNodes.slice(0, 10).map((k) => { const v = `v${keys.indexOf(k)}`; return `$${v.length}\r\n${v}\r\n` }))
    } finally {
      c.socket.destroy()
    }
  })()
  const both = bothWays(pipeline).then((r) => { pipelineDoneAt = performance.now(); return r })
  const [{ viaProxy, direct }] = await Promise.all([both, bystander])
  assert.deepEqual(viaProxy, direct)
  assert.ok(bystanderDoneAt > 0 && bystanderDoneAt < pipelineDoneAt, 'the bystander on other nodes was answered while the paused node held the pipeline')
})

test('slots moved by hand (MOVED) and half-moved (ASK) under load: no client sees an error or a redirect', async () => {
  const hot = Array.from({ length: 6 }, (_, i) => `{hot${i}}`)
  const clients = Array.from({ length: 4 }, () => new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0 }))
  const errors: string[] = []
  let running = true
  let ops = 0
  const loops = clients.map(async (client, c) => {
    for (let n = 0; running; n++) {
      const key = `${hot[n % hot.length]}:${c}`
      try {
        await client.set(key, String(n))
        const got = await client.get(key)
        if (got !== String(n)) errors.push(`${key}: read ${String(got)} after writing ${n}`)
        await client.incr(`${hot[n % hot.length]}:counter`)
        ops++
      } catch (err) {
        errors.push((err as Error).message)
      }
    }
  })
  try {
    for (const [i, tag] of hot.entries()) {
      const slot = calculateSlot(tag)
      const owner = await cluster.ownerOf(slot)
      const to = cluster.nodes[(cluster.nodes.indexOf(owner) + 1 + (i % 2)) % 3]
      await moveSlot(cluster, slot, to, async () => {
        // Half-moved: keys still on the source are served there, new ones go to the target via ASK.
        const direct = new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0 })
        try {
          assert.equal(await direct.set(`${tag}:fresh`, 'new'), 'OK')
          assert.equal(await direct.get(`${tag}:fresh`), 'new')
        } finally {
          direct.disconnect()
        }
        assert.equal(await to.client.call('ASKING').then(async () => await to.client.get(`${tag}:fresh`)), 'new')
      })
      assert.equal((await cluster.ownerOf(slot)).port, to.port)
    }
    await new Promise((resolve) => setTimeout(resolve, 300))
  } finally {
    running = false
    await Promise.all(loops)
    for (const client of clients) client.disconnect()
  }
  assert.deepEqual(errors, [])
  assert.ok(ops > 50, `some load ran (${ops} rounds)`)
  assert.ok((proxy.cluster?.redirects ?? 0) > 0, 'respool followed redirects')
})

test('a pool smaller than one connection per master, one for slot-map fetches and one pin is refused at start', async () => {
  await assert.rejects(startProxy({ cluster: [`127.0.0.1:${cluster.nodes[1].port}`], poolSize: 3 }), (err: Error) => {
    assert.ok(err instanceof ConfigError)
    assert.match(err.message, /pool-size: 3 is too small for a cluster of 3 masters.*--pool-size 5 at least/)
    return true
  })
})

test('commands whose keys depend on their arguments are routed by those keys', async () => {
  const client = await RawClient.connect(proxy.address.port)
  const reader = new FrameReader(client)
  const ask = async (...args: string[]): Promise<string> => {
    client.write(cmd(...args))
    return await reader.next()
  }
  assert.equal(await ask('RPUSH', '{s}list', '3', '1', '2'), ':3\r\n')
  assert.equal(await ask('SORT', '{s}list', 'STORE', '{s}sorted'), ':3\r\n')
  assert.equal(await ask('SORT', '{s}list', 'STORE', 'elsewhere'), '-CROSSSLOT Keys in request don\'t hash to the same slot\r\n')
  assert.equal(await ask('EVAL', 'return redis.call("GET", KEYS[1])', '1', '{s}x'), '$-1\r\n')
  assert.equal(await ask('EVAL', 'return #KEYS', '2', 'a', 'b'), '-CROSSSLOT Keys in request don\'t hash to the same slot\r\n')
  assert.equal(await ask('EVAL', 'return 7', '0'), ':7\r\n')
  assert.equal(await ask('XADD', '{s}st', '1-1', 'f', 'v'), '$3\r\n1-1\r\n')
  assert.equal(await ask('XREAD', 'COUNT', '1', 'STREAMS', '{s}st', '0'), '*1\r\n*2\r\n$5\r\n{s}st\r\n*1\r\n*2\r\n$3\r\n1-1\r\n*2\r\n$1\r\nf\r\n$1\r\nv\r\n')
  client.socket.destroy()
})

test('RESP3 clients get RESP3 replies from every node, merged replies included', async () => {
  const k = keysEverywhere(6, 'resp3')
  const commands = [
    cmd('HELLO', '3', 'SETNAME', 'x'),
    cmd('MSET', ...k.flatMap((key) => [key, key])),
    cmd('HSET', k[0] + ':h', 'f', 'v'),
    cmd('HGETALL', k[0] + ':h'),
    cmd('MGET', k[0], 'missing', k[5]),
    cmd('GET', 'missing'),
    cmd('EXISTS', ...k)
  ]
  const { viaProxy, direct } = await bothWays(commands)
  assert.deepEqual(viaProxy.slice(1), direct.slice(1)) // HELLO itself names the server it came from
  assert.equal(viaProxy[4], `*3\r\n$${k[0].length}\r\n${k[0]}\r\n_\r\n$${k[5].length}\r\n${k[5]}\r\n`)
})

test('cluster options: --cluster cannot be combined with --sentinel or a database other than 0', () => {
  assert.throws(() => new ProxyServerClass({ cluster: ['127.0.0.1:7000'], sentinels: ['127.0.0.1:26379'], sentinelMaster: 'm' }), /--cluster and --sentinel/)
  assert.throws(() => new ProxyServerClass({ cluster: ['127.0.0.1:7000'], upstream: 'redis://127.0.0.1:6379/2' }), /only database 0/)
  assert.throws(() => new ProxyServerClass({ cluster: ['nonsense:port'] }), /cluster: expected host:port/)
})
