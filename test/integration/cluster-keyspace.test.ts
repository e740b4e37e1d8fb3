import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import calculateSlot from 'cluster-key-slot'
import { startRedisCluster, type RedisCluster } from '../helpers/redis-cluster.js'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import type { ProxyServer } from '../../src/proxy-server.js'

// Whole-keyspace commands through respool in cluster mode, each compared with one standalone
// Redis holding the same data. One 3-master cluster for the file (these tests run one after
// another and each starts from an empty keyspace).
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

/** A connection to respool and one to the standalone Redis, fed the same commands. */
class Twin {
  private constructor (readonly viaProxy: FrameReader, readonly direct: FrameReader) {}
  static async open (resp: 2 | 3 = 2): Promise<Twin> {
    const twin = new Twin(new FrameReader(await RawClient.connect(proxy.address.port)), new FrameReader(await RawClient.connect(standalone.port)))
    if (resp === 3) await twin.both('HELLO', '3')
    return twin
  }

  /** The replies of respool and of the standalone Redis to one command. */
  async both (...args: string[]): Promise<[string, string]> {
    this.viaProxy.client.write(cmd(...args))
    this.direct.client.write(cmd(...args))
    return [await this.viaProxy.next(10_000), await this.direct.next(10_000)]
  }

  /** Asserts the two replies are the same bytes and returns them. */
  async same (...args: string[]): Promise<string> {
    const [a, b] = await this.both(...args)
    assert.equal(a, b, `${args.join(' ')}`)
    return a
  }

  close (): void {
    this.viaProxy.client.socket.destroy()
    this.direct.client.socket.destroy()
  }
}

/** The elements of an array reply of bulk strings. */
function bulkElements (frame: string): string[] {
  const out: string[] = []
  let at = frame.indexOf('\r\n') + 2
  while (at < frame.length) {
    const lineEnd = frame.indexOf('\r\n', at)
    const length = Number(frame.slice(at + 1, lineEnd))
    out.push(frame.slice(lineEnd + 2, lineEnd + 2 + length))
    at = lineEnd + 2 + length + 2
  }
  return out
}

async function emptyBoth (twin: Twin): Promise<void> {
  await twin.same('FLUSHALL')
  for (const node of cluster.nodes) assert.equal(await node.client.dbsize(), 0)
}

/** The same keys (of every master) in respool's cluster and in the standalone Redis. */
async function fill (twin: Twin, n: number, prefix: string): Promise<string[]> {
  const keys = Array.from({ length: n }, (_, i) => `${prefix}:${i}`)
  const commands = keys.map((k, i) => i % 3 === 0 ? cmd('RPUSH', k, 'a') : cmd('SET', k, `v${i}`))
  for (const reader of [twin.viaProxy, twin.direct]) {
    reader.client.write(Buffer.concat(commands))
    const replies = await reader.take(commands.length, 10_000)
    assert.ok(replies.every((r) => r === '+OK\r\n' || r === ':1\r\n'), 'filled')
  }
  return keys
}

