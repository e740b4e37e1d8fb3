import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { once } from 'node:events'
import { startRedis } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'

test('clients refused at the door (max clients) that reset at once never take respool down', { timeout: 20000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 2, maxClients: 1 })
  after(async () => { await proxy.destroy() })
  const kept = await RawClient.connect(proxy.address.port)
  after(() => { kept.close() })
  // Probes that connect and reset straight away, as port scanners and TCP health checks do.
  for (let i = 0; i < 30; i++) {
    const probe = net.connect({ port: proxy.address.port, host: '127.0.0.1' })
    probe.on('error', () => {})
    await once(probe, 'connect')
    probe.resetAndDestroy()
  }
  kept.write(cmd('PING'))
  assert.equal(await new FrameReader(kept).next(), '+PONG\r\n')
})

test('commands pipelined behind AUTH get the limits of an authenticated client, as in Redis', { timeout: 20000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 2, password: 'pw' })
  after(async () => { await proxy.destroy() })
  const c = await RawClient.connect(proxy.address.port)
  after(() => { c.close() })
  const big = 'v'.repeat(20000)
  const mset = ['MSET', ...Array.from({ length: 6 }, (_, i) => [`auth-pipe:${i}`, i === 0 ? big : 'x']).flat()]
  c.write(Buffer.concat([cmd('AUTH', 'pw'), cmd(...mset), cmd('STRLEN', 'auth-pipe:0')]))
  assert.deepEqual(await new FrameReader(c).take(3), ['+OK\r\n', '+OK\r\n', ':20000\r\n'])
})
