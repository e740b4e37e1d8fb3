import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { commandOn } from '../helpers/resp-frames.js'
import { runScript, step, showFrames } from '../helpers/script.js'
import { runScript as runProgram } from '../helpers/run-program.js'
import { waitFor } from '../helpers/wait.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * Redis ACL users through respool (which authenticates nobody itself): AUTH is checked by Redis,
 * and the client's commands then run as that user, with Redis's own answers, on connections of
 * that user's that all count against --pool-size.
 */

const POOL = 4
const SECRET = 'bobs-s3cret-pw'
let direct: RedisServer
let upstream: RedisServer
let proxy: ProxyServer

async function addUsers (port: number): Promise<void> {
  // bob may touch keys x* and every channel; carol only GET/SET on c* and ACL WHOAMI.
  assert.equal(await commandOn(port, 'ACL', 'SETUSER', 'bob', 'on', `>${SECRET}`, '+@all', '~x*', '&*'), '+OK\r\n')
  assert.equal(await commandOn(port, 'ACL', 'SETUSER', 'carol', 'on', '>carol-pw', '+get', '+set', '+acl|whoami', '+ping', '~c*'), '+OK\r\n')
}

before(async () => {
  direct = await startRedis()
  upstream = await startRedis()
  await addUsers(direct.port)
  await addUsers(upstream.port)
  proxy = await startProxy({ upstream: upstream.url, poolSize: POOL })
})

after(async () => {
  await proxy?.destroy()
  await upstream?.stop()
  await direct?.stop()
})

test('AUTH as an ACL user, its permissions, ACL WHOAMI, a wrong password, RESET back to default: the same bytes as Redis', { timeout: 30000 }, async () => {
  const steps = [
    step(1, ['ACL', 'WHOAMI']),
    step(1, ['AUTH', 'bob', 'wrong']),
    step(1, ['AUTH', 'nobody', 'x']),
    step(1, ['AUTH', 'only-a-password']),
    step(1, ['AUTH', 'bob', SECRET]),
    step(5, ['ACL', 'WHOAMI'], ['SET', 'x1', 'v'], ['GET', 'x1'], ['SET', 'y1', 'v'], ['GET', 'y1']),
    step(1, ['HELLO', '3', 'AUTH', 'carol', 'carol-pw', 'SETNAME', 'c']),
    step(4, ['ACL', 'WHOAMI'], ['SET', 'c1', 'v'], ['SET', 'x2', 'v'], ['DEL', 'c1']),
    // carol may not kill or unblock clients: Redis's own refusal, not respool's say-so.
    step(2, ['CLIENT', 'KILL', 'ID', '1'], ['CLIENT', 'UNBLOCK', '1']),
    step(1, ['RESET']),
    step(2, ['ACL', 'WHOAMI'], ['SET', 'y2', 'v'])
  ]
  const mask = (frames: string[]): string[] => frames.map((f) => f.replace(/(\$2\r\nid\r\n:)\d+/, '$1<id>').replace(/(\$7\r\nversion\r\n\$\d+\r\n)[^\r]+/, '$1<v>'))
  const want = mask(await runScript(direct.port, steps))
  const got = mask(await runScript(proxy.address.port, steps))
  assert.deepEqual(got, want, `direct ${showFrames(want)}, through respool ${showFrames(got)}`)
  await waitFor(() => proxy.identities.users.length === 0, 'no ACL user kept once its clients left')
})

test('50 ioredis clients as bob share that user\'s connections: every one is bob, Redis sees at most --pool-size connections, and the password shows nowhere', { timeout: 45000 }, async () => {
  const clients = Array.from({ length: 50 }, () => new Redis({ port: proxy.address.port, username: 'bob', password: SECRET, maxRetriesPerRequest: 0, lazyConnect: true }))
  after(() => { for (const c of clients) c.disconnect() })
  await Promise.all(clients.map(async (c) => { await c.connect() }))
  let maxConnections = 0
  let sampling = true
  const sampler = (async () => {
    while (sampling) {
      const info = await commandOn(upstream.port, 'INFO', 'clients')
      maxConnections = Math.max(maxConnections, Number(/connected_clients:(\d+)/.exec(info)?.[1]) - 1) // less the sampler's own
      await new Promise((resolve) => setTimeout(resolve, 10))
    }
  })()
  await Promise.all(clients.map(async (c, i) => {
    for (let k = 0; k < 20; k++) assert.equal(await c.set(`x:${i}:${k}`, String(k)), 'OK')
    assert.equal(await c.call('ACL', 'WHOAMI'), 'bob')
    await assert.rejects(c.set(`y:${i}`, '1'), /NOPERM/)
  }))
  sampling = false
  await sampler
  assert.ok(maxConnections <= POOL, `Redis saw ${maxConnections} connections from respool`)
  assert.equal(await commandOn(upstream.port, 'GET', 'x:49:19'), '$2\r\n19\r\n')
  assert.deepEqual(proxy.identities.users, ['bob'])
  const shown = [
    await commandOn(proxy.address.port, 'RESPOOL', 'POOLS'),
    await commandOn(proxy.address.port, 'RESPOOL', 'STATS'),
    await commandOn(proxy.address.port, 'RESPOOL', 'CLIENTS'),
    await commandOn(proxy.address.port, 'CLIENT', 'LIST'),
    await proxy.metrics.registry.metrics()
  ].join('\n')
  assert.ok(!shown.includes(SECRET), 'the password appears in respool\'s output')
  assert.match(shown, /acl_users:1\r\n/)
  // Idle, still connected: bob's connections go back to the pool all the same (after the lanes'
  // idle time), and his next command opens one again.
  await waitFor(() => proxy.identities.connections === 0, 'bob\'s idle connections back in the pool', 15000)
  assert.equal(await clients[0].call('ACL', 'WHOAMI'), 'bob')
  for (const c of clients) c.disconnect()
  await waitFor(() => proxy.identities.users.length === 0 && proxy.identities.connections === 0, 'bob\'s connections back in the pool, his password forgotten')
})