test('DBSIZE, KEYS and INFO keyspace count every master, byte for byte as one Redis (RESP2 and RESP3)', async () => {
  for (const resp of [2, 3] as const) {
    const twin = await Twin.open(resp)
    try {
      await emptyBoth(twin)
      await twin.same('DBSIZE')
      await twin.same('KEYS', '*')
      await twin.same('INFO', 'keyspace')
      const keys = await fill(twin, 200, `ks${resp}`)
      const owners = new Set(await Promise.all(keys.slice(0, 20).map(async (k) => (await cluster.ownerOf(calculateSlot(k))).port)))
      assert.equal(owners.size, 3, 'the keys are spread over the three masters')
      assert.equal(await twin.same('DBSIZE'), ':200\r\n')
      await twin.same('INFO', 'keyspace')
      await twin.same('INFO', 'KEYSPACE', 'server-does-not-exist')
      // KEYS: Redis gives no order; the same keys, each once, in one array of the same length.
      for (const pattern of ['*', `ks${resp}:1*`, 'nothing*', `ks${resp}:[0-2]`]) {
        const [a, b] = await twin.both('KEYS', pattern)
        assert.equal(a.slice(0, a.indexOf('\r\n')), b.slice(0, b.indexOf('\r\n')), `KEYS ${pattern} count`)
        assert.deepEqual(bulkElements(a).sort(), bulkElements(b).sort(), `KEYS ${pattern}`)
        assert.equal(a.length, b.length)
      }
      await twin.same('KEYS')
      await twin.same('DBSIZE', 'extra')
      // Plain INFO and INFO all/everything: the Keyspace section is the whole cluster's.
      for (const args of [['INFO'], ['INFO', 'all'], ['INFO', 'everything'], ['INFO', 'default']]) {
        const [a, b] = await twin.both(...args)
        const section = (s: string): string => s.slice(s.indexOf('# Keyspace'), s.indexOf('\r\n', s.indexOf('db0:')) + 2)
        assert.equal(section(a), section(b), args.join(' '))
        assert.match(a, /cluster_enabled:0\r\n/)
        assert.equal(Number(/^[$=](\d+)\r\n/.exec(a)?.[1]), Buffer.byteLength(a, 'latin1') - a.indexOf('\r\n') - 4, 'length prefix')
      }
      // Expiring keys: keys and expires summed; avg_ttl is an estimate (sampled by the expire
      // cycle) in one Redis too, merged weighted by each master's expires (unit-tested).
      for (const key of keys.slice(0, 30)) await twin.same('EXPIRE', key, '1000')
      const [a, b] = await twin.both('INFO', 'keyspace')
      const fields = (s: string): string[] => (/keys=(\d+),expires=(\d+),avg_ttl=(\d+)/.exec(s) ?? []).slice(1)
      assert.deepEqual(fields(a).slice(0, 2), ['200', '30'])
      assert.deepEqual(fields(a).slice(0, 2), fields(b).slice(0, 2))
      assert.ok(Number(fields(a)[2]) <= 1_000_000, `avg_ttl ${fields(a)[2]}`)
    } finally {
      twin.close()
    }
  }
})

test('SCAN visits every master with a plain 64-bit cursor: each key once, MATCH/COUNT/TYPE pass through', async () => {
  const twin = await Twin.open()
  try {
    await emptyBoth(twin)
    const keys = await fill(twin, 300, 'scan')
    const scanAll = async (reader: FrameReader, options: string[]): Promise<{ keys: string[], cursors: string[] }> => {
      const seen: string[] = []
      const cursors: string[] = []
      let cursor = '0'
      for (let round = 0; round < 1000; round++) {
        reader.client.write(cmd('SCAN', cursor, ...options))
        const reply = await reader.next(10_000)
        const m = /^\*2\r\n\$(\d+)\r\n(\d+)\r\n/.exec(reply)
        assert.ok(m !== null, `a SCAN reply: ${reply.slice(0, 80)}`)
        assert.equal(Number(m[1]), m[2].length)
        cursor = m[2]
        cursors.push(cursor)
        seen.push(...bulkElements(reply.slice(m[0].length)))
        if (cursor === '0') return { keys: seen, cursors }
      }
      throw new Error('SCAN did not end')
    }
    for (const options of [[], ['COUNT', '7'], ['MATCH', 'scan:1*', 'COUNT', '50'], ['TYPE', 'list', 'COUNT', '1000'], ['TYPE', 'string', 'MATCH', '*7']]) {
      const viaProxy = await scanAll(twin.viaProxy, options)
      const direct = await scanAll(twin.direct, options)
      assert.equal(new Set(viaProxy.keys).size, viaProxy.keys.length, `no key twice (${options.join(' ')})`)
      assert.deepEqual(viaProxy.keys.sort(), direct.keys.sort(), options.join(' '))
      for (const c of viaProxy.cursors) assert.ok(BigInt(c) < 1n << 63n, `cursor ${c} fits a signed 64-bit integer`)
    }
    assert.equal((await scanAll(twin.viaProxy, ['COUNT', '1000'])).keys.length, keys.length)
    // What Redis refuses, respool refuses with the same bytes.
    for (const bad of [['abc'], ['18446744073709551616'], [' 1'], ['0', 'COUNT', '0'], ['0', 'MATCH'], ['0', 'TYPE']]) await twin.same('SCAN', ...bad)
    await twin.same('SCAN')
    // A cursor past the last master ends the scan.
    assert.equal(await twin.viaProxy.next(1).catch(() => 'nothing'), 'nothing')
    twin.viaProxy.client.write(cmd('SCAN', String(1n << 62n)))
    assert.equal(await twin.viaProxy.next(), '*2\r\n$1\r\n0\r\n*0\r\n')
  } finally {
    twin.close()
  }
  // RESP3: the same array shape.
  const resp3 = await Twin.open(3)
  try {
    const [a] = await resp3.both('SCAN', '0', 'COUNT', '5')
    assert.match(a, /^\*2\r\n\$\d+\r\n\d+\r\n\*\d+\r\n/)
  } finally {
    resp3.close()
  }
})

