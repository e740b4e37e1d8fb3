import { test, before, after } from 'node:test'
import assert from 'node:assert/strict'
import { setTimeout as delay } from 'node:timers/promises'
import { startRedis, type RedisServer } from '../helpers/redis-server.js'
import { startProxy } from '../helpers/proxy.js'
import { RawClient, cmd } from '../helpers/raw-client.js'
import { FrameReader, connectFramed, commandOn } from '../helpers/resp-frames.js'
import { waitForValue } from '../helpers/wait.js'
import type { ProxyServer } from '../../src/proxy-server.js'

/**
 * Subscriber mode through respool on the pinned path (`sharedPubsub: false`: each subscriber
 * holds a connection of its own), RESP2 and RESP3, compared byte for byte with a direct
 * connection to the same Redis wherever the exchange is deterministic. The shared fan-out (the
 * default) is tested in pubsub-shared.test.ts.
 */

let redis: RedisServer
let proxy: ProxyServer

before(async () => {
  redis = await startRedis()
  proxy = await startProxy({ upstream: redis.url, poolSize: 8, sharedPubsub: false })
})
after(async () => {
  await proxy?.destroy()
  await redis?.stop()
})

/**
 * What a scenario saw, one line per frame with who saw it. A frame that never came is recorded
 * (and later reads wait less), so a misbehaving proxy shows up as a readable diff against Redis.
 */
class Transcript {
  readonly lines: string[] = []
  broken = false

  async take (who: string, reader: FrameReader, n: number): Promise<string[]> {
    const got: string[] = []
    for (let i = 0; i < n; i++) {
      try {
        const frame = await reader.next(this.broken ? 300 : 3000)
        got.push(frame)
        this.lines.push(`${who} ${JSON.stringify(frame)}`)
      } catch (err) {
        this.broken = true
        this.lines.push(`${who} «${(err as Error).message}»`)
        return got
      }
    }
    return got
  }

  /** Records whatever arrived unasked (nothing, normally). */
  async leftovers (who: string, reader: FrameReader): Promise<void> {
    for (const frame of await reader.available()) this.lines.push(`${who} unexpected ${JSON.stringify(frame)}`)
    const partial = reader.client.buffered
    if (partial.length > 0) this.lines.push(`${who} unexpected partial ${JSON.stringify(partial.toString('latin1'))}`)
  }

  get text (): string {
    return this.lines.join('\n')
  }
}


/** Redis's view: no channel, pattern or shard channel has a subscriber left. */
async function noSubscribersLeft (timeoutMs = 3000): Promise<void> {
  await waitForValue('channels with subscribers (PUBSUB CHANNELS)', async () => await commandOn(redis.port, 'PUBSUB', 'CHANNELS'), '*0\r\n', timeoutMs)
  await waitForValue('patterns with subscribers (PUBSUB NUMPAT)', async () => await commandOn(redis.port, 'PUBSUB', 'NUMPAT'), ':0\r\n', timeoutMs)
  await waitForValue('shard channels with subscribers (PUBSUB SHARDCHANNELS)', async () => await commandOn(redis.port, 'PUBSUB', 'SHARDCHANNELS'), '*0\r\n', timeoutMs)
}

async function pinsReleased (p: ProxyServer = proxy): Promise<void> {
  await waitForValue('proxy.router.pinCount', () => p.router.pinCount, 0)
}

type Scenario = (port: number, proxied: boolean, t: Transcript, opened: RawClient[]) => Promise<void>

/**
 * Runs the scenario directly against Redis, then through respool, and requires identical
 * transcripts. Every scenario must leave no subscription behind.
 */
async function sameAsDirect (scenario: Scenario): Promise<string> {
  const run = async (port: number, proxied: boolean): Promise<string> => {
    const t = new Transcript()
    const opened: RawClient[] = []
    try {
      await scenario(port, proxied, t, opened)
    } finally {
      for (const c of opened) c.close()
    }
    return t.text
  }
  const want = await run(redis.port, false)
  await noSubscribersLeft()
  const got = await run(proxy.address.port, true)
  assert.equal(got, want)
  await noSubscribersLeft()
  await pinsReleased()
  return got
}

const RESP2_PONG = '*2\r\n$4\r\npong\r\n$0\r\n\r\n'

// ---- 1. RESP2 subscriber mode, start to finish -----------------------------------------------

