import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'

test('a reload applies the framing limits and the idle timeout to clients already connected', { timeout: 20000 }, async (t) => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const options = { upstream: redis.url, poolSize: 2 }
  const proxy = await startProxy(options)
  after(async () => { await proxy.destroy() })

  const early = await RawClient.connect(proxy.address.port)
  after(() => { early.close() })
  const idle = await RawClient.connect(proxy.address.port)
  after(() => { idle.close() })
  const kept = await RawClient.connect(proxy.address.port)
  after(() => { kept.close() })
  const earlyFrames = new FrameReader(early)
  early.write(cmd('SET', 'reload:k', 'x'.repeat(200)))
  assert.equal(await earlyFrames.next(), '+OK\r\n', 'accepted under the old limit')

  const result = proxy.reload({ ...options, maxBulkLength: 100, clientIdleTimeoutMs: 300 })
  assert.deepEqual(result.applied.sort(), ['clientIdleTimeoutMs', 'maxBulkLength'])
  early.write(cmd('SET', 'reload:k', 'y'.repeat(200)))
  assert.equal(await early.readUntilClose(), '-ERR Protocol error: invalid bulk length\r\n', 'a client connected before the reload gets the new limit')

  // `idle` says nothing: the new idle timeout closes it. `kept` keeps talking meanwhile.
  const keptFrames = new FrameReader(kept)
  const started = Date.now()
  const closed = idle.readUntilClose(5000)
  let idleClosed = false
  void closed.then(() => { idleClosed = true })
  while (!idleClosed) {
    kept.write(cmd('PING'))
    assert.equal(await keptFrames.next(), '+PONG\r\n')
    await new Promise((resolve) => setTimeout(resolve, 50))
  }
  await closed
  t.diagnostic(`idle client closed ${Date.now() - started} ms after the reload set a 300 ms idle timeout`)

  // Turning the timeout off again reaches `kept` too: it stays open well past 300 ms.
  proxy.reload({ ...options, maxBulkLength: 100, clientIdleTimeoutMs: 0 })
  await new Promise((resolve) => setTimeout(resolve, 1000))
  assert.equal(kept.closed, false, 'idle timeout 0 means never')
  kept.write(cmd('PING'))
  assert.equal(await keptFrames.next(), '+PONG\r\n')
})