test('RANDOMKEY finds the key when only one master holds any; nil when none does', async () => {
  for (const resp of [2, 3] as const) {
    const twin = await Twin.open(resp)
    try {
      await emptyBoth(twin)
      await twin.same('RANDOMKEY')
      await twin.same('SET', '{only}key', 'v')
      for (let i = 0; i < 20; i++) assert.equal(await twin.same('RANDOMKEY'), '$9\r\n{only}key\r\n')
      await twin.same('RANDOMKEY', 'extra')
    } finally {
      twin.close()
    }
  }
})

test('FLUSHALL and FLUSHDB (ASYNC, SYNC) clear every master', async () => {
  const twin = await Twin.open()
  try {
    for (const args of [['FLUSHALL'], ['FLUSHALL', 'ASYNC'], ['FLUSHALL', 'SYNC'], ['FLUSHDB'], ['FLUSHDB', 'ASYNC'], ['FLUSHDB', 'SYNC']]) {
      await fill(twin, 60, 'flush')
      for (const node of cluster.nodes) assert.ok(await node.client.dbsize() > 0)
      assert.equal(await twin.same(...args), '+OK\r\n')
      for (const node of cluster.nodes) {
        for (let i = 0; i < 100 && await node.client.dbsize() > 0; i++) await new Promise((resolve) => setTimeout(resolve, 10))
        assert.equal(await node.client.dbsize(), 0, `${args.join(' ')} on ${node.port}`)
      }
    }
    await twin.same('FLUSHALL', 'NOW')
    await twin.same('FLUSHDB', 'ASYNC', 'SYNC')
  } finally {
    twin.close()
  }
})

test('SCRIPT LOAD/EXISTS/FLUSH reach every master and EVALSHA works on keys of every master', async () => {
  const twin = await Twin.open()
  try {
    await emptyBoth(twin)
    await twin.same('SCRIPT', 'FLUSH')
    const body = 'return redis.call("SET", KEYS[1], ARGV[1])'
    const sha = await twin.same('SCRIPT', 'LOAD', body)
    const plainSha = bulkElements(`*1\r\n${sha}`)[0]
    for (const node of cluster.nodes) assert.deepEqual(await node.client.call('SCRIPT', 'EXISTS', plainSha), [1])
    for (let i = 0; i < 30; i++) assert.equal(await twin.same('EVALSHA', plainSha, '1', `es:${i}`, String(i)), '+OK\r\n')
    await twin.same('SCRIPT', 'EXISTS', plainSha, 'ffffffffffffffffffffffffffffffffffffffff', plainSha)
    // Loaded on one master only (directly): EXISTS is 1 only where every master has it.
    const partial = String(await cluster.nodes[1].client.call('SCRIPT', 'LOAD', 'return 42'))
    const twinPartial = await twin.both('SCRIPT', 'EXISTS', partial, plainSha)
    assert.equal(twinPartial[0], '*2\r\n:0\r\n:1\r\n')
    await twin.same('SCRIPT', 'EXISTS')
    await twin.same('SCRIPT')
    await twin.same('SCRIPT', 'LOAD')
    await twin.same('SCRIPT', 'LOAD', 'return +')
    assert.equal(await twin.same('SCRIPT', 'FLUSH', 'ASYNC'), '+OK\r\n')
    for (const node of cluster.nodes) assert.deepEqual(await node.client.call('SCRIPT', 'EXISTS', plainSha), [0])
    await twin.same('EVALSHA', plainSha, '1', 'es:0', 'x')
    await twin.same('SCRIPT', 'FLUSH', 'LATER')
  } finally {
    twin.close()
  }
})

