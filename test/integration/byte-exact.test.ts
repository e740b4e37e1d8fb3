import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { replyStream } from '../helpers/resp-frames.js'
import { startBystanders } from '../helpers/bystanders.js'
import type { ProxyServer } from '../../src/proxy-server.js'

let redis: RedisServer
let proxy: ProxyServer

before(async () => {
  redis = await startRedis()
  proxy = await startProxy({ upstream: redis.url, poolSize: 2 })
})
after(async () => {
  await proxy?.destroy()
  await redis?.stop()
})

/**
 * Runs the same bytes from an empty database directly and through respool, with bystanders
 * pipelining on the same lanes: the two whole reply streams (up to a sentinel sent after the
 * input) must be identical, byte for byte.
 */
async function sameAsDirect (input: Buffer): Promise<string> {
  const want = await replyStream(redis.port, Buffer.concat([cmd('FLUSHALL'), input]))
  assert.ok(want.length > 5)
  const got = await replyStream(proxy.address.port, Buffer.concat([cmd('FLUSHALL'), input]))
  assert.equal(got, want)
  return got
}

test('replies are byte-identical to direct Redis across reply types', { timeout: 30000 }, async () => {
  // The inputs flush the database, so the bystanders touch no key.
  const bystanders = await startBystanders(proxy.address.port, { keys: false })
  after(async () => { await bystanders.stop() })
  const binary = Buffer.from([0, 13, 10, 255, 36, 42, 13, 10, 0])
  await sameAsDirect(Buffer.concat([cmd('SET', 'bx', binary), cmd('GET', 'bx')]))
  await sameAsDirect(cmd('SET', 'str', 'OK'))
  await sameAsDirect(cmd('GET', 'missing-key'))
  await sameAsDirect(Buffer.concat([cmd('SET', 'big', '9223372036854775806'), cmd('INCR', 'big'), cmd('INCR', 'big')])) // 2^63-1, then the overflow error
  await sameAsDirect(Buffer.concat([cmd('DEL', 'l'), cmd('RPUSH', 'l', 'a', '', 'c'), cmd('LRANGE', 'l', '0', '-1'), cmd('LRANGE', 'nolist', '0', '-1')]))
  await sameAsDirect(cmd('EVAL', "return {1, {2, {'x', false}}, {}, redis.status_reply('FINE'), redis.error_reply('MY err')}", '0'))
  await sameAsDirect(Buffer.concat([cmd('SET', 'str', 'x'), cmd('LPUSH', 'str', 'x')])) // WRONGTYPE
  await sameAsDirect(cmd('NOSUCHCOMMAND', 'a', 'b'))
  await sameAsDirect(cmd('GET'))
  await bystanders.moreRounds(1)
  assert.deepEqual(await bystanders.stop(), [])
})

test('exact bytes for the basics', { timeout: 10000 }, async () => {
  const client = await RawClient.connect(proxy.address.port)
  after(() => { client.close() })
  client.write(Buffer.concat([cmd('SET', 'k', 'v'), cmd('GET', 'k'), cmd('GET', 'nope'), cmd('PING'), cmd('ECHO', 'a\r\nb')]))
  assert.equal(await client.readExactly('+OK\r\n$1\r\nv\r\n$-1\r\n+PONG\r\n$4\r\na\r\nb\r\n'), '+OK\r\n$1\r\nv\r\n$-1\r\n+PONG\r\n$4\r\na\r\nb\r\n')
})

test('inline commands work as typed in telnet', { timeout: 10000 }, async () => {
  const client = await RawClient.connect(proxy.address.port)
  after(() => { client.close() })
  client.write('PING\r\nSET inl "hello world"\r\nGET inl\r\n')
  assert.equal(await client.readExactly('+PONG\r\n+OK\r\n$11\r\nhello world\r\n'), '+PONG\r\n+OK\r\n$11\r\nhello world\r\n')
})

test('a 100 MB value passes through intact', { timeout: 60000 }, async () => {
  const size = 100 * 1024 * 1024
  const value = Buffer.alloc(size)
  for (let i = 0; i < size; i += 4096) value[i] = i & 0xff
  const client = await RawClient.connect(proxy.address.port)
  after(() => { client.close() })
  client.write(cmd('SET', 'huge', value))
  assert.equal(await client.readExactly('+OK\r\n', { timeoutMs: 30000 }), '+OK\r\n')
  client.write(cmd('GET', 'huge'))
  const header = `$${size}\r\n`
  const reply = await client.read(header.length + size + 2, 30000)
  assert.equal(reply.subarray(0, header.length).toString(), header)
  assert.ok(reply.subarray(header.length, header.length + size).equals(value))
  client.write(cmd('DEL', 'huge'))
  assert.equal(await client.readExactly(':1\r\n'), ':1\r\n')
})

test('a pipeline of 1000 commands in one write comes back complete and in order', { timeout: 10000 }, async () => {
  const client = await RawClient.connect(proxy.address.port)
  after(() => { client.close() })
  const cmds = Array.from({ length: 1000 }, (_, i) => cmd('ECHO', String(i)))
  client.write(Buffer.concat(cmds))
  const expected = Array.from({ length: 1000 }, (_, i) => `$${String(i).length}\r\n${i}\r\n`).join('')
  assert.equal(await client.readExactly(expected), expected)
})
