import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { startCheckedBystanders } from '../helpers/checked-bystanders.js'
import { FrameReader } from '../helpers/resp-frames.js'
import type { ProxyServer } from '../../src/proxy-server.js'

let redis: RedisServer
let proxy: ProxyServer

before(async () => {
  redis = await startRedis()
  // One shared lane at most: every client's state must be switched on the same connection.
  proxy = await startProxy({ upstream: redis.url, poolSize: 2, maxPins: 1 })
})
after(async () => {
  await proxy?.destroy()
  await redis?.stop()
})

test('clients in different databases interleave on shared lanes without seeing each other\'s keys', { timeout: 30000 }, async () => {
  const a = new Redis({ port: proxy.address.port, db: 3, maxRetriesPerRequest: 0 })
  const b = new Redis({ port: proxy.address.port, db: 0, maxRetriesPerRequest: 0 })
  const c = new Redis({ port: proxy.address.port, db: 5, maxRetriesPerRequest: 0, protocol: 2 })
  after(() => { a.disconnect(); b.disconnect(); c.disconnect() })
  await Promise.all([a, b, c].map(async (client, i) => {
    for (let round = 0; round < 100; round++) {
      const p = client.pipeline()
      p.set('shared-name', `client-${i}-${round}`)
      p.get('shared-name')
      const [[, ok], [, value]] = await p.exec() as Array<[Error | null, unknown]>
      assert.equal(ok, 'OK')
      assert.equal(value, `client-${i}-${round}`)
    }
  }))
  const direct = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  after(() => { direct.disconnect() })
  for (const [db, i] of [[3, 0], [0, 1], [5, 2]]) {
    await direct.select(db)
    assert.equal(await direct.get('shared-name'), `client-${i}-99`)
  }
})

test('SELECT answers as Redis does, including errors, and a failed SELECT keeps the old db', { timeout: 10000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('SELECT', '2'), cmd('SET', 'sel', 'two'), cmd('SELECT', '99'), cmd('GET', 'sel'), cmd('SELECT', 'x'), cmd('SELECT', '0'), cmd('GET', 'sel')]))
  const expected = '+OK\r\n+OK\r\n-ERR DB index is out of range\r\n$3\r\ntwo\r\n-ERR value is not an integer or out of range\r\n+OK\r\n$-1\r\n'
  assert.equal(await c.readExactly(expected), expected)
})

test('SELECT inside MULTI takes effect when EXEC runs', { timeout: 10000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('MULTI'), cmd('SELECT', '7'), cmd('SET', 'txdb', 'seven'), cmd('EXEC'), cmd('GET', 'txdb'), cmd('SELECT', '0'), cmd('GET', 'txdb')]))
  const expected = '+OK\r\n+QUEUED\r\n+QUEUED\r\n*2\r\n+OK\r\n+OK\r\n$5\r\nseven\r\n+OK\r\n$-1\r\n'
  assert.equal(await c.readExactly(expected), expected)
})

test('RESP3 clients get RESP3 replies and RESP2 clients RESP2 replies over the same lane', { timeout: 10000 }, async () => {
  const seed = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { seed.disconnect() })
  await seed.hset('h', 'f', 'v')
  const v3 = await RawClient.connect(proxy.address.port)
  const v2 = await RawClient.connect(proxy.address.port)
  after(() => { v3.close(); v2.close() })
  const v3frames = new FrameReader(v3)
  v3.write(cmd('HELLO', '3'))
  const hello = await v3frames.next()
  assert.match(hello, /^%7\r\n\$6\r\nserver\r\n\$5\r\nredis\r\n\$7\r\nversion\r\n\$\d+\r\n[\d.]+\r\n\$5\r\nproto\r\n:3\r\n\$2\r\nid\r\n:\d+\r\n\$4\r\nmode\r\n\$10\r\nstandalone\r\n\$4\r\nrole\r\n\$6\r\nmaster\r\n\$7\r\nmodules\r\n\*0\r\n$/)
  for (let i = 0; i < 20; i++) {
    v3.write(Buffer.concat([cmd('HGETALL', 'h'), cmd('GET', 'nope')]))
    v2.write(Buffer.concat([cmd('HGETALL', 'h'), cmd('GET', 'nope')]))
    assert.equal(await v3.readExactly('%1\r\n$1\r\nf\r\n$1\r\nv\r\n_\r\n'), '%1\r\n$1\r\nf\r\n$1\r\nv\r\n_\r\n')
    assert.equal(await v2.readExactly('*2\r\n$1\r\nf\r\n$1\r\nv\r\n$-1\r\n'), '*2\r\n$1\r\nf\r\n$1\r\nv\r\n$-1\r\n')
  }
  v3.write(Buffer.concat([cmd('HELLO', '2'), cmd('HGETALL', 'h')]))
  const [hello2, hash] = await v3frames.take(2)
  assert.match(hello2, /^\*14\r\n\$6\r\nserver\r\n[\s\S]*\$5\r\nproto\r\n:2\r\n/)
  assert.equal(hash, '*2\r\n$1\r\nf\r\n$1\r\nv\r\n')
  assert.deepEqual(await v3frames.framesBeforeSentinel(), [])
})

