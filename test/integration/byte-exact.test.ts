import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, commandOn, replyStream, replyStreamOn } from '../helpers/resp-frames.js'
import { startCheckedBystanders } from '../helpers/checked-bystanders.js'
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
  const bystanders = await startCheckedBystanders(proxy.address.port, { keys: false })
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

test('RESP3 replies of every type are byte-identical to direct Redis, on a lane shared with RESP2 bystanders', { timeout: 60000 }, async () => {
  // DEBUG PROTOCOL is the only way to get an attribute reply: a Redis that allows DEBUG, and a
  // proxy whose deny list lets it through.
  const debuggable = await startRedis(['--enable-debug-command', 'yes'])
  after(async () => { await debuggable.stop() })
  const p = await startProxy({ upstream: debuggable.url, poolSize: 2, maxPins: 1, denyCommands: ['shutdown'] })
  after(async () => { await p.destroy() })
  // A subscriber holds the only pin, so the other connection is the one lane everyone shares.
  const holder = await RawClient.connect(p.address.port)
  after(() => { holder.close() })
  holder.write(cmd('SUBSCRIBE', 'resp3-holder'))
  assert.equal(await new FrameReader(holder).next(), '*3\r\n$9\r\nsubscribe\r\n$12\r\nresp3-holder\r\n:1\r\n')
  const lua = (body: string): Buffer => cmd('EVAL', `redis.setresp(3); ${body}`, '0')
  const input = Buffer.concat([
    cmd('SET', 'r3:s', 'v'), cmd('GET', 'r3:s'), cmd('GET', 'r3:missing'), // null
    cmd('ZADD', 'r3:z', '1.5', 'a', '2e300', 'b', 'inf', 'c'), cmd('ZSCORE', 'r3:z', 'a'), cmd('ZINCRBY', 'r3:z', '0.1', 'a'), // doubles
    cmd('ZRANGE', 'r3:z', '0', '-1', 'WITHSCORES'), cmd('ZSCORE', 'r3:z', 'c'), cmd('ZSCORE', 'r3:z', 'nope'),
    cmd('SADD', 'r3:set', 'x', 'y', 'z'), cmd('SMEMBERS', 'r3:set'), // set
    cmd('HSET', 'r3:h', 'f', 'v', 'g', 'w'), cmd('HGETALL', 'r3:h'), cmd('CONFIG', 'GET', 'maxmemory-policy'), // maps
    cmd('HGET', 'r3:z', 'x'), // an error
    lua('return {double=3.14}'), lua("return {big_number='1234567890123456789012345678901234567890'}"),
    lua("return {verbatim_string={format='txt', string='two\\r\\nlines'}}"),
    lua("return {map={a=1, b={set={x=true}}}}"), lua('return {set={p=true, q=true}}'),
    lua('return true'), lua('return false'), lua('return nil'),
    lua("return {1, {double=0.5}, {map={k={big_number='9'}}}, false, {err='nested ERR'}}"),
    ...['attrib', 'bignum', 'verbatim', 'true', 'false', 'null', 'double', 'map', 'set'].map((type) => cmd('DEBUG', 'PROTOCOL', type))
  ])
  const clean = async (): Promise<void> => {
    assert.match(await commandOn(debuggable.port, 'DEL', 'r3:s', 'r3:z', 'r3:set', 'r3:h'), /^:\d+\r\n$/)
  }
  /** HELLO 3 on a fresh connection, then the input: HELLO's reply (its id left out, which differs) and the whole stream. */
  const run = async (port: number, resp: 2 | 3): Promise<{ hello: string, stream: string, lane: number | null | undefined }> => {
    await clean()
    const client = await RawClient.connect(port)
    try {
      const frames = new FrameReader(client)
      client.write(cmd('CLIENT', 'ID'))
      const id = Number(/^:(\d+)\r\n$/.exec(await frames.next())?.[1])
      const hello = resp === 3 ? await replyStreamOn(frames, cmd('HELLO', '3')) : ''
      const stream = await replyStreamOn(frames, input)
      // The upstream connection that carried it, when through respool.
      const lane = port === p.address.port ? p.sessions().find((s) => s.id === id)?.upstreamId : null
      return { hello: hello.replace(/\$2\r\nid\r\n:\d+\r\n/, '$2\r\nid\r\n:?\r\n'), stream, lane }
    } finally {
      client.close()
    }
  }
  const want3 = await run(debuggable.port, 3)
  const want2 = await run(debuggable.port, 2)
  // Every RESP3 type is there: null, double, set, map, big number, verbatim string, boolean, attribute.
  for (const type of ['_\r\n', ',1.5\r\n', '~3\r\n', '%2\r\n', '(1234567890', '=14\r\ntxt:two\r\nlines', '#t\r\n', '#f\r\n', '|1\r\n']) {
    assert.ok(want3.stream.includes(type), `Redis's RESP3 stream has ${JSON.stringify(type)}`)
  }
  assert.match(want3.hello, /^%7\r\n/)

  const bystanders = await startCheckedBystanders(p.address.port)
  after(async () => { await bystanders.stop() })
  await bystanders.moreRounds(1)
  const bystanderLane = p.sessions().find((s) => s.id === bystanders.ids[0])?.upstreamId
  assert.ok(typeof bystanderLane === 'number')
  for (let i = 0; i < 5; i++) {
    const got3 = await run(p.address.port, 3)
    assert.equal(got3.hello, want3.hello)
    assert.equal(got3.stream, want3.stream)
    assert.equal(got3.lane, bystanderLane, 'the RESP3 client shared the bystanders\' lane')
    const got2 = await run(p.address.port, 2)
    assert.equal(got2.stream, want2.stream)
  }
  await bystanders.moreRounds(1)
  assert.equal(p.router.laneCount, 1)
  assert.equal(p.router.pinCount, 1)
  assert.deepEqual(await bystanders.stop(), [])
  assert.equal(holder.buffered.length, 0, 'the subscriber got nothing meant for others')
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
