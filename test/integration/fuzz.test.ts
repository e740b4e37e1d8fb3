import { test, after } from 'node:test'
import assert from 'node:assert/strict'
import net from 'node:net'
import { Redis } from 'ioredis'
import { startRedis } from '../helpers/redis-server.js'
import { startProxy, upstreamConnectionCount } from '../helpers/proxy.js'
import { cmd } from '../helpers/raw-client.js'

/** A small seeded PRNG (mulberry32), so every run sends the same inputs. */
function prng (seed: number): () => number {
  let a = seed >>> 0
  return () => {
    a = (a + 0x6d2b79f5) >>> 0
    let t = a
    t = Math.imul(t ^ (t >>> 15), t | 1)
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61)
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296
  }
}

const VALID: Buffer[] = [
  cmd('SET', 'fz', 'v'), cmd('GET', 'fz'), cmd('PING'), cmd('MULTI'), cmd('EXEC'), cmd('SUBSCRIBE', 'c'),
  cmd('UNSUBSCRIBE'), cmd('HELLO', '3'), cmd('SELECT', '1'), cmd('BLPOP', 'fzq', '0.01'), cmd('CLIENT', 'REPLY', 'OFF'),
  cmd('WATCH', 'fz'), cmd('ECHO', 'x\r\ny'), Buffer.from('PING\r\n'), Buffer.from('SET "a b" c\r\n')
]

function mutate (input: Buffer, rnd: () => number): Buffer {
  const bytes = [...input]
  const edits = 1 + Math.floor(rnd() * 4)
  for (let i = 0; i < edits; i++) {
    const at = Math.floor(rnd() * (bytes.length + 1))
    const op = rnd()
    if (op < 0.4 && bytes.length > 0) bytes[Math.min(at, bytes.length - 1)] = Math.floor(rnd() * 256)
    else if (op < 0.7) bytes.splice(at, 0, Math.floor(rnd() * 256))
    else if (op < 0.85) bytes.splice(at, 1)
    else bytes.splice(at, 0, ...Buffer.from(['*2147483647\r\n', '$-2\r\n', '$99999999999\r\n', '*-5\r\n', '?\r\n', '$3\r\nab'][Math.floor(rnd() * 6)]))
  }
  return Buffer.from(bytes)
}

/** Sends one input on a fresh connection; resolves when the proxy answered or closed, or after 150 ms. */
async function send (port: number, input: Buffer): Promise<void> {
  await new Promise<void>((resolve) => {
    const socket = net.connect({ port, host: '127.0.0.1' })
    const done = (): void => { clearTimeout(timer); socket.destroy(); resolve() }
    const timer = setTimeout(done, 150)
    socket.on('error', done)
    socket.on('close', done)
    socket.on('connect', () => { socket.write(input) })
  })
}

test('random and mutated input never crashes respool, never disturbs other clients, never breaks the bound', { timeout: 120000 }, async () => {
  const redis = await startRedis()
  after(async () => { await redis.stop() })
  const proxy = await startProxy({ upstream: redis.url, poolSize: 4, maxInlineLength: 4096 })
  after(async () => { await proxy.destroy() })
  const control = new Redis({ port: proxy.address.port, maxRetriesPerRequest: 0 })
  after(() => { control.disconnect() })
  const rnd = prng(0x5eed)
  let controlRounds = 0
  let fuzzing = true
  const controlLoop = (async () => {
    while (fuzzing) {
      const token = `ctl-${controlRounds++}`
      const p = control.pipeline().set('ctl', token).get('ctl').echo(token)
      assert.deepEqual((await p.exec())?.map(([, v]) => v), ['OK', token, token])
    }
  })()
  const INPUTS = 400
  const deadline = Date.now() + 40_000
  for (let i = 0; i < INPUTS && Date.now() < deadline; i += 8) {
    const batch: Array<Promise<void>> = []
    for (let j = 0; j < 8; j++) {
      const kind = rnd()
      let input: Buffer
      if (kind < 0.25) {
        input = Buffer.from(Array.from({ length: 1 + Math.floor(rnd() * 200) }, () => Math.floor(rnd() * 256)))
      } else {
        const parts = Array.from({ length: 1 + Math.floor(rnd() * 5) }, () => VALID[Math.floor(rnd() * VALID.length)])
        input = mutate(Buffer.concat(parts), rnd)
      }
      batch.push(send(proxy.address.port, input))
    }
    await Promise.all(batch)
  }
  fuzzing = false
  await controlLoop
  assert.ok(controlRounds > 10)
  assert.ok(await upstreamConnectionCount(redis.port) <= 4)
  // Still healthy afterwards.
  assert.equal(await control.echo('after'), 'after')
})
