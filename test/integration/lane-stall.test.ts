import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import { startRedis } from '../helpers/redis-server.js'
import { startProxy, holdPin } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader } from '../helpers/resp-frames.js'
import { waitFor } from '../helpers/wait.js'

/**
 * A command that finds the only lane stalled (a slow command in flight, nothing answered for a
 * few ms) waits for another lane rather than queue behind it. When the pool has no room for
 * another lane (pins hold the rest, and pins are served first), it must still go out as soon as
 * the stalled lane answers again, not when its acquire deadline runs out.
 */
test('a command waiting for a lane goes out on the stalled lane once it answers again, though the pool has no room for another', { timeout: 40000 }, async (t) => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 3, acquireTimeoutMs: 15000 })
  after(async () => { await proxy.destroy() })
  const slow = await RawClient.connect(proxy.address.port)
  const waiting = await RawClient.connect(proxy.address.port)
  const admin = await RawClient.connect(proxy.address.port)
  const pinner = await RawClient.connect(proxy.address.port)
  after(() => { for (const c of [slow, waiting, admin, pinner]) c.close() })
  const [sf, wf, af] = [slow, waiting, admin].map((c) => new FrameReader(c))
  slow.write(cmd('SET', 'stall:k', 'v'))
  assert.equal(await sf.next(5000), '+OK\r\n') // the lane is open
  const release = await holdPin(proxy) // one pin: room for one more connection
  after(release)
  // A script that keeps the lane silent for 1.5 s (time enough, on a loaded machine, for the steps below).
  const spin = "local t = redis.call('TIME'); local start = t[1] * 1000000 + t[2]; while true do local n = redis.call('TIME'); if n[1] * 1000000 + n[2] - start > 1500000 then break end end; return 1"
  slow.write(cmd('EVAL', spin, '0'))
  await new Promise((resolve) => setTimeout(resolve, 50)) // the lane has answered nothing for 50 ms
  // The GET finds the lane stalled and asks for another, whose handshake waits for the script.
  const sentAt = Date.now()
  waiting.write(cmd('GET', 'stall:k'))
  await waitFor(async () => {
    admin.write(cmd('RESPOOL', 'CLIENTS'))
    return /name= .* waiting=lane\n/.test(await af.next(5000))
  }, 'a client waiting for a lane', 5000)
  // Meanwhile a pin is asked for (WATCH): served before lane growth, it takes the pool's last
  // connection when the script ends. The new lane cannot come.
  pinner.write(cmd('WATCH', 'stall:w'))
  assert.equal(await sf.next(5000), ':1\r\n')
  assert.equal(await wf.next(14000), '$1\r\nv\r\n')
  const took = Date.now() - sentAt
  t.diagnostic(`the GET that waited for a lane was answered ${took} ms after it was sent (the script ran 1,500 ms)`)
  assert.ok(took < 4000, `answered after ${took} ms: not when the stalled lane answered again, but when the wait for a new lane gave up (--acquire-timeout 15 s)`)
})