test('HELLO errors match Redis', { timeout: 10000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('HELLO', '4'), cmd('HELLO', 'x'), cmd('HELLO', '3', 'BOGUS')]))
  const expected = '-NOPROTO unsupported protocol version\r\n-ERR Protocol version is not an integer or out of range\r\n-ERR Syntax error in HELLO option \'BOGUS\'\r\n'
  assert.equal(await c.readExactly(expected), expected)
})

test('CLIENT SETNAME/GETNAME/ID/INFO/LIST/SETINFO are per client', { timeout: 10000 }, async () => {
  const a = await RawClient.connect(proxy.address.port)
  const b = await RawClient.connect(proxy.address.port)
  after(() => { a.close(); b.close() })
  a.write(Buffer.concat([cmd('CLIENT', 'SETNAME', 'alpha'), cmd('CLIENT', 'SETINFO', 'LIB-NAME', 'mylib'), cmd('CLIENT', 'GETNAME')]))
  assert.equal(await a.readExactly('+OK\r\n+OK\r\n$5\r\nalpha\r\n'), '+OK\r\n+OK\r\n$5\r\nalpha\r\n')
  b.write(Buffer.concat([cmd('CLIENT', 'GETNAME'), cmd('CLIENT', 'SETNAME', 'bad name')]))
  const expected = '$-1\r\n-ERR Client names cannot contain spaces, newlines or special characters.\r\n'
  assert.equal(await b.readExactly(expected), expected)
  a.write(cmd('CLIENT', 'ID'))
  const idA = Number(/^:(\d+)\r\n$/.exec(await readReply(a))?.[1])
  b.write(cmd('CLIENT', 'ID'))
  const idB = Number(/^:(\d+)\r\n$/.exec(await readReply(b))?.[1])
  assert.ok(idA > 0 && idB > 0 && idA !== idB)
  a.write(cmd('CLIENT', 'INFO'))
  const info = await readReply(a)
  assert.match(info, new RegExp(`^\\$\\d+\r\nid=${idA} .*name=alpha .*db=0 .*lib-name=mylib`))
  a.write(cmd('CLIENT', 'LIST'))
  const list = await readReply(a)
  assert.match(list, new RegExp(`id=${idA} `))
  assert.match(list, new RegExp(`id=${idB} `))
  assert.doesNotMatch(list, /name=respool/) // upstream connections are never shown
})

/** Reads one reply, whole, and checks that nothing else follows it. */
async function readReply (c: RawClient): Promise<string> {
  const frames = new FrameReader(c)
  const reply = await frames.next()
  assert.deepEqual(await frames.framesBeforeSentinel(), [])
  return reply
}

test('CLIENT REPLY OFF and SKIP suppress replies for this client only', { timeout: 10000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([
    cmd('CLIENT', 'REPLY', 'SKIP'), cmd('SET', 'r', '1'), cmd('GET', 'r'),
    cmd('CLIENT', 'REPLY', 'OFF'), cmd('SET', 'r', '2'), cmd('GET', 'r'), cmd('INCR', 'r'),
    cmd('CLIENT', 'REPLY', 'ON'), cmd('GET', 'r')
  ]))
  const expected = '$1\r\n1\r\n+OK\r\n$1\r\n3\r\n'
  // The sentinel's reply must come right after: nothing suppressed leaks out late.
  assert.equal(await c.readExactly(expected), expected)
})

test('RESET restores the client\'s defaults; QUIT answers +OK and closes', { timeout: 10000 }, async () => {
  const c = await RawClient.connect(proxy.address.port)
  const frames = new FrameReader(c)
  c.write(Buffer.concat([cmd('SELECT', '4'), cmd('CLIENT', 'SETNAME', 'x'), cmd('HELLO', '3')]))
  const [selected, named, hello] = await frames.take(3)
  assert.equal(selected + named, '+OK\r\n+OK\r\n')
  assert.match(hello, /^%7\r\n/)
  c.write(Buffer.concat([cmd('RESET'), cmd('CLIENT', 'GETNAME'), cmd('SET', 'reset-db', 'zero')]))
  assert.equal(await c.readExactly('+RESET\r\n$-1\r\n+OK\r\n'), '+RESET\r\n$-1\r\n+OK\r\n')
  c.write(Buffer.concat([cmd('QUIT'), cmd('SET', 'after-quit', '1')]))
  assert.equal(await c.readUntilClose(), '+OK\r\n')
  const direct = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  after(() => { direct.disconnect() })
  assert.equal(await direct.get('reset-db'), 'zero')
  assert.equal(await direct.exists('after-quit'), 0)
})