test('RESP2: SUBSCRIBE, messages, PSUBSCRIBE, PING, refused commands, unsubscribing to zero: same bytes as Redis, pin returned', { timeout: 30000 }, async () => {
  const transcript = await sameAsDirect(async (port, proxied, t, opened) => {
    const sub = await connectFramed(port, opened)
    const pub = await connectFramed(port, opened)
    pub.client.write(cmd('DEL', 'ps1:list', 'ps1:k'))
    await pub.frames.next() // differs between runs (the keys exist the second time)

    sub.client.write(cmd('SUBSCRIBE', 'ps1:a', 'ps1:b'))
    await t.take('sub', sub.frames, 2)
    if (proxied) assert.equal(proxy.router.pinCount, 1, 'a subscriber holds one pin')

    pub.client.write(cmd('PUBLISH', 'ps1:a', 'hello'))
    await t.take('pub', pub.frames, 1)
    await t.take('sub', sub.frames, 1)

    sub.client.write(cmd('PSUBSCRIBE', 'ps1:p*'))
    await t.take('sub', sub.frames, 1)
    pub.client.write(cmd('PUBLISH', 'ps1:px', 'pattern hello'))
    await t.take('pub', pub.frames, 1)
    await t.take('sub', sub.frames, 1)
    pub.client.write(cmd('PUBLISH', 'ps1:b', 'to b'))
    await t.take('pub', pub.frames, 1)
    await t.take('sub', sub.frames, 1)

    sub.client.write(cmd('PING'))
    await t.take('sub', sub.frames, 1)
    sub.client.write(cmd('PING', 'hi there'))
    await t.take('sub', sub.frames, 1)

    // Redis refuses these itself in RESP2 subscriber mode; its wording must reach the client.
    for (const args of [['GET', 'ps1:k'], ['SET', 'ps1:k', 'x'], ['SELECT', '1'], ['MULTI'], ['CLIENT', 'ID'], ['ECHO', 'e']]) {
      sub.client.write(cmd(...args))
      await t.take('sub', sub.frames, 1)
    }

    sub.client.write(cmd('UNSUBSCRIBE'))
    await t.take('sub', sub.frames, 2) // one per channel; the pattern still counts
    if (proxied) assert.equal(proxy.router.pinCount, 1, 'still subscribed to a pattern')
    sub.client.write(cmd('PUNSUBSCRIBE'))
    await t.take('sub', sub.frames, 1)

    // An ordinary client again: replies that look like pub/sub frames are ordinary replies.
    sub.client.write(Buffer.concat([
      cmd('RPUSH', 'ps1:list', 'message', 'ch', 'x'),
      cmd('LRANGE', 'ps1:list', '0', '-1'),
      cmd('SET', 'ps1:k', 'v'),
      cmd('GET', 'ps1:k'),
      cmd('PING')
    ]))
    await t.take('sub', sub.frames, 5)
    if (proxied) await pinsReleased()
    pub.client.write(cmd('PUBLISH', 'ps1:a', 'nobody listens'))
    await t.take('pub', pub.frames, 1)
    sub.client.write(cmd('LRANGE', 'ps1:list', '0', '-1'))
    await t.take('sub', sub.frames, 1)
    await t.leftovers('sub', sub.frames)
    await t.leftovers('pub', pub.frames)
  })
  // The reference really has the expected shape (guards against a vacuous comparison).
  assert.match(transcript, /sub "\*3\\r\\n\$9\\r\\nsubscribe\\r\\n\$5\\r\\nps1:a\\r\\n:1\\r\\n"/)
  assert.match(transcript, /sub "\*3\\r\\n\$7\\r\\nmessage\\r\\n\$5\\r\\nps1:a\\r\\n\$5\\r\\nhello\\r\\n"/)
  assert.match(transcript, /sub "\*4\\r\\n\$8\\r\\npmessage\\r\\n\$6\\r\\nps1:p\*\\r\\n\$6\\r\\nps1:px\\r\\n/)
  assert.ok(transcript.includes(`sub ${JSON.stringify(RESP2_PONG)}`))
  assert.match(transcript, /Can't execute 'get'/)
  assert.match(transcript, /sub "\*3\\r\\n\$12\\r\\npunsubscribe\\r\\n\$6\\r\\nps1:p\*\\r\\n:0\\r\\n"/)
  assert.match(transcript, /sub "\*3\\r\\n\$7\\r\\nmessage\\r\\n\$2\\r\\nch\\r\\n\$1\\r\\nx\\r\\n"/)
})

// ---- 2. Unsubscribing with pipelined commands behind -----------------------------------------

test('UNSUBSCRIBE a b while subscribed only to a, pipelined with GET: both confirmations, then the GET reply', { timeout: 20000 }, async () => {
  const transcript = await sameAsDirect(async (port, proxied, t, opened) => {
    const sub = await connectFramed(port, opened)
    sub.client.write(cmd('SET', 'ps2:k', 'value-k'))
    await t.take('sub', sub.frames, 1)
    sub.client.write(cmd('SUBSCRIBE', 'ps2:a'))
    await t.take('sub', sub.frames, 1)
    sub.client.write(Buffer.concat([cmd('UNSUBSCRIBE', 'ps2:a', 'ps2:b'), cmd('GET', 'ps2:k')]))
    await t.take('sub', sub.frames, 3)
    if (proxied) await pinsReleased()
    sub.client.write(Buffer.concat([cmd('GET', 'ps2:k'), cmd('PING')]))
    await t.take('sub', sub.frames, 2)
    await t.leftovers('sub', sub.frames)
  })
  assert.ok(transcript.includes(JSON.stringify('*3\r\n$11\r\nunsubscribe\r\n$5\r\nps2:b\r\n:0\r\n')))
})

test('UNSUBSCRIBE + SUBSCRIBE c + PING in one write: every reply in order, still subscribed to c', { timeout: 20000 }, async () => {
  await sameAsDirect(async (port, proxied, t, opened) => {
    const sub = await connectFramed(port, opened)
    const pub = await connectFramed(port, opened)
    sub.client.write(cmd('SUBSCRIBE', 'ps2b:a'))
    await t.take('sub', sub.frames, 1)
    sub.client.write(Buffer.concat([cmd('UNSUBSCRIBE'), cmd('SUBSCRIBE', 'ps2b:c'), cmd('PING')]))
    await t.take('sub', sub.frames, 3)
    if (proxied) assert.equal(proxy.router.pinCount, 1)
    pub.client.write(cmd('PUBLISH', 'ps2b:c', 'for c'))
    await t.take('pub', pub.frames, 1)
    await t.take('sub', sub.frames, 1)
    sub.client.write(Buffer.concat([cmd('UNSUBSCRIBE', 'ps2b:c'), cmd('PING')]))
    await t.take('sub', sub.frames, 2)
    await t.leftovers('sub', sub.frames)
    await t.leftovers('pub', pub.frames)
  })
})

test('UNSUBSCRIBE + PING + SUBSCRIBE c d in one write (RESP2): the new subscriptions are kept and their messages arrive', { timeout: 20000 }, async () => {
  await sameAsDirect(async (port, proxied, t, opened) => {
    const sub = await connectFramed(port, opened)
    const pub = await connectFramed(port, opened)
    sub.client.write(cmd('SUBSCRIBE', 'ps2c:a'))
    await t.take('sub', sub.frames, 1)
    // The PING runs between leaving subscriber mode and entering it again: an ordinary +PONG.
    sub.client.write(Buffer.concat([cmd('UNSUBSCRIBE'), cmd('PING'), cmd('SUBSCRIBE', 'ps2c:c', 'ps2c:d')]))
    await t.take('sub', sub.frames, 4)
    if (proxied) t.lines.push(`proxy pins while subscribed to c and d: ${proxy.router.pinCount}`)
    else t.lines.push('proxy pins while subscribed to c and d: 1')
    pub.client.write(cmd('PUBLISH', 'ps2c:c', 'for c'))
    await t.take('pub', pub.frames, 1)
    await t.take('sub', sub.frames, 1)
    sub.client.write(cmd('PING'))
    await t.take('sub', sub.frames, 1)
    sub.client.write(cmd('UNSUBSCRIBE'))
    await t.take('sub', sub.frames, 2)
    // Shared traffic afterwards must not meet a connection still subscribed to c.
    pub.client.write(Buffer.concat([cmd('SET', 'ps2c:k', 'v'), cmd('GET', 'ps2c:k'), cmd('PUBLISH', 'ps2c:c', 'late')]))
    await t.take('pub', pub.frames, 3)
    await t.leftovers('sub', sub.frames)
    await t.leftovers('pub', pub.frames)
  })
})

test('UNSUBSCRIBE + PING + SUBSCRIBE c in one write (RESP2): the still-subscribed connection is never handed to other clients', { timeout: 30000 }, async () => {
  // Pool size 2: one pin and one shared lane. Anything released to the pool is soon a lane.
  const small = await startProxy({ upstream: redis.url, poolSize: 2, sharedPubsub: false })
  const opened: RawClient[] = []
  try {
    const port = small.address.port
    const sub = await connectFramed(port, opened)
    sub.client.write(cmd('SUBSCRIBE', 'ps2r:a'))
    assert.equal(await sub.frames.next(), '*3\r\n$9\r\nsubscribe\r\n$6\r\nps2r:a\r\n:1\r\n')
    sub.client.write(Buffer.concat([cmd('UNSUBSCRIBE'), cmd('PING'), cmd('SUBSCRIBE', 'ps2r:c')]))
    assert.deepEqual(await sub.frames.take(3), [
      '*3\r\n$11\r\nunsubscribe\r\n$6\r\nps2r:a\r\n:0\r\n',
      '+PONG\r\n',
      '*3\r\n$9\r\nsubscribe\r\n$6\r\nps2r:c\r\n:1\r\n'
    ])

    // Other clients load the pool; every reply must be their own.
    const others = await Promise.all(Array.from({ length: 10 }, async () => await connectFramed(port, opened)))
    await Promise.all(others.map(async (o, i) => {
      for (let round = 0; round < 10; round++) {
        o.client.write(Buffer.concat([cmd('SET', `ps2r:k${i}`, `v${round}`), cmd('GET', `ps2r:k${i}`)]))
        assert.deepEqual(await o.frames.take(2), ['+OK\r\n', `$${`v${round}`.length}\r\nv${round}\r\n`], `client ${i} round ${round}`)
      }
    }))
    assert.equal(small.router.pinCount, 1, 'the subscriber to c still holds its pin')
    others[0].client.write(cmd('PUBLISH', 'ps2r:c', 'for c'))
    assert.equal(await others[0].frames.next(), ':1\r\n')
    assert.equal(await sub.frames.next(), '*3\r\n$7\r\nmessage\r\n$6\r\nps2r:c\r\n$5\r\nfor c\r\n')

    sub.client.write(cmd('UNSUBSCRIBE'))
    assert.equal(await sub.frames.next(), '*3\r\n$11\r\nunsubscribe\r\n$6\r\nps2r:c\r\n:0\r\n')
    await pinsReleased(small)
    sub.client.close()
    await waitForValue('Redis subscribers of ps2r:c', async () => await commandOn(redis.port, 'PUBSUB', 'NUMSUB', 'ps2r:c'), '*2\r\n$6\r\nps2r:c\r\n:0\r\n')
  } finally {
    for (const c of opened) c.close()
    await small.destroy()
  }
})

test('UNSUBSCRIBE + GET + SUBSCRIBE c in one write (RESP3): the SUBSCRIBE is confirmed and the subscription kept', { timeout: 20000 }, async () => {
  await sameAsDirect(async (port, proxied, t, opened) => {
    const sub = await connectFramed(port, opened)
    const pub = await connectFramed(port, opened)
    sub.client.write(cmd('HELLO', '3'))
    await sub.frames.next() // the server map differs (client id, version fields)
    sub.client.write(cmd('SET', 'ps2d:k', 'kv'))
    await t.take('sub', sub.frames, 1)
    sub.client.write(cmd('SUBSCRIBE', 'ps2d:a'))
    await t.take('sub', sub.frames, 1)
    sub.client.write(Buffer.concat([cmd('UNSUBSCRIBE'), cmd('GET', 'ps2d:k'), cmd('SUBSCRIBE', 'ps2d:c')]))
    await t.take('sub', sub.frames, 3)
    if (proxied) t.lines.push(`proxy pins while subscribed to c: ${proxy.router.pinCount}`)
    else t.lines.push('proxy pins while subscribed to c: 1')
    pub.client.write(cmd('PUBLISH', 'ps2d:c', 'for c'))
    await t.take('pub', pub.frames, 1)
    await t.take('sub', sub.frames, 1)
    sub.client.write(Buffer.concat([cmd('UNSUBSCRIBE'), cmd('GET', 'ps2d:k')]))
    await t.take('sub', sub.frames, 2)
    await t.leftovers('sub', sub.frames)
    await t.leftovers('pub', pub.frames)
  })
})

test('UNSUBSCRIBE with no channels while subscribed only to a pattern, then PUNSUBSCRIBE + GET pipelined', { timeout: 20000 }, async () => {
  const transcript = await sameAsDirect(async (port, proxied, t, opened) => {
    const sub = await connectFramed(port, opened)
    sub.client.write(cmd('PSUBSCRIBE', 'ps2e:*'))
    await t.take('sub', sub.frames, 1)
    sub.client.write(cmd('UNSUBSCRIBE'))
    await t.take('sub', sub.frames, 1)
    if (proxied) assert.equal(proxy.router.pinCount, 1)
    sub.client.write(Buffer.concat([cmd('PUNSUBSCRIBE', 'ps2e:*', 'ps2e:other*'), cmd('GET', 'ps2e:missing'), cmd('PING')]))
    await t.take('sub', sub.frames, 4)
    await t.leftovers('sub', sub.frames)
  })
  assert.ok(transcript.includes(JSON.stringify('*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:1\r\n')))
})

test('sharded pub/sub (SSUBSCRIBE, SPUBLISH, SUNSUBSCRIBE) mixed with a channel subscription: same bytes as Redis', { timeout: 20000 }, async () => {
  const transcript = await sameAsDirect(async (port, proxied, t, opened) => {
    const sub = await connectFramed(port, opened)
    const pub = await connectFramed(port, opened)
    sub.client.write(cmd('SSUBSCRIBE', 'ps2s:s1'))
    await t.take('sub', sub.frames, 1)
    sub.client.write(cmd('SUBSCRIBE', 'ps2s:a'))
    await t.take('sub', sub.frames, 1)
    pub.client.write(Buffer.concat([cmd('SPUBLISH', 'ps2s:s1', 'shard hello'), cmd('PUBLISH', 'ps2s:a', 'channel hello')]))
    await t.take('pub', pub.frames, 2)
    await t.take('sub', sub.frames, 2)
    // Redis counts shard subscriptions apart: this says 0, yet the client is still subscribed.
    sub.client.write(Buffer.concat([cmd('UNSUBSCRIBE', 'ps2s:a'), cmd('GET', 'ps2s:k'), cmd('PING')]))
    await t.take('sub', sub.frames, 3)
    if (proxied) assert.equal(proxy.router.pinCount, 1)
    pub.client.write(cmd('SPUBLISH', 'ps2s:s1', 'still here'))
    await t.take('pub', pub.frames, 1)
    await t.take('sub', sub.frames, 1)
    sub.client.write(Buffer.concat([cmd('SUNSUBSCRIBE'), cmd('GET', 'ps2s:k'), cmd('PING')]))
    await t.take('sub', sub.frames, 3)
    if (proxied) await pinsReleased()
    await t.leftovers('sub', sub.frames)
    await t.leftovers('pub', pub.frames)
  })
  assert.ok(transcript.includes(JSON.stringify('*3\r\n$8\r\nsmessage\r\n$7\r\nps2s:s1\r\n$11\r\nshard hello\r\n')))
})

// ---- 3. (P|S)UNSUBSCRIBE while not subscribed ------------------------------------------------

test('(P|S)UNSUBSCRIBE while not subscribed: identical bytes to Redis in RESP2 and RESP3', { timeout: 20000 }, async () => {
  const binary = Buffer.from([0x62, 0x00, 0xff, 0x0d, 0x0a, 0xe9]) // b \0 \xff \r \n \xe9
  const burst = Buffer.concat([
    cmd('UNSUBSCRIBE'),
    cmd('UNSUBSCRIBE', 'ps3:a', 'ps3:b'),
    cmd('unsubscribe', 'ps3:lower'),
    cmd('PUNSUBSCRIBE'),
    cmd('PUNSUBSCRIBE', 'ps3:p*'),
    cmd('SUNSUBSCRIBE'),
    cmd('SUNSUBSCRIBE', 'ps3:s1', 'ps3:s2'),
    cmd('UNSUBSCRIBE', binary),
    cmd('SUBSCRIBE'),
    cmd('PSUBSCRIBE'),
    cmd('SSUBSCRIBE'),
    cmd('PING')
  ])
  const frames = 1 + 2 + 1 + 1 + 1 + 1 + 2 + 1 + 3 + 1
  const transcript = await sameAsDirect(async (port, proxied, t, opened) => {
    const c = await connectFramed(port, opened)
    c.client.write(burst)
    await t.take('resp2', c.frames, frames)
    if (proxied) assert.equal(proxy.router.pinCount, 0, 'nothing to pin for')
    c.client.write(cmd('HELLO', '3'))
    await c.frames.next() // the server map differs (client id, version fields)
    c.client.write(burst)
    await t.take('resp3', c.frames, frames)
    await t.leftovers('client', c.frames)
  })
  assert.ok(transcript.includes(JSON.stringify('*3\r\n$11\r\nunsubscribe\r\n$-1\r\n:0\r\n')))
  assert.ok(transcript.includes(JSON.stringify('>3\r\n$11\r\nunsubscribe\r\n_\r\n:0\r\n')))
})

// ---- 4. RESP3 subscriber ---------------------------------------------------------------------

test('RESP3: confirmations and messages are pushes, ordinary commands work while subscribed, same bytes as Redis', { timeout: 30000 }, async () => {
  const transcript = await sameAsDirect(async (port, proxied, t, opened) => {
    const sub = await connectFramed(port, opened)
    const pub = await connectFramed(port, opened)
    pub.client.write(cmd('DEL', 'ps4:k', 'ps4:list'))
    await pub.frames.next()
    sub.client.write(cmd('HELLO', '3'))
    await sub.frames.next() // the server map differs (client id, version fields)

    sub.client.write(cmd('SUBSCRIBE', 'ps4:a', 'ps4:b'))
    await t.take('sub', sub.frames, 2)
    if (proxied) assert.equal(proxy.router.pinCount, 1)
    pub.client.write(cmd('PUBLISH', 'ps4:a', 'm1'))
    await t.take('pub', pub.frames, 1)
    await t.take('sub', sub.frames, 1)

    sub.client.write(Buffer.concat([
      cmd('SET', 'ps4:k', 'v'), cmd('GET', 'ps4:k'), cmd('GET', 'ps4:missing'),
      cmd('RPUSH', 'ps4:list', 'message', 'ps4:a', 'fake'), cmd('LRANGE', 'ps4:list', '0', '-1'),
      cmd('PING'), cmd('HGETALL', 'ps4:nohash')
    ]))
    await t.take('sub', sub.frames, 7)
    pub.client.write(cmd('PUBLISH', 'ps4:b', 'm2'))
    await t.take('pub', pub.frames, 1)
    await t.take('sub', sub.frames, 1)

    sub.client.write(cmd('PSUBSCRIBE', 'ps4:p*'))
    await t.take('sub', sub.frames, 1)
    pub.client.write(cmd('PUBLISH', 'ps4:px', 'pm'))
    await t.take('pub', pub.frames, 1)
    await t.take('sub', sub.frames, 1)

    sub.client.write(cmd('UNSUBSCRIBE'))
    await t.take('sub', sub.frames, 2)
    sub.client.write(Buffer.concat([cmd('PUNSUBSCRIBE'), cmd('GET', 'ps4:k')]))
    await t.take('sub', sub.frames, 2)
    if (proxied) await pinsReleased()
    sub.client.write(cmd('PING'))
    await t.take('sub', sub.frames, 1)
    await t.leftovers('sub', sub.frames)
    await t.leftovers('pub', pub.frames)
  })
  assert.ok(transcript.includes(JSON.stringify('>3\r\n$9\r\nsubscribe\r\n$5\r\nps4:a\r\n:1\r\n')))
  assert.ok(transcript.includes(JSON.stringify('>3\r\n$7\r\nmessage\r\n$5\r\nps4:a\r\n$2\r\nm1\r\n')))
  assert.ok(transcript.includes(JSON.stringify('>4\r\n$8\r\npmessage\r\n$6\r\nps4:p*\r\n$6\r\nps4:px\r\n$2\r\npm\r\n')))
  assert.ok(transcript.includes(JSON.stringify('*3\r\n$7\r\nmessage\r\n$5\r\nps4:a\r\n$4\r\nfake\r\n')))
})

test('RESP3: pipelined GETs interleave with a stream of messages; every reply matches its GET, every message arrives in order', { timeout: 30000 }, async () => {
  const N = 500
  const opened: RawClient[] = []
  try {
    const setup = await connectFramed(proxy.address.port, opened)
    setup.client.write(Buffer.concat(Array.from({ length: N }, (_, i) => cmd('SET', `ps4i:k${i}`, `value-${i}`))))
    await setup.frames.take(N)

    const sub = await connectFramed(proxy.address.port, opened)
    const pub = await connectFramed(proxy.address.port, opened)
    sub.client.write(cmd('HELLO', '3'))
    await sub.frames.next()
    sub.client.write(cmd('SUBSCRIBE', 'ps4i:ch'))
    assert.equal(await sub.frames.next(), '>3\r\n$9\r\nsubscribe\r\n$7\r\nps4i:ch\r\n:1\r\n')

    const publishing = (async () => {
      for (let i = 0; i < N; i += 25) {
        pub.client.write(Buffer.concat(Array.from({ length: 25 }, (_, j) => cmd('PUBLISH', 'ps4i:ch', `m${i + j}`))))
        const replies = await pub.frames.take(25)
        for (const r of replies) assert.equal(r, ':1\r\n')
      }
    })()
    for (let i = 0; i < N; i += 10) {
      sub.client.write(Buffer.concat(Array.from({ length: 10 }, (_, j) => cmd('GET', `ps4i:k${i + j}`))))
      await delay(1)
    }
    await publishing

    const messages: string[] = []
    const replies: string[] = []
    const deadline = Date.now() + 10000
    while ((messages.length < N || replies.length < N) && Date.now() < deadline) {
      const frame = await sub.frames.next(5000)
      if (frame.startsWith('>')) messages.push(frame)
      else replies.push(frame)
    }
    assert.deepEqual(replies, Array.from({ length: N }, (_, i) => `$${`value-${i}`.length}\r\nvalue-${i}\r\n`))
    assert.deepEqual(messages, Array.from({ length: N }, (_, i) => `>3\r\n$7\r\nmessage\r\n$7\r\nps4i:ch\r\n$${`m${i}`.length}\r\nm${i}\r\n`))
    sub.client.write(cmd('UNSUBSCRIBE'))
    assert.equal(await sub.frames.next(), '>3\r\n$11\r\nunsubscribe\r\n$7\r\nps4i:ch\r\n:0\r\n')
    await pinsReleased()
    assert.deepEqual(await sub.frames.available(), [])
  } finally {
    for (const c of opened) c.close()
  }
})

// ---- 5. No message is lost -------------------------------------------------------------------

for (const resp of [2, 3] as const) {
  test(`RESP${resp}: 2000 messages published through the proxy all arrive, in order, while the subscriber pipelines PINGs`, { timeout: 40000 }, async () => {
    const N = 2000
    const channel = `ps5:ch${resp}`
    const pong = resp === 2 ? RESP2_PONG : '+PONG\r\n'
    const message = (i: number): string => `${resp === 2 ? '*' : '>'}3\r\n$7\r\nmessage\r\n$${channel.length}\r\n${channel}\r\n$${String(i).length}\r\n${i}\r\n`
    const opened: RawClient[] = []
    try {
      const sub = await connectFramed(proxy.address.port, opened)
      const pub = await connectFramed(proxy.address.port, opened)
      if (resp === 3) {
        sub.client.write(cmd('HELLO', '3'))
        await sub.frames.next()
      }
      sub.client.write(cmd('SUBSCRIBE', channel))
      assert.equal(await sub.frames.next(), `${resp === 2 ? '*' : '>'}3\r\n$9\r\nsubscribe\r\n$${channel.length}\r\n${channel}\r\n:1\r\n`)

      // The subscriber pipelines PINGs after every batch, so replies and messages interleave.
      let pings = 0
      for (let i = 0; i < N; i += 50) {
        pub.client.write(Buffer.concat(Array.from({ length: 50 }, (_, j) => cmd('PUBLISH', channel, String(i + j)))))
        sub.client.write(Buffer.concat([cmd('PING'), cmd('PING'), cmd('PING')]))
        pings += 3
        const replies = await pub.frames.take(50, 5000)
        assert.deepEqual(replies, Array(50).fill(':1\r\n'))
      }

      let got = 0
      let pongs = 0
      const deadline = Date.now() + 15000
      while ((got < N || pongs < pings) && Date.now() < deadline) {
        const frame = await sub.frames.next(5000)
        if (frame === pong) {
          pongs++
        } else {
          assert.equal(frame, message(got), `message #${got}`)
          got++
        }
      }
      assert.equal(got, N)
      assert.equal(pongs, pings)
      sub.client.write(cmd('UNSUBSCRIBE'))
      assert.equal(await sub.frames.next(), `${resp === 2 ? '*' : '>'}3\r\n$11\r\nunsubscribe\r\n$${channel.length}\r\n${channel}\r\n:0\r\n`)
      await pinsReleased()
      assert.deepEqual(await sub.frames.available(), [])
    } finally {
      for (const c of opened) c.close()
    }
  })
}

test('ioredis subscriber (its default protocol) receives 2000 messages in order from an ioredis publisher', { timeout: 30000 }, async () => {
  const { Redis } = await import('ioredis')
  const N = 2000
  const sub = new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0, lazyConnect: true })
  const pub = new Redis({ port: proxy.address.port, host: '127.0.0.1', maxRetriesPerRequest: 0, lazyConnect: true })
  try {
    await sub.connect()
    await pub.connect()
    const received: string[] = []
    let resolveAll: () => void = () => {}
    const all = new Promise<void>((resolve) => { resolveAll = resolve })
    sub.on('message', (channel: string, msg: string) => {
      assert.equal(channel, 'ps5:io')
      received.push(msg)
      if (received.length === N) resolveAll()
    })
    await sub.subscribe('ps5:io')
    const pipeline = pub.pipeline()
    for (let i = 0; i < N; i++) pipeline.publish('ps5:io', `io-${i}`)
    const results = await pipeline.exec()
    assert.ok(results !== null && results.every(([err, n]) => err === null && n === 1))
    await Promise.race([all, delay(10000).then(() => { throw new Error(`only ${received.length} of ${N} messages arrived`) })])
    assert.deepEqual(received, Array.from({ length: N }, (_, i) => `io-${i}`))
    await sub.unsubscribe('ps5:io')
    await pinsReleased()
  } finally {
    sub.disconnect()
    pub.disconnect()
  }
})

