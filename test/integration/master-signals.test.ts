import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { Redis } from 'ioredis'
import { startRedis } from '../helpers/redis-server.js'
import { startFakeRedis } from '../helpers/fake-redis.js'
import { startProxy } from '../helpers/proxy.js'
import { commandOn } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'

const bulk = (s: string): string => `$${Buffer.byteLength(s)}\r\n${s}\r\n`

test('a sentinel naming a replica is not believed: ROLE rejects it and respool asks again until it names the master', { timeout: 20000 }, async () => {
  const master = await startRedis()
  after(async () => { await master.stop() })
  const replica = await startRedis(['--replicaof', '127.0.0.1', String(master.port)])
  after(async () => { await replica.stop() })
  let asks = 0
  // A scripted sentinel: the first three answers name the replica, later ones the master.
  const sentinel = await startFakeRedis((args, socket) => {
    const sub = args[1]?.toUpperCase()
    if (args[0].toUpperCase() !== 'SENTINEL') return // SUBSCRIBE: never a message
    if (sub === 'GET-MASTER-ADDR-BY-NAME') {
      const port = ++asks <= 3 ? replica.port : master.port
      socket.write(`*2\r\n${bulk('127.0.0.1')}${bulk(String(port))}`)
    } else {
      socket.write('*0\r\n')
    }
  })
  after(async () => { await sentinel.close() })
  const proxy = await startProxy({ sentinels: [`127.0.0.1:${sentinel.port}`], sentinelMaster: 'mymaster', poolSize: 3 })
  after(async () => { await proxy.destroy() })
  assert.equal(await commandOn(proxy.address.port, 'SET', 'k', 'v'), '+OK\r\n')
  assert.ok(asks >= 4, `asked ${asks} times`)
  assert.equal(proxy.topology.master?.address.port, master.port)
  assert.equal(proxy.topology.failovers, 0)
  const direct = new Redis({ port: master.port, host: '127.0.0.1' })
  after(() => { direct.disconnect() })
  assert.equal(await direct.get('k'), 'v')
})

test('a fixed upstream that turns into a replica: -READONLY closes every connection, new ones are refused by ROLE until it is a master again', { timeout: 20000 }, async () => {
  const a = await startRedis()
  after(async () => { await a.stop() })
  const b = await startRedis()
  after(async () => { await b.stop() })
  const proxy = await startProxy({ upstream: a.url, poolSize: 4, acquireTimeoutMs: 500, reconnectMaxMs: 50 })
  after(async () => { await proxy.destroy() })
  const direct = new Redis({ port: a.port, host: '127.0.0.1' })
  after(() => { direct.disconnect() })
  const clients = async (): Promise<number> => ((await direct.client('LIST')) as string).split('\n').filter((l) => / name=respool /.test(l)).length
  assert.equal(await commandOn(proxy.address.port, 'SET', 'k', '1'), '+OK\r\n')
  assert.ok(await clients() >= 1)

  await direct.call('REPLICAOF', '127.0.0.1', String(b.port))
  // Redis refused it (-READONLY), so respool closes its connections to that node and sends the
  // command again on a new connection, which ROLE refuses: the node is a replica now.
  assert.match(await commandOn(proxy.address.port, 'SET', 'k', '2'), /^-ERR respool: upstream .* is a replica/)
  await waitFor(() => proxy.topology.failovers === 1, 'respool saw the node is no longer the master')
  await waitFor(async () => await clients() === 0, 'every respool connection to the old master is closed')
  // A new connection asks ROLE first: a replica is refused, with the reason.
  assert.match(await commandOn(proxy.address.port, 'SET', 'k', '3'), /^-ERR respool: upstream .* is a replica \(ROLE: slave of 127\.0\.0\.1:\d+\)/)
  assert.equal(proxy.topology.failovers, 1, 'one event, not one per refused connection')

  await direct.call('REPLICAOF', 'NO', 'ONE')
  await waitFor(async () => await commandOn(proxy.address.port, 'SET', 'k', '4') === '+OK\r\n', 'writes succeed once the node is a master again')
  assert.equal(await direct.get('k'), '4')
})

test('a write a demoted master refused (-READONLY) is sent again to the master the sentinels name next; the client sees +OK', { timeout: 20000 }, async () => {
  const a = await startRedis()
  after(async () => { await a.stop() })
  const b = await startRedis()
  after(async () => { await b.stop() })
  let named = a.port
  // A scripted sentinel that names a, then b, and never publishes +switch-master: respool only
  // learns of the move from a's -READONLY.
  const sentinel = await startFakeRedis((args, socket) => {
    if (args[0].toUpperCase() !== 'SENTINEL') return
    if (args[1]?.toUpperCase() === 'GET-MASTER-ADDR-BY-NAME') socket.write(`*2\r\n${bulk('127.0.0.1')}${bulk(String(named))}`)
    else socket.write('*0\r\n')
  })
  after(async () => { await sentinel.close() })
  const proxy = await startProxy({ sentinels: [`127.0.0.1:${sentinel.port}`], sentinelMaster: 'mymaster', poolSize: 3 })
  after(async () => { await proxy.destroy() })
  assert.equal(await commandOn(proxy.address.port, 'SET', 'k', '1'), '+OK\r\n')
  const directA = new Redis({ port: a.port, host: '127.0.0.1' })
  after(() => { directA.disconnect() })
  const directB = new Redis({ port: b.port, host: '127.0.0.1' })
  after(() => { directB.disconnect() })
  named = b.port
  await directA.call('REPLICAOF', '127.0.0.1', String(b.port))
  assert.equal(await commandOn(proxy.address.port, 'SET', 'k', '2'), '+OK\r\n')
  assert.equal(await directB.get('k'), '2')
  assert.equal(proxy.topology.master?.address.port, b.port)
  assert.equal(proxy.topology.failovers, 1)
  assert.match(await commandOn(proxy.address.port, 'RESPOOL', 'STATS'), /commands_retried_total:1\r\n/)
})