test('a full pool of idle shared lanes does not hold up an AUTH check or another user\'s connections: the same bytes as Redis, within the acquire deadline', { timeout: 30000 }, async () => {
  // A pool of its own, at the default --acquire-timeout (2 s): idle lanes otherwise go back to
  // the pool only after 5 s idle, so a wait for them would end as "pool exhausted".
  const own = await startProxy({ upstream: upstream.url, poolSize: POOL })
  after(async () => { await own.destroy() })
  // Four clients, each in a database of its own: a command that finds no lane in its database
  // opens another, until every pooled connection is a shared lane (idle between commands).
  const fillers = await Promise.all(Array.from({ length: POOL }, async () => await RawClient.connect(own.address.port)))
  after(() => { for (const c of fillers) c.close() })
  const readers = new Map(fillers.map((c) => [c, new FrameReader(c)]))
  const ask = async (c: RawClient, ...args: string[]): Promise<string> => {
    c.write(cmd(...args))
    return await (readers.get(c) as FrameReader).next()
  }
  for (const [db, c] of fillers.entries()) assert.equal(await ask(c, 'SELECT', String(db)), '+OK\r\n')
  await waitFor(async () => {
    for (const c of fillers) assert.equal(await ask(c, 'PING'), '+PONG\r\n')
    return own.snapshot().lanes === POOL
  }, 'every pooled connection a shared lane')
  assert.equal(own.snapshot().pool.available, 0)
  const steps = [
    step(1, ['AUTH', 'bob', SECRET]),
    step(2, ['ACL', 'WHOAMI'], ['SET', 'x:lanes', 'v']),
    step(1, ['HELLO', '2', 'AUTH', 'carol', 'carol-pw']),
    step(2, ['ACL', 'WHOAMI'], ['SET', 'c:lanes', 'v']),
    step(1, ['AUTH', 'wrong-user', 'x']),
    step(1, ['RESET']),
    step(1, ['ACL', 'WHOAMI'])
  ]
  const mask = (frames: string[]): string[] => frames.map((f) => f.replace(/(\$2\r\nid\r\n:)\d+/, '$1<id>').replace(/(\$7\r\nversion\r\n\$\d+\r\n)[^\r]+/, '$1<v>'))
  const want = mask(await runScript(direct.port, steps))
  const got = mask(await runScript(own.address.port, steps))
  assert.deepEqual(got, want, `direct ${showFrames(want)}, through respool ${showFrames(got)}`)
  // The lanes' clients are still served.
  for (const c of fillers) assert.equal(await ask(c, 'PING'), '+PONG\r\n')
})

test('redis-py and redis-rb log in as an ACL user through respool', { timeout: 30000 }, async () => {
  const py = await runProgram('/usr/bin/python3', ['-', String(proxy.address.port)], `
import sys, redis
r = redis.Redis(host='127.0.0.1', port=int(sys.argv[1]), username='bob', password='${SECRET}', decode_responses=True)
print(r.acl_whoami())
print(r.set('x:py', 'v'))
try:
    r.set('y:py', 'v')
except redis.exceptions.NoPermissionError as e:
    print('NOPERM')
try:
    redis.Redis(host='127.0.0.1', port=int(sys.argv[1]), username='bob', password='wrong').ping()
except redis.exceptions.ResponseError as e:
    print(str(e).split(' ')[0])
`)
  assert.deepEqual(py, ['bob', 'True', 'NOPERM', 'WRONGPASS'])
  const rb = await runProgram('ruby', ['-', String(proxy.address.port)], `
require 'redis'
r = Redis.new(host: '127.0.0.1', port: Integer(ARGV[0]), username: 'bob', password: '${SECRET}')
puts r.call('ACL', 'WHOAMI')
puts r.set('x:rb', 'v')
begin
  r.set('y:rb', 'v')
rescue Redis::CommandError => e
  puts e.message.split(' ').first
end
`)
  assert.deepEqual(rb, ['bob', 'OK', 'NOPERM'])
  assert.equal(await commandOn(upstream.port, 'EXISTS', 'x:py', 'x:rb', 'y:py', 'y:rb'), ':2\r\n')
})