test('EVALSHA answered NOSCRIPT by a master that lost or never saw the script: respool loads it there and runs it', async () => {
  const twin = await Twin.open()
  try {
    await emptyBoth(twin)
    const body = 'return redis.call("INCR", KEYS[1])'
    const sha = bulkElements(`*1\r\n${await twin.same('SCRIPT', 'LOAD', body)}`)[0]
    // As if a master had been replaced by one that never loaded the script (failover, new node).
    await cluster.nodes[2].client.call('SCRIPT', 'FLUSH')
    const reloadsBefore = proxy.cluster?.whole.scripts.reloads ?? 0
    for (let i = 0; i < 12; i++) assert.equal(await twin.same('EVALSHA', sha, '1', `ns:${i}`), ':1\r\n')
    assert.ok((proxy.cluster?.whole.scripts.reloads ?? 0) > reloadsBefore, 'respool loaded the script again')
    assert.deepEqual(await cluster.nodes[2].client.call('SCRIPT', 'EXISTS', sha), [1])
    // A script run with EVAL on one master, then EVALSHA for a key of another master, as on one Redis.
    await twin.same('SCRIPT', 'FLUSH')
    const evalBody = 'return KEYS[1]'
    const evalSha = String(await cluster.nodes[0].client.call('SCRIPT', 'LOAD', evalBody)) // only to learn the SHA
    await cluster.nodes[0].client.call('SCRIPT', 'FLUSH')
    await twin.same('EVAL', evalBody, '1', 'ev:0')
    for (let i = 0; i < 12; i++) await twin.same('EVALSHA', evalSha, '1', `ev:${i}`)
    // An unknown SHA is NOSCRIPT, as from one Redis.
    await twin.same('EVALSHA', 'ffffffffffffffffffffffffffffffffffffffff', '1', 'k')
  } finally {
    twin.close()
  }
})

test('FUNCTION LOAD/DELETE/FLUSH/RESTORE reach every master; FCALL works on keys of every master', async () => {
  const twin = await Twin.open()
  try {
    await emptyBoth(twin)
    await twin.same('FUNCTION', 'FLUSH')
    const lib = '#!lua name=ks\nredis.register_function("ksset", function(keys, args) return redis.call("SET", keys[1], args[1]) end)'
    assert.equal(await twin.same('FUNCTION', 'LOAD', lib), '$2\r\nks\r\n')
    await twin.same('FUNCTION', 'LOAD', lib)
    for (const node of cluster.nodes) assert.equal((await node.client.call('FUNCTION', 'LIST') as unknown[]).length, 1)
    for (let i = 0; i < 20; i++) await twin.same('FCALL', 'ksset', '1', `fn:${i}`, 'v')
    await twin.same('FUNCTION', 'LIST')
    twin.viaProxy.client.write(cmd('FUNCTION', 'DUMP'))
    const dump = await twin.viaProxy.next()
    assert.ok(dump.startsWith('$'))
    assert.equal(await twin.same('FUNCTION', 'DELETE', 'ks'), '+OK\r\n')
    for (const node of cluster.nodes) assert.deepEqual(await node.client.call('FUNCTION', 'LIST'), [])
    await twin.same('FUNCTION', 'DELETE', 'ks')
    await twin.same('FUNCTION')
    await twin.same('FCALL', 'ksset', '1', 'fn:0', 'v')
    // RESTORE of the dump taken through respool brings the library back on every master.
    const payload = bulkElements(`*1\r\n${dump}`)[0]
    twin.viaProxy.client.write(cmd('FUNCTION', 'RESTORE', Buffer.from(payload, 'latin1')))
    assert.equal(await twin.viaProxy.next(), '+OK\r\n')
    for (const node of cluster.nodes) assert.equal((await node.client.call('FUNCTION', 'LIST') as unknown[]).length, 1)
    assert.equal(await twin.same('FUNCTION', 'FLUSH', 'SYNC'), '+OK\r\n')
    for (const node of cluster.nodes) assert.deepEqual(await node.client.call('FUNCTION', 'LIST'), [])
  } finally {
    twin.close()
  }
})

test('SELECT answers as a cluster node does', async () => {
  const viaProxy = new FrameReader(await RawClient.connect(proxy.address.port))
  const node = new FrameReader(await RawClient.connect(cluster.nodes[0].port))
  try {
    for (const args of [['SELECT', '0'], ['SELECT', '1'], ['SELECT', '15'], ['SELECT', 'x'], ['SELECT'], ['SELECT', '1', '2'], ['SELECT', '-1']]) {
      viaProxy.client.write(cmd(...args))
      node.client.write(cmd(...args))
      assert.equal(await viaProxy.next(), await node.next(), args.join(' '))
    }
  } finally {
    viaProxy.client.socket.destroy()
    node.client.socket.destroy()
  }
})