test('AUTH is checked against the upstream credentials', { timeout: 15000 }, async () => {
  const secured = await startRedis(['--requirepass', 's3cret'])
  after(async () => { await secured.stop() })
  const p = await startProxy({ upstream: `redis://:s3cret@127.0.0.1:${secured.port}/0`, poolSize: 2 })
  after(async () => { await p.destroy() })
  const c = await RawClient.connect(p.address.port)
  after(() => { c.close() })
  c.write(Buffer.concat([cmd('AUTH', 'wrong'), cmd('AUTH', 's3cret'), cmd('AUTH', 'default', 's3cret'), cmd('PING')]))
  const expected = '-WRONGPASS invalid username-password pair or user is disabled.\r\n+OK\r\n+OK\r\n+PONG\r\n'
  assert.equal(await c.readExactly(expected), expected)
  // Against a Redis without a password, Redis's own answer (respool asks Redis: a proxy of its
  // own, so other tests' pins do not hold up the connection the check needs).
  const open = await startProxy({ upstream: redis.url, poolSize: 2 })
  after(async () => { await open.destroy() })
  const noPassword = await RawClient.connect(open.address.port)
  after(() => { noPassword.close() })
  noPassword.write(cmd('AUTH', 'anything'))
  const redisSays = '-ERR AUTH <password> called without any password configured for the default user. Are you sure your configuration is correct?\r\n'
  assert.equal(await noPassword.readExactly(redisSays), redisSays)
})

test('refused commands get a clear error and cost only their sender', { timeout: 30000 }, async () => {
  const bystanders = await startCheckedBystanders(proxy.address.port)
  after(async () => { await bystanders.stop() })
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  const refused = Buffer.concat([cmd('SHUTDOWN'), cmd('PSYNC', '?', '-1'), cmd('CLIENT', 'NO-EVICT', 'on'), cmd('CLIENT', 'NO-TOUCH', 'on'), cmd('PING')])
  const expected = "-ERR respool: 'SHUTDOWN' is refused by policy (--deny-commands)\r\n" +
    "-ERR respool: 'PSYNC' is refused by policy (--deny-commands)\r\n" +
    '-ERR respool: CLIENT NO-EVICT would act on shared upstream connections and is not supported through respool\r\n' +
    '-ERR respool: CLIENT NO-TOUCH would act on shared upstream connections and is not supported through respool\r\n' +
    '+PONG\r\n'
  // Again and again while the bystanders pipeline: each time exactly these replies, and the
  // bystanders keep getting exactly theirs.
  for (let i = 0; i < 20; i++) {
    c.write(refused)
    assert.equal(await c.readExactly(expected), expected)
    await bystanders.moreRounds(1)
  }
  assert.deepEqual(await bystanders.stop(), [])
  // Redis never saw any of them.
  const direct = new Redis({ port: redis.port, maxRetriesPerRequest: 0 })
  after(() => { direct.disconnect() })
  assert.doesNotMatch(await direct.info('commandstats'), /cmdstat_(shutdown|psync|client\|no-evict|client\|no-touch):/)
})

test('HELLO as the very first command on a fresh proxy reports the upstream\'s real version', { timeout: 10000 }, async () => {
  const fresh = await startProxy({ upstream: redis.url })
  after(async () => { await fresh.destroy() })
  const direct = await RawClient.connect(redis.port)
  const c = await RawClient.connect(fresh.address.port)
  after(() => { c.close(); direct.close() })
  direct.write(cmd('HELLO', '3'))
  c.write(cmd('HELLO', '3'))
  const [viaRedis, viaRespool] = await Promise.all([new FrameReader(direct).next(), new FrameReader(c).next()])
  const version = (text: string): string | undefined => /\$7\r\nversion\r\n\$\d+\r\n([^\r]+)\r\n/.exec(text)?.[1]
  assert.ok(version(viaRedis) !== undefined)
  assert.equal(version(viaRespool), version(viaRedis))
  // Apart from the client id, the whole reply is Redis's.
  const withoutId = (text: string): string => text.replace(/\$2\r\nid\r\n:\d+\r\n/, '')
  assert.equal(withoutId(viaRespool), withoutId(viaRedis))
})