// ---- 6. Isolation between subscribers --------------------------------------------------------

test('subscribers see only their own channels; one vanishing mid-stream disturbs nobody and its connection is never reused', { timeout: 40000 }, async () => {
  const N = 300
  const opened: RawClient[] = []
  try {
    const subs = await Promise.all([1, 2, 3].map(async () => await connectFramed(proxy.address.port, opened)))
    const pub = await connectFramed(proxy.address.port, opened)
    for (const [i, s] of subs.entries()) {
      s.client.write(cmd('SUBSCRIBE', `ps6:ch${i + 1}`))
      assert.equal(await s.frames.next(), `*3\r\n$9\r\nsubscribe\r\n$7\r\nps6:ch${i + 1}\r\n:1\r\n`)
    }
    assert.equal(proxy.router.pinCount, 3)

    // Subscriber 3 reads nothing and disconnects abruptly halfway through the stream.
    for (let i = 0; i < N; i += 10) {
      const batch: Buffer[] = []
      for (let j = i; j < i + 10; j++) {
        for (const ch of [1, 2, 3]) batch.push(cmd('PUBLISH', `ps6:ch${ch}`, `ch${ch}-${j}`))
      }
      pub.client.write(Buffer.concat(batch))
      const replies = await pub.frames.take(30, 5000)
      // Before subscriber 3 leaves every message has one receiver; after, ch3's have none.
      for (const [k, r] of replies.entries()) {
        if (k % 3 !== 2 || i < N / 2) assert.equal(r, ':1\r\n', `PUBLISH #${i * 3 + k}`)
      }
      if (i === N / 2 - 10) {
        subs[2].client.socket.resetAndDestroy()
        await waitForValue('pins after subscriber 3 vanished', () => proxy.router.pinCount, 2)
      }
    }
    await waitForValue('PUBSUB NUMSUB of the vanished subscriber\'s channel', async () => await commandOn(redis.port, 'PUBSUB', 'NUMSUB', 'ps6:ch3'), '*2\r\n$7\r\nps6:ch3\r\n:0\r\n')

    for (const ch of [1, 2]) {
      const s = subs[ch - 1]
      const frames = await s.frames.take(N, 5000)
      assert.deepEqual(frames, Array.from({ length: N }, (_, j) => `*3\r\n$7\r\nmessage\r\n$7\r\nps6:ch${ch}\r\n$${`ch${ch}-${j}`.length}\r\nch${ch}-${j}\r\n`))
      s.client.write(cmd('UNSUBSCRIBE'))
      assert.equal(await s.frames.next(), `*3\r\n$11\r\nunsubscribe\r\n$7\r\nps6:ch${ch}\r\n:0\r\n`)
      assert.deepEqual(await s.frames.available(), [])
    }
    await pinsReleased()
    await noSubscribersLeft()

    // New clients doing ordinary work on whatever connections the pool hands out.
    const fresh = await Promise.all(Array.from({ length: 10 }, async () => await connectFramed(proxy.address.port, opened)))
    await Promise.all(fresh.map(async (c, i) => {
      for (let round = 0; round < 20; round++) {
        c.client.write(Buffer.concat([cmd('SET', `ps6:k${i}`, `v${i}-${round}`), cmd('GET', `ps6:k${i}`), cmd('ECHO', 'message'), cmd('PUBLISH', 'ps6:ch3', 'x')]))
        assert.deepEqual(await c.frames.take(4), ['+OK\r\n', `$${`v${i}-${round}`.length}\r\nv${i}-${round}\r\n`, '$7\r\nmessage\r\n', ':0\r\n'])
      }
    }))
    // Every upstream connection respool holds is an ordinary one.
    const list = await commandOn(redis.port, 'CLIENT', 'LIST')
    for (const line of list.split('\n').filter((l) => / name=respool /.test(l))) {
      assert.match(line, / sub=0 psub=0 (ssub=0 )?/, line)
      assert.match(line, / flags=N /, line)
    }
  } finally {
    for (const c of opened) c.close()
  }
})

// ---- QUIT and RESET in subscriber mode -------------------------------------------------------

test('RESET and QUIT while subscribed: same bytes as Redis, the subscription ends, the pin is returned', { timeout: 20000 }, async () => {
  await sameAsDirect(async (port, proxied, t, opened) => {
    const sub = await connectFramed(port, opened)
    sub.client.write(cmd('SUBSCRIBE', 'psr:a', 'psr:b'))
    await t.take('sub', sub.frames, 2)
    sub.client.write(Buffer.concat([cmd('RESET'), cmd('GET', 'psr:missing'), cmd('PING')]))
    await t.take('sub', sub.frames, 3)
    if (proxied) await pinsReleased()
    await t.leftovers('sub', sub.frames)

    const q = await connectFramed(port, opened)
    q.client.write(cmd('PSUBSCRIBE', 'psr:*'))
    await t.take('quit', q.frames, 1)
    q.client.write(Buffer.concat([cmd('QUIT'), cmd('PING')]))
    t.lines.push(`quit until close ${JSON.stringify(await q.client.readUntilClose())}`)
    if (proxied) await pinsReleased()
  })
})

// ---- 9. Pins are bounded ---------------------------------------------------------------------

test('pins are bounded: with pool size 3 a third subscriber waits, then gets a respool pool error; shared traffic keeps flowing', { timeout: 30000 }, async () => {
  // An acquire timeout long enough that what must happen while a subscriber waits does, on a
  // loaded machine too.
  const small = await startProxy({ upstream: redis.url, poolSize: 3, acquireTimeoutMs: 3000, sharedPubsub: false })
  const opened: RawClient[] = []
  try {
    assert.equal(small.router.maxPins, 2)
    const port = small.address.port
    const [s1, s2, s3, s4] = await Promise.all([1, 2, 3, 4].map(async () => await connectFramed(port, opened)))
    s1.client.write(cmd('SUBSCRIBE', 'ps9:one'))
    assert.equal(await s1.frames.next(), '*3\r\n$9\r\nsubscribe\r\n$7\r\nps9:one\r\n:1\r\n')
    s2.client.write(cmd('SUBSCRIBE', 'ps9:two'))
    assert.equal(await s2.frames.next(), '*3\r\n$9\r\nsubscribe\r\n$7\r\nps9:two\r\n:1\r\n')
    assert.equal(small.router.pinCount, 2)

    const started = Date.now()
    s3.client.write(Buffer.concat([cmd('SUBSCRIBE', 'ps9:three'), cmd('GET', 'ps9:k')]))
    await waitForValue('pins waiting', () => small.router.pinsWaiting, 1)

    // Shared traffic survives while the third subscriber waits.
    s4.client.write(Buffer.concat([cmd('SET', 'ps9:k', 'shared'), cmd('GET', 'ps9:k'), cmd('PUBLISH', 'ps9:one', 'hi')]))
    assert.deepEqual(await s4.frames.take(3, 2500), ['+OK\r\n', '$6\r\nshared\r\n', ':1\r\n'])
    assert.equal(await s1.frames.next(), '*3\r\n$7\r\nmessage\r\n$7\r\nps9:one\r\n$2\r\nhi\r\n')
    assert.deepEqual(await s3.frames.available(), [], 'the third subscriber is still waiting')

    const refusal = await s3.frames.next(6000)
    const waited = Date.now() - started
    assert.match(refusal, /^-ERR respool: [^\r\n]*pool[^\r\n]*\r\n$/)
    assert.ok(waited >= 2900, `refused after ${waited} ms, before the 3000 ms acquire timeout`)
    // The command behind it runs as an ordinary one: the client never entered subscriber mode.
    assert.equal(await s3.frames.next(), '$6\r\nshared\r\n')
    assert.equal(small.router.pinCount, 2)
    s4.client.write(cmd('PUBLISH', 'ps9:three', 'nobody'))
    assert.equal(await s4.frames.next(), ':0\r\n')

    // A pin that frees while a subscriber waits goes to it.
    s3.client.write(cmd('SUBSCRIBE', 'ps9:three'))
    await waitForValue('pins waiting', () => small.router.pinsWaiting, 1)
    s1.client.write(cmd('UNSUBSCRIBE'))
    assert.equal(await s1.frames.next(), '*3\r\n$11\r\nunsubscribe\r\n$7\r\nps9:one\r\n:0\r\n')
    assert.equal(await s3.frames.next(3000), '*3\r\n$9\r\nsubscribe\r\n$9\r\nps9:three\r\n:1\r\n')
    s4.client.write(cmd('PUBLISH', 'ps9:three', 'now'))
    assert.equal(await s4.frames.next(), ':1\r\n')
    assert.equal(await s3.frames.next(), '*3\r\n$7\r\nmessage\r\n$9\r\nps9:three\r\n$3\r\nnow\r\n')

    for (const s of [s2, s3]) {
      s.client.write(cmd('UNSUBSCRIBE'))
      await s.frames.next()
    }
    await pinsReleased(small)
    for (const s of [s1, s2, s3, s4]) assert.deepEqual(await s.frames.available(), [])
  } finally {
    for (const c of opened) c.close()
    await small.destroy()
  }
})
